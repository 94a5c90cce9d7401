"""Flow control: request priorities, pool saturation, and a bounded, fair queue in front of a pool.

A request's priority comes from the ``x-aviator-priority`` header (``critical``, ``standard`` or
``sheddable``) or else from its model's default (``ModelDeployment.spec.priority``). The three
follow the Gateway API Inference Extension's criticality classes: critical is never shed and is
always dispatched before standard; standard waits while the pool is saturated; sheddable is
refused at once (429 with ``Retry-After``) instead of waiting.

Saturation is read from per-replica signals a metrics scraper keeps in memory (``SignalSource``):
a replica is saturated when its waiting queue or its KV-cache usage reached a threshold (llm-d's
``utilization-detector`` defaults: 5 waiting, 80 % KV) or when its signals are stale or missing
(fail-closed, like llm-d). A pool is saturated when every ready replica is. Two cases have nothing
to detect with and are never saturated: no signal source at all (scraping is off), and a pool none
of whose replicas was ever scraped successfully (an engine without metrics).

While a model's pool is saturated, standard and critical requests wait in that model's bounded
queue: critical strictly first, and within one priority, clients take turns (round-robin over
client identities, each client's own requests first-in first-out), so one busy client cannot
starve the others. A full queue refuses standard with 429; critical instead displaces the
youngest standard waiter (the one that has invested the least waiting; it gets the 429). Waiters
are released as the pool gets room — re-checked every ``recheck_s`` and whenever a request ends —
and time out with 503 and ``Retry-After`` after the maximum wait. A client that disconnects
leaves the queue.

Two layers, as elsewhere in the gateway:

- the pure policy (``request_priority``, ``Saturation``, ``ModelQueue``, ``FlowPolicy``): no I/O,
  no clock (every method that needs the time is given ``now``), no awaits;
- ``FlowControl``, the thin asyncio shell: it parks queued requests on futures, runs the re-check
  tick while anything waits, and records metrics.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from aviator.api.modeldeployment import Priority
from aviator.api.principal import Principal
from aviator.gateway import openai
from aviator.settings import GatewaySettings

__all__ = [
    "ADMIT",
    "PRIORITIES",
    "PRIORITY_HEADER",
    "Admit",
    "Decision",
    "FlowControl",
    "FlowPolicy",
    "FlowRecorder",
    "ModelQueue",
    "Queued",
    "ReplicaSignals",
    "Saturation",
    "ScrapedSignals",
    "Shed",
    "SignalSource",
    "Signals",
    "Waiter",
    "as_priority",
    "client_of",
    "request_priority",
]

PRIORITY_HEADER: Final = "x-aviator-priority"
"""Request header that sets a request's priority, overriding its model's default."""

PRIORITIES: Final[tuple[Priority, ...]] = ("critical", "standard", "sheddable")
"""Every priority, most important first."""

QUEUED: Final[tuple[Priority, ...]] = ("critical", "standard")
"""The priorities that wait for a saturated pool (sheddable never waits)."""

_QUOTE_MAX = 64
"""Longest piece of a bad header value echoed back in an error."""


# --- priorities ---------------------------------------------------------------------------------


def as_priority(value: str) -> Priority | None:
    """``value`` as a priority (case and surrounding blanks ignored), or None if it names none."""
    match value.strip().lower():
        case "critical":
            return "critical"
        case "standard":
            return "standard"
        case "sheddable":
            return "sheddable"
        case _:
            return None


def request_priority(header: str | None, *, default: Priority) -> Priority:
    """The priority of a request whose ``x-aviator-priority`` header is ``header``.

    ``default`` (the model's) applies when the header is absent; a header that names no priority
    (empty included) raises ``OpenAIError`` 400 naming the header and the allowed values.
    """
    if header is None:
        return default
    found = as_priority(header)
    if found is None:
        raise invalid_priority(header)
    return found


def client_of(principal: Principal, remote: str | None) -> str:
    """Who a request is from, for fairness: the authenticated principal, else its address."""
    if principal.kind != "anonymous":
        return principal.id
    return f"addr/{remote}" if remote else principal.id


# --- errors -------------------------------------------------------------------------------------


def invalid_priority(value: str) -> openai.OpenAIError:
    shown = value if len(value) <= _QUOTE_MAX else value[:_QUOTE_MAX] + "…"
    return openai.OpenAIError(
        400,
        f"Invalid {PRIORITY_HEADER} header {shown!r}: expected one of {', '.join(PRIORITIES)}.",
        param=PRIORITY_HEADER,
        code="invalid_priority",
    )


def overloaded(model: str, *, retry_after_s: int) -> openai.OpenAIError:
    """429 for sheddable traffic while the pool is saturated."""
    return openai.OpenAIError(
        429,
        f"The replicas of `{model}` are saturated and this request is sheddable; retry later.",
        type="requests",
        code="model_overloaded",
        retry_after_s=retry_after_s,
    )


def queue_full(model: str, *, retry_after_s: int) -> openai.OpenAIError:
    """429 when the model's queue is full (or a critical request took this one's place)."""
    return openai.OpenAIError(
        429,
        f"Too many requests are waiting for `{model}`; retry later.",
        type="requests",
        code="queue_full",
        retry_after_s=retry_after_s,
    )


def queue_timeout(model: str, *, waited_s: float, retry_after_s: int) -> openai.OpenAIError:
    """503 when a queued request waited the maximum time for a saturated pool."""
    return openai.OpenAIError(
        503,
        f"The replicas of `{model}` stayed saturated for {waited_s:.1f}s while this request "
        "waited; retry later.",
        type="server_error",
        code="queue_timeout",
        retry_after_s=retry_after_s,
    )


def shutting_down(model: str) -> openai.OpenAIError:
    return openai.OpenAIError(
        503,
        f"The gateway is shutting down; this request for `{model}` was not sent.",
        type="server_error",
        code="shutting_down",
        retry_after_s=1,
    )


# --- saturation ---------------------------------------------------------------------------------


class ReplicaSignals(Protocol):
    """What saturation detection reads about one replica (scraped from its ``/metrics``)."""

    @property
    def waiting(self) -> float:
        """Requests waiting in the engine's queue (``vllm:num_requests_waiting``)."""
        ...

    @property
    def kv_cache_usage(self) -> float:
        """Fraction of the KV cache in use, 0 to 1 (``vllm:kv_cache_usage_perc``)."""
        ...

    @property
    def age_s(self) -> float | None:
        """Seconds since these values were scraped; None when never scraped successfully."""
        ...


class SignalSource(Protocol):
    def signals(self, key: str) -> ReplicaSignals | None:
        """The latest signals of replica ``key`` (``namespace/name``), or None if unknown."""
        ...


@dataclass(frozen=True, slots=True)
class Signals:
    """A plain ``ReplicaSignals``."""

    waiting: float
    kv_cache_usage: float
    age_s: float | None


class _Load(Protocol):
    @property
    def waiting(self) -> float: ...

    @property
    def kv_cache_usage(self) -> float: ...


class _Samples(Protocol):
    def fresh(self, key: str) -> _Load | None: ...

    def age(self, key: str) -> float | None: ...


class ScrapedSignals:
    """A ``SignalSource`` over the scraper's samples (``scrape.EngineSignals``)."""

    __slots__ = ("_samples",)

    def __init__(self, samples: _Samples) -> None:
        self._samples = samples

    def signals(self, key: str) -> ReplicaSignals | None:
        age = self._samples.age(key)
        if age is None:
            return None
        load = self._samples.fresh(key)
        if load is None:  # stale: what it says can no longer be trusted
            return Signals(waiting=math.nan, kv_cache_usage=math.nan, age_s=age)
        return Signals(waiting=load.waiting, kv_cache_usage=load.kv_cache_usage, age_s=age)


@dataclass(frozen=True, slots=True)
class Saturation:
    """When a replica counts as saturated (llm-d ``utilization-detector`` thresholds)."""

    queue_depth: float = 5.0
    """Waiting requests at which a replica is saturated (llm-d ``queueDepthThreshold``)."""
    kv_cache_usage: float = 0.8
    """KV-cache usage fraction at which a replica is saturated (``kvCacheUtilThreshold``)."""
    stale_s: float = 1.0
    """Signals older than this count as saturated (fail-closed)."""

    def replica(self, signals: ReplicaSignals | None) -> bool:
        """Whether one replica is saturated; unknown, stale or NaN signals say yes."""
        if signals is None:
            return True
        age = signals.age_s
        if age is None or not age <= self.stale_s:
            return True
        # Written as "not below" so that a NaN reads as saturated, never as idle.
        return not (
            signals.waiting < self.queue_depth and signals.kv_cache_usage < self.kv_cache_usage
        )

    def headroom(self, keys: Iterable[str], source: SignalSource) -> int:
        """How many of the replicas ``keys`` have room (0: the pool is saturated).

        A replica never scraped successfully is *unknown*. If every replica of the pool is
        unknown (an engine that publishes no metrics, or the first moments after start), there is
        nothing to detect saturation with and all of them count as having room; as soon as one
        replica of the pool has signals, unknown ones count as saturated, like stale ones.
        """
        room = unknown = known = 0
        for key in keys:
            signals = source.signals(key)
            if signals is None or signals.age_s is None:
                unknown += 1
                continue
            known += 1
            if not self.replica(signals):
                room += 1
        return room if known else unknown

    def saturated(self, keys: Iterable[str], source: SignalSource) -> bool:
        """``headroom(keys, source) == 0``, but stops at the first replica with room."""
        known = unknown = False
        for key in keys:
            signals = source.signals(key)
            if signals is None or signals.age_s is None:
                unknown = True
            elif not self.replica(signals):
                return False
            else:
                known = True
        return known or not unknown


# --- the queue ----------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class Waiter:
    """One queued request. Compared by identity: two waiters are never equal."""

    model: str
    client: str
    """Who sent it (principal id or remote address): the unit of fairness."""
    priority: Priority
    enqueued_at: float
    deadline: float
    seq: int
    """Arrival order over all models; later arrivals have larger numbers."""


class _Band:
    """The waiters of one priority: a FIFO per client, clients served round-robin."""

    __slots__ = ("_ring", "size")

    def __init__(self) -> None:
        self._ring: OrderedDict[str, deque[Waiter]] = OrderedDict()
        """Clients in turn order (the next to be served first), each with its FIFO."""
        self.size = 0

    def push(self, waiter: Waiter) -> None:
        fifo = self._ring.get(waiter.client)
        if fifo is None:
            # A client with nothing queued joins at the end of the turn order.
            fifo = self._ring[waiter.client] = deque()
        fifo.append(waiter)
        self.size += 1

    def pop(self) -> Waiter | None:
        if not self._ring:
            return None
        client, fifo = next(iter(self._ring.items()))
        waiter = fifo.popleft()
        if fifo:
            self._ring.move_to_end(client)
        else:
            del self._ring[client]
        self.size -= 1
        return waiter

    def remove(self, waiter: Waiter) -> bool:
        fifo = self._ring.get(waiter.client)
        if fifo is None:
            return False
        try:
            fifo.remove(waiter)
        except ValueError:
            return False
        if not fifo:
            del self._ring[waiter.client]
        self.size -= 1
        return True

    def youngest(self) -> Waiter | None:
        """The most recent arrival of this band."""
        tails = [fifo[-1] for fifo in self._ring.values()]
        return max(tails, key=lambda w: w.seq) if tails else None


class ModelQueue:
    """One model's waiters: critical strictly before standard, clients in turn within each."""

    __slots__ = ("_bands",)

    def __init__(self) -> None:
        self._bands: dict[Priority, _Band] = {priority: _Band() for priority in QUEUED}

    def __len__(self) -> int:
        return sum(band.size for band in self._bands.values())

    def depth(self, priority: Priority) -> int:
        band = self._bands.get(priority)
        return 0 if band is None else band.size

    def push(self, waiter: Waiter) -> None:
        band = self._bands.get(waiter.priority)
        if band is None:
            raise ValueError(f"{waiter.priority} requests never wait")
        band.push(waiter)

    def pop(self) -> Waiter | None:
        """The next waiter to release, or None when empty."""
        for band in self._bands.values():  # critical first: dicts keep insertion order
            waiter = band.pop()
            if waiter is not None:
                return waiter
        return None

    def remove(self, waiter: Waiter) -> bool:
        """Take ``waiter`` out; False if it was not queued here."""
        band = self._bands.get(waiter.priority)
        return band is not None and band.remove(waiter)

    def youngest(self, priority: Priority) -> Waiter | None:
        band = self._bands.get(priority)
        return None if band is None else band.youngest()


# --- the policy ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Admit:
    """Send the request on now."""


ADMIT: Final = Admit()


@dataclass(frozen=True, slots=True)
class Shed:
    """Refuse the request now."""

    reason: Literal["saturated", "queue_full"]


@dataclass(frozen=True, slots=True)
class Queued:
    """The request waits as ``waiter``; ``evicted`` lost its place to it (answer it 429)."""

    waiter: Waiter
    evicted: Waiter | None = None


Decision = Admit | Shed | Queued


class FlowPolicy:
    """Admission, queueing, release and expiry of requests for every model. Pure.

    ``source`` is where replica signals come from; None turns saturation detection off (every
    request is admitted), because "no scraper configured" must not read as "all saturated".
    """

    __slots__ = ("_by_seq", "_queues", "_seq", "_source", "capacity", "max_wait_s", "saturation")

    def __init__(
        self,
        *,
        source: SignalSource | None,
        saturation: Saturation | None = None,
        capacity: int = 256,
        max_wait_s: float = 10.0,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if max_wait_s <= 0:
            raise ValueError("max_wait_s must be positive")
        self._source = source
        self.saturation = saturation or Saturation()
        self.capacity = capacity
        """Waiters per model, critical and standard together."""
        self.max_wait_s = max_wait_s
        self._queues: dict[str, ModelQueue] = {}
        self._by_seq: OrderedDict[int, Waiter] = OrderedDict()
        """Every waiter in arrival order, which is deadline order (one max wait for all)."""
        self._seq = 0

    @property
    def enabled(self) -> bool:
        """Whether saturation detection is on (a signal source is configured)."""
        return self._source is not None

    def headroom(self, pool: Iterable[str]) -> int:
        """Replicas of ``pool`` with room; 0 means saturated. Unbounded when detection is off."""
        if self._source is None:
            return 1 << 30
        return self.saturation.headroom(pool, self._source)

    def waiting(self, model: str | None = None) -> int:
        """Waiters of ``model`` (of every model when None)."""
        if model is None:
            return len(self._by_seq)
        queue = self._queues.get(model)
        return 0 if queue is None else len(queue)

    def depth(self, model: str, priority: Priority) -> int:
        queue = self._queues.get(model)
        return 0 if queue is None else queue.depth(priority)

    def models_waiting(self) -> list[str]:
        return list(self._queues)

    def arrive(
        self, *, model: str, client: str, priority: Priority, pool: Sequence[str], now: float
    ) -> Decision:
        """What to do with a new request for ``model`` whose ready replicas are ``pool``.

        Admitted at once when nobody of the model waits and a replica has room. Otherwise
        (saturated, or others are already waiting and must not be overtaken): sheddable is
        refused, standard and critical queue. A full queue refuses standard; critical evicts
        the youngest standard waiter, or is refused when all waiters are critical.
        """
        if self._source is None:
            return ADMIT
        queue = self._queues.get(model)
        if queue is None and not self.saturation.saturated(pool, self._source):
            return ADMIT
        if priority == "sheddable":
            return Shed("saturated")
        evicted: Waiter | None = None
        if queue is not None and len(queue) >= self.capacity:
            victim = queue.youngest("standard") if priority == "critical" else None
            if victim is None:
                return Shed("queue_full")
            self._drop(victim)
            evicted = victim
            queue = self._queues.get(model)
        self._seq += 1
        waiter = Waiter(
            model=model,
            client=client,
            priority=priority,
            enqueued_at=now,
            deadline=now + self.max_wait_s,
            seq=self._seq,
        )
        if queue is None:
            queue = self._queues[model] = ModelQueue()
        queue.push(waiter)
        self._by_seq[waiter.seq] = waiter
        return Queued(waiter, evicted)

    def release(self, model: str, pool: Sequence[str], *, limit: int | None = None) -> list[Waiter]:
        """Waiters of ``model`` to send on now: one per replica with room, at most ``limit``."""
        queue = self._queues.get(model)
        if queue is None:
            return []
        budget = self.headroom(pool)
        if limit is not None:
            budget = min(budget, limit)
        out: list[Waiter] = []
        while len(out) < budget:
            waiter = queue.pop()
            if waiter is None:
                break
            del self._by_seq[waiter.seq]
            out.append(waiter)
        if not queue:
            del self._queues[model]
        return out

    def expire(self, now: float) -> list[Waiter]:
        """Take out and return every waiter whose deadline is ``now`` or earlier."""
        out: list[Waiter] = []
        while self._by_seq:
            waiter = next(iter(self._by_seq.values()))
            if waiter.deadline > now:
                break
            self._drop(waiter)
            out.append(waiter)
        return out

    def cancel(self, waiter: Waiter) -> bool:
        """Take ``waiter`` out (its client left); False if it was no longer queued."""
        if waiter.seq not in self._by_seq:
            return False
        self._drop(waiter)
        return True

    def drain(self) -> list[Waiter]:
        """Take out every waiter (shutdown)."""
        out = list(self._by_seq.values())
        self._by_seq.clear()
        self._queues.clear()
        return out

    def _drop(self, waiter: Waiter) -> None:
        del self._by_seq[waiter.seq]
        queue = self._queues[waiter.model]
        queue.remove(waiter)
        if not queue:
            del self._queues[waiter.model]


# --- the asyncio shell --------------------------------------------------------------------------


class FlowRecorder(Protocol):
    """The metrics flow control moves (``GatewayMetrics.flow`` implements it)."""

    def shed(self, *, model: str, priority: str, reason: str) -> None: ...

    def queue_wait(self, *, model: str, priority: str, outcome: str, wait_s: float) -> None: ...

    def queue_depth(self, *, model: str, priority: str, depth: int) -> None: ...


Outcome = Literal["released", "timeout", "evicted", "cancelled", "shutdown"]


class FlowControl:
    """Holds requests back while their model's pool is saturated (the asyncio side).

    ``priority`` tells a request's priority; ``admit`` returns once the request may go on, or
    raises ``OpenAIError`` (429, 503); the caller reports the end of every admitted request with
    ``finished``. ``pool(model)`` gives the keys of the model's ready replicas, ``defaults(model)``
    the model's default priority (None or an unknown value: standard). A tick re-checks
    saturation and deadlines every ``recheck_s`` while anything waits, and stops when the queues
    are empty.
    """

    def __init__(
        self,
        *,
        policy: FlowPolicy,
        pool: Callable[[str], Sequence[str]],
        recorder: FlowRecorder,
        defaults: Callable[[str], str | None] = lambda model: None,
        recheck_s: float = 0.025,
        retry_after_s: int = 1,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        if recheck_s <= 0:
            raise ValueError("recheck_s must be positive")
        self.policy = policy
        self._pool = pool
        self._recorder = recorder
        self._defaults = defaults
        self._recheck_s = recheck_s
        self._retry_after_s = retry_after_s
        self._clock = clock
        self._log = logger or logging.getLogger("aviator.gateway.flowcontrol")
        self._parked: dict[Waiter, asyncio.Future[openai.OpenAIError | None]] = {}
        self._ticker: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls,
        settings: GatewaySettings,
        *,
        signals: SignalSource | None,
        pool: Callable[[str], Sequence[str]],
        recorder: FlowRecorder,
        defaults: Callable[[str], str | None] = lambda model: None,
    ) -> FlowControl:
        """Flow control as ``settings`` describe it; ``signals`` None turns detection off."""
        policy = FlowPolicy(
            source=signals,
            saturation=Saturation(
                queue_depth=settings.saturation_queue_depth,
                kv_cache_usage=settings.saturation_kv_cache_usage,
                stale_s=settings.metrics_stale_after_s,
            ),
            capacity=settings.queue_size,
            max_wait_s=settings.queue_max_wait_s,
        )
        return cls(
            policy=policy,
            pool=pool,
            recorder=recorder,
            defaults=defaults,
            recheck_s=settings.queue_recheck_s,
            retry_after_s=settings.shed_retry_after_s,
        )

    @property
    def enabled(self) -> bool:
        return self.policy.enabled

    def priority(self, model: str, header: str | None) -> Priority:
        """The priority of a request for ``model`` whose priority header is ``header``.

        Raises ``OpenAIError`` 400 when the header names no priority.
        """
        return self.priority_of(self._defaults(model), header)

    @staticmethod
    def priority_of(configured: str | None, header: str | None) -> Priority:
        """``priority`` of a request whose model's configured priority is ``configured`` (for a
        caller that knows it already)."""
        if configured in PRIORITIES:  # as stored (admission defaults it): nothing to parse
            default = configured
        else:
            default = (as_priority(configured) if configured else None) or "standard"
        return request_priority(header, default=default)

    async def admit(self, *, model: str, client: str, priority: Priority) -> bool:
        """Return when a request for ``model`` may be sent; raise ``OpenAIError`` if never.

        Returns whether the request was queued (time passed: what the caller looked up before
        may have changed).
        """
        waiting = self.admit_now(model=model, client=client, priority=priority)
        return False if waiting is None else await waiting

    def admit_now(
        self, *, model: str, client: str, priority: Priority
    ) -> Coroutine[Any, Any, bool] | None:
        """``admit`` without a coroutine in the usual case: None when the request may be sent
        at once; else the rest of ``admit``, to await at once (it raises, or waits)."""
        if not self.policy.enabled:
            return None
        now = self._clock()
        decision = self.policy.arrive(
            model=model, client=client, priority=priority, pool=self._pool(model), now=now
        )
        if isinstance(decision, Admit):
            return None
        return self._decided(decision, model, priority, now)

    async def _decided(
        self, decision: Shed | Queued, model: str, priority: Priority, now: float
    ) -> bool:
        if isinstance(decision, Shed):
            self._recorder.shed(model=model, priority=priority, reason=decision.reason)
            if decision.reason == "saturated":
                raise overloaded(model, retry_after_s=self._retry_after_s)
            raise queue_full(model, retry_after_s=self._retry_after_s)
        waiter = decision.waiter
        parked = asyncio.get_running_loop().create_future()
        self._parked[waiter] = parked
        if decision.evicted is not None:
            self._recorder.shed(model=model, priority="standard", reason="evicted")
            self._settle(
                decision.evicted,
                "evicted",
                queue_full(model, retry_after_s=self._retry_after_s),
                now=now,
            )
        self._release(model, now=now)  # others may already have room (or this one)
        self._record_depth(model)
        if self._parked:
            self._ensure_ticker()
        try:
            refusal = await parked
        except asyncio.CancelledError:
            if self.policy.cancel(waiter):
                self._settle(waiter, "cancelled", None, now=self._clock())
                self._record_depth(model)
            raise
        if refusal is not None:
            raise refusal
        return True

    def finished(self, model: str) -> None:
        """An admitted request of ``model`` ended: its slot may go to the next waiter."""
        if self.policy.waiting(model):
            self._release(model, now=self._clock(), limit=1)
            self._record_depth(model)

    def recheck(self) -> None:
        """Time out overdue waiters and release what the pools have room for."""
        now = self._clock()
        touched: set[str] = set()
        for waiter in self.policy.expire(now):
            touched.add(waiter.model)
            waited = now - waiter.enqueued_at
            refusal = queue_timeout(
                waiter.model, waited_s=waited, retry_after_s=self._retry_after_s
            )
            self._settle(waiter, "timeout", refusal, now=now)
        for model in self.policy.models_waiting():
            if self._release(model, now=now):
                touched.add(model)
        for model in touched:
            self._record_depth(model)

    async def close(self) -> None:
        """Stop the tick and answer every waiter 503 (the gateway is stopping).

        Not final: a request that still arrives is handled as usual (the tick restarts).
        """
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            await asyncio.wait([ticker])
        now = self._clock()
        models: set[str] = set()
        for waiter in self.policy.drain():
            models.add(waiter.model)
            self._settle(waiter, "shutdown", shutting_down(waiter.model), now=now)
        for model in models:
            self._record_depth(model)

    def _release(self, model: str, *, now: float, limit: int | None = None) -> int:
        released = self.policy.release(model, self._pool(model), limit=limit)
        for waiter in released:
            self._settle(waiter, "released", None, now=now)
        return len(released)

    def _settle(
        self, waiter: Waiter, outcome: Outcome, refusal: openai.OpenAIError | None, *, now: float
    ) -> None:
        """Wake ``waiter``'s request with ``refusal`` (None: go on) and record its wait."""
        parked = self._parked.pop(waiter, None)
        if parked is not None and not parked.done():
            parked.set_result(refusal)
        self._recorder.queue_wait(
            model=waiter.model,
            priority=waiter.priority,
            outcome=outcome,
            wait_s=max(0.0, now - waiter.enqueued_at),
        )

    def _record_depth(self, model: str) -> None:
        for priority in QUEUED:
            self._recorder.queue_depth(
                model=model, priority=priority, depth=self.policy.depth(model, priority)
            )

    def _ensure_ticker(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.create_task(self._tick(), name="aviator-gateway-flow-control")

    async def _tick(self) -> None:
        while self._parked:
            await asyncio.sleep(self._recheck_s)
            try:
                self.recheck()
            except Exception:  # a bug here must not leave requests parked forever
                self._log.exception("flow control re-check failed")
