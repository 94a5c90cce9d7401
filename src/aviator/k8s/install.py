"""The install bundle: everything ``kubectl apply -f -`` needs to run aviator in a cluster.

:func:`bundle` returns, in apply order: the CRDs (``aviator.k8s.crds``), the Namespace, one
ServiceAccount each for the operator and the gateway, least-privilege RBAC for each, the operator
Deployment and the gateway Deployment and Service.

Least privilege, concretely:

- the **operator** reads and writes aviator's CRs and their status and finalizers, and manages
  exactly the kinds :mod:`aviator.k8s.render` produces (Deployments, Services,
  ResourceClaimTemplates, InferencePools, HPAs, PodDisruptionBudgets); it only reads Pods,
  EndpointSlices, ResourceSlices and DeviceClasses (status and capacity planning), may write
  Events, and holds its leader-election Lease in its own namespace only (a Role, not a
  ClusterRole). It never reads Secrets.
- the **gateway** only reads: Agents, Policies and Grants (governance), ModelDeployments, and
  EndpointSlices (ready endpoints). It writes nothing.

Both containers run as a non-root user with a read-only root filesystem and no privilege
escalation. The ``operator`` command and the gateway's Kubernetes discovery arrive with issue 6
parts 3 and 4; their arguments are :data:`OPERATOR_ARGS` and :data:`GATEWAY_ARGS`.

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aviator.api.meta import API_GROUP, dns1123_label_problem
from aviator.k8s.crds import crds
from aviator.k8s.render import default_aviator_image

__all__ = [
    "GATEWAY_ARGS",
    "GATEWAY_PORT",
    "OPERATOR_ARGS",
    "InstallError",
    "InstallOptions",
    "bundle",
]

GATEWAY_PORT = 8080
OPERATOR_HEALTH_PORT = 8081
OPERATOR_ARGS = ["operator", "--liveness", f"http://0.0.0.0:{OPERATOR_HEALTH_PORT}/healthz"]
"""``aviator operator`` (kopf) with its liveness endpoint (kopf's ``--liveness``)."""
GATEWAY_ARGS = [
    "gateway",
    "--host",
    "0.0.0.0",
    "--port",
    str(GATEWAY_PORT),
    "--discovery",
    "kubernetes",
]
"""The gateway listening on the Pod network, discovering endpoints from EndpointSlices."""

_DATA_DIR = "/var/lib/aviator"
_READ = ["get", "list", "watch"]
_MANAGE = ["get", "list", "watch", "create", "update", "patch", "delete"]
_CR_PLURALS = ["modeldeployments", "agents", "policies", "grants"]


class InstallError(ValueError):
    """An install option is invalid; the message names it."""


@dataclass(frozen=True, slots=True)
class InstallOptions:
    namespace: str = "aviator-system"
    image: str = field(default_factory=default_aviator_image)
    operator_replicas: int = 2
    """Two for availability: one leads (Lease), the other waits."""
    gateway_replicas: int = 2


def _labels(component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "aviator",
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "aviator",
        "app.kubernetes.io/managed-by": "aviator-install",
    }


def _selector(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "aviator", "app.kubernetes.io/component": component}


def _rule(groups: list[str], resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


def _operator_rules() -> list[dict[str, Any]]:
    return [
        _rule([API_GROUP], _CR_PLURALS, ["get", "list", "watch", "patch", "update"]),
        _rule([API_GROUP], [f"{p}/status" for p in _CR_PLURALS], ["get", "patch", "update"]),
        # ownerReferences with blockOwnerDeletion need update on the owner's finalizers.
        _rule([API_GROUP], [f"{p}/finalizers" for p in _CR_PLURALS], ["update"]),
        _rule(["apps"], ["deployments"], _MANAGE),
        _rule([""], ["services"], _MANAGE),
        _rule(["resource.k8s.io"], ["resourceclaimtemplates"], _MANAGE),
        _rule(["inference.networking.k8s.io"], ["inferencepools"], _MANAGE),
        _rule(["autoscaling"], ["horizontalpodautoscalers"], _MANAGE),
        _rule(["policy"], ["poddisruptionbudgets"], _MANAGE),
        _rule([""], ["pods"], _READ),
        _rule(["discovery.k8s.io"], ["endpointslices"], _READ),
        _rule(["resource.k8s.io"], ["resourceslices", "deviceclasses", "resourceclaims"], _READ),
        # kopf discovers the resources it serves and the namespaces it watches.
        _rule(["apiextensions.k8s.io"], ["customresourcedefinitions"], _READ),
        _rule([""], ["namespaces"], _READ),
        _rule(["", "events.k8s.io"], ["events"], ["create", "patch"]),
    ]


def _gateway_rules() -> list[dict[str, Any]]:
    return [
        _rule([API_GROUP], ["modeldeployments", "agents", "policies", "grants"], _READ),
        _rule(["discovery.k8s.io"], ["endpointslices"], _READ),
    ]


def _meta(name: str, namespace: str | None, component: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = _labels(component)
    return meta


def _rbac(
    options: InstallOptions, component: str, rules: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    name = f"aviator-{component}"
    subject = {"kind": "ServiceAccount", "name": name, "namespace": options.namespace}
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta(name, None, component),
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta(name, None, component),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [subject],
        },
    ]


def _leader_election(options: InstallOptions) -> list[dict[str, Any]]:
    name = "aviator-operator-leader-election"
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(name, options.namespace, "operator"),
            "rules": [_rule(["coordination.k8s.io"], ["leases"], _MANAGE)],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(name, options.namespace, "operator"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [
                {
                    "kind": "ServiceAccount",
                    "name": "aviator-operator",
                    "namespace": options.namespace,
                }
            ],
        },
    ]


def _service_account(options: InstallOptions, component: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(f"aviator-{component}", options.namespace, component),
    }


def _http_probe(path: str, port: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def _deployment(
    options: InstallOptions,
    component: str,
    *,
    args: list[str],
    port: int,
    health_path: str,
    replicas: int,
    resources: dict[str, Any],
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": component,
        "image": options.image,
        "command": ["aviator"],
        "args": args,
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": [
            # The namespace it runs in (the Lease lives there).
            {
                "name": "AVIATOR_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "AVIATOR_DATA_DIR", "value": _DATA_DIR},
        ],
        # The root filesystem is read-only; keys, audit and caches go to the data volume.
        "volumeMounts": [{"name": "data", "mountPath": _DATA_DIR}],
        "resources": resources,
        "readinessProbe": _http_probe(health_path, "http", period=5, failures=3),
        "livenessProbe": _http_probe(health_path, "http", period=10, failures=6),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(f"aviator-{component}", options.namespace, component),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": _selector(component)},
            "template": {
                "metadata": {"labels": _labels(component)},
                "spec": {
                    "serviceAccountName": f"aviator-{component}",
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": _selector(component)},
                        }
                    ],
                },
            },
        },
    }


def _gateway_service(options: InstallOptions) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta("aviator-gateway", options.namespace, "gateway"),
        "spec": {
            "type": "ClusterIP",
            "selector": _selector("gateway"),
            "ports": [
                {
                    "name": "http",
                    "port": 80,
                    "targetPort": "http",
                    "protocol": "TCP",
                    "appProtocol": "http",
                }
            ],
        },
    }


def bundle(options: InstallOptions | None = None) -> list[dict[str, Any]]:
    """Every object of the install, in apply order (CRDs and the namespace first)."""
    options = options or InstallOptions()
    if problem := dns1123_label_problem(options.namespace):
        raise InstallError(f"--namespace {options.namespace!r}: {problem}")
    if not options.image or any(ch.isspace() for ch in options.image):
        raise InstallError(
            f"--image {options.image!r}: expected an image reference like REGISTRY/NAME:TAG"
        )
    for what, count in (
        ("operator", options.operator_replicas),
        ("gateway", options.gateway_replicas),
    ):
        if count < 1:
            raise InstallError(f"{what} replicas must be at least 1 (got {count})")
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": options.namespace,
            "labels": {
                **_labels("namespace"),
                # The operator and the gateway meet the restricted Pod Security profile.
                "pod-security.kubernetes.io/enforce": "restricted",
            },
        },
    }
    return [
        *crds(),
        namespace,
        _service_account(options, "operator"),
        _service_account(options, "gateway"),
        *_rbac(options, "operator", _operator_rules()),
        *_leader_election(options),
        *_rbac(options, "gateway", _gateway_rules()),
        _deployment(
            options,
            "operator",
            args=list(OPERATOR_ARGS),
            port=OPERATOR_HEALTH_PORT,
            health_path="/healthz",
            replicas=options.operator_replicas,
            resources={
                "requests": {"cpu": "100m", "memory": "256Mi"},
                "limits": {"memory": "512Mi"},
            },
        ),
        _deployment(
            options,
            "gateway",
            args=list(GATEWAY_ARGS),
            port=GATEWAY_PORT,
            health_path="/health",
            replicas=options.gateway_replicas,
            resources={"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
        ),
        _gateway_service(options),
    ]
