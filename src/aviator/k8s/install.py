"""The install bundle: everything ``kubectl apply -f -`` needs to run aviator in a cluster.

:func:`bundle` returns, in apply order: the CRDs (``aviator.k8s.crds``), the Namespace, one
ServiceAccount each for the operator and the gateway, least-privilege RBAC for each, the operator
Deployment and the gateway Deployment and Service.

Least privilege, concretely: each rule is a request the code makes (the comments in
:func:`_operator_rules` say which), and ``tests/unit/k8s/test_install.py`` fails on anything
more.

- the **operator** reads ModelDeployments and patches them (kopf's finalizer and annotations)
  and their status; reads Grants and patches their status (the Grant expiry controller);
  creates, server-side applies (PATCH), lists and deletes exactly the kinds
  :mod:`aviator.k8s.render` produces, and also reads and watches Deployments; lists
  EndpointSlices, ResourceSlices, DeviceClasses and ResourceClaims (status and capacity
  planning); lists and watches CRDs and Namespaces and creates Events (kopf); and gets, creates
  and patches its leader-election Lease in its own namespace only (a Role, not a ClusterRole).
  No ``update`` except the one the API server's owner-reference admission demands, no Pods, no
  Secrets.
- the **gateway** only reads: Agents, Policies and Grants (governance), ModelDeployments, and
  EndpointSlices (ready endpoints). It writes nothing to the API; it appends its decisions to
  an audit file on a writable volume and, with an identity configuration, trusts the agent
  tokens of its issuers (mounted read-only from a ConfigMap).

Both containers run as a non-root user with a read-only root filesystem and no privilege
escalation. Their arguments are :data:`OPERATOR_ARGS` and :data:`GATEWAY_ARGS` plus what the
options add (``--image`` and ``--engine-image`` for the operator's simulator and engine Pods,
``--identity-config`` and ``--audit-file`` for the gateway).

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from aviator.api.meta import API_GROUP, dns1123_label_problem
from aviator.k8s.crds import crds
from aviator.k8s.render import RenderError, default_aviator_image, parse_engine_images

__all__ = [
    "AUDIT_DIR",
    "GATEWAY_ARGS",
    "GATEWAY_PORT",
    "IDENTITY_DIR",
    "OPERATOR_ARGS",
    "IdentityConfig",
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

IDENTITY_DIR = "/etc/aviator/identity"
"""Where the gateway finds the identity ConfigMap's files (read-only); relative paths in the
configuration (a JWKS file) resolve here."""
AUDIT_DIR = "/var/lib/aviator/audit"
"""The gateway's audit volume. Each Pod appends to ``<POD_NAME>.db`` in it: SQLite wants one
writer per file, and two replicas may share a volume."""

_DATA_DIR = "/var/lib/aviator"
_READ = ["get", "list", "watch"]
_RENDERED = ["list", "create", "patch", "delete"]
"""On each kind the renderer produces: create when new, server-side apply (PATCH), list to
prune (and clean up), delete."""
_UID = 65532
_CONFIGMAP_KEY = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class InstallError(ValueError):
    """An install option is invalid; the message names it."""


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    """The gateway's identity configuration (``aviator gateway --identity-config``) and the
    files it names (a trusted issuer's JWKS), by file name; they become one ConfigMap."""

    name: str
    """The configuration's file name, one of ``files``."""
    files: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Every file's text by name, the configuration's included."""


@dataclass(frozen=True, slots=True)
class InstallOptions:
    namespace: str = "aviator-system"
    image: str = field(default_factory=default_aviator_image)
    """aviator's image: the operator, the gateway, and the simulator Pods the operator renders."""
    engine_images: tuple[str, ...] = ()
    """``ENGINE[@DRIVER]=IMAGE`` overrides handed to the operator (``--engine-image``)."""
    operator_replicas: int = 2
    """Two for availability: one leads (Lease), the other waits."""
    gateway_replicas: int = 2
    identity: IdentityConfig | None = None
    """Without it the gateway trusts no agent token (API keys and the admin token only)."""
    audit_claim: str | None = None
    """A PersistentVolumeClaim for the gateway's audit files; None: an ``emptyDir``, which
    loses the audit log with the Pod."""


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
    # Exactly the requests aviator.operator makes (objects.ObjectApi's verbs) and kopf's own.
    return [
        # kopf lists and watches ModelDeployments and patches its finalizer and bookkeeping
        # annotations onto them; the reconciler reads one again before it writes status.
        _rule([API_GROUP], ["modeldeployments"], ["get", "list", "watch", "patch"]),
        _rule([API_GROUP], ["modeldeployments/status"], ["patch"]),
        # No request goes here: the API server's OwnerReferencesPermissionEnforcement admission
        # lets a controller ownerReference with blockOwnerDeletion be set only by whoever may
        # `update` the owner's finalizers.
        _rule([API_GROUP], ["modeldeployments/finalizers"], ["update"]),
        # The Grant expiry controller: a reflector lists and watches Grants, the status write
        # reads the Grant it merges against and patches status (Active -> Expired).
        _rule([API_GROUP], ["grants"], _READ),
        _rule([API_GROUP], ["grants/status"], ["patch"]),
        # The Deployment is also read (its replica count) and watched (status refreshes).
        _rule(["apps"], ["deployments"], ["get", "list", "watch", *_RENDERED[1:]]),
        _rule([""], ["services"], _RENDERED),
        _rule(["resource.k8s.io"], ["resourceclaimtemplates"], _RENDERED),
        _rule(["inference.networking.k8s.io"], ["inferencepools"], _RENDERED),
        _rule(["autoscaling"], ["horizontalpodautoscalers"], _RENDERED),
        _rule(["policy"], ["poddisruptionbudgets"], _RENDERED),
        # Status (ready endpoints; kopf watches them for refreshes) and capacity planning.
        _rule(["discovery.k8s.io"], ["endpointslices"], ["list", "watch"]),
        _rule(["resource.k8s.io"], ["resourceslices", "deviceclasses", "resourceclaims"], ["list"]),
        # kopf: rescans served resources when CRDs change, follows namespaces when --namespace
        # narrows it, and posts core v1 Events about its handlers.
        _rule(["apiextensions.k8s.io"], ["customresourcedefinitions"], ["list", "watch"]),
        _rule([""], ["namespaces"], ["list", "watch"]),
        _rule([""], ["events"], ["create"]),
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
            # aviator.operator.leader: read the Lease, create it, patch it (conditionally).
            "rules": [_rule(["coordination.k8s.io"], ["leases"], ["get", "create", "patch"])],
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
    mounts: list[dict[str, Any]] | None = None,
    volumes: list[dict[str, Any]] | None = None,
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
        "volumeMounts": [{"name": "data", "mountPath": _DATA_DIR}, *(mounts or [])],
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
                        "runAsUser": _UID,
                        "runAsGroup": _UID,
                        # A PersistentVolume is writable by the group the kubelet gives it.
                        "fsGroup": _UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [{"name": "data", "emptyDir": {}}, *(volumes or [])],
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


def _identity_configmap(options: InstallOptions, identity: IdentityConfig) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta("aviator-gateway-identity", options.namespace, "gateway"),
        "data": dict(sorted(identity.files.items())),
    }


def _operator_args(options: InstallOptions) -> list[str]:
    # The operator renders simulator Pods from aviator's image and engine Pods from these.
    args = [*OPERATOR_ARGS, "--image", options.image]
    for value in options.engine_images:
        args += ["--engine-image", value]
    return args


def _gateway_pod(options: InstallOptions) -> tuple[list[str], list[dict[str, Any]], list[Any]]:
    """The gateway's arguments, extra mounts and extra volumes."""
    # $(POD_NAME) is expanded by the kubelet from the container's env: one file per Pod.
    args = [*GATEWAY_ARGS, "--audit-file", f"{AUDIT_DIR}/$(POD_NAME).db"]
    mounts: list[dict[str, Any]] = [{"name": "audit", "mountPath": AUDIT_DIR}]
    audit: dict[str, Any] = (
        {"persistentVolumeClaim": {"claimName": options.audit_claim}}
        if options.audit_claim
        else {"emptyDir": {}}
    )
    volumes: list[dict[str, Any]] = [{"name": "audit", **audit}]
    if options.identity is not None:
        args += ["--identity-config", f"{IDENTITY_DIR}/{options.identity.name}"]
        # The whole directory, not a subPath: the kubelet then refreshes the files when the
        # ConfigMap changes, and the gateway re-reads them (signing-key rotation).
        mounts.append({"name": "identity", "mountPath": IDENTITY_DIR, "readOnly": True})
        volumes.append({"name": "identity", "configMap": {"name": "aviator-gateway-identity"}})
    return args, mounts, volumes


def _check(options: InstallOptions) -> None:
    if problem := dns1123_label_problem(options.namespace):
        raise InstallError(f"--namespace {options.namespace!r}: {problem}")
    if not options.image or any(ch.isspace() for ch in options.image):
        raise InstallError(
            f"--image {options.image!r}: expected an image reference like REGISTRY/NAME:TAG"
        )
    try:
        parse_engine_images(options.engine_images)
    except RenderError as exc:
        raise InstallError(str(exc)) from None
    for what, count in (
        ("operator", options.operator_replicas),
        ("gateway", options.gateway_replicas),
    ):
        if count < 1:
            raise InstallError(f"{what} replicas must be at least 1 (got {count})")
    if options.audit_claim is not None and (problem := dns1123_label_problem(options.audit_claim)):
        raise InstallError(f"--audit-claim {options.audit_claim!r}: {problem}")
    identity = options.identity
    if identity is not None:
        if identity.name not in identity.files:
            raise InstallError(f"--identity-config: {identity.name!r} is not among the files")
        for name in identity.files:
            if (
                not name
                or len(name) > 253
                or not set(name) <= _CONFIGMAP_KEY
                or name in {".", ".."}
            ):
                raise InstallError(
                    f"--identity-config: file name {name!r} cannot be a ConfigMap key "
                    "(letters, digits, '-', '_' and '.')"
                )
        if sum(len(t.encode()) for t in identity.files.values()) > 1_000_000:
            raise InstallError("--identity-config: the files exceed a ConfigMap's 1 MiB")


def bundle(options: InstallOptions | None = None) -> list[dict[str, Any]]:
    """Every object of the install, in apply order (CRDs and the namespace first)."""
    options = options or InstallOptions()
    _check(options)
    gateway_args, gateway_mounts, gateway_volumes = _gateway_pod(options)
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
        *([_identity_configmap(options, options.identity)] if options.identity else []),
        _deployment(
            options,
            "operator",
            args=_operator_args(options),
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
            args=gateway_args,
            port=GATEWAY_PORT,
            health_path="/health",
            replicas=options.gateway_replicas,
            resources={"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
            mounts=gateway_mounts,
            volumes=gateway_volumes,
        ),
        _gateway_service(options),
    ]
