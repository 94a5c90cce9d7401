"""The engine model: admission, a continuous-batching scheduler and the timeline of each sequence.

Pure and synchronous. Time comes from an injected ``Clock``; nothing here sleeps, awaits, or knows
about HTTP. The asyncio shell (``driver.py``) calls ``add``/``abort``/``advance`` and arms a timer
for ``next_deadline()``; tests drive the same calls with a fake clock.

The model is a discrete-event simulation in *simulated* time:

- ``add`` admits a sequence if fewer than ``max_num_seqs`` run and nobody waits; otherwise it joins
  a FIFO waiting queue of at most ``max_waiting`` (beyond that: ``QueueFull``).
- A running sequence emits its first token ``LatencyModel.prefill_seconds`` after it was scheduled,
  then one token every ``LatencyModel.decode_seconds``, until it has ``max_output_tokens``.
- A finished or aborted sequence frees its slot at that simulated instant, and the head of the
  waiting queue is scheduled at the same instant. So TTFT = queueing + prefill, and e2e =
  TTFT + (n - 1) * ITL, exactly, however late the shell's timer fires.

Events are processed in time order (ties by sequence id), so a later latency model whose
durations depend on the batch (``num_running``) sees the batch as it was at that instant.

Where the next features plug in (extensions, not rewrites):

- Paged KV cache: ``_blocks`` already tracks ``BLOCK_SIZE``-token blocks per sequence; admission
  gains a "blocks free" condition next to the slot count, and a sequence that cannot grow is
  preempted (status back to WAITING, ``num_preemptions`` counted by the observer).
- Prefix caching: ``Sequence.num_cached_tokens`` is filled at admission from a block-hash index and
  passed to the latency model, which charges prefill only for uncached tokens.
- Chunked prefill and ITL-vs-batch curves: other ``LatencyModel`` implementations; the protocol
  already receives the sequence and the running batch size.
"""

from __future__ import annotations

import enum
import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from aviator.api.errors import ApiError
from aviator.sim.options import BLOCK_SIZE

__all__ = [
    "Clock",
    "ConstantLatency",
    "EngineObserver",
    "FinishReason",
    "LatencyModel",
    "NullObserver",
    "QueueFull",
    "Scheduler",
    "Sequence",
    "SequenceStatus",
    "ServiceUnavailable",
]

Clock = Callable[[], float]
"""Monotonic seconds."""


class ServiceUnavailable(ApiError):
    """The engine cannot take the request now (503)."""

    code, reason = 503, "ServiceUnavailable"


class QueueFull(ServiceUnavailable):
    """The waiting queue is at ``max_waiting``."""


class FinishReason(enum.StrEnum):
    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False, slots=True)
class Sequence:
    """One request's journey through the engine. Times are simulated clock readings (seconds)."""

    seq_id: int
    num_prompt_tokens: int
    max_output_tokens: int
    """Tokens this sequence produces before it ends with ``end_reason``."""
    end_reason: FinishReason
    arrival_time: float
    status: SequenceStatus = SequenceStatus.WAITING
    num_output_tokens: int = 0
    num_cached_tokens: int = 0
    """Prompt tokens served from the prefix cache (always 0 until prefix caching lands)."""
    scheduled_time: float | None = None
    first_token_time: float | None = None
    last_token_time: float | None = None
    finished_time: float | None = None
    finish_reason: FinishReason | None = None
    _next_time: float = field(default=0.0, repr=False)
    _next_interval: float = field(default=0.0, repr=False)
    _blocks: int = field(default=0, repr=False)

    @property
    def finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def num_tokens(self) -> int:
        """Prompt plus output tokens so far: what the sequence holds in the KV cache."""
        return self.num_prompt_tokens + self.num_output_tokens


class LatencyModel(Protocol):
    """How long the engine takes. Durations are seconds of simulated time."""

    def prefill_seconds(self, seq: Sequence, *, num_running: int) -> float:
        """From being scheduled to the first token."""
        ...

    def decode_seconds(self, seq: Sequence, *, num_running: int) -> float:
        """From one output token of ``seq`` to the next."""
        ...


@dataclass(frozen=True, slots=True)
class ConstantLatency:
    """Fixed prefill (TTFT after scheduling) and inter-token latency, whatever the load."""

    ttft_s: float
    itl_s: float

    def prefill_seconds(self, seq: Sequence, *, num_running: int) -> float:
        return self.ttft_s

    def decode_seconds(self, seq: Sequence, *, num_running: int) -> float:
        return self.itl_s


class EngineObserver(Protocol):
    """What the engine reports as it runs (metrics implement it). Called synchronously."""

    def on_scheduled(self, seq: Sequence) -> None:
        """``seq`` left the waiting queue (or never entered it) and starts prefill."""

    def on_first_token(self, seq: Sequence) -> None: ...

    def on_decode(self, seq: Sequence, *, count: int, interval: float) -> None:
        """``count`` more tokens of ``seq``, each ``interval`` seconds after the previous one."""

    def on_finished(self, seq: Sequence) -> None:
        """``seq`` ended (its ``finish_reason`` says how, ``abort`` included)."""

    def on_state(self, *, num_running: int, num_waiting: int, kv_cache_usage: float) -> None:
        """The scheduler's gauges after every public call that may have changed them."""


class NullObserver:
    def on_scheduled(self, seq: Sequence) -> None:
        pass

    def on_first_token(self, seq: Sequence) -> None:
        pass

    def on_decode(self, seq: Sequence, *, count: int, interval: float) -> None:
        pass

    def on_finished(self, seq: Sequence) -> None:
        pass

    def on_state(self, *, num_running: int, num_waiting: int, kv_cache_usage: float) -> None:
        pass


def _blocks(num_tokens: int) -> int:
    return -(-num_tokens // BLOCK_SIZE)


class Scheduler:
    """Admission, waiting queue and token timelines (see the module docstring)."""

    def __init__(
        self,
        *,
        max_num_seqs: int,
        max_waiting: int,
        latency: LatencyModel,
        clock: Clock,
        kv_cache_blocks: int,
        observer: EngineObserver | None = None,
    ) -> None:
        if max_num_seqs < 1 or max_waiting < 0 or kv_cache_blocks < 1:
            raise ValueError("need max_num_seqs >= 1, max_waiting >= 0, kv_cache_blocks >= 1")
        self._max_num_seqs = max_num_seqs
        self._max_waiting = max_waiting
        self._latency = latency
        self._clock = clock
        self._kv_cache_blocks = kv_cache_blocks
        self._observer: EngineObserver = observer if observer is not None else NullObserver()
        self._next_id = 0
        self._waiting: deque[Sequence] = deque()
        self._running: dict[int, Sequence] = {}
        self._events: list[tuple[float, int, Sequence]] = []  # (next token time, seq_id, seq)
        self._changed: dict[int, Sequence] = {}
        self._used_blocks = 0

    # -- reading

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def kv_cache_usage(self) -> float:
        """Blocks held by running sequences over the nominal capacity, capped at 1."""
        return min(1.0, self._used_blocks / self._kv_cache_blocks)

    def next_deadline(self) -> float | None:
        """When ``advance`` next has something to do, or ``None`` when idle."""
        events = self._events
        while events and events[0][2].status is not SequenceStatus.RUNNING:
            heapq.heappop(events)  # aborted while an event was pending
        return events[0][0] if events else None

    # -- changing

    def add(
        self,
        *,
        num_prompt_tokens: int,
        max_output_tokens: int,
        end_reason: FinishReason,
    ) -> Sequence:
        """Admit a new sequence (running or waiting). Raises ``QueueFull``."""
        if num_prompt_tokens < 0 or max_output_tokens < 1:
            raise ValueError("need num_prompt_tokens >= 0 and max_output_tokens >= 1")
        now = self._clock()
        self._process(now)  # a slot freed in the past must count before this arrival
        busy = bool(self._waiting) or len(self._running) >= self._max_num_seqs
        if busy and len(self._waiting) >= self._max_waiting:
            self._report_state()
            raise QueueFull(
                f"the waiting queue is full ({self._max_waiting} requests); retry later"
            )
        self._next_id += 1
        seq = Sequence(
            seq_id=self._next_id,
            num_prompt_tokens=num_prompt_tokens,
            max_output_tokens=max_output_tokens,
            end_reason=end_reason,
            arrival_time=now,
        )
        self._waiting.append(seq)
        self._schedule(now)
        self._report_state()
        return seq

    def abort(self, seq: Sequence) -> None:
        """End ``seq`` now (client gone, shutdown); frees its slot. No-op when finished."""
        if seq.finished:
            return
        now = self._clock()
        if seq.status is SequenceStatus.WAITING:
            self._waiting.remove(seq)
            self._end(seq, now, FinishReason.ABORT)
        else:
            self._process(now)
            if not seq.finished:
                self._end(seq, now, FinishReason.ABORT)
                self._schedule(now)
        self._report_state()

    def abort_all(self) -> list[Sequence]:
        """Abort every sequence, waiting ones first (so none is scheduled); return them."""
        now = self._clock()
        aborted = list(self._waiting)
        self._waiting.clear()
        for seq in aborted:
            self._end(seq, now, FinishReason.ABORT)
        running = list(self._running.values())
        for seq in running:
            self._end(seq, now, FinishReason.ABORT)
        self._events.clear()
        self._report_state()
        return aborted + running

    def advance(self) -> list[Sequence]:
        """Process everything due by now. Return the sequences that produced tokens or finished
        since the previous call (each once, in the order they first changed)."""
        self._process(self._clock())
        self._report_state()
        changed = list(self._changed.values())
        self._changed.clear()
        return changed

    # -- inside

    def _process(self, now: float) -> None:
        events = self._events
        while events and events[0][0] <= now:
            at, _, seq = heapq.heappop(events)
            if seq.status is SequenceStatus.RUNNING and at == seq._next_time:
                self._emit(seq, at, now)

    def _emit(self, seq: Sequence, at: float, now: float) -> None:
        """Emit the token of ``seq`` due at ``at``, then its following ones for as long as ``seq``
        stays the earliest event due by ``now``; finish it or queue its next token."""
        observer = self._observer
        events = self._events
        decode = self._latency.decode_seconds
        running = self._running
        seq_id = seq.seq_id
        self._changed.setdefault(seq_id, seq)
        interval = seq._next_interval
        run, run_interval = 0, 0.0  # equal consecutive intervals, reported to the observer at once
        finished = False
        nxt = at
        while True:
            if seq.num_output_tokens == 0:
                seq.first_token_time = at
                seq.num_output_tokens = 1
                observer.on_first_token(seq)
            else:
                if run and interval != run_interval:
                    observer.on_decode(seq, count=run, interval=run_interval)
                    run = 0
                run += 1
                run_interval = interval
                seq.num_output_tokens += 1
            if seq.num_output_tokens >= seq.max_output_tokens:
                finished = True
                break
            interval = decode(seq, num_running=len(running))
            nxt = at + interval
            if nxt > now:
                break
            if events:
                top = events[0]
                if top[0] < nxt or (top[0] == nxt and top[1] < seq_id):
                    break  # another sequence's event comes first
            at = nxt
        seq.last_token_time = at
        if run:
            observer.on_decode(seq, count=run, interval=run_interval)
        blocks = _blocks(seq.num_tokens)
        self._used_blocks += blocks - seq._blocks
        seq._blocks = blocks
        if finished:
            self._end(seq, at, seq.end_reason)
            self._schedule(at)
        else:
            seq._next_time = nxt
            seq._next_interval = interval
            heapq.heappush(events, (nxt, seq_id, seq))

    def _schedule(self, at: float) -> None:
        """Move waiting sequences into free slots at simulated time ``at``."""
        while self._waiting and len(self._running) < self._max_num_seqs:
            seq = self._waiting.popleft()
            self._running[seq.seq_id] = seq
            seq.status = SequenceStatus.RUNNING
            seq.scheduled_time = at
            seq._blocks = _blocks(seq.num_prompt_tokens)
            self._used_blocks += seq._blocks
            self._observer.on_scheduled(seq)
            prefill = self._latency.prefill_seconds(seq, num_running=len(self._running))
            seq._next_time = at + prefill
            heapq.heappush(self._events, (seq._next_time, seq.seq_id, seq))

    def _end(self, seq: Sequence, at: float, reason: FinishReason) -> None:
        if self._running.pop(seq.seq_id, None) is not None:
            self._used_blocks -= seq._blocks
        seq._blocks = 0
        seq.status = SequenceStatus.FINISHED
        seq.finished_time = at
        seq.finish_reason = reason
        self._changed.setdefault(seq.seq_id, seq)
        self._observer.on_finished(seq)

    def _report_state(self) -> None:
        self._observer.on_state(
            num_running=len(self._running),
            num_waiting=len(self._waiting),
            kv_cache_usage=self.kv_cache_usage,
        )
