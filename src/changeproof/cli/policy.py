"""`changeproof policy`: render the Change Management Policy, approve a version, show status."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from changeproof.cli import emit_json, opts
from changeproof.errors import EXIT_FAIL, EXIT_OK, ConfigError, NotFoundError, UsageError

if TYPE_CHECKING:
    from changeproof.evidence import PolicyApproval
    from changeproof.workspace import Workspace


@click.group(
    "policy",
    invoke_without_command=True,
    epilog="""\b
Examples:
  changeproof policy --format md                       canonical text to stdout
  changeproof policy --format pdf --out policy.pdf     typeset, with page numbers
  changeproof policy --format docx --out policy.docx   for editing suggestions in Word
  changeproof policy approve --version 1.0 --by "Dana Lee"
  changeproof policy status --period 2026-01-01..2026-06-30 --format json

The Markdown is the document of record: `changeproof policy --format md | sha256sum`
prints the digest an approval records.""",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["md", "html", "pdf", "docx"]),
    default="md",
    show_default=True,
    help="Output format (html, pdf and docx are rendered from the Markdown).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to FILE (required for pdf and docx; md and html default to stdout).",
)
@click.pass_context
def policy(ctx: click.Context, fmt: str, out: Path | None) -> None:
    """Render the Change Management Policy from changeproof.toml and the control catalogue.

    Every value in the document is the value the checks enforce; a requirement no
    registered control verifies is marked procedural. Subcommands record approvals and
    report whether the current policy is approved.
    """
    if ctx.invoked_subcommand is not None:
        return
    from changeproof.policy import render

    ws = opts(ctx).workspace()
    settings = ws.settings()
    if fmt in ("pdf", "docx") and out is None:
        raise UsageError(
            f"--format {fmt} needs --out FILE",
            expected="a file to write the binary document to",
            hint=f"changeproof policy --format {fmt} --out policy.{fmt}",
        )
    history = _history(ws) if fmt != "md" else []
    data = render(fmt, settings, history=history)  # type: ignore[arg-type]
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    _write_atomic(out, data)
    click.echo(f"wrote {out} ({fmt}, {len(data):,} bytes)", err=True)


def _history(ws: Workspace) -> list[PolicyApproval]:
    """Every recorded approval, if the workspace has a store (rendering never creates one)."""
    from changeproof.policy.versions import approvals

    try:
        store = ws.open_store(write=False)
    except NotFoundError:
        return []
    try:
        return approvals(store)
    finally:
        store.close()


def _write_atomic(out: Path, data: bytes) -> None:
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(
            f"cannot write {out} ({exc.strerror})",
            expected="a writable path for the output file",
            hint="choose another --out location",
        ) from None


@policy.command("approve")
@click.option(
    "--version", "version", required=True, metavar="V", help="The policy version approved."
)
@click.option(
    "--by",
    "by",
    required=True,
    metavar="NAME",
    help="Who approves (name, login, or 'Name <email>').",
)
@click.option("--note", default="", metavar="TEXT", help="A note kept with the approval.")
@click.option(
    "--at",
    "at",
    metavar="TIME",
    help="When the approval was given, if earlier than now (e.g. a CAB meeting); the record "
    "also keeps when it was recorded.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.pass_context
def approve_cmd(
    ctx: click.Context, version: str, by: str, note: str, at: str | None, fmt: str
) -> None:
    """Record that NAME approved the policy as rendered now from the settings.

    Stores the canonical Markdown in the evidence locker and a PolicyApproval record (the
    text's SHA-256, the settings version, who and when) in one transaction. V must equal
    organisation.policy_version; a version already approved for a different text is refused.

    \b
    Examples:
      changeproof policy approve --version 1.0 --by "Dana Lee"
      changeproof policy approve --version 1.1 --by "Dana Lee <dana@example.com>" --note "CAB 2026-03"
      changeproof policy approve --version 1.1 --by "Dana Lee" --at 2026-03-04T10:00:00Z
    """
    import msgspec

    from changeproof.policy.versions import approve

    ws = opts(ctx).workspace()
    settings = ws.settings()
    store = ws.open_store()
    try:
        from changeproof.cli.timeparse import parse_instant

        record = approve(
            store,
            ws.signer(),
            settings,
            version=version,
            by=by,
            note=note,
            now=datetime.now(UTC),
            approved_at=parse_instant(at, what="--at time") if at else None,
        )
    finally:
        store.close()
    if fmt == "json":
        emit_json(msgspec.to_builtins(record))
        return
    click.echo(
        f"approved: policy version {record.policy_version} by {by} at "
        f"{record.approved_at.strftime('%Y-%m-%d %H:%M UTC')}\n"
        f"  document SHA-256 {record.document_sha256}\n"
        f"  settings version {record.settings_version}"
    )


@policy.command("status")
@click.option("--period", metavar="A..B", help="Also report the versions in force in this period.")
@click.option(
    "--tz",
    "tz_name",
    metavar="ZONE",
    default="UTC",
    show_default=True,
    help="Time zone for the period's dates.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.pass_context
def status_cmd(ctx: click.Context, period: str | None, tz_name: str, fmt: str) -> None:
    """Is the policy rendered from the current settings approved? Which versions were in force?

    Findings: never approved; settings (or the control catalogue) changed without a newly
    approved version; settings of a superseded version in use; a version number approved for
    two texts; a period with no approved version in force; check runs judged by settings the
    version in force was not approved for.

    \b
    Exit codes: 0 no findings, 1 findings, 2 error.
    \b
    Examples:
      changeproof policy status
      changeproof policy status --period 2026-01-01..2026-06-30 --format json
    """
    from changeproof.cli.timeparse import parse_period, zone
    from changeproof.policy.versions import Window, policy_status

    start, end = parse_period(period, zone(tz_name)) if period else (None, None)
    ws = opts(ctx).workspace()
    settings = ws.settings()
    store = ws.open_store()
    try:
        status = policy_status(store, settings, Window(start, end))
    finally:
        store.close()
    if fmt == "json":
        emit_json(status.to_dict())
        ctx.exit(EXIT_OK if status.ok else EXIT_FAIL)
    click.echo(
        f"policy version {status.policy_version}: document SHA-256 {status.document_sha256[:16]}…, "
        f"settings version {status.settings_version[:16]}…"
    )
    if status.latest is not None:
        a = status.latest
        click.echo(
            f"latest approval: version {a.policy_version} by "
            f"{a.approver.name or a.approver.login or a.approver.email} on "
            f"{a.approved_at.strftime('%Y-%m-%d %H:%M UTC')}"
        )
    if period:
        if status.during:
            for a in status.during:
                click.echo(
                    f"in force during {period}: version {a.policy_version} "
                    f"(approved {a.approved_at.strftime('%Y-%m-%d')}, SHA-256 {a.document_sha256[:12]}…)"
                )
        else:
            click.echo(f"in force during {period}: no approved version")
    if status.ok:
        click.echo("ok: the current policy is approved")
        ctx.exit(EXIT_OK)
    for f in status.findings:
        click.echo(f"FINDING [{f.code}] {f.message}\n  Fix: {f.hint}")
    ctx.exit(EXIT_FAIL)
