"""The asyncio shell around the pure ``Scheduler``: one timer, and a waiter per request.

``AsyncEngine.submit`` adds a sequence and returns a ``Flight``; the request handler awaits
``Flight.wait()`` until its sequence has news (new tokens when streaming, the end otherwise).
There is no engine task: after every ``submit``/``abort`` and whenever the single timer fires, the
engine advances the scheduler to now, wakes the flights that changed and re-arms the timer for the
scheduler's next deadline. With zero latencies a request therefore completes inside ``submit``
and the handler never waits at all, which keeps the server cheap enough for gateway benchmarks.

Everything runs on the event loop's thread; nothing blocks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence as Seq

from aviator.sim.engine import (
    Clock,
    EngineObserver,
    FinishReason,
    LatencyModel,
    Scheduler,
    Sequence,
    ServiceUnavailable,
    StepModel,
    StepScheduler,
    new_scheduler,
)

__all__ = ["AsyncEngine", "Flight"]


class Flight:
    """One in-flight request as its HTTP handler sees it.

    Wake-ups are level-triggered: news that arrives while the handler is busy elsewhere (writing
    the previous chunk) makes the next ``wait`` return at once instead of being lost.
    """

    __slots__ = ("_news", "_waiter", "seq", "stream")

    def __init__(self, seq: Sequence, *, stream: bool) -> None:
        self.seq = seq
        self.stream = stream
        self._waiter: asyncio.Future[None] | None = None
        self._news = False

    @property
    def done(self) -> bool:
        return self.seq.finished

    async def wait(self) -> None:
        """Until the sequence has new tokens (streaming) or has ended."""
        if self._news or self.seq.finished:
            self._news = False
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None
            self._news = False

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is None:
            self._news = True
        elif not waiter.done():
            waiter.set_result(None)


class AsyncEngine:
    """Owns the scheduler (``Scheduler`` for a ``LatencyModel``, ``StepScheduler`` for a
    ``StepModel``) and drives it from the event loop.

    The scheduler's clock is ``clock`` but never behind the deadline of the last timer that fired:
    event loops may fire a timer slightly early (uvloop rounds to milliseconds), and the engine
    must then still see that deadline as reached.
    """

    def __init__(
        self,
        *,
        max_num_seqs: int,
        max_waiting: int,
        latency: LatencyModel | StepModel,
        kv_cache_blocks: int,
        max_num_batched_tokens: int | None = None,
        enable_prefix_caching: bool = True,
        observer: EngineObserver | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._clock = clock
        self._floor = 0.0
        self.scheduler: Scheduler | StepScheduler = new_scheduler(
            max_num_seqs=max_num_seqs,
            max_waiting=max_waiting,
            latency=latency,
            kv_cache_blocks=kv_cache_blocks,
            max_num_batched_tokens=max_num_batched_tokens,
            enable_prefix_caching=enable_prefix_caching,
            observer=observer,
            clock=self._now,
        )
        self._flights: dict[int, Flight] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._closed = False

    @property
    def num_flights(self) -> int:
        return len(self._flights)

    def submit(
        self,
        *,
        num_prompt_tokens: int,
        max_output_tokens: int,
        end_reason: FinishReason,
        stream: bool,
        prompt_token_ids: Seq[int] | None = None,
        output_token_ids: Seq[int] | None = None,
    ) -> Flight:
        """Start a request. Raises ``QueueFull`` or ``ServiceUnavailable`` (closed)."""
        if self._closed:
            raise ServiceUnavailable("the simulator is shutting down")
        seq = self.scheduler.add(
            num_prompt_tokens=num_prompt_tokens,
            max_output_tokens=max_output_tokens,
            end_reason=end_reason,
            prompt_token_ids=prompt_token_ids,
            output_token_ids=output_token_ids,
        )
        flight = Flight(seq, stream=stream)
        self._flights[seq.seq_id] = flight
        self._pump()
        return flight

    def abort(self, flight: Flight) -> None:
        """Give up on ``flight`` (its client went away): free its slot now."""
        if not flight.done:
            self.scheduler.abort(flight.seq)
            self._pump()
        self._flights.pop(flight.seq.seq_id, None)

    def close(self) -> None:
        """Abort everything and refuse new work; every waiting handler wakes up."""
        self._closed = True
        self._cancel_timer()
        self.scheduler.abort_all()
        self.scheduler.advance()
        flights = list(self._flights.values())
        self._flights.clear()
        for flight in flights:
            flight._wake()

    def _pump(self) -> None:
        flights = self._flights
        for seq in self.scheduler.advance():
            flight = flights.get(seq.seq_id)
            if flight is None:
                continue
            if seq.finished:
                del flights[seq.seq_id]
                flight._wake()
            elif flight.stream:
                flight._wake()
        self._arm()

    def _arm(self) -> None:
        deadline = self.scheduler.next_deadline()
        if deadline is None:
            self._cancel_timer()
            return
        if self._timer is not None:
            if self._timer_at <= deadline:
                return  # the armed timer fires first and re-arms
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer_at = deadline
        self._timer = loop.call_later(max(0.0, deadline - self._now()), self._on_timer)

    def _now(self) -> float:
        now = self._clock()
        return now if now > self._floor else self._floor

    def _on_timer(self) -> None:
        self._timer = None
        self._floor = max(self._floor, self._timer_at)
        self._pump()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
