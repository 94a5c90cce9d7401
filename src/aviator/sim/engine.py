"""The engine model: admission, continuous batching, a paged KV cache with prefix caching, and the
timeline of every sequence.

Pure and synchronous. Time comes from an injected ``Clock``; nothing here sleeps, awaits, or knows
about HTTP. The asyncio shell (``driver.py``) calls ``add``/``abort``/``advance`` and arms a timer
for ``next_deadline()``; tests drive the same calls with a fake clock. Events are processed in
simulated-time order, so timelines are exact however late the shell's timer fires.

Two disciplines share admission, the waiting queue, the KV cache and the observer reports:

- ``Scheduler`` (constant latencies, ``LatencyModel``): each running sequence has a timeline of
  its own. Its first token comes ``prefill_seconds`` after it was scheduled, then one token every
  ``decode_seconds``. TTFT = queueing + prefill and e2e = TTFT + (n - 1) · ITL, exactly.
- ``StepScheduler`` (a device profile, ``StepModel``): vLLM V1's loop. One engine step at a time;
  each step schedules the running sequences in order (one token for a decoding sequence, a chunk
  of the prompt for one in prefill), then admits waiting ones, FIFO, while the token budget
  (``max_num_batched_tokens``), ``max_num_seqs`` and free blocks allow. A prompt longer than the
  budget left is prefilled in chunks over several steps (chunked prefill). The step lasts
  ``StepModel.step_seconds`` of the batch it carries; at its end every sequence whose tokens are
  all computed samples one token. So ITL is the step time of the current batch (it grows with the
  batch, and jumps when a prefill chunk shares the step) and TTFT = request overhead + queueing +
  the steps that prefill the *uncached* part of the prompt.

Common rules:

- ``add`` queues a sequence (FIFO). The queue is bounded: an arrival is refused with
  ``QueueFull`` when ``max_waiting`` sequences wait already and the running and waiting ones
  together fill every slot.
- KV cache: a sequence holds ``ceil(tokens / BLOCK_SIZE)`` blocks of a ``BlockPool`` (see
  ``kvcache``). Admission looks up the longest cached prefix of its full blocks (at most
  ``tokens - 1`` tokens: the last one is always recomputed), takes those blocks and allocates the
  rest; it waits when too few blocks are free (head-of-line, like vLLM's FCFS policy). Full blocks
  are indexed in the cache once their KV is computed: prompt blocks and generated ones alike.
- Preemption (vLLM's recompute mode): a running sequence that needs a block when none is free
  preempts the most recently admitted running sequence (possibly itself): that one drops its
  blocks, keeps the tokens it produced, goes back to the *front* of the waiting queue and is
  prefilled again (mostly from the cache, if its blocks were not evicted meanwhile) when admitted.
- A sequence's ``num_cached_tokens`` (reported as ``usage.prompt_tokens_details.cached_tokens``)
  and the prefix-cache counters are set at its first admission only, as in vLLM.
- A finished or aborted sequence releases its blocks at that simulated instant.
"""

from __future__ import annotations

import enum
import heapq
import math
from collections import deque
from collections.abc import Callable, Iterator
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from aviator.api.errors import ApiError
from aviator.sim.kvcache import NONE_HASH, Block, BlockPool, hash_blocks
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
    "StepBatch",
    "StepModel",
    "StepScheduler",
    "new_scheduler",
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
    """Prompt tokens found in the prefix cache at the first admission (a multiple of
    ``BLOCK_SIZE``)."""
    num_computed_tokens: int = 0
    """Tokens whose KV the engine holds computed (reset by preemption)."""
    num_preemptions: int = 0
    scheduled_time: float | None = None
    """The first admission (a preempted sequence keeps it)."""
    first_token_time: float | None = None
    last_token_time: float | None = None
    finished_time: float | None = None
    finish_reason: FinishReason | None = None
    _ready_time: float = field(default=0.0, repr=False)
    _next_time: float = field(default=0.0, repr=False)
    _next_interval: float = field(default=0.0, repr=False)
    _gen: int = field(default=0, repr=False)
    _blocks: list[Block] = field(default_factory=list, repr=False)
    _hashes: list[int] = field(default_factory=list, repr=False)
    """Chained hashes of the sequence's first full blocks, extended as blocks fill."""
    _ids: list[int] | None = field(default=None, repr=False)
    """Token ids from position ``_ids_base`` on (the prompt's partial last block, then the
    answer), to hash the blocks that are not full yet; None: no ids, no caching past the prompt."""
    _ids_base: int = field(default=0, repr=False)
    _num_cached_blocks: int = field(default=0, repr=False)
    """Leading blocks of ``_blocks`` already offered to the prefix cache."""
    _cache_at: float = field(default=math.inf, repr=False)
    """Computed tokens at which the next block is full and can be cached (inf: never)."""

    @property
    def finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def num_tokens(self) -> int:
        """Prompt plus output tokens so far."""
        return self.num_prompt_tokens + self.num_output_tokens

    @property
    def num_blocks(self) -> int:
        """KV-cache blocks the sequence holds now."""
        return len(self._blocks)


class LatencyModel(Protocol):
    """Per-sequence durations for ``Scheduler``, in seconds of simulated time."""

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


@dataclass(frozen=True, slots=True)
class StepBatch:
    """What one engine step computes."""

    num_seqs: int
    """Sequences in the step (decoding and prefilling)."""
    num_decode: int
    """Sequences computing one token each."""
    decode_context_tokens: int
    """KV-cache tokens the decoding sequences hold together (what their attention reads)."""
    prefill_tokens: int
    """Prompt tokens computed by the prefill chunks of the step."""
    prefill_attention: int
    """Sum of ``n·(n + 2h)`` over the chunks, ``n`` new tokens after ``h`` computed ones: the
    causal-attention work of the chunks (it adds up to ``n²`` over the chunks of one prompt)."""


@runtime_checkable
class StepModel(Protocol):
    """Step durations for ``StepScheduler``, in seconds of simulated time."""

    @property
    def request_overhead_s(self) -> float:
        """From a request's arrival to when the scheduler may first see it (API server,
        tokenisation)."""
        ...

    def step_seconds(self, batch: StepBatch) -> float:
        """How long one step computing ``batch`` takes."""
        ...


class EngineObserver(Protocol):
    """What the engine reports as it runs (metrics implement it). Called synchronously."""

    def on_scheduled(self, seq: Sequence) -> None:
        """``seq`` is admitted for the first time (``num_cached_tokens`` is set)."""

    def on_first_token(self, seq: Sequence) -> None: ...

    def on_decode(self, seq: Sequence, *, count: int, interval: float) -> None:
        """``count`` more tokens of ``seq``, each ``interval`` seconds after the previous one."""

    def on_preempted(self, seq: Sequence) -> None:
        """``seq`` lost its KV blocks and went back to the waiting queue."""

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

    def on_preempted(self, seq: Sequence) -> None:
        pass

    def on_finished(self, seq: Sequence) -> None:
        pass

    def on_state(self, *, num_running: int, num_waiting: int, kv_cache_usage: float) -> None:
        pass


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _block_hash(seq: Sequence, index: int) -> int | None:
    """The hash of ``seq``'s block ``index`` (computed once, in order), or None when its token ids
    are unknown or the block is not full."""
    hashes = seq._hashes
    if index < len(hashes):
        return hashes[index]
    ids = seq._ids
    if ids is None or index != len(hashes):
        return None
    start = index * BLOCK_SIZE - seq._ids_base
    chunk = ids[start : start + BLOCK_SIZE]
    if len(chunk) < BLOCK_SIZE:
        return None
    block_hash = hash((hashes[-1] if hashes else NONE_HASH, tuple(chunk)))
    hashes.append(block_hash)
    return block_hash


class _Engine:
    """What both disciplines share (see the module docstring)."""

    def __init__(
        self,
        *,
        max_num_seqs: int,
        max_waiting: int,
        clock: Clock,
        kv_cache_blocks: int,
        observer: EngineObserver | None,
        enable_prefix_caching: bool,
    ) -> None:
        if max_num_seqs < 1 or max_waiting < 0 or kv_cache_blocks < 1:
            raise ValueError("need max_num_seqs >= 1, max_waiting >= 0, kv_cache_blocks >= 1")
        self._max_num_seqs = max_num_seqs
        self._max_waiting = max_waiting
        self._clock = clock
        self._pool = BlockPool(kv_cache_blocks, enable_caching=enable_prefix_caching)
        self._caching = enable_prefix_caching
        self._observer: EngineObserver = observer if observer is not None else NullObserver()
        self._next_id = 0
        self._waiting: deque[Sequence] = deque()
        self._running: dict[int, Sequence] = {}  # in admission order: the last is preempted first
        self._changed: dict[int, Sequence] = {}
        self._overhead = 0.0  # from arrival to when a sequence may be scheduled
        self.num_preemptions = 0

    # -- reading

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def kv_cache(self) -> BlockPool:
        """The block pool (read it; only the engine changes it)."""
        return self._pool

    @property
    def kv_cache_usage(self) -> float:
        """Share of KV-cache blocks held by running sequences (cached free blocks are free)."""
        return self._pool.usage

    def sequences(self) -> Iterator[Sequence]:
        """Running sequences in admission order, then waiting ones in queue order."""
        yield from self._running.values()
        yield from self._waiting

    def next_deadline(self) -> float | None:
        """When ``advance`` next has something to do, or ``None`` when idle."""
        raise NotImplementedError

    # -- changing

    def add(
        self,
        *,
        num_prompt_tokens: int,
        max_output_tokens: int,
        end_reason: FinishReason,
        prompt_token_ids: Seq[int] | None = None,
        output_token_ids: Seq[int] | None = None,
    ) -> Sequence:
        """Queue a new sequence and schedule what can be. Raises ``QueueFull``.

        With ``prompt_token_ids`` (and, for the blocks of the answer, ``output_token_ids``) the
        sequence takes part in prefix caching; without, it never hits nor fills the cache."""
        if num_prompt_tokens < 0 or max_output_tokens < 1:
            raise ValueError("need num_prompt_tokens >= 0 and max_output_tokens >= 1")
        if prompt_token_ids is not None and len(prompt_token_ids) != num_prompt_tokens:
            raise ValueError("prompt_token_ids must hold num_prompt_tokens ids")
        most = num_prompt_tokens + max_output_tokens - 1  # the last token's KV is never needed
        if _cdiv(most, BLOCK_SIZE) > self._pool.num_blocks:
            raise ValueError(
                f"{num_prompt_tokens} + {max_output_tokens} tokens can never fit in the KV cache "
                f"({self._pool.num_blocks} blocks of {BLOCK_SIZE})"
            )
        now = self._clock()
        self._process(now)  # what finished in the past must count before this arrival
        waiting = len(self._waiting)
        if waiting >= self._max_waiting and len(self._running) + waiting >= self._max_num_seqs:
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
            _ready_time=now + self._overhead,
        )
        if self._caching and prompt_token_ids is not None:
            seq._hashes = hash_blocks(prompt_token_ids)
            base = len(seq._hashes) * BLOCK_SIZE
            seq._ids_base = base
            seq._ids = [*prompt_token_ids[base:], *(output_token_ids or ())]
        self._waiting.append(seq)
        self._kick(now)
        self._report_state()
        return seq

    def abort(self, seq: Sequence) -> None:
        """End ``seq`` now (client gone, shutdown); frees its slot and blocks. No-op when
        finished."""
        if seq.finished:
            return
        now = self._clock()
        self._process(now)
        if not seq.finished:
            if seq.status is SequenceStatus.WAITING:
                self._waiting.remove(seq)
                self._end(seq, now, FinishReason.ABORT)
            else:
                self._end(seq, now, FinishReason.ABORT)
                self._kick(now)
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
        self._clear_pending()
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

    # -- what each discipline supplies

    def _process(self, now: float) -> None:
        raise NotImplementedError

    def _kick(self, now: float) -> None:
        """Something changed at ``now`` (an arrival, freed blocks): schedule what can be."""
        raise NotImplementedError

    def _clear_pending(self) -> None:
        raise NotImplementedError

    # -- KV cache

    def _admit(self, seq: Sequence, at: float, budget: int) -> int:
        """Admit the waiting ``seq`` with up to ``budget`` new tokens to compute: reuse its cached
        prefix, allocate blocks for the rest. Return the tokens to compute, 0 when the blocks do
        not fit (``seq`` stays waiting; the caller removes it from the queue otherwise)."""
        pool = self._pool
        hits: list[Block] = []
        if self._caching and (seq._hashes or seq._ids is not None):
            limit = (seq.num_tokens - 1) // BLOCK_SIZE  # the last token is always recomputed
            hashes = seq._hashes
            if len(hashes) < limit:  # blocks of the answer, back from a preemption
                for index in range(len(hashes), limit):
                    if _block_hash(seq, index) is None:
                        break
            hits = pool.lookup(hashes[:limit])
        computed = len(hits) * BLOCK_SIZE
        new = min(seq.num_tokens - computed, budget)
        need = _cdiv(computed + new, BLOCK_SIZE) - len(hits)
        if need > pool.num_free or (hits and not pool.can_allocate(need, hits)):
            return 0
        if hits:
            pool.take(hits)
        hits.extend(pool.allocate(need))
        seq._blocks = hits
        seq._num_cached_blocks = computed // BLOCK_SIZE
        seq._cache_at = computed + BLOCK_SIZE if self._caching else math.inf
        seq.num_computed_tokens = computed
        seq.status = SequenceStatus.RUNNING
        self._running[seq.seq_id] = seq
        if seq.scheduled_time is None:
            seq.scheduled_time = at
            seq.num_cached_tokens = computed
            self._observer.on_scheduled(seq)
        return new

    def _grow(self, seq: Sequence, tokens: int) -> bool:
        """Make the running ``seq`` hold blocks for ``tokens`` tokens, preempting the most
        recently admitted sequences while too few blocks are free. False when ``seq`` itself had
        to be preempted."""
        need = -(-tokens // BLOCK_SIZE) - len(seq._blocks)
        if need <= 0:
            return True
        pool = self._pool
        while pool.num_free < need:
            victim = next(reversed(self._running.values()))
            self._preempt(victim)
            if victim is seq:
                return False
        seq._blocks.extend(pool.allocate(need))
        return True

    def _cache_computed(self, seq: Sequence) -> None:
        """Offer ``seq``'s blocks that became full of computed tokens to the prefix cache, and
        note when the next one will be full (never, when its token ids are unknown)."""
        full = min(seq.num_computed_tokens // BLOCK_SIZE, len(seq._blocks))
        index = seq._num_cached_blocks
        blocks, pool = seq._blocks, self._pool
        while index < full:
            block_hash = _block_hash(seq, index)
            if block_hash is None:
                seq._num_cached_blocks = index
                seq._cache_at = math.inf
                return
            pool.cache(blocks[index], block_hash)
            index += 1
        seq._num_cached_blocks = index
        seq._cache_at = (index + 1) * BLOCK_SIZE

    def _preempt(self, seq: Sequence) -> None:
        del self._running[seq.seq_id]
        self._pool.release(seq._blocks)
        seq._blocks = []
        seq._num_cached_blocks = 0
        seq._cache_at = math.inf
        seq.num_computed_tokens = 0
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        seq._gen += 1
        self._waiting.appendleft(seq)
        self.num_preemptions += 1
        self._observer.on_preempted(seq)

    def _end(self, seq: Sequence, at: float, reason: FinishReason) -> None:
        if self._running.pop(seq.seq_id, None) is not None:
            self._pool.release(seq._blocks)
        seq._blocks = []
        seq._ids = None
        seq.status = SequenceStatus.FINISHED
        seq.finished_time = at
        seq.finish_reason = reason
        self._changed.setdefault(seq.seq_id, seq)
        self._observer.on_finished(seq)

    def _report_state(self) -> None:
        self._observer.on_state(
            num_running=len(self._running),
            num_waiting=len(self._waiting),
            kv_cache_usage=self._pool.usage,
        )


class Scheduler(_Engine):
    """Per-sequence timelines from a ``LatencyModel`` (see the module docstring)."""

    def __init__(
        self,
        *,
        max_num_seqs: int,
        max_waiting: int,
        latency: LatencyModel,
        clock: Clock,
        kv_cache_blocks: int,
        observer: EngineObserver | None = None,
        enable_prefix_caching: bool = True,
    ) -> None:
        super().__init__(
            max_num_seqs=max_num_seqs,
            max_waiting=max_waiting,
            clock=clock,
            kv_cache_blocks=kv_cache_blocks,
            observer=observer,
            enable_prefix_caching=enable_prefix_caching,
        )
        self._latency = latency
        self._events: list[tuple[float, int, int, Sequence]] = []  # (time, seq_id, gen, seq)

    def next_deadline(self) -> float | None:
        events = self._events
        while events:
            _, _, gen, seq = events[0]
            if seq.status is SequenceStatus.RUNNING and gen == seq._gen:
                return events[0][0]
            heapq.heappop(events)  # aborted or preempted while the event was pending
        return None

    def _process(self, now: float) -> None:
        events = self._events
        while events and events[0][0] <= now:
            at, _, gen, seq = heapq.heappop(events)
            if seq.status is SequenceStatus.RUNNING and gen == seq._gen:
                self._emit(seq, at, now)

    def _kick(self, now: float) -> None:
        self._schedule(now)

    def _clear_pending(self) -> None:
        self._events.clear()

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
        finished = preempted = False
        nxt = at
        outputs, most = seq.num_output_tokens, seq.max_output_tokens
        tokens = seq.num_prompt_tokens + outputs  # all computed by the time a token is due
        room = len(seq._blocks) * BLOCK_SIZE
        cache_at = seq._cache_at
        while True:
            if tokens >= cache_at:
                seq.num_computed_tokens = tokens
                self._cache_computed(seq)
                cache_at = seq._cache_at
            if outputs == 0:
                seq.first_token_time = at
                outputs = seq.num_output_tokens = 1
                observer.on_first_token(seq)
            else:
                if run and interval != run_interval:
                    observer.on_decode(seq, count=run, interval=run_interval)
                    run = 0
                run += 1
                run_interval = interval
                outputs = seq.num_output_tokens = outputs + 1
            tokens += 1
            if outputs >= most:
                finished = True
                break
            if tokens > room:  # the new token's KV needs one more block
                seq.num_computed_tokens = tokens - 1
                if not self._grow(seq, tokens):
                    preempted = True
                    break
                room = len(seq._blocks) * BLOCK_SIZE
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
        if finished:
            self._end(seq, at, seq.end_reason)
            self._schedule(at)
        elif not preempted:
            seq.num_computed_tokens = tokens - 1
            seq._next_time = nxt
            seq._next_interval = interval
            heapq.heappush(events, (nxt, seq_id, seq._gen, seq))

    def _schedule(self, at: float) -> None:
        """Admit waiting sequences, FIFO, while slots and blocks allow, at simulated time ``at``:
        the whole prompt at once (constant latencies have no steps to chunk it into)."""
        waiting, running = self._waiting, self._running
        while waiting and len(running) < self._max_num_seqs:
            seq = waiting[0]
            if not self._admit(seq, at, seq.num_tokens):
                break
            waiting.popleft()
            nxt = at + self._latency.prefill_seconds(seq, num_running=len(running))
            seq._gen += 1
            seq._next_time = nxt
            if seq.last_token_time is not None:  # back from preemption: the stall is one interval
                seq._next_interval = nxt - seq.last_token_time
            heapq.heappush(self._events, (nxt, seq.seq_id, seq._gen, seq))


class StepScheduler(_Engine):
    """vLLM's step loop with chunked prefill, timed by a ``StepModel`` (see the module
    docstring)."""

    def __init__(
        self,
        *,
        max_num_seqs: int,
        max_waiting: int,
        latency: StepModel,
        clock: Clock,
        kv_cache_blocks: int,
        max_num_batched_tokens: int,
        observer: EngineObserver | None = None,
        enable_prefix_caching: bool = True,
    ) -> None:
        if max_num_batched_tokens < 1:
            raise ValueError("need max_num_batched_tokens >= 1")
        super().__init__(
            max_num_seqs=max_num_seqs,
            max_waiting=max_waiting,
            clock=clock,
            kv_cache_blocks=kv_cache_blocks,
            observer=observer,
            enable_prefix_caching=enable_prefix_caching,
        )
        self._latency = latency
        self._overhead = latency.request_overhead_s
        self._budget = max_num_batched_tokens
        self._batch: list[tuple[Sequence, int]] = []  # the step in flight: (sequence, new tokens)
        self._step_end: float | None = None
        self._idle_since = float("-inf")
        self.num_steps = 0

    def next_deadline(self) -> float | None:
        if self._step_end is not None:
            return self._step_end
        if self._waiting:
            return max(self._waiting[0]._ready_time, self._idle_since)
        return None

    def _process(self, now: float) -> None:
        while True:
            end = self._step_end
            if end is None:
                waiting = self._waiting
                if not waiting or waiting[0]._ready_time > now:
                    return
                if not self._start_step(max(waiting[0]._ready_time, self._idle_since)):
                    return
            elif end <= now:
                self._finish_step(end)
                self._start_step(end)
            else:
                return

    def _kick(self, now: float) -> None:
        if self._step_end is None:
            self._process(now)

    def _clear_pending(self) -> None:
        self._batch = []
        self._step_end = None

    def _start_step(self, at: float) -> bool:
        """Schedule the step starting at ``at``; False (idle) when there is nothing to compute."""
        budget = self._budget
        batch: list[tuple[Sequence, int]] = []
        num_decode = decode_context = prefill_tokens = prefill_attention = 0
        preemptions = self.num_preemptions
        for seq in list(self._running.values()):
            if budget == 0:
                break
            if seq.status is not SequenceStatus.RUNNING:
                continue  # preempted by one scheduled before it in this step
            computed = seq.num_computed_tokens
            new = min(seq.num_tokens - computed, budget)
            if not self._grow(seq, computed + new):
                continue
            batch.append((seq, new))
            budget -= new
            if new == 1 and seq.num_output_tokens and computed + 1 == seq.num_tokens:
                num_decode += 1
                decode_context += computed + 1
            else:
                prefill_tokens += new
                prefill_attention += new * (new + 2 * computed)
        # Like vLLM, a step that had to preempt admits nobody new (unless it would be empty).
        if self.num_preemptions == preemptions or not batch:
            waiting, running = self._waiting, self._running
            while waiting and budget > 0 and len(running) < self._max_num_seqs:
                seq = waiting[0]
                if seq._ready_time > at:
                    break
                new = self._admit(seq, at, budget)
                if not new:
                    break
                waiting.popleft()
                batch.append((seq, new))
                budget -= new
                computed = seq.num_computed_tokens
                if new == 1 and seq.num_output_tokens and computed + 1 == seq.num_tokens:
                    num_decode += 1
                    decode_context += computed + 1
                else:
                    prefill_tokens += new
                    prefill_attention += new * (new + 2 * computed)
        if not batch:
            self._step_end = None
            self._idle_since = at
            return False
        step = StepBatch(
            num_seqs=len(batch),
            num_decode=num_decode,
            decode_context_tokens=decode_context,
            prefill_tokens=prefill_tokens,
            prefill_attention=prefill_attention,
        )
        self._batch = batch
        self._step_end = at + self._latency.step_seconds(step)
        self.num_steps += 1
        return True

    def _finish_step(self, at: float) -> None:
        """The step in flight ends at ``at``: its sequences' tokens are computed; those with all
        their tokens computed sample one more."""
        batch, self._batch, self._step_end = self._batch, [], None
        observer, changed = self._observer, self._changed
        for seq, new in batch:
            if seq.status is not SequenceStatus.RUNNING:
                continue  # aborted during the step
            seq.num_computed_tokens = computed = seq.num_computed_tokens + new
            if computed >= seq._cache_at:
                self._cache_computed(seq)
            if computed < seq.num_tokens:
                continue  # more prompt to prefill
            changed.setdefault(seq.seq_id, seq)
            last = seq.last_token_time
            if last is None:
                seq.first_token_time = at
                seq.num_output_tokens = 1
                observer.on_first_token(seq)
            else:
                seq.num_output_tokens += 1
                observer.on_decode(seq, count=1, interval=at - last)
            seq.last_token_time = at
            if seq.num_output_tokens >= seq.max_output_tokens:
                self._end(seq, at, seq.end_reason)


def new_scheduler(
    *,
    latency: LatencyModel | StepModel,
    max_num_seqs: int,
    max_waiting: int,
    clock: Clock,
    kv_cache_blocks: int,
    max_num_batched_tokens: int | None = None,
    observer: EngineObserver | None = None,
    enable_prefix_caching: bool = True,
) -> Scheduler | StepScheduler:
    """The discipline ``latency`` calls for: steps for a ``StepModel`` (which need
    ``max_num_batched_tokens``), timelines otherwise."""
    if isinstance(latency, StepModel):
        if max_num_batched_tokens is None:
            raise ValueError("a StepModel needs max_num_batched_tokens")
        return StepScheduler(
            max_num_seqs=max_num_seqs,
            max_waiting=max_waiting,
            latency=latency,
            clock=clock,
            kv_cache_blocks=kv_cache_blocks,
            max_num_batched_tokens=max_num_batched_tokens,
            observer=observer,
            enable_prefix_caching=enable_prefix_caching,
        )
    return Scheduler(
        max_num_seqs=max_num_seqs,
        max_waiting=max_waiting,
        latency=latency,
        clock=clock,
        kv_cache_blocks=kv_cache_blocks,
        observer=observer,
        enable_prefix_caching=enable_prefix_caching,
    )
