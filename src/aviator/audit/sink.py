"""Audit records of a hot path, written by a child process: ``AuditSink``, the parent's side (the
child is ``aviator.audit.writer``).

Why a process: a gateway records every request it admits, and rendering the record (canonical
JSON), chaining it and inserting it into SQLite cost about a third of what the whole rest of
governance costs per request; in the gateway's own process that work also trades the GIL with
the event loop. ``AuditSink`` ships each record's *facts* — the number of a template (principal,
action, resource, decision, policies, reason: what repeats), the request id, the time in
microseconds, the token counts and the extra facts — to a child process (``python -m
aviator.audit.writer``) over a pipe, several records per write. The child renders each record with
the same ``RecordTemplate`` the in-process path uses (so the bytes chained are the same), and
commits each batch as it arrives, in one thread and one transaction (``log.write_batch``), which
chains it onto the file's head like any other writer (the plane's records and the gateway's
interleave in one chain).

Guarantees, as ``AuditLog``'s: a record is acknowledged when ``record``/``append`` returns; a
clean ``aclose`` closes the pipe and waits for the child, which writes everything it was sent
before it exits, so nothing acknowledged is lost. Records wait at most ``SEND_INTERVAL_S`` (2 ms)
in this process before they are sent, at most the settings' ``max_batch`` at a time; the child
commits each batch as it arrives. (Sent soon, not in big batches: a record's facts then die
while they are still in the gateway's caches; 50 ms batches cost its event loop about 4 % more
CPU per request than 2 ms ones, measured in docs/benchmarks.md.) ``pending`` counts records
sent or waiting to be sent that the child has not yet committed; a caller refuses work when it
reaches the settings' ``queue_bound`` (the disk, or the child, is behind): backpressure, never
silent loss.

If the child dies (killed, out of memory), the records it had not written are lost, as they
would be if the whole process died with a writer thread: the loss is logged with its count, and
a new child is started (at most one start per second) with the templates sent again. While
there is none, ``pending`` reports the bound, so callers refuse rather than acknowledge records
that could not be written.

Wire format, one line per frame (canonical JSON never holds a raw newline)::

    T[id, principal kind, principal id, source, action, resource, decision, [policies], reason]
    B[[template id, request id, time µs, prompt tokens|null, completion tokens|null, {extra}|null], ...]
    R<a whole record's canonical JSON>
    F                       (flush: answer once everything before it is committed)

and the child answers each line with ``<records committed so far>`` (``F<the same>`` to a flush).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import orjson

from aviator.api.principal import Principal
from aviator.audit.log import (
    AuditClosed,
    AuditLog,
    AuditUnavailable,
)
from aviator.audit.record import (
    AuditRecord,
    Decision,
    ExtraValue,
    RecordTemplate,
    Source,
    Stamps,
)
from aviator.settings import AuditSettings

__all__ = ["AuditSink", "LocalSink", "Sink", "template_of"]

log = logging.getLogger("aviator.audit.sink")

SEND_INTERVAL_S: Final = 0.002
"""Longest a record waits in the caller's process before it is sent to the child (see above)."""
_RESTART_MIN_S: Final = 1.0
"""Least time between two starts of the child."""
_STOP_TIMEOUT_S: Final = 30.0
"""How long ``aclose`` waits for the child to write what it was sent."""

Facts = tuple[int, str, int, int | None, int | None, Mapping[str, ExtraValue] | None]


class Sink:
    """Where a hot path's audit records go: ``AuditSink`` (a child process writes them) or
    ``LocalSink`` (an ``AuditLog`` in this process). A base class, not a protocol: compiled, a
    call through it is a native call (one per governed request), not a Python method call."""

    @property
    def pending(self) -> int:
        """Records acknowledged and not yet queued for writing (refuse work at the bound)."""
        raise NotImplementedError

    def template(
        self,
        principal: Principal,
        *,
        source: Source,
        action: str,
        resource: str,
        decision: Decision,
        policies: Iterable[str] = (),
        reason: str = "",
    ) -> int:
        """Register what a family of records shares; returns the number ``record`` takes."""
        raise NotImplementedError

    def record(
        self,
        template: int,
        *,
        request_id: str,
        micros: int,
        tokens: tuple[int, int] | None = None,
        extra: Mapping[str, ExtraValue] | None = None,
    ) -> None:
        """Acknowledge a record made from ``template`` (``micros``: microseconds since the
        epoch)."""
        raise NotImplementedError

    def append(self, record: AuditRecord) -> None:
        """Acknowledge a whole record."""
        raise NotImplementedError

    async def flush(self, timeout: float | None = None) -> None:
        """Return once every record acknowledged before the call is written."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Write every acknowledged record and close."""
        raise NotImplementedError


class _Templates:
    """Record templates by number, one number per distinct template however often it is
    registered (a caller's cache of the numbers may start over)."""

    __slots__ = ("_numbers", "by_number", "fields")

    def __init__(self) -> None:
        self.by_number: list[RecordTemplate] = []
        self.fields: list[TemplateFields] = []
        """What each was made of: ``(kind, id, source, action, resource, decision, policies,
        reason)``, as the writer process is sent it."""
        self._numbers: dict[TemplateFields, int] = {}

    def register(
        self,
        principal: Principal,
        *,
        source: Source,
        action: str,
        resource: str,
        decision: Decision,
        policies: Iterable[str],
        reason: str,
    ) -> tuple[int, bool]:
        """The template's number, and whether it is new (``ValueError`` for what
        ``AuditRecord`` refuses, checked once per template)."""
        policies = tuple(policies)
        fields: TemplateFields = (
            principal.kind,
            principal.id,
            source,
            action,
            resource,
            decision,
            policies,
            reason,
        )
        known = self._numbers.get(fields)
        if known is not None:
            return known, False
        self.by_number.append(template_of(fields))
        self.fields.append(fields)
        number = self._numbers[fields] = len(self.by_number) - 1
        return number, True


TemplateFields = tuple[str, str, str, str, str, str, tuple[str, ...], str]


def _template_frame(number: int, fields: TemplateFields) -> bytes:
    """The ``T`` frame that tells the writer process template ``number``."""
    return b"T" + orjson.dumps([number, *fields])


def template_of(fields: Sequence[Any]) -> RecordTemplate:
    """The ``RecordTemplate`` of ``_Templates`` fields (in this process or the writer's, which is
    sent them in ``T`` frames)."""
    kind, id_, source, action, resource, decision, policies, reason = fields
    return RecordTemplate(
        Principal(kind=kind, id=id_),
        source=source,
        action=action,
        resource=resource,
        decision=decision,
        policies=policies,
        reason=reason,
    )


class LocalSink(Sink):
    """``Sink`` over an ``AuditLog`` of this process (its writer thread): records are rendered
    here. For tests and for callers whose record rate does not matter."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit
        self._templates = _Templates()
        self._stamps = Stamps()

    @classmethod
    async def start(cls, path: Path, *, settings: AuditSettings | None = None) -> LocalSink:
        """Open the log at ``path`` (off the event loop: opening touches the disk)."""
        return cls(await asyncio.to_thread(AuditLog.open, path, settings=settings))

    @property
    def pending(self) -> int:
        return self.audit.pending

    def template(
        self,
        principal: Principal,
        *,
        source: Source,
        action: str,
        resource: str,
        decision: Decision,
        policies: Iterable[str] = (),
        reason: str = "",
    ) -> int:
        number, _ = self._templates.register(
            principal,
            source=source,
            action=action,
            resource=resource,
            decision=decision,
            policies=policies,
            reason=reason,
        )
        return number

    def record(
        self,
        template: int,
        *,
        request_id: str,
        micros: int,
        tokens: tuple[int, int] | None = None,
        extra: Mapping[str, ExtraValue] | None = None,
    ) -> None:
        data = self._templates.by_number[template].encode(
            request_id=request_id, time=self._stamps.at(micros), tokens=tokens, extra=extra
        )
        self.audit.append_json(data)

    def append(self, record: AuditRecord) -> None:
        self.audit.append(record)

    async def flush(self, timeout: float | None = None) -> None:
        await self.audit.aflush(timeout)

    async def aclose(self) -> None:
        await self.audit.aclose()


class AuditSink(Sink):
    """The caller's side: templates and records in, a child process writing them.

    Not thread-safe: one event loop owns it. Start with ``await AuditSink.start(path)``.
    """

    def __init__(self, path: Path, *, settings: AuditSettings, python: str) -> None:
        self.path = path
        self.settings = settings
        self._python = python
        self._templates = _Templates()
        """Sent to the child once each, and all again to a restarted child."""
        self._batch: list[Facts] = []
        self._frames: list[bytes] = []
        """Whole frames (``R``) waiting with the batch, in order."""
        self._timer: asyncio.TimerHandle | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._writing = False
        """A child runs and answers (``pending`` is asked on every request: a flag, not the
        process's return code)."""
        self._reader: asyncio.Task[None] | None = None
        self._sent = 0
        """Records handed to the current child."""
        self._committed = 0
        """Records the current child says it has committed."""
        self._waiting = 0
        """Records in ``_batch`` and ``_frames``."""
        self._flushes: collections.deque[asyncio.Future[int]] = collections.deque()
        """One per ``F`` frame sent and not yet answered, oldest first."""
        self._closing = False
        self._started_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    async def start(
        cls, path: Path, *, settings: AuditSettings | None = None, python: str | None = None
    ) -> AuditSink:
        """Start the child writing to ``path`` (created if needed); raises if it cannot open it.
        ``python``: the interpreter to run it with (this one by default)."""
        sink = cls(path, settings=settings or AuditSettings(), python=python or sys.executable)
        sink._loop = asyncio.get_running_loop()
        await sink._spawn()
        return sink

    # -- the caller's side -----------------------------------------------------------------------

    def template(
        self,
        principal: Principal,
        *,
        source: Source,
        action: str,
        resource: str,
        decision: Decision,
        policies: Iterable[str] = (),
        reason: str = "",
    ) -> int:
        """Register what a family of records shares; returns the number ``record`` takes.
        ``ValueError`` for what ``AuditRecord`` refuses (checked here, once)."""
        number, new = self._templates.register(
            principal,
            source=source,
            action=action,
            resource=resource,
            decision=decision,
            policies=policies,
            reason=reason,
        )
        if not new:
            return number
        self._frames.append(_template_frame(number, self._templates.fields[number]))
        self._schedule()
        return number

    def record(
        self,
        template: int,
        *,
        request_id: str,
        micros: int,
        tokens: tuple[int, int] | None = None,
        extra: Mapping[str, ExtraValue] | None = None,
    ) -> None:
        """Acknowledge a record made from ``template`` (``micros``: its time, microseconds since
        the epoch). Raises ``AuditClosed`` after ``aclose``."""
        if self._closing:
            raise AuditClosed(f"the audit log {self.path} is closed")
        if tokens is None:
            self._batch.append((template, request_id, micros, None, None, extra))
        else:
            self._batch.append((template, request_id, micros, tokens[0], tokens[1], extra))
        self._waiting += 1
        if len(self._batch) >= self.settings.max_batch:
            self._send()
        elif self._timer is None:
            self._schedule()

    def append(self, record: AuditRecord) -> None:
        """Acknowledge a whole record (refusals: rare, and each its own)."""
        if self._closing:
            raise AuditClosed(f"the audit log {self.path} is closed")
        if self._batch:  # keep the order of acknowledgement
            self._frames.append(self._batch_frame())
        self._frames.append(b"R" + record.to_json())
        self._waiting += 1
        self._schedule()

    @property
    def pending(self) -> int:
        """Records acknowledged that the child has not committed yet (the bound while there is no
        child: nothing acknowledged now could be written)."""
        if not self._writing:
            return max(self.settings.queue_bound, self._waiting)
        return self._waiting + self._sent - self._committed

    async def flush(self, timeout: float | None = None) -> None:
        """Return once every record acknowledged before the call is committed."""
        self._send()
        process = self._process
        if process is None or process.stdin is None:
            raise AuditUnavailable(f"the audit writer of {self.path} is not running")
        assert self._loop is not None
        flushed = self._loop.create_future()
        self._flushes.append(flushed)
        process.stdin.write(b"F\n")  # after everything acknowledged so far
        async with asyncio.timeout(timeout):
            await asyncio.shield(flushed)

    async def aclose(self, timeout: float = _STOP_TIMEOUT_S) -> None:
        """Send what waits, let the child write everything and exit (killed after ``timeout``
        seconds, the loss logged). Idempotent."""
        if self._closing:
            return
        self._closing = True
        self._send()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        process = self._process
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
            with contextlib.suppress(ConnectionError):
                await process.stdin.wait_closed()
        try:
            async with asyncio.timeout(timeout):
                code = await process.wait()
        except TimeoutError:
            process.kill()
            code = await process.wait()
            log.error(
                "the audit writer of %s did not finish in %.0f s and was killed; "
                "up to %d acknowledged record(s) may be lost",
                self.path,
                timeout,
                self._sent - self._committed,
            )
        if self._reader is not None:
            await self._reader
        if code != 0:
            log.error("the audit writer of %s exited with status %s", self.path, code)
        if self._waiting:  # acknowledged while no writer ran, and never sent
            log.error(
                "%d acknowledged audit record(s) were not written to %s: no writer was running",
                self._waiting,
                self.path,
            )

    # -- sending ---------------------------------------------------------------------------------

    def _schedule(self) -> None:
        if self._timer is None and self._loop is not None and not self._closing:
            self._timer = self._loop.call_later(SEND_INTERVAL_S, self._send)

    def _batch_frame(self) -> bytes:
        batch, self._batch = self._batch, []
        return b"B" + orjson.dumps(batch)

    def _send(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._batch:
            self._frames.append(self._batch_frame())
        if not self._frames:
            return
        process = self._process
        if process is None or process.returncode is not None or process.stdin is None:
            return  # kept until a child runs again (``pending`` says so)
        frames, self._frames = self._frames, []
        frames.append(b"")
        process.stdin.write(b"\n".join(frames))
        self._sent += self._waiting
        self._waiting = 0

    # -- the child -------------------------------------------------------------------------------

    async def _spawn(self) -> None:
        self._started_at = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            self._python,
            "-m",
            "aviator.audit.writer",
            str(self.path),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        assert process.stdin is not None
        ready = await process.stdout.readline()
        if ready != b"ready\n":
            code = await process.wait()
            raise AuditUnavailable(
                f"the audit writer could not open {self.path} (exit status {code}; its error "
                "is on the gateway's standard error)"
            )
        self._process = process
        self._writing = True
        self._sent = self._committed = 0
        # A (re)started child knows no template: send them all before any record.
        self._frames[:0] = [
            _template_frame(n, fields) for n, fields in enumerate(self._templates.fields)
        ]
        self._reader = asyncio.create_task(self._read(process), name="aviator-audit-sink")
        self._send()

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        """Follow the child's answers until it exits; restart it if that was not asked for."""
        assert process.stdout is not None
        while line := await process.stdout.readline():
            if line[:1] == b"F":
                if self._flushes:
                    flushed = self._flushes.popleft()
                    if not flushed.done():
                        flushed.set_result(int(line[1:]))
            else:
                self._committed = int(line)
        self._writing = False  # its output ended: it exited, or is about to
        code = await process.wait()
        if self._closing:
            return
        lost = self._sent - self._committed
        log.error(
            "the audit writer of %s exited (status %s); %d acknowledged record(s) it had not "
            "committed are lost; starting a new one",
            self.path,
            code,
            lost,
        )
        while self._flushes:
            flushed = self._flushes.popleft()
            if not flushed.done():
                flushed.set_exception(AuditUnavailable("the audit writer exited"))
        delay = _RESTART_MIN_S - (time.monotonic() - self._started_at)
        while not self._closing:
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await self._spawn()
                return
            except (OSError, AuditUnavailable) as exc:
                log.error("the audit writer of %s could not be restarted: %s", self.path, exc)
                delay = _RESTART_MIN_S
