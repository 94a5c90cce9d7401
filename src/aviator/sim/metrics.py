"""Prometheus metrics with vLLM's names, labels and buckets, fed by the engine as it runs.

``SimMetrics`` is both the engine's ``EngineObserver`` and a prometheus_client collector in its
*own* ``CollectorRegistry`` (one per server instance, so several simulators can live in one process
and tests never see each other's numbers). Updates are plain integer/float arithmetic on the event
loop's thread, with no locks; the exposition is built from them only when ``/metrics`` is scraped.
Because the families are built by hand, no ``*_created`` series are emitted (what
``prometheus_client.disable_created_metrics()`` achieves process-wide, without touching that global).

Series (labels ``model_name`` and ``engine="0"`` on all; calibration.md §7):

- Gauges ``vllm:num_requests_running``, ``vllm:num_requests_waiting``, ``vllm:kv_cache_usage_perc``
  (the share of the paged KV cache's blocks some sequence holds; cached blocks nobody holds count
  as free, as in vLLM), and ``vllm:cache_config_info`` (= 1; labels carry ``block_size``,
  ``enable_prefix_caching`` and ``num_gpu_blocks`` as the Gateway API Inference Extension reads
  them).
- Counters ``vllm:prompt_tokens_total``, ``vllm:generation_tokens_total``,
  ``vllm:request_success_total{finished_reason}`` (stop, length, abort), ``vllm:num_preemptions_total``,
  ``vllm:prefix_cache_queries_total`` (prompt tokens looked up) and ``vllm:prefix_cache_hits_total``
  (prompt tokens found), counted at a request's first admission (not again after a preemption) and
  only with prefix caching on, as in vLLM.
- Histograms ``vllm:time_to_first_token_seconds``, ``vllm:inter_token_latency_seconds``,
  ``vllm:e2e_request_latency_seconds``, ``vllm:request_queue_time_seconds``,
  ``vllm:request_prefill_time_seconds``, ``vllm:request_decode_time_seconds``,
  ``vllm:request_inference_time_seconds``.

Durations are simulated (already multiplied by ``time_scale``), measured from the arrival at the
engine like vLLM's, not from the client's clock.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from aviator.sim import engine
from aviator.sim.options import BLOCK_SIZE

__all__ = [
    "CONTENT_TYPE",
    "E2E_BUCKETS",
    "ITL_BUCKETS",
    "TTFT_BUCKETS",
    "Histogram",
    "SimMetrics",
]

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# Buckets as in vllm/v1/metrics/loggers.py.
TTFT_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
ITL_BUCKETS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
)  # fmt: skip
E2E_BUCKETS: tuple[float, ...] = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip

_REASONS = tuple(engine.FinishReason)
_go_float: Callable[[float], str] = floatToGoString  # how prometheus_client writes `le`


class Histogram:
    """A bucketed histogram that can take many equal observations in one call."""

    __slots__ = ("_counts", "_les", "bounds", "count", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self._les = [_go_float(b) for b in self.bounds] + ["+Inf"]
        self._counts = [0] * (len(self.bounds) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float, count: int = 1) -> None:
        self._counts[bisect_left(self.bounds, value)] += count
        self.count += count
        self.sum += value * count

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for le, n in zip(self._les, self._counts, strict=True):
            running += n
            out.append((le, float(running)))
        return out


class SimMetrics:
    """The simulator's metrics: an ``EngineObserver`` and a collector in its own registry."""

    def __init__(
        self,
        *,
        model_name: str,
        kv_cache_blocks: int,
        enable_prefix_caching: bool = True,
        engine_index: int = 0,
    ) -> None:
        self._labels = [model_name, str(engine_index)]
        self._kv_cache_blocks = kv_cache_blocks
        self._prefix_caching = enable_prefix_caching
        self.num_running = 0
        self.num_waiting = 0
        self.kv_cache_usage = 0.0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.preemptions = 0
        self.prefix_cache_queries = 0
        self.prefix_cache_hits = 0
        self.success: dict[engine.FinishReason, int] = dict.fromkeys(_REASONS, 0)
        self.ttft = Histogram(TTFT_BUCKETS)
        self.itl = Histogram(ITL_BUCKETS)
        self.e2e = Histogram(E2E_BUCKETS)
        self.queue = Histogram(E2E_BUCKETS)
        self.prefill = Histogram(E2E_BUCKETS)
        self.decode = Histogram(E2E_BUCKETS)
        self.inference = Histogram(E2E_BUCKETS)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def exposition(self) -> bytes:
        """The Prometheus text format (``CONTENT_TYPE``) of this instance's registry."""
        return generate_latest(self.registry)

    # -- EngineObserver

    def on_scheduled(self, seq: engine.Sequence) -> None:
        self.prompt_tokens += seq.num_prompt_tokens
        if self._prefix_caching:
            self.prefix_cache_queries += seq.num_prompt_tokens
            self.prefix_cache_hits += seq.num_cached_tokens

    def on_first_token(self, seq: engine.Sequence) -> None:
        if seq.first_token_time is not None:
            self.ttft.observe(seq.first_token_time - seq.arrival_time)
        self.generation_tokens += 1

    def on_decode(self, seq: engine.Sequence, *, count: int, interval: float) -> None:
        self.itl.observe(interval, count)
        self.generation_tokens += count

    def on_preempted(self, seq: engine.Sequence) -> None:
        self.preemptions += 1

    def on_finished(self, seq: engine.Sequence) -> None:
        reason = seq.finish_reason or engine.FinishReason.ABORT
        self.success[reason] += 1
        end = seq.finished_time
        if end is None:
            return
        self.e2e.observe(end - seq.arrival_time)
        scheduled = seq.scheduled_time
        if scheduled is None:  # aborted while waiting
            self.queue.observe(end - seq.arrival_time)
            return
        self.queue.observe(scheduled - seq.arrival_time)
        self.inference.observe(end - scheduled)
        first = seq.first_token_time
        if first is None:  # aborted during prefill
            self.prefill.observe(end - scheduled)
            return
        self.prefill.observe(first - scheduled)
        self.decode.observe(end - first)

    def on_state(self, *, num_running: int, num_waiting: int, kv_cache_usage: float) -> None:
        self.num_running = num_running
        self.num_waiting = num_waiting
        self.kv_cache_usage = kv_cache_usage

    # -- Collector

    def collect(self) -> Iterator[Metric]:
        labels = self._labels
        names = ["model_name", "engine"]
        for name, doc, value in (
            ("vllm:num_requests_running", "Number of requests in model execution batches.",
             self.num_running),
            ("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
             self.num_waiting),
            ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.",
             self.kv_cache_usage),
        ):  # fmt: skip
            gauge = GaugeMetricFamily(name, doc, labels=names)
            gauge.add_metric(labels, value)
            yield gauge
        info = GaugeMetricFamily(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig",
            labels=["block_size", "enable_prefix_caching", "engine", "num_gpu_blocks"],
        )
        caching = str(self._prefix_caching)
        info.add_metric([str(BLOCK_SIZE), caching, labels[1], str(self._kv_cache_blocks)], 1.0)
        yield info
        for name, doc, total in (
            ("vllm:prompt_tokens", "Number of prefill tokens processed.", self.prompt_tokens),
            ("vllm:generation_tokens", "Number of generation tokens processed.",
             self.generation_tokens),
            ("vllm:num_preemptions", "Cumulative number of preemption from the engine.",
             self.preemptions),
            ("vllm:prefix_cache_queries",
             "Prefix cache queries, in terms of number of queried tokens.",
             self.prefix_cache_queries),
            ("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.",
             self.prefix_cache_hits),
        ):  # fmt: skip
            counter = CounterMetricFamily(name, doc, labels=names)
            counter.add_metric(labels, total)
            yield counter
        success = CounterMetricFamily(
            "vllm:request_success",
            "Count of successfully processed requests.",
            labels=[*names, "finished_reason"],
        )
        for reason, n in self.success.items():
            success.add_metric([*labels, reason.value], n)
        yield success
        for name, doc, hist in (
            ("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
             self.ttft),
            ("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
             self.itl),
            ("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
             self.e2e),
            ("vllm:request_queue_time_seconds",
             "Histogram of time spent in WAITING phase for request.", self.queue),
            ("vllm:request_inference_time_seconds",
             "Histogram of time spent in RUNNING phase for request.", self.inference),
            ("vllm:request_prefill_time_seconds",
             "Histogram of time spent in PREFILL phase for request.", self.prefill),
            ("vllm:request_decode_time_seconds",
             "Histogram of time spent in DECODE phase for request.", self.decode),
        ):  # fmt: skip
            family = HistogramMetricFamily(name, doc, labels=names)
            family.add_metric(labels, hist.cumulative(), hist.sum)
            yield family
