"""``Replica``: one model-server instance owned by a ModelDeployment."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from aviator.api.meta import Model
from aviator.api.modeldeployment import ExternalEndpoint, ModelRef, SimulatorOptions
from aviator.api.resource import Resource, Status

ReplicaEngine = Literal["sim", "vllm", "external"]
ReplicaPhase = Literal["Pending", "Starting", "Running", "Failed", "Terminating"]

READY = "Ready"
"""Condition type the gateway routes on."""


class ReplicaSpec(Model):
    model: ModelRef
    engine: ReplicaEngine
    engine_args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    simulator: SimulatorOptions | None = None
    external: ExternalEndpoint | None = None
    node: str = "local"
    template_hash: str = ""
    """Hash of the owner's template this replica was made from; a change means replace."""


class LastExit(Model):
    code: int | None = None
    signal: int | None = None
    reason: str = ""
    finished_at: datetime | None = None


class ReplicaStatus(Status):
    phase: ReplicaPhase = "Pending"
    endpoint: str | None = None
    """Base URL (``http://host:port``) of the OpenAI-compatible server."""
    pid: int | None = None
    port: int | None = None
    restarts: int = 0
    started_at: datetime | None = None
    last_exit: LastExit | None = None
    message: str = ""


class Replica(Resource[ReplicaSpec, ReplicaStatus]):
    KIND: ClassVar[str] = "Replica"
    kind: str = "Replica"
    status: ReplicaStatus = Field(default_factory=ReplicaStatus)
