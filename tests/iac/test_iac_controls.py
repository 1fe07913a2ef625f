"""CM-IAC-2/3/4 as pure functions of records, settings and ``now`` (edge cases)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from changeproof.controls.base import Context
from changeproof.controls.iac import (
    APPROVALS_KEY,
    MigrationsSafe,
    NoUnresolvedDrift,
    PlanBeforeApply,
    glob_regex,
)
from changeproof.evidence import (
    ApplyRecord,
    Deployment,
    DriftItem,
    DriftReport,
    MigrationFile,
    MigrationInfo,
    PlanRecord,
    Provenance,
    Record,
    ResourceChangeInfo,
)
from changeproof.outcomes import Outcome
from changeproof.settings import Settings, path_matches

T = datetime(2026, 2, 1, tzinfo=UTC)
Z = "0" * 64


def prov(at: datetime = T) -> Provenance:
    return Provenance(source="test", occurred_at=at, collected_at=at, raw_sha256=Z)


def dig(r: Record) -> str:
    return hashlib.sha256(msgspec.json.encode(r)).hexdigest()


def ctx(
    *records: Record,
    now: datetime = T + timedelta(days=1),
    extra: Mapping[str, object] | None = None,
) -> Context:
    tables: dict[str, list[tuple[str, Record]]] = {}
    for r in records:
        tables.setdefault(r.kind, []).append((dig(r), r))
    return Context(
        settings=Settings(),
        now=now,
        tables={k: tuple(v) for k, v in tables.items()},
        extra=extra or {},
    )


def res(address: str, d: str = "1") -> ResourceChangeInfo:
    return ResourceChangeInfo(
        address=address, type="aws_s3_bucket", action="create", actions=("create",), digest=d * 64
    )


def plan(digest: str = "a", **kw: object) -> PlanRecord:
    base: dict[str, object] = {
        "id": f"acme/infra|prod|{digest}",
        "repo": "acme/infra",
        "workspace": "prod",
        "subject": "acme/infra#1",
        "digest": digest * 64,
        "changes_digest": digest * 64,
        "file_sha256": Z,
        "format_version": "1.2",
        "planned_at": T,
        "resources": (res("aws_s3_bucket.a"),),
        "provenance": prov(),
    }
    base.update(kw)
    return PlanRecord(**base)  # type: ignore[arg-type]


def apply(
    digest: str | None = "a", at: datetime = T + timedelta(hours=3), **kw: object
) -> ApplyRecord:
    base: dict[str, object] = {
        "id": "apply-1",
        "repo": "acme/infra",
        "workspace": "prod",
        "environment": "production",
        "plan_digest": digest * 64 if digest else None,
        "changes_digest": digest * 64 if digest else None,
        "resources": (res("aws_s3_bucket.a"),),
        "applied_at": at,
        "provenance": prov(at),
    }
    base.update(kw)
    return ApplyRecord(**base)  # type: ignore[arg-type]


APPROVED = {
    APPROVALS_KEY: {
        "acme/infra#1": {
            "approvals_required": "1",
            "approval_times": (T + timedelta(hours=1)).isoformat(),
        }
    }
}


def test_cm_iac_2_edges() -> None:
    c = PlanBeforeApply()
    p = plan()
    assert c.evaluate(apply(), ctx(p, extra=APPROVED), Z).outcome is Outcome.PASS
    r = c.evaluate(apply(), ctx(extra=APPROVED), Z)
    assert r.outcome is Outcome.FAIL and "matches no plan" in r.reasons[0]
    r = c.evaluate(apply(), ctx(plan(errored=True), extra=APPROVED), Z)
    assert r.outcome is Outcome.FAIL and "errored" in r.reasons[0]
    r = c.evaluate(apply(), ctx(p), Z)
    assert r.outcome is Outcome.INDETERMINATE and "no review evidence" in r.reasons[0]
    r = c.evaluate(apply(), ctx(plan(subject=None), extra=APPROVED), Z)
    assert r.outcome is Outcome.INDETERMINATE and "attached to no change" in r.reasons[0]
    # re-planned with identical resource changes: same changes digest, other document digest
    r = c.evaluate(apply(digest="a", plan_digest="b" * 64), ctx(p, extra=APPROVED), Z)
    assert r.outcome is Outcome.PASS and "re-planned" in r.reasons[-1]
    # a different plan for the workspace: the differing resources are named
    other = apply(digest="c", resources=(res("aws_s3_bucket.a", "2"), res("aws_s3_bucket.b")))
    r = c.evaluate(other, ctx(p, extra=APPROVED), Z)
    assert r.outcome is Outcome.FAIL
    assert r.reasons[1:] == (
        "aws_s3_bucket.a: create with different values than reviewed",
        "aws_s3_bucket.b: create in the applied plan, absent from the reviewed one",
    )
    # destructive plan: privileged approvals
    destructive = plan(
        resources=(
            ResourceChangeInfo(
                address="aws_db.x",
                type="aws_db",
                action="delete",
                actions=("delete",),
                destructive=True,
                digest="3" * 64,
            ),
        )
    )
    r = c.evaluate(apply(), ctx(destructive, extra=APPROVED), Z)
    assert r.outcome is Outcome.FAIL and "1 of 2 required" in r.reasons[0]


def test_cm_iac_3_errors_do_not_break_a_drift_streak() -> None:
    c = NoUnresolvedDrift()

    def rep(day: int, status: str) -> DriftReport:
        at = T + timedelta(days=day)
        return DriftReport(
            id=f"r{day}",
            repo="acme/infra",
            workspace="prod",
            mode="refresh-only",
            checked_at=at,
            status=status,  # type: ignore[arg-type]
            drifted=(DriftItem(address="aws_sg.web", actions=("update",)),)
            if status == "drift"
            else (),
            provenance=prov(at),
        )

    cx = ctx(rep(0, "drift"), rep(3, "error"), rep(6, "drift"), now=T + timedelta(days=8))
    ((subject, d),) = c.subjects(cx)
    r = c.evaluate(subject, cx, d)
    assert r.outcome is Outcome.FAIL and r.subject == "acme/infra:prod"
    assert "since 2026-02-01" in r.reasons[0] and "aws_sg.web" in r.reasons[0]
    # reports after `now` are not seen (judging as of an earlier time)
    cx = ctx(rep(0, "clean"), rep(6, "drift"), now=T + timedelta(days=2))
    ((subject, d),) = c.subjects(cx)
    assert c.evaluate(subject, cx, d).outcome is Outcome.PASS
    assert c.subjects(ctx()) == []


def _mig(
    files: tuple[MigrationFile, ...], plan_text: str | None = None, **kw: object
) -> MigrationInfo:
    base: dict[str, object] = {
        "id": "acme/app#5",
        "repo": "acme/app",
        "subject": "acme/app#5",
        "branch": "main",
        "commit_sha": "b" * 40,
        "commits": ("b" * 40,),
        "merged_at": T,
        "files": files,
        "rollback_plan": plan_text,
        "provenance": prov(),
    }
    base.update(kw)
    return MigrationInfo(**base)  # type: ignore[arg-type]


def _dep(env: str, hours: float, status: str = "success", sha: str = "b" * 40) -> Deployment:
    at = T + timedelta(hours=hours)
    return Deployment(
        id=f"{env}-{hours}",
        repo="acme/app",
        environment=env,
        commit_sha=sha,
        status=status,  # type: ignore[arg-type]
        started_at=at,
        finished_at=at + timedelta(minutes=5),
        provenance=prov(at),
    )


UNKNOWN = MigrationFile(path="migrations/001.sql", tool="unknown", reversible=None, why="?")
GOOD = MigrationFile(path="m/1.up.sql", tool="golang-migrate", reversible=True, why="1.down.sql")


@pytest.mark.parametrize(
    ("files", "plan_text", "deps", "outcome"),
    [
        ((), None, (), Outcome.NOT_APPLICABLE),
        ((UNKNOWN,), None, (), Outcome.INDETERMINATE),
        ((UNKNOWN,), "restore from snapshot", (), Outcome.PASS),
        ((GOOD,), None, (("staging", 1), ("production", 2)), Outcome.PASS),
        ((GOOD,), None, (("production", 1), ("staging", 2)), Outcome.FAIL),
        ((GOOD,), None, (("staging", 1, "failure"), ("production", 2)), Outcome.FAIL),
        ((GOOD,), None, (("staging", 1, "success", "c" * 40), ("production", 2)), Outcome.FAIL),
    ],
)
def test_cm_iac_4(
    files: tuple[MigrationFile, ...],
    plan_text: str | None,
    deps: tuple[tuple[object, ...], ...],
    outcome: Outcome,
) -> None:
    m = _mig(files, plan_text)
    r = MigrationsSafe().evaluate(m, ctx(*(_dep(*d) for d in deps)), Z)  # type: ignore[arg-type]
    assert r.outcome is outcome, r.reasons


PATTERNS = Settings().infrastructure
segment = st.sampled_from(
    [
        "a",
        "db",
        "migrate",
        "migrations",
        "k8s",
        "iam",
        "charts",
        "versions",
        "alembic",
        "prisma",
        "x.tf",
        "Pulumi.yaml",
        "V1__a.sql",
        "1.up.sql",
        "policy.json",
        "0001_x.py",
        "main.tf.json",
    ]
)


@hsettings(max_examples=300, deadline=None)
@given(st.lists(segment, min_size=1, max_size=5))
def test_compiled_globs_agree_with_path_matches(parts: list[str]) -> None:
    path = "/".join(parts)
    for pats in (PATTERNS.iac_paths, PATTERNS.iam_paths, PATTERNS.migration_paths):
        assert bool(glob_regex(pats).match(path)) == path_matches(path, pats)
