"""`changeproof serve`: webhooks, the REST API and the dashboard on the same store."""

from __future__ import annotations

import click

from changeproof.cli import opts


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (loopback unless told otherwise; put TLS in front).")  # fmt: skip
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port to listen on.")  # fmt: skip
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))  # fmt: skip
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, log_level: str) -> None:
    """Serve webhook receivers (/webhooks/github, /webhooks/gitlab), the REST API
    (/api/v1, OpenAPI at /api/v1/openapi.json) and the dashboard (/) on this workspace's store.

    Webhook secrets come from the environment variables named by github.webhook_secret_env
    (default CHANGEPROOF_GITHUB_WEBHOOK_SECRET) and gitlab.webhook_token_env (default
    CHANGEPROOF_GITLAB_WEBHOOK_TOKEN). API and dashboard access: `changeproof token create`.
    Production setup (systemd, TLS via a reverse proxy, PostgreSQL): docs/server.md.

    \b
    Examples:
      changeproof token create --scope read --name dashboard
      CHANGEPROOF_GITHUB_WEBHOOK_SECRET=… changeproof serve
      changeproof --db postgresql://cp@db/changeproof serve --host 0.0.0.0 --port 8443
    """
    import uvicorn

    from changeproof.web.app import create_app, http_stack

    ws = opts(ctx).workspace()
    # X-Forwarded-* from a local reverse proxy: handled inside the app, off the webhook path
    app = create_app(ws, forwarded_allow_ips="127.0.0.1")
    http, loop = http_stack()
    click.echo(
        f"changeproof serving {ws.home} on http://{host}:{port}/ (store {app.state.cp.store.url}; "
        f"HTTP {http}, event loop {loop})"
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False,
                proxy_headers=False, http=http, loop=loop)  # fmt: skip
