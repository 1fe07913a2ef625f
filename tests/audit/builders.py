"""Build audit populations: a real git repository collected by the git source, plus forge-like
Change records (with reviews and checks), deployments, emergencies and configuration history
written directly through the store's writer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from changeproof.evidence import (
    Actor,
    Bypass,
    Change,
    CheckConclusion,
    CheckResult,
    CommitInfo,
    Deployment,
    Emergency,
    GateCheck,
    GateDecision,
    ProtectionRule,
    ProtectionSnapshot,
    Provenance,
    RetroReview,
    Review,
    ShippedChange,
)
from changeproof.locker import Locker
from changeproof.settings import Settings
from changeproof.sources.git import GitSource
from changeproof.store import Store
from changeproof.workspace import Workspace

T0 = datetime(2026, 1, 1, tzinfo=UTC)
REPO = "acme/api"


def _sha(n: int, salt: str = "c") -> str:
    import hashlib

    return hashlib.sha1(f"{salt}{n}".encode()).hexdigest()


def actor(login: str) -> Actor:
    return Actor(login=login, email=f"{login}@example.com", name=login.title())


def forge_change(
    n: int,
    raw: str,
    *,
    at: datetime,
    approver: str | None = "bob",
    author: str = "alice",
    check: CheckConclusion = "success",
    emergency_label: bool = False,
    repo: str = REPO,
) -> Change:
    head = _sha(n, "head")
    merge = _sha(n, "merge")
    commit = CommitInfo(
        sha=head,
        parents=(_sha(n, "base"),),
        author=actor(author),
        committer=actor(author),
        authored_at=at - timedelta(hours=3),
        committed_at=at - timedelta(hours=3),
        message=f"change {n}",
    )
    reviews = (
        ()
        if approver is None
        else (
            Review(
                reviewer=actor(approver),
                state="APPROVED",
                submitted_at=at - timedelta(hours=1),
                commit_sha=head,
            ),
        )
    )
    return Change(
        repo=repo,
        branch="main",
        number=n,
        change_type="merge",
        platform="github",
        merged_at=at,
        merge_sha=merge,
        landed_shas=(merge,),
        base_sha=_sha(n, "base"),
        head_sha=head,
        title=f"Change {n} (JIRA-{n})" if n % 5 else f"Change {n}",
        body="Risk: low\nTesting: unit tests\nRollback: revert",
        author=actor(author),
        merged_by=actor(author),
        commits=(commit,),
        reviews=reviews,
        checks=(
            CheckResult(
                name="ci",
                conclusion=check,
                commit_sha=head,
                started_at=at - timedelta(hours=2),
                completed_at=at - timedelta(hours=2) + timedelta(minutes=5),
                app="github-actions",
            ),
        ),
        files=(),
        labels=("emergency",) if emergency_label else (),
        tickets=(f"JIRA-{n}",) if n % 5 else (),
        provenance=Provenance(
            source="github",
            occurred_at=at,
            collected_at=at + timedelta(days=1),
            raw_sha256=raw,
            url=f"https://github.com/{repo}/pull/{n}",
        ),
    )


def fill_forge(
    ws: Workspace,
    store: Store,
    count: int,
    *,
    order: list[int] | None = None,
    deploy_every: int = 3,
    emergencies: tuple[int, ...] = (),
    repo: str = REPO,
) -> list[Change]:
    """``count`` PR changes one hour apart from T0, deployments to staging then production of
    every ``deploy_every``-th change, emergency records (with retro reviews) for ``emergencies``,
    a protection snapshot before the period and a weaker one inside it, and one bypass."""
    changes: list[Change] = []
    with store.writer(Locker(ws.signer())) as w:
        for n in order or list(range(1, count + 1)):
            at = T0 + timedelta(hours=n)
            raw = w.put_raw(f"pr {repo} {n}".encode(), kind="github.pull", source="github")
            ch = forge_change(
                n,
                raw,
                at=at,
                approver=None if n % 7 == 0 else "bob",
                emergency_label=n in emergencies,
                repo=repo,
            )
            changes.append(ch)
            w.put(ch, seq=n * 1000)
            if n % deploy_every == 0:
                for env, delay in (("staging", 1), ("production", 2)):
                    dat = at + timedelta(minutes=30 * delay)
                    draw = w.put_raw(
                        f"deploy {repo} {n} {env}".encode(), kind="deployment", source="record"
                    )
                    w.put(
                        Deployment(
                            id=f"dep-{repo}-{n}-{env}",
                            repo=repo,
                            environment=env,
                            commit_sha=ch.merge_sha,
                            status="success",
                            started_at=dat,
                            finished_at=dat + timedelta(minutes=3),
                            artifact="sha256:" + "ab" * 32,
                            actor=actor("github-actions[bot]"),
                            provenance=Provenance(
                                source="record", occurred_at=dat, collected_at=dat, raw_sha256=draw
                            ),
                        )
                    )
                # the gate's authorisation record for the production deployment
                gat = at + timedelta(minutes=59)
                graw = w.put_raw(f"gate {repo} {n}".encode(), kind="gate", source="gate")
                w.put(
                    GateDecision(
                        id=f"gate-{repo}-{n}",
                        repo=repo,
                        environment="production",
                        commit_sha=ch.merge_sha,
                        decision="allow",
                        checks=(
                            GateCheck(
                                rule="changes",
                                control="CM-REV-1",
                                outcome="pass",
                                reasons=("every shipped change approved",),
                            ),
                        ),
                        changes=tuple(
                            ShippedChange(id=f"{repo}#{k}", outcome="pass", digest="0" * 64)
                            for k in range(n - deploy_every + 1, n + 1)
                        ),
                        settings_version="test",
                        tool_version="test",
                        decided_at=gat,
                        provenance=Provenance(
                            source="gate", occurred_at=gat, collected_at=gat, raw_sha256=graw
                        ),
                    )
                )
            if n in emergencies:
                at_e = at - timedelta(minutes=10)
                eraw = w.put_raw(f"emergency {n}".encode(), kind="emergency", source="record")
                w.put(
                    Emergency(
                        id=f"EMG-{n}",
                        repo=repo,
                        subject=ch.id,
                        incident=f"INC-{n}",
                        approver=actor("carol"),
                        declared_at=at_e,
                        reason="outage",
                        provenance=Provenance(
                            source="record", occurred_at=at_e, collected_at=at_e, raw_sha256=eraw
                        ),
                    )
                )
                rat = at + timedelta(hours=20)
                rraw = w.put_raw(f"retro {n}".encode(), kind="retro_review", source="record")
                w.put(
                    RetroReview(
                        id=f"RR-{n}",
                        subject=f"EMG-{n}",  # a retro review names the emergency it closes
                        reviewer=actor("dave"),
                        reviewed_at=rat,
                        notes="ok",
                        provenance=Provenance(
                            source="record", occurred_at=rat, collected_at=rat, raw_sha256=rraw
                        ),
                    )
                )
        # a deployment of a commit no change accounts for
        xraw = w.put_raw(b"deploy unknown", kind="deployment", source="record")
        xat = T0 + timedelta(hours=2, minutes=5)
        w.put(
            Deployment(
                id="dep-rogue",
                repo=repo,
                environment="production",
                commit_sha="f" * 40,
                status="success",
                started_at=xat,
                actor=actor("mallory"),
                provenance=Provenance(
                    source="record", occurred_at=xat, collected_at=xat, raw_sha256=xraw
                ),
            )
        )
        for when, approvals in (
            (T0 - timedelta(days=10), 2),
            (T0 + timedelta(hours=5, minutes=30), 1),
        ):
            praw = w.put_raw(
                f"protection {when}".encode(), kind="github.protection", source="github"
            )
            w.put(
                ProtectionSnapshot(
                    repo=repo,
                    branch="main",
                    layers=(
                        ProtectionRule(
                            layer="classic",
                            requires_pr=True,
                            required_approvals=approvals,
                            dismiss_stale=True,
                            required_checks=(("ci", "github-actions"),),
                            allow_force_push=False,
                            allow_deletion=False,
                        ),
                    ),
                    provenance=Provenance(
                        source="github", occurred_at=when, collected_at=when, raw_sha256=praw
                    ),
                )
            )
        bat = T0 + timedelta(hours=4)
        braw = w.put_raw(b"bypass", kind="github.audit", source="github")
        w.put(
            Bypass(
                id="byp-1",
                repo=repo,
                branch="main",
                actor=actor("admin"),
                at=bat,
                source="audit_log",
                detail="merged with failing checks",
                provenance=Provenance(
                    source="github", occurred_at=bat, collected_at=bat, raw_sha256=braw
                ),
            )
        )
    return changes


def collect_git(
    ws: Workspace, store: Store, settings: Settings, repo_path: object, now: datetime
) -> None:
    from pathlib import Path

    src = GitSource(Path(str(repo_path)), settings, repo="acme/tool")
    with store.writer(Locker(ws.signer())) as w:
        for b in src.branches(None):
            src.collect_branch(store, w, b, since=None, now=now)
