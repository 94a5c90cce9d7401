"""Leader election over a Lease: the pure rule (properties), and two electors against kmock."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import kmock
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.unit.operator.cluster import (
    VersionedEmulator,
    configuration,
    declare,
    eventually,
    objects,
)

from aviator.kube.api import KubeApi
from aviator.operator.leader import LeaderElector, LeadershipLost, decide, micro_time, release
from aviator.operator.objects import ObjectApi

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
LEASES = "coordination.k8s.io/v1/leases"


def lease(holder: str, *, duration: int = 15, transitions: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "op", "namespace": "sys", "resourceVersion": "7"},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration,
            "renewTime": micro_time(NOW - timedelta(seconds=3)),
            "leaseTransitions": transitions,
        },
    }


def decision(current: dict[str, Any] | None, *, me: str = "b", unchanged: float = 0.0) -> Any:
    return decide(
        current,
        namespace="sys",
        name="op",
        identity=me,
        duration_s=15,
        unchanged_for_s=unchanged,
        now=NOW,
    )


def test_no_lease_is_created_with_us_as_holder() -> None:
    d = decision(None)
    assert d.action == "create"
    assert d.body is not None
    assert d.body["spec"]["holderIdentity"] == "b"
    assert d.body["spec"]["renewTime"] == "2026-11-27T12:00:00.000000Z"
    assert "resourceVersion" not in d.body["metadata"]


def test_our_lease_is_renewed_conditionally() -> None:
    d = decision(lease("b", transitions=3))
    assert d.action == "renew"
    assert d.body is not None
    assert d.body["metadata"]["resourceVersion"] == "7"
    assert d.body["spec"]["leaseTransitions"] == 3
    assert d.body["spec"]["renewTime"] == micro_time(NOW)


def test_a_live_holder_is_followed_and_an_expired_or_released_one_taken_over() -> None:
    assert decision(lease("a"), unchanged=14.9).action == "follow"
    took = decision(lease("a", transitions=2), unchanged=15.0)
    assert took.action == "acquire"
    assert took.body is not None
    assert took.body["spec"]["leaseTransitions"] == 3
    assert took.body["metadata"]["resourceVersion"] == "7"  # conditional: one winner
    assert decision(lease(""), unchanged=0.0).action == "acquire"


@given(
    holder=st.sampled_from(["", "a", "b"]),
    duration=st.integers(min_value=1, max_value=120),
    unchanged=st.floats(min_value=0, max_value=500, allow_nan=False),
)
def test_a_live_lease_of_another_holder_is_never_taken(
    holder: str, duration: int, unchanged: float
) -> None:
    d = decision(lease(holder, duration=duration), unchanged=unchanged)
    others_live = holder not in ("", "b") and unchanged < duration
    assert (d.action == "follow") == others_live
    if d.body is not None:
        assert d.body["spec"]["holderIdentity"] == "b"
        assert d.holder == "b"


def test_only_the_holder_releases() -> None:
    released = release(lease("b"), identity="b", now=NOW)
    assert released is not None
    assert released["spec"]["holderIdentity"] == ""
    assert released["metadata"]["resourceVersion"] == "7"
    assert release(lease("a"), identity="b", now=NOW) is None


def test_the_retry_period_must_leave_time_to_renew() -> None:
    with pytest.raises(ValueError, match="retry_s"):
        LeaderElector(api=None, namespace="s", name="n", identity="i", duration_s=4, retry_s=2)  # type: ignore[arg-type]


with_versions = pytest.mark.kmock(cls=VersionedEmulator)


@with_versions
async def test_one_of_two_replicas_leads_and_the_other_takes_over_on_release(
    kmock: kmock.KubernetesEmulator,
) -> None:
    declare(kmock)
    working: list[str] = []

    def work(name: str) -> Any:
        async def lead() -> None:
            working.append(name)
            await asyncio.Event().wait()

        return lead

    async with KubeApi(configuration(kmock)) as kube:
        api = ObjectApi(kube=kube)
        electors = {
            # A long lease: "b" can only take over this fast because "a" releases it.
            name: LeaderElector(
                api=api, namespace="sys", name="op", identity=name, duration_s=60, retry_s=0.05
            )
            for name in ("a", "b")
        }
        first = asyncio.create_task(electors["a"].run(work("a")))
        await eventually(lambda: working == ["a"])
        second = asyncio.create_task(electors["b"].run(work("b")))
        await asyncio.sleep(0.3)  # several rounds of "b": it must only follow
        assert working == ["a"]
        assert (electors["a"].leading, electors["b"].leading) == (True, False)

        first.cancel()  # "a" shuts down and releases the lease
        with contextlib.suppress(asyncio.CancelledError):
            await first
        await eventually(lambda: working == ["a", "b"])
        held = objects(kmock, LEASES)[("sys", "op")]
        assert held["spec"]["holderIdentity"] == "b"
        assert held["spec"]["leaseTransitions"] == 1
        second.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await second


@with_versions
async def test_a_leader_that_loses_its_lease_stops_working(kmock: kmock.KubernetesEmulator) -> None:
    declare(kmock)
    stopped = asyncio.Event()

    async def lead() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    async with KubeApi(configuration(kmock)) as kube:
        api = ObjectApi(kube=kube)
        elector = LeaderElector(
            api=api, namespace="sys", name="op", identity="a", duration_s=3, retry_s=0.05
        )
        task = asyncio.create_task(elector.run(lead))
        await eventually(lambda: elector.leading)
        # Another replica takes the lease over (as after a long pause of this one).
        await api.patch(
            {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": "op", "namespace": "sys"},
                "spec": {"holderIdentity": "z", "renewTime": micro_time(datetime.now(UTC))},
            }
        )
        with pytest.raises(LeadershipLost):
            await asyncio.wait_for(task, 5)
        assert stopped.is_set()


@with_versions
async def test_a_leader_whose_requests_hang_stops_before_another_takes_over(
    kmock: kmock.KubernetesEmulator,
) -> None:
    """One request may hang for 30 s; a leader must not keep working through that while its
    Lease runs out and a follower takes over (by expiry: the leader cannot even release)."""
    declare(kmock)
    hanging = asyncio.Event()
    release = asyncio.Event()

    async def hang(request: kmock.Request) -> None:
        # Every request of "a" from now on goes unanswered (a write is stored first, as by a
        # server that applied it but whose answer never arrives).
        if hanging.is_set() and request.headers.get("Authorization") == "Bearer a":
            await release.wait()
        # "Matched, nothing to answer": the emulator answers. (Returning None would make kmock
        # disable this reaction for good.)
        raise NotImplementedError

    kmock[kmock.resource("coordination.k8s.io", "v1", "leases")] << hang
    spans: dict[str, list[float]] = {}

    def work(name: str) -> Any:
        async def lead() -> None:
            spans[name] = [time.monotonic()]
            try:
                await asyncio.Event().wait()
            finally:
                spans[name].append(time.monotonic())

        return lead

    def client(name: str) -> KubeApi:
        config = configuration(kmock)
        config.api_key = {"BearerToken": f"Bearer {name}"}
        return KubeApi(config)

    async with client("a") as kube_a, client("b") as kube_b:
        a, b = (
            LeaderElector(
                api=ObjectApi(kube=kube),
                namespace="sys",
                name="op",
                identity=name,
                duration_s=1,
                retry_s=0.05,
            )
            for name, kube in (("a", kube_a), ("b", kube_b))
        )
        leader = asyncio.create_task(a.run(work("a")))
        await eventually(lambda: "a" in spans)
        follower = asyncio.create_task(b.run(work("b")))
        try:
            await asyncio.sleep(0.2)  # "b" follows
            assert "b" not in spans
            hanging.set()
            with pytest.raises(LeadershipLost):
                await asyncio.wait_for(leader, 2)
            await eventually(lambda: "b" in spans, timeout_s=3)
            assert spans["a"][1] < spans["b"][0]  # never both at once
            held = objects(kmock, LEASES)[("sys", "op")]
            assert held["spec"]["holderIdentity"] == "b"
        finally:
            release.set()
            for task in (leader, follower):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, LeadershipLost):
                    await task
