"""`changeproof token`: API tokens for the server (created, listed, revoked)."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from changeproof.cli import emit_json, opts


def _iso(us: int | None) -> str | None:
    return None if us is None else datetime.fromtimestamp(us / 1e6, UTC).isoformat()


@click.group("token")
def token() -> None:
    """API tokens for `changeproof serve`. Scopes: read (queries, dashboard); record
    (record events, and read); gate (ask the gate, and read); admin (everything, including
    starting audits). Only each token's SHA-256 is stored: it is shown once."""


FORMAT = click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)


@token.command("create")
@click.option("--scope", required=True, type=click.Choice(["read", "record", "gate", "admin"]))
@click.option("--name", default="", metavar="N", help="A label (who or what uses it).")
@FORMAT
@click.pass_context
def create(ctx: click.Context, scope: str, name: str, fmt: str) -> None:
    """Create a token and print it once.

    \b
    Examples:
      changeproof token create --scope read --name dashboard
      changeproof token create --scope gate --name deploy-pipeline --format json
    """
    from changeproof.web import tokens

    store = opts(ctx).workspace().open_store()
    try:
        tid, value = tokens.create(store, scope, name.strip() or f"{scope}-token")  # type: ignore[arg-type]
    finally:
        store.close()
    if fmt == "json":
        emit_json({"id": tid, "scope": scope, "name": name, "token": value})
    else:
        click.echo(value)
        click.echo(f"token #{tid} ({scope}) created; it is not shown again.", err=True)


@token.command("list")
@FORMAT
@click.pass_context
def list_cmd(ctx: click.Context, fmt: str) -> None:
    """List tokens (never their values).

    \b
    Examples:
      changeproof token list
    """
    from changeproof.web import tokens

    store = opts(ctx).workspace().open_store()
    try:
        rows = tokens.listing(store)
    finally:
        store.close()
    data = [
        {"id": t.id, "name": t.name, "scope": t.scope, "created_at": _iso(t.created_us),
         "revoked_at": _iso(t.revoked_us), "active": t.active}
        for t in rows
    ]  # fmt: skip
    if fmt == "json":
        emit_json(data)
        return
    if not data:
        click.echo("No API tokens (create one with `changeproof token create --scope read`).")
    for d in data:
        state = "active" if d["active"] else f"revoked {d['revoked_at']}"
        click.echo(
            f"#{d['id']:<4} {d['scope']:<7} {d['name']:<24} created {d['created_at']}  {state}"
        )


@token.command("revoke")
@click.argument("token_id", type=int)
@click.pass_context
def revoke(ctx: click.Context, token_id: int) -> None:
    """Revoke a token by its id (from `token list`); it stops working at once.

    \b
    Examples:
      changeproof token revoke 3
    """
    from changeproof.web import tokens

    store = opts(ctx).workspace().open_store()
    try:
        t = tokens.revoke(store, token_id)
    finally:
        store.close()
    click.echo(f"token #{t.id} ({t.scope}, {t.name}) revoked")
