"""A governed Control API for tests: a real SQLite store with the example policies
(``examples/governance.yaml``), agents and deployments, a real key ring, ``PolicyView``, audit log
and token verifier, wired by ``build_app(governance=...)`` exactly as the plane wires them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from aviator.api import admission, kinds
from aviator.audit.log import AuditLog
from aviator.controlapi.app import build_app
from aviator.controlapi.governance import Governance, control_api_verifier
from aviator.controlapi.identity import IdentityApi
from aviator.governance.view import PolicyView
from aviator.identity import tokens
from aviator.identity.keys import KeyRing
from aviator.policy import validation
from aviator.settings import ApiSettings, AuditSettings, IdentitySettings, StoreSettings
from aviator.store.sqlite import SqliteStore

REPO = Path(__file__).resolve().parents[3]
EXAMPLE_POLICIES = REPO / "examples" / "governance.yaml"
ADMIN_TOKEN = "admin-t0ken-for-governance"
GROUP = "/apis/aviator.dev/v1alpha1"
NS = "team-a"
BOT = f"spiffe://aviator.local/ns/{NS}/agent/bot"


def agent(name: str, *audiences: str) -> dict[str, Any]:
    return {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {"owner": "alice@example.com", "audiences": list(audiences) or ["gateway"]},
    }


def deployment(name: str, priority: str = "standard") -> dict[str, Any]:
    """A deployment with no replicas: nothing to schedule, only something to govern."""
    return {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"model": {"name": f"org/{name}"}, "priority": priority, "replicas": 0},
    }


def grant(name: str, *, agent: str = "bot", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "Grant",
        "metadata": {"name": name},
        "spec": {
            "agent": agent,
            "actions": ["infer"],
            "resources": ["md/chat"],
            "purpose": "quarterly report",
            "durationSeconds": 600,
            **spec,
        },
    }


def example_policies() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(EXAMPLE_POLICIES.read_text()) if doc]


@dataclass
class World:
    store: SqliteStore
    ring: KeyRing
    view: PolicyView
    audit: AuditLog
    governance: Governance
    app: web.Application
    view_task: asyncio.Task[None]

    def token(self, name: str = "bot", *, audience: str = "control-api", ns: str = NS) -> str:
        return tokens.mint(
            key=self.ring.active,
            issuer="spiffe://aviator.local",
            trust_domain="aviator.local",
            namespace=ns,
            name=name,
            audience=audience,
            ttl_s=600,
            now=time.time(),
        ).token

    def records(self) -> list[dict[str, Any]]:
        """Every audit record written so far (flushing first)."""
        self.audit.flush(timeout=5)
        return [entry.data() for entry in self.audit.iterate()]

    async def close(self) -> None:
        self.view_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.view_task
        with contextlib.suppress(Exception):
            await self.audit.aclose()
        await self.store.close()


async def open_world(tmp_path: Path, *, audit: AuditLog | None = None) -> World:
    store = await SqliteStore.open(tmp_path / "aviator.db", settings=StoreSettings())
    for doc in example_policies():
        obj = admission.admit(doc, kind=kinds.POLICY, namespace=None)
        await store.create(kinds.POLICY, obj)
    for body in (
        agent("bot", "gateway", "control-api"),
        agent("helper", "control-api"),
        agent("gw-only"),
    ):
        await store.create(kinds.AGENT, admission.admit(body, kind=kinds.AGENT, namespace=NS))
    for body in (deployment("chat"), deployment("crit", "critical")):
        await store.create(
            kinds.MODEL_DEPLOYMENT, admission.admit(body, kind=kinds.MODEL_DEPLOYMENT, namespace=NS)
        )
    ring = KeyRing.load_or_create(tmp_path / "keys")
    view = PolicyView(source=store)
    task = asyncio.create_task(view.run())
    await asyncio.wait_for(view.synced.wait(), 10)
    log = audit or AuditLog.open(
        tmp_path / "audit.db", settings=AuditSettings(batch_interval_s=0.005)
    )
    governance = Governance(
        view=view,
        audit=log,
        verifier=control_api_verifier(IdentitySettings(), keys=ring, view=view),
    )
    app = build_app(
        store=store,
        settings=ApiSettings(max_body_bytes=64 * 1024),
        token=ADMIN_TOKEN,
        checks=validation.CHECKS,
        identity=IdentityApi(keyring=ring),
        governance=governance,
    )
    return World(store, ring, view, log, governance, app, task)
