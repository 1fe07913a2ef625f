"""`changeproof collect gitlab`"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import click

from changeproof.cli import emit_json, opts
from changeproof.cli.timeparse import parse_instant
from changeproof.errors import ConfigError


def graphql_url_for(api_url: str) -> str:
    """GitLab serves GraphQL at /api/graphql beside /api/v4."""
    base = api_url.rstrip("/")
    if base.endswith("/api/v4"):
        return base[: -len("/v4")] + "/graphql"
    return base + "/graphql"


def build_gitlab_client(api_url: str, token: str, *, transport: Any = None) -> Any:
    from changeproof.sources.gitlab import gitlab_error_mapper
    from changeproof.sources.http import HttpClient

    return HttpClient(
        api_url,
        auth=lambda: f"Bearer {token}",
        transport=transport,
        error_mapper=gitlab_error_mapper(api_url),
    )


@click.command("gitlab")
@click.option(
    "--project",
    "projects",
    multiple=True,
    metavar="GROUP/PROJECT",
    help="Project path (repeatable). Default: [gitlab] projects in the settings.",
)
@click.option("--api-url", metavar="URL", help="API base (self-managed: https://HOST/api/v4).")
@click.option(
    "--token-env",
    metavar="VAR",
    help="Environment variable with a read_api token (default CHANGEPROOF_GITLAB_TOKEN).",
)
@click.option("--since", metavar="DATE", help="Only changes landed on or after DATE (first run).")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.pass_context
def collect_gitlab(
    ctx: click.Context,
    projects: tuple[str, ...],
    api_url: str | None,
    token_env: str | None,
    since: str | None,
    fmt: str,
) -> None:
    """Collect merged merge requests (approvals with their real times and the version each
    covered, pushes, commits with co-authors, head pipelines and jobs, changed files),
    first-parent history with direct pushes, protected branches and approval settings, and
    deployments with their approvals from gitlab.com or a self-managed GitLab.

    Incremental and resumable: each branch commits on its own; a second run asks only for
    what landed since.

    \b
    Examples:
      export CHANGEPROOF_GITLAB_TOKEN=glpat-…
      changeproof collect gitlab --project acme/api
      changeproof collect gitlab --api-url https://gitlab.example.com/api/v4 --project ops/infra
    """
    from changeproof.cli.progress import progress
    from changeproof.sources.gitlab import GitLabSource

    ws = opts(ctx).workspace()
    settings = ws.settings()
    gl = settings.gitlab
    chosen = list(projects) or list(gl.projects)
    if not chosen:
        raise ConfigError(
            "no GitLab project to collect",
            expected="--project GROUP/PROJECT or [gitlab] projects in changeproof.toml",
            hint="changeproof collect gitlab --project acme/api",
        )
    url = api_url or gl.api_url
    var = token_env or gl.token_env
    token = os.environ.get(var, "").strip()
    if not token:
        raise ConfigError(
            f"no GitLab token: the environment variable {var} is empty",
            expected="a personal, group or project access token with the read_api scope",
            hint=f"export {var}=glpat-… (or pass --token-env NAME)",
        )
    since_dt = parse_instant(since, what="--since date") if since else None
    now = datetime.now(UTC)
    store = ws.open_store()
    results = []
    try:
        with (
            build_gitlab_client(url, token) as client,
            progress("collect gitlab", total=len(chosen)) as advance,
        ):
            source = GitLabSource(client, settings, graphql_url=graphql_url_for(url))
            signer = ws.signer()
            for path in chosen:
                results.append(source.collect_project(store, signer, path, since=since_dt, now=now))
                advance(1)
            stats = client.stats.snapshot()
    finally:
        store.close()
    if fmt == "json":
        emit_json({"projects": [r.__dict__ for r in results], "requests": stats})
        return
    for r in results:
        click.echo(
            f"{r.project} ({', '.join(r.branches)}): {r.merge_requests} merged MR(s), "
            f"{r.changes} change(s), {r.direct_pushes} direct push(es), {r.absorbed} merged as "
            f"part of another MR, {r.deployments} deployment(s)"
        )
        for n in r.notes:
            click.echo(f"  note: {n}")
    click.echo(f"{stats.get('requests', 0)} request(s)")
