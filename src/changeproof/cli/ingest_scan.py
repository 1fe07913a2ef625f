"""`changeproof ingest SCANNER FILE… --repo R`: scanner output as vulnerability evidence.

One subcommand per scanner (pip-audit, npm-audit, trivy, grype, osv-scanner, snyk, sarif,
semgrep, dependabot), all built by :func:`_command`. Every file of one command commits in one
transaction; any bad file ingests nothing (exit 2).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from changeproof.cli import emit_json, opts
from changeproof.cli.timeparse import parse_instant

_HELP = {
    "pip-audit": "pip-audit --format json (current {dependencies} form or the legacy list)",
    "npm-audit": "npm audit --json, npm 7+ (auditReportVersion 2) or npm 6 (advisories)",
    "trivy": "trivy --format json (SchemaVersion 2) or trivy k8s --format json",
    "grype": "grype -o json",
    "osv-scanner": "osv-scanner --format json",
    "snyk": "snyk test --json (one project, or the --all-projects list)",
    "sarif": "SARIF 2.1.0 from CodeQL, Semgrep, Grype, Trivy, dependency-check …",
    "semgrep": "semgrep --json (native format)",
    "dependabot": "Dependabot alerts: REST list, one alert, a dependabot_alert webhook, or GraphQL",
}


def _command(scanner: str) -> click.Command:
    @click.command(
        scanner,
        help=f"""Ingest {_HELP[scanner]} for a repository.

Each finding is recorded with the scan that saw it; clocks start at the earliest scan that
saw a finding (never the advisory's publish date). A finding missing from a --partial scan is
not treated as fixed. All files commit together; one bad file ingests nothing. Large inputs
(several files, 16 MB or more) are parsed in worker processes, one per CPU (up to 3).

\b
Examples:
  changeproof ingest {scanner} report.json --repo acme/api
  changeproof ingest {scanner} a.json b.json --repo acme/api --scanned-at 2026-03-01T12:00Z
  changeproof ingest {scanner} report.json --repo acme/api --partial --format json
""",
    )
    @click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
    @click.option("--repo", required=True, metavar="R", help="Repository the scan belongs to.")
    @click.option(
        "--scanned-at",
        metavar="TS",
        help="When the scan ran (ISO 8601). Default: the time in the file, else now.",
    )
    @click.option(
        "--partial",
        is_flag=True,
        help="The scan covered only part of the repository: absence proves nothing.",
    )
    @click.option(
        "--target",
        metavar="T",
        help="What was scanned (image or path), for formats that do not say.",
    )
    @click.option(
        "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
    )
    @click.pass_context
    def cmd(
        ctx: click.Context,
        files: tuple[Path, ...],
        repo: str,
        scanned_at: str | None,
        partial: bool,
        target: str | None,
        fmt: str,
    ) -> None:
        from changeproof.cli.progress import progress
        from changeproof.locker import Locker
        from changeproof.vuln.ingest import ingest_files

        ws = opts(ctx).workspace()
        settings = ws.settings()
        when = parse_instant(scanned_at, what="--scanned-at time") if scanned_at else None
        now = datetime.now(UTC)
        store = ws.open_store()
        try:
            with (
                progress(f"ingest {scanner}", total=len(files)) as advance,
                store.writer(Locker(ws.signer())) as w,
            ):
                results = ingest_files(
                    w,
                    scanner,
                    files,
                    repo=repo,
                    now=now,
                    settings=settings,
                    scanned_at=when,
                    partial=partial,
                    target=target,
                    on_file=lambda _r: advance(1),
                )
        finally:
            store.close()
        if fmt == "json":
            emit_json([r.as_json() for r in results])
            return
        for r in results:
            tiers = ", ".join(f"{n} {t}" for t, n in sorted(r.by_tier.items())) or "none"
            part = " (partial: absence proves nothing)" if r.partial else ""
            click.echo(
                f"{r.file}: {r.findings} finding(s) [{tiers}] from {r.tool} ({r.format}), "
                f"scanned {r.scanned_at.isoformat()} ({r.scanned_at_source}){part} → {r.scan_id}"
            )
            for n in r.notes:
                click.echo(f"  note: {n}")

    return cmd


pip_audit = _command("pip-audit")
npm_audit = _command("npm-audit")
trivy = _command("trivy")
grype = _command("grype")
osv_scanner = _command("osv-scanner")
snyk = _command("snyk")
sarif = _command("sarif")
semgrep = _command("semgrep")
dependabot = _command("dependabot")
