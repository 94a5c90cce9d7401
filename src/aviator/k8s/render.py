"""What the operator applies for one ModelDeployment, as plain Kubernetes manifests.

:func:`render` maps a ModelDeployment onto upstream primitives (docs/kubernetes.md has the
table):

- **ResourceClaimTemplate** (``resource.k8s.io/v1``, with accelerators): one request named
  ``accelerators`` per replica's claim; the claim's alternatives (those the engine runs on and
  the first one's image serves, :func:`image_alternatives`) become ``firstAvailable``
  subrequests in the same order (the short form becomes one ``exactly`` request), CEL selectors
  are carried over verbatim, ``constraints`` become ``matchAttribute`` constraints, and
  ``sovereignty.excludedDrivers`` adds a ``device.driver != '...'`` selector to every
  alternative. Each Pod gets its own claim from the template, so devices are never shared
  between replicas, as in the embedded plane.
- **Deployment**: one engine container per Pod, its command line built by the same pure engine
  adapters the local runtime uses (``aviator.runtime.engines``), listening on ``0.0.0.0:8000``,
  in the image of the engine's build for the alternatives' DRA driver (:func:`engine_image`);
  startup, readiness and liveness probes on the adapter's health path; a surge-only rolling
  update (``maxUnavailable: 0``), like the plane's rollout; ``sovereignty.allowedRegions`` as
  required node affinity on ``topology.kubernetes.io/region``; ``strategy: spread`` as a
  topology spread over hostnames.
- **Service** (ClusterIP, port ``http``), whose EndpointSlices list the ready Pods.
- **InferencePool** (``inference.networking.k8s.io/v1``): same selector, target port 8000, and
  an ``endpointPickerRef`` when an endpoint picker is configured.
- **HorizontalPodAutoscaler** (``autoscaling/v2``) when ``replicas.max`` exceeds
  ``replicas.min``: the same two signals as aviator's autoscaler (waiting requests and KV-cache
  usage per Pod, as custom metrics) and the same stabilization windows.
- **PodDisruptionBudget** (``policy/v1``): at most one Pod voluntarily disrupted at a time.

Every object carries ``app.kubernetes.io/*`` labels and, when the ModelDeployment's ``uid`` is
known (a live object), a controller ``ownerReference`` to it, so deleting the ModelDeployment
garbage-collects everything.

Pure: no cluster, no files, no clock. Problems are :class:`RenderError` naming the field.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from aviator import __version__
from aviator.api.meta import GROUP_VERSION
from aviator.api.modeldeployment import DeviceSubRequest, ModelDeployment
from aviator.api.replica import LABEL_DEPLOYMENT, Replica, ReplicaSpec
from aviator.placement.engines import DRIVER_ALIASES, ENGINES, SIMULATOR, support_for
from aviator.runtime.engines import for_engine

__all__ = [
    "CLAIM_NAME",
    "DEFAULT_ENGINE_IMAGES",
    "ENGINE_PORT",
    "MIN_KUBERNETES",
    "UNVERIFIED_ENGINE_IMAGES",
    "EndpointPicker",
    "RenderError",
    "RenderOptions",
    "Rendered",
    "cluster_engine",
    "default_aviator_image",
    "engine_image",
    "image_alternatives",
    "image_key",
    "parse_engine_images",
    "parse_kubernetes_version",
    "render",
    "selector_labels",
]

ENGINE_PORT = 8000
"""The port every engine container listens on (vLLM's default)."""
CLAIM_NAME = "accelerators"
"""The Pod's resource claim and the claim's one request are both called this."""
MIN_KUBERNETES = (1, 34)
"""``resource.k8s.io/v1`` (DRA GA) and ``firstAvailable`` on by default: Kubernetes 1.34."""

DEFAULT_ENGINE_IMAGES: Mapping[str, str] = MappingProxyType(
    {
        # Engine-wide (``ENGINE``): deployments without accelerators, and device classes the
        # engine matrix does not know (a cluster's own DeviceClass), most often NVIDIA's.
        "vllm": "vllm/vllm-openai:latest",
        "sglang": "lmsysorg/sglang:latest",
        "llamacpp": "ghcr.io/ggml-org/llama.cpp:server",
        # Per driver (``ENGINE@DRIVER``), one per row of aviator.placement.engines.MATRIX: a
        # vLLM build runs on one platform only (the CUDA image does not start on ROCm or Gaudi).
        "vllm@gpu.nvidia.com": "vllm/vllm-openai:latest",  # docs.vllm.ai, deployment/docker
        "vllm@gpu.amd.com": "rocm/vllm:latest",  # AMD's vLLM builds (rocm.docs.amd.com)
        "vllm@gpu.intel.com": "intel/vllm:xpu",
        "vllm@gaudi.intel.com": (
            # Habana's vLLM quick start image; pin the one of your Gaudi software version.
            "vault.habana.ai/gaudi-docker/1.23.0/ubuntu22.04/habanalabs/vllm-installer-2.9.0:latest"
        ),
        "vllm@tpu.google.com": "vllm/vllm-tpu:latest",
        # vLLM's x86 CPU build (the repository the Inference Extension's CPU example uses).
        "vllm@dra.cpu": "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:latest",
        "sglang@gpu.nvidia.com": "lmsysorg/sglang:latest",
        "sglang@gpu.amd.com": "lmsysorg/sglang:latest-rocm",
        # llama.cpp's published server images per backend (ggml-org/llama.cpp docs/docker.md).
        "llamacpp@gpu.nvidia.com": "ghcr.io/ggml-org/llama.cpp:server-cuda",
        "llamacpp@gpu.amd.com": "ghcr.io/ggml-org/llama.cpp:server-rocm",
        "llamacpp@gpu.intel.com": "ghcr.io/ggml-org/llama.cpp:server-intel",
        "llamacpp@dra.cpu": "ghcr.io/ggml-org/llama.cpp:server",
    }
)
"""The image of each engine's build, per DRA driver (``ENGINE@DRIVER``) with an engine-wide
fallback (``ENGINE``); override any with ``--engine-image KEY=REF`` and pin a tag or digest in
production. The simulator runs from aviator's own image."""

UNVERIFIED_ENGINE_IMAGES = frozenset(
    {
        # Which image (or which tag) upstream publishes for these could not be confirmed when
        # this table was written; rendering one adds a note asking for --engine-image.
        "vllm@gpu.intel.com",  # vLLM documents building the XPU image; Intel's tag unconfirmed
        "vllm@gaudi.intel.com",  # entrypoint and `vllm` on the PATH unconfirmed
        "vllm@tpu.google.com",  # vLLM TPU documents a Docker image; its name is unconfirmed
        "vllm@dra.cpu",  # the repository is confirmed, a `latest` tag is not
        "vllm@gpu.amd.com",  # AMD documents long version tags; `latest` unconfirmed
        "sglang@gpu.amd.com",  # SGLang publishes versioned -rocm tags; no moving tag confirmed
    }
)
"""Keys of :data:`DEFAULT_ENGINE_IMAGES` whose default is a best guess, not a confirmed image."""

_IMAGE_ENTRYPOINT_ENGINES = frozenset({"llamacpp"})
"""Engines whose image's entrypoint *is* the server (llama.cpp's ``/app/llama-server``): the
adapter's arguments go in ``args`` and the executable name is dropped. Others get an explicit
``command`` (``vllm`` is on the PATH of the vLLM image; Python modules run with ``python3``)."""

_PYTHON = "python3"
"""The interpreter in the SGLang image and in aviator's image, replacing the plane's own
``sys.executable`` that the adapters put first."""

_LOAD_METRICS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        # (waiting requests, KV-cache usage 0..1): the gauges aviator.enginemetrics reads.
        "vllm": ("vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"),
        "sim": ("vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"),
        "sglang": ("sglang:num_queue_reqs", "sglang:token_usage"),
    }
)

_RESOURCES: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        # Host resources beside the devices: the simulator is small; GPU engines need host
        # memory to load weights and CPU for tokenization and scheduling.
        "sim": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "vllm": {"requests": {"cpu": "4", "memory": "16Gi"}},
        "sglang": {"requests": {"cpu": "4", "memory": "16Gi"}},
        "llamacpp": {"requests": {"cpu": "2", "memory": "8Gi"}},
    }
)

_SHM_ENGINES = frozenset({"vllm", "sglang"})
"""Engines that use shared memory between worker processes (tensor parallelism, NCCL); the
container runtime's 64 MiB ``/dev/shm`` is too small for them."""

_MODEL_CACHE = "/var/cache/aviator/models"


class RenderError(ValueError):
    """The ModelDeployment cannot be rendered for a cluster; the message names the field."""


@dataclass(frozen=True, slots=True)
class EndpointPicker:
    """The Gateway API Inference Extension endpoint picker (EPP) Service to reference."""

    name: str
    port: int = 9002
    failure_mode: Literal["FailOpen", "FailClose"] = "FailClose"


def default_aviator_image() -> str:
    return f"aviator:{__version__}"


@dataclass(frozen=True, slots=True)
class RenderOptions:
    aviator_image: str = field(default_factory=default_aviator_image)
    """aviator's image (the simulator, the operator and the gateway run from it)."""
    engine_images: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ENGINE_IMAGES))
    endpoint_picker: EndpointPicker | None = None
    kubernetes_version: tuple[int, int] = MIN_KUBERNETES
    desired_replicas: int | None = None
    """Replicas to run when no HPA manages the count (the operator passes the plane's decision,
    e.g. the SLO's floor); default ``replicas.min``."""


@dataclass(frozen=True, slots=True)
class Rendered:
    """The manifests for one ModelDeployment, in apply order, and what the reader should know."""

    objects: list[dict[str, Any]]
    notes: list[str]


def parse_kubernetes_version(text: str) -> tuple[int, int]:
    """``"1.34"`` (or ``v1.34``, ``1.34.2``) as ``(1, 34)``; ``RenderError`` when too old or malformed."""
    parts = text.strip().removeprefix("v").split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts[:2]):
        raise RenderError(f"--k8s-version: expected MAJOR.MINOR like 1.34 (got {text!r})")
    version = (int(parts[0]), int(parts[1]))
    if version < MIN_KUBERNETES:
        raise RenderError(
            f"--k8s-version: {text} is too old; resource.k8s.io/v1 ResourceClaimTemplates need "
            f"Kubernetes {MIN_KUBERNETES[0]}.{MIN_KUBERNETES[1]} or later"
        )
    return version


def selector_labels(md: ModelDeployment) -> dict[str, str]:
    """The immutable selector of the Deployment, Service, InferencePool and PDB."""
    return {LABEL_DEPLOYMENT: md.name}


def _labels(md: ModelDeployment, engine: str) -> dict[str, str]:
    # The ModelDeployment's own labels travel along; ours win on the keys we own.
    return {
        **md.metadata.labels,
        "app.kubernetes.io/name": md.name,
        "app.kubernetes.io/instance": md.name,
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/managed-by": "aviator",
        "aviator.dev/engine": engine,
        LABEL_DEPLOYMENT: md.name,
    }


def _metadata(md: ModelDeployment, name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": md.namespace or "default"}
    meta["labels"] = dict(labels)
    if md.metadata.uid:
        meta["ownerReferences"] = [
            {
                "apiVersion": GROUP_VERSION,
                "kind": "ModelDeployment",
                "name": md.name,
                "uid": md.metadata.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return meta


def image_key(engine: str, driver: str | None) -> str:
    """``ENGINE@DRIVER`` (``ENGINE`` when no driver): the key of :data:`DEFAULT_ENGINE_IMAGES`
    and of ``--engine-image``. Class aliases (``cpu``) become their driver (``dra.cpu``)."""
    return engine if driver is None else f"{engine}@{DRIVER_ALIASES.get(driver, driver)}"


def engine_image(images: Mapping[str, str], *, engine: str, driver: str | None) -> str:
    """The image ``engine`` runs from on ``driver``'s devices: ``ENGINE@DRIVER``, else the
    engine-wide ``ENGINE`` (no accelerators, or a driver aviator has no table row for)."""
    for key in (image_key(engine, driver), engine):
        if key in images:
            return images[key]
    raise RenderError(
        f"spec.engine: no image configured for engine {engine!r}; give one with "
        f"--engine-image {image_key(engine, driver)}=REF"
    )


def _image_engines() -> frozenset[str]:
    return frozenset(key.partition("@")[0] for key in DEFAULT_ENGINE_IMAGES)


def _driver_problem(driver: str) -> str | None:
    # A DRA driver name is a DNS subdomain (the class alias "cpu" is accepted too).
    labels = driver.split(".")
    if len(driver) > 253 or not all(
        label and len(label) <= 63 and label[0].isalnum() and label[-1].isalnum()
        for label in labels
    ):
        return "a DRA driver name is a DNS subdomain like gpu.amd.com"
    if not all(ch.islower() or ch.isdigit() or ch in "-." for ch in driver):
        return "a DRA driver name is lower case: letters, digits, '-' and '.'"
    return None


def parse_engine_images(values: Sequence[str]) -> dict[str, str]:
    """``ENGINE[@DRIVER]=IMAGE`` pairs over :data:`DEFAULT_ENGINE_IMAGES`; ``RenderError``
    names a bad one."""
    images = dict(DEFAULT_ENGINE_IMAGES)
    engines = _image_engines()
    for value in values:
        key, sep, image = value.partition("=")
        if not sep or not image or any(ch.isspace() for ch in image):
            raise RenderError(f"--engine-image: expected ENGINE[@DRIVER]=IMAGE (got {value!r})")
        engine, at, driver = key.partition("@")
        if engine not in engines:
            raise RenderError(
                f"--engine-image: unknown engine {engine!r}; expected one of "
                f"{', '.join(sorted(engines))} (the simulator uses --image)"
            )
        if at and (problem := _driver_problem(driver)):
            raise RenderError(f"--engine-image {value!r}: {problem}")
        images[image_key(engine, driver if at else None)] = image
    return images


def _class_engines(alternative: DeviceSubRequest) -> list[str] | None:
    """Engines the compatibility matrix allows on this class's driver; None for a class the
    matrix does not know (a cluster's own DeviceClass)."""
    known = [e for e in ENGINES if support_for(e, alternative.device_class_name) is not None]
    only_sim = known == [SIMULATOR]
    return None if only_sim else known


def cluster_engine(md: ModelDeployment) -> tuple[str, list[DeviceSubRequest], list[str]]:
    """The engine the Pods run, the claim alternatives it can use, and notes.

    In a cluster the scheduler picks the alternative when it allocates, after the Pod template
    is fixed, so one engine must fit every alternative kept: ``auto`` takes the first engine (in
    the matrix's order) that every known alternative supports; an explicit engine drops the
    alternatives it cannot run on, as placement would never choose them."""
    spec = md.spec
    engine: str = spec.engine
    if engine == "external":
        return engine, [], []
    if spec.accelerators is None:
        return ("sim" if engine == "auto" else engine), [], []
    alternatives = spec.accelerators.alternatives()
    notes: list[str] = []
    supported = {i: _class_engines(alt) for i, alt in enumerate(alternatives)}
    if engine == "auto":
        known = [engines for engines in supported.values() if engines is not None]
        if not known:
            classes = ", ".join(a.device_class_name for a in alternatives)
            raise RenderError(
                f"spec.engine: 'auto' cannot choose an engine for device classes {classes} "
                f"(not in the engine compatibility matrix); set spec.engine to one of "
                f"{', '.join(e for e in ENGINES if e != SIMULATOR)}"
            )
        common = [e for e in ENGINES if e != SIMULATOR and all(e in k for k in known)]
        if not common:
            raise RenderError(
                "spec.engine: 'auto' finds no engine that runs on every alternative of "
                "spec.accelerators.firstAvailable; set spec.engine, or split the alternatives "
                "into separate ModelDeployments"
            )
        engine = common[0]
    kept: list[DeviceSubRequest] = []
    for i, alt in enumerate(alternatives):
        engines = supported[i]
        if engines is None or engine == SIMULATOR or engine in engines:
            kept.append(alt)
        else:
            notes.append(
                f"alternative {alt.device_class_name!r} dropped: engine {engine} does not run "
                "on it (aviator.placement.engines)"
            )
    if not kept:
        raise RenderError(
            f"spec.engine: {engine} runs on none of the alternatives of spec.accelerators"
        )
    return engine, kept, notes


def _driver_of(alternative: DeviceSubRequest) -> str:
    # aviator's shipped classes, like the DRA drivers' own, are named after the driver.
    return DRIVER_ALIASES.get(alternative.device_class_name, alternative.device_class_name)


def image_alternatives(
    engine: str, alternatives: Sequence[DeviceSubRequest], images: Mapping[str, str]
) -> tuple[str, list[DeviceSubRequest], list[str]]:
    """The engine container's image, the alternatives that image runs on, and notes (for a
    real engine: the simulator runs from aviator's image, whatever the device).

    One Deployment has one Pod template, fixed before the scheduler picks an alternative, so
    it carries one image: the most preferred (first) alternative's. Alternatives whose driver
    needs another build of the engine (ROCm, Gaudi, CPU beside CUDA) are dropped with a note,
    the same rule as an engine that cannot run on an alternative: refusing the whole
    ModelDeployment would serve nothing, while the first alternative is what was asked for
    first. Splitting the alternatives into one ModelDeployment per vendor keeps them all."""
    if not alternatives:
        return engine_image(images, engine=engine, driver=None), [], []
    first = engine_image(images, engine=engine, driver=_driver_of(alternatives[0]))
    kept = [alternatives[0]]
    dropped: list[str] = []
    for alt in alternatives[1:]:
        image = engine_image(images, engine=engine, driver=_driver_of(alt))
        if image == first:
            kept.append(alt)
        else:
            dropped.append(f"{alt.device_class_name!r} (needs {image})")
    notes = []
    if dropped:
        notes.append(
            f"spec.accelerators.firstAvailable: alternative(s) {', '.join(dropped)} dropped: one "
            f"Deployment runs one image, {first} for {alternatives[0].device_class_name!r} "
            "(the first); split them into one ModelDeployment per vendor, or give them one "
            "image with --engine-image ENGINE@DRIVER=REF"
        )
    return first, kept, notes


def _request_name(alternative: DeviceSubRequest, taken: set[str]) -> str:
    # DRA request names are DNS labels; the default name (the class name) has dots.
    base = (alternative.name or alternative.device_class_name).lower()
    label = "".join(ch if ch.isalnum() else "-" for ch in base).strip("-")[:63] or "device"
    name, n = label, 2
    while name in taken:
        suffix = f"-{n}"
        name, n = label[: 63 - len(suffix)] + suffix, n + 1
    taken.add(name)
    return name


def _device_request(
    alternative: DeviceSubRequest, *, excluded: Sequence[str], name: str | None
) -> dict[str, Any]:
    selectors = [*alternative.selectors, *(f"device.driver != '{d}'" for d in excluded)]
    request: dict[str, Any] = {}
    if name is not None:
        request["name"] = name
    request["deviceClassName"] = alternative.device_class_name
    request["allocationMode"] = "ExactCount"
    request["count"] = alternative.count
    if selectors:
        request["selectors"] = [{"cel": {"expression": s}} for s in selectors]
    return request


def _claim_template(
    md: ModelDeployment, alternatives: Sequence[DeviceSubRequest], labels: Mapping[str, str]
) -> dict[str, Any]:
    claim = md.spec.accelerators
    assert claim is not None
    excluded = md.spec.sovereignty.excluded_drivers if md.spec.sovereignty else []
    request: dict[str, Any] = {"name": CLAIM_NAME}
    if claim.first_available:
        taken: set[str] = set()
        request["firstAvailable"] = [
            _device_request(a, excluded=excluded, name=_request_name(a, taken))
            for a in alternatives
        ]
    else:
        request["exactly"] = _device_request(alternatives[0], excluded=excluded, name=None)
    devices: dict[str, Any] = {"requests": [request]}
    if claim.constraints:
        devices["constraints"] = [
            {"requests": [CLAIM_NAME], "matchAttribute": c.match_attribute}
            for c in claim.constraints
        ]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": _metadata(md, f"{md.name}-{CLAIM_NAME}", labels),
        "spec": {
            "metadata": {"labels": dict(labels)},
            "spec": {"devices": devices},
        },
    }


def _replica_for(md: ModelDeployment, engine: str) -> Replica:
    # The engine adapters take a Replica; in a cluster every Pod of the template is one.
    spec = md.spec
    return Replica(
        metadata={"name": md.name, "namespace": md.namespace},
        spec=ReplicaSpec(
            model=spec.model,
            engine=engine,  # resolved by cluster_engine: never "auto"
            engine_args=list(spec.engine_args),
            env=dict(spec.env),
            simulator=spec.simulator if engine == SIMULATOR else None,
        ),
    )


def _command(engine: str, argv: list[str]) -> dict[str, list[str]]:
    if argv and argv[0] == sys.executable:
        argv = [_PYTHON, *argv[1:]]
    if engine in _IMAGE_ENTRYPOINT_ENGINES:
        return {"args": argv[1:]}
    return {"command": argv}


def _probe(path: str, *, period: int, failures: int, timeout: int = 3) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def _container(md: ModelDeployment, engine: str, image: str) -> dict[str, Any]:
    adapter = for_engine(engine)
    replica = _replica_for(md, engine)
    argv = adapter.argv(replica, host="0.0.0.0", port=ENGINE_PORT)
    assert argv is not None  # only ``external`` runs no process, and it renders no Deployment
    env = {**adapter.env(replica)}
    if engine != SIMULATOR:
        # Weights download into the Pod's cache volume (HF_HOME is read by vLLM, SGLang and
        # llama.cpp's -hf alike).
        env["HF_HOME"] = _MODEL_CACHE
    env.update(md.spec.env)
    # Model loading can take long (downloads, compilation): the startup probe holds liveness
    # off for up to an hour for real engines; the simulator is up within seconds.
    startup_failures = 12 if engine == SIMULATOR else 360
    container: dict[str, Any] = {
        "name": "engine",
        "image": image,
        **_command(engine, argv),
        "ports": [{"name": "http", "containerPort": ENGINE_PORT, "protocol": "TCP"}],
        "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
        "resources": {k: dict(v) for k, v in _RESOURCES[engine].items()},
        "startupProbe": _probe(
            adapter.health_path, period=5 if engine == SIMULATOR else 10, failures=startup_failures
        ),
        "readinessProbe": _probe(adapter.health_path, period=5, failures=3),
        "livenessProbe": _probe(adapter.health_path, period=10, failures=6, timeout=5),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    mounts = []
    if engine != SIMULATOR:
        mounts.append({"name": "model-cache", "mountPath": _MODEL_CACHE})
    if engine in _SHM_ENGINES:
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})
    if mounts:
        container["volumeMounts"] = mounts
    if md.spec.accelerators is not None:
        container["resources"]["claims"] = [{"name": CLAIM_NAME}]
    return container


def _affinity(md: ModelDeployment) -> dict[str, Any] | None:
    regions = md.spec.sovereignty.allowed_regions if md.spec.sovereignty else []
    if not regions:
        return None
    term = {
        "matchExpressions": [
            {"key": "topology.kubernetes.io/region", "operator": "In", "values": list(regions)}
        ]
    }
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
        }
    }


def _pod_spec(
    md: ModelDeployment, engine: str, image: str, claim_template: str | None
) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 60,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [_container(md, engine, image)],
    }
    if engine == SIMULATOR:
        pod["securityContext"].update({"runAsNonRoot": True, "runAsUser": 65532})
    if claim_template is not None:
        pod["resourceClaims"] = [{"name": CLAIM_NAME, "resourceClaimTemplateName": claim_template}]
    if (affinity := _affinity(md)) is not None:
        pod["affinity"] = affinity
    claim = md.spec.accelerators
    if claim is not None and claim.strategy == "spread":
        pod["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector_labels(md)},
            }
        ]
    volumes = []
    if engine != SIMULATOR:
        volumes.append({"name": "model-cache", "emptyDir": {}})
    if engine in _SHM_ENGINES:
        volumes.append({"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}})
    if volumes:
        pod["volumes"] = volumes
    return pod


def _autoscaled(md: ModelDeployment) -> bool:
    replicas = md.spec.replicas
    return md.spec.autoscaling is not None and (replicas.max or 0) > replicas.min


def _deployment(
    md: ModelDeployment,
    engine: str,
    image: str,
    options: RenderOptions,
    labels: Mapping[str, str],
    claim_template: str | None,
    *,
    hpa: bool,
) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if not hpa:
        # With an HPA the count is the HPA's: applying one here would fight it.
        spec["replicas"] = (
            options.desired_replicas
            if options.desired_replicas is not None
            else md.spec.replicas.min
        )
    spec.update(
        {
            "selector": {"matchLabels": selector_labels(md)},
            # Surge only: a new Pod becomes Ready before an old one goes (the plane's rollout).
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": _pod_spec(md, engine, image, claim_template),
            },
        }
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(md, md.name, labels),
        "spec": spec,
    }


def _service(md: ModelDeployment, labels: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(md, md.name, labels),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(md),
            "ports": [
                {
                    "name": "http",
                    "port": ENGINE_PORT,
                    "targetPort": "http",
                    "protocol": "TCP",
                    "appProtocol": "http",
                }
            ],
        },
    }


def _inference_pool(
    md: ModelDeployment, labels: Mapping[str, str], picker: EndpointPicker | None
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(md)},
        "targetPorts": [{"number": ENGINE_PORT}],
    }
    if picker is not None:
        spec["endpointPickerRef"] = {
            "kind": "Service",
            "name": picker.name,
            "port": {"number": picker.port},
            "failureMode": picker.failure_mode,
        }
    return {
        "apiVersion": "inference.networking.k8s.io/v1",
        "kind": "InferencePool",
        "metadata": _metadata(md, md.name, labels),
        "spec": spec,
    }


def _quantity(value: float) -> str:
    """A Kubernetes quantity for a positive float: ``2`` or ``800m``."""
    if float(value).is_integer():
        return str(int(value))
    return f"{max(1, round(value * 1000))}m"


def _hpa(md: ModelDeployment, engine: str, labels: Mapping[str, str]) -> dict[str, Any]:
    autoscaling = md.spec.autoscaling
    assert autoscaling is not None
    assert md.spec.replicas.max is not None
    waiting, kv = _LOAD_METRICS[engine]

    def pods_metric(name: str, target: float) -> dict[str, Any]:
        return {
            "type": "Pods",
            "pods": {
                "metric": {"name": name},
                "target": {"type": "AverageValue", "averageValue": _quantity(target)},
            },
        }

    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(md, md.name, labels),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": md.name},
            # Scale to zero needs the alpha HPAScaleToZero gate: one replica stays.
            "minReplicas": max(1, md.spec.replicas.min),
            "maxReplicas": md.spec.replicas.max,
            "metrics": [
                pods_metric(waiting, autoscaling.target_queue_depth),
                pods_metric(kv, autoscaling.target_kv_cache_usage),
            ],
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": math.ceil(
                        autoscaling.scale_up_stabilization_seconds
                    )
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": math.ceil(
                        autoscaling.scale_down_stabilization_seconds
                    )
                },
            },
        },
    }


def _pdb(md: ModelDeployment, labels: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(md, md.name, labels),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(md)},
            # A Pod stuck loading a model must not block a node drain.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def render(md: ModelDeployment, *, options: RenderOptions | None = None) -> Rendered:
    """The objects the operator applies for ``md`` (admitted: defaults applied), in apply order:
    ResourceClaimTemplate (with accelerators), Deployment, Service, InferencePool,
    HorizontalPodAutoscaler (when autoscaled), PodDisruptionBudget."""
    options = options or RenderOptions()
    if options.kubernetes_version < MIN_KUBERNETES:
        raise RenderError(
            f"Kubernetes {options.kubernetes_version[0]}.{options.kubernetes_version[1]} is too "
            f"old: resource.k8s.io/v1 needs {MIN_KUBERNETES[0]}.{MIN_KUBERNETES[1]} or later"
        )
    where = f"{md.namespace or 'default'}/{md.name}"
    engine, alternatives, notes = cluster_engine(md)
    notes = [f"{where}: {n}" for n in notes]
    if engine == "external":
        return Rendered(
            objects=[],
            notes=[f"{where}: engine external runs no workload in the cluster; nothing to apply"],
        )
    if engine == SIMULATOR:
        image = options.aviator_image
    else:
        image, alternatives, image_notes = image_alternatives(
            engine, alternatives, options.engine_images
        )
        notes.extend(f"{where}: {n}" for n in image_notes)
        driver = _driver_of(alternatives[0]) if alternatives else None
        key = image_key(engine, driver)
        if key not in options.engine_images:
            key = engine
        if key in UNVERIFIED_ENGINE_IMAGES and image == DEFAULT_ENGINE_IMAGES.get(key):
            notes.append(
                f"{where}: image {image} is aviator's unverified default for {key}; pin the "
                f"image of your platform with --engine-image {key}=REF"
            )
    labels = _labels(md, engine)
    objects: list[dict[str, Any]] = []
    claim_template: str | None = None
    if md.spec.accelerators is not None:
        template = _claim_template(md, alternatives, labels)
        claim_template = template["metadata"]["name"]
        objects.append(template)
    hpa = _autoscaled(md) and engine in _LOAD_METRICS
    if _autoscaled(md) and not hpa:
        notes.append(
            f"{where}: no HorizontalPodAutoscaler: engine {engine} exports no queue or KV-cache "
            f"gauge aviator reads; the Deployment runs replicas.min"
        )
    if hpa and md.spec.replicas.min == 0:
        notes.append(f"{where}: the HPA keeps at least 1 replica (scale to zero is alpha upstream)")
    objects.append(_deployment(md, engine, image, options, labels, claim_template, hpa=hpa))
    objects.append(_service(md, labels))
    objects.append(_inference_pool(md, labels, options.endpoint_picker))
    if hpa:
        objects.append(_hpa(md, engine, labels))
    objects.append(_pdb(md, labels))
    if md.spec.slo is not None and options.desired_replicas is None:
        notes.append(
            f"{where}: the replica floor spec.slo sets is planned by the operator from the "
            "cluster's ResourceSlices; offline, replicas.min is used"
        )
    if not md.metadata.uid:
        notes.append(
            f"{where}: no metadata.uid (not a live object): ownerReferences are added when the "
            "operator applies these"
        )
    return Rendered(objects=objects, notes=notes)
