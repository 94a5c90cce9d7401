"""Counts per bucket of one histogram series: what a request's observation moves.

Pure and small, and compiled with mypyc (``tools/native.py``): the gateway's compiled governance
observes every policy decision's time here with a native call, and the metrics module reads and
renders the counts (``metrics._Histogram``). MUST NOT do I/O or know about Prometheus.
"""

from __future__ import annotations

from bisect import bisect_left

__all__ = ["Buckets"]


class Buckets:
    """Observations per bucket (not cumulative; the last bucket is ``+Inf``) and their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        """Upper bounds, ascending (Prometheus buckets are "less or equal")."""
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bound >= value
        self.sum += value
