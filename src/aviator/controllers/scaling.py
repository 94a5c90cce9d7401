"""Pure scaling decisions: the autoscaler's recommendation and its stabilization.

No I/O and no clock: functions take the observed load, the recommendation history and ``now``.
The rules are the HorizontalPodAutoscaler's (``pkg/controller/podautoscaler``), on two per-replica
load signals instead of CPU:

- **Recommend.** ``ratio = max(mean waiting / target queue depth, mean KV usage / target usage)``
  over the replicas that reported load; within a tolerance of 10 % of 1.0 nothing changes,
  otherwise ``desired = ceil(current * ratio)``. Replicas that did not report are not guessed:
  with no report at all there is no recommendation (hold).
- **Stabilize.** Every recommendation is remembered with its time. Scaling up goes only to the
  *lowest* recommendation of the scale-up window, scaling down only to the *highest* of the
  scale-down window, so a short burst or a short lull does not flap the replica count.
- **Bound.** The result is clamped to ``[floor, replicas.max]``, the floor being ``replicas.min``
  raised by the SLO's plan.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from aviator.api.modeldeployment import Autoscaling
from aviator.enginemetrics import EngineLoad

TOLERANCE = 0.1
"""The HPA's default ``--horizontal-pod-autoscaler-tolerance``."""


@dataclass(frozen=True, slots=True)
class Recommendation:
    at: float
    """Monotonic seconds."""
    replicas: int


def recommend(current: int, loads: Sequence[EngineLoad], *, policy: Autoscaling) -> int | None:
    """Replicas the load asks for, unbounded; None when no replica reported its load."""
    if not loads or current <= 0:
        return None
    waiting = sum(load.waiting for load in loads) / len(loads)
    usage = sum(load.kv_cache_usage for load in loads) / len(loads)
    ratio = max(waiting / policy.target_queue_depth, usage / policy.target_kv_cache_usage)
    if abs(ratio - 1.0) <= TOLERANCE:
        return current
    return math.ceil(current * ratio - 1e-9)


def stabilize(
    history: Sequence[Recommendation], *, now: float, current: int, policy: Autoscaling
) -> int:
    """The replica count to move to from ``current`` given the recommendations so far."""
    up_window = [r.replicas for r in history if now - r.at <= policy.scale_up_stabilization_seconds]
    down_window = [
        r.replicas for r in history if now - r.at <= policy.scale_down_stabilization_seconds
    ]
    if up_window and current < (up := min(up_window)):
        return up
    if down_window and current > (down := max(down_window)):
        return down
    return current


def prune(
    history: Sequence[Recommendation], *, now: float, policy: Autoscaling
) -> list[Recommendation]:
    """The recommendations still inside the longer window (the rest can never matter again)."""
    keep = max(policy.scale_up_stabilization_seconds, policy.scale_down_stabilization_seconds)
    return [r for r in history if now - r.at <= keep]


def bound(replicas: int, *, floor: int, ceiling: int) -> int:
    return max(floor, min(ceiling, replicas))
