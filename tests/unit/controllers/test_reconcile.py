import asyncio

from aviator.controllers.reconcile import Controller, Result, TerminalError
from aviator.settings import ControllerSettings

SETTINGS = ControllerSettings(workers=4, backoff_base_s=0.01, backoff_max_s=0.02)


class Flaky:
    def __init__(self, fail_times: int) -> None:
        self.fail_times = fail_times
        self.calls: list[str] = []
        self.running: set[str] = set()
        self.overlap = False
        self.done = asyncio.Event()

    async def reconcile(self, key: str) -> Result:
        if key in self.running:
            self.overlap = True
        self.running.add(key)
        try:
            await asyncio.sleep(0.001)
            self.calls.append(key)
            if len(self.calls) <= self.fail_times:
                raise RuntimeError("transient")
            self.done.set()
            return Result()
        finally:
            self.running.discard(key)


async def run_until(controller: Controller[str], event: asyncio.Event) -> None:
    task = asyncio.create_task(controller.run())
    try:
        await asyncio.wait_for(event.wait(), 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_errors_are_retried_with_backoff_until_success() -> None:
    rec = Flaky(fail_times=3)
    controller: Controller[str] = Controller(name="t", reconciler=rec, settings=SETTINGS)
    controller.queue.add("k")
    await run_until(controller, rec.done)
    assert rec.calls == ["k"] * 4
    assert controller.stats.errors == 3
    assert controller.queue.failures("k") == 0


async def test_one_key_is_never_reconciled_concurrently() -> None:
    rec = Flaky(fail_times=0)
    controller: Controller[str] = Controller(name="t", reconciler=rec, settings=SETTINGS)
    task = asyncio.create_task(controller.run())
    for _ in range(50):
        controller.queue.add("k")
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not rec.overlap
    assert 1 <= len(rec.calls) < 50


async def test_terminal_errors_are_not_retried_and_requeue_after_is_honoured() -> None:
    calls: list[str] = []
    second = asyncio.Event()

    class Rec:
        async def reconcile(self, key: str) -> Result:
            calls.append(key)
            if key == "bad":
                raise TerminalError("no")
            if calls.count("later") == 2:
                second.set()
            return Result(requeue_after=0.01)

    controller: Controller[str] = Controller(name="t", reconciler=Rec(), settings=SETTINGS)
    controller.queue.add("bad")
    controller.queue.add("later")
    await run_until(controller, second)
    assert calls.count("bad") == 1
