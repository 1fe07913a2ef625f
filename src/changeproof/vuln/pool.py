"""Parse scanner files in worker processes while the calling process writes.

Parsing (hashing, JSON decoding and mapping findings) is most of an ingest's CPU time and
needs no database, so worker processes parse while the parent writes what they return into
its one ``store.writer`` transaction. All or nothing is kept: results are written in file
order and the first bad file raises in the parent before anything after it is written, so the
caller's transaction rolls everything back. Memory stays flat: each worker holds at most one
file being parsed and one waiting.

Each worker is a plain process with its own pipe (no executor machinery: with
``ProcessPoolExecutor`` the parent spent as much CPU shipping work as parsing it in-process
would have). A job is a small msgspec header plus the raw bytes; a result comes back as one
JSON document (JSON keeps timestamps' offsets exactly, so what is stored is byte for byte what
in-process parsing stores) and is decoded into
:class:`~changeproof.evidence.FindingObservation` again, which re-runs its validation.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import pickle
import time
from collections import deque
from collections.abc import Iterable, Iterator
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

import msgspec

from changeproof.errors import ChangeproofError
from changeproof.evidence import FindingObservation, SeverityTier
from changeproof.settings import Settings
from changeproof.store import Writer
from changeproof.vuln.ingest import (
    GC_GEN0_THRESHOLD,
    FileResult,
    ParseJob,
    parse_bytes,
    write_parsed,
)
from changeproof.vuln.parsers import ParseContext, ParsedScan

__all__ = ["ParseJob", "ParsePool"]


class _Job(msgspec.Struct, array_like=True):
    scanner: str
    file: str
    repo: str
    scanned_at: datetime | None
    target: str | None
    now: datetime
    unscored: SeverityTier


class _Parsed(msgspec.Struct, array_like=True):
    """What a worker hands back: the parse context's identity and the parsed scan."""

    raw_sha256: str
    scan_id: str
    tool: str
    tool_version: str | None
    format: str
    scanned_at: datetime
    scanned_at_source: str
    findings: tuple[FindingObservation, ...]
    targets: tuple[str, ...]
    coverage: tuple[tuple[str, str, str], ...]
    skipped: tuple[str, ...]
    notes: list[str]
    partial: bool
    cpu_s: float  # the worker's CPU time so far


_STOP = b""


def _worker(conn: Connection, out: Connection) -> None:
    """A parser process: read (header, bytes) jobs until the stop message; answer each with
    b"ok" + JSON, or b"er" + a pickled (error class, what, expected, hint) / exception."""
    gc.set_threshold(max(gc.get_threshold()[0], GC_GEN0_THRESHOLD))  # this process parses only
    jobs = msgspec.msgpack.Decoder(_Job)
    enc = msgspec.json.Encoder()
    settings_by_tier: dict[str, Settings] = {}
    while True:
        try:
            head = conn.recv_bytes()
        except EOFError:
            return
        if head == _STOP:
            return
        data = conn.recv_bytes()
        job = jobs.decode(head)
        settings = settings_by_tier.get(job.unscored)
        if settings is None:
            settings = settings_by_tier[job.unscored] = _settings_for(job.unscored)
        try:
            ctx, parsed = parse_bytes(
                job.scanner,
                data,
                file=job.file,
                repo=job.repo,
                now=job.now,
                settings=settings,
                scanned_at=job.scanned_at,
                target=job.target,
            )
        except ChangeproofError as exc:
            # sent back as parts: an error class with keyword-only arguments does not unpickle
            out.send_bytes(b"er" + pickle.dumps((type(exc), exc.what, exc.expected, exc.hint)))
            continue
        except Exception as exc:  # a bug: re-raised in the parent as it is
            try:
                body = pickle.dumps(exc)
            except Exception:
                body = pickle.dumps(RuntimeError(f"parser process failed: {exc!r}"))
            out.send_bytes(b"er" + body)
            continue
        out.send_bytes(
            b"ok"
            + enc.encode(
                _Parsed(
                    raw_sha256=ctx.raw_sha256,
                    scan_id=ctx.scan_id,
                    tool=parsed.tool,
                    tool_version=parsed.tool_version,
                    format=parsed.format,
                    scanned_at=parsed.scanned_at,
                    scanned_at_source=parsed.scanned_at_source,
                    findings=tuple(parsed.findings),
                    targets=parsed.targets,
                    coverage=parsed.coverage,
                    skipped=parsed.skipped,
                    notes=parsed.notes,
                    partial=parsed.partial,
                    cpu_s=time.process_time(),
                )
            )
        )


def _settings_for(unscored: str) -> Settings:
    # the parsers read one setting; the worker rebuilds Settings with it rather than being
    # sent the whole configuration with every file
    base = Settings()
    return msgspec.structs.replace(
        base, patching=msgspec.structs.replace(base.patching, unscored_tier=unscored)
    )


def _widen(conn: Connection) -> None:
    """Let one pipe hold a whole scanner file (Linux): a 500 KB file then crosses in one write
    instead of eight 64 KB hand-offs between the two processes."""
    with contextlib.suppress(ImportError, OSError, AttributeError):
        import fcntl

        fcntl.fcntl(conn.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)


_PIPE_BYTES = 1 << 20  # Linux's default limit for an unprivileged pipe


class _Proc:
    def __init__(self, ctx: Any) -> None:
        jobs_r, self.jobs = ctx.Pipe(duplex=False)  # one-way pipes: their size can be raised
        self.answers, answers_w = ctx.Pipe(duplex=False)
        _widen(self.jobs)
        _widen(self.answers)
        self.process = ctx.Process(target=_worker, args=(jobs_r, answers_w), daemon=True)
        self.process.start()
        jobs_r.close()
        answers_w.close()
        self.pending: deque[ParseJob] = deque()  # sent, answer not yet read
        self.cpu_s = 0.0


class ParsePool:
    """A pool of parser processes; use as a context manager, one per command (or benchmark).

    Workers start from a fork server (a clean process, not a fork of a parent that holds
    database connections) on first use. ``in_flight``: files sent to each worker ahead of
    the one being written (default 1: the worker parses the next file while this process
    writes the last; more would block this process on a busy worker's pipe).
    """

    def __init__(self, workers: int = 2, *, in_flight: int | None = None) -> None:
        self.workers = max(1, workers)
        self.in_flight = max(1, in_flight or 1)
        self._procs: list[_Proc] = []
        self._cpu_closed = 0.0  # CPU seconds of workers already stopped
        self.wait_s = 0.0  # wall seconds this process waited for answers
        self._decoder = msgspec.json.Decoder(_Parsed)
        self._header = msgspec.msgpack.Encoder()

    @property
    def worker_cpu_s(self) -> float:
        """CPU seconds the parser processes have used (start-up included)."""
        return self._cpu_closed + sum(p.cpu_s for p in self._procs)

    def _pool(self) -> list[_Proc]:
        if not self._procs:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            self._procs = [_Proc(ctx) for _ in range(self.workers)]
        return self._procs

    def close(self, *, abort: bool = False) -> None:
        """Stop the workers: let them finish, or (``abort``) end them now — a worker with an
        answer nobody will read would wait forever."""
        procs, self._procs = self._procs, []
        self._cpu_closed += sum(p.cpu_s for p in procs)
        for p in procs:
            if abort:
                p.process.kill()
            else:
                with contextlib.suppress(OSError):
                    p.jobs.send_bytes(_STOP)
        for p in procs:
            p.process.join(timeout=None if abort else 5)
            if p.process.is_alive():
                p.process.kill()
                p.process.join()
            p.jobs.close()
            p.answers.close()

    def __enter__(self) -> ParsePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ingest(
        self,
        w: Writer,
        scanner: str,
        sources: Iterable[tuple[str, bytes]],
        *,
        repo: str,
        now: datetime,
        settings: Settings,
        scanned_at: datetime | None = None,
        partial: bool = False,
        target: str | None = None,
    ) -> Iterator[FileResult]:
        """Ingest ``(file name, bytes)`` pairs of one scanner and repository in order (see
        :meth:`ingest_jobs`)."""
        return self.ingest_jobs(
            w,
            (
                ParseJob(scanner, file, data, repo, scanned_at, target, partial)
                for file, data in sources
            ),
            now=now,
            settings=settings,
        )

    def _send(self, p: _Proc, job: ParseJob, now: datetime, unscored: SeverityTier) -> None:
        head = _Job(job.scanner, job.file, job.repo, job.scanned_at, job.target, now, unscored)
        p.jobs.send_bytes(self._header.encode(head))
        p.jobs.send_bytes(job.data)
        p.pending.append(job)

    def ingest_jobs(
        self, w: Writer, jobs: Iterable[ParseJob], *, now: datetime, settings: Settings
    ) -> Iterator[FileResult]:
        """Ingest files in order, yielding each file's result once its records are written.
        The first bad file raises its error (an unreadable one, raised by ``jobs``, too); nothing
        after it is written, and the caller's transaction rolls back the files before it."""
        procs = self._pool()
        unscored = settings.patching.unscored_tier
        it = iter(jobs)
        failed: ChangeproofError | None = None  # raised by ``jobs``: fails in its turn
        order: deque[_Proc] = deque()  # which worker answers each file sent, in file order
        nxt = 0  # round-robin: jobs go to workers in turn, so answers come back in order

        def refill() -> None:
            nonlocal failed, nxt
            while failed is None and len(order) < self.in_flight * len(procs):
                try:
                    job = next(it, None)
                except ChangeproofError as exc:
                    failed = exc
                    return
                if job is None:
                    return
                p = procs[nxt]
                nxt = (nxt + 1) % len(procs)
                self._send(p, job, now, unscored)
                order.append(p)

        done = False
        try:
            refill()
            while order:
                p = order.popleft()
                t = time.perf_counter()
                try:
                    answer = p.answers.recv_bytes()
                except EOFError:
                    raise RuntimeError("a parser process exited unexpectedly") from None
                self.wait_s += time.perf_counter() - t
                job = p.pending.popleft()
                # send the next file before writing this one: the worker parses meanwhile
                refill()
                if answer[:2] != b"ok":
                    err = pickle.loads(answer[2:])  # noqa: S301 - our own worker's answer
                    if isinstance(err, tuple):
                        cls, what, expected, hint = err
                        raise cls(what, expected=expected, hint=hint)
                    raise err
                res = self._decoder.decode(memoryview(answer)[2:])
                p.cpu_s = max(p.cpu_s, res.cpu_s)
                ctx = ParseContext(
                    file=job.file,
                    repo=job.repo,
                    scan_id=res.scan_id,
                    raw_sha256=res.raw_sha256,
                    now=now,
                    scanned_at=job.scanned_at,
                    target=job.target,
                    unscored=unscored,
                )
                parsed = ParsedScan(
                    tool=res.tool,
                    tool_version=res.tool_version,
                    format=res.format,
                    scanned_at=res.scanned_at,
                    scanned_at_source=res.scanned_at_source,
                    findings=list(res.findings),
                    targets=res.targets,
                    coverage=res.coverage,
                    skipped=res.skipped,
                    notes=res.notes,
                    partial=res.partial,
                )
                w.put_raw(
                    job.data,
                    kind=f"scan:{job.scanner}",
                    source=job.scanner,
                    media_type="application/json",
                    sha256=res.raw_sha256,
                )
                yield write_parsed(w, job.scanner, ctx, parsed, partial=job.partial, now=now)
            if failed is not None:
                raise failed
            done = True
        finally:
            if not done:
                # answers still on their way would be read as the next command's: start over
                self.close(abort=True)
