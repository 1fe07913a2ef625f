"""Parse scanner files in worker processes while the calling process writes.

A worker does all of a file's work that needs no database: it reads the file itself (only
the path crosses to it), hashes it for the locker, parses it, builds the scan and finding
batch records and encodes them into the evidence table's rows (:func:`evidence_row`: the
very bytes and digests :meth:`Writer.put` would store). The parent receives those rows and
the file's bytes (the ones the worker hashed, so the locker keeps exactly what was parsed;
they come through a ring buffer shared with the worker) and only writes them into its one
``store.writer`` transaction: an ingest's CPU splits into ≈ three quarters in the workers and
one quarter (SQLite) in the parent.

All or nothing is kept: answers are written in file order and the first bad file (unreadable,
wrong scanner, truncated …) raises in the parent before anything after it is written, so the
caller's transaction rolls everything back. Memory stays flat: a worker holds the file it
parses and its ring; the parent at most ``window`` answers (and 64 MB of them) waiting.

Workers are forked (Linux only: a few milliseconds, nothing to import); they close the
parent's ends of every pipe, ignore Ctrl-C (the parent stops them) and exit when the parent's
pipe closes, so none outlives it.
"""

from __future__ import annotations

import contextlib
import gc
import mmap
import multiprocessing
import os
import pickle
import select
import signal
import stat
import sys
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from changeproof.errors import ChangeproofError, SourceError
from changeproof.evidence import SeverityTier
from changeproof.settings import Settings
from changeproof.store import Writer, evidence_row
from changeproof.vuln.ingest import (
    GC_GEN0_THRESHOLD,
    FileResult,
    ParseJob,
    parse_bytes,
    read_open,
    scan_records,
    unreadable,
)
from changeproof.vuln.parsers.base import Data

__all__ = ["ParseJob", "ParsePool", "auto_workers"]

# the evidence table's columns, in the order a worker sends each row
_ROW = (
    "kind",
    "key",
    "repo",
    "subject",
    "occurred_us",
    "collected_us",
    "digest",
    "raw_sha256",
    "body",
)

# `changeproof ingest` starts workers for at least this many bytes of input (below it the
# pool's start-up and hand-offs are not paid back) …
AUTO_MIN_BYTES = 16 << 20
# … and at most this many: the parent's share (SQLite) is about half a worker's
AUTO_MAX_WORKERS = 3


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_workers(cpus: int | None = None) -> int:
    """Parser processes for a large input: one per usable CPU (up to AUTO_MAX_WORKERS), none
    with a single CPU or off Linux."""
    if sys.platform != "linux":
        return 0
    if cpus is None:
        cpus = usable_cpus()
    return 0 if cpus < 2 else min(cpus, AUTO_MAX_WORKERS)


def auto_workers(files: Sequence[Path], *, cpus: int | None = None) -> int:
    """How many parser processes to use for ``files``: 0 (parse in-process) for one file,
    little input, one usable CPU, or a platform other than Linux (where workers are forked)."""
    workers = default_workers(cpus) if len(files) > 1 else 0
    if not workers:
        return 0
    total = 0
    for f in files:
        with contextlib.suppress(OSError):  # an unreadable file fails in its turn
            total += f.stat().st_size
    return workers if total >= AUTO_MIN_BYTES else 0


class _Job(msgspec.Struct, array_like=True):
    scanner: str
    file: str
    read: bool  # True: the worker reads ``file``; False: the bytes follow the header
    repo: str
    scanned_at: str | None  # (ISO strings: msgpack's timestamps would drop the offsets)
    target: str | None
    partial: bool
    now: str
    unscored: SeverityTier
    received: int  # answers of this worker the parent has read: their ring regions are free


class _Answer(msgspec.Struct, array_like=True):
    """A parsed file: its result, its evidence rows (in ``_ROW`` order) and, when the worker
    read the file, where its bytes are: at ``at`` in the shared ring, or (``at`` -1) in a
    frame after this one."""

    raw_sha256: str
    scan_id: str
    tool: str
    format: str
    scanned_at: str
    scanned_at_source: str
    findings: int
    partial: bool
    by_tier: dict[str, int]
    notes: list[str]
    rows: list[tuple[Any, ...]]
    cpu_s: float  # the worker's CPU time so far
    idle_s: float  # … and the time it waited for a job so far
    at: int
    size: int


_STOP = b""


def _write(fd: int, *parts: bytes | memoryview) -> None:
    """One frame: 8 bytes of length, then ``parts`` (written as they are, not joined)."""
    bufs = [sum(map(len, parts)).to_bytes(8, "little"), *parts]
    views = [memoryview(b) for b in bufs if len(b)]
    while views:
        n = os.writev(fd, views)
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if n:
            views[0] = views[0][n:]


def _read_exact(fd: int, n: int) -> bytes:
    # a whole frame is usually in the pipe already: one read, and its bytes are the frame's
    first = os.read(fd, n)
    if len(first) == n:
        return first
    if not first:
        raise EOFError
    chunks, got = [first], len(first)
    while got < n:
        chunk = os.read(fd, n - got)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _read(fd: int) -> bytes:
    return _read_exact(fd, int.from_bytes(_read_exact(fd, 8), "little"))


class _Ring:
    """A worker's shared buffer for the bytes of the files it read: the parent copies them
    out with one memcpy, where a pipe costs a kernel copy on each side (≈ 0.3 ms per MB
    each: ≈ 4 µs per finding of the corpus mix). Regions are used in order and freed in
    order, once the parent says (in a job) it has read their answers."""

    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.view = memoryview(buf)
        self.regions: deque[tuple[int, int, int]] = deque()  # (answer, start, end), oldest first
        self.head = 0

    def release(self, received: int) -> None:
        while self.regions and self.regions[0][0] < received:
            self.regions.popleft()

    def put(self, answer: int, data: bytes) -> int:
        """Copy ``data`` in; its offset, or -1 if it does not fit now (it goes by pipe)."""
        at = self.reserve(answer, len(data))
        if at >= 0:
            self.buf[at : at + len(data)] = data
        return at

    def reserve(self, answer: int, n: int) -> int:
        """Take ``n`` bytes for ``answer``; their offset, or -1 if they do not fit now."""
        size = len(self.buf)
        if not n:
            return -1
        if not self.regions:
            at = 0 if n <= size else -1
        else:
            oldest = self.regions[0][1]
            if self.head > oldest:  # free: [head, size) and [0, oldest)
                at = self.head if n <= size - self.head else 0 if n <= oldest else -1
            else:  # wrapped: free [head, oldest)
                at = self.head if n <= oldest - self.head else -1
        if at >= 0:
            self.regions.append((answer, at, at + n))
            self.head = at + n
        return at

    def shrink_last(self, n: int) -> None:
        """The region taken last holds only ``n`` bytes (0: give it back)."""
        answer, at, _ = self.regions.pop()
        if n:
            self.regions.append((answer, at, at + n))
        self.head = at + n

    def read_file(self, answer: int, path: str) -> tuple[Data, int]:
        """``path``'s bytes read straight into the ring, and their offset there (one copy
        fewer than reading them and copying them in: ≈ 1 µs per finding of the corpus mix);
        or, when they do not fit now, or it is not a regular file, or it grew while read,
        as bytes read the usual way from the same open file, and -1 (they go by pipe)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise unreadable(path, exc) from None
        try:
            try:
                st = os.fstat(fd)
            except OSError as exc:
                raise unreadable(path, exc) from None
            if not stat.S_ISREG(st.st_mode):  # a pipe, a directory …: nothing read yet
                return read_open(fd, path), -1
            size = st.st_size
            # one byte more than the size: a file that grew meanwhile is read the usual way
            at = self.reserve(answer, size + 1)
            if at < 0:
                return read_open(fd, path), -1
            try:
                got = os.readv(fd, [self.view[at : at + size + 1]])
                while 0 < got < size:  # a short read (or the file shrank): read on to its end
                    n = os.readv(fd, [self.view[at + got : at + size + 1]])
                    if not n:
                        break
                    got += n
            except OSError:
                got = size + 1  # read it again the usual way, which names the error
            if got > size or not got:
                self.shrink_last(0)  # (an empty file: no region, and its error in its turn)
                os.lseek(fd, 0, os.SEEK_SET)  # (a regular file: from its start again)
                return read_open(fd, path), -1
            self.shrink_last(got)
            return self.view[at : at + got], at
        finally:
            os.close(fd)


RING_BYTES = 8 << 20  # per worker: a few files in flight; a larger one goes by pipe


def _worker(jobs_fd: int, out_fd: int, inherited: tuple[int, ...], buf: mmap.mmap) -> None:
    """A parser process: read jobs until the stop message (or the parent's end closes);
    answer each with b"ok" + an _Answer (+ a frame of the file's bytes), or b"er" + a pickled
    (error class, what, expected, hint) / exception."""
    for fd in inherited:  # the parent's ends of all pipes, inherited through fork
        os.close(fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    gc.freeze()  # what fork handed over is never scanned (nor copied page by page)
    gc.set_threshold(max(gc.get_threshold()[0], GC_GEN0_THRESHOLD))  # this process parses only
    _keep_freed_memory()
    jobs = msgspec.msgpack.Decoder(_Job)
    enc = msgspec.msgpack.Encoder()
    settings_by_tier: dict[str, Settings] = {}
    ring = _Ring(buf)
    answered = 0
    idle = 0.0  # seconds spent waiting for a job (the parent did not keep this one busy)
    with contextlib.suppress(EOFError, BrokenPipeError, KeyboardInterrupt):
        while True:
            t = time.perf_counter()
            head = _read(jobs_fd)
            idle += time.perf_counter() - t
            if head == _STOP:
                return
            job = jobs.decode(head)
            ring.release(job.received)
            answered += 1  # (this job's answer, error or not, is number answered - 1)
            data: Data = b"" if job.read else _read(jobs_fd)
            at = -1
            settings = settings_by_tier.get(job.unscored)
            if settings is None:
                settings = settings_by_tier[job.unscored] = _settings_for(job.unscored)
            try:
                if job.read:
                    # (straight into the ring when it fits: the parent takes them from there)
                    data, at = ring.read_file(answered - 1, job.file)
                now = datetime.fromisoformat(job.now)
                ctx, parsed = parse_bytes(
                    job.scanner,
                    data,
                    file=job.file,
                    repo=job.repo,
                    now=now,
                    settings=settings,
                    scanned_at=datetime.fromisoformat(job.scanned_at) if job.scanned_at else None,
                    target=job.target,
                )
                scan, batches, res = scan_records(
                    job.scanner, ctx, parsed, partial=job.partial, now=now
                )
                rows = [tuple(evidence_row(r).values()) for r in (scan, *batches)]
            except ChangeproofError as exc:
                # sent back as parts: an error class with keyword-only arguments does not
                # unpickle
                _write(out_fd, b"er", pickle.dumps((type(exc), exc.what, exc.expected, exc.hint)))
                continue
            except Exception as exc:  # a bug: re-raised in the parent as it is
                try:
                    body = pickle.dumps(exc)
                except Exception:
                    body = pickle.dumps(RuntimeError(f"parser process failed: {exc!r}"))
                _write(out_fd, b"er", body)
                continue
            answer = _Answer(
                raw_sha256=ctx.raw_sha256,
                scan_id=res.scan_id,
                tool=res.tool,
                format=res.format,
                scanned_at=res.scanned_at.isoformat(),
                scanned_at_source=res.scanned_at_source,
                findings=res.findings,
                partial=res.partial,
                by_tier=res.by_tier,
                notes=res.notes,
                rows=rows,
                cpu_s=time.process_time(),
                idle_s=idle,
                at=at,
                size=len(data),
            )
            _write(out_fd, b"ok", enc.encode(answer))
            if job.read and at < 0:
                _write(out_fd, data)  # (bytes: read the usual way)
            del data, ctx, parsed, scan, batches, res, rows, answer


def _keep_freed_memory() -> None:
    """Let this process's malloc reuse freed large blocks (glibc). Every file's bytes are a
    fresh allocation of up to megabytes; by default those come from a new mapping whose pages
    the kernel zeroes and faults in one by one (≈ 2.5 µs per finding of the corpus mix)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 64 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 128 << 20)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def _settings_for(unscored: str) -> Settings:
    # the parsers read one setting; the worker rebuilds Settings with it rather than being
    # sent the whole configuration with every file
    base = Settings()
    return msgspec.structs.replace(
        base, patching=msgspec.structs.replace(base.patching, unscored_tier=unscored)
    )


_PIPE_BYTES = 1 << 20  # Linux's default limit for an unprivileged pipe


def _pipe() -> tuple[int, int]:
    """A pipe widened to hold a whole scanner file (Linux): a 500 KB file then crosses in
    one write instead of eight 64 KB hand-offs between the two processes."""
    r, w = os.pipe()
    with contextlib.suppress(ImportError, OSError, AttributeError):
        import fcntl

        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
    return r, w


class _Proc:
    def __init__(self, ctx: Any, parent_ends: list[int], ring_bytes: int) -> None:
        jobs_r, self.jobs = _pipe()
        self.answers, answers_w = _pipe()
        parent_ends += [self.jobs, self.answers]
        # the worker inherits the parent's ends of its own and the earlier workers' pipes
        # and closes them, so each worker sees end-of-file once the parent is gone
        self.ring = mmap.mmap(-1, ring_bytes)  # shared with the forked worker
        self.process = ctx.Process(
            target=_worker, args=(jobs_r, answers_w, tuple(parent_ends), self.ring), daemon=True
        )
        try:
            self.process.start()
        finally:
            os.close(jobs_r)
            os.close(answers_w)
        self.pending: deque[ParseJob] = deque()  # sent, answer not yet written
        # answers read, in order: (the answer, decoded if not an error, the file's bytes)
        self.ready: deque[tuple[bytes, _Answer | None, bytes | None]] = deque()
        self.busy = 0  # files sent whose answer is not read yet
        self.queued = 0  # … and their bytes (as far as known when sent)
        self.sizes: deque[int] = deque()  # each one's, in order
        self.received = 0  # answers read
        self.cpu_s = 0.0
        self.idle_s = 0.0

    def close(self) -> None:
        for fd in (self.jobs, self.answers):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.ring.close()


class _Checkpointer:
    """SQLite: copy committed WAL frames into the database file on a thread of its own.

    With back-to-back commands each commit otherwise ends with the connection's automatic
    checkpoint every ≈ 4 MB of WAL (copy and two fsyncs: ≈ 16 ms, while every parser waits
    for the next command). A passive checkpoint never blocks the writer, and once the WAL is
    fully copied the next write transaction starts it over, so commits stay small. The
    driver releases the GIL while it checkpoints."""

    def __init__(self, path: str) -> None:
        import sqlite3
        import threading

        self._wal = Path(path + "-wal")
        self._conn = sqlite3.connect(path, timeout=0, check_same_thread=False)
        self._error = sqlite3.Error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seen = None
        while not self._stop.wait(0.002):
            try:
                st = self._wal.stat()
            except OSError:  # no WAL yet (or any more)
                continue
            mark = (st.st_size, st.st_mtime_ns)
            if mark == seen:
                continue
            try:
                busy, frames, done = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except self._error:  # e.g. the database is being locked or closed: next time
                busy = 1
            if not busy and frames == done:
                seen = mark

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._conn.close()


# files handed to each parser and not answered yet: the parent refills them only between the
# files it writes, so while it commits (≈ 4 ms, more as the database grows) a parser lives on
# what it has queued. The parsers' summed wait for work in the benchmark: at 300,000 findings
# 2.5 s with 4 (≈ 2 ms of the corpus mix), 0.8–2 s with 12–16; at 1,000,000 findings
# 4.1–5.5 s with 16, 2.7 s with 32
IN_FLIGHT = 32
# … but no more than about this many bytes of files (a worker always has one): with large
# files a deep queue would hand out work too early, and one worker could be left with the
# last large files while the other has nothing to do
QUEUE_BYTES = 8 << 20

# raw files the parent holds before writing them (the locker's payloads) while it waits for
# a parser: few enough that a command ends with little left to write, enough that each write
# is not one statement per file
WRITE_AHEAD_FILES = 12


class ParsePool:
    """A pool of parser processes; use as a context manager, one per command (or benchmark).

    Workers are forked on first use (cheap: nothing to import; they touch none of the
    parent's database connections and leave with ``os._exit``). Only where ``fork`` is safe
    and available (Linux): elsewhere ``ingest_jobs`` parses in the calling process.
    ``in_flight``: files handed to each worker and not answered yet (default 32: enough
    queued work to keep a worker busy through a commit), and ``queue_bytes`` at most about
    that many bytes of them (default 8 MB; one file always); ``window``:
    files sent and not yet written (default 64: a worker done with small files runs ahead of
    one parsing a large file); ``ring_bytes``: each worker's shared buffer for the bytes it
    read; ``checkpoint``: on SQLite, copy the WAL into the database on a thread of its own
    while the pool is open (see :class:`_Checkpointer`); ``write_ahead_files``: while it
    waits for a parser, the parent writes the raw files it holds (into the locker) once there
    are this many, so the command's end has less to write.
    """

    def __init__(
        self,
        workers: int = 2,
        *,
        in_flight: int | None = None,
        window: int | None = None,
        ring_bytes: int = RING_BYTES,
        checkpoint: bool = True,
        write_ahead_files: int = WRITE_AHEAD_FILES,
        queue_bytes: int = QUEUE_BYTES,
    ) -> None:
        self.checkpoint = checkpoint
        self.ring_bytes = max(1, ring_bytes)
        self.workers = max(1, workers)
        self.in_flight = max(1, in_flight or IN_FLIGHT)
        self.queue_bytes = max(1, queue_bytes)
        # files sent and not yet written: a worker that is done with its small files may run
        # ahead of one parsing a large file by this much (answers wait in memory meanwhile)
        self.window = max(self.in_flight * self.workers, window or 64)
        # … and no more files are sent while this much of their answers waits in memory
        self.max_held_bytes = 64 << 20
        self._procs: list[_Proc] = []
        self._cpu_closed = 0.0  # CPU seconds of workers already stopped
        self._idle_closed = 0.0  # … and the seconds they waited for a job
        self.wait_s = 0.0  # wall seconds this process waited for answers
        self._decoder = msgspec.msgpack.Decoder(_Answer)
        self._checkpointer: _Checkpointer | None = None
        self._header = msgspec.msgpack.Encoder()
        # raw files held before the parent writes them while it waits for a parser
        self.write_ahead_files = max(1, write_ahead_files)

    @property
    def worker_cpu_s(self) -> float:
        """CPU seconds the parser processes have used (to their last answer)."""
        return self._cpu_closed + sum(p.cpu_s for p in self._procs)

    @property
    def worker_idle_s(self) -> float:
        """Seconds the parser processes waited for a job (to their last answer), summed:
        time this process left them without work (e.g. while it committed)."""
        return self._idle_closed + sum(p.idle_s for p in self._procs)

    def _pool(self) -> list[_Proc]:
        if not self._procs:
            _keep_freed_memory()  # (the answers' bytes: see there)
            ctx = multiprocessing.get_context("fork")
            ends: list[int] = []
            try:
                for _ in range(self.workers):
                    self._procs.append(_Proc(ctx, ends, self.ring_bytes))
            except BaseException:
                mine = {fd for p in self._procs for fd in (p.jobs, p.answers)}
                for fd in set(ends) - mine:  # a worker that did not start
                    with contextlib.suppress(OSError):
                        os.close(fd)
                self.close(abort=True)
                raise
        return self._procs

    def close(self, *, abort: bool = False) -> None:
        """Stop the workers: let them finish, or (``abort``) end them now — a worker with an
        answer nobody will read would wait forever."""
        procs, self._procs = self._procs, []
        self._cpu_closed += sum(p.cpu_s for p in procs)
        self._idle_closed += sum(p.idle_s for p in procs)
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        for p in procs:
            if abort:
                p.process.kill()
            else:
                with contextlib.suppress(OSError):
                    _write(p.jobs, _STOP)
        for p in procs:
            p.process.join(timeout=None if abort else 5)
            if p.process.is_alive():
                p.process.kill()
                p.process.join()
            p.close()

    def __enter__(self) -> ParsePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, p: _Proc, job: ParseJob, now: str, unscored: SeverityTier, size: int) -> None:
        head = _Job(
            job.scanner,
            job.file,
            job.data is None,
            job.repo,
            job.scanned_at.isoformat() if job.scanned_at is not None else None,
            job.target,
            job.partial,
            now,
            unscored,
            p.received,
        )
        _write(p.jobs, self._header.encode(head))
        if job.data is not None:
            _write(p.jobs, job.data)
        p.pending.append(job)
        p.busy += 1
        p.queued += size
        p.sizes.append(size)

    def _start_checkpoints(self, w: Writer) -> None:
        if self._checkpointer is None and self.checkpoint:
            # (a thread: started after the workers were forked, stopped before any new fork)
            url = w.conn.engine.url
            if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
                self._checkpointer = _Checkpointer(str(url.database))

    def ingest_jobs(
        self, w: Writer, jobs: Iterable[ParseJob], *, now: datetime, settings: Settings
    ) -> Iterator[FileResult]:
        """Ingest files in order, yielding each file's result once its records are written.
        A job without ``data`` is read by the worker (its ``file`` is the path). The first
        bad file raises its error (an unreadable one, raised by ``jobs``, too); nothing after
        it is written, and the caller's transaction rolls back the files before it."""
        feed = _Feed(self, (jobs,), now=now, settings=settings)
        done = False
        try:
            self._start_checkpoints(w)
            yield from feed.write(w, 0)
            done = True
        finally:
            if not done:
                # answers still on their way would be read as the next command's: start over
                self.close(abort=True)

    def ingest_commands(
        self,
        writer: Callable[[], contextlib.AbstractContextManager[Writer]],
        commands: Iterable[Iterable[ParseJob]],
        *,
        now: datetime,
        settings: Settings,
    ) -> Generator[list[FileResult], None, None]:
        """Ingest several commands' files, each command in a unit of work of its own
        (``writer()``, e.g. ``lambda: store.writer(Locker(signer))``), in order; yields each
        command's results once its unit of work has committed. For a process that ingests
        continuously: the parsers go on with the next command's files while this one's last
        files are written and committed, instead of waiting for every commit (≈ 4 ms each,
        in which they would otherwise sit idle). Each command stays all or nothing: the first
        bad file raises its error, its command keeps nothing, the commands before it are
        committed and none after it is started. ``commands`` (and each command's jobs) are
        iterated ahead of what is written: up to the pool's window of files."""
        feed = _Feed(self, commands, now=now, settings=settings)
        done = False
        try:
            k = 0
            while feed.begun(k):
                with writer() as w:
                    self._start_checkpoints(w)
                    results = list(feed.write(w, k))
                yield results
                k += 1
            done = True
        finally:
            if not done:
                self.close(abort=True)


def _size(job: ParseJob) -> int:
    """A file's size as far as it is known now (a hint for spreading work: its worker reads
    it, and an unreadable file fails there, in its turn)."""
    if job.data is not None:
        return len(job.data)
    try:
        return os.stat(job.file).st_size  # noqa: PTH116 - (no Path object per file)
    except OSError:
        return 0


class _Feed:
    """The files of one or more commands on their way through a pool's workers: sent ahead in
    order (the next command's files too, while this one's end is written), answers taken in
    as they come and written in file order into each command's own unit of work."""

    def __init__(
        self,
        pool: ParsePool,
        commands: Iterable[Iterable[ParseJob]],
        *,
        now: datetime,
        settings: Settings,
    ) -> None:
        self.pool = pool
        self.procs = procs = pool._pool()
        self.unscored = settings.patching.unscored_tier
        self.now_iso = now.isoformat()
        self.commands = iter(commands)
        self.current = -1  # the command whose jobs are being sent
        self.jobs: Iterator[ParseJob] | None = None  # its jobs, not all sent yet
        self.sent_all = -1  # the last command whose jobs are all sent
        self.ended = False  # no more commands
        self.failed: ChangeproofError | None = None  # raised by ``jobs``: fails in its turn
        self.held: ParseJob | None = None  # the next job, waiting for a worker
        # which worker answers each file sent, and for which command, in file order
        self.order: deque[tuple[_Proc, int]] = deque()
        self.held_bytes = 0  # answers taken in, waiting for their turn
        self.by_fd = {p.answers: p for p in procs}
        self.poller = select.poll()
        for p in procs:
            self.poller.register(p.answers, select.POLLIN)

    def begun(self, k: int) -> bool:
        """Whether command ``k`` exists (asking ``commands`` for it if need be); the ones
        before it are written."""
        while self.current < k:
            if not self._advance():
                return False
        return True

    def _advance(self) -> bool:
        """Take the next command from ``commands`` (the current one's jobs are all sent)."""
        if self.ended:
            return False
        cmd = next(self.commands, None)
        if cmd is None:
            self.ended = True
            return False
        self.current += 1
        self.jobs = iter(cmd)
        return True

    def _next_job(self) -> ParseJob | None:
        """The next file to send, the next command's once this one's are all sent."""
        job, self.held = self.held, None
        while job is None and self.failed is None:
            if self.jobs is None and not self._advance():
                break
            assert self.jobs is not None
            try:
                job = next(self.jobs, None)
            except ChangeproofError as exc:
                self.failed = exc
                break
            if job is None:
                self.jobs = None
                self.sent_all = self.current
        return job

    def refill(self) -> None:
        pool, procs, order = self.pool, self.procs, self.order
        while len(order) < pool.window and self.held_bytes < pool.max_held_bytes:
            # the least busy worker that can take more: files differ a hundredfold in size
            p: _Proc | None = None
            for q in procs:
                if q.busy >= pool.in_flight or (q.busy and q.queued >= pool.queue_bytes):
                    continue
                if p is None or q.busy < p.busy:
                    p = q
            if p is None:
                return
            job = self._next_job()
            if job is None:
                return
            if job.data is not None and p.pending:
                # bytes go to a worker only once it has answered everything: a large
                # answer and a large job could otherwise each wait for the other's pipe
                self.held = job
                return
            pool._send(p, job, self.now_iso, self.unscored, _size(job))
            order.append((p, self.current))

    def receive(self, p: _Proc) -> None:
        """Read ``p``'s next answer (and the bytes it read) into ``p.ready``."""
        try:
            answer = _read(p.answers)
            job = p.pending[len(p.ready)]
            res = self.pool._decoder.decode(memoryview(answer)[2:]) if answer[:2] == b"ok" else None
            data = None
            if res is not None and job.data is None:
                # out of the ring now: the next job tells the worker it may reuse it
                data = p.ring[res.at : res.at + res.size] if res.at >= 0 else _read(p.answers)
        except (EOFError, OSError):
            code = p.process.exitcode if not p.process.is_alive() else None
            raise SourceError(
                f"a scanner-file parser process stopped unexpectedly (exit code {code})",
                expected="each parser process to answer for every file sent to it",
                hint="nothing was ingested; run the command again (and check the "
                "system log for a process killed for lack of memory)",
            ) from None
        p.ready.append((answer, res, data))
        p.busy -= 1
        p.queued -= p.sizes.popleft()
        p.received += 1
        self.held_bytes += len(answer) + (len(data) if data is not None else 0)

    def collect(self) -> None:
        """Wait for answers and take in all that are there, so no worker waits on a full
        pipe while the file before its own is still parsed; send those workers more."""
        for fd, _ev in self.poller.poll():
            q = self.by_fd[fd]
            if q.busy:
                self.receive(q)
        self.refill()

    def write(self, w: Writer, k: int) -> Iterator[FileResult]:
        """Write command ``k``'s files into ``w`` in order (the commands before it are
        written), yielding each file's result once its records are written."""
        pool, order = self.pool, self.order
        unwritten = 0  # files whose raw bytes the writer holds
        self.refill()
        while True:
            if not order or order[0][1] != k:
                # nothing of command k is on its way: done once all its jobs are sent
                if self.failed is not None and self.current == k:
                    raise self.failed
                if self.sent_all >= k or self.ended:
                    return
                self.refill()
                continue
            p = order[0][0]
            if not p.ready:
                if unwritten >= pool.write_ahead_files:
                    # about to wait for a parser: write the raw files held now, while
                    # the parsers work, not at the command's end while they all wait
                    w.write_raw()
                    unwritten = 0
                t = time.perf_counter()
                while not p.ready:
                    self.collect()
                pool.wait_s += time.perf_counter() - t
            order.popleft()
            answer, res, data = p.ready.popleft()
            job = p.pending.popleft()
            self.held_bytes -= len(answer) + (len(data) if data is not None else 0)
            # send the next file before writing this one: the worker parses meanwhile
            self.refill()
            if res is None:
                err = pickle.loads(answer[2:])  # noqa: S301 - our own worker's answer
                if isinstance(err, tuple):
                    cls, what, expected, hint = err
                    raise cls(what, expected=expected, hint=hint)
                raise err
            p.cpu_s = max(p.cpu_s, res.cpu_s)
            p.idle_s = max(p.idle_s, res.idle_s)
            raw = job.data if data is None else data
            assert raw is not None  # (the worker sends the bytes it read)
            w.put_raw(
                raw,
                kind=f"scan:{job.scanner}",
                source=job.scanner,
                media_type="application/json",
                sha256=res.raw_sha256,
            )
            w.put_rows([dict(zip(_ROW, r, strict=True)) for r in res.rows])
            unwritten += 1
            del answer, data, raw
            yield FileResult(
                file=job.file,
                scan_id=res.scan_id,
                scanner=job.scanner,
                tool=res.tool,
                format=res.format,
                scanned_at=datetime.fromisoformat(res.scanned_at),
                scanned_at_source=res.scanned_at_source,
                findings=res.findings,
                partial=res.partial,
                by_tier=res.by_tier,
                notes=res.notes,
            )
