"""`changeproof collect migrations PATH`: database migrations of the collected changes.

For every collected change of the repository that touches ``infrastructure.migration_paths``,
read each migration file (and its down/undo companions) from git at the change's commit,
judge the tool and its rollback evidence, take the rollback plan from the change record, and
note which recorded deployments contain the change. Idempotent: unchanged results are not
written again, so it can run after every `collect git` and `record deployment`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from changeproof.cli import emit_json, opts
from changeproof.evidence import Change, Deployment, DeploymentRef, MigrationFile, MigrationInfo


@dataclass
class Ancestry:
    """Does a deployed commit contain a change? First-parent positions, then git."""

    path: Path
    _positions: dict[str, dict[str, int]] = field(default_factory=dict)
    _resolved: dict[str, str | None] = field(default_factory=dict)
    _answers: dict[tuple[str, str], bool] = field(default_factory=dict)

    def _git(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["git", "-C", str(self.path), *args], capture_output=True, check=False
        )

    def positions(self, branch: str) -> dict[str, int]:
        if branch not in self._positions:
            out: dict[str, int] = {}
            for ref in (f"refs/heads/{branch}", f"refs/remotes/origin/{branch}"):
                proc = self._git("rev-list", "--first-parent", "--reverse", ref)
                if proc.returncode == 0:
                    out = {s: i for i, s in enumerate(proc.stdout.decode().split())}
                    break
            self._positions[branch] = out
        return self._positions[branch]

    def resolve(self, sha: str) -> str | None:
        if sha not in self._resolved:
            proc = self._git("rev-parse", "--verify", "--quiet", f"{sha}^{{commit}}")
            self._resolved[sha] = proc.stdout.decode().strip() if proc.returncode == 0 else None
        return self._resolved[sha]

    def contains(self, deployed: str, change: Change) -> bool:
        if any(s.startswith(deployed) or deployed.startswith(s) for s in change.landed_shas):
            return True
        full = self.resolve(deployed)
        if full is None:
            return False  # a commit this clone does not have cannot be placed
        pos = self.positions(change.branch)
        if full in pos and change.merge_sha in pos:
            return pos[full] >= pos[change.merge_sha]
        key = (change.merge_sha, full)
        if key not in self._answers:
            proc = self._git("merge-base", "--is-ancestor", change.merge_sha, full)
            self._answers[key] = proc.returncode == 0
        return self._answers[key]


def rollback_plan(change: Change) -> str | None:
    from changeproof.controls.documentation import parse_record

    body = change.body or ""
    if not body.strip():
        body = "\n\n".join(c.message.split("\n", 1)[1] for c in change.commits if "\n" in c.message)
    fields, _ = parse_record(body)
    return fields.get("rollback")


def migrations_of(
    change: Change, path: Path, patterns: tuple[str, ...]
) -> tuple[list[MigrationFile], dict[str, str | None]]:
    from changeproof.iac.migrations import GitTree, detect
    from changeproof.settings import path_matches

    tree = GitTree(path, change.merge_sha)
    out: list[MigrationFile] = []
    for f in change.files or ():
        if f.status == "deleted" or not path_matches(f.path, patterns):
            continue
        m = detect(f.path, tree.read, tree.listdir)
        if m is not None:
            out.append(m)
    return out, tree.contents()


def collect(
    path: Path,
    store: Any,
    w: Any,
    settings: Any,
    repo: str,
    now: datetime,
    advance: Callable[[int], None] | None = None,
) -> list[tuple[MigrationInfo, bool]]:
    """(record, written?) for every change of ``repo`` touching migration paths."""
    import msgspec

    from changeproof.evidence import Provenance, canonical_json
    from changeproof.settings import path_matches

    patterns = settings.infrastructure.migration_paths
    deployments = [d for _, d in store.iter_records(Deployment, repo=repo)]
    anc = Ancestry(path)
    out: list[tuple[MigrationInfo, bool]] = []
    for _, change in store.iter_records(Change, repo=repo):
        if advance is not None:
            advance(1)
        if not change.files or not any(
            f.status != "deleted" and path_matches(f.path, patterns) for f in change.files
        ):
            continue
        files, contents = migrations_of(change, path, patterns)
        refs = tuple(
            DeploymentRef(
                id=d.id,
                environment=d.environment,
                commit_sha=d.commit_sha,
                status=d.status,
                started_at=d.started_at,
                finished_at=d.finished_at,
            )
            for d in deployments
            if anc.contains(d.commit_sha, change)
        )
        commits = tuple(
            dict.fromkeys([*change.landed_shas, *([change.head_sha] if change.head_sha else [])])
        )
        fields: dict[str, Any] = {
            "id": change.id,
            "repo": change.repo,
            "subject": change.id,
            "branch": change.branch,
            "commit_sha": change.merge_sha,
            "commits": commits,
            "merged_at": change.merged_at,
            "files": tuple(files),
            "rollback_plan": rollback_plan(change),
            "deployments": refs,
        }
        found = store.get(MigrationInfo, change.id)
        if found is not None:
            old = msgspec.to_builtins(found[1])
            old.pop("provenance", None)
            if old == msgspec.to_builtins(fields):
                out.append((found[1], False))
                continue
        raw = canonical_json(
            {
                "type": "changeproof.migrations/v1",
                "change": change.id,
                "commit": change.merge_sha,
                "files": contents,
            }
        )
        sha = w.put_raw(raw, kind="git.migrations", source="git", media_type="application/json")
        rec = MigrationInfo(
            **fields,
            provenance=Provenance(
                source="git", occurred_at=change.merged_at, collected_at=now, raw_sha256=sha
            ),
        )
        w.put(rec)
        out.append((rec, True))
    return out


@click.command("migrations")
@click.argument("path", type=click.Path(path_type=Path), default=".")
@click.option("--repo", "repo_name", metavar="NAME", help="Repository name (as collected).")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.pass_context
def collect_migrations(ctx: click.Context, path: Path, repo_name: str | None, fmt: str) -> None:
    """Find the database migrations each collected change added (Alembic, Django, Flyway,
    Liquibase, Rails, Prisma, golang-migrate), read them from git at the change's commit,
    and judge whether each can be undone. CM-IAC-4 uses this with the deployments recorded
    for the change. Run it after `collect git` (and again after recording deployments).

    \b
    Examples:
      changeproof collect git . --repo acme/app
      changeproof collect migrations . --repo acme/app
      changeproof collect migrations ~/src/api --format json
    """
    import msgspec

    from changeproof.cli.progress import progress
    from changeproof.locker import Locker
    from changeproof.sources.git import GitSource

    ws = opts(ctx).workspace()
    settings = ws.settings()
    source = GitSource(path, settings, repo=repo_name)
    now = datetime.now(UTC)
    store = ws.open_store()
    try:
        total = store.count(Change.kind, source.repo)
        with (
            progress(f"migrations {source.repo}", total) as advance,
            store.writer(Locker(ws.signer())) as w,
        ):
            results = collect(source.path, store, w, settings, source.repo, now, advance)
    finally:
        store.close()
    if fmt == "json":
        emit_json([{"written": written, **msgspec.to_builtins(rec)} for rec, written in results])
        return
    if not results:
        click.echo(f"{source.repo}: no collected change touches a migration path")
        return
    for rec, written in results:
        state = "" if written else " (unchanged)"
        click.echo(f"{rec.subject}: {len(rec.files)} migration(s){state}")
        for f in rec.files:
            rev = {True: "reversible", False: "IRREVERSIBLE", None: "unknown"}[f.reversible]
            click.echo(f"  {f.path} [{f.tool}] {rev}: {f.why}")
        if rec.rollback_plan:
            click.echo(f"  rollback plan: {rec.rollback_plan.splitlines()[0][:100]}")
