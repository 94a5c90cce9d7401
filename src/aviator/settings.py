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
class Settings:
    data_dir: Path = Path(".aviator")
    api: ApiSettings = field(default_factory=ApiSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    controllers: ControllerSettings = field(default_factory=ControllerSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
