"""Parse scanner files in worker processes while the calling process writes.

Parsing (JSON decoding and mapping findings) is most of an ingest's CPU time and needs no
database, so worker processes parse — and hash, since the scan id depends on the digest —
while the parent writes what they return into its one ``store.writer`` transaction. All or
nothing is kept: results are written in file order and the first bad file raises in the parent
before anything after it is written, so the caller's transaction rolls everything back. Memory
stays flat: at most ``in_flight`` files are read, sent or parsed at any moment.

Findings come back as msgpack (a fraction of pickle's cost for msgspec structs) and are decoded
into :class:`~changeproof.evidence.FindingObservation` again, which re-runs its validation.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import datetime
from typing import Any

import msgspec

from changeproof.errors import ChangeproofError
from changeproof.evidence import FindingObservation
from changeproof.settings import Settings
from changeproof.store import Writer
from changeproof.vuln.ingest import FileResult, ParseJob, parse_bytes, write_parsed

__all__ = ["ParseJob", "ParsePool"]

_findings_decoder = msgspec.msgpack.Decoder(tuple[FindingObservation, ...])
_findings_encoder = msgspec.msgpack.Encoder()


def _parse_job(
    scanner: str,
    data: bytes,
    file: str,
    repo: str,
    now: datetime,
    settings: Settings,
    scanned_at: datetime | None,
    target: str | None,
) -> tuple[Any, ...]:
    """Runs in a worker: hash, parse, and hand back everything but the raw bytes."""
    raw = hashlib.sha256(data).hexdigest()
    try:
        ctx, parsed = parse_bytes(
            scanner,
            data,
            file=file,
            repo=repo,
            now=now,
            settings=settings,
            scanned_at=scanned_at,
            target=target,
            raw_sha256=raw,
        )
    except ChangeproofError as exc:
        # sent back as parts: an error class with keyword-only arguments does not unpickle
        return ("error", type(exc), exc.what, exc.expected, exc.hint)
    body = _findings_encoder.encode(parsed.findings)
    parsed.findings = []
    # this worker's CPU time so far: lets callers account for the parsers' share of the work
    return ("ok", raw, ctx, parsed, body, os.getpid(), time.process_time())


class ParsePool:
    """A pool of parser processes; use as a context manager, one per command (or benchmark).

    Workers start from a fork server (a clean process, not a fork of a parent that holds
    database connections) on first use.
    """

    def __init__(self, workers: int = 2, *, in_flight: int | None = None) -> None:
        self.workers = max(1, workers)
        self.in_flight = in_flight or 2 * self.workers
        self._executor: ProcessPoolExecutor | None = None
        self._cpu: dict[int, float] = {}  # worker pid → its CPU seconds at its latest result

    @property
    def worker_cpu_s(self) -> float:
        """CPU seconds the parser processes have used (start-up included)."""
        return sum(self._cpu.values())

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            self._executor = ProcessPoolExecutor(self.workers, mp_context=ctx)
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

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

    def ingest_jobs(
        self, w: Writer, jobs: Iterable[ParseJob], *, now: datetime, settings: Settings
    ) -> Iterator[FileResult]:
        """Ingest files in order, yielding each file's result once its records are written.
        The first bad file raises its error (an unreadable one, raised by ``jobs``, too); nothing
        after it is written, and the caller's transaction rolls back the files before it."""
        pool = self._pool()
        pending: deque[tuple[ParseJob | None, Future[tuple[Any, ...]] | ChangeproofError]]
        pending = deque()
        it = iter(jobs)
        more = True
        try:
            while True:
                while more and len(pending) < self.in_flight:
                    try:
                        job = next(it, None)
                    except ChangeproofError as exc:
                        # an unreadable file fails in its turn, as it would one by one
                        pending.append((None, exc))
                        more = False
                        break
                    if job is None:
                        more = False
                        break
                    sent = pool.submit(
                        _parse_job,
                        job.scanner,
                        job.data,
                        job.file,
                        job.repo,
                        now,
                        settings,
                        job.scanned_at,
                        job.target,
                    )
                    pending.append((job, sent))
                if not pending:
                    return
                done, fut = pending.popleft()
                if isinstance(fut, ChangeproofError):
                    raise fut
                assert done is not None
                out = fut.result()
                if out[0] == "error":
                    _, cls, what, expected, hint = out
                    raise cls(what, expected=expected, hint=hint)
                _, raw, ctx, parsed, body, pid, cpu = out
                self._cpu[pid] = max(cpu, self._cpu.get(pid, 0.0))
                parsed.findings = list(_findings_decoder.decode(body))
                w.put_raw(
                    done.data,
                    kind=f"scan:{done.scanner}",
                    source=done.scanner,
                    media_type="application/json",
                    sha256=raw,
                )
                yield write_parsed(w, done.scanner, ctx, parsed, partial=done.partial, now=now)
        finally:
            for _, f in pending:
                if isinstance(f, Future):
                    f.cancel()
