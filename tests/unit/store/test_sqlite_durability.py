"""A writer killed with SIGKILL mid-stream loses none of the writes it had acknowledged."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from aviator.api.kinds import MODEL_DEPLOYMENT
from aviator.settings import StoreSettings
from aviator.store import SqliteStore

from .helpers import md, rv

# The child writes forever, several writes in flight, and prints "name rv" for each write
# only after the store returned it (the acknowledgement a client would have received).
CHILD = """
import asyncio, sys
from pathlib import Path
from aviator.api.kinds import MODEL_DEPLOYMENT
from aviator.settings import StoreSettings
from aviator.store.sqlite import SqliteStore

async def one(store, i):
    obj = await store.create(MODEL_DEPLOYMENT, {
        "metadata": {"name": f"m{i}", "namespace": "default"}, "spec": {"engine": "sim"}})
    print(f"m{i} {obj['metadata']['resourceVersion']}", flush=True)
    obj = await store.replace_status(MODEL_DEPLOYMENT, {**obj, "status": {"readyReplicas": i}})
    print(f"m{i} {obj['metadata']['resourceVersion']}", flush=True)

async def main():
    store = await SqliteStore.open(Path(sys.argv[1]), settings=StoreSettings())
    i = 0
    while True:
        await asyncio.gather(*(one(store, i + k) for k in range(8)))
        i += 8

asyncio.run(main())
"""

ACKS_BEFORE_KILL = 300


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
async def test_every_acknowledged_write_survives_sigkill(db_path: Path) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(db_path), stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    acked: dict[str, int] = {}
    try:
        async with asyncio.timeout(30):
            while len(acked) < ACKS_BEFORE_KILL:
                line = await child.stdout.readline()
                assert line, f"the writer exited early with {await child.wait()}"
                name, version = line.decode().split()
                acked[name] = max(acked.get(name, 0), int(version))
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    assert child.returncode == -signal.SIGKILL
    # Lines written before the kill but not yet read are acknowledgements too.
    for text in (await child.stdout.read()).decode().splitlines():
        if len(parts := text.split()) == 2:
            acked[parts[0]] = max(acked.get(parts[0], 0), int(parts[1]))

    async with await SqliteStore.open(db_path, settings=StoreSettings()) as store:
        items, _ = await store.list(MODEL_DEPLOYMENT)
        stored = {item["metadata"]["name"]: item for item in items}
        missing = sorted(set(acked) - set(stored))
        assert not missing, f"acknowledged but lost: {missing[:10]}"
        behind = [n for n, v in acked.items() if rv(stored[n]) < v]
        assert not behind, f"older than acknowledged: {behind[:10]}"
        assert int(store.resource_version) >= max(acked.values())
        fresh = await store.create(MODEL_DEPLOYMENT, md("after-crash"))
        assert rv(fresh) == int(store.resource_version) > max(acked.values())
