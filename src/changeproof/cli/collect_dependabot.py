"""`changeproof collect dependabot --repo OWNER/NAME`: Dependabot alerts from the GitHub API."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from changeproof.cli import emit_json, opts
from changeproof.errors import ConfigError


@click.command("dependabot")
@click.option(
    "--repo", "repos", multiple=True, metavar="OWNER/NAME", help="Repository (repeatable)."
)
@click.option(
    "--api-url", metavar="URL", help="API base (GitHub Enterprise Server: https://HOST/api/v3)."
)
@click.option(
    "--token-env", metavar="VAR", help="Environment variable with the token (default GITHUB_TOKEN)."
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.pass_context
def collect_dependabot_cmd(
    ctx: click.Context,
    repos: tuple[str, ...],
    api_url: str | None,
    token_env: str | None,
    fmt: str,
) -> None:
    """Collect every Dependabot alert (open, fixed, dismissed) of the repositories through the
    REST API and ingest them as vulnerability findings. The token needs "Dependabot alerts:
    read" (fine-grained) or `security_events` (classic).

    An alert list is a partial scan: alerts missing from it are not treated as fixed; alerts
    marked fixed are fixed on the default branch, not yet in production.

    \b
    Examples:
      export GITHUB_TOKEN=ghp_…
      changeproof collect dependabot --repo acme/api --repo acme/web
      changeproof collect dependabot --repo acme/api --api-url https://ghe.example.com/api/v3
    """
    from changeproof.cli.collect_github import build_client
    from changeproof.vuln.dependabot_api import collect_dependabot

    ws = opts(ctx).workspace()
    settings = ws.settings()
    gh = settings.github
    wanted = list(repos) or list(gh.repos)
    if not wanted:
        raise ConfigError(
            "no repositories to collect Dependabot alerts from",
            expected="--repo OWNER/NAME, or [github] repos in changeproof.toml",
            hint="e.g. `changeproof collect dependabot --repo acme/api`",
        )
    url = (api_url or gh.api_url).rstrip("/")
    client = build_client(url, token_env or gh.token_env, settings)
    store = ws.open_store()
    try:
        results = collect_dependabot(
            store, ws.signer(), client, wanted, settings, datetime.now(UTC)
        )
    finally:
        client.close()
        store.close()
    if fmt == "json":
        emit_json(
            [
                {"repo": repo, "alerts": r.findings, "by_tier": r.by_tier, "scan": r.scan_id}
                for repo, r in zip(wanted, results, strict=True)
            ]
        )
        return
    for repo, r in zip(wanted, results, strict=True):
        tiers = ", ".join(f"{n} {t}" for t, n in sorted(r.by_tier.items())) or "none"
        click.echo(f"{repo}: {r.findings} Dependabot alert(s) [{tiers}] → {r.scan_id}")
