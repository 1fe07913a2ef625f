"""CM-POP-1/2 over a real store, and CM-REV-1's other passing paths: bot standard changes and
promotion chains (both passing paths of anchors §4.3 CR-10)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from changeproof.controls.population import coverage_gaps
from changeproof.evidence import Actor, Change, Coverage, Deployment, FileChange, Review
from changeproof.locker import verify_locker
from changeproof.outcomes import Outcome
from changeproof.settings import Promotion, Settings, StandardChange, Testing
from changeproof.store import Store
from changeproof.workspace import Workspace
from tests.controls.builders import change, check, commit, ctx, judge, prov, review, snapshot, user
from tests.controls.storing import pick, put, results

D0 = datetime(2026, 2, 1, tzinfo=UTC)
NOW = datetime(2026, 3, 1, tzinfo=UTC)


def day(n: int, h: int = 12) -> datetime:
    return D0 + timedelta(days=n, hours=h)


def cov(
    start: datetime | None,
    end: datetime,
    *,
    complete: bool = True,
    gaps: tuple[str, ...] = (),
    n: int = 0,
) -> Coverage:
    return Coverage(
        id=f"git:acme/api:main:{n}",
        source="git",
        repo="acme/api",
        branch="main",
        start=start,
        end=end,
        complete=complete,
        gaps=gaps,
        provenance=prov(end, "coverage", n),
    )


# --- CM-POP-1 --------------------------------------------------------------------------


def test_coverage_gaps() -> None:
    a, b, c = day(0), day(5), day(10)
    assert coverage_gaps([cov(None, c)], a, b) == []
    assert coverage_gaps([cov(b, c)], a, c) == [f"{a.isoformat()} to {b.isoformat()}"]
    assert coverage_gaps([cov(a, day(3)), cov(day(4), c, n=1)], a, c) == [
        f"{day(3).isoformat()} to {day(4).isoformat()}"
    ]
    assert coverage_gaps([cov(a, b)], a, c) == [
        f"{b.isoformat()} to {c.isoformat()} (not collected yet)"
    ]
    assert coverage_gaps([cov(b, c)], None, None) == [
        f"from the beginning of history to {b.isoformat()}"
    ]


@pytest.mark.parametrize(
    ("coverages", "want", "reason"),
    [
        ((cov(None, NOW),), Outcome.PASS, "without gaps"),
        ((cov(day(3), NOW),), Outcome.FAIL, "not covered"),
        (
            (cov(None, NOW, complete=False, gaps=("page 4 timed out",)),),
            Outcome.FAIL,
            "page 4 timed out",
        ),
        ((), Outcome.FAIL, "no record of what collection covered"),
    ],
)
def test_population_coverage(
    workspace: Workspace, store: Store, coverages: tuple[Coverage, ...], want: Outcome, reason: str
) -> None:
    put(workspace, store, *coverages, change(merged_at=day(5), number=1))
    rs = results(store, Settings(), NOW, start=D0, end=D0 + timedelta(days=20))
    (r,) = pick(rs, "CM-POP-1", "acme/api:main")
    assert r.outcome is want and any(reason in x for x in r.reasons), r.reasons


def test_population_reports_unattributed_commits_and_untraced_deployments(
    workspace: Workspace, store: Store
) -> None:
    pushed = change(
        merged_at=day(6),
        number=None,
        change_type="direct_push",
        reviews=None,
        merge_sha="e" * 40,
        landed_shas=("e" * 40, "f" * 40),
        head_sha=None,
    )

    def dep(i: int, sha: str, env: str = "production") -> Deployment:
        return Deployment(
            id=f"d{i}",
            repo="acme/api",
            environment=env,
            commit_sha=sha,
            status="success",
            started_at=day(7),
            actor=Actor(login="github-actions[bot]", type="bot"),
            provenance=prov(day(7), "dep", i),
        )

    put(
        workspace,
        store,
        cov(None, NOW),
        change(merged_at=day(5), number=1),
        pushed,
        change(merged_at=day(8), number=2, merge_sha="9" * 40, landed_shas=("9" * 40,)),
        dep(1, "c" * 40),
        dep(2, "1" * 40),
        dep(3, "2" * 40, env="staging"),
    )
    rs = results(store, Settings(), NOW, start=D0, end=D0 + timedelta(days=20))
    pop = {r.subject: r for r in pick(rs, "CM-POP-1")}
    main = pop["acme/api:main"]
    assert main.outcome is Outcome.PASS
    assert any("2 first-parent commit(s) in 1 direct push(es)" in x for x in main.reasons)
    assert any("2 change(s) merged after the last production deployment" in x for x in main.reasons)
    assert pop["deployment:d2"].outcome is Outcome.FAIL  # shipped a commit no change landed
    assert "deployment:d1" not in pop and "deployment:d3" not in pop


# --- CM-POP-2 --------------------------------------------------------------------------


def test_locker_verifies_or_not(workspace: Workspace, store: Store) -> None:
    put(workspace, store, cov(None, NOW), change(merged_at=day(5), number=1))
    report = verify_locker(store, workspace.public_key_pem()).to_dict()
    (ok,) = pick(results(store, Settings(), NOW, extra={"locker": report}), "CM-POP-2")
    assert ok.outcome is Outcome.PASS
    (unknown,) = pick(results(store, Settings(), NOW), "CM-POP-2")
    assert unknown.outcome is Outcome.INDETERMINATE
    bad = {
        **report,
        "intact": False,
        "problems": ["entry #2: does not link to the entry before it"],
    }
    (tampered,) = pick(results(store, Settings(), NOW, extra={"locker": bad}), "CM-POP-2")
    assert tampered.outcome is Outcome.FAIL and "entry #2" in tampered.reasons[1]
    put(workspace, store, change(merged_at=day(6), number=2), keep_raw=False)
    (missing,) = pick(results(store, Settings(), NOW, extra={"locker": report}), "CM-POP-2")
    assert missing.outcome is Outcome.FAIL
    assert "1 stored change record(s) point to raw evidence missing" in missing.reasons[0]


# --- bot standard changes ------------------------------------------------------------------

DEPS = Settings(
    standard_changes=(
        StandardChange(name="deps", authors=("dependabot[bot]",), paths=("**/package*.json",)),
    ),
    testing=Testing(required_checks=("build", "test")),
)
BOT = "dependabot[bot]"
MANIFESTS = (FileChange(path="package.json"), FileChange(path="web/package-lock.json"))


@pytest.mark.parametrize(
    ("case", "kw", "want", "reason"),
    [
        ("bot-only manifest bump, checks green", {}, Outcome.PASS, "standard change 'deps'"),
        (
            "a human commit makes it a normal change",
            {"commits": (commit(author=BOT, kind="bot"), commit(sha="e" * 40, author="alice"))},
            Outcome.FAIL,
            "alice make it a normal change",
        ),
        (
            "a path outside the policy",
            {"files": (*MANIFESTS, FileChange(path="src/app.js"))},
            Outcome.FAIL,
            "no approving review",
        ),
        (
            "required checks failed",
            {"checks": (check("build"), check("test", "failure"))},
            Outcome.FAIL,
            "needs its required checks to pass",
        ),
        (
            "a human approval still counts the normal way",
            {"commits": (commit(sha="e" * 40, author="alice"),), "reviews": (review("bob"),)},
            Outcome.PASS,
            "1 of 1",
        ),
    ],
)
def test_standard_change(case: str, kw: dict[str, object], want: Outcome, reason: str) -> None:
    from changeproof.controls.review import IndependentApproval

    base = {
        "author": user(BOT, "bot"),
        "commits": (commit(author=BOT, kind="bot"),),
        "files": MANIFESTS,
        "reviews": (),
    }
    r = judge(IndependentApproval(), change(**{**base, **kw}), ctx(DEPS))
    assert r.outcome is want, (case, r.reasons)
    assert any(reason in x for x in r.reasons), (case, r.reasons)


def test_no_standard_change_policy_means_bots_need_approval() -> None:
    from changeproof.controls.review import IndependentApproval

    c = change(
        author=user(BOT, "bot"),
        commits=(commit(author=BOT, kind="bot"),),
        files=MANIFESTS,
        reviews=(),
    )
    assert (
        judge(IndependentApproval(), c, ctx(Settings(testing=DEPS.testing))).outcome is Outcome.FAIL
    )


# --- promotion chains (release → main) ---------------------------------------------------

PROMO = Settings(
    controlled_branches=("main", "release"),
    promotions=(Promotion(source="release", target="main"),),
)


def _release_change(n: int, sha: str, reviews: tuple[Review, ...] | None = None) -> Change:
    kw: dict[str, object] = {
        "branch": "release",
        "number": n,
        "merged_at": day(n),
        "merge_sha": sha,
        "landed_shas": (sha,),
        "head_sha": sha[::-1],
        "commits": (commit(sha=sha[::-1], at=day(n, 8)),),
        "checks": (
            check("build", sha=sha[::-1], at=day(n, 9)),
            check("test", sha=sha[::-1], at=day(n, 9)),
        ),
    }
    kw["reviews"] = (
        reviews if reviews is not None else (review("bob", sha=sha[::-1], at=day(n, 10)),)
    )
    return change(**kw)


def _promotion(shas: tuple[str, ...], reviews: tuple[Review, ...] = ()) -> Change:
    return change(
        number=50,
        head_ref="acme/release",
        merged_at=day(10),
        merge_sha="7" * 40,
        landed_shas=("7" * 40,),
        head_sha=shas[-1],
        commits=tuple(commit(sha=s, author="releasebot", at=day(9)) for s in shas),
        reviews=reviews,
        checks=(
            check("build", sha=shas[-1], at=day(9, 13)),
            check("test", sha=shas[-1], at=day(9, 13)),
        ),
    )


def test_promotion_path_2_every_commit_from_an_approved_source_change(
    workspace: Workspace, store: Store
) -> None:
    a, b = "1" * 40, "2" * 40
    put(workspace, store, _release_change(1, a), _release_change(2, b), _promotion((a, b)))
    rs = results(store, PROMO, NOW)
    (r,) = pick(rs, "CM-REV-1", "acme/api#50")
    assert r.outcome is Outcome.PASS
    assert (
        "path 2" in r.reasons[0] and "acme/api#1" in r.reasons[0] and "acme/api#2" in r.reasons[0]
    )


def test_promotion_path_2_fails_on_an_unapproved_source_change_or_an_extra_commit(
    workspace: Workspace, store: Store
) -> None:
    a, b, extra = "1" * 40, "2" * 40, "3" * 40
    put(
        workspace,
        store,
        _release_change(1, a),
        _release_change(2, b, reviews=()),
        _promotion((a, b, extra)),
    )
    rs = results(store, PROMO, NOW)
    (r,) = pick(rs, "CM-REV-1", "acme/api#50")
    assert r.outcome is Outcome.FAIL
    text = " ".join(r.reasons)
    assert "acme/api#2 (fail)" in text
    assert "belong to no change on release: 333333333333" in text
    assert "path 1 fails" in text


def test_promotion_path_1_approved_promotion(workspace: Workspace, store: Store) -> None:
    a = "1" * 40
    put(workspace, store, _promotion((a,), reviews=(review("bob", sha=a, at=day(9, 14)),)))
    (r,) = pick(results(store, PROMO, NOW), "CM-REV-1", "acme/api#50")
    assert r.outcome is Outcome.PASS and any("path 1" in x for x in r.reasons)


def test_promotion_path_2_needs_equivalent_protection(workspace: Workspace, store: Store) -> None:
    from tests.controls.builders import layer

    a = "1" * 40
    weak_release = snapshot(D0, layer(required_approvals=1), branch="release")
    strict_main = snapshot(D0, layer(required_approvals=2), branch="main")
    put(workspace, store, weak_release, strict_main, _release_change(1, a), _promotion((a,)))
    (r,) = pick(results(store, PROMO, NOW), "CM-REV-1", "acme/api#50")
    assert r.outcome is Outcome.FAIL
    assert any("release had weaker protection than main" in x for x in r.reasons)
