"""Small builders for evidence tables: real records with sensible defaults, one knob per edge."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from changeproof.controls.base import Context
from changeproof.evidence import (
    Actor,
    Change,
    CheckResult,
    CommitInfo,
    FileChange,
    ProtectionRule,
    ProtectionSnapshot,
    Provenance,
    Review,
    TeamMembership,
    TimelineEvent,
)
from changeproof.settings import Settings

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
MERGED = T0 + timedelta(hours=4)
HEAD = "a" * 40
OLD = "b" * 40
MERGE = "c" * 40
QUEUE = "d" * 40


def raw(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


def prov(at: datetime, *key: object) -> Provenance:
    return Provenance(source="test", occurred_at=at, collected_at=at, raw_sha256=raw(at, *key))


def user(login: str, kind: str = "user") -> Actor:
    return Actor(login=login, type=kind)  # type: ignore[arg-type]


def commit(
    sha: str = HEAD,
    author: str = "alice",
    committer: str | None = None,
    co_authors: tuple[str, ...] = (),
    at: datetime = T0,
    kind: str = "user",
) -> CommitInfo:
    return CommitInfo(
        sha=sha,
        parents=("0" * 40,),
        author=user(author, kind),
        committer=user(committer or author, kind),
        authored_at=at,
        committed_at=at,
        message="work",
        co_authors=tuple(user(c) for c in co_authors),
    )


def review(
    who: str,
    state: str = "APPROVED",
    at: datetime = T0 + timedelta(hours=2),
    sha: str | None = HEAD,
    kind: str = "user",
    patch_id: str | None = None,
    dismissed_by: str | None = None,
    dismissed_at: datetime | None = None,
) -> Review:
    return Review(
        reviewer=user(who, kind),
        state=state,  # type: ignore[arg-type]
        submitted_at=at,
        commit_sha=sha,
        commit_patch_id=patch_id,
        dismissed_by=user(dismissed_by) if dismissed_by else None,
        dismissed_at=dismissed_at,
    )


def check(
    name: str,
    conclusion: str = "success",
    at: datetime | None = T0 + timedelta(hours=1),
    sha: str = HEAD,
    app: str | None = "github-actions",
) -> CheckResult:
    return CheckResult(
        name=name,
        conclusion=conclusion,  # type: ignore[arg-type]
        commit_sha=sha,
        completed_at=at,
        app=app,
    )


DEFAULT_BODY = (
    "## Description\nAdd rate limiting to the login endpoint.\n\n"
    "## Risk\nlow\n\n## Testing\nUnit tests; CI green.\n\n## Rollback\nRevert the merge.\n"
)


def change(**kw: Any) -> Change:
    """A merged PR #7 into acme/api:main by alice, approved by bob at the head, CI green."""
    base: dict[str, Any] = {
        "repo": "acme/api",
        "branch": "main",
        "number": 7,
        "change_type": "merge",
        "platform": "github",
        "merged_at": MERGED,
        "merge_sha": MERGE,
        "landed_shas": (MERGE,),
        "head_sha": HEAD,
        "title": "Rate-limit logins",
        "body": DEFAULT_BODY,
        "author": user("alice"),
        "merged_by": user("alice"),
        "merge_method": "merge",
        "commits": (commit(),),
        "reviews": (review("bob"),),
        "checks": (check("build"), check("test")),
        "files": (FileChange(path="src/api/app.py"),),
        "files_total": 1,
    }
    shift = kw.get("merged_at", MERGED) - MERGED
    if shift:  # keep the default evidence's timing relative to a moved merge
        base["commits"] = (commit(at=T0 + shift),)
        base["reviews"] = (review("bob", at=T0 + shift + timedelta(hours=2)),)
        base["checks"] = (
            check("build", at=T0 + shift + timedelta(hours=1)),
            check("test", at=T0 + shift + timedelta(hours=1)),
        )
    base.update(kw)
    if "provenance" not in base:
        base["provenance"] = prov(base["merged_at"], base["repo"], base.get("number"))
    return Change(**base)


def layer(**kw: Any) -> ProtectionRule:
    """A compliant classic protection layer unless overridden."""
    base: dict[str, Any] = {
        "layer": "classic",
        "requires_pr": True,
        "required_approvals": 1,
        "dismiss_stale": True,
        "required_checks": (("build", "github-actions"), ("test", "github-actions")),
        "allow_force_push": False,
        "allow_deletion": False,
        "enforce_admins": True,
    }
    base.update(kw)
    return ProtectionRule(**base)


def snapshot(
    at: datetime,
    *layers: ProtectionRule,
    repo: str = "acme/api",
    branch: str = "main",
    **kw: Any,
) -> ProtectionSnapshot:
    return ProtectionSnapshot(
        repo=repo,
        branch=branch,
        layers=layers or (layer(),),
        provenance=prov(at, repo, branch, "protection"),
        **kw,
    )


def team(name: str, members: tuple[str, ...], at: datetime) -> TeamMembership:
    return TeamMembership(team=name, members=members, provenance=prov(at, name, members))


def push(who: str, at: datetime = T0 + timedelta(hours=1)) -> TimelineEvent:
    return TimelineEvent(type="push", at=at, actor=user(who))


def digest_of(rec: Any) -> str:
    return hashlib.sha256(msgspec.json.encode(rec, order="sorted")).hexdigest()


def ctx(
    settings: Settings | None = None,
    *,
    now: datetime = MERGED + timedelta(days=1),
    protections: tuple[ProtectionSnapshot, ...] = (),
    teams: tuple[TeamMembership, ...] = (),
    extra: dict[str, Any] | None = None,
    **kw: Any,
) -> Context:
    prot: dict[tuple[str, str], list[tuple[str, ProtectionSnapshot]]] = {}
    for p in sorted(protections, key=lambda p: p.provenance.occurred_at):
        prot.setdefault((p.repo, p.branch), []).append((digest_of(p), p))
    tms: dict[str, list[tuple[str, TeamMembership]]] = {}
    for t in sorted(teams, key=lambda t: t.provenance.occurred_at):
        tms.setdefault(t.team, []).append((digest_of(t), t))
    return Context(
        settings=settings or Settings(),
        now=now,
        protections={k: tuple(v) for k, v in prot.items()},
        teams={k: tuple(v) for k, v in tms.items()},
        extra=extra or {},
        **kw,
    )


def judge(control: Any, c: Change, context: Context) -> Any:
    """Evaluate one change control the way the evaluator does (facts, then exceptions)."""
    from changeproof.controls.evaluation import evaluate_change

    return evaluate_change(c, digest_of(c), context, (control,))[0]
