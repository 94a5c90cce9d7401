"""``ModelDeployment``: a model to serve, and how many replicas of which engine serve it."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from aviator.api.meta import Model
from aviator.api.resource import Resource, Status

EngineName = Literal["auto", "sim", "vllm", "sglang", "llamacpp", "external"]
"""``auto`` lets the plane choose an engine that fits the placement (the simulator when no
accelerator is available); the others pin one."""

Priority = Literal["critical", "standard", "sheddable"]


class ModelRef(Model):
    """The model: its served name, and optionally where it comes from."""

    name: str = Field(
        min_length=1,
        max_length=256,
        description="The served model name clients put in the OpenAI `model` field.",
    )
    source: str | None = Field(
        default=None,
        max_length=2048,
        description="Where the weights come from, e.g. `hf://meta-llama/Llama-3.1-8B-Instruct`.",
    )
    digest: str | None = Field(
        default=None,
        pattern=r"^sha256:[0-9a-f]{64}$",
        description="Content digest the weights must match.",
    )


class SimulatorOptions(Model):
    """The built-in simulator (engine ``sim``): fixed latencies, or vLLM timed like a device."""

    ttft_ms: float = Field(
        default=40.0,
        ge=0,
        le=600_000,
        description="Time to first token; ignored with `deviceProfile`.",
    )
    itl_ms: float = Field(
        default=8.0,
        ge=0,
        le=60_000,
        description="Inter-token latency; ignored with `deviceProfile`.",
    )
    max_num_seqs: int = Field(
        default=64, ge=1, le=65_536, description="Sequences running at once; others wait."
    )
    max_waiting: int = Field(
        default=1000, ge=0, le=1_000_000, description="Waiting-queue bound; beyond it, 503."
    )
    # The names below are the keys of aviator.placement.profiles (PROFILES, MODEL_CLASSES,
    # TENSOR_PARALLEL_DEGREES), spelled out because the api imports nothing of ours; a test in
    # tests/unit/sim holds them equal.
    device_profile: (
        Literal[
            "h100-sxm-80gb",
            "h200-sxm-141gb",
            "a100-sxm-80gb",
            "a100-40gb",
            "l40s-48gb",
            "l4-24gb",
            "mi300x-192gb",
            "gaudi3-128gb",
            "tpu-v6e",
            "tpu-v5e",
            "cpu-server-socket",
        ]
        | None
    ) = Field(
        default=None,
        description="Time the simulator like vLLM on this device: continuous batching with "
        "chunked prefill, the device's KV-cache size and step times from its performance profile. "
        "Set by the scheduler when it runs the simulator on a declared device.",
    )
    model_class: Literal["8b", "70b", "70b-fp8"] | None = Field(
        default=None,
        description="Model size class on `deviceProfile`; defaults to `8b`.",
    )
    tensor_parallel: Literal[1, 2, 4, 8] | None = Field(
        default=None,
        description="Devices one replica spans with `deviceProfile`; defaults to the smallest "
        "degree whose KV cache is useful.",
    )

    @field_validator("model_class", "tensor_parallel")
    @classmethod
    def _only_with_a_profile(cls, value: object, info: ValidationInfo) -> object:
        if value is not None and info.data.get("device_profile") is None:
            raise ValueError("only applies with deviceProfile")
        return value


class ExternalEndpoint(Model):
    """An OpenAI-compatible server aviator does not run (engine ``external``)."""

    url: str = Field(
        pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
        max_length=2048,
        description="Base URL, e.g. `http://10.0.0.5:8000` (without `/v1`).",
    )


class ReplicasSpec(Model):
    """How many replicas: ``min`` always run; the SLO and the autoscaler move up to ``max``."""

    min: int = Field(default=1, ge=0, le=10_000, description="Replicas that always run.")
    max: int | None = Field(
        default=None,
        ge=0,
        le=10_000,
        description="Upper bound for the SLO and the autoscaler; defaults to `min`.",
    )

    @model_validator(mode="after")
    def _max_at_least_min(self) -> ReplicasSpec:
        if self.max is None:
            self.max = self.min
        elif self.max < self.min:
            raise ValueError(f"max ({self.max}) must be greater than or equal to min ({self.min})")
        return self


class DeviceSubRequest(Model):
    """One prioritized alternative (DRA ``firstAvailable`` entry)."""

    name: str | None = Field(default=None, description="Defaults to the device class name.")
    device_class_name: str = Field(description="A DeviceClass, e.g. `gpu.nvidia.com`.")
    selectors: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="CEL expressions over `device`; all must hold.",
    )
    count: int = Field(default=1, ge=1, le=64, description="Devices per replica.")


class DeviceConstraint(Model):
    match_attribute: str = Field(
        description="All devices of a replica share this attribute's value, e.g. "
        "`resource.kubernetes.io/pcieRoot`; the node is always shared."
    )


class AcceleratorClaim(Model):
    """What each replica needs, as a DRA claim: one class with selectors, or ordered alternatives."""

    device_class_name: str | None = Field(
        default=None, description="The single alternative's class."
    )
    selectors: list[str] = Field(default_factory=list, max_length=32)
    count: int = Field(default=1, ge=1, le=64)
    first_available: list[DeviceSubRequest] = Field(
        default_factory=list, max_length=8, description="Alternatives, most preferred first."
    )
    constraints: list[DeviceConstraint] = Field(default_factory=list, max_length=8)
    strategy: Literal["pack", "spread"] = "pack"
    """``pack`` fills the fullest node that fits; ``spread`` puts replicas on different nodes."""

    @model_validator(mode="after")
    def _one_form(self) -> AcceleratorClaim:
        if self.first_available and (self.device_class_name or self.selectors):
            raise ValueError(
                "set either `deviceClassName`/`selectors` or `firstAvailable`, not both"
            )
        if not self.first_available and not self.device_class_name:
            raise ValueError("requires `deviceClassName` or a non-empty `firstAvailable`")
        return self

    def alternatives(self) -> list[DeviceSubRequest]:
        """The claim as an ordered list of alternatives (one for the short form)."""
        if self.first_available:
            return list(self.first_available)
        assert self.device_class_name is not None
        return [
            DeviceSubRequest(
                name=self.device_class_name,
                device_class_name=self.device_class_name,
                selectors=list(self.selectors),
                count=self.count,
            )
        ]


class Sovereignty(Model):
    """Where a deployment may run, whatever fits otherwise."""

    allowed_regions: list[str] = Field(
        default_factory=list, description="Node regions allowed; empty means any."
    )
    excluded_drivers: list[str] = Field(
        default_factory=list, description="Device drivers never used, e.g. to avoid one vendor."
    )


class ServiceLevelObjective(Model):
    """A throughput target for requests of a stated shape, within a time-to-first-token bound.

    The plane turns it into replicas per execution path with the device performance profiles
    (``aviator.placement.capacity``), bounded by ``spec.replicas``."""

    requests_per_second: float = Field(
        gt=0, le=1_000_000, description="Sustained request rate to serve."
    )
    prompt_tokens: int = Field(default=1000, ge=1, le=1_000_000, description="Prompt length.")
    output_tokens: int = Field(default=200, ge=1, le=1_000_000, description="Output length.")
    ttft_p90_ms: float = Field(
        default=1000.0, gt=0, le=3_600_000, description="90th percentile time to first token."
    )


class Autoscaling(Model):
    """How the autoscaler reads load. It runs when ``replicas.max`` exceeds ``replicas.min``:
    like the HorizontalPodAutoscaler, desired = ceil(current * max(queue ratio, KV ratio)),
    ignored within a 10 % tolerance, then stabilized over the windows."""

    target_queue_depth: float = Field(
        default=2.0, gt=0, le=10_000, description="Waiting requests per replica to aim for."
    )
    target_kv_cache_usage: float = Field(
        default=0.8, gt=0, le=1, description="KV-cache usage (0 to 1) per replica to aim for."
    )
    scale_up_stabilization_seconds: float = Field(
        default=0,
        ge=0,
        le=3600,
        description="Scale up to the lowest recommendation of this window.",
    )
    scale_down_stabilization_seconds: float = Field(
        default=300,
        ge=0,
        le=3600,
        description="Scale down to the highest recommendation of this window.",
    )
    sync_period_seconds: float = Field(
        default=5, ge=0.2, le=600, description="How often load is read and a decision made."
    )


RoutingPreset = Literal["prefix-aware", "load", "session", "round-robin"]
ScorerName = Literal["prefix-cache", "queue-depth", "kv-cache", "in-flight", "session"]


class WeightedScorer(Model):
    """One scorer of the gateway's routing pipeline and its weight."""

    name: ScorerName
    """``prefix-cache`` (replicas recently sent the same prompt prefix), ``queue-depth`` (fewest
    waiting requests), ``kv-cache`` (most free KV cache), ``in-flight`` (fewest requests in flight
    from this gateway) or ``session`` (the replica that served the request's ``x-session-id``)."""
    weight: float = Field(default=1.0, gt=0, le=1000)


class Routing(Model):
    """How the gateway picks a replica: filters, then weighted scorers, then the best score.

    Presets: ``prefix-aware`` (default; llm-d's default profile, prefix-cache 3, queue-depth 2,
    kv-cache 2, plus in-flight 1), ``load`` (queue-depth 2, kv-cache 2, in-flight 1), ``session`` (session 1,
    in-flight 1) and ``round-robin`` (no scorers, each replica in turn). ``scorers`` replaces the
    preset's."""

    preset: RoutingPreset = "prefix-aware"
    scorers: list[WeightedScorer] = Field(default_factory=list, max_length=8)

    @field_validator("scorers")
    @classmethod
    def _distinct(cls, value: list[WeightedScorer]) -> list[WeightedScorer]:
        names = [s.name for s in value]
        if duplicated := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"each scorer at most once; repeated: {', '.join(duplicated)}")
        return value


class ModelDeploymentSpec(Model):
    """The desired state: a model, an engine, and how many replicas serve it."""

    model: ModelRef
    """What to serve."""
    engine: EngineName = "auto"
    """Model server: ``sim`` (built-in simulator), ``vllm`` (runs ``vllm serve``), ``sglang``
    (runs ``python -m sglang.launch_server``), ``llamacpp`` (runs ``llama-server``), ``external``
    (an OpenAI-compatible URL aviator does not run), or ``auto`` (the plane chooses)."""
    engine_args: list[str] = Field(
        default_factory=list, max_length=256, description="Extra engine command-line arguments."
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment variables for engine processes."
    )
    simulator: SimulatorOptions | None = None
    """Simulator settings (engines ``sim`` and ``auto``); defaulted when omitted."""
    external: ExternalEndpoint | None = None
    """Required with engine ``external``."""
    replicas: ReplicasSpec = Field(
        default_factory=ReplicasSpec,
        description="Replica count: an integer, or `{min, max}` bounds for autoscaling.",
    )
    slo: ServiceLevelObjective | None = None
    """A throughput target that sets the replica count within ``replicas``."""
    autoscaling: Autoscaling | None = None
    """Autoscaler tuning; defaulted when ``replicas.max`` exceeds ``replicas.min``."""
    accelerators: AcceleratorClaim | None = None
    """Devices each replica needs; none means it runs on the plane's machine without devices."""
    sovereignty: Sovereignty | None = None
    priority: Priority = "standard"
    """Default request priority for this model: ``critical``, ``standard`` or ``sheddable``."""
    routing: Routing = Field(default_factory=Routing)
    """How the gateway spreads this model's requests over its replicas."""

    @field_validator("replicas", mode="before")
    @classmethod
    def _replicas_shorthand(cls, value: Any) -> Any:
        # `replicas: 2` is the common case; store it in the canonical {min, max} form.
        if isinstance(value, bool):
            raise ValueError("expected an integer or an object with min/max")
        if isinstance(value, int):
            return {"min": value, "max": value}
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if (
                not key
                or not (key[0].isalpha() or key[0] == "_")
                or not all(ch.isalnum() or ch == "_" for ch in key)
            ):
                raise ValueError(f"invalid environment variable name {key!r}")
        return value

    @model_validator(mode="after")
    def _engine_options(self) -> ModelDeploymentSpec:
        if self.engine == "external" and self.external is None:
            raise ValueError("engine 'external' requires `external.url`")
        if self.engine != "external" and self.external is not None:
            raise ValueError(
                f"`external` is only valid with engine 'external' (got {self.engine!r})"
            )
        if self.simulator is not None and self.engine not in ("sim", "auto"):
            raise ValueError(
                f"`simulator` is only valid with engine 'sim' or 'auto' (got {self.engine!r})"
            )
        if self.engine in ("sim", "auto") and self.simulator is None:
            self.simulator = SimulatorOptions()
        if self.slo is not None and self.engine == "external":
            raise ValueError("`slo` needs replicas aviator runs; engine 'external' has none")
        assert self.replicas.max is not None
        if self.autoscaling is None and self.replicas.max > self.replicas.min:
            self.autoscaling = Autoscaling()
        return self


class ReplicaEndpoint(Model):
    replica: str
    """Replica name."""
    url: str
    """Base URL of its OpenAI-compatible server."""


class ReplicaPlacement(Model):
    """Where one replica landed."""

    replica: str
    node: str
    devices: list[str] = Field(default_factory=list)
    engine: str


class ExecutionPath(Model):
    """One way the claim can be satisfied: an alternative on one driver and product."""

    request: str
    device_class: str
    driver: str
    product: str | None = None
    count: int
    """Devices per replica."""
    devices: int
    """Qualifying devices in the fleet."""
    free: int
    """Of them, free now."""
    replicas: int
    """Replicas the fleet could host on this path if nothing else ran."""
    fits_now: int
    """Replicas it could host now."""
    engines: list[str] = Field(default_factory=list)
    """Engines the compatibility matrix allows on this path, most preferred first (whether or
    not they are installed where the replica would run)."""


class PathReplicas(Model):
    """Replicas the SLO plans on one execution path."""

    request: str
    driver: str
    product: str | None = None
    replica_rps: float
    """Requests/s one replica sustains within the TTFT bound (0 when it cannot meet it)."""
    replicas: int
    """Replicas planned on this path."""


class CapacityPlan(Model):
    """What ``spec.slo`` asks for, path by path, in the claim's order of preference."""

    replicas: int
    """Replicas the SLO needs (before the ``spec.replicas`` bounds)."""
    attainable: bool
    """False when the fleet cannot host enough replicas, or no path meets the TTFT bound."""
    paths: list[PathReplicas] = Field(default_factory=list)
    message: str = ""


class ModelDeploymentStatus(Status):
    """Observed state. Conditions: ``Available`` (enough replicas Ready), ``Progressing``
    (rollout state), ``Degraded`` (a replica is failing), ``Scheduled`` (with accelerators),
    ``ScalingLimited`` (with an SLO or autoscaling: the bounds held the count back)."""

    desired_replicas: int | None = None
    """Replicas the plane aims for: ``replicas.min`` raised by the SLO and the autoscaler, within
    ``replicas.max``."""
    capacity: CapacityPlan | None = None
    """How ``spec.slo`` translates into replicas (deployments with an SLO)."""
    replicas: int = 0
    """Replicas that exist (any phase)."""
    ready_replicas: int = 0
    updated_replicas: int = 0
    """Replicas running the current template."""
    endpoints: list[ReplicaEndpoint] = Field(default_factory=list)
    """Base URLs of the Ready replicas."""
    placement: list[ReplicaPlacement] = Field(default_factory=list)
    """Where each scheduled replica landed (deployments with accelerators)."""
    alternatives: list[ExecutionPath] = Field(default_factory=list)
    """Every execution path that satisfies the claim, and how many replicas fit on it now."""


class ModelDeployment(Resource[ModelDeploymentSpec, ModelDeploymentStatus]):
    KIND: ClassVar[str] = "ModelDeployment"
    kind: str = "ModelDeployment"
    status: ModelDeploymentStatus = Field(default_factory=ModelDeploymentStatus)
