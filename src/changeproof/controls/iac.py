"""Infrastructure controls CM-IAC-1..4: infrastructure changes under the same rules as code.

- CM-IAC-1 (per change): changes to IaC, IAM or migration paths pass the review controls,
  IAM paths need ``privileged_approvals``, and the infrastructure team rule when configured.
- CM-IAC-2 (per apply): the applied plan is a plan attached to an approved change, and the
  apply came after the approval (and the approval after the plan).
- CM-IAC-3 (per workspace): no unresolved drift older than ``drift_max_age_days``, and a
  drift check at least that recent.
- CM-IAC-4 (per change with migrations): staged before production, and reversible or with
  a rollback plan in the change record.

CM-IAC-2 needs to know when the change it binds an apply to was approved. CM-IAC-1 runs on
every change anyway, so it publishes the approval times in its result ``details``; the
evaluator hands them to record controls under :data:`APPROVALS_KEY` (pure: no store access).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, ClassVar

from changeproof.controls.base import Context, RecordControl
from changeproof.controls.facts import ChangeFacts, classes_of
from changeproof.controls.review import (
    ChangeControl,
    CurrentApprovals,
    IndependentApproval,
    NoDirectPush,
    NoSelfApproval,
)
from changeproof.controls.sensitive import members_at
from changeproof.evidence import (
    ApplyRecord,
    Deployment,
    DeploymentRef,
    DriftReport,
    MigrationInfo,
    PlanRecord,
    ResourceChangeInfo,
)
from changeproof.outcomes import INDETERMINATE, NOT_APPLICABLE, Outcome, Result, worst
from changeproof.settings import Settings

APPROVALS_KEY = "iac_approvals"  # change id → CM-IAC-1 result details (approval times)
DETAIL_TIMES = "approval_times"
DETAIL_REQUIRED = "approvals_required"
MAX_LISTED = 5


def _few(items: Sequence[str], n: int = MAX_LISTED) -> str:
    head = ", ".join(items[:n])
    return head + (f" (+{len(items) - n} more)" if len(items) > n else "")


def approval_details(f: ChangeFacts) -> dict[str, str]:
    """What CM-IAC-2 needs from a change: its requirement and its counting approvals' times."""
    if f.change.reviews is None:
        return {}
    times = f.independent_at
    if len(times) > 1:  # in time order (a stable sort: ties keep their order, as before)
        pairs = sorted(
            zip(f.independent, times, strict=True), key=lambda x: x[0].review.submitted_at
        )
        times = tuple(t for _, t in pairs)
    return {DETAIL_REQUIRED: str(f.required), DETAIL_TIMES: ",".join(times)}


def approvals_from_details(details: Mapping[str, str]) -> tuple[int, tuple[datetime, ...]] | None:
    if DETAIL_REQUIRED not in details:
        return None
    raw = details.get(DETAIL_TIMES, "")
    times = tuple(datetime.fromisoformat(t) for t in raw.split(",") if t)
    return int(details[DETAIL_REQUIRED]), times


@lru_cache(maxsize=64)
def glob_regex(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One compiled regex with :func:`changeproof.settings.path_matches` semantics (``**/``
    also matches the top level): this runs for every file of every change."""
    parts: list[str] = []
    for pat in patterns:
        parts.append(fnmatch.translate(pat))
        if pat.startswith("**/"):
            parts.append(fnmatch.translate(pat[3:]))
    return re.compile("|".join(f"(?:{p})" for p in parts) or "(?!)")


CLASS_NAMES = ("IaC", "IAM", "migrations")
_MEMO: dict[tuple[tuple[str, ...], ...], dict[str, int]] = {}
_MEMO_MAX = 200_000


def _classes_of(path: str, key: tuple[tuple[str, ...], ...]) -> int:
    """Bit i set when ``path`` is in class i. Memoised: paths recur across changes, and
    glob alternations cost microseconds per file."""
    memo = _MEMO.get(key)
    if memo is None:
        memo = _MEMO[key] = {}
    bits = memo.get(path)
    if bits is None:
        if len(memo) >= _MEMO_MAX:
            memo.clear()
        bits = 0
        for i, pats in enumerate(key):
            if glob_regex(pats).match(path):
                bits |= 1 << i
        memo[path] = bits
    return bits


def path_classes(paths: Sequence[str], ctx: Context) -> list[tuple[str, list[str]]]:
    inf = ctx.settings.infrastructure
    key = (inf.iac_paths, inf.iam_paths, inf.migration_paths)
    hits: list[list[str]] = [[], [], []]
    for p in paths:
        bits = _classes_of(p, key)
        if bits:
            for i in range(3):
                if bits >> i & 1:
                    hits[i].append(p)
    return [(CLASS_NAMES[i], h) for i, h in enumerate(hits) if h]


def infrastructure_classes(f: ChangeFacts, settings: Settings) -> list[tuple[str, list[str]]]:
    """``path_classes(f.paths, ctx)`` (with ``ctx.settings`` = ``settings``), from the paths'
    class bits."""
    prep, bits, union = classes_of(f, settings)
    if not union & prep.iac_mask or f.paths is None or bits is None:
        return []
    shift = prep.iac_shift
    return [
        (CLASS_NAMES[i], [p for p, b in zip(f.paths, bits, strict=True) if b >> shift + i & 1])
        for i in range(3)
        if union >> shift + i & 1
    ]


# --- CM-IAC-1 -------------------------------------------------------------------------------


class InfrastructureReviewed(ChangeControl):
    id = "CM-IAC-1"
    _review = (IndependentApproval(), NoSelfApproval(), CurrentApprovals(), NoDirectPush())

    def judge(self, f: ChangeFacts, ctx: Context, digest: str) -> Result:
        c = f.change
        details = approval_details(f)
        # the common verdicts first, without the closure below
        if c.change_type == "initial":
            return self._res(f, NOT_APPLICABLE, _INITIAL, digest, details)
        if f.paths is None:
            return self._res(f, INDETERMINATE, _NO_FILES, digest, details)
        prep = f.prep
        # infrastructure_classes(f, ctx.settings), without the call when no path is in one
        if prep.settings is ctx.settings and not f.path_union & prep.iac_mask:
            return self._res(f, NOT_APPLICABLE, _NO_INFRA, digest, details)
        classes = infrastructure_classes(f, ctx.settings)
        if not classes:
            return self._res(f, NOT_APPLICABLE, _NO_INFRA, digest, details)

        def res(outcome: Outcome, reasons: list[str], extra: tuple[str, ...] = ()) -> Result:
            return self.result(
                f.cid, outcome, reasons, repo=c.repo, evidence=(digest, *extra), details=details
            )

        what = "infrastructure change — " + "; ".join(f"{n}: {_few(h)}" for n, h in classes)
        outcomes: list[Outcome] = []
        problems: list[str] = []
        for ctl in self._review:
            r = ctl.verdict(f, ctx, digest)
            if r.outcome in (Outcome.FAIL, Outcome.INDETERMINATE):
                outcomes.append(r.outcome)
                problems.append(f"{ctl.id} {r.outcome.value}: {r.reasons[0]}")
        inf = ctx.settings.infrastructure
        ok = f.independent
        names = sorted(a.name for a in ok)
        read: list[str] = []
        if c.reviews is not None and c.change_type != "direct_push":
            if any(n == "IAM" for n, _ in classes):
                need = max(f.required, inf.privileged_approvals)
                if len(ok) < need:
                    outcomes.append(Outcome.FAIL)
                    problems.append(
                        f"IAM policy paths need {need} independent approvals; "
                        f"{len(ok)} given" + (f" ({', '.join(names)})" if names else "")
                    )
            if inf.team is not None:
                members, where, digs = members_at(inf.team, ctx, c.merged_at)
                read.extend(digs)
                if members is None:
                    outcomes.append(Outcome.INDETERMINATE)
                    problems.append(f"infrastructure team rule: {where}")
                else:
                    team_ok = [a.name for a in ok if a.review.reviewer.keys() & members]
                    if len(team_ok) < inf.team_approvals:
                        outcomes.append(Outcome.FAIL)
                        problems.append(
                            f"needs {inf.team_approvals} independent approval(s) from team "
                            f"{inf.team} ({where}); {len(team_ok)} given"
                        )
        if outcomes:
            return res(worst(outcomes), [*problems, what], tuple(read))
        reasons = [what, f"{len(ok)} independent approval(s): {', '.join(names) or 'none needed'}"]
        if inf.team is not None:
            reasons.append(f"team {inf.team} approval present")
        return res(Outcome.PASS, reasons, tuple(read))

    def _res(
        self,
        f: ChangeFacts,
        outcome: Outcome,
        reasons: tuple[str, ...],
        digest: str,
        details: dict[str, str],
    ) -> Result:
        # self.result(f.cid, outcome, reasons, repo=…, evidence=(digest,), details=details)
        return Result(
            control=self.id,
            subject=f.cid,
            outcome=outcome,
            reasons=reasons,
            repo=f.change.repo,
            evidence=(digest,),
            remediation=self.remediation_for(outcome),
            details=details or {},
        )


_INITIAL = ("the repository's initial commit",)
_NO_FILES = ("the changed files are unknown, so infrastructure paths cannot be recognised",)
_NO_INFRA = ("touches no infrastructure, IAM or migration path",)


# --- CM-IAC-2 -------------------------------------------------------------------------------


def resource_diff(
    applied: Sequence[ResourceChangeInfo], reviewed: Sequence[ResourceChangeInfo]
) -> list[str]:
    a = {r.address: r for r in applied}
    b = {r.address: r for r in reviewed}
    out: list[str] = []
    for addr in sorted(a.keys() | b.keys()):
        x, y = a.get(addr), b.get(addr)
        if y is None and x is not None:
            out.append(f"{addr}: {x.action} in the applied plan, absent from the reviewed one")
        elif x is None and y is not None:
            out.append(f"{addr}: {y.action} in the reviewed plan, absent from the applied one")
        elif x is not None and y is not None and x.digest != y.digest:
            if x.action != y.action:
                out.append(f"{addr}: reviewed as {y.action}, applied as {x.action}")
            else:
                out.append(f"{addr}: {x.action} with different values than reviewed")
    return out


class PlanIndex:
    """The plan table by repository, digest and changes digest (built once per table)."""

    def __init__(self, table: tuple[tuple[str, Any], ...]) -> None:
        self.table = table  # kept: the cache below is keyed by its identity
        self.by_repo: dict[str, list[tuple[str, PlanRecord]]] = {}
        self.by_digest: dict[str, list[tuple[str, PlanRecord]]] = {}
        self.by_changes: dict[str, list[tuple[str, PlanRecord]]] = {}
        for d, p in table:
            if isinstance(p, PlanRecord):
                self.by_repo.setdefault(p.repo, []).append((d, p))
                self.by_digest.setdefault(p.digest, []).append((d, p))
                self.by_changes.setdefault(p.changes_digest, []).append((d, p))


_INDEXES: dict[int, PlanIndex] = {}


def plan_index(ctx: Context) -> PlanIndex:
    """Memoised per plan table: many applies are judged against the same table."""
    table = ctx.table("plan")
    idx = _INDEXES.get(id(table))
    if idx is None or idx.table is not table:
        if len(_INDEXES) >= 4:
            _INDEXES.clear()
        idx = _INDEXES[id(table)] = PlanIndex(table)
    return idx


class PlanBeforeApply(RecordControl):
    id = "CM-IAC-2"
    subject_kind: ClassVar = "deployment"
    record_kind: ClassVar[str | None] = "apply"
    reads: ClassVar[tuple[str, ...]] = ("plan",)

    def evaluate(self, subject: ApplyRecord, ctx: Context, digest: str) -> Result:
        a = subject
        where = f"{a.repo} workspace {a.workspace} ({a.environment})"

        def res(outcome: Outcome, reasons: list[str], read: Sequence[str] = ()) -> Result:
            return self.result(a.id, outcome, reasons, repo=a.repo, evidence=(digest, *read))

        if a.environment not in ctx.settings.environments.production:
            return res(Outcome.NOT_APPLICABLE, [f"{where}: not a production environment"])
        if a.plan_digest is None:
            return res(
                Outcome.FAIL,
                [
                    f"{where} applied at {a.applied_at.isoformat()} without a saved plan "
                    "(apply -auto-approve): nobody reviewed what it changed"
                ],
            )
        idx = plan_index(ctx)
        plans = idx.by_repo.get(a.repo, [])
        exact = [(d, p) for d, p in idx.by_digest.get(a.plan_digest, []) if p.repo == a.repo]
        same = [
            (d, p) for d, p in idx.by_changes.get(a.changes_digest or "", []) if p.repo == a.repo
        ]
        match = exact or same
        ws_match = [(d, p) for d, p in match if p.workspace == a.workspace]
        if match and not ws_match:
            d, p = match[0]
            return res(
                Outcome.FAIL,
                [
                    f"the applied plan was made for workspace {p.workspace}, "
                    f"but was applied to {a.workspace}"
                ],
                [d],
            )
        if not ws_match:
            return self._unreviewed(a, plans, res)
        attached = [(d, p) for d, p in ws_match if p.subject is not None]
        if not attached:
            d, p = ws_match[0]
            return res(
                Outcome.INDETERMINATE,
                [
                    f"the applied plan {a.plan_digest[:12]} is known, but attached to no change: "
                    "ingest it with --change N or --commit SHA"
                ],
                [d],
            )
        verdicts = [self._judge_plan(a, d, p, ctx) for d, p in attached]
        best = min(verdicts, key=lambda v: (v[0] is not Outcome.PASS, v[0] is Outcome.FAIL))
        outcome, reasons, read = best
        how = (
            "the same plan file"
            if any(p.digest == a.plan_digest for _, p in attached)
            else "a plan with identical resource changes (re-planned)"
        )
        return res(outcome, [*reasons, f"{where}: applied {how}"], read)

    def _unreviewed(
        self,
        a: ApplyRecord,
        plans: list[tuple[str, PlanRecord]],
        res: Callable[[Outcome, list[str], Sequence[str]], Result],
    ) -> Result:
        ours = [
            (d, p)
            for d, p in plans
            if p.workspace == a.workspace
            and p.subject is not None
            and p.provenance.occurred_at <= a.applied_at
        ]
        if not ours:
            return res(
                Outcome.FAIL,
                [
                    f"the applied plan {a.plan_digest and a.plan_digest[:12]} matches no plan "
                    f"attached to a change for {a.repo} workspace {a.workspace}"
                ],
                (),
            )
        d, p = max(ours, key=lambda x: x[1].provenance.occurred_at)
        diffs = resource_diff(a.resources, p.resources)
        if not diffs:
            diffs = [
                "the resource changes agree; the plans differ in values marked sensitive "
                "or in plan metadata"
            ]
        return res(
            Outcome.FAIL,
            [
                f"the applied plan is not the reviewed plan attached to {p.subject} "
                f"({p.digest[:12]}): {len(diffs)} resource(s) differ",
                *diffs[:10],
            ],
            [d],
        )

    def _judge_plan(
        self, a: ApplyRecord, d: str, p: PlanRecord, ctx: Context
    ) -> tuple[Outcome, list[str], list[str]]:
        assert p.subject is not None
        if p.errored or p.applyable is False:
            return (
                Outcome.FAIL,
                [f"the plan attached to {p.subject} errored or is not applyable"],
                [d],
            )
        if p.planned_at is not None and p.planned_at > a.applied_at:
            return (
                Outcome.FAIL,
                [
                    f"the plan attached to {p.subject} was made at {p.planned_at.isoformat()}, "
                    f"after the apply at {a.applied_at.isoformat()}"
                ],
                [d],
            )
        known: Mapping[str, Mapping[str, str]] = ctx.extra.get(APPROVALS_KEY, {})
        appr = approvals_from_details(known.get(p.subject) or {})
        if appr is None:
            return (
                Outcome.INDETERMINATE,
                [
                    f"the plan is attached to {p.subject}, but no review evidence for it was "
                    "evaluated (not collected yet, outside the period, or git-only history)"
                ],
                [d],
            )
        required, times = appr
        inf = ctx.settings.infrastructure
        need = max(required, inf.privileged_approvals) if p.privileged else required
        why_more = (
            f" (IAM/destructive changes: {_few(list(p.privileged), 3)})" if p.privileged else ""
        )
        if len(times) < need:
            return (
                Outcome.FAIL,
                [
                    f"{p.subject} has {len(times)} of {need} required independent approval(s){why_more}"
                ],
                [d],
            )
        after = [t for t in times if p.planned_at is None or t >= p.planned_at]
        if len(after) < need:
            assert p.planned_at is not None
            return (
                Outcome.FAIL,
                [
                    f"approval(s) of {p.subject} predate the plan made at "
                    f"{p.planned_at.isoformat()}: the reviewers did not see this plan"
                ],
                [d],
            )
        approved_at = after[need - 1]
        if a.applied_at < approved_at:
            return (
                Outcome.FAIL,
                [
                    f"applied at {a.applied_at.isoformat()}, before {p.subject} was approved "
                    f"at {approved_at.isoformat()}"
                ],
                [d],
            )
        note = "" if p.planned_at else " (the plan has no timestamp: approval-after-plan unchecked)"
        return (
            Outcome.PASS,
            [
                f"plan {p.digest[:12]} attached to {p.subject}, approved ({need} independent "
                f"approval(s){why_more}) at {approved_at.isoformat()}, applied at "
                f"{a.applied_at.isoformat()}{note}"
            ],
            [d],
        )


# --- CM-IAC-3 -------------------------------------------------------------------------------


class NoUnresolvedDrift(RecordControl):
    id = "CM-IAC-3"
    subject_kind: ClassVar = "repository"
    reads: ClassVar[tuple[str, ...]] = ("drift",)

    def subjects(self, ctx: Context) -> list[tuple[Any, str]]:
        groups: dict[tuple[str, str], list[tuple[str, DriftReport]]] = {}
        for d, r in ctx.table("drift"):
            if isinstance(r, DriftReport) and r.checked_at <= ctx.now:
                groups.setdefault((r.repo, r.workspace), []).append((d, r))
        out: list[tuple[Any, str]] = []
        for key in sorted(groups):
            reports = sorted(groups[key], key=lambda x: x[1].checked_at)
            out.append(((key, tuple(reports)), reports[-1][0]))
        return out

    def evaluate(self, subject: Any, ctx: Context, digest: str) -> Result:
        (repo, workspace), reports = subject
        sid = f"{repo}:{workspace}"
        limit = timedelta(days=ctx.settings.infrastructure.drift_max_age_days)
        days = ctx.settings.infrastructure.drift_max_age_days

        def res(outcome: Outcome, reasons: list[str], read: Sequence[str]) -> Result:
            return self.result(sid, outcome, reasons, repo=repo, evidence=tuple(read))

        ok = [(d, r) for d, r in reports if r.status != "error"]
        if not ok:
            return res(
                Outcome.INDETERMINATE,
                [
                    f"every drift check of {workspace} errored (last at "
                    f"{reports[-1][1].checked_at.isoformat()})"
                ],
                [reports[-1][0]],
            )
        d_last, last = ok[-1]
        if ctx.now - last.checked_at > limit:
            return res(
                Outcome.INDETERMINATE,
                [
                    f"the last successful drift check of {workspace} was at "
                    f"{last.checked_at.isoformat()}, more than {days} day(s) ago: drift may be "
                    "present and unseen"
                ],
                [d_last],
            )
        if last.status == "clean":
            earlier = [r for _, r in ok[:-1] if r.status == "drift"]
            extra = (
                [f"drift seen at {earlier[-1].checked_at.isoformat()} has been resolved"]
                if earlier
                else []
            )
            moved = f" ({len(last.moved)} move-only entr(ies) are not drift)" if last.moved else ""
            return res(
                Outcome.PASS,
                [
                    f"no drift at the last check ({last.checked_at.isoformat()}, {last.mode}){moved}",
                    *extra,
                ],
                [d_last],
            )
        streak = [(d, r) for d, r in ok]
        i = len(streak) - 1
        while i > 0 and streak[i - 1][1].status == "drift":
            i -= 1
        first = streak[i][1]
        age = ctx.now - first.checked_at
        addrs = [x.address for x in last.drifted]
        what = _few(addrs) if addrs else f"exit code {last.exit_code} (no detail)"
        if age > limit:
            return res(
                Outcome.FAIL,
                [
                    f"unresolved drift in {workspace} since {first.checked_at.isoformat()} "
                    f"({age.days} day(s), limit {days}): {what}",
                    "reconcile it through a reviewed change, or record an accepted-drift exception",
                ],
                [streak[i][0], d_last],
            )
        return res(
            Outcome.PASS,
            [
                f"drift in {workspace} first seen {first.checked_at.isoformat()} is within the "
                f"{days}-day limit ({age.days} day(s)): {what}"
            ],
            [streak[i][0], d_last],
        )


# --- CM-IAC-4 -------------------------------------------------------------------------------


def _ref(d: Deployment) -> DeploymentRef:
    return DeploymentRef(
        id=d.id,
        environment=d.environment,
        commit_sha=d.commit_sha,
        status=d.status,
        started_at=d.started_at,
        finished_at=d.finished_at,
    )


def _same(a: str, b: str) -> bool:
    n = min(len(a), len(b))
    return n >= 7 and a[:n].lower() == b[:n].lower()


class MigrationsSafe(RecordControl):
    id = "CM-IAC-4"
    subject_kind: ClassVar = "change"
    record_kind: ClassVar[str | None] = "migration"
    reads: ClassVar[tuple[str, ...]] = ("deployment",)

    def evaluate(self, subject: MigrationInfo, ctx: Context, digest: str) -> Result:
        m = subject
        read: list[str] = [digest]

        def res(outcome: Outcome, reasons: list[str]) -> Result:
            return self.result(m.subject, outcome, reasons, repo=m.repo, evidence=tuple(read))

        if not m.files:
            return res(Outcome.NOT_APPLICABLE, ["the change adds no database migration"])
        outcomes: list[Outcome] = []
        reasons: list[str] = []
        bad = [f for f in m.files if f.reversible is False]
        unknown = [f for f in m.files if f.reversible is None]
        listing = [f"{f.path} ({f.tool}: {f.why})" for f in bad + unknown]
        if (bad or unknown) and m.rollback_plan:
            outcomes.append(Outcome.PASS)
            reasons.append(
                f"not reversible by the tool: {_few(listing, 3)}; the change record has a "
                f"rollback plan: {m.rollback_plan.splitlines()[0][:120]}"
            )
        elif bad:
            outcomes.append(Outcome.FAIL)
            reasons.append(
                f"irreversible migration(s) and no rollback plan in the change record: "
                f"{_few(listing, 3)}"
            )
        elif unknown:
            outcomes.append(Outcome.INDETERMINATE)
            reasons.append(
                "cannot tell whether these migrations can be undone, and the change record "
                f"has no rollback plan: {_few(listing, 3)}"
            )
        else:
            outcomes.append(Outcome.PASS)
            reasons.append(
                "every migration can be undone: "
                + _few([f"{f.path} ({f.why})" for f in m.files], 3)
            )
        refs: dict[str, DeploymentRef] = {r.id: r for r in m.deployments}
        for d, dep in ctx.table("deployment"):
            if (
                isinstance(dep, Deployment)
                and dep.repo == m.repo
                and dep.id not in refs
                and any(_same(dep.commit_sha, s) for s in (m.commit_sha, *m.commits))
            ):
                refs[dep.id] = _ref(dep)
                read.append(d)
        envs = ctx.settings.environments
        prod = sorted(
            (r for r in refs.values() if r.environment in envs.production),
            key=lambda r: r.started_at,
        )
        staged = sorted(
            (
                r
                for r in refs.values()
                if r.environment in envs.pre_production and r.status == "success"
            ),
            key=lambda r: r.finished_at or r.started_at,
        )
        if not prod:
            outcomes.append(Outcome.PASS)
            where = (
                f"; reached {staged[0].environment} at "
                f"{(staged[0].finished_at or staged[0].started_at).isoformat()}"
                if staged
                else ""
            )
            reasons.append(f"not deployed to production yet{where}")
        else:
            first = prod[0]
            before = [s for s in staged if (s.finished_at or s.started_at) <= first.started_at]
            if before:
                s = before[0]
                outcomes.append(Outcome.PASS)
                reasons.append(
                    f"reached {s.environment} at {(s.finished_at or s.started_at).isoformat()} "
                    f"before {first.environment} at {first.started_at.isoformat()}"
                )
            else:
                outcomes.append(Outcome.FAIL)
                reasons.insert(
                    0,
                    f"reached {first.environment} at {first.started_at.isoformat()} "
                    f"(deployment {first.id}) without a successful pre-production deployment "
                    "before it",
                )
        return res(worst(outcomes), reasons)
