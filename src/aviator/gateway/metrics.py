"""The gateway's Prometheus metrics, in a registry of its own.

Names follow the OTel GenAI semantic conventions where one exists, translated to Prometheus the
way the OTel collector does (dots become underscores, unit ``s`` becomes ``_seconds``, ``{token}``
is dropped), with the buckets the conventions advise:

- ``gen_ai_client_operation_duration_seconds`` (histogram): request start to last byte sent.
- ``gen_ai_server_time_to_first_token_seconds`` (histogram): request start to the first byte of a
  successful answer relayed to the client (for a non-streamed answer: to the whole answer).
- ``gen_ai_client_token_usage`` (histogram, ``gen_ai_token_type`` = input | output): the tokens an
  answer's ``usage`` reported (answers without usage are not counted, as the conventions ask).

Their labels are the attributes ``gen_ai_operation_name`` (chat, text_completion, embeddings),
``gen_ai_provider_name`` (always ``aviator``: the replicas behind the gateway are ours, whatever
engine runs them), ``gen_ai_request_model``, and on the duration ``error_type`` (the HTTP status
code of a failed request, ``""`` on success — in PromQL the same as no label). Everything else is
``aviator_gateway_*``, labelled ``model`` (and ``replica`` for routing decisions).

The series the request path moves on every request (the GenAI histograms, the request and token
counters, the in-flight gauge) are not ``prometheus_client`` metrics but plain Python numbers
kept per label set (``_Histogram``, ``_Counter``, ``_Gauge`` below) and exported by collectors
in the same registry, with the same names, help, labels and buckets: the exposition is identical
(less ``_created`` series, which the gateway process turns off anyway). ``prometheus_client``
takes a lock on every ``inc()``/``observe()`` to be thread-safe; the gateway updates and renders
its metrics on the event loop's thread only, so that lock was pure cost (about a tenth of the
gateway's CPU per request, with its per-call checks).

Model labels only ever carry names taken from the endpoint table (or ``""``), never raw client
input, so a client cannot blow up the series count with made-up model names; replica labels are
bounded by the fleet, and those of replicas that left are dropped.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from aviator.gateway import usage
from aviator.gateway.buckets import Buckets
from aviator.gateway.endpoints import EndpointTable

__all__ = [
    "CONTENT_TYPE",
    "DURATION_BUCKETS",
    "POLICY_DECISION_BUCKETS",
    "PROVIDER",
    "TOKEN_BUCKETS",
    "TTFT_BUCKETS",
    "AnswerMeter",
    "FlowMetrics",
    "GatewayMetrics",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

DURATION_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
"""OTel GenAI's advice for ``gen_ai.client.operation.duration`` (seconds)."""

TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
"""OTel GenAI's advice for ``gen_ai.server.time_to_first_token`` (seconds)."""

TOKEN_BUCKETS = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)
"""OTel GenAI's advice for ``gen_ai.client.token.usage`` (tokens)."""

PROVIDER = "aviator"
"""``gen_ai.provider.name``: the replicas behind the gateway, whatever engine serves them."""

CACHE_RATIO_DECAY = 1 / 32
"""Weight of the newest answer in ``aviator_gateway_prompt_cache_hit_ratio``: the gauge is the
token-weighted hit ratio of roughly the last 32 answers with usage."""

_ENDPOINTS_HELP = "Ready replicas the gateway routes to, per model."
_ROUTED_HELP = "Replicas picked for requests (retries included), per model and replica."
_RATIO_HELP = (
    "Share of prompt tokens served from the prefix cache over roughly the last 32 answers "
    "(usage.prompt_tokens_details.cached_tokens), per model."
)


class _Histogram:
    """A labelled histogram kept in plain Python and rendered like ``prometheus_client``'s.

    Not thread-safe, on purpose: observed and collected on the event loop's thread only.
    """

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = list(labelnames)
        self._bounds = tuple(float(b) for b in buckets)
        # The ``le`` label as prometheus_client writes it (1 → "1.0", 16777216 → "1.6777216e+07").
        self._les = [*(floatToGoString(b) for b in self._bounds), "+Inf"]  # type: ignore[no-untyped-call]
        self._series: dict[tuple[str, ...], Buckets] = {}

    def labels(self, *values: str) -> Buckets:
        series = self._series.get(values)
        if series is None:
            if len(values) != len(self._labelnames):
                raise ValueError(f"{self._name}: expected {len(self._labelnames)} label values")
            series = self._series[values] = Buckets(self._bounds)
        return series

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, series in list(self._series.items()):
            total = 0.0
            buckets: list[tuple[str, float]] = []
            for le, count in zip(self._les, series.counts, strict=True):
                total += count
                buckets.append((le, total))
            family.add_metric(list(values), buckets, series.sum)
        yield family


class _CounterSeries:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class _Counter:
    """A labelled counter kept in plain Python (``name_total`` in the exposition)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = list(labelnames)
        self._series: dict[tuple[str, ...], _CounterSeries] = {}

    def labels(self, *values: str) -> _CounterSeries:
        series = self._series.get(values)
        if series is None:
            if len(values) != len(self._labelnames):
                raise ValueError(f"{self._name}: expected {len(self._labelnames)} label values")
            series = self._series[values] = _CounterSeries()
        return series

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, series in list(self._series.items()):
            family.add_metric(list(values), series.value)
        yield family


class _GaugeSeries:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


class _Gauge:
    """A labelled gauge kept in plain Python."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = list(labelnames)
        self._series: dict[tuple[str, ...], _GaugeSeries] = {}

    def labels(self, *values: str) -> _GaugeSeries:
        series = self._series.get(values)
        if series is None:
            if len(values) != len(self._labelnames):
                raise ValueError(f"{self._name}: expected {len(self._labelnames)} label values")
            series = self._series[values] = _GaugeSeries()
        return series

    def describe(self) -> list[Metric]:
        return [GaugeMetricFamily(self._name, self._documentation, labels=self._labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, series in list(self._series.items()):
            family.add_metric(list(values), series.value)
        yield family


class _RoutingCollector:
    """``aviator_gateway_routing_decisions_total{model, replica}``, counted in a plain dict.

    A replica that is no longer routable and was not picked since the last scrape is dropped, so
    its final count is exported at least once and the series count follows the fleet; should it
    come back, its counter restarts at zero (a reset ``rate()`` handles).
    """

    def __init__(self, table: EndpointTable) -> None:
        self._table = table
        self.counts: dict[tuple[str, str], int] = {}
        self._scraped: dict[tuple[str, str], int] = {}

    def describe(self) -> list[Metric]:
        return [self._family()]

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(
            "aviator_gateway_routing_decisions", _ROUTED_HELP, labels=["model", "replica"]
        )

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for key, count in sorted(self.counts.items()):
            if self._scraped.get(key) == count and self._table.endpoint(key[1]) is None:
                del self.counts[key]  # gone, and its final count was exported last time
                continue
            family.add_metric(list(key), count)
        self._scraped = dict(self.counts)
        yield family


class _CacheRatioCollector:
    """``aviator_gateway_prompt_cache_hit_ratio{model}``, from decayed sums kept per model.

    A model appears once one of its answers reported cached tokens: before that, 0 would claim
    an engine that never reports them (vLLM without ``--enable-prompt-tokens-details``) has a
    cold cache.
    """

    def __init__(self, table: EndpointTable) -> None:
        self._table = table
        self.sums: dict[str, list[float]] = {}
        """model → [cached prompt tokens, prompt tokens], both decayed per answer."""
        self.reported: set[str] = set()

    def add(self, model: str, *, cached: int, prompt: int, reported: bool) -> None:
        if reported:
            self.reported.add(model)
        sums = self.sums.get(model)
        if sums is None:
            self.sums[model] = [float(cached), float(prompt)]
            return
        keep = 1.0 - CACHE_RATIO_DECAY
        sums[0] = sums[0] * keep + cached
        sums[1] = sums[1] * keep + prompt

    def describe(self) -> list[Metric]:
        return [GaugeMetricFamily("aviator_gateway_prompt_cache_hit_ratio", _RATIO_HELP)]

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "aviator_gateway_prompt_cache_hit_ratio", _RATIO_HELP, labels=["model"]
        )
        for model in sorted(self.sums):
            if self._table.lookup(model) is None:  # no replica serves it any more
                del self.sums[model]
                self.reported.discard(model)
                continue
            cached, prompt = self.sums[model]
            if prompt > 0 and model in self.reported:
                family.add_metric([model], cached / prompt)
        yield family


class _EndpointsCollector:
    """``aviator_gateway_endpoints{model}``, read from the table at scrape time."""

    def __init__(self, table: EndpointTable) -> None:
        self._table = table

    def describe(self) -> list[Metric]:
        return [GaugeMetricFamily("aviator_gateway_endpoints", _ENDPOINTS_HELP, labels=["model"])]

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("aviator_gateway_endpoints", _ENDPOINTS_HELP, labels=["model"])
        for model, count in sorted(self._table.ready_counts().items()):
            family.add_metric([model], count)
        yield family


class GatewayMetrics:
    """Counters the request path moves, plus the endpoint gauge; ``render()`` exposes them."""

    def __init__(self, *, table: EndpointTable) -> None:
        self.registry = CollectorRegistry()
        genai = ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model"]
        self._duration = _Histogram(
            "gen_ai_client_operation_duration_seconds",
            "Duration of a GenAI operation through the gateway, until the last byte was sent.",
            [*genai, "error_type"],
            buckets=DURATION_BUCKETS,
        )
        self._ttft = _Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time from the request's arrival at the gateway to the first byte of a successful "
            "answer relayed to the client (a non-streamed answer: to the whole answer).",
            genai,
            buckets=TTFT_BUCKETS,
        )
        self._tokens = _Histogram(
            "gen_ai_client_token_usage",
            "Tokens per answer as its usage reported them, by type (input, output).",
            [*genai, "gen_ai_token_type"],
            buckets=TOKEN_BUCKETS,
        )
        self._prompt_tokens = _Counter(
            "aviator_gateway_prompt_tokens",
            "Prompt tokens of the answers that reported usage, per model.",
            ["model"],
        )
        self._cached_tokens = _Counter(
            "aviator_gateway_prompt_cached_tokens",
            "Prompt tokens served from a replica's prefix cache "
            "(usage.prompt_tokens_details.cached_tokens; none reported counts as 0), per model.",
            ["model"],
        )
        for collector in (
            self._duration,
            self._ttft,
            self._tokens,
            self._prompt_tokens,
            self._cached_tokens,
        ):
            self.registry.register(collector)
        self._routing = _RoutingCollector(table)
        self._cache_ratio = _CacheRatioCollector(table)
        self.registry.register(self._routing)
        self.registry.register(self._cache_ratio)
        self._ttft_series: dict[tuple[str, str], Buckets] = {}
        self._usage_series: dict[
            tuple[str, str],
            tuple[Buckets, Buckets | None, _CounterSeries, _CounterSeries],
        ] = {}
        """The series an answer's TTFT and usage move, by (operation, model)."""
        self._media: dict[str, str] = {}
        """Content-Type → "sse", "json" or "" (no usage to look for)."""
        self._requests = _Counter(
            "aviator_gateway_requests",
            "Requests answered by the gateway, per model and HTTP status code.",
            ["model", "code"],
        )
        self.registry.register(self._requests)
        self._retries = Counter(
            "aviator_gateway_upstream_retries",
            "Requests sent again to another replica after a connect error or a 5xx.",
            registry=self.registry,
        )
        self._inflight = _Gauge(
            "aviator_gateway_inflight_requests",
            "Requests being proxied right now, per model.",
            ["model"],
        )
        self.registry.register(self._inflight)
        self.registry.register(_EndpointsCollector(table))
        self._done: dict[tuple[str, str, int], tuple[Buckets, _CounterSeries]] = {}
        self._inflight_children: dict[str, _GaugeSeries] = {}
        self.flow = FlowMetrics(self.registry)
        """Flow control (shedding, queueing) and circuit breakers."""
        self.governance = GovernanceMetrics(self.registry)
        """Insecure mode, and refusals by authentication, policy, budgets and audit."""

    def observe(self, *, operation: str, model: str, code: int, duration_s: float) -> None:
        """One finished request (``model`` is ``""`` when it was not routed to a known model)."""
        key = (operation, model, code)
        children = self._done.get(key)
        if children is None:
            status = str(code)
            error_type = status if code >= 400 else ""
            children = (
                self._duration.labels(operation, PROVIDER, model, error_type),
                self._requests.labels(model, status),
            )
            self._done[key] = children
        duration, requests = children
        # (``observe`` and ``inc``, inline: this runs for every request.)
        duration.counts[bisect_left(duration.bounds, duration_s)] += 1
        duration.sum += duration_s
        requests.value += 1.0

    def retried(self) -> None:
        self._retries.inc()

    def routed(self, model: str, replica: str) -> None:
        """The picker chose ``replica`` (a ``namespace/name`` key) for a request for ``model``."""
        counts = self._routing.counts
        key = (model, replica)
        counts[key] = counts.get(key, 0) + 1

    def answer(
        self,
        *,
        operation: str,
        model: str,
        status: int,
        content_type: str,
        started: float | None,
    ) -> AnswerMeter:
        """A meter for one answer of a replica, about to be relayed to the client.

        ``started`` is the ``time.perf_counter()`` of the request's arrival (None: no TTFT). Only
        successful (2xx) answers are measured.
        """
        if not 200 <= status < 300:
            return AnswerMeter(self, operation=operation, model=model, started=None, media=None)
        media = self._media.get(content_type)
        if media is None:
            # What usage.scanner_for recognises: server-sent events, JSON, or nothing to scan.
            kind = content_type.partition(";")[0].strip().lower()
            media = {"text/event-stream": "sse", "application/json": "json"}.get(kind, "")
            if len(self._media) < 64:  # bounded: the content types replicas send are few
                self._media[content_type] = media
        return AnswerMeter(
            self,
            operation=operation,
            model=model,
            started=None if operation == "embeddings" else started,
            media=media or None,
        )

    def first_byte(self, operation: str, model: str, seconds: float) -> None:
        """Time to the first byte of a successful answer (``gen_ai.server.time_to_first_token``)."""
        key = (operation, model)
        series = self._ttft_series.get(key)
        if series is None:
            series = self._ttft_series[key] = self._ttft.labels(operation, PROVIDER, model)
        series.counts[bisect_left(series.bounds, seconds)] += 1  # (``observe``, inline)
        series.sum += seconds

    def used(self, operation: str, model: str, counts: usage.Usage) -> None:
        """The usage one successful answer reported (series appear with their first report)."""
        key = (operation, model)
        series = self._usage_series.get(key)
        if series is None:
            tokens = self._tokens
            series = self._usage_series[key] = (
                tokens.labels(operation, PROVIDER, model, "input"),
                # Embeddings generate nothing: no output tokens to report.
                None
                if operation == "embeddings"
                else tokens.labels(operation, PROVIDER, model, "output"),
                self._prompt_tokens.labels(model),
                self._cached_tokens.labels(model),
            )
        prompt_tokens, output_tokens, prompt_counter, cached_counter = series
        prompt, completion, reported = counts
        # (``observe`` and ``inc``, inline: this runs for every answer.)
        prompt_tokens.counts[bisect_left(prompt_tokens.bounds, prompt)] += 1
        prompt_tokens.sum += prompt
        if output_tokens is not None:
            output_tokens.counts[bisect_left(output_tokens.bounds, completion)] += 1
            output_tokens.sum += completion
        # vLLM leaves prompt_tokens_details out when nothing was cached (and always without
        # --enable-prompt-tokens-details): no report counts as 0 cached tokens.
        cached = reported or 0
        prompt_counter.value += prompt
        cached_counter.value += cached
        self._cache_ratio.add(model, cached=cached, prompt=prompt, reported=reported is not None)

    def inflight(self, model: str) -> _GaugeSeries:
        """The in-flight gauge child of ``model`` (``inc()`` on start, ``dec()`` on end)."""
        child = self._inflight_children.get(model)
        if child is None:
            child = self._inflight_children[model] = self._inflight.labels(model)
        return child

    def render(self) -> bytes:
        """The text exposition of every metric."""
        return generate_latest(self.registry)


class AnswerMeter:
    """Watches one answer on its way to the client: the time to its first byte, and its usage.

    The proxy calls ``whole`` for an answer it read at once, or ``chunk`` for every piece of a
    streamed one and ``end`` once it was complete. A meter of an unsuccessful answer does nothing.
    """

    __slots__ = ("_media", "_metrics", "_model", "_operation", "_scanner", "_started", "usage")

    def __init__(
        self,
        metrics: GatewayMetrics,
        *,
        operation: str,
        model: str,
        started: float | None,
        media: str | None,
    ) -> None:
        """``media``: "sse" or "json" for answers whose usage is looked for, else None."""
        self._metrics = metrics
        self._operation = operation
        self._model = model
        self._started = started
        self._media = media
        self._scanner: usage.Scanner | None = None
        self.usage: usage.Usage | None = None
        """The usage the answer reported, once it was relayed whole (for budgets and audit)."""

    def whole(self, body: bytes) -> None:
        """The whole answer is about to be sent: its first byte is now, its usage in ``body``."""
        started = self._started
        if started is not None:  # (``_first_byte``, inline)
            self._started = None
            self._metrics.first_byte(self._operation, self._model, time.perf_counter() - started)
        if self._media is not None:
            found = usage.from_json(body)
            if found is not None:
                self.usage = found
                self._metrics.used(self._operation, self._model, found)

    def chunk(self, data: bytes) -> None:
        """A piece of a streamed answer is about to be sent."""
        if self._started is not None:
            self._first_byte()
        if self._media is not None:
            if self._scanner is None:
                self._scanner = usage.Scanner(sse=self._media == "sse")
            self._scanner.feed(data)

    def end(self) -> None:
        """The streamed answer was sent completely."""
        if self._scanner is not None:
            found = self._scanner.finish()
            self._scanner = None
            self._media = None
            if found is not None:
                self.usage = found
                self._metrics.used(self._operation, self._model, found)

    def _first_byte(self) -> None:
        if self._started is not None:
            self._metrics.first_byte(
                self._operation, self._model, time.perf_counter() - self._started
            )
            self._started = None


QUEUE_WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0)
"""Seconds a request waited for a saturated pool: from one re-check tick to past the max wait."""

_BREAKER_HELP = (
    "Circuit breaker of each replica that failed since its last success: "
    "0 closed, 1 open, 2 half-open (replicas not listed are closed)."
)


class _BreakerCollector:
    """``aviator_gateway_breaker_state{replica}``, read from the breakers at scrape time."""

    def __init__(self, read: Callable[[], Iterable[tuple[str, int]]]) -> None:
        self._read = read

    def describe(self) -> list[Metric]:
        return [GaugeMetricFamily("aviator_gateway_breaker_state", _BREAKER_HELP)]

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "aviator_gateway_breaker_state", _BREAKER_HELP, labels=["replica"]
        )
        for replica, state in sorted(self._read()):
            family.add_metric([replica], state)
        yield family


class FlowMetrics:
    """Flow control and circuit breakers: what was shed, how long requests queued, how deep the
    queues are, and which replicas' breakers are open (the ``flowcontrol.FlowRecorder``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._shed = Counter(
            "aviator_gateway_shed_requests",
            "Requests refused by flow control, per model, priority and reason (saturated: "
            "sheddable while the pool is saturated; queue_full; evicted: displaced from a full "
            "queue by a critical request).",
            ["model", "priority", "reason"],
            registry=registry,
        )
        self._wait = Histogram(
            "aviator_gateway_queue_wait_seconds",
            "Time requests waited for a saturated pool, per model, priority and outcome "
            "(released, timeout, evicted, cancelled, shutdown).",
            ["model", "priority", "outcome"],
            buckets=QUEUE_WAIT_BUCKETS,
            registry=registry,
        )
        self._depth = Gauge(
            "aviator_gateway_queue_depth",
            "Requests waiting for a saturated pool right now, per model and priority.",
            ["model", "priority"],
            registry=registry,
        )
        self._opened = Counter(
            "aviator_gateway_breaker_opened",
            "Times a replica's circuit breaker opened (or re-opened after a failed trial).",
            ["replica"],
            registry=registry,
        )

    def shed(self, *, model: str, priority: str, reason: str) -> None:
        self._shed.labels(model, priority, reason).inc()

    def queue_wait(self, *, model: str, priority: str, outcome: str, wait_s: float) -> None:
        self._wait.labels(model, priority, outcome).observe(wait_s)

    def queue_depth(self, *, model: str, priority: str, depth: int) -> None:
        self._depth.labels(model, priority).set(depth)

    def breaker_opened(self, replica: str) -> None:
        self._opened.labels(replica).inc()

    def watch_breakers(self, read: Callable[[], Iterable[tuple[str, int]]]) -> None:
        """Export the breaker states ``read()`` gives, as (replica, state) pairs, at scrape time."""
        self._registry.register(_BreakerCollector(read))


POLICY_DECISION_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.000075,
    0.0001,
    0.0002,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.1,
)
"""Seconds of one policy decision: OTel's duration buckets scaled down to where a decision is
(tens of microseconds), with 200 us, the budget of a decision in the request path, as a bound."""


class GovernanceMetrics:
    """Whether the gateway enforces anything, what governance refused or cut off, and how long
    its policy decisions take (``decided``, the ``Governance.recorder``)."""

    REASONS = ("unauthenticated", "policy", "budget", "audit", "grant_ended")

    def __init__(self, registry: CollectorRegistry) -> None:
        self._insecure = Gauge(
            "aviator_gateway_insecure",
            "1 when the gateway runs with --insecure (callers without credentials are let in, "
            "policy and budgets are not enforced), else 0.",
            registry=registry,
        )
        self._refused = Counter(
            "aviator_gateway_refused_requests",
            "Requests refused by governance, per reason (unauthenticated: 401; policy: 403; "
            "budget: 429; audit: 503, the decision could not be recorded; grant_ended: the "
            "request's grant was revoked or expired while it was answered).",
            ["reason"],
            registry=registry,
        )
        # Every reason from the start: a rate over a series that appears late misses its first.
        self._children = {reason: self._refused.labels(reason) for reason in self.REASONS}
        decisions = _Histogram(
            "aviator_gateway_policy_decision_seconds",
            "Time the gateway took to decide a request by policy (the declared intent and the "
            "Cedar decision, remembered or evaluated); the administrator's requests and an "
            "insecure gateway's are not decided and not counted.",
            [],
            buckets=POLICY_DECISION_BUCKETS,
        )
        registry.register(decisions)
        self.decided: Buckets = decisions.labels()
        """The series a policy decision's time is observed in (``Governance.recorder``: a
        compiled ``Buckets``, observed with a native call on every governed request)."""

    def insecure(self, value: bool) -> None:
        self._insecure.set(1 if value else 0)

    def refused(self, reason: str) -> None:
        self._children[reason].inc()
