"""init, verify, controls, db and key commands."""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

import click

from changeproof.cli import emit_json, opts
from changeproof.errors import EXIT_FAIL, EXIT_OK, UsageError


def template_text() -> str:
    return resources.files("changeproof").joinpath("data", "changeproof.toml").read_text("utf-8")


@click.command("init")
@click.option("--force", is_flag=True, help="Overwrite an existing settings file.")
@click.option("--print", "print_only", is_flag=True, help="Print the commented defaults and exit.")
@click.pass_context
def init_cmd(ctx: click.Context, force: bool, print_only: bool) -> None:
    """Write a commented changeproof.toml with safe defaults and create the workspace
    (its database and the ed25519 key that signs the locker's checkpoints).

    \b
    Examples:
      changeproof init
      changeproof init --print > changeproof.example.toml
      changeproof --home /var/lib/changeproof init
    """
    text = template_text()
    if print_only:
        click.echo(text, nl=False)
        return
    ws = opts(ctx).workspace()
    cfg: Path = ws.config_path
    if cfg.exists() and not force:
        click.echo(f"{cfg} exists; left unchanged (use --force to overwrite).")
    else:
        tmp = cfg.with_name(cfg.name + ".tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(cfg)
        except OSError as exc:
            from changeproof.errors import ConfigError

            raise ConfigError(
                f"cannot write {cfg} ({exc.strerror})",
                hint="run from a writable folder or pass --config PATH",
            ) from None
        click.echo(f"wrote {cfg}")
    ws.settings()  # validate whatever is there now
    store = ws.open_store()
    store.close()
    from changeproof.locker import Signer

    signer = Signer.load(ws.keys_dir)
    click.echo(f"workspace {ws.home} ready (store: {store.url}; locker key {signer.key_id})")


@click.command("verify")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option(
    "--public-key",
    type=click.Path(exists=True, path_type=Path),
    help="Verify signatures with this ed25519 public key (PEM).",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.pass_context
def verify_cmd(ctx: click.Context, path: Path | None, public_key: Path | None, fmt: str) -> None:
    """Check the evidence locker (no PATH) or an audit package (PATH: folder or .zip).

    Locker: re-derives the SHA-256 of every stored record and every chain link and checks
    every signed checkpoint; names the first bad one. Package: checks the signed manifest
    offline and names every changed, missing or added file and any bad signature.

    \b
    Exit codes: 0 intact, 1 tampered, 2 cannot verify (missing store or key).
    \b
    Examples:
      changeproof verify
      changeproof verify --format json
      changeproof verify --public-key locker.pub.pem
      changeproof verify audit-h1/
      changeproof verify audit-h1.zip --public-key org-key.pem
    """
    if path is not None:
        from changeproof.audit.verify import verify_package

        trusted = public_key.read_bytes() if public_key else None
        rep = verify_package(path, trusted_key=trusted)
        data = rep.to_dict()
        if fmt == "json":
            emit_json(data)
        elif rep.ok:
            click.echo(
                f"intact: audit package {path} — {rep.files} files match the signed manifest; "
                f"signed by key {rep.fingerprint}"
                + ("" if public_key else " (pin the organisation's key with --public-key)")
            )
        else:
            click.echo(f"TAMPERED: audit package {path} — {len(rep.problems)} problem(s)")
            for p in rep.problems:
                click.echo(f"  {p}")
        ctx.exit(EXIT_OK if rep.ok else EXIT_FAIL)
    from changeproof.locker import verify_locker

    ws = opts(ctx).workspace()
    pem = public_key.read_bytes() if public_key else ws.public_key_pem()
    store = ws.open_store(write=False)
    try:
        report = verify_locker(store, pem)
    finally:
        store.close()
    _print_report(report.to_dict(), fmt, f"locker in {ws.home}")
    ctx.exit(EXIT_OK if report.ok else EXIT_FAIL)


def _print_report(data: dict[str, object], fmt: str, what: str) -> None:
    if fmt == "json":
        emit_json(data)
        return
    if data["intact"]:
        click.echo(
            f"intact: {what} — {data.get('entries', data.get('files', 0))} entries, "
            f"{data.get('checkpoints', 0)} signed checkpoint(s), every hash re-derived"
        )
        return
    problems = data["problems"]
    assert isinstance(problems, list)
    click.echo(f"TAMPERED: {what} — {len(problems)} problem(s); first: {problems[0]}")
    for p in problems[1:]:
        click.echo(f"  also: {p}")


@click.command("controls")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "md"]),
    default="table",
    show_default=True,
)
def controls_cmd(fmt: str) -> None:
    """List the control catalogue with definitions and framework mappings.

    \b
    Examples:
      changeproof controls
      changeproof controls --format json | jq '.[].id'
      changeproof controls --format md > docs/controls.md
    """
    from changeproof.controls import ALL_CONTROLS

    defs = [c.definition for c in ALL_CONTROLS]
    if fmt == "json":
        import msgspec

        emit_json([msgspec.to_builtins(d) for d in defs])
        return
    if fmt == "md":
        from changeproof.controls.frameworks import TITLES

        out = ["# Control catalogue", ""]
        for d in defs:
            out += [f"## {d.id} — {d.title}", "", d.statement, ""]
            out += ["| framework | references |", "|---|---|"]
            out += [f"| {TITLES.get(k, k)} | {', '.join(v)} |" for k, v in d.mappings.items()]
            out += ["", f"**Evidence read:** {'; '.join(d.evidence)}", ""]
            out += [f"**Test procedure:** {d.procedure}", ""]
            out += [f"**Pass criterion:** {d.pass_criterion}", ""]
            out += ["**Outcomes:**", ""]
            out += [f"- `{k}`: {v}" for k, v in d.outcomes.items()]
            out += ["", f"**Remediation:** {d.remediation}", ""]
        click.echo("\n".join(out))
        return
    for d in defs:
        maps = "; ".join(f"{k}: {', '.join(v)}" for k, v in d.mappings.items())
        click.echo(f"{d.id:<10} {d.title}")
        click.echo(f"{'':<10} {maps}")


@click.group("db")
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply the schema migrations to the store (SQLite or PostgreSQL).

    \b
    Examples:
      changeproof db upgrade
      changeproof --db postgresql://changeproof@db/changeproof db upgrade
    """
    ws = opts(ctx).workspace()
    if ws.is_sqlite:
        ws.ensure_home()
    from changeproof.store import Store

    store = Store.open(ws.db_url, migrate=False)
    try:
        head = store.upgrade()
    finally:
        store.close()
    click.echo(f"{store.url}: schema at revision {head}")


@db.command("copy")
@click.option(
    "--to",
    "target",
    required=True,
    metavar="URL",
    help="Empty target database, e.g. postgresql://USER@HOST/DB.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.pass_context
def db_copy(ctx: click.Context, target: str, fmt: str) -> None:
    """Copy this workspace's whole store (evidence, cursors, results and the evidence
    locker with its chain and signed checkpoints, unchanged) into an empty database —
    typically from the embedded SQLite file to PostgreSQL. The target is migrated first,
    written in one transaction, then its locker is verified with this workspace's key.

    Afterwards point the workspace at the target with --db / CHANGEPROOF_DB.

    \b
    Examples:
      changeproof db copy --to postgresql://changeproof@db.internal/changeproof
      CHANGEPROOF_DB=postgresql://changeproof@db.internal/changeproof changeproof verify
    """
    from changeproof.cli.progress import progress
    from changeproof.locker import verify_locker
    from changeproof.store import Store
    from changeproof.store.copy import copy_store, source_rows
    from changeproof.workspace import Workspace

    ws = opts(ctx).workspace()
    dst_url = Workspace.resolve(str(ws.home), target, str(ws.config_path)).db_url
    if dst_url == ws.db_url:
        raise UsageError(
            "the copy's target is the workspace's own database",
            expected="--to naming a different, empty database",
            hint="pass the new database's URL, e.g. --to postgresql://USER@HOST/DB",
        )
    pem = ws.public_key_pem()
    src = ws.open_store(write=False)
    try:
        dst = Store.open(dst_url)
        try:
            with progress("copy", total=source_rows(src)) as advance:
                report = copy_store(src, dst, progress=advance)
            verified = verify_locker(dst, pem)
        finally:
            dst.close()
    finally:
        src.close()
    data = {**report.to_dict(), "locker": verified.to_dict()}
    if fmt == "json":
        emit_json(data)
    else:
        for name, n in report.rows.items():
            click.echo(f"{name:<20} {n:>10} row(s)")
        click.echo(f"copied {report.total} row(s) from {report.source} to {report.target}")
        _print_report(verified.to_dict(), "text", f"locker in {report.target}")
    ctx.exit(EXIT_OK if verified.ok else EXIT_FAIL)


@click.group("key")
def key() -> None:
    """The workspace's locker signing key."""


@key.command("export")
@click.option("--out", type=click.Path(path_type=Path), help="Write to FILE instead of stdout.")
@click.pass_context
def key_export(ctx: click.Context, out: Path | None) -> None:
    """Export the public key that verifies the locker's checkpoints (PEM).

    \b
    Example:
      changeproof key export --out locker.pub.pem
    """
    ws = opts(ctx).workspace()
    pem = ws.public_key_pem()
    if out is None:
        sys.stdout.write(pem.decode())
    else:
        out.write_bytes(pem)
        click.echo(f"wrote {out}")
