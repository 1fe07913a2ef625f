"""Review and authorisation controls: CM-REV-1, CM-REV-2, CM-REV-3, CM-REV-5."""

from __future__ import annotations

from typing import ClassVar

from changeproof.controls.base import Context, Control
from changeproof.controls.facts import Approval, ChangeFacts, shared
from changeproof.controls.standard import promotion_path, standard_change
from changeproof.outcomes import (
    FAIL,
    INDETERMINATE,
    NOT_APPLICABLE,
    OK,
    PASS,
    Outcome,
    Result,
)

MAX_FILES = 3000


def _no_review_evidence(change_platform: str) -> str:
    if change_platform in ("git", "gerrit"):
        return (
            "no review evidence: git history alone cannot show who approved this change — "
            "collect it from the forge (github/gitlab) or declare the repository's review "
            "platform as gerrit"
        )
    return "no review evidence was collected for this change"


class ChangeControl(Control):
    """A control over one change, given its precomputed facts."""

    subject_kind: ClassVar = "change"

    def evaluate(self, subject: ChangeFacts, ctx: Context, digest: str) -> Result:
        return self.judge(subject, ctx, digest)

    def judge(self, f: ChangeFacts, ctx: Context, digest: str) -> Result:
        raise NotImplementedError

    def res(self, f: ChangeFacts, outcome: Outcome, reasons: list[str], digest: str) -> Result:
        # what ``self.result(f.cid, outcome, reasons, repo=…, evidence=(digest,))`` builds,
        # without its generic evidence sorting (one digest) — every change control's hot path
        return Result(
            control=self.id,
            subject=f.cid,
            outcome=outcome,
            reasons=tuple(reasons),
            repo=f.change.repo,
            evidence=(digest,),
            remediation=None if outcome in OK else self.remediation_for(outcome),
            details={},
        )


class ReviewControl(ChangeControl):
    """CM-REV-1/2/3/5: CM-IAC-1 repeats their verdicts on infrastructure changes."""

    def verdict(self, f: ChangeFacts, ctx: Context, digest: str) -> Result:
        """``judge(f, ctx, digest)``, reusing the verdict this control already gave the change
        in :func:`~changeproof.controls.evaluation.evaluate_change` if any."""
        hit = shared(f, ctx).get(self.id)
        if hit is not None and hit[0] == digest:
            return hit[1]  # type: ignore[no-any-return]
        return self.judge(f, ctx, digest)


class IndependentApproval(ReviewControl):
    id = "CM-REV-1"

    def judge(self, f: ChangeFacts, ctx: Context, digest: str) -> Result:
        c = f.change
        if c.change_type == "initial":
            return self.res(f, NOT_APPLICABLE, ["the repository's initial commit"], digest)
        if c.change_type == "direct_push":
            return self.res(
                f,
                FAIL,
                [
                    f"pushed directly to {c.branch} by {_who(c)}: no pull request, so nobody approved it"
                ],
                digest,
            )
        if c.files_total is not None and c.files_total > MAX_FILES:
            return self.res(
                f,
                INDETERMINATE,
                [
                    f"{c.files_total} files changed: past {MAX_FILES} the forge cannot list them all, "
                    "so path-dependent approval rules cannot be judged"
                ],
                digest,
            )
        if c.reviews is None:
            alt = _alternative_paths(f, ctx, path1_passed=False)
            if alt is not None and alt[0] is PASS:
                return self.res(f, PASS, alt[1], digest)
            return self.res(f, INDETERMINATE, [_no_review_evidence(c.platform)], digest)
        ok = f.independent
        need = f.required
        reasons: list[str] = []
        if len(f.approvals) != len(ok):  # the approvals that count say no why_not
            for a in f.approvals:
                why = a.why_not()
                if why:
                    reasons.append(f"not counted: {why}")
        names = ok[0].name if len(ok) == 1 else ", ".join(sorted(a.name for a in ok))
        if len(ok) >= need:
            # with path 1 passed, only a promotion chain adds to the reasons
            alt = _alternative_paths(f, ctx, path1_passed=True) if ctx.settings.promotions else None
            return self.res(
                f,
                PASS,
                [
                    f"{len(ok)} of {need} required independent approval(s): {names}",
                    *(alt[1] if alt is not None else ()),
                    *reasons,
                ],
                digest,
            )
        alt = _alternative_paths(f, ctx, path1_passed=False)
        if alt is not None:
            if alt[0] is PASS:
                return self.res(
                    f,
                    PASS,
                    [*alt[1], f"{len(ok)} of {need} approval(s) on the change itself", *reasons],
                    digest,
                )
            reasons.extend(alt[1])
        unknown = [
            a
            for a in f.approvals
            if a.current is None
            and not a.participant
            and a.human
            and a.before_merge
            and not a.dismissed
        ]
        head = f"{len(ok)} of {need} required independent approval(s)" + (
            f" ({names})" if names else ""
        )
        if len(ok) + len(unknown) >= need:
            return self.res(
                f,
                INDETERMINATE,
                [head + "; the remaining approvals cannot be tied to the merged commit", *reasons],
                digest,
            )
        if not f.approvals:
            reasons.append("no approving review before the merge")
        return self.res(f, FAIL, [head, *reasons], digest)


class NoSelfApproval(ReviewControl):
    id = "CM-REV-2"

    def judge(self, f: ChangeFacts, ctx: Context, digest: str) -> Result:
        c = f.change
        if c.change_type in ("initial", "direct_push"):
            return self.res(
                f,
                NOT_APPLICABLE,
                ["no pull request, so no approvals to examine (see CM-REV-5)"],
                digest,
            )
        if c.reviews is None:
            return self.res(f, INDETERMINATE, [_no_review_evidence(c.platform)], digest)
        if f.self_approvers:
            return self.res(
                f,
                FAIL,
                [
                    f"approved by a participant of the change: {', '.join(f.self_approvers)} "
                    "(not counted toward the requirement)"
                ],
                digest,
            )
        return self.res(f, PASS, ["no participant approved their own change"], digest)


class CurrentApprovals(ReviewControl):
    id = "CM-REV-3"

    def judge(self, f: ChangeFacts, ctx: Context, digest: str) -> Result:
        c = f.change
        if c.change_type in ("initial", "direct_push"):
            return self.res(
                f,
                NOT_APPLICABLE,
                ["no pull request, so no approvals to examine (see CM-REV-5)"],
                digest,
            )
        if c.reviews is None:
            return self.res(f, INDETERMINATE, [_no_review_evidence(c.platform)], digest)
        reasons: list[str] = []
        bad = False
        pkeys = f.participant_keys
        for ev in c.timeline if pkeys else ():  # no participant, none dismissed a review
            if (
                ev.type == "review_dismissed"
                and ev.actor is not None
                and ev.at <= c.merged_at
                and ev.actor.keys() & pkeys
            ):
                bad = True
                reasons.append(
                    f"a review was dismissed by {ev.actor.login or ev.actor.email}, "
                    "a participant of the change"
                )
        for r in c.reviews if pkeys else ():
            if r.dismissed_by is not None and r.dismissed_by.keys() & pkeys:
                msg = (
                    f"{r.reviewer.login}'s review was dismissed by "
                    f"{r.dismissed_by.login or r.dismissed_by.email}, a participant of the change"
                )
                if msg not in reasons:
                    bad = True
                    reasons.append(msg)
        # the independent approvals before the merge, by whether they are current
        candidates: list[Approval] = []
        stale: list[Approval] = []
        unknown: list[Approval] = []
        current: list[Approval] = []
        for a in f.approvals:
            if a.before_merge and not a.dismissed and a.human and not a.participant:
                candidates.append(a)
                if a.current is True:
                    current.append(a)
                elif a.current is False:
                    stale.append(a)
                else:
                    unknown.append(a)
        if not candidates and not bad:
            return self.res(
                f,
                NOT_APPLICABLE,
                ["no independent approval before the merge to be stale (see CM-REV-1)"],
                digest,
            )
        for a in stale:
            reasons.append(
                f"{a.name} approved {a.review.commit_sha[:12] if a.review.commit_sha else '?'}, "
                f"but the merged head {(c.head_sha or '?')[:12]} has a different patch"
            )
        if candidates and not current and stale:
            bad = True
            reasons.insert(0, "every approval predates the last change to the code")
        if bad:
            return self.res(f, FAIL, reasons, digest)
        if unknown and not current:
            return self.res(
                f,
                INDETERMINATE,
                ["the approved commit is unknown for: " + ", ".join(a.name for a in unknown)],
                digest,
            )
        return self.res(
            f,
            PASS,
            [f"approval(s) current at merge: {', '.join(a.name for a in current)}", *reasons],
            digest,
        )


class NoDirectPush(ReviewControl):
    id = "CM-REV-5"

    def judge(self, f: ChangeFacts, ctx: Context, digest: str) -> Result:
        c = f.change
        if c.change_type == "initial":
            return self.res(f, NOT_APPLICABLE, ["the repository's initial commit"], digest)
        if c.change_type == "direct_push":
            n = len(c.landed_shas)
            return self.res(
                f,
                FAIL,
                [
                    f"direct push to {c.branch} by {_who(c)}: commit {c.merge_sha[:12]}"
                    + (f" (and {n - 1} more)" if n > 1 else "")
                    + " is not attributed to any reviewed change"
                ],
                digest,
            )
        how = _HOW.get(c.change_type, c.change_type)
        where = f"#{c.number}" if c.number is not None else c.merge_sha[:12]
        basis = (
            " (from the commit message; the forge source corroborates it)"
            if c.platform == "git"
            else ""
        )
        return self.res(f, PASS, [f"landed through {where} by {how}{basis}"], digest)


_HOW = {
    "merge": "merge commit",
    "squash": "squash merge",
    "rebase": "rebase merge",
    "merge_queue": "merge queue",
    "gerrit": "Gerrit submission",
}


def _alternative_paths(
    f: ChangeFacts, ctx: Context, *, path1_passed: bool
) -> tuple[Outcome, list[str]] | None:
    """CM-REV-1's other passing paths: a bot standard change, or a promotion chain."""
    settings = ctx.settings
    # neither path exists without its settings (both functions would return None)
    promo = promotion_path(f, ctx, path1_passed) if settings.promotions else None
    if promo is not None or path1_passed or not settings.standard_changes:
        return promo
    return standard_change(f, ctx)


def _who(c: object) -> str:
    from changeproof.evidence import Change

    assert isinstance(c, Change)
    if c.merged_by is not None:
        return c.merged_by.login or c.merged_by.email or c.merged_by.name or "unknown"
    if c.commits:
        a = c.commits[-1].committer
        return a.login or a.email or a.name or "unknown"
    return "unknown"
