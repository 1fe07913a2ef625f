"""Completeness meta-controls on the evidence itself: CM-POP-1 (the population is complete)
and CM-POP-2 (the locker verifies).

CM-POP-1 judges each controlled (repository, branch): collection ``Coverage`` records must
cover the whole period without gaps, every first-parent commit is attributed (direct pushes are
in the population as unattributed changes and reported), and every production deployment in the
period traces to a change. The evaluator supplies through ``Context.extra``:

* ``period`` and ``spans`` (see :mod:`changeproof.controls.config`);
* ``untraced_deployments``: ``[(deployment id, repo, environment, commit, digest)]`` — production
  deployments whose commit no stored change landed;
* ``unshipped``: ``{(repo, branch): count}`` changes merged after the last production deployment.

CM-POP-2 reads ``extra["locker"]``: the locker verification report (``verify_locker``'s
``to_dict()``), and ``extra["locker_missing"]``; controls never open the store themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

from changeproof.controls.base import Context, RecordControl
from changeproof.controls.config import Span
from changeproof.evidence import Coverage
from changeproof.outcomes import Outcome, Result

MAX_LISTED = 20


def _iso(t: datetime | None) -> str:
    return t.isoformat() if t is not None else "the beginning of history"


def coverage_gaps(
    covs: Sequence[Coverage], need_start: datetime | None, need_end: datetime | None
) -> list[str]:
    """Spans of [need_start, need_end] no complete coverage record covers."""
    spans = sorted(
        ((c.start, c.end) for c in covs if c.complete),
        key=lambda x: (x[0] is not None, x[0] or x[1]),
    )
    gaps: list[str] = []
    reach: datetime | None = None
    started = False
    for a, b in spans:
        if not started:
            if need_start is None and a is not None:
                gaps.append(f"from the beginning of history to {a.isoformat()}")
            elif need_start is not None and a is not None and a > need_start:
                gaps.append(f"{need_start.isoformat()} to {a.isoformat()}")
            started = True
            reach = b
            continue
        assert reach is not None
        if a is not None and a > reach and (need_end is None or reach < need_end):
            gaps.append(f"{reach.isoformat()} to {a.isoformat()}")
        reach = max(reach, b)
    if not started:
        return [f"{_iso(need_start)} to {need_end.isoformat() if need_end else 'now'}: no coverage"]
    if need_end is not None and reach is not None and reach < need_end:
        gaps.append(f"{reach.isoformat()} to {need_end.isoformat()} (not collected yet)")
    return gaps


class PopulationComplete(RecordControl):
    id = "CM-POP-1"
    subject_kind: ClassVar = "population"
    reads: ClassVar[tuple[str, ...]] = ("coverage",)

    def subjects(self, ctx: Context) -> list[tuple[Any, str]]:
        spans: Mapping[tuple[str, str], Span] = ctx.extra.get("spans", {})
        by_pair: dict[tuple[str, str | None], list[tuple[str, Coverage]]] = {}
        for dig, rec in ctx.table("coverage"):
            assert isinstance(rec, Coverage)
            by_pair.setdefault((rec.repo, rec.branch), []).append((dig, rec))
        pairs = set(spans) | {
            (r, b) for (r, b) in by_pair if b is not None and ctx.settings.is_controlled(r, b)
        }
        out: list[tuple[Any, str]] = []
        for repo, branch in sorted(pairs):
            covs = by_pair.get((repo, branch), []) + by_pair.get((repo, None), [])
            digs = "|".join(sorted(d for d, _ in covs))
            out.append(((repo, branch, [c for _, c in covs], spans.get((repo, branch))), digs))
        untraced: Sequence[tuple[str, str, str, str, str]] = ctx.extra.get(
            "untraced_deployments", ()
        )
        for dep_id, repo, env, sha, dig in untraced:
            out.append((("deployment", dep_id, repo, env, sha), dig))
        return out

    def evaluate(self, subject: Any, ctx: Context, digest: str) -> Result:
        ev = tuple(x for x in digest.split("|") if x)
        if subject[0] == "deployment":
            _, dep_id, repo, env, sha = subject
            return self.result(
                f"deployment:{dep_id}",
                Outcome.FAIL,
                [
                    f"production deployment {dep_id} to {env} shipped {sha[:12]}, which no "
                    "collected change on a controlled branch landed (not traced to a change)"
                ],
                repo=repo,
                evidence=ev,
            )
        repo, branch, covs, span = subject
        start, end = ctx.extra.get("period", (None, None))
        need_end = min(end, ctx.now) if end is not None else None
        reasons: list[str] = []
        bad = False
        if not covs:
            return self.result(
                f"{repo}:{branch}",
                Outcome.FAIL,
                [
                    f"no record of what collection covered for {repo}:{branch}"
                    + (f" although {span.changes} change(s) are stored" if span else ""),
                ],
                repo=repo,
                evidence=ev,
            )
        for c in covs:
            if not c.complete or c.gaps:
                bad = True
                reasons.append(
                    f"collection {c.id} ({c.source}) was incomplete"
                    + (": " + "; ".join(c.gaps) if c.gaps else "")
                )
        gaps = coverage_gaps(covs, start, need_end)
        if gaps:
            bad = True
            reasons.extend(f"not covered: {g}" for g in gaps)
        latest = max(c.end for c in covs)
        if span is not None:
            reasons.append(
                f"{span.changes} change(s) in the population, last collected {latest.isoformat()}"
            )
            if span.direct_pushes:
                reasons.append(
                    f"{span.direct_push_commits} first-parent commit(s) in {span.direct_pushes} "
                    "direct push(es) are in the population as unattributed changes (see CM-REV-5)"
                )
        unshipped: Mapping[tuple[str, str], int] = ctx.extra.get("unshipped", {})
        n = unshipped.get((repo, branch))
        if n:
            reasons.append(
                f"{n} change(s) merged after the last production deployment (not shipped yet)"
            )
        if bad:
            return self.result(f"{repo}:{branch}", Outcome.FAIL, reasons, repo=repo, evidence=ev)
        covered = (
            f"collection covered {_iso(start)} to {(need_end or latest).isoformat()} without gaps"
        )
        return self.result(
            f"{repo}:{branch}", Outcome.PASS, [covered, *reasons], repo=repo, evidence=ev
        )


class LockerVerifies(RecordControl):
    id = "CM-POP-2"
    subject_kind: ClassVar = "locker"

    def subjects(self, ctx: Context) -> list[tuple[Any, str]]:
        return [(ctx.extra.get("locker"), "")]

    def evaluate(self, subject: Any, ctx: Context, digest: str) -> Result:
        missing: Mapping[str, tuple[int, int]] = ctx.extra.get("locker_missing", {})
        absent = sum(m for _, m in missing.values())
        if subject is None:
            return self.result(
                "locker",
                Outcome.INDETERMINATE,
                [
                    "the locker was not verified in this run (no public key to verify the "
                    "checkpoints with); run `changeproof verify`"
                ],
            )
        reasons: list[str] = []
        if not subject.get("intact", False):
            problems = list(subject.get("problems", ()))
            reasons.append(f"the locker does not verify: {len(problems)} problem(s)")
            reasons.extend(problems[:MAX_LISTED])
        if absent:
            reasons.append(
                f"{absent} stored change record(s) point to raw evidence missing from the locker"
            )
        if reasons:
            return self.result("locker", Outcome.FAIL, reasons)
        return self.result(
            "locker",
            Outcome.PASS,
            [
                f"hash chain intact over {subject.get('entries', 0)} entries, "
                f"{subject.get('checkpoints', 0)} signed checkpoint(s) verified, "
                "every stored change's raw evidence present"
            ],
        )
