"""`changeproof collect github`"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

import click

from changeproof.cli import emit_json, opts
from changeproof.errors import ConfigError


def build_client(api_url: str, token_env: str, settings: Any, *, transport: Any = None) -> Any:
    """The HTTP client with token or GitHub App auth (transport injectable for the demo)."""
    from changeproof.sources.github.auth import AppAuth, load_private_key, token_auth
    from changeproof.sources.github.collector import github_error_mapper
    from changeproof.sources.http import HttpClient

    gh = settings.github
    if gh.app_id:
        if not gh.app_private_key_path:
            raise ConfigError(
                "[github] app_id is set but app_private_key_path is not",
                hint="set app_private_key_path to the App's private key (.pem)",
            )
        repos = list(gh.repos)
        auth: Any = AppAuth(
            api_url,
            gh.app_id,
            load_private_key(gh.app_private_key_path),
            installation_id=gh.app_installation_id,
            org=gh.org,
            repo=repos[0] if repos else None,
            transport=transport,
        )
    else:
        token = os.environ.get(token_env, "").strip()
        if not token:
            raise ConfigError(
                f"no GitHub token: the environment variable {token_env} is empty",
                expected="a token (classic with `repo` and `read:org`, or fine-grained with read "
                "access to contents, pull requests, checks, actions, deployments, administration)",
                hint=f"export {token_env}=… (or pass --token-env NAME, or configure a GitHub App "
                "under [github])",
            )
        auth = token_auth(token)
    return HttpClient(api_url, auth=auth, transport=transport, error_mapper=github_error_mapper)


@click.command("github")
@click.option("--org", metavar="O", help="Collect every repository of this organisation.")
@click.option(
    "--repo", "repos", multiple=True, metavar="OWNER/NAME", help="Repository (repeatable)."
)
@click.option(
    "--api-url", metavar="URL", help="API base (GitHub Enterprise Server: https://HOST/api/v3)."
)
@click.option(
    "--token-env", metavar="VAR", help="Environment variable with the token (default GITHUB_TOKEN)."
)
@click.option("--workers", type=click.IntRange(1, 16), help="Repositories collected at once.")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.pass_context
def collect_github(
    ctx: click.Context,
    org: str | None,
    repos: tuple[str, ...],
    api_url: str | None,
    token_env: str | None,
    workers: int | None,
    fmt: str,
) -> None:
    """Collect merged pull requests (reviews with the commit each approved, dismissals,
    force pushes, commits, checks, files), first-parent history with direct pushes,
    protection (classic and rulesets), environments, deployments and approvals from GitHub
    or GitHub Enterprise Server.

    Incremental and resumable: a second run asks only what changed (about one request per
    unchanged repository); an interrupted run keeps every finished page and resumes there.
    A repository that cannot finish is recorded as incomplete coverage (CM-POP-1).

    \b
    Examples:
      export GITHUB_TOKEN=ghp_…
      changeproof collect github --org acme
      changeproof collect github --repo acme/api --repo acme/web --format json
      changeproof collect github --org acme --api-url https://ghe.example.com/api/v3
    """
    from changeproof.cli.progress import progress
    from changeproof.sources.github import GitHubSource, Options

    ws = opts(ctx).workspace()
    settings = ws.settings()
    gh = settings.github
    url = (api_url or gh.api_url).rstrip("/")
    chosen_org = org or (None if repos else gh.org)
    wanted = list(repos) or ([] if org else list(gh.repos))
    if not chosen_org and not wanted:
        raise ConfigError(
            "no GitHub repositories to collect",
            expected="--org O, --repo OWNER/NAME, or [github] org / repos in changeproof.toml",
            hint="e.g. `changeproof collect github --repo acme/api`",
        )
    client = build_client(url, token_env or gh.token_env, settings)
    options = Options(
        page_size=gh.page_size, workers=workers or gh.workers, archive_logs=gh.archive_logs
    )
    source = GitHubSource(client, settings, api_url=url, options=options)
    try:
        results, stats = run_collect(ws, source, chosen_org, wanted, progress)
    finally:
        client.close()
    if fmt == "json":
        emit_json({"repositories": [asdict(r) for r in results], "requests": stats})
        return
    for r in results:
        if r.skipped:
            click.echo(f"{r.repo}: unchanged since the last collect")
            continue
        click.echo(
            f"{r.repo}: {r.pull_requests} merged PR(s), {r.direct_pushes} direct push(es), "
            f"{r.deployments} deployment(s), {r.approvals} approval(s), {r.bypasses} bypass(es), "
            f"{r.snapshots} protection snapshot(s), {r.log_archives} CI log archive(s)"
        )
    for note in sorted({n for r in results for n in r.notes}):
        click.echo(f"note: {note}")
    click.echo(
        f"{stats['requests']} request(s) ({stats['graphql_requests']} GraphQL, "
        f"{stats['points']} point(s); {stats['not_modified']} not modified)"
    )


def run_collect(
    ws: Any, source: Any, org: str | None, repos: list[str], progress: Any
) -> tuple[list[Any], dict[str, Any]]:
    """Validate everything (nothing is written if the token, URL or a name is wrong), then
    collect with a progress bar. Shared by the CLI and the offline demo."""
    if org:
        source.validate([])
        repos = sorted(set(repos) | set(source.repos_of_org(org)))
    source.validate(repos)
    store = ws.open_store()
    try:
        # what is left to fetch: merged PRs GitHub counts minus the changes already stored
        total = sum(
            max(
                0,
                int(((source.probe(r).get("pullRequests") or {}).get("totalCount")) or 0)
                - store.count("change", r),
            )
            for r in repos
        )
        with progress("collect github", total=total or None) as advance:
            results = source.collect(store, ws.signer(), repos, progress=advance)
    finally:
        store.close()
    return results, source.client.stats.snapshot()
