"""The Grant controller: the pure expiry step (examples and a property), and the reconciler
writing ``Expired`` into a real store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aviator.api import admission, kinds
from aviator.api.grant import phase_at
from aviator.api.meta import format_time
from aviator.cache import Reflector
from aviator.controllers.grant import EXPIRY_SLACK_S, GrantReconciler, expiry_step
from aviator.settings import StoreSettings
from aviator.store.sqlite import SqliteStore

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def grant(phase: str, *, expires: datetime | None = None, name: str = "g") -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "reason": "approved by admin", "decidedBy": "admin"}
    if expires is not None:
        status["expiresAt"] = format_time(expires)
    return {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "Grant",
        "metadata": {"name": name, "namespace": "team-a"},
        "spec": {"agent": "bot", "actions": ["infer"], "resources": ["md/chat"], "purpose": "q3"},
        "status": status,
    }


def test_an_active_grant_is_looked_at_again_at_its_expiry() -> None:
    step = expiry_step(grant("Active", expires=NOW + timedelta(minutes=5)), NOW)
    assert step.status is None
    assert step.requeue_after == pytest.approx(300 + EXPIRY_SLACK_S)


@pytest.mark.parametrize("late", [timedelta(0), timedelta(seconds=1), timedelta(days=3)])
def test_an_active_grant_past_its_expiry_is_expired(late: timedelta) -> None:
    expires = NOW - late
    step = expiry_step(grant("Active", expires=expires), NOW)
    assert step.requeue_after is None and step.status is not None
    assert step.status.phase == "Expired"
    assert step.status.reason == f"expired at {format_time(expires)}"
    assert step.status.decided_by == "admin"  # who approved it stays on record


def test_an_active_grant_without_expiry_cannot_be_trusted() -> None:
    step = expiry_step(grant("Active"), NOW)
    assert step.status is not None and step.status.phase == "Expired"
    assert "without expiresAt" in step.status.reason


@pytest.mark.parametrize("phase", ["Pending", "Denied", "Expired", "Revoked"])
def test_other_phases_are_left_alone(phase: str) -> None:
    step = expiry_step(grant(phase, expires=NOW - timedelta(hours=1)), NOW)
    assert step.status is None and step.requeue_after is None


@settings(max_examples=200, deadline=None)
@given(offset=st.integers(min_value=-86_400, max_value=86_400))
def test_the_step_agrees_with_the_phase_policy_sees(offset: int) -> None:
    obj = grant("Active", expires=NOW + timedelta(seconds=offset))
    step = expiry_step(obj, NOW)
    if phase_at(obj, NOW) == "Expired":
        assert step.status is not None and step.status.phase == "Expired"
    else:
        assert step.status is None
        assert step.requeue_after == pytest.approx(offset + EXPIRY_SLACK_S)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = await SqliteStore.open(tmp_path / "db.sqlite", settings=StoreSettings())
    yield s
    await s.close()


async def _stored(store: SqliteStore, obj: dict[str, Any]) -> dict[str, Any]:
    admitted = admission.admit(obj, kind=kinds.GRANT, namespace="team-a")
    return await store.create(kinds.GRANT, {**admitted, "status": obj["status"]})


async def test_the_reconciler_writes_expired_and_requeues_live_grants(
    store: SqliteStore,
) -> None:
    await _stored(store, grant("Active", expires=NOW - timedelta(seconds=1), name="old"))
    await _stored(store, grant("Active", expires=NOW + timedelta(seconds=90), name="live"))
    grants = Reflector(source=store, kind=kinds.GRANT, on_event=lambda _t, _o: None)
    task = asyncio.create_task(grants.run())
    try:
        await asyncio.wait_for(grants.synced.wait(), 5)
        reconciler = GrantReconciler(store=store, grants=grants, clock=lambda: NOW)
        result = await reconciler.reconcile(("team-a", "old"))
        assert result.requeue_after is None
        old = await store.get(kinds.GRANT, "team-a", "old")
        assert old["status"]["phase"] == "Expired"
        assert old["status"]["reason"].startswith("expired at ")
        live = await reconciler.reconcile(("team-a", "live"))
        assert live.requeue_after == pytest.approx(90 + EXPIRY_SLACK_S)
        assert (await store.get(kinds.GRANT, "team-a", "live"))["status"]["phase"] == "Active"
        assert (await reconciler.reconcile(("team-a", "absent"))).requeue_after is None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_grant_changed_meanwhile_is_not_overwritten(store: SqliteStore) -> None:
    current = await _stored(store, grant("Active", expires=NOW - timedelta(seconds=1)))
    # Revoked after the cache read it: the controller's write is pinned to what it read.
    revoked = {**current, "status": {**current["status"], "phase": "Revoked"}}
    await store.replace_status(kinds.GRANT, revoked)
    reconciler = GrantReconciler(
        store=store,
        grants=_Frozen(current),  # type: ignore[arg-type]
        clock=lambda: NOW,
    )
    assert (await reconciler.reconcile(("team-a", "g"))).requeue_after is None
    assert (await store.get(kinds.GRANT, "team-a", "g"))["status"]["phase"] == "Revoked"


class _Frozen:
    """A cache that still holds an old version of the grant."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self._obj = obj

    def get(self, key: tuple[str, str]) -> dict[str, Any] | None:
        return self._obj
