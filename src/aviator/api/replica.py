"""``Replica``: one model-server instance owned by a ModelDeployment."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from aviator.api.meta import Model
from aviator.api.modeldeployment import (
    AcceleratorClaim,
    ExternalEndpoint,
    ModelRef,
    SimulatorOptions,
    Sovereignty,
)
from aviator.api.names import LABEL_DEPLOYMENT, LABEL_TEMPLATE_HASH, RUNTIME_FINALIZER
from aviator.api.resource import Resource, Status

__all__ = [
    "LABEL_DEPLOYMENT",
    "LABEL_TEMPLATE_HASH",
    "READY",
    "RUNTIME_FINALIZER",
    "SCHEDULED",
    "AllocatedDevice",
    "LastExit",
    "Replica",
    "ReplicaEngine",
    "ReplicaPhase",
    "ReplicaSpec",
    "ReplicaStatus",
]

ReplicaEngine = Literal["auto", "sim", "vllm", "sglang", "llamacpp", "external"]
"""``auto`` only until the replica is scheduled: placement then picks the engine for its device."""
ReplicaPhase = Literal["Pending", "Starting", "Running", "Failed", "Terminating"]

READY = "Ready"
"""Condition type the gateway routes on."""
SCHEDULED = "Scheduled"
"""Condition type saying whether the replica's devices were allocated (and if not, why)."""


class AllocatedDevice(Model):
    """One device allocated to a replica (a DRA allocation result)."""

    request: str
    """The claim alternative it satisfies (``firstAvailable`` entry name)."""
    driver: str
    device: str
    """Device name on the replica's node."""


class ReplicaSpec(Model):
    """One engine instance, as its owner's template rendered it."""

    model: ModelRef
    engine: ReplicaEngine
    """The engine; ``auto`` until scheduling resolves it."""
    engine_args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    simulator: SimulatorOptions | None = None
    external: ExternalEndpoint | None = None
    node: str = "local"
    """Where it runs; ``local`` is the machine of the embedded plane."""
    devices: list[AllocatedDevice] = Field(default_factory=list)
    """Devices on ``node`` held by this replica; released when it is deleted."""
    accelerators: AcceleratorClaim | None = None
    """The claim to schedule; while ``node`` is empty the replica waits for devices."""
    sovereignty: Sovereignty | None = None
    template_hash: str = ""
    """Hash of the owner's template this replica was made from; a change means replace."""


class LastExit(Model):
    """How the engine process last ended."""

    code: int | None = None
    """Exit code, when it exited."""
    signal: int | None = None
    """Signal number, when it was killed."""
    reason: str = ""
    finished_at: datetime | None = None


class ReplicaStatus(Status):
    """Observed state of the engine. Condition ``Ready``: the engine answers its readiness probe
    (the gateway routes only to Ready replicas)."""

    phase: ReplicaPhase = "Pending"
    endpoint: str | None = None
    """Base URL (``http://host:port``) of the OpenAI-compatible server."""
    pid: int | None = None
    """Process id of the engine (local runtime)."""
    port: int | None = None
    restarts: int = 0
    """Times the engine was restarted after exiting or failing to become ready."""
    started_at: datetime | None = None
    last_exit: LastExit | None = None
    message: str = ""
    """Human-readable detail of the current phase."""


class Replica(Resource[ReplicaSpec, ReplicaStatus]):
    KIND: ClassVar[str] = "Replica"
    kind: str = "Replica"
    status: ReplicaStatus = Field(default_factory=ReplicaStatus)
