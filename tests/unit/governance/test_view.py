"""PolicyView over the real SQLite store: compile on change, at grant expiry, and fail closed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aviator.api import admission, kinds
from aviator.api.meta import format_time
from aviator.api.principal import Principal
from aviator.governance.view import PolicyView
from aviator.policy import engine
from aviator.policy.engine import CompiledPolicies
from aviator.policy.entities import EntityUid
from aviator.settings import StoreSettings
from aviator.store.sqlite import SqliteStore

AGENT = Principal(
    kind="agent", id="spiffe://aviator.test/ns/team/agent/bot", namespace="team", name="bot"
)
CHAT = EntityUid("ModelDeployment", "team/chat")
PERMIT_TEAM = """
permit (principal is Agent, action == Action::"infer", resource is ModelDeployment)
when { resource.namespace == principal.namespace };
"""


class Clock:
    def __init__(self) -> None:
        # Whole seconds: stored times (``format_time``) have no fraction.
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now


def context() -> dict[str, Any]:
    return engine.inference_context(
        model="llama", estimated_tokens=10, priority="standard", now=datetime.now(UTC)
    )


def allowed(compiled: CompiledPolicies) -> bool:
    return compiled.decide(AGENT, "infer", CHAT, context()).allowed


async def eventually(check: Callable[[], bool], *, timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = await SqliteStore.open(tmp_path / "store.db", settings=StoreSettings())
    try:
        yield s
    finally:
        await s.close()


async def put(store: SqliteStore, kind: kinds.KindInfo, body: dict[str, Any]) -> dict[str, Any]:
    namespace = body["metadata"].get("namespace")
    return await store.create(kind, admission.admit(body, kind=kind, namespace=namespace))


async def world(store: SqliteStore) -> None:
    await put(
        store,
        kinds.AGENT,
        {"metadata": {"name": "bot", "namespace": "team"}, "spec": {"owner": "alice"}},
    )
    await put(
        store,
        kinds.MODEL_DEPLOYMENT,
        {
            "metadata": {"name": "chat", "namespace": "team"},
            "spec": {"model": {"name": "llama"}, "engine": "sim"},
        },
    )


@pytest.fixture
async def running(store: SqliteStore) -> AsyncIterator[tuple[PolicyView, Clock]]:
    await world(store)
    clock = Clock()
    view = PolicyView(source=store, clock=clock)
    task = asyncio.create_task(view.run())
    try:
        await asyncio.wait_for(view.synced.wait(), 5)
        yield view, clock
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_before_sync_everything_is_denied_and_the_error_says_why(store: SqliteStore) -> None:
    await world(store)
    view = PolicyView(source=store)
    assert view.error == "policies not loaded yet"
    assert not allowed(view.compiled)
    assert not view.synced.is_set()


async def test_a_policy_applied_later_takes_effect_and_agents_are_known(
    store: SqliteStore, running: tuple[PolicyView, Clock]
) -> None:
    view, _ = running
    assert view.error is None
    assert not allowed(view.compiled)
    assert view.agent_exists(AGENT)
    assert view.deployment("team", "chat") is not None
    generation = view.generation
    await put(store, kinds.POLICY, {"metadata": {"name": "team"}, "spec": {"cedar": PERMIT_TEAM}})
    await eventually(lambda: allowed(view.compiled))
    assert view.generation > generation
    await store.delete(kinds.POLICY, None, "team")
    await eventually(lambda: not allowed(view.compiled))


async def test_a_deleted_agent_is_no_longer_known(
    store: SqliteStore, running: tuple[PolicyView, Clock]
) -> None:
    view, _ = running
    await store.delete(kinds.AGENT, "team", "bot")
    await eventually(lambda: not view.agent_exists(AGENT))
    nameless = Principal(kind="agent", id="x")
    assert not view.agent_exists(nameless)


async def test_an_active_grant_counts_until_it_expires_without_any_other_event(
    store: SqliteStore, running: tuple[PolicyView, Clock]
) -> None:
    view, clock = running
    seen: list[int] = []
    view.on_compiled(lambda compiled: seen.append(len(compiled.active_grants)))
    created = await put(
        store,
        kinds.GRANT,
        {
            "metadata": {"name": "burst", "namespace": "team"},
            "spec": {
                "agent": "bot",
                "actions": ["infer"],
                "resources": ["md/chat"],
                "purpose": "backfill",
                "durationSeconds": 60,
            },
        },
    )
    # Expiring 1 s from the view's clock: the loop must wake up on its own for it.
    created["status"] = {
        "phase": "Active",
        "expiresAt": format_time(clock.now + timedelta(seconds=1)),
    }
    await store.replace_status(kinds.GRANT, created)
    await eventually(lambda: allowed(view.compiled))
    assert view.grant("team", "burst") is not None
    clock.now += timedelta(seconds=2)  # no event follows: only the expiry timer can notice
    await eventually(lambda: not allowed(view.compiled))
    assert seen[-1] == 0 and 1 in seen


async def test_policies_that_fail_to_compile_fail_closed_and_recover(
    store: SqliteStore, running: tuple[PolicyView, Clock]
) -> None:
    view, _ = running
    await put(store, kinds.POLICY, {"metadata": {"name": "team"}, "spec": {"cedar": PERMIT_TEAM}})
    await eventually(lambda: allowed(view.compiled))
    # A Policy stored behind admission's back (admission refuses bad Cedar).
    bad = await store.get(kinds.POLICY, None, "team")
    bad["spec"]["cedar"] = "permit (principal, action, resource) when { nope };"
    await store.replace(kinds.POLICY, bad)
    await eventually(lambda: view.error is not None)
    assert not allowed(view.compiled)
    good = await store.get(kinds.POLICY, None, "team")
    good["spec"]["cedar"] = PERMIT_TEAM
    await store.replace(kinds.POLICY, good)
    await eventually(lambda: view.error is None and allowed(view.compiled))


async def test_a_failing_listener_does_not_stop_compiles(
    store: SqliteStore, running: tuple[PolicyView, Clock]
) -> None:
    view, _ = running

    def broken(_compiled: CompiledPolicies) -> None:
        raise RuntimeError("listener bug")

    view.on_compiled(broken)
    await put(store, kinds.POLICY, {"metadata": {"name": "team"}, "spec": {"cedar": PERMIT_TEAM}})
    await eventually(lambda: allowed(view.compiled))
