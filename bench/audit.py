"""Micro-benchmark of the audit log: ``python bench/audit.py [--records N] [--runs R]``.

Appends N gateway-shaped decisions (~440 bytes of canonical JSON each) with the default
settings (50 ms / 1,000-record batches) and prints: what ``append`` costs its caller (wall
latency per call, and CPU of the calling thread), how many records per second become durable
(append everything, then ``flush``), the same with two writer processes on one file, and, over
the resulting log, how fast ``verify`` checks the chain (from the database and from an export),
how fast an export is written, and how long naming one edited entry takes. Each figure is the
median of R runs. CPU times are printed beside wall times because the latter swing with
whatever else the machine runs.
"""

from __future__ import annotations

import argparse
import io
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aviator.audit import chain
from aviator.audit.chain import Entry
from aviator.audit.log import AuditLog, AuditReader
from aviator.audit.record import AuditRecord, Tokens
from aviator.settings import AuditSettings


def decision(i: int) -> AuditRecord:
    return AuditRecord(
        source="gateway",
        principal=f"spiffe://aviator.local/ns/team-{i % 7}/agent/summariser-{i % 13}",
        principal_kind="agent",
        action="infer",
        resource=f'ModelDeployment::"team-{i % 7}/chat"',
        decision="allow" if i % 10 else "deny",
        policies=("team-chat", "budgets") if i % 10 else (),
        reason="permitted by team-chat" if i % 10 else "no policy permits infer",
        request_id=f"0193a5f2-7c1e-7d40-9b1a-{i:012x}",
        tokens=Tokens(prompt=512 + i % 1000, completion=128),
        extra={"status": 200 if i % 10 else 403, "intent": "summarise-tickets"},
    )


def row(label: str, value: str) -> None:
    print(f"{label:<48} {value}")


def median_of(runs: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(runs))


@dataclass
class AppendRun:
    latencies: list[float]
    """Wall time of each ``append`` call (s)."""
    caller_cpu: float
    """CPU time of the appending thread, all calls (s)."""
    process_cpu: float
    """CPU time of the whole process (appender and writer thread) until all durable (s)."""
    wall: float
    """Wall time until all durable (s)."""


def append_and_flush(path: Path, records: list[AuditRecord]) -> AppendRun:
    path.unlink(missing_ok=True)
    with AuditLog.open(path, settings=AuditSettings()) as log:
        latencies = []
        clock = time.perf_counter
        cpu0, proc0, start = time.thread_time(), time.process_time(), clock()
        for record in records:
            t = clock()
            log.append(record)
            latencies.append(clock() - t)
        caller_cpu = time.thread_time() - cpu0
        log.flush()
        return AppendRun(
            latencies=latencies,
            caller_cpu=caller_cpu,
            process_cpu=time.process_time() - proc0,
            wall=clock() - start,
        )


_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from audit import decision
    from aviator.audit.log import AuditLog
    records = [decision(i) for i in range(int(sys.argv[2]))]
    log = AuditLog.open(Path(sys.argv[1]))
    print("ready", flush=True)
    sys.stdin.readline()
    for record in records:
        log.append(record)
    log.close()
    """
)


def two_processes(path: Path, count: int) -> float:
    """Records/s durable with two processes appending ``count`` each at the same time."""
    path.unlink(missing_ok=True)
    AuditLog.open(path).close()
    here = str(Path(__file__).parent)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(path), str(count), here],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for child in children:
        assert child.stdout is not None
        child.stdout.readline()
    start = time.perf_counter()
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    for child in children:
        child.wait()
    elapsed = time.perf_counter() - start
    report = AuditReader(path).verify()
    assert report.ok, report.findings
    assert report.head.seq == 2 * count
    return 2 * count / elapsed


def cpu_of(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    n, runs = args.records, args.runs
    records = [decision(i) for i in range(n)]
    size = statistics.mean(len(r.to_json()) for r in records[:1000])
    print(f"{n:,} records of ~{size:.0f} bytes; median of {runs} runs\n")

    with tempfile.TemporaryDirectory(prefix="aviator-bench-") as tmp:
        path = Path(tmp) / "audit.db"
        results = [append_and_flush(path, records) for _ in range(runs)]
        latencies = sorted(x for r in results for x in r.latencies)
        p50, p99 = (latencies[int(q * (len(latencies) - 1))] for q in (0.5, 0.99))
        row("append() wall latency", f"p50 {p50 * 1e6:.1f} µs, p99 {p99 * 1e6:.1f} µs")
        cpu = statistics.median(r.caller_cpu for r in results)
        row("append() CPU of the caller's thread", f"{cpu / n * 1e6:>8.2f} µs per record")
        wall = statistics.median(r.wall for r in results)
        proc = statistics.median(r.process_cpu for r in results)
        row(
            "append all + flush (one process)",
            f"{n / wall:>10,.0f} records/s durable; {proc / n * 1e6:.1f} µs CPU per record",
        )
        rate = statistics.median(two_processes(path, n // 2) for _ in range(runs))
        row("two processes appending at once", f"{rate:>10,.0f} records/s durable (together)")

        append_and_flush(path, records)  # the log the readers below work on
        reader = AuditReader(path)
        t = median_of(runs, lambda: timed(reader.verify))
        c = median_of(runs, lambda: cpu_of(reader.verify))
        row(
            "verify the database",
            f"{n / t:>10,.0f} entries/s ({t * 1e3:.0f} ms; {c / n * 1e6:.1f} µs CPU per entry)",
        )
        out = io.BytesIO()
        t = median_of(runs, lambda: timed(lambda: (out.seek(0), reader.export(out))))
        row("export as JSON lines (in memory)", f"{n / t:>10,.0f} entries/s")
        lines = out.getvalue().splitlines()
        t = median_of(
            runs, lambda: timed(lambda: chain.verify([Entry.from_json(x) for x in lines]))
        )
        row("verify an export (parse + check)", f"{n / t:>10,.0f} entries/s")

        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("DROP TRIGGER entries_no_update")
        conn.execute(
            f"UPDATE entries SET record = replace(record, 'allow', 'deny') WHERE seq = {n // 2}"
        )
        conn.close()
        report = reader.verify()
        assert [(f.kind, f.seq) for f in report.findings] == [("edited", n // 2)], report
        t = median_of(runs, lambda: timed(reader.verify))
        row("verify and name one edited entry", f"{n / t:>10,.0f} entries/s ({t * 1e3:.0f} ms)")
        disk = sum(p.stat().st_size for p in Path(tmp).iterdir() if p.name.startswith("audit.db"))
        row("on disk", f"{disk / n:>10,.0f} bytes per entry")


if __name__ == "__main__":
    main()
