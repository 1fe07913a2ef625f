"""CM-CFG-1..4: effective protection, bypass exposure, configuration changes, retention."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from changeproof.controls.base import Context
from changeproof.controls.config import (
    BypassExposure,
    EffectiveProtection,
    Span,
    _DailyConfigControl,
    _windows,
    day_range,
    effective,
    exposure,
    pairs,
    protection_problems,
    versions_during,
    window_subject,
)
from changeproof.evidence import Bypass, ProtectionSnapshot
from changeproof.outcomes import SEVERITY, Outcome
from changeproof.settings import Identities, Settings
from changeproof.store import Store
from changeproof.workspace import Workspace
from tests.controls.builders import change, layer, prov, snapshot, user
from tests.controls.storing import pick, put, results

D0 = datetime(2026, 2, 1, tzinfo=UTC)
NOW = datetime(2026, 3, 1, tzinfo=UTC)


def day(n: int, h: int = 12) -> datetime:
    return D0 + timedelta(days=n, hours=h)


# --- effective protection: classic ∪ active rulesets, most restrictive wins -------------


def test_union_of_layers_most_restrictive_wins() -> None:
    s = snapshot(
        D0,
        layer(required_approvals=1, allow_force_push=True, required_checks=(("build", None),)),
        layer(
            layer="ruleset:1:main",
            required_approvals=2,
            allow_force_push=False,
            required_checks=(("build", "github-actions"), ("lint", "github-actions")),
            enforce_admins=False,
        ),
        layer(layer="ruleset:2:evaluate", enforcement="evaluate", required_approvals=5),
    )
    e = effective(s)
    assert e.required_approvals == 2  # the evaluate-mode ruleset enforces nothing
    assert e.blocks_force_push
    assert e.required_checks == (("build", "github-actions"), ("lint", "github-actions"))
    assert protection_problems(e, Settings(), "acme/api") == []


@pytest.mark.parametrize(
    ("layers", "problem"),
    [
        ((layer(requires_pr=False),), "pull requests are not required"),
        ((layer(required_approvals=0),), "0 approval(s) required, the policy needs 1"),
        ((layer(dismiss_stale=False),), "neither stale-approval dismissal nor last-push approval"),
        ((layer(required_checks=()),), "no status checks are required"),
        ((layer(required_checks=(("build", None),)),), "not bound to an app"),
        ((layer(allow_force_push=True),), "force pushes are allowed"),
        ((layer(allow_deletion=True),), "the branch may be deleted"),
        ((layer(layer="gitlab", author_approval_allowed=True),), "authors may approve"),
    ],
)
def test_each_requirement(layers: tuple[object, ...], problem: str) -> None:
    e = effective(snapshot(D0, *layers))  # type: ignore[arg-type]
    assert any(problem in p for p in protection_problems(e, Settings(), "acme/api"))


def test_last_push_approval_satisfies_the_staleness_requirement() -> None:
    e = effective(snapshot(D0, layer(dismiss_stale=False, require_last_push_approval=True)))
    assert protection_problems(e, Settings(), "acme/api") == []


def test_bypass_is_per_rule_and_a_bypass_free_layer_wins() -> None:
    # classic without "include administrators": admins can bypass everything classic enforces,
    # but a ruleset with no bypass actors enforces pull requests too (scorecard#3480)
    s = snapshot(
        D0,
        layer(enforce_admins=False),
        layer(
            layer="ruleset:1:main",
            requires_pr=True,
            required_approvals=0,
            dismiss_stale=False,
            required_checks=(),
            allow_force_push=True,
            allow_deletion=True,
        ),
    )
    e = effective(s)
    assert e.bypassers("pull_request") == ()
    assert e.bypassers("approvals") == ("admins",)
    found = exposure(e, Settings())
    assert any("admins can bypass 'require approvals'" in x for x in found)
    assert not any("pull request'" in x for x in found)


def test_pull_request_mode_cannot_skip_the_pull_request_rule() -> None:
    s = snapshot(D0, layer(layer="ruleset:1", bypass_actors=(("ops", "pull_request"),)))
    e = effective(s)
    assert e.bypassers("pull_request") == ()
    assert e.bypassers("approvals") == ("ops",)


def test_bypass_actor_must_be_in_every_enforcing_layer() -> None:
    s = snapshot(
        D0,
        layer(layer="ruleset:1", bypass_actors=(("ops", "always"), ("lead", "always"))),
        layer(layer="ruleset:2", bypass_actors=(("ops", "always"),)),
    )
    e = effective(s)
    assert e.bypassers("force_push") == ("ops",)
    assert exposure(e, Settings(identities=Identities(break_glass=("ops",)))) == []


# --- per day over the period, via the evaluator -------------------------------------


def _history() -> tuple[ProtectionSnapshot, ...]:
    return (
        snapshot(day(0, 0)),
        snapshot(day(10), layer(required_approvals=0)),
        snapshot(day(12), changed_by=user("lead")),
    )


def test_cfg1_days_become_windows(workspace: Workspace, store: Store) -> None:
    put(workspace, store, *_history(), change(merged_at=day(11), number=1))
    rs = results(store, Settings(), NOW, start=D0, end=D0 + timedelta(days=20))
    got = {r.subject: r.outcome for r in pick(rs, "CM-CFG-1")}
    assert got == {
        "acme/api:main@2026-02-01..2026-02-10": Outcome.PASS,
        "acme/api:main@2026-02-11..2026-02-13": Outcome.FAIL,
        "acme/api:main@2026-02-14..2026-02-20": Outcome.PASS,
    }
    weak = pick(rs, "CM-CFG-1", "acme/api:main@2026-02-11..2026-02-13")[0]
    assert any("0 approval(s) required" in x for x in weak.reasons)
    assert weak.remediation


def test_cfg1_unknown_before_the_first_snapshot(workspace: Workspace, store: Store) -> None:
    put(workspace, store, snapshot(day(5)), change(merged_at=day(1), number=1))
    rs = results(store, Settings(), NOW, start=D0, end=D0 + timedelta(days=8))
    got = {r.subject: r.outcome for r in pick(rs, "CM-CFG-1")}
    assert got == {
        "acme/api:main@2026-02-01..2026-02-06": Outcome.INDETERMINATE,
        "acme/api:main@2026-02-07..2026-02-08": Outcome.PASS,
    }


def test_cfg3_weak_window_lists_changes_merged_during_it(
    workspace: Workspace, store: Store
) -> None:
    put(
        workspace,
        store,
        *_history(),
        change(merged_at=day(9), number=1),
        change(merged_at=day(11), number=2),
        change(merged_at=day(13), number=3),
    )
    rs = results(store, Settings(), NOW, start=D0, end=D0 + timedelta(days=20))
    by = {r.subject: r for r in pick(rs, "CM-CFG-3")}
    weak = by[f"acme/api:main@config:{day(10).isoformat()}"]
    assert weak.outcome is Outcome.FAIL
    assert any("1 change(s) merged during the weak window: acme/api#2" in x for x in weak.reasons)
    assert any("who made the change is not recorded" in x for x in weak.reasons)
    restored = by[f"acme/api:main@config:{day(12).isoformat()}"]
    assert restored.outcome is Outcome.PASS and "by lead" in restored.reasons[0]


def test_cfg3_unattributed_change_is_indeterminate(workspace: Workspace, store: Store) -> None:
    stricter = snapshot(day(3), layer(required_approvals=2))
    put(workspace, store, snapshot(day(0)), stricter, change(merged_at=day(4), number=1))
    rs = results(store, Settings(), NOW, start=D0, end=D0 + timedelta(days=6))
    (r,) = pick(rs, "CM-CFG-3")
    assert r.outcome is Outcome.INDETERMINATE


def test_cfg2_recorded_and_inferred_bypasses(workspace: Workspace, store: Store) -> None:
    bypass = Bypass(
        id="rs-1",
        repo="acme/api",
        branch="main",
        actor=user("admin"),
        at=day(3),
        source="rule_suite",
        detail="merged without review",
        provenance=prov(day(3), "bypass"),
    )
    unapproved = change(merged_at=day(4), number=5, reviews=())
    put(
        workspace,
        store,
        snapshot(day(0, 0)),
        bypass,
        unapproved,
        change(merged_at=day(5), number=6),
    )
    s = Settings(identities=Identities(break_glass=("admin",)))
    rs = results(store, s, NOW, start=D0, end=D0 + timedelta(days=7))
    by = {r.subject: r for r in pick(rs, "CM-CFG-2")}
    assert by["bypass:rs-1"].outcome is Outcome.FAIL
    assert "named break-glass" in by["bypass:rs-1"].reasons[1]
    inferred = by["acme/api#5"]
    assert inferred.outcome is Outcome.FAIL
    assert "probable bypass" in inferred.reasons[0]
    assert "acme/api#6" not in by
    assert by["acme/api:main@2026-02-01..2026-02-07"].outcome is Outcome.PASS


@pytest.mark.parametrize("jobs", [1, 2])
def test_cfg2_probable_bypasses_are_judged_as_the_changes_stream(
    workspace: Workspace, store: Store, monkeypatch: pytest.MonkeyPatch, jobs: int
) -> None:
    """A change that failed CM-REV-1 under protection that required approvals is judged by
    CM-CFG-2 as it streams: its group follows the change's own, an exception covers it as
    any other result, in-process and in workers alike; without CM-CFG-2, nothing."""
    import changeproof.evaluate as ev
    from changeproof.controls import RECORD_CONTROLS
    from changeproof.evaluate import run_check, stored_results
    from changeproof.evidence import ExceptionGrant

    grant = ExceptionGrant(
        id="exc-1",
        control="CM-CFG-2",
        subject="acme/api#7",
        reason="emergency fix, reviewed afterwards",
        approver=user("ciso"),
        granted_at=day(0),
        expires_at=day(60),
        provenance=prov(day(0), "exception"),
    )
    put(
        workspace,
        store,
        snapshot(day(0, 0)),
        grant,
        change(merged_at=day(4), number=5, reviews=()),
        change(merged_at=day(5), number=6),
        change(merged_at=day(6), number=7, reviews=()),
    )
    whole = run_check(store, Settings(), NOW, jobs=1)
    run = run_check(store, Settings(), NOW, jobs=jobs, parallel_from=0, batch=1)
    assert run.results_digest == whole.results_digest
    rs = stored_results(store, run.run_id)
    order = [(r.control, r.subject) for r in rs]
    for n in (5, 7):
        at = order.index(("CM-CFG-2", f"acme/api#{n}"))
        assert order[at - 1][1] == f"acme/api#{n}"  # right after the change's own results
    by = {r.subject: r for r in pick(rs, "CM-CFG-2")}
    assert by["acme/api#5"].outcome is Outcome.FAIL
    assert "probable bypass" in by["acme/api#5"].reasons[0]
    assert by["acme/api#7"].outcome is Outcome.EXCEPTION
    assert "acme/api#6" not in by
    kept = tuple(c for c in RECORD_CONTROLS if c.id != "CM-CFG-2")
    monkeypatch.setattr(ev, "RECORD_CONTROLS", kept)
    without = run_check(store, Settings(), NOW, jobs=jobs, parallel_from=0)
    assert not pick(stored_results(store, without.run_id), "CM-CFG-2")


@pytest.mark.parametrize(
    ("keep_raw", "forge_days", "want"),
    [
        (True, None, Outcome.PASS),
        (False, 90, Outcome.FAIL),
        (False, None, Outcome.FAIL),
        (False, 400, Outcome.PASS),
    ],
)
def test_cfg4_retention(
    workspace: Workspace, store: Store, keep_raw: bool, forge_days: int | None, want: Outcome
) -> None:
    put(workspace, store, snapshot(day(0), log_retention_days=forge_days))
    put(workspace, store, change(merged_at=day(2), number=1), keep_raw=keep_raw)
    rs = results(store, Settings(), NOW)
    (r,) = pick(rs, "CM-CFG-4")
    assert r.outcome is want, r.reasons


def test_weak_protection_is_reported_even_when_the_change_passes(
    workspace: Workspace, store: Store
) -> None:
    # a reviewed change under weak protection still passes CM-REV-1; CM-CFG-1 reports the config
    put(
        workspace,
        store,
        snapshot(day(0, 0), layer(requires_pr=False)),
        change(merged_at=day(1), number=1),
    )
    rs = results(store, Settings(), NOW, start=D0, end=D0 + timedelta(days=2))
    assert pick(rs, "CM-REV-1")[0].outcome is Outcome.PASS
    assert pick(rs, "CM-CFG-1")[0].outcome is Outcome.FAIL


def _day_by_day(
    control: EffectiveProtection | BypassExposure, ctx: Context
) -> list[tuple[str, Outcome, tuple[str, ...], str]]:
    """CM-CFG-1/2's windows computed the plain way, judging every day on its own."""
    out = []
    for pair in pairs(ctx):
        rng = day_range(ctx, pair)
        if rng is None:
            continue
        snaps = ctx.protections.get(pair, ())
        days = []
        d = rng[0]
        while d <= rng[1]:
            a = datetime.combine(d, datetime.min.time(), tzinfo=UTC)
            found, from_start = versions_during(snaps, a, a + timedelta(days=1))
            judged: list[tuple[Outcome, list[str]]] = []
            if not from_start:
                judged = [
                    (
                        Outcome.INDETERMINATE,
                        [
                            "no protection snapshot was in force at the start of the day: "
                            "the configuration then is unknown"
                        ],
                    )
                ]
            for _dig, snap in found:
                o, rs = control.judge_version(effective(snap), ctx.settings, pair[0])
                seen = snap.provenance.occurred_at.isoformat()
                judged.append((o, [f"{r} (as observed {seen})" for r in rs]))
            worst_o = max((o for o, _ in judged), key=SEVERITY.__getitem__)
            why = tuple(r for o, rs in judged if o is worst_o for r in rs)
            days.append((d, d, worst_o, why, tuple(sorted({x for x, _ in found}))))
            d += timedelta(days=1)
        for a_day, b_day, o, why, ev in _windows(days):
            out.append((window_subject(*pair, a_day, b_day), o, why, "|".join(ev)))
    return out


@pytest.mark.parametrize("seed", range(12))
def test_cfg_windows_equal_judging_every_day(seed: int) -> None:
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    weak = layer(required_approvals=0)
    protections = {}
    for branch in ("main", "release"):
        times = sorted(
            start
            + timedelta(days=rng.randrange(-5, 60), hours=rng.choice((0, 0, 3, 23)))
            + timedelta(minutes=rng.choice((0, 0, 1, 59)))
            for _ in range(rng.randrange(0, 9))
        )
        protections[("acme/api", branch)] = tuple(
            (f"{branch}{i:02d}", snapshot(t, rng.choice((layer(), weak)), branch=branch))
            for i, t in enumerate(times)
        )
    spans = {
        ("acme/api", "main"): Span(start + timedelta(days=rng.randrange(0, 20)), start, 1, 0, 0)
    }
    for period in ((None, None), (start + timedelta(days=3), start + timedelta(days=40))):
        ctx = Context(
            settings=Settings(),
            now=start + timedelta(days=70, hours=rng.randrange(24)),
            protections=protections,
            extra={"period": period, "spans": spans},
        )
        for control in (EffectiveProtection(), BypassExposure()):
            got = [
                (s[0], s[2], tuple(s[3]), dig)
                for s, dig in _DailyConfigControl.subjects(control, ctx)
            ]
            assert got == _day_by_day(control, ctx)
