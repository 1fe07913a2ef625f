"""Alternative passing paths for CM-REV-1: bot "standard changes" and promotion chains.

* **Standard change** (anchors §4.3 CR-9): a change passes without a human approval when a
  configured ``[[standard_changes]]`` policy matches — every contributor (PR author, commit
  authors and committers, pushers) is one of the policy's bot accounts, every changed path
  (old and new names) matches the policy's paths, and CM-TST-1 passes. Any human commit makes
  it a normal change, and the reason says so.
* **Promotion chain** (CR-10): a change from ``source`` into ``target`` (``[[promotions]]``)
  passes if the promotion PR itself has independent approval (path 1, the normal rule), **or**
  every commit it introduces belongs to a change on the source branch that passed (or was
  excepted from) CM-REV-1, under protection at least as strict, so the promotion adds nothing
  unreviewed (path 2). The result says which path was used.

The evaluator streams changes in merge order and records each source-branch change's CM-REV-1
verdict in a :class:`PromotionIndex` before any promotion that includes it is judged.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from datetime import datetime

from changeproof.controls.base import Context
from changeproof.controls.facts import ChangeFacts, classes_of, is_web_flow
from changeproof.evidence import Actor, Change
from changeproof.outcomes import Outcome
from changeproof.settings import Promotion, Settings, StandardChange

INDEX_KEY = "promotion_index"


@dataclass
class PromotionIndex:
    """(repo, commit sha) → the source-branch change that introduced it and its verdict."""

    entries: dict[tuple[str, str], tuple[str, Outcome, datetime, str]] = field(default_factory=dict)

    def observe(self, change: Change, rev1: Outcome) -> None:
        for sha in (*change.landed_shas, *(c.sha for c in change.commits)):
            self.entries[(change.repo, sha)] = (change.id, rev1, change.merged_at, change.branch)

    def lookup(self, repo: str, sha: str) -> tuple[str, Outcome, datetime, str] | None:
        return self.entries.get((repo, sha))


def is_promotion_source(settings: Settings, branch: str) -> bool:
    return any(fnmatch.fnmatchcase(branch, p.source) for p in settings.promotions)


def _ref_names(head_ref: str | None) -> tuple[str, ...]:
    if not head_ref:
        return ()
    # "owner/release" from a "Merge pull request #N from owner/release" message
    return (head_ref, head_ref.split("/", 1)[1]) if "/" in head_ref else (head_ref,)


def promotion_of(change: Change, settings: Settings) -> Promotion | None:
    for p in settings.promotions:
        if fnmatch.fnmatchcase(change.branch, p.target) and any(
            fnmatch.fnmatchcase(n, p.source) for n in _ref_names(change.head_ref)
        ):
            return p
    return None


def _name(a: Actor) -> str:
    return a.login or a.email or a.name or "?"


def contributors(change: Change, settings: Settings) -> list[Actor]:
    out: list[Actor] = []
    if change.author is not None:
        out.append(change.author)
    for c in change.commits:
        out.append(c.author)
        if not is_web_flow(c.committer, settings):
            out.append(c.committer)
        out.extend(c.co_authors)
    out.extend(
        ev.actor
        for ev in change.timeline
        if ev.type in ("push", "force_push") and ev.actor is not None
    )
    return out


def _allowed(actor: Actor, policy: StandardChange, settings: Settings) -> bool:
    if not settings.is_not_human(actor.login, actor.type):
        return False
    keys = actor.keys() | ({actor.name.lower()} if actor.name else set())
    # exact first: "dependabot[bot]" as a glob would be a character class
    pats = [p.lower() for p in policy.authors]
    return any(k == p or fnmatch.fnmatchcase(k, p) for k in keys for p in pats)


def standard_change(f: ChangeFacts, ctx: Context) -> tuple[Outcome, list[str]] | None:
    """(PASS, reasons) when a standard-change policy covers the change; (FAIL, why not) when a
    policy's paths matched but it does not qualify; None when no policy is relevant."""
    from changeproof.controls.testing import checks_verdict

    c = f.change
    if not ctx.settings.standard_changes or f.paths is None or not f.paths:
        return None
    prep, bits, _ = classes_of(f, ctx.settings)
    assert bits is not None
    why_not: list[str] = []
    for j, policy in enumerate(ctx.settings.standard_changes):
        bit = 1 << (prep.standard_shift + j)
        if not all(b & bit for b in bits):  # every path is one of the policy's
            continue
        people = contributors(c, ctx.settings)
        if not c.commits:
            why_not.append(f"standard change '{policy.name}': the commits were not collected")
            continue
        # each distinct contributor judged once (the same bot is author, committer, pusher)
        allowed = {a: _allowed(a, policy, ctx.settings) for a in dict.fromkeys(people)}
        humans = sorted({_name(a) for a in people if not allowed[a]})
        if humans:
            why_not.append(
                f"not a standard change under '{policy.name}': commits or pushes by "
                f"{', '.join(humans)} make it a normal change"
            )
            continue
        checks = checks_verdict(f, ctx)
        if checks.outcome is not Outcome.PASS:
            why_not.append(
                f"standard change '{policy.name}' needs its required checks to pass: "
                + "; ".join(checks.reasons)
            )
            continue
        bots = ", ".join(sorted({_name(a) for a in people}))
        return Outcome.PASS, [
            f"standard change '{policy.name}': only commits by {bots}, only the policy's "
            f"paths ({len(f.paths)} path(s)), required checks passed",
            *checks.reasons,
        ]
    return (Outcome.FAIL, why_not) if why_not else None


def promotion_path(
    f: ChangeFacts, ctx: Context, path1_passed: bool
) -> tuple[Outcome, list[str]] | None:
    """The promotion-chain verdict, or None when the change is not a promotion."""
    from changeproof.controls.config import effective, in_force

    c = f.change
    p = promotion_of(c, ctx.settings)
    if p is None:
        return None
    label = f"promotion {c.head_ref} → {c.branch}"
    if path1_passed:
        return Outcome.PASS, [f"{label}: path 1 — the promotion itself has independent approval"]
    index: PromotionIndex | None = ctx.extra.get(INDEX_KEY)
    if not c.commits:
        return Outcome.FAIL, [
            f"{label}: path 2 unavailable — the introduced commits were not collected"
        ]
    unmapped: list[str] = []
    failing: list[str] = []
    weaker: list[str] = []
    sources: set[str] = set()
    target_eff = None
    found_t = in_force(ctx.protections.get((c.repo, c.branch), ()), c.merged_at)
    if found_t is not None:
        target_eff = effective(found_t[1])
    for commit in c.commits:
        hit = index.lookup(c.repo, commit.sha) if index is not None else None
        if hit is None:
            unmapped.append(commit.sha[:12])
            continue
        cid, outcome, merged_at, branch = hit
        sources.add(cid)
        if outcome not in (Outcome.PASS, Outcome.EXCEPTION):
            failing.append(f"{cid} ({outcome.value})")
        if target_eff is not None:
            found_s = in_force(ctx.protections.get((c.repo, branch), ()), merged_at)
            if (
                found_s is None
                or effective(found_s[1]).required_approvals < target_eff.required_approvals
            ):
                weaker.append(cid)
    reasons: list[str] = []
    if unmapped:
        reasons.append(
            f"{label}: path 2 fails — {len(unmapped)} introduced commit(s) belong to no change on "
            f"{p.source}: {', '.join(unmapped[:10])}"
        )
    if failing:
        reasons.append(
            f"{label}: path 2 fails — source change(s) not approved: {', '.join(sorted(set(failing))[:10])}"
        )
    if weaker:
        reasons.append(
            f"{label}: path 2 fails — {p.source} had weaker protection than {c.branch} when "
            f"{', '.join(sorted(set(weaker))[:10])} merged"
        )
    if reasons:
        return Outcome.FAIL, [
            *reasons,
            f"{label}: path 1 fails — no independent approval of the promotion",
        ]
    return Outcome.PASS, [
        f"{label}: path 2 — every one of its {len(c.commits)} commit(s) belongs to an approved "
        f"change on {p.source}: {', '.join(sorted(sources)[:10])}"
        + (f" (+{len(sources) - 10})" if len(sources) > 10 else "")
    ]
