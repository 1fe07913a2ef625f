"""`changeproof ingest batch MANIFEST`: many scanner files — across scanners, repositories and
scan times — listed in a CSV manifest, ingested in one transaction (all or nothing).

The manifest is checked whole first (changeproof.vuln.manifest), then read again line by line
as the ingest's jobs; a file's result is added to the summary (and, for --format json or
--list, spooled to a temporary file) as it is written, so memory stays flat in the manifest's
length.
"""

from __future__ import annotations

import tempfile
from collections import Counter, deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from changeproof.cli import opts

if TYPE_CHECKING:
    from collections.abc import Iterator

    from changeproof.errors import ChangeproofError
    from changeproof.vuln.ingest import FileResult, ParseJob
    from changeproof.vuln.manifest import Manifest, ManifestStats

TIERS = ("critical", "high", "medium", "low", "none")
SPOOL_BYTES = 8 << 20  # per-file output held in memory up to this, then on disk


@click.command(
    "batch",
    help="""Ingest many scanner files listed in a CSV manifest, in one go (all or nothing).

For backfills: a year of CI scan artifacts, across scanners and repositories, each file with
the time it was really scanned (a finding's clock starts at the earliest scan that saw it, so
history matters). Every file commits in one transaction: a bad manifest line or a bad file
ingests nothing at all.

MANIFEST is a CSV file, or - for standard input, with a header row. Columns (any order):
scanner, file, repo (required); scanned_at, target, partial (optional). An empty optional
value means what `changeproof ingest SCANNER` does without the option: the scan time in the
file, else now; no target; not partial (true/false, yes/no, 1/0). A relative file is relative
to the manifest's folder (to the current folder for standard input). Scanners: pip-audit,
npm-audit, trivy, grype, osv-scanner, snyk, sarif, semgrep, dependabot.

The whole manifest is checked (columns, scanners, times, that every file exists) before
anything is parsed. Prints a summary (files and findings by scanner and severity); one line
per file with --list, or everything with --format json.

\b
Example manifest:
  scanner,file,repo,scanned_at
  trivy,2025-03/api-image.json,acme/api,2025-03-01T02:00Z
  pip-audit,2025-03/api-deps.json,acme/api,2025-03-01T02:05Z
  grype,/ci/artifacts/web-sbom.json,acme/web,

\b
Examples:
  changeproof ingest batch backfill.csv
  changeproof ingest batch backfill.csv --list
  changeproof ingest batch - < backfill.csv
  changeproof ingest batch backfill.csv --format json > ingested.json
""",
)
@click.argument("manifest", metavar="MANIFEST")
@click.option("--list", "listing", is_flag=True, help="Also print one line per file (text format).")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.pass_context
def batch(ctx: click.Context, manifest: str, listing: bool, fmt: str) -> None:
    from changeproof.cli.progress import progress
    from changeproof.errors import InputFormatError
    from changeproof.locker import Locker
    from changeproof.vuln.ingest import ingest_jobs
    from changeproof.vuln.manifest import Manifest, ManifestError

    ws = opts(ctx).workspace()
    settings = ws.settings()
    now = datetime.now(UTC)
    with Manifest.open(manifest) as m:
        stats = m.validate()  # every line, before anything is parsed or opened
        tally = _Tally(m, per_file="json" if fmt == "json" else "text" if listing else None)
        try:
            store = ws.open_store()
            try:
                with (
                    progress("ingest batch", total=stats.files) as advance,
                    store.writer(Locker(ws.signer())) as w,
                ):

                    def done(res: FileResult) -> None:
                        tally.add(res)
                        advance(1)

                    ingest_jobs(
                        w,
                        tally.jobs(),
                        now=now,
                        settings=settings,
                        on_file=done,
                        workers=batch_workers(stats),
                        keep=False,
                    )
            except InputFormatError as exc:
                if isinstance(exc, ManifestError):
                    raise  # (names its line already)
                raise tally.located(exc) from None
            finally:
                store.close()
            if fmt == "json":
                tally.emit_json()
            else:
                tally.emit_text()
        finally:
            tally.close()


def batch_workers(stats: ManifestStats, *, cpus: int | None = None) -> int:
    """Parser processes, as `changeproof ingest SCANNER` picks them for its files
    (changeproof.vuln.pool.auto_workers): none for one file, little input or one CPU."""
    from changeproof.vuln.pool import AUTO_MIN_BYTES, default_workers

    if stats.files < 2 or stats.bytes < AUTO_MIN_BYTES:
        return 0
    return default_workers(cpus)


class _Tally:
    """The batch's figures, added up file by file; per-file output spooled (flat memory)."""

    def __init__(self, manifest: Manifest, *, per_file: str | None) -> None:
        self.manifest = manifest
        self.per_file = per_file  # None, "text" or "json"
        # (line, repo) of the jobs handed out and not yet written, oldest first: the next
        # result is the first one's, and a failure is too (the ingest goes in order)
        self.pending: deque[tuple[int, str]] = deque()
        self.files = self.findings = self.partial = self.noted = 0
        self.by_tier: Counter[str] = Counter()
        self.by_scanner: dict[str, list[Any]] = {}  # scanner → [files, findings, tiers]
        self.repos: set[str] = set()
        self.first: datetime | None = None
        self.last: datetime | None = None
        self.spool = (
            tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) if per_file else None  # noqa: SIM115
        )

    def jobs(self) -> Iterator[ParseJob]:
        for line, job in self.manifest.jobs():
            self.pending.append((line, job.repo))
            yield job

    def add(self, r: FileResult) -> None:
        line, repo = self.pending.popleft()
        self.files += 1
        self.findings += r.findings
        self.by_tier.update(r.by_tier)
        s = self.by_scanner.get(r.scanner)
        if s is None:
            s = self.by_scanner[r.scanner] = [0, 0, Counter()]
        s[0] += 1
        s[1] += r.findings
        s[2].update(r.by_tier)
        self.repos.add(repo)
        if self.first is None or r.scanned_at < self.first:
            self.first = r.scanned_at
        if self.last is None or r.scanned_at > self.last:
            self.last = r.scanned_at
        self.partial += r.partial
        self.noted += bool(r.notes)
        if self.spool is None:
            return
        if self.per_file == "json":
            import msgspec

            item = {"line": line, "file": r.file, "repo": repo, **r.as_json()}
            self.spool.write(msgspec.json.encode(item) + b"\n")
        else:
            tiers = _tiers(r.by_tier)
            part = " (partial: absence proves nothing)" if r.partial else ""
            text = (
                f"line {line}: {r.file} ({repo}): {r.findings} finding(s) [{tiers}] from "
                f"{r.tool} ({r.format}), scanned {r.scanned_at.isoformat()} "
                f"({r.scanned_at_source}){part} → {r.scan_id}\n"
            )
            text += "".join(f"  note: {n}\n" for n in r.notes)
            self.spool.write(text.encode())

    def located(self, exc: ChangeproofError) -> ChangeproofError:
        """``exc`` (a file's error, as `changeproof ingest SCANNER` gives it) naming the
        manifest line of the file it is about."""
        if not self.pending:
            return exc
        line = self.pending[0][0]
        hint = (exc.hint.rstrip(".") + "; " if exc.hint else "") + (
            "fix or remove that line; nothing from the manifest was ingested"
        )
        return type(exc)(
            f"{self.manifest.name} line {line}: {exc.what}", expected=exc.expected, hint=hint
        )

    def summary(self) -> dict[str, Any]:
        return {
            "manifest": self.manifest.name,
            "files": self.files,
            "findings": self.findings,
            "by_tier": _ordered(self.by_tier),
            "by_scanner": {
                sc: {"files": f, "findings": n, "by_tier": _ordered(t)}
                for sc, (f, n, t) in sorted(self.by_scanner.items())
            },
            "repositories": len(self.repos),
            "scanned_from": self.first.isoformat() if self.first else None,
            "scanned_to": self.last.isoformat() if self.last else None,
            "partial_files": self.partial,
            "files_with_notes": self.noted,
        }

    def emit_json(self) -> None:
        """The summary with a "results" list, one object per file (streamed from the spool,
        formatted as `emit_json` formats)."""
        import sys

        import msgspec

        fmt = msgspec.json.format
        out = sys.stdout.buffer
        head = fmt(msgspec.json.encode(self.summary()), indent=2)
        out.write(head[:-2] + b',\n  "results": [')
        first = True
        assert self.spool is not None
        self.spool.seek(0)
        for raw in self.spool:
            item = fmt(raw.rstrip(b"\n"), indent=2).replace(b"\n", b"\n    ")
            out.write((b"\n    " if first else b",\n    ") + item)
            first = False
        out.write(b"]\n}\n" if first else b"\n  ]\n}\n")
        out.flush()

    def emit_text(self) -> None:
        if self.spool is not None:
            self.spool.seek(0)
            for raw in self.spool:
                click.echo(raw.decode().rstrip("\n"))
        if not self.files:
            click.echo(f"{self.manifest.name}: no files listed; nothing ingested")
            return
        span = (
            f"scanned {self.first.isoformat()} … {self.last.isoformat()}"
            if self.first and self.last
            else ""
        )
        click.echo(
            f"{self.manifest.name}: {self.files:,} file(s), {self.findings:,} finding(s) "
            f"[{_tiers(self.by_tier)}] for {len(self.repos):,} repositor"
            f"{'y' if len(self.repos) == 1 else 'ies'}, {span}"
        )
        width = max(map(len, self.by_scanner))
        for sc, (f, n, t) in sorted(self.by_scanner.items()):
            click.echo(f"  {sc:<{width}}  {f:>9,} file(s) {n:>11,} finding(s)  [{_tiers(t)}]")
        if self.partial:
            click.echo(f"  {self.partial:,} partial scan(s): absence in them proves nothing")
        if self.noted and self.per_file is None:
            click.echo(f"  {self.noted:,} file(s) with notes: see --list or --format json")

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()


def _ordered(tiers: Counter[str] | dict[str, int]) -> dict[str, int]:
    return {t: tiers[t] for t in TIERS if tiers.get(t)}


def _tiers(tiers: Counter[str] | dict[str, int]) -> str:
    return ", ".join(f"{n:,} {t}" for t, n in _ordered(tiers).items()) or "none"
