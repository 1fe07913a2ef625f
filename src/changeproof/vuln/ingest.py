"""Ingest scanner files: parse each one whole, then write its scan, findings and raw bytes.

All or nothing: every file of one command is written inside one ``store.writer`` transaction
and each file is parsed completely before any of its records are written, so a bad file (wrong
scanner, truncated, unknown schema) raises before it writes anything and rolls back the files
before it too. Memory stays flat: one file's findings at a time, written in batches.

Large inputs are parsed by worker processes (:mod:`changeproof.vuln.pool`) that read, hash,
parse and encode the files while this process writes them in order: the same records, byte
for byte, and the same all-or-nothing.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import operator
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from changeproof.errors import InputFormatError
from changeproof.evidence import Provenance, Scan, ScanFindings
from changeproof.settings import Settings
from changeproof.store import Writer
from changeproof.vuln.parsers import ParseContext, ParsedScan, parser_for
from changeproof.vuln.parsers.base import Data


@dataclass
class FileResult:
    file: str
    scan_id: str
    scanner: str
    tool: str
    format: str
    scanned_at: datetime
    scanned_at_source: str
    findings: int
    partial: bool
    by_tier: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """What ``--format json`` prints for the file (the ingest commands share it)."""
        return {
            "file": self.file,
            "scan": self.scan_id,
            "scanner": self.scanner,
            "tool": self.tool,
            "format": self.format,
            "scanned_at": self.scanned_at.isoformat(),
            "scanned_at_source": self.scanned_at_source,
            "findings": self.findings,
            "by_tier": self.by_tier,
            "partial": self.partial,
            "notes": self.notes,
        }


BATCH = 1000
_tier_of = operator.attrgetter("tier")


@functools.lru_cache(maxsize=1024)
def _file_name(file: str) -> str:
    return Path(file).name


def make_scan_id(repo: str, scanner: str, raw_sha256: str, scanned_at: datetime | None) -> str:
    key = f"{repo}\x1f{scanner}\x1f{raw_sha256}\x1f{scanned_at.isoformat() if scanned_at else ''}"
    return "S-" + hashlib.sha256(key.encode()).hexdigest()[:20]


def read_file(path: Path | str) -> bytes:
    """The file's bytes in four system calls (open, fstat, read, close): an ingest reads tens
    of thousands of files, and ``Path.read_bytes`` makes twice as many (a buffered reader,
    its isatty and seek probes, and a last read to find the end). Errors: one clear message."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise unreadable(path, exc) from None
    try:
        return read_open(fd, path)
    finally:
        os.close(fd)


def read_open(fd: int, path: Path | str) -> bytes:
    """The bytes of ``path``, open as ``fd`` (read from where it is), as :func:`read_file`."""
    try:
        size = os.fstat(fd).st_size
        # one byte more than the size: the usual answer is the whole file, as its size says
        data = os.read(fd, size + 1)
        if len(data) == size:
            return data
        # more (it grew meanwhile, or has no size: a pipe) or less (a short read, or it
        # shrank): read on to its end as it is now
        chunks = [data]
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise unreadable(path, exc) from None


def unreadable(path: Path | str, exc: OSError) -> InputFormatError:
    if isinstance(exc, FileNotFoundError):
        return InputFormatError(
            f"{path}: no such file", hint="check the path; nothing was ingested"
        )
    if isinstance(exc, IsADirectoryError):
        return InputFormatError(f"{path}: is a directory, not a scanner output file")
    return InputFormatError(f"{path}: cannot be read ({exc.strerror})")


def parse_bytes(
    scanner: str,
    data: Data,
    *,
    file: str,
    repo: str,
    now: datetime,
    settings: Settings,
    scanned_at: datetime | None = None,
    target: str | None = None,
    raw_sha256: str | None = None,
) -> tuple[ParseContext, ParsedScan]:
    """Parse one file; its digest (and so its scan id) is computed here unless given."""
    raw = raw_sha256 or hashlib.sha256(data).hexdigest()
    ctx = ParseContext(
        file=file,
        repo=repo,
        scan_id=make_scan_id(repo, scanner, raw, scanned_at),
        raw_sha256=raw,
        now=now,
        scanned_at=scanned_at,
        target=target,
        unscored=settings.patching.unscored_tier,
    )
    return ctx, parser_for(scanner)(data, ctx)


def ingest_bytes(
    w: Writer,
    scanner: str,
    data: bytes,
    *,
    file: str,
    repo: str,
    now: datetime,
    settings: Settings,
    scanned_at: datetime | None = None,
    partial: bool = False,
    target: str | None = None,
) -> FileResult:
    """Parse the bytes whole, then keep them and write the scan and its findings. Raising
    leaves the caller's transaction to roll back everything, the raw bytes included."""
    ctx, parsed = parse_bytes(
        scanner,
        data,
        file=file,
        repo=repo,
        now=now,
        settings=settings,
        scanned_at=scanned_at,
        target=target,
    )
    # the digest parse_bytes computed is the locker's: it does not hash the bytes again
    w.put_raw(
        data,
        kind=f"scan:{scanner}",
        source=scanner,
        media_type="application/json",
        sha256=ctx.raw_sha256,
    )
    return write_parsed(w, scanner, ctx, parsed, partial=partial, now=now)


def write_parsed(
    w: Writer,
    scanner: str,
    ctx: ParseContext,
    parsed: ParsedScan,
    *,
    partial: bool,
    now: datetime,
) -> FileResult:
    scan, batches, res = scan_records(scanner, ctx, parsed, partial=partial, now=now)
    w.put(scan)
    for b in batches:
        w.put(b)
    return res


def scan_records(
    scanner: str,
    ctx: ParseContext,
    parsed: ParsedScan,
    *,
    partial: bool,
    now: datetime,
) -> tuple[Scan, list[ScanFindings], FileResult]:
    """The records one parsed file is stored as (its scan, then its finding batches in
    order) and the file's result."""
    raw = ctx.raw_sha256
    is_partial = partial or parsed.partial
    scan = Scan(
        id=ctx.scan_id,
        repo=ctx.repo,
        scanner=scanner,
        tool=parsed.tool,
        tool_version=parsed.tool_version,
        format=parsed.format,
        scanned_at=parsed.scanned_at,
        scanned_at_source=parsed.scanned_at_source,  # type: ignore[arg-type]
        partial=is_partial,
        targets=parsed.targets,
        coverage=() if is_partial else parsed.coverage,
        findings=len(parsed.findings),
        skipped=parsed.skipped,
        file=_file_name(ctx.file),
        notes=tuple(parsed.notes),
        provenance=Provenance(
            source=f"scanner:{scanner}",
            occurred_at=parsed.scanned_at,
            collected_at=now,
            raw_sha256=raw,
        ),
    )
    tiers = dict(Counter(map(_tier_of, parsed.findings)))  # (first-seen order, as a dict)
    # findings go in batches: one row per BATCH findings, not one per finding
    batches = [
        ScanFindings(
            id=f"{ctx.scan_id}/{part}",
            repo=ctx.repo,
            scan_id=ctx.scan_id,
            part=part,
            findings=tuple(parsed.findings[i : i + BATCH]),
            provenance=scan.provenance,
        )
        for part, i in enumerate(range(0, len(parsed.findings), BATCH))
    ]
    return (
        scan,
        batches,
        FileResult(
            file=ctx.file,
            scan_id=ctx.scan_id,
            scanner=scanner,
            tool=parsed.tool,
            format=parsed.format,
            scanned_at=parsed.scanned_at,
            scanned_at_source=parsed.scanned_at_source,
            findings=len(parsed.findings),
            partial=is_partial,
            by_tier=tiers,
            notes=list(parsed.notes),
        ),
    )


@dataclass(frozen=True)
class ParseJob:
    """One file to ingest: which scanner wrote it, its name and bytes, and for what.
    ``data`` None: ``file`` is a path, read in its turn (by a parser process, if any)."""

    scanner: str
    file: str
    data: bytes | None
    repo: str
    scanned_at: datetime | None = None
    target: str | None = None
    partial: bool = False


# An ingest allocates millions of short-lived, acyclic objects (decoded structs, findings);
# the default cyclic-GC cadence (every 700 allocations) spent ≈ 7 % of the CPU scanning them.
GC_GEN0_THRESHOLD = 50_000


@contextlib.contextmanager
def _fewer_gc_passes() -> Iterator[None]:
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], GC_GEN0_THRESHOLD), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


def ingest_jobs(
    w: Writer,
    jobs: Iterable[ParseJob],
    *,
    now: datetime,
    settings: Settings,
    on_file: Callable[[FileResult], None] | None = None,
    workers: int = 0,
    keep: bool = True,
) -> list[FileResult]:
    """Ingest files in order into the caller's unit of work (all or nothing: the first bad
    file raises, and the caller's transaction keeps nothing). ``jobs`` may raise (an
    unreadable file) in its turn. ``workers``: parser processes (changeproof.vuln.pool); 0,
    the default, parses in this process (as it does where the pool is not supported).
    ``keep`` False: results go to ``on_file`` only and the list stays empty (memory flat in
    the number of files, e.g. a manifest's tens of thousands)."""
    out: list[FileResult] = []
    if workers > 0 and sys.platform == "linux":
        from changeproof.vuln.pool import ParsePool

        with ParsePool(workers) as pool, _fewer_gc_passes():
            for res in pool.ingest_jobs(w, jobs, now=now, settings=settings):
                if keep:
                    out.append(res)
                if on_file is not None:
                    on_file(res)
        return out
    # (the store's pipelined writer thread was measured here and cost more CPU than it saved:
    # its batches are small and the GIL hand-offs are not free)
    with _fewer_gc_passes():
        for job in jobs:
            res = ingest_bytes(
                w,
                job.scanner,
                read_file(Path(job.file)) if job.data is None else job.data,
                file=job.file,
                repo=job.repo,
                now=now,
                settings=settings,
                scanned_at=job.scanned_at,
                partial=job.partial,
                target=job.target,
            )
            if keep:
                out.append(res)
            if on_file is not None:
                on_file(res)
    return out


def ingest_files(
    w: Writer,
    scanner: str,
    files: Sequence[Path],
    *,
    repo: str,
    now: datetime,
    settings: Settings,
    scanned_at: datetime | None = None,
    partial: bool = False,
    target: str | None = None,
    on_file: Callable[[FileResult], None] | None = None,
    workers: int | None = None,
) -> list[FileResult]:
    """Ingest ``files`` in order (see :func:`ingest_jobs`); each is read in its turn.
    ``workers`` None: parser processes when the input is large enough to gain from them
    (:func:`changeproof.vuln.pool.auto_workers`), else in-process."""
    if workers is None:
        from changeproof.vuln.pool import auto_workers

        workers = auto_workers(files)
    return ingest_jobs(
        w,
        (ParseJob(scanner, str(p), None, repo, scanned_at, target, partial) for p in files),
        now=now,
        settings=settings,
        on_file=on_file,
        workers=workers,
    )
