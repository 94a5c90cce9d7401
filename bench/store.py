"""Micro-benchmark of the embedded store: ``python bench/store.py [--objects N]``.

Writes N Replica-shaped objects (~850 bytes of JSON each, owned by one ModelDeployment), then
replaces each, then lists them all. For each kind of write it prints the rate with one write
awaited at a time and with 64 in flight, and the store thread's CPU time per write (what the
"well under 1 ms" budget is about; the rest of a write's latency is the loop <-> thread
hand-off). Then the time to list everything (and, for scale, the time just to decode the same
JSON), and the file size on disk after close.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from aviator.api.kinds import MODEL_DEPLOYMENT, REPLICA
from aviator.settings import StoreSettings
from aviator.store.sqlite import SqliteStore

IN_FLIGHT = 64
OWNER = {
    "apiVersion": "aviator.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "chat", "namespace": "default"},
    "spec": {"model": {"name": "meta-llama/Llama-3.1-8B-Instruct"}, "engine": "sim"},
}


def replica(index: int, *, owner_uid: str) -> dict[str, Any]:
    return {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "Replica",
        "metadata": {
            "name": f"chat-5d8f1-{index}",
            "namespace": f"ns-{index % 10}",
            "labels": {
                "aviator.dev/model-deployment": "chat",
                "aviator.dev/template-hash": "5d8f1",
            },
            "finalizers": ["aviator.dev/runtime"],
            "ownerReferences": [
                {
                    "apiVersion": "aviator.dev/v1alpha1",
                    "kind": "ModelDeployment",
                    "name": "chat",
                    "uid": owner_uid,
                    "controller": True,
                }
            ],
        },
        "spec": {
            "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
            "engine": "sim",
            "engineArgs": ["--max-model-len", "8192"],
            "env": {"HF_HOME": "/var/cache/hf"},
            "simulator": {"ttftMs": 40.0, "itlMs": 8.0, "maxNumSeqs": 64, "maxWaiting": 1000},
            "node": "local",
            "templateHash": "5d8f1",
        },
        "status": {
            "phase": "Running",
            "endpoint": "http://127.0.0.1:40123",
            "pid": 1234,
            "port": 40123,
            "restarts": 0,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "ProbeSucceeded",
                    "message": "",
                    "lastTransitionTime": "2026-11-27T09:00:01Z",
                }
            ],
        },
    }


def row(label: str, value: str) -> None:
    print(f"{label:<36} {value}")


async def timed(
    store: SqliteStore,
    label: str,
    indexes: range,
    write: Callable[[int], Awaitable[Any]],
    *,
    in_flight: int,
) -> None:
    """Run ``write`` for each index, ``in_flight`` at a time; print rate and store-thread CPU."""
    # time.thread_time read on the store thread itself: its CPU time, not the loop's.
    cpu_before = await store._read(time.thread_time)  # a benchmark may look inside
    start = time.perf_counter()
    for first in range(0, len(indexes), in_flight):
        batch = indexes[first : first + in_flight]
        await asyncio.gather(*(write(i) for i in batch))
    elapsed = time.perf_counter() - start
    cpu = await store._read(time.thread_time) - cpu_before
    count = len(indexes)
    row(
        f"{label}, {in_flight} in flight",
        f"{count / elapsed:>8,.0f}/s  {elapsed / count * 1e6:>6.0f} µs wall  "
        f"{cpu / count * 1e6:>5.0f} µs store-thread CPU",
    )


async def run(count: int, workdir: Path) -> None:
    path = workdir / "bench.db"
    async with await SqliteStore.open(path, settings=StoreSettings()) as store:
        owner = (await store.create(MODEL_DEPLOYMENT, OWNER))["metadata"]["uid"]
        half = count // 2

        async def create(i: int) -> None:
            await store.create(REPLICA, replica(i, owner_uid=owner))

        await timed(store, "create", range(half), create, in_flight=1)
        await timed(store, "create", range(half, count), create, in_flight=IN_FLIGHT)

        items, _ = await store.list(REPLICA)
        for item in items:
            item["spec"]["engineArgs"] = ["--max-model-len", "16384"]

        async def replace(i: int) -> None:
            items[i] = await store.replace(REPLICA, items[i])

        await timed(store, "replace", range(half), replace, in_flight=1)
        await timed(store, "replace", range(half, count), replace, in_flight=IN_FLIGHT)

        async def replace_status(i: int) -> None:
            items[i]["status"]["restarts"] = 1
            items[i] = await store.replace_status(REPLICA, items[i])

        await timed(store, "replace_status", range(half), replace_status, in_flight=1)
        items.clear()

        times, cpu = [], []
        listed: list[dict[str, Any]] = []
        for _ in range(5):
            listed.clear()
            cpu_before = await store._read(time.thread_time)
            start = time.perf_counter()
            listed, rv = await store.list(REPLICA)
            times.append(time.perf_counter() - start)
            cpu.append(await store._read(time.thread_time) - cpu_before)
        row(
            f"list {len(listed):,} objects",
            f"{statistics.median(times) * 1e3:>8.1f} ms median of 5 "
            f"(min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f}), "
            f"store-thread CPU {statistics.median(cpu) * 1e3:.1f} ms; resourceVersion {rv}",
        )
        bodies = [orjson.dumps(item) for item in listed]
        del listed
        gc.disable()
        start = time.perf_counter()
        decoded = [orjson.loads(body) for body in bodies]
        row("  of which decoding the JSON alone", f"{(time.perf_counter() - start) * 1e3:>8.1f} ms")
        gc.enable()
        del decoded
        times.clear()
        for _ in range(5):
            start = time.perf_counter()
            some, _ = await store.list(REPLICA, namespace="ns-3")
            times.append(time.perf_counter() - start)
        row(
            f"list one namespace ({len(some):,})",
            f"{statistics.median(times) * 1e3:>8.1f} ms median",
        )
    size = sum(p.stat().st_size for p in workdir.iterdir() if p.name.startswith("bench.db"))
    row("on-disk size after close", f"{size / 1e6:>8.2f} MB ({size / len(bodies):,.0f} B/object)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aviator-bench-") as tmp:
        asyncio.run(run(args.objects, Path(tmp)))


if __name__ == "__main__":
    main()
