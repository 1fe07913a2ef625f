"""Builders for gate and deployment-control tests: evidence records as the sources make them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from changeproof import settings as st
from changeproof.controls.base import Context
from changeproof.evidence import (
    Actor,
    Change,
    CheckResult,
    CommitInfo,
    Deployment,
    DeploymentApproval,
    Emergency,
    ExceptionGrant,
    Provenance,
    Record,
    RetroReview,
    Review,
)
from changeproof.gate import GateEvidence, GateRequest

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=1)
REPO = "acme/app"
PIPELINE = "github-actions[bot]"


def sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def prov(at: datetime = T0, source: str = "test") -> Provenance:
    return Provenance(
        source=source, occurred_at=at, collected_at=at, raw_sha256=hashlib.sha256(b"x").hexdigest()
    )


def settings(**kw: object) -> st.Settings:
    base: dict[str, object] = {
        "testing": st.Testing(
            required_checks=("ci",), dependency_scanning_checks=("deps",), sast_checks=("sast",)
        ),
        "emergency": st.Emergency(approvers=("carol",)),
    }
    base.update(kw)
    return st.Settings(**base)  # type: ignore[arg-type]


def checks(head: str, at: datetime, conclusion: str = "success") -> tuple[CheckResult, ...]:
    return tuple(
        CheckResult(name=n, conclusion=conclusion, commit_sha=head, completed_at=at)  # type: ignore[arg-type]
        for n in ("ci", "deps", "sast")
    )


def change(
    n: int,
    *,
    author: str = "alice",
    reviewer: str | None = "bob",
    reviewed: bool = True,
    ci: str = "success",
    labels: Iterable[str] = (),
    branch: str = "main",
    title: str = "",
    merged_at: datetime | None = None,
) -> Change:
    at = merged_at or T0 + timedelta(minutes=n)
    head = sha(f"head{n}")
    who = Actor(login=author, email=f"{author}@example.com")
    reviews: tuple[Review, ...] | None = None
    if reviewed:
        reviews = (
            ()
            if reviewer is None
            else (
                Review(
                    reviewer=Actor(login=reviewer),
                    state="APPROVED",
                    submitted_at=at - timedelta(seconds=30),
                    commit_sha=head,
                ),
            )
        )
    return Change(
        repo=REPO,
        branch=branch,
        number=n,
        change_type="merge",
        platform="github",
        merged_at=at,
        merge_sha=sha(f"merge{n}"),
        landed_shas=(sha(f"merge{n}"),),
        head_sha=head,
        title=title or f"change {n}",
        author=who,
        merged_by=who,
        commits=(
            CommitInfo(
                sha=head,
                parents=(sha(f"merge{n - 1}"),),
                author=who,
                committer=who,
                authored_at=at - timedelta(minutes=1),
                committed_at=at - timedelta(minutes=1),
                message=title or f"change {n}",
            ),
        ),
        reviews=reviews,
        checks=checks(head, at - timedelta(seconds=40), ci),
        files=(),
        files_total=0,
        labels=tuple(labels),
        provenance=prov(at, "github"),
    )


def deployment(
    env: str,
    commit: str,
    *,
    status: str = "success",
    at: datetime | None = None,
    artifact: str | None = None,
    actor: str | None = PIPELINE,
    repo: str = REPO,
    did: str | None = None,
) -> Deployment:
    when = at or T0 + timedelta(hours=1)
    return Deployment(
        id=did or f"{env}:{commit[:8]}:{when.isoformat()}",
        repo=repo,
        environment=env,
        commit_sha=commit,
        status=status,  # type: ignore[arg-type]
        started_at=when,
        finished_at=when,
        artifact=artifact,
        actor=Actor(login=actor) if actor else None,
        provenance=prov(when),
    )


def approval(
    by: str,
    commit: str,
    *,
    env: str = "production",
    state: str = "approved",
    at: datetime | None = None,
) -> DeploymentApproval:
    when = at or T0 + timedelta(hours=2)
    return DeploymentApproval(
        id=f"appr:{by}:{when.isoformat()}",
        repo=REPO,
        environment=env,
        commit_sha=commit,
        approver=Actor(login=by),
        approved_at=when,
        state=state,  # type: ignore[arg-type]
        provenance=prov(when),
    )


def emergency(
    subject: Change,
    *,
    approver: str = "carol",
    by: str | None = "dave",
    incident: str = "INC-42",
    at: datetime | None = None,
    participants: tuple[str, ...] = ("alice", "alice@example.com"),
) -> Emergency:
    when = at or NOW
    return Emergency(
        id=f"EMG-{subject.number}",
        repo=REPO,
        subject=subject.id,
        commit_sha=subject.merge_sha,
        incident=incident,
        approver=Actor(login=approver),
        declared_by=Actor(login=by) if by else None,
        declared_at=when,
        covers=(subject.id,),
        participants=participants,
        provenance=prov(when),
    )


def retro(e: Emergency, by: str, at: datetime) -> RetroReview:
    return RetroReview(
        id=f"rr:{e.id}:{by}",
        subject=e.id,
        reviewer=Actor(login=by),
        reviewed_at=at,
        provenance=prov(at),
    )


def grant(control: str, subject: str, approver: str = "erin") -> ExceptionGrant:
    return ExceptionGrant(
        id=f"EX-{control}",
        control=control,
        subject=subject,
        reason="accepted risk for the test",
        approver=Actor(login=approver),
        granted_at=T0,
        expires_at=T0 + timedelta(days=30),
        provenance=prov(T0),
    )


def dig(r: Record) -> str:
    from changeproof.evidence import digest

    return digest(r)


def emergency_pairs(records: Iterable[Emergency]) -> list[tuple[str, Emergency]]:
    return [(dig(e), e) for e in records]


def pairs(records: Iterable[Record]) -> tuple[tuple[str, Record], ...]:
    return tuple((dig(r), r) for r in records)


def evidence(
    shipped: list[Change],
    *,
    s: st.Settings,
    deployments: Iterable[Deployment] = (),
    approvals: Iterable[DeploymentApproval] = (),
    exceptions: Iterable[ExceptionGrant] = (),
    emergencies: Iterable[Emergency] = (),
    reviews: Iterable[RetroReview] = (),
    branch: str = "main",
    now: datetime = NOW,
) -> GateEvidence:
    tip = shipped[-1]
    rr: dict[str, list[tuple[str, RetroReview]]] = {}
    for d, r in pairs(reviews):
        assert isinstance(r, RetroReview)
        rr.setdefault(r.subject, []).append((d, r))
    ctx = Context(
        settings=s,
        now=now,
        exceptions=pairs(exceptions),  # type: ignore[arg-type]
        emergencies={e.id: (d, e) for d, e in emergency_pairs(emergencies)},
        retro_reviews={k: tuple(v) for k, v in rr.items()},
    )
    return GateEvidence(
        commit=tip.merge_sha,
        branch=branch,
        change=(dig(tip), tip),
        shipped=tuple((dig(c), c) for c in shipped),
        previous=None,
        deployments=pairs(deployments),
        approvals=pairs(approvals),
        context=ctx,
    )


def request(commit: str, **kw: object) -> GateRequest:
    base: dict[str, object] = {
        "repo": REPO,
        "environment": "production",
        "commit": commit,
        "now": NOW,
        "actor": PIPELINE,
    }
    base.update(kw)
    return GateRequest(**base)  # type: ignore[arg-type]
