"""`changeproof collect SOURCE …`"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from changeproof.cli import LazyGroup, emit_json, opts
from changeproof.cli.timeparse import parse_instant

# Sources other than git live in their own modules: name → (module, attribute).
COLLECT_COMMANDS: dict[str, tuple[str, str]] = {
    "dependabot": ("changeproof.cli.collect_dependabot", "collect_dependabot_cmd"),
    "migrations": ("changeproof.cli.collect_migrations", "collect_migrations"),
    "git": ("changeproof.cli.collect", "collect_git"),
    "github": ("changeproof.cli.collect_github", "collect_github"),
    "gitlab": ("changeproof.cli.collect_gitlab", "collect_gitlab"),
}


@click.group("collect", cls=LazyGroup, registry=COLLECT_COMMANDS)
def collect() -> None:
    """Pull evidence from systems of record into the store and the locker, incrementally.

    \b
    Examples:
      changeproof collect git .
      changeproof collect git ~/src/api --since 2026-01-01
    """


@click.command("git")
@click.argument("path", type=click.Path(path_type=Path), default=".")
@click.option(
    "--branch",
    "branches",
    multiple=True,
    metavar="B",
    help="Branch to walk (repeatable). Default: the controlled branches present.",
)
@click.option("--since", metavar="DATE", help="Only commits landed on or after DATE (ISO).")
@click.option(
    "--repo",
    "repo_name",
    metavar="NAME",
    help="Repository name for results (default: from settings or origin URL).",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.pass_context
def collect_git(
    ctx: click.Context,
    path: Path,
    branches: tuple[str, ...],
    since: str | None,
    repo_name: str | None,
    fmt: str,
) -> None:
    """Walk the first-parent history of each controlled branch of a local repository with
    real git and attribute every commit to exactly one change (PR merge, squash, rebase,
    GitLab MR, Gerrit, or a direct push). No token, no network.

    A second run reads only the new commits. Everything a run collects commits at once;
    an interrupted run keeps nothing.

    \b
    Examples:
      changeproof collect git .
      changeproof collect git ~/src/api --branch main --branch release/2.x
      changeproof collect git . --since 2026-01-01 --format json
    """
    from changeproof.cli.progress import progress
    from changeproof.locker import Locker
    from changeproof.sources.git import GitSource

    ws = opts(ctx).workspace()
    settings = ws.settings()
    since_dt = parse_instant(since, what="--since date") if since else None
    source = GitSource(path, settings, repo=repo_name)
    chosen = source.branches(list(branches) or None)
    store = ws.open_store()
    results = []
    now = datetime.now(UTC)
    try:
        with progress(f"collect {source.repo}") as advance, store.writer(Locker(ws.signer())) as w:
            # one collector per repository at a time (PostgreSQL): a second waits, then
            # continues from the first one's cursor instead of duplicating its work
            w.claim("repo", source.repo)
            for b in chosen:
                results.append(
                    source.collect_branch(store, w, b, since=since_dt, now=now, progress=advance)
                )
    finally:
        store.close()
    if fmt == "json":
        emit_json([r.__dict__ for r in results])
        return
    for r in results:
        what = "new " if r.incremental else ""
        click.echo(
            f"{r.repo} {r.branch}: {r.commits} {what}first-parent commit(s) → {r.changes} change(s), "
            f"{r.direct_pushes} direct push(es); tip {r.tip[:12]}"
        )
        for n in r.notes:
            click.echo(f"  note: {n}")
