"""Grants in a cluster: the operator runs the embedded plane's Grant expiry controller (the same
``GrantReconciler`` over a ``KubeStore``), against kmock, so an ``Active`` grant past its
``expiresAt`` is written ``Expired``; and the RBAC the install bundle grants covers every request
the operator makes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import kmock
import pytest
from tests.unit.operator.cluster import (
    GRANTS,
    VersionedEmulator,
    configuration,
    declare,
    eventually,
    objects,
)

from aviator.api import kinds
from aviator.api.meta import format_time
from aviator.k8s.install import InstallOptions, bundle
from aviator.kube.api import KubeApi
from aviator.kube.store import KubeStore
from aviator.operator.grants import expire_grants
from aviator.operator.resources import LEADER_ELECTION_ACCESS, OPERATOR_ACCESS, Access

NS = "team-a"


def grant(name: str, *, phase: str, expires: datetime) -> dict[str, Any]:
    return {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "Grant",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"agent": "bot", "actions": ["infer"], "resources": ["md/chat"], "purpose": "q3"},
        "status": {
            "phase": phase,
            "reason": "approved by admin",
            "decidedBy": "admin",
            "expiresAt": format_time(expires),
        },
    }


def phase(cluster: kmock.KubernetesEmulator, name: str) -> str | None:
    obj = objects(cluster, GRANTS).get((NS, name)) or {}
    return (obj.get("status") or {}).get("phase")


@pytest.fixture
async def kube(kmock: kmock.KubernetesEmulator) -> AsyncIterator[KubeApi]:
    declare(kmock)
    async with KubeApi(configuration(kmock)) as api:
        yield api


async def put(kube: KubeApi, obj: dict[str, Any]) -> None:
    """Create the grant, then write its status (the API server drops status on create)."""
    store = KubeStore(api=kube)
    await store.create(kinds.GRANT, {k: v for k, v in obj.items() if k != "status"})
    await store.replace_status(kinds.GRANT, obj)


@contextlib.asynccontextmanager
async def expiring(kube: KubeApi, **kwargs: Any) -> AsyncIterator[None]:
    task = asyncio.create_task(expire_grants(kube=kube, **kwargs))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.kmock(cls=VersionedEmulator)
async def test_an_active_grant_is_expired_when_its_time_passes(
    kmock: kmock.KubernetesEmulator, kube: KubeApi
) -> None:
    now = datetime.now(UTC)
    # Whole seconds: expiresAt is written without fractions.
    soon = (now + timedelta(seconds=1.5)).replace(microsecond=0)
    await put(kube, grant("soon", phase="Active", expires=soon))
    await put(kube, grant("later", phase="Active", expires=now + timedelta(hours=1)))
    await put(kube, grant("past", phase="Active", expires=now - timedelta(hours=1)))
    await put(kube, grant("denied", phase="Denied", expires=now - timedelta(hours=1)))
    async with expiring(kube):
        await eventually(lambda: phase(kmock, "past") == "Expired")
        if datetime.now(UTC) < soon:  # (a slow machine may already be past it)
            assert phase(kmock, "soon") == "Active"
        # Looked at again at its expiry (the reconciler's requeue), without any event.
        await eventually(lambda: phase(kmock, "soon") == "Expired", timeout_s=3)
    assert phase(kmock, "later") == "Active"
    assert phase(kmock, "denied") == "Denied"
    expired = objects(kmock, GRANTS)[(NS, "soon")]["status"]
    assert expired["reason"].startswith("expired at ")
    assert expired["decidedBy"] == "admin"  # the rest of the status is kept


@pytest.mark.kmock(cls=VersionedEmulator)
async def test_the_clock_is_the_controllers_and_namespaces_confine_it(
    kmock: kmock.KubernetesEmulator, kube: KubeApi
) -> None:
    now = datetime.now(UTC)
    await put(kube, grant("g", phase="Active", expires=now + timedelta(days=1)))
    other = grant("g", phase="Active", expires=now + timedelta(days=1))
    other["metadata"]["namespace"] = "elsewhere"
    await put(kube, other)
    later = now + timedelta(days=2)
    async with expiring(kube, namespaces=[NS], clock=lambda: later):
        await eventually(lambda: phase(kmock, "g") == "Expired")
        await asyncio.sleep(0.2)
    theirs = objects(kmock, GRANTS)[("elsewhere", "g")]
    assert theirs["status"]["phase"] == "Active"


def _granted(rules: list[dict[str, Any]], need: Access) -> bool:
    for verb in need.verbs:
        if not any(
            need.api_group in r["apiGroups"]
            and need.resource in r["resources"]
            and verb in r["verbs"]
            for r in rules
        ):
            return False
    return True


def test_the_install_bundle_grants_everything_the_operator_asks_for() -> None:
    objs = bundle(InstallOptions())
    cluster_rules = [
        rule
        for o in objs
        if o["kind"] == "ClusterRole" and o["metadata"]["name"] == "aviator-operator"
        for rule in o["rules"]
    ]
    role_rules = [
        rule
        for o in objs
        if o["kind"] == "Role"
        and o["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
        for rule in o["rules"]
    ]
    assert [a for a in OPERATOR_ACCESS if not _granted(cluster_rules, a)] == []
    assert [a for a in LEADER_ELECTION_ACCESS if not _granted(role_rules, a)] == []
    assert Access("aviator.dev", "grants/status", ("patch",)) in OPERATOR_ACCESS
