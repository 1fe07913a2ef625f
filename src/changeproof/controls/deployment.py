"""Deployment controls CM-DEP-1..4, over each recorded production deployment.

The rule functions (staging, authorisation, production access) are shared with the gate,
which applies them before a deployment; the controls apply them after the fact to every
recorded production deployment, so a deployment that skipped the gate is still judged.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import ClassVar

from changeproof.controls.base import Context, RecordControl
from changeproof.controls.emergency import completed, emergencies_in, judge_declaration, who
from changeproof.evidence import (
    Actor,
    Deployment,
    DeploymentApproval,
    Emergency,
    GateDecision,
    Record,
)
from changeproof.outcomes import Outcome, Result
from changeproof.settings import Settings

# GitHub marks a deployment "inactive" only after it succeeded and a newer one replaced it
# (auto_inactive), so an inactive staging deployment did succeed.
OK_STATUSES = frozenset({"success", "inactive"})


def is_production(env: str, settings: Settings) -> bool:
    return env in settings.environments.production


def is_pre_production(env: str, settings: Settings) -> bool:
    return env in settings.environments.pre_production


def _in(actor: Actor | None, names: Iterable[str]) -> bool:
    if actor is None:
        return False
    low = {n.lower() for n in names}
    return bool(actor.keys() & low)


def _same_commit(a: str, b: str) -> bool:
    """Full or abbreviated SHAs naming the same commit (at least 7 characters)."""
    n = min(len(a), len(b))
    return n >= 7 and a[:n].lower() == b[:n].lower()


def soak_minutes(
    repo: str, settings: Settings, paths: Iterable[str] = (), risk: str | None = None
) -> int:
    """The minimum staging soak: the base setting, raised by any matching rule."""
    from changeproof.settings import path_matches

    n = settings.deployment.min_staging_soak_minutes
    plist = list(paths)
    for rule in settings.rules:
        if rule.min_staging_soak_minutes is None:
            continue
        if not any(fnmatch.fnmatchcase(repo, p) for p in rule.repos):
            continue
        if rule.risk is not None and rule.risk != risk:
            continue
        if rule.paths and not any(path_matches(p, rule.paths) for p in plist):
            continue
        n = max(n, rule.min_staging_soak_minutes)
    return n


def staging_rule(
    repo: str,
    commit: str,
    artifact: str | None,
    before: datetime,
    deployments: Iterable[tuple[str, Record]],
    settings: Settings,
    soak: int,
) -> tuple[Outcome, list[str], list[str]]:
    """CM-DEP-2: the same commit or artifact succeeded in pre-production before ``before``
    (and at least ``soak`` minutes before it)."""
    envs = ", ".join(settings.environments.pre_production) or "(none configured)"
    if not settings.environments.pre_production:
        return (
            Outcome.FAIL,
            ["no pre-production environment is configured (environments.pre_production)"],
            [],
        )
    same: list[tuple[str, Deployment]] = []
    for dig, d in deployments:
        if not isinstance(d, Deployment) or d.repo != repo:
            continue
        if not is_pre_production(d.environment, settings) or d.started_at > before:
            continue
        if d.commit_sha == commit or (artifact is not None and d.artifact == artifact):
            same.append((dig, d))
    what = f"commit {commit[:12]}" + (f" / artifact {artifact[:19]}…" if artifact else "")
    done = [(dig, d) for dig, d in same if d.status in OK_STATUSES]
    soaked = []
    too_recent = []
    for dig, d in done:
        end = d.finished_at or d.started_at
        if end > before:
            continue
        if end + timedelta(minutes=soak) <= before:
            soaked.append((dig, d))
        else:
            too_recent.append((dig, d, end))
    if soaked:
        dig, d = max(soaked, key=lambda x: x[1].finished_at or x[1].started_at)
        end = d.finished_at or d.started_at
        how = "same commit" if d.commit_sha == commit else "same artifact"
        soak_txt = f"; soaked at least {soak} min" if soak else ""
        return (
            Outcome.PASS,
            [
                f"{what} deployed successfully to {d.environment} at {end.isoformat()} ({how}){soak_txt}"
            ],
            [dig],
        )
    if too_recent:
        dig, d, end = max(too_recent, key=lambda x: x[2])
        mins = (before - end).total_seconds() / 60
        return (
            Outcome.FAIL,
            [
                f"{what} reached {d.environment} at {end.isoformat()}, only {mins:.0f} min "
                f"earlier; the policy requires a {soak} min staging soak"
            ],
            [dig],
        )
    failed = [(dig, d) for dig, d in same if d.status in ("failure", "error")]
    if failed:
        dig, d = failed[-1]
        where = f" ({d.url})" if d.url else ""
        return (
            Outcome.FAIL,
            [
                f"the {d.environment} deployment of {what} failed at "
                f"{(d.finished_at or d.started_at).isoformat()}{where}; "
                "it never succeeded in pre-production"
            ],
            [dig for dig, _ in failed],
        )
    if same:
        dig, d = same[-1]
        return (
            Outcome.FAIL,
            [f"the {d.environment} deployment of {what} has not succeeded (status {d.status})"],
            [dig for dig, _ in same],
        )
    return (
        Outcome.FAIL,
        [
            f"{what} was never deployed to a pre-production environment ({envs}): staging was skipped"
        ],
        [],
    )


def actor_rule(actor: Actor | None, settings: Settings) -> tuple[Outcome, list[str]]:
    """CM-DEP-4: production deployments only by allowed identities."""
    allowed = settings.deployment.allowed_production_identities
    if actor is None:
        return Outcome.INDETERMINATE, [
            "no deploying identity was recorded, so production access cannot be judged "
            "(pass --actor)"
        ]
    if _in(actor, allowed):
        return Outcome.PASS, [f"deployed by {who(actor)}, an allowed production identity"]
    return Outcome.FAIL, [
        f"{who(actor)} is not an allowed production identity "
        f"(deployment.allowed_production_identities: {', '.join(allowed) or 'none'})"
    ]


def authorisation_rule(
    *,
    repo: str,
    environment: str,
    commit: str,
    actor: Actor | None,
    triggered_by: Actor | None,
    before: datetime,
    approvals: Iterable[tuple[str, Record]],
    participants: frozenset[str] | None,
    settings: Settings,
) -> tuple[Outcome, list[str], list[str]]:
    """CM-DEP-3: authorised per the configured model. ``participants`` None = unknown."""
    dep = settings.deployment
    model = dep.model
    if model == "auto_deploy":
        if actor is None:
            return Outcome.INDETERMINATE, ["auto-deploy model: no deploying identity recorded"], []
        if _in(actor, dep.pipeline_identities):
            return (
                Outcome.PASS,
                [f"auto-deploy model: started by the pipeline identity {who(actor)}"],
                [],
            )
        return (
            Outcome.FAIL,
            [
                f"auto-deploy model: production deployments must be started by the pipeline "
                f"({', '.join(dep.pipeline_identities) or 'none configured'}), not {who(actor)}"
            ],
            [],
        )
    if model == "manual_trigger":
        person = triggered_by or actor
        if person is None:
            return (
                Outcome.INDETERMINATE,
                ["manual-trigger model: nobody is recorded as triggering it (pass --triggered-by)"],
                [],
            )
        if _in(person, dep.deployers):
            return (
                Outcome.PASS,
                [f"manual-trigger model: triggered by {who(person)}, an authorised deployer"],
                [],
            )
        return (
            Outcome.FAIL,
            [
                f"manual-trigger model: {who(person)} is not an authorised deployer "
                f"(deployment.deployers: {', '.join(dep.deployers) or 'none'})"
            ],
            [],
        )
    # release manager: the latest decision of each release manager, before the start
    latest: dict[str, tuple[str, DeploymentApproval]] = {}
    for dig, a in approvals:
        if not isinstance(a, DeploymentApproval):
            continue
        if a.repo != repo or a.environment != environment or not _same_commit(a.commit_sha, commit):
            continue
        if a.approved_at > before:
            continue
        cur = latest.get(a.approver.key)
        if cur is None or cur[1].approved_at <= a.approved_at:
            latest[a.approver.key] = (dig, a)
    notes: list[str] = []
    good: list[tuple[str, DeploymentApproval]] = []
    for dig, a in latest.values():
        name = who(a.approver)
        if a.state != "approved":
            notes.append(f"{name} rejected the release at {a.approved_at.isoformat()}")
        elif not _in(a.approver, dep.release_managers):
            notes.append(f"{name} approved but is not a release manager")
        elif participants is not None and a.approver.keys() & participants:
            notes.append(f"{name} approved but took part in a shipped change")
        else:
            good.append((dig, a))
    rejected = [
        a
        for _, a in latest.values()
        if a.state == "rejected" and _in(a.approver, dep.release_managers)
    ]
    if good and not rejected:
        names = ", ".join(sorted(who(a.approver) for _, a in good))
        if participants is None:
            return (
                Outcome.INDETERMINATE,
                [
                    f"release-manager model: approved by {names}, but the shipped changes' "
                    "participants are unknown (no gate decision), so independence cannot be judged",
                    *notes,
                ],
                [d for d, _ in good],
            )
        return (
            Outcome.PASS,
            [
                f"release-manager model: approved before the start by {names} (not a participant)",
                *notes,
            ],
            [d for d, _ in good],
        )
    return (
        Outcome.FAIL,
        [
            f"release-manager model: no approval of commit {commit[:12]} for {environment} "
            "from a release manager who is not a participant"
            + (" (record one with `changeproof record approval`)" if not latest else ""),
            *notes,
        ],
        [d for d, _ in latest.values()],
    )


# Supplied by the evaluator for deployments made without the gate (traced through the commit
# index): deployment id → shipped change ids; change id → worst review/testing outcome; change
# id → participant identity keys (release-manager model only).
SHIPPED_KEY = "shipped_changes"
REVIEW_TESTING_KEY = "review_testing_outcomes"
PARTICIPANTS_KEY = "change_participants"


def traced_shipment(d: Deployment, ctx: Context) -> tuple[str, ...] | None:
    shipped: Mapping[str, tuple[str, ...]] = ctx.extra.get(SHIPPED_KEY, {})
    return shipped.get(d.id)


def traced_participants(d: Deployment, ctx: Context) -> frozenset[str] | None:
    ids = traced_shipment(d, ctx)
    known: Mapping[str, frozenset[str]] = ctx.extra.get(PARTICIPANTS_KEY, {})
    if ids is None or any(i not in known for i in ids):
        return None
    out: set[str] = set()
    for i in ids:
        out |= known[i]
    return frozenset(out)


def gate_decision_for(d: Deployment, ctx: Context) -> tuple[str, GateDecision] | None:
    """The latest gate decision for this deployment, made before it finished."""
    end = d.finished_at or d.started_at
    best: tuple[str, GateDecision] | None = None
    for dig, g in ctx.table("gate_decision"):
        if not isinstance(g, GateDecision):
            continue
        if g.repo != d.repo or g.environment != d.environment or g.commit_sha != d.commit_sha:
            continue
        if g.decided_at > end:
            continue
        if best is None or best[1].decided_at <= g.decided_at:
            best = (dig, g)
    return best


def emergency_for(d: Deployment, ctx: Context) -> tuple[str, Emergency] | None:
    for dig, e in emergencies_in(ctx):
        if e.repo == d.repo and e.commit_sha == d.commit_sha:
            return dig, e
    return None


_NOT_PASSING = (Outcome.FAIL, Outcome.INDETERMINATE)


class _DeploymentControl(RecordControl):
    record_kind: ClassVar[str | None] = "deployment"
    subject_kind: ClassVar = "deployment"

    def evaluate(self, subject: Deployment, ctx: Context, digest: str) -> Result:
        if not is_production(subject.environment, ctx.settings):
            return self.res(
                subject,
                Outcome.NOT_APPLICABLE,
                [f"{subject.environment} is not a production environment"],
                (digest,),
            )
        if subject.status in ("queued", "inactive"):
            return self.res(
                subject,
                Outcome.NOT_APPLICABLE,
                [f"the deployment never ran (status {subject.status})"],
                (digest,),
            )
        outcome, reasons, read = self.judge(subject, ctx)
        return self.res(subject, outcome, reasons, (digest, *read))

    def judge(self, d: Deployment, ctx: Context) -> tuple[Outcome, list[str], list[str]]:
        raise NotImplementedError

    def res(
        self, d: Deployment, outcome: Outcome, reasons: list[str], evidence: tuple[str, ...]
    ) -> Result:
        return self.result(
            d.id,
            outcome,
            reasons,
            repo=d.repo,
            evidence=evidence,
            details={"commit": d.commit_sha, "environment": d.environment},
        )


class ShipsPassingChanges(_DeploymentControl):
    """CM-DEP-1, from the gate decision that traced which changes the deployment shipped."""

    id = "CM-DEP-1"
    reads: ClassVar[tuple[str, ...]] = ("gate_decision", "emergency", "retro_review")

    def judge(self, d: Deployment, ctx: Context) -> tuple[Outcome, list[str], list[str]]:
        found = gate_decision_for(d, ctx)
        if found is None:
            return self._traced(d, ctx)
        gdig, g = found
        read = [gdig]
        if g.decision != "allow":
            return (
                Outcome.FAIL,
                [
                    f"deployed although the gate denied it at {g.decided_at.isoformat()}: "
                    + "; ".join(r for c in g.checks if c.outcome != "pass" for r in c.reasons[:1])
                ],
                read,
            )
        branch = next((c for c in g.checks if c.rule == "controlled-branch"), None)
        if branch is None or branch.outcome != "pass":
            return Outcome.FAIL, ["the deployed commit is not on a controlled branch"], read
        bad: list[str] = []
        pending: list[str] = []
        excepted: list[str] = []
        emerg = None
        if g.emergency:
            emerg = next((x for x in emergencies_in(ctx) if x[1].id == g.emergency), None)
        for sc in g.changes:
            if sc.outcome in ("pass", "not_applicable", "exception"):
                continue
            if emerg is not None and (sc.id in emerg[1].covers or sc.id == emerg[1].subject):
                ok, _, digs = completed(emerg[1], emerg[0], ctx, frozenset(g.participants))
                read.extend(digs)
                if ok:
                    excepted.append(sc.id)
                    continue
                pending.append(sc.id)
                continue
            bad.append(f"{sc.id} ({sc.outcome}: {sc.failing[0] if sc.failing else 'see check'})")
        n = len(g.changes)
        if bad:
            return (
                Outcome.FAIL,
                [
                    f"shipped {len(bad)} of {n} change(s) not passing review/testing: "
                    + "; ".join(bad[:5])
                ],
                read,
            )
        if pending:
            e = emerg[1] if emerg else None
            return (
                Outcome.INDETERMINATE,
                [
                    f"shipped under emergency {e.id if e else '?'}: "
                    f"{', '.join(pending[:5])} await a timely independent retro review"
                ],
                read,
            )
        if excepted:
            return (
                Outcome.EXCEPTION,
                [
                    f"{len(excepted)} of {n} change(s) shipped under a completed emergency procedure: {', '.join(excepted[:5])}"
                ],
                read,
            )
        return (
            Outcome.PASS,
            [f"all {n} change(s) shipped pass review and testing (gate decision {g.id})"],
            read,
        )

    def _traced(self, d: Deployment, ctx: Context) -> tuple[Outcome, list[str], list[str]]:
        """No gate decision: judge the changes the commit index says this deployment shipped."""
        ids = traced_shipment(d, ctx)
        if ids is None:
            return (
                Outcome.INDETERMINATE,
                [
                    f"no gate decision traces which changes the deployment of {d.commit_sha[:12]} "
                    "shipped, and the commit is not on a collected controlled branch: run "
                    "`changeproof gate` in the pipeline, or collect the branch it was built from"
                ],
                [],
            )
        if not ids:
            return (
                Outcome.PASS,
                [f"{d.commit_sha[:12]} ships no change beyond the previous production deployment"],
                [],
            )
        verdicts: Mapping[str, Outcome] = ctx.extra.get(REVIEW_TESTING_KEY, {})
        bad: list[str] = []
        unknown: list[str] = []
        excepted: list[str] = []
        verdict = verdicts.get
        for i in ids:  # one pass: a deployment ships hundreds of changes at a million
            v = verdict(i)
            if v is None:
                unknown.append(i)
            elif v in _NOT_PASSING:
                bad.append(i)
            elif v is Outcome.EXCEPTION:
                excepted.append(i)
        how = "traced through the commit index (no gate decision)"
        if bad:
            return (
                Outcome.FAIL,
                [
                    f"shipped {len(bad)} of {len(ids)} change(s) not passing review/testing: "
                    + ", ".join(bad[:5])
                    + (" …" if len(bad) > 5 else ""),
                    how,
                ],
                [],
            )
        if unknown:
            return (
                Outcome.INDETERMINATE,
                [f"the review/testing verdict of {', '.join(unknown[:5])} is unknown", how],
                [],
            )
        if excepted:
            return (
                Outcome.EXCEPTION,
                [
                    f"{len(excepted)} of {len(ids)} change(s) shipped under a completed "
                    f"emergency procedure or exception: {', '.join(excepted[:5])}",
                    how,
                ],
                [],
            )
        return (
            Outcome.PASS,
            [f"all {len(ids)} change(s) shipped pass review and testing", how],
            [],
        )


class StagingFirst(_DeploymentControl):
    id = "CM-DEP-2"
    reads: ClassVar[tuple[str, ...]] = ("deployment",)

    def __init__(self) -> None:
        # (the deployment table, its index by commit and artifact): the rule only needs the
        # deployments of the same commit or artifact; scanning all of them for every production
        # deployment grew with the square of their number. Keyed by the table object itself
        # (not its id, which can be reused) and read once per call, so it is thread-safe.
        self._index: tuple[object, dict[str, list[tuple[str, Record]]]] | None = None

    def _candidates(self, d: Deployment, ctx: Context) -> list[tuple[str, Record]]:
        table = ctx.table("deployment")
        cached = self._index
        if cached is None or cached[0] is not table:
            built: dict[str, list[tuple[str, Record]]] = {}
            for dig, rec in table:
                if isinstance(rec, Deployment):
                    built.setdefault(f"{rec.repo}@{rec.commit_sha}", []).append((dig, rec))
                    if rec.artifact:
                        built.setdefault(f"{rec.repo}#{rec.artifact}", []).append((dig, rec))
            cached = (table, built)
            self._index = cached
        index = cached[1]
        found = list(index.get(f"{d.repo}@{d.commit_sha}", ()))
        if d.artifact:
            seen = {dig for dig, _ in found}
            found += [x for x in index.get(f"{d.repo}#{d.artifact}", ()) if x[0] not in seen]
        return found

    def judge(self, d: Deployment, ctx: Context) -> tuple[Outcome, list[str], list[str]]:
        soak = soak_minutes(d.repo, ctx.settings)
        return staging_rule(
            d.repo,
            d.commit_sha,
            d.artifact,
            d.started_at,
            self._candidates(d, ctx),
            ctx.settings,
            soak,
        )


class Authorised(_DeploymentControl):
    id = "CM-DEP-3"
    reads: ClassVar[tuple[str, ...]] = ("deployment_approval", "gate_decision", "emergency")

    def judge(self, d: Deployment, ctx: Context) -> tuple[Outcome, list[str], list[str]]:
        found = gate_decision_for(d, ctx)
        participants = frozenset(found[1].participants) if found else traced_participants(d, ctx)
        triggered = found[1].triggered_by if found else None
        # A GitHub deployment is created (and timestamped) before it waits for its
        # environment's reviewers, and cannot run until they approve: an approval up to its
        # completion came before it ran. Elsewhere the recorded start is the real start.
        before = (d.finished_at or d.started_at) if d.system == "github" else d.started_at
        outcome, reasons, read = authorisation_rule(
            repo=d.repo,
            environment=d.environment,
            commit=d.commit_sha,
            actor=d.actor,
            triggered_by=triggered,
            before=before,
            approvals=ctx.table("deployment_approval"),
            participants=participants,
            settings=ctx.settings,
        )
        if found:
            read = [*read, found[0]]
        if outcome is not Outcome.PASS:
            em = emergency_for(d, ctx)
            if em is not None:
                o1, r1, _ = judge_declaration(em[1], ctx.settings)
                if o1 is Outcome.PASS:
                    return (
                        Outcome.PASS,
                        [f"authorised through the emergency path: {em[1].id} — {r1[0]}", *reasons],
                        [*read, em[0]],
                    )
        return outcome, reasons, read


class ProductionAccess(_DeploymentControl):
    id = "CM-DEP-4"

    def judge(self, d: Deployment, ctx: Context) -> tuple[Outcome, list[str], list[str]]:
        outcome, reasons = actor_rule(d.actor, ctx.settings)
        return outcome, reasons, []
