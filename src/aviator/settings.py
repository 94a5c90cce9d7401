"""One typed root of every tunable, made of per-subsystem dataclasses.

Pure data: nothing here reads the environment or the disk. ``aviator up`` builds a ``Settings``
from its flags and passes parts of it down explicitly; there are no module-level settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ApiSettings:
    host: str = "127.0.0.1"
    """Loopback by default: the Control API holds the keys to the plane."""
    port: int = 8081
    max_body_bytes: int = 1 * 1024 * 1024
    """Largest request body accepted (bytes). 1 MiB, well above any real object, like the
    Kubernetes API server's 3 MiB etcd limit but tighter because nothing here is that big."""
    watch_keepalive_s: float = 15.0
    """Seconds between BOOKMARK events on an idle watch, so proxies and clients see liveness."""


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 8 * 1024 * 1024
    """Largest inference request body (bytes); long prompts are big but not unbounded."""
    connect_timeout_s: float = 2.0
    read_timeout_s: float = 300.0
    """Per-read upstream timeout: long enough for slow first tokens, never unbounded."""
    metrics_interval_s: float = 0.1
    """How often every replica's ``/metrics`` is read for the load-aware scorers; 0 disables
    scraping (the queue-depth and KV-cache scorers then score every replica 0)."""
    metrics_stale_after_s: float = 1.0
    """A replica whose last good metrics are older than this counts as saturated."""
    prefix_blocks_per_replica: int = 31_250
    """Prompt blocks remembered per replica by the prefix index (llm-d's default)."""
    session_ttl_s: float = 300.0
    """How long ``x-session-id`` affinity lasts after a session's last request."""
    saturation_queue_depth: float = 5.0
    """Waiting requests at which a replica counts as saturated (llm-d's ``queueDepthThreshold``).
    Saturation detection is on only while replica metrics are scraped."""
    saturation_kv_cache_usage: float = 0.8
    """KV-cache usage (0-1) at which a replica counts as saturated (llm-d's
    ``kvCacheUtilThreshold``)."""
    queue_size: int = 256
    """Requests of one model that may wait for its saturated pool, critical and standard
    together; beyond it standard gets 429 and critical displaces the youngest standard waiter.
    Bounded so that a stuck pool costs memory in proportion to this, not to the load."""
    queue_max_wait_s: float = 10.0
    """Longest a request waits for a saturated pool before a 503 with ``Retry-After``: long enough
    to ride out a burst, short enough to answer well within a client's usual 60 s timeout."""
    queue_recheck_s: float = 0.025
    """How often waiting requests re-check saturation and their deadline (they are also released
    whenever a request of their model ends). At most 50 ms, a fraction of a typical TTFT."""
    shed_retry_after_s: int = 1
    """``Retry-After`` (whole seconds) on 429/503 from flow control: about one refresh of the
    replica metrics, after which saturation may have cleared."""
    breaker_failures: int = 5
    """Consecutive failures (connect errors, 5xx or read timeouts before the first byte) that open
    a replica's circuit breaker."""
    breaker_cooldown_s: float = 1.0
    """How long an opened breaker keeps requests away before one trial request; doubles with every
    failed trial."""
    breaker_cooldown_max_s: float = 30.0
    """Upper bound of the doubling cool-down."""


@dataclass(frozen=True, slots=True)
class StoreSettings:
    watch_history: int = 10_000
    """Events kept for watches that resume from a resourceVersion; older ones get 410 Gone."""
    watcher_queue: int = 10_000
    """Events buffered per watcher; a watcher that falls further behind is closed with 410."""


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    workers: int = 8
    """Concurrent reconciles per controller (distinct keys only; one key never runs twice)."""
    backoff_base_s: float = 0.05
    backoff_max_s: float = 30.0


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    probe_interval_s: float = 0.2
    """Readiness probe period while a replica runs; bounds how fast the gateway learns of death."""
    probe_timeout_s: float = 0.5
    """A hung engine is noticed within probe_interval_s + probe_timeout_s (0.7 s, inside the 1 s
    the gateway is allowed to keep routing to a dead replica)."""
    startup_timeout_s: float = 120.0
    """How long a starting engine may take to become Ready before it is restarted."""
    restart_backoff_base_s: float = 0.5
    restart_backoff_max_s: float = 30.0
    stop_grace_s: float = 5.0
    """SIGTERM, then this long, then SIGKILL."""
    external_probe_interval_s: float = 2.0


@dataclass(frozen=True, slots=True)
class TrustedIssuerSettings:
    """Another issuer whose tokens count as an aviator agent's (a company IdP, Kubernetes
    service-account tokens), and how its subjects map onto agents."""

    issuer: str
    """The exact ``iss`` of its tokens, e.g. ``https://kubernetes.default.svc.cluster.local``."""
    jwks: str
    """Its public keys: a JWKS file (re-read when it changes) or an ``https://`` URL (fetched at
    start and every ``refresh_s``; plain ``http://`` only to a loopback address)."""
    audience: str
    """The ``aud`` its tokens must carry to be accepted (the audience they were requested for)."""
    subject_claim: str = "sub"
    """The claim that names the agent (a top-level string claim, e.g. ``sub``, ``azp``)."""
    subject_template: str = "{name}"
    """How the claim spells the agent: ``{namespace}`` and ``{name}`` stand for the Agent's
    namespace and name, e.g. ``system:serviceaccount:{namespace}:{name}``."""
    namespace: str | None = None
    """The agents' namespace when the template has no ``{namespace}``."""
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    """Signature algorithms accepted from this issuer (``none`` and HS* never are)."""
    refresh_s: float = 300.0
    """How often a JWKS URL is fetched again (and the fastest a changed file is noticed is 1 s).
    An unknown ``kid`` triggers an earlier fetch, at most every 30 s."""


@dataclass(frozen=True, slots=True)
class IdentitySettings:
    trust_domain: str = "aviator.local"
    """SPIFFE trust domain of agent IDs: ``spiffe://<trust-domain>/ns/<ns>/agent/<name>``."""
    issuer: str = ""
    """``iss`` of the tokens the plane mints; empty means ``spiffe://<trust-domain>``. A fixed
    string rather than the Control API's URL, whose port may change between runs."""
    default_ttl_s: int = 900
    """Lifetime of a token when the request names none: 15 minutes, short enough that a leaked
    token is soon useless, long enough not to re-issue per request."""
    max_ttl_s: int = 3600
    """Longest lifetime a token may be issued with (at most 1 h, the hard cap)."""
    leeway_s: int = 30
    """Clock skew tolerated on ``exp``, ``nbf`` and ``iat`` (seconds)."""
    cache_size: int = 10_000
    """Verified tokens remembered (LRU) so that a token is checked cryptographically once, not
    per request; about 1 KiB each."""
    trusted_issuers: tuple[TrustedIssuerSettings, ...] = ()

    @property
    def effective_issuer(self) -> str:
        return self.issuer or f"spiffe://{self.trust_domain}"


@dataclass(frozen=True, slots=True)
class AuditSettings:
    path: Path | None = None
    """The audit log's SQLite file; None means ``<data-dir>/audit.db``. A file of its own, so
    audit writes never wait on the object store's write lock, nor the store on them."""
    batch_interval_s: float = 0.05
    """Longest an appended record waits before its batch is written (50 ms): short enough that
    ``aviator audit tail`` feels live, long enough that a busy gateway commits once per batch."""
    max_batch: int = 1000
    """Records per transaction; a full batch is written at once without waiting for the
    interval. 1000 keeps one commit in the low milliseconds."""
    queue_bound: int = 10_000
    """Records appended but not yet written. When full, ``append`` blocks (backpressure) rather
    than drop: about 3 MiB, and 0.2 s of writing, at the default sizes."""
    full_timeout_s: float = 5.0
    """Longest ``append`` blocks on a full queue before raising ``AuditUnavailable``, so the
    caller can refuse the request (fail closed) instead of hanging."""


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = Path(".aviator")
    api: ApiSettings = field(default_factory=ApiSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    controllers: ControllerSettings = field(default_factory=ControllerSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
