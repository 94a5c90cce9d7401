"""The gateway's Prometheus metrics, in a registry of its own.

Names follow OTel GenAI where one exists (``gen_ai_client_operation_duration_seconds`` with the
OTel-recommended buckets) and ``aviator_gateway_*`` otherwise. Labelled children are cached:
``.labels()`` costs a few microseconds, a cached child's ``observe()`` about one.

The ``model`` label only ever carries names taken from the endpoint table (or ``""``), never raw
client input, so a client cannot blow up the series count with made-up model names.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from aviator.gateway.endpoints import EndpointTable

__all__ = ["CONTENT_TYPE", "DURATION_BUCKETS", "GatewayMetrics"]

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

_ENDPOINTS_HELP = "Ready replicas the gateway routes to, per model."


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
        self._duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "Duration of a GenAI operation through the gateway, until the last byte was sent.",
            ["operation", "model", "status"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._requests = Counter(
            "aviator_gateway_requests",
            "Requests answered by the gateway, per model and HTTP status code.",
            ["model", "code"],
            registry=self.registry,
        )
        self._retries = Counter(
            "aviator_gateway_upstream_retries",
            "Requests sent again to another replica after a connect error or a 5xx.",
            registry=self.registry,
        )
        self._inflight = Gauge(
            "aviator_gateway_inflight_requests",
            "Requests being proxied right now, per model.",
            ["model"],
            registry=self.registry,
        )
        self.registry.register(_EndpointsCollector(table))
        self._done: dict[tuple[str, str, int], tuple[Histogram, Counter]] = {}
        self._inflight_children: dict[str, Gauge] = {}

    def observe(self, *, operation: str, model: str, code: int, duration_s: float) -> None:
        """One finished request (``model`` is ``""`` when it was not routed to a known model)."""
        key = (operation, model, code)
        children = self._done.get(key)
        if children is None:
            status = str(code)
            children = (
                self._duration.labels(operation, model, status),
                self._requests.labels(model, status),
            )
            self._done[key] = children
        children[0].observe(duration_s)
        children[1].inc()

    def retried(self) -> None:
        self._retries.inc()

    def inflight(self, model: str) -> Gauge:
        """The in-flight gauge child of ``model`` (``inc()`` on start, ``dec()`` on end)."""
        child = self._inflight_children.get(model)
        if child is None:
            child = self._inflight_children[model] = self._inflight.labels(model)
        return child

    def render(self) -> bytes:
        """The text exposition of every metric."""
        return generate_latest(self.registry)
