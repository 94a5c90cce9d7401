"""Driving the real plane (``python -m aviator up``) as a child process, for integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from aviator.cli.manifests import apply as apply_manifests
from aviator.cli.manifests import parse_text as parse_manifests
from aviator.client import Client

REPO = Path(__file__).resolve().parents[2]
INVENTORY = str(REPO / "examples" / "inventory-mixed.yaml")
"""The mixed fleet of the examples (NVIDIA, AMD, Intel and CPU nodes in two regions)."""
START_TIMEOUT_S = 60.0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (dead, not yet reaped by its parent) counts as gone.
    with contextlib.suppress(FileNotFoundError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return False


def wait_until(
    predicate: object, *, timeout: float, interval: float = 0.05, message: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s: {message}")


@dataclass
class PlaneProcess:
    """``aviator up`` running as a child process on a data directory."""

    data_dir: Path
    process: subprocess.Popen[bytes] | None = None
    engine_pids: set[int] = field(default_factory=set)

    @property
    def info(self) -> dict[str, str]:
        data: dict[str, str] = json.loads((self.data_dir / "plane.json").read_text())
        return data

    @property
    def api_url(self) -> str:
        return self.info["apiUrl"]

    @property
    def gateway_url(self) -> str:
        return self.info["gatewayUrl"]

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    @property
    def gateway_token(self) -> str:
        """What tests send the gateway: the admin token, which it accepts and never holds to
        policy or budgets (tests of governance use agent tokens instead)."""
        return self.admin_token

    def agent_token(self, name: str, *, namespace: str = "default", audience: str = "") -> str:
        """A fresh token for Agent ``namespace/name`` from the Control API's token endpoint (what
        ``aviator token issue`` calls)."""
        issued = httpx.post(
            f"{self.api_url}/apis/aviator.dev/v1alpha1/namespaces/{namespace}/agents/{name}/token",
            json={"audience": audience} if audience else {},
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=10.0,
        )
        assert issued.status_code == 201, issued.text
        token: str = issued.json()["token"]
        return token

    def wait_for_output(self, text: str, *, timeout: float) -> str:
        """The plane's output once it contains ``text`` (e.g. the banner of ``up --apply``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError):
                output = (self.data_dir / "up.out").read_text()
                if text in output:
                    return output
            assert self.process is None or self.process.poll() is None, self.output()
            time.sleep(0.05)
        raise AssertionError(
            f"{text!r} not in the plane's output after {timeout}s:\n{self.output()}"
        )

    def env(self) -> dict[str, str]:
        return {**os.environ, "AVIATOR_DATA_DIR": str(self.data_dir), "PYTHONUNBUFFERED": "1"}

    def start(self, *extra: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / "plane.json").unlink()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "aviator", "--data-dir", str(self.data_dir), "up"]
        argv += ["--api-port", "0", "--gateway-port", "0", *extra]
        with (self.data_dir / "up.out").open("ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
                env=self.env(),
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"aviator up exited with {self.process.returncode}:\n{self.output()}"
                )
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, KeyError):
                if self.info["apiUrl"]:
                    return
            time.sleep(0.05)
        raise AssertionError(
            f"aviator up did not start within {START_TIMEOUT_S}s:\n{self.output()}"
        )

    def output(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            return (self.data_dir / "up.out").read_text()[-4000:]
        return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"plane did not stop within {timeout}s:\n{self.output()}"
            ) from None

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def cli(
        self, *args: str, input: str | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "aviator", "--data-dir", str(self.data_dir), *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            cwd=REPO,
            env=self.env(),
        )

    def cli_concurrently(
        self, *commands: tuple[str, ...]
    ) -> list[subprocess.CompletedProcess[str]]:
        """Independent ``cli`` commands run side by side (each spends seconds starting its
        interpreter, which on two cores need not be spent one after the other)."""
        with ThreadPoolExecutor(max_workers=len(commands)) as pool:
            return list(pool.map(lambda args: self.cli(*args), commands))

    def client(self) -> Client:
        return Client(self.api_url, token=self.admin_token)

    def apply(self, manifests: str | Path) -> list[str]:
        """What ``aviator apply -f`` does, run in this process: the same parsing and
        create-or-replace code (``aviator.cli.manifests``), without the seconds an ``aviator``
        interpreter takes to start. Tests of the command itself call ``cli`` instead. Returns the
        lines the command would print."""
        if isinstance(manifests, Path):
            text, source = manifests.read_text(), str(manifests)
        else:
            text, source = manifests, "-"
        documents = parse_manifests(text, source=source)

        async def run() -> list[str]:
            async with self.client() as client:
                results = await apply_manifests(client, documents)
            assert results.failed == 0, "\n".join(results.lines)
            return results.lines

        # A thread of its own: async tests call this with their event loop running.
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, run()).result()

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One Control API request as the administrator. Tests read state through this, not
        through ``cli``: each ``aviator`` command is a fresh interpreter that takes seconds to
        import, which polling loops would pay on every round."""
        return httpx.request(
            method,
            f"{self.api_url}{path}",
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=10.0,
            **kwargs,
        )

    def get(self, plural: str, name: str, *, namespace: str | None = "default") -> dict[str, Any]:
        """One object, as ``aviator get <kind> <name> -o json`` prints it."""
        got = self.api("GET", f"{collection_path(plural, namespace)}/{name}")
        assert got.status_code == 200, got.text
        obj: dict[str, Any] = got.json()
        return obj

    def items(self, plural: str, *, namespace: str | None = "default") -> list[dict[str, Any]]:
        """The objects of a kind, as ``aviator get <kind> -o json`` lists them."""
        got = self.api("GET", collection_path(plural, namespace))
        assert got.status_code == 200, got.text
        listed: list[dict[str, Any]] = got.json()["items"]
        return listed

    def delete_all(self, plural: str, *, namespace: str = "default") -> None:
        """Delete every object of a kind (without waiting for finalizers): what a test on a
        shared plane leaves behind, so that its engines do not take the CPU from the next's."""
        for obj in self.items(plural, namespace=namespace):
            path = f"{collection_path(plural, namespace)}/{obj['metadata']['name']}"
            deleted = self.api("DELETE", path)
            assert deleted.status_code in (200, 202, 404), deleted.text

    def wait_for_condition(
        self,
        plural: str,
        name: str,
        condition: str = "Available",
        *,
        timeout: float,
        namespace: str = "default",
    ) -> dict[str, Any]:
        """The object once ``condition`` is True for its current generation (what ``aviator wait
        --for condition=<condition>`` waits for), polled at a short interval."""
        found: dict[str, Any] = {}

        def met() -> bool:
            got = self.api("GET", f"{collection_path(plural, namespace)}/{name}")
            if got.status_code != 200:
                return False
            found.clear()
            found.update(got.json())
            return condition_met(found, condition)

        try:
            wait_until(met, timeout=timeout, message=f"{plural}/{name} {condition}")
        except AssertionError as exc:
            last = found.get("status")
            raise AssertionError(f"{exc}; last status: {last}\n{self.output()}") from None
        return found

    def gateway(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.gateway_url,
            timeout=30.0,
            headers={"Authorization": f"Bearer {self.gateway_token}"},
        )

    def record_engine_pids(self) -> set[int]:
        """Pids of engine processes the plane's records name (what it started and still tracks)."""
        for record in (self.data_dir / "run").glob("*.json"):
            with contextlib.suppress(json.JSONDecodeError, KeyError, FileNotFoundError):
                self.engine_pids.add(int(json.loads(record.read_text())["pid"]))
        return self.engine_pids

    def cleanup(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()
        for pid in self.record_engine_pids():
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)


GROUP_PATH = "/apis/aviator.dev/v1alpha1"


def collection_path(plural: str, namespace: str | None) -> str:
    """The collection path of a kind (cluster-scoped kinds: ``namespace=None``)."""
    if namespace is None:
        return f"{GROUP_PATH}/{plural}"
    return f"{GROUP_PATH}/namespaces/{namespace}/{plural}"


def condition_met(obj: dict[str, Any], condition: str, status: str = "True") -> bool:
    """``condition`` has ``status`` and has caught up with the object's generation (as ``aviator
    wait`` and kubectl decide)."""
    conds = (obj.get("status") or {}).get("conditions") or ()
    cond = next((c for c in conds if c.get("type") == condition), None)
    if cond is None or str(cond.get("status", "")).lower() != status.lower():
        return False
    observed = cond.get("observedGeneration", (obj.get("status") or {}).get("observedGeneration"))
    generation = (obj.get("metadata") or {}).get("generation")
    return observed is None or generation is None or int(observed) >= int(generation)


async def async_wait_until(
    predicate: object, *, timeout: float, interval: float = 0.05, message: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()  # type: ignore[operator]
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s: {message}")


def claiming_deployment(
    name: str, accelerators: dict[str, Any], *, replicas: int = 1, **spec: Any
) -> str:
    """A ModelDeployment manifest (JSON) of an 8B-class model with an accelerator claim."""
    body = {
        "apiVersion": "aviator.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"model": {"name": f"org/{name}-8B"}, "accelerators": accelerators, "replicas": replicas, **spec},
    }  # fmt: skip
    return json.dumps(body)
