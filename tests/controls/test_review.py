"""Evidence tables for CM-REV-1/2/3/5: one row per edge in CONTROLS.md and the reference notes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec
import pytest

from changeproof.controls.review import (
    CurrentApprovals,
    IndependentApproval,
    NoDirectPush,
    NoSelfApproval,
)
from changeproof.evidence import CommitInfo, FileChange, TimelineEvent
from changeproof.outcomes import Outcome
from changeproof.settings import Review as ReviewSettings
from changeproof.settings import Rule, Settings
from tests.controls.builders import (
    HEAD,
    MERGED,
    OLD,
    QUEUE,
    T0,
    change,
    commit,
    ctx,
    judge,
    push,
    review,
    user,
)

P, F, N, U = Outcome.PASS, Outcome.FAIL, Outcome.NOT_APPLICABLE, Outcome.INDETERMINATE
AFTER = MERGED + timedelta(minutes=5)

# (case, change overrides, REV-1, REV-2, REV-3, REV-5)
CASES: list[tuple[str, dict[str, Any], Outcome, Outcome, Outcome, Outcome]] = [
    ("independent approval of the head", {}, P, P, P, P),
    ("self-approval by the author", {"reviews": (review("alice"),)}, F, F, N, P),
    (
        "self-approval alongside an independent one",
        {"reviews": (review("alice"), review("bob"))},
        P,
        F,
        P,
        P,
    ),
    (
        "co-author approving",
        {"commits": (commit(co_authors=("carol",)),), "reviews": (review("carol"),)},
        F,
        F,
        N,
        P,
    ),
    (
        "committer approving (committed on the author's behalf)",
        {"commits": (commit(committer="dave"),), "reviews": (review("dave"),)},
        F,
        F,
        N,
        P,
    ),
    (
        "pusher approving",
        {"timeline": (push("erin"),), "reviews": (review("erin"),)},
        F,
        F,
        N,
        P,
    ),
    (
        "reviewer whose suggestion was committed (no opt-in)",
        {
            "commits": (
                commit(),
                CommitInfo(
                    sha=HEAD[:-1] + "f",
                    parents=(HEAD,),
                    author=user("alice"),
                    committer=user("web-flow"),
                    authored_at=T0,
                    committed_at=T0,
                    message="Apply suggestions from code review",
                    co_authors=(user("bob"),),
                ),
            ),
        },
        F,
        F,
        N,
        P,
    ),
    (
        "approval before the last push (stale, different patch)",
        {"reviews": (review("bob", sha=OLD),)},
        F,
        P,
        F,
        P,
    ),
    (
        "approval before an update merge with an identical patch-id",
        {"reviews": (review("bob", sha=OLD, patch_id="p1"),), "head_patch_id": "p1"},
        P,
        P,
        P,
        P,
    ),
    (
        "approval before a push that changed the patch-id",
        {"reviews": (review("bob", sha=OLD, patch_id="p1"),), "head_patch_id": "p2"},
        F,
        P,
        F,
        P,
    ),
    (
        "approval after the last push",
        {
            "timeline": (push("alice", T0 + timedelta(hours=1)),),
            "reviews": (review("bob", sha=HEAD, at=T0 + timedelta(hours=2)),),
        },
        P,
        P,
        P,
        P,
    ),
    (
        "approval of the merge-group commit",
        {"merge_queue_sha": QUEUE, "reviews": (review("bob", sha=QUEUE),)},
        P,
        P,
        P,
        P,
    ),
    ("approval after the merge", {"reviews": (review("bob", at=AFTER),)}, F, P, N, P),
    (
        "approval dismissed before the merge",
        {
            "reviews": (
                review("bob", dismissed_by="maintainer", dismissed_at=MERGED - timedelta(hours=1)),
            )
        },
        F,
        P,
        N,
        P,
    ),
    (
        "approval dismissed by a participant",
        {
            "reviews": (
                review("bob", dismissed_by="alice", dismissed_at=MERGED - timedelta(hours=1)),
                review("carol"),
            ),
            "timeline": (
                TimelineEvent(
                    type="review_dismissed", at=MERGED - timedelta(hours=1), actor=user("alice")
                ),
            ),
        },
        P,
        P,
        F,
        P,
    ),
    (
        "bot approval",
        {"reviews": (review("renovate[bot]", kind="bot"),)},
        F,
        P,
        N,
        P,
    ),
    ("AI reviewer approval", {"reviews": (review("Copilot"),)}, F, P, N, P),
    (
        "later CHANGES_REQUESTED supersedes an approval",
        {
            "reviews": (
                review("bob"),
                review("bob", state="CHANGES_REQUESTED", at=T0 + timedelta(hours=3)),
            )
        },
        F,
        P,
        N,
        P,
    ),
    (
        "approval that does not say which commit",
        {"reviews": (review("bob", sha=None),)},
        U,
        P,
        U,
        P,
    ),
    ("no approval at all", {"reviews": ()}, F, P, N, P),
    ("no review evidence (git only)", {"reviews": None, "platform": "git"}, U, U, U, P),
    (
        "direct push",
        {
            "change_type": "direct_push",
            "number": None,
            "reviews": None,
            "merged_by": user("mallory"),
        },
        F,
        N,
        N,
        F,
    ),
    (
        "more than 3,000 files",
        {"files_total": 3001, "files": tuple(FileChange(path=f"f{i}") for i in range(300))},
        U,
        P,
        P,
        P,
    ),
    (
        "initial commit",
        {"change_type": "initial", "number": None, "reviews": None},
        N,
        N,
        N,
        N,
    ),
]


@pytest.mark.parametrize(
    ("case", "kw", "rev1", "rev2", "rev3", "rev5"), CASES, ids=[c[0] for c in CASES]
)
def test_review_controls_table(
    case: str, kw: dict[str, Any], rev1: Outcome, rev2: Outcome, rev3: Outcome, rev5: Outcome
) -> None:
    c = change(**kw)
    cx = ctx()
    got = tuple(
        judge(ctl, c, cx).outcome
        for ctl in (IndependentApproval(), NoSelfApproval(), CurrentApprovals(), NoDirectPush())
    )
    assert got == (rev1, rev2, rev3, rev5), case


def test_failures_carry_remediation_and_reasons() -> None:
    r = judge(IndependentApproval(), change(reviews=(review("alice"),)), ctx())
    assert r.outcome is Outcome.FAIL
    assert r.remediation and "approving reviews" in r.remediation
    assert any("participant" in x for x in r.reasons)
    ok = judge(IndependentApproval(), change(), ctx())
    assert ok.remediation is None and ok.reasons[0].startswith("1 of 1")


def test_suggestion_commit_exemption_is_opt_in_and_reported() -> None:
    row = next(c for c in CASES if c[0].startswith("reviewer whose suggestion"))
    c = change(**row[1])
    opted = Settings(review=ReviewSettings(allow_suggestion_commits=True))
    r = judge(IndependentApproval(), c, ctx(opted))
    assert r.outcome is Outcome.PASS
    from changeproof.controls.facts import participants

    _keys, labels = participants(c, opted)
    assert "bob (suggestion co-author, exempt)" in labels


@pytest.mark.parametrize(
    ("rules", "files", "labels", "need"),
    [
        ((), ("src/app.py",), (), 1),
        ((Rule(repos=("acme/*",), approvals=2),), ("src/app.py",), (), 2),
        ((Rule(repos=("other/*",), approvals=2),), ("src/app.py",), (), 1),
        ((Rule(paths=("src/billing/**",), approvals=3),), ("src/billing/x.py",), (), 3),
        ((Rule(paths=("src/billing/**",), approvals=3),), ("src/app.py",), (), 1),
        ((Rule(risk="medium", approvals=2),), ("src/app.py",), ("risk:medium",), 2),
        ((), ("src/app.py",), ("risk:high",), 2),  # documentation.high_risk_approvals
    ],
)
def test_required_approvals_per_repo_path_and_risk(
    rules: tuple[Rule, ...], files: tuple[str, ...], labels: tuple[str, ...], need: int
) -> None:
    s = Settings(rules=rules)
    one = change(files=tuple(FileChange(path=f) for f in files), labels=labels)
    r = judge(IndependentApproval(), one, ctx(s))
    assert r.reasons[0].startswith(f"1 of {need} ")
    assert r.outcome is (Outcome.PASS if need == 1 else Outcome.FAIL)
    two = msgspec.structs.replace(one, reviews=(review("bob"), review("carol"), review("dave")))
    assert judge(IndependentApproval(), two, ctx(s)).outcome is Outcome.PASS
