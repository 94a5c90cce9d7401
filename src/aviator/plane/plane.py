"""``Plane``: everything ``aviator up`` runs, started and stopped in one well-defined order.

Start: data directory and lock → gateway process (started first, it imports meanwhile and waits
for the Control API's URL) → store → audit log → runtime (adopting processes a previous plane
left) → controllers (informers synced) → policy view (synced) → Control API → the gateway gets
the URL and starts watching through it; the plane is up once the gateway is healthy. Stop runs
the reverse: the gateway, the Control API (no write is acknowledged, and no decision made, after
that), the policy view, the audit log (every acknowledged record written), the controllers, every
engine process, and the store last, so nothing acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from aviator.api import admission, errors, kinds
from aviator.api.meta import format_time, now_utc
from aviator.api.replica import Replica
from aviator.audit.log import AuditLog, default_path
from aviator.plane.datadir import DataDir, read_secret
from aviator.plane.gateway import GatewayProcess
from aviator.settings import Settings

if TYPE_CHECKING:
    from aiohttp import web

    from aviator.controllers.manager import Manager
    from aviator.governance.view import PolicyView
    from aviator.identity.sources import TrustedIssuers
    from aviator.runtime.local import LocalRuntime
    from aviator.store.sqlite import SqliteStore

# The rest of the plane (store, controllers, Control API, identity, policy, aiohttp: most of a
# second of imports) is imported by ``start`` once the gateway process is started: the gateway
# spends most of its own start importing, and does that meanwhile, on the other core.

log = logging.getLogger("aviator.plane")


@dataclass(frozen=True, slots=True)
class Endpoints:
    api_url: str
    gateway_url: str | None


class Plane:
    def __init__(
        self,
        *,
        settings: Settings,
        run_gateway: bool = True,
        inventory: list[dict[str, Any]] | None = None,
        identity_config: Path | None = None,
    ) -> None:
        """``inventory``: Node objects to plan on; without it the local machine is discovered.
        ``identity_config``: the file ``settings.identity`` was read from, passed on to the
        gateway so that it trusts the same issuers in the same trust domain."""
        self.settings = settings
        self._identity_config = identity_config
        self._inventory = inventory
        self.data_dir = DataDir(settings.data_dir)
        self._run_gateway = run_gateway
        self._lock: IO[str] | None = None
        self._store: SqliteStore | None = None
        self._runtime: LocalRuntime | None = None
        self._manager: Manager | None = None
        self._runner: web.AppRunner | None = None
        self._gateway: GatewayProcess | None = None
        self._audit: AuditLog | None = None
        self._view: PolicyView | None = None
        self._view_task: asyncio.Task[None] | None = None
        self._trusted: TrustedIssuers | None = None
        self.endpoints: Endpoints | None = None

    @property
    def store(self) -> SqliteStore:
        assert self._store is not None, "plane not started"
        return self._store

    @property
    def manager(self) -> Manager:
        assert self._manager is not None, "plane not started"
        return self._manager

    @property
    def audit_path(self) -> Path:
        """The audit log's file: ``settings.audit.path``, else ``<data-dir>/audit.db``."""
        return self.settings.audit.path or default_path(self.data_dir.root)

    async def start(self) -> Endpoints:
        started = time.perf_counter()
        self.data_dir.prepare()
        self._lock = self.data_dir.acquire()
        settings = self.settings
        identity = settings.identity
        if self._run_gateway:
            # First: it imports while the plane starts, and waits for the Control API's URL.
            gw = settings.gateway
            self._gateway = GatewayProcess(
                host=gw.host,
                port=gw.port,  # 0: GatewayProcess reserves a free one
                control_url=None,
                token_file=self.data_dir.admin_token,
                audit_file=self.audit_path,
                log_file=self.data_dir.logs / "gateway.log",
                record=self.data_dir.gateway_record,
                stop_grace_s=settings.runtime.stop_grace_s,
                identity_config=self._identity_config,
            )
            await self._gateway.start()

        from aiohttp import web

        from aviator.controlapi.app import build_app
        from aviator.controlapi.governance import Governance, control_api_verifier
        from aviator.controlapi.identity import IdentityApi
        from aviator.controllers.manager import Manager
        from aviator.governance.view import PolicyView
        from aviator.identity.keys import KeyRing
        from aviator.identity.sources import TrustedIssuers
        from aviator.placement.validation import selector_errors
        from aviator.policy import validation as policy_validation
        from aviator.runtime.local import LocalRuntime
        from aviator.store.sqlite import SqliteStore

        # Retired keys stay published for the longest token lifetime plus the verifiers' leeway.
        self.keyring = KeyRing.load_or_create(
            self.data_dir.root / "keys",
            retain_for=timedelta(seconds=identity.max_ttl_s + identity.leeway_s),
        )
        self._store = await SqliteStore.open(self.data_dir.database, settings=settings.store)
        # Opening creates the file and its schema: blocking SQLite work, off the loop.
        self._audit = await asyncio.to_thread(
            AuditLog.open, self.audit_path, settings=settings.audit
        )
        await self._install_fleet()

        self._runtime = LocalRuntime(
            data_dir=self.data_dir.root, settings=settings.runtime, on_change=self._runtime_changed
        )
        await self._runtime.start()
        raw_replicas, _ = await self._store.list(kinds.REPLICA)
        wanted = {
            (r["metadata"]["namespace"], r["metadata"]["name"]): Replica.from_raw(r)
            for r in raw_replicas
            if not r["metadata"].get("deletionTimestamp")
        }
        await self._runtime.adopt(wanted)

        self._manager = Manager(
            store=self._store, runtime=self._runtime, settings=settings.controllers
        )
        await self._manager.start()

        # No write is decided before the policies are loaded: the view fails closed until then.
        self._view = PolicyView(source=self._store)
        self._view_task = asyncio.create_task(self._view.run(), name="aviator-policy-view")
        await self._view.synced.wait()
        self._trusted = TrustedIssuers(identity.trusted_issuers)
        await self._trusted.start()
        governance = Governance(
            view=self._view,
            audit=self._audit,
            verifier=control_api_verifier(
                identity, keys=self.keyring, view=self._view, trusted=self._trusted.issuers
            ),
        )

        api = settings.api
        app = build_app(
            store=self._store,
            settings=api,
            token=read_secret(self.data_dir.admin_token),
            checks=(selector_errors, *policy_validation.CHECKS),
            identity=IdentityApi(keyring=self.keyring, settings=identity),
            governance=governance,
        )
        # Cancel a handler when its client goes away: an abandoned watch stops at once.
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=1.0, handler_cancellation=True
        )
        await self._runner.setup()
        # Port 0 is the kernel's pick at bind time, read back: no window for anyone to take it.
        await web.TCPSite(self._runner, api.host, api.port).start()
        api_port = int(self._runner.addresses[0][1])
        api_url = f"http://{api.host}:{api_port}"
        self.settings = replace(settings, api=replace(api, port=api_port))

        gateway_url = None
        if self._gateway is not None:
            await self._gateway.set_control_url(api_url)
            await self._gateway.wait_ready(timeout=30.0)
            gateway_url = self._gateway.url
            gw = self.settings.gateway
            self.settings = replace(self.settings, gateway=replace(gw, port=self._gateway.port))

        self.endpoints = Endpoints(api_url=api_url, gateway_url=gateway_url)
        self.data_dir.write_info(
            {
                "pid": os.getpid(),
                "apiUrl": api_url,
                "gatewayUrl": gateway_url,
                "gatewayPid": self._gateway.pid if self._gateway else None,
                "startedAt": format_time(now_utc()),
            }
        )
        log.info(
            "plane started in %.2fs: Control API %s, gateway %s",
            time.perf_counter() - started,
            api_url,
            gateway_url or "(not started)",
        )
        return self.endpoints

    async def _install_fleet(self) -> None:
        """Create missing built-in device classes; upsert the inventory (or the discovered node)."""
        from aviator.placement.deviceclasses import builtin_device_classes
        from aviator.runtime.discovery import discover_local_node

        store = self.store
        for obj in builtin_device_classes():
            with contextlib.suppress(errors.AlreadyExists):
                await store.create(
                    kinds.DEVICE_CLASS,
                    admission.admit(obj, kind=kinds.DEVICE_CLASS, namespace=None),
                )
        nodes = self._inventory if self._inventory is not None else [await discover_local_node()]
        for raw in nodes:
            obj = admission.admit(raw, kind=kinds.NODE, namespace=None)
            try:
                await store.create(kinds.NODE, obj)
            except errors.AlreadyExists:
                current = await store.get(kinds.NODE, None, obj["metadata"]["name"])
                obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                await store.replace(kinds.NODE, obj)
        log.info(
            "fleet: %d node(s), %d device(s)",
            len(nodes),
            sum(len(n["spec"]["devices"]) for n in nodes),
        )

    def _runtime_changed(self, namespace: str, name: str) -> None:
        if self._manager is not None:
            self._manager.runtime_changed(namespace, name)

    async def stop(self) -> None:
        """Stop everything in reverse order; safe to call on a partly started plane."""
        log.info("plane stopping")
        # The gateway first: it only reads (through a watch), and with it gone the Control API
        # has no long-lived connection left to wait for.
        if self._gateway is not None:
            await self._gateway.stop()
            self._gateway = None
        if self._runner is not None:
            await self._runner.cleanup()  # from here on no write is acknowledged
            self._runner = None
        if self._view_task is not None:
            self._view_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._view_task
            self._view_task = None
        if self._trusted is not None:
            await self._trusted.aclose()
            self._trusted = None
        if self._audit is not None:
            await self._audit.aclose()  # every acknowledged decision is written
            self._audit = None
        if self._manager is not None:
            await self._manager.stop()
            self._manager = None
        if self._runtime is not None:
            await self._runtime.close(stop_processes=True)
            self._runtime = None
        if self._store is not None:
            await self._store.close()
            self._store = None
        if self._lock is not None:
            # Only the plane that holds the directory owns its plane.json: a plane refused at
            # start (another one runs there) must not unlink the running one's.
            with contextlib.suppress(FileNotFoundError):
                self.data_dir.plane_info.unlink()
            self._lock.close()
            self._lock = None
        log.info("plane stopped")

    async def run_until(self, stop: asyncio.Event) -> None:
        try:
            await stop.wait()
        finally:
            await self.stop()
