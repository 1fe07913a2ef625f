"""The deployment gate: one decision for one deployment, from evidence, fail-closed, recorded.

``decide`` is pure: the request, the evidence read for it and the settings in, a verdict out.
``load_evidence`` reads exactly what one decision needs from the store (the commit's change,
the changes shipped since the previous production deployment by first-parent position, this
repository's deployments and approvals, exceptions and emergencies), and ``record`` writes the
decision — the production authorisation record — into the locker and the store in one
transaction. Anything unexpected raises, and the CLI turns every raise into exit 2: no path
reaches exit 0 without an ``allow`` verdict that was recorded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from changeproof.controls.base import Context
from changeproof.controls.deployment import (
    actor_rule,
    authorisation_rule,
    soak_minutes,
    staging_rule,
)
from changeproof.controls.emergency import due_at, incident_ok, is_designated, who
from changeproof.controls.facts import change_paths, detect_risk, participants
from changeproof.errors import ConfigError, NotFoundError, UsageError
from changeproof.evidence import (
    Actor,
    Change,
    Deployment,
    DeploymentApproval,
    Emergency,
    ExceptionGrant,
    GateCheck,
    GateDecision,
    GateOutcome,
    ProtectionSnapshot,
    Provenance,
    Record,
    RetroReview,
    ShippedChange,
    TeamMembership,
    canonical_json,
    sha256_bytes,
)
from changeproof.outcomes import Outcome
from changeproof.settings import Settings

if TYPE_CHECKING:
    from changeproof.gate_store import GateStore

# The change controls the gate enforces: review and testing (CONTROLS.md, CM-DEP-1).
GATE_CONTROL_PREFIXES = ("CM-REV-", "CM-TST-")
# Rules the emergency path may override: review/testing, staging and the normal authorisation.
EMERGENCY_OVERRIDABLE = frozenset({"changes", "staging", "authorisation"})

SHA_RE = re.compile(r"^[0-9a-fA-F]{7,64}$")
ARTIFACT_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class EmergencyRequest:
    incident: str | None
    approver: str | None
    reason: str = ""
    declared_by: str | None = None


@dataclass(frozen=True)
class GateRequest:
    repo: str
    environment: str
    commit: str
    now: datetime
    artifact: str | None = None
    actor: str | None = None
    triggered_by: str | None = None
    emergency: EmergencyRequest | None = None


@dataclass(frozen=True)
class GateEvidence:
    """Everything one decision reads, each record with its sha256 digest."""

    commit: str  # the full SHA
    branch: str | None
    change: tuple[str, Change] | None
    shipped: tuple[tuple[str, Change], ...]
    previous: tuple[str, Deployment] | None
    deployments: tuple[tuple[str, Record], ...]
    approvals: tuple[tuple[str, Record], ...]
    context: Context
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    request: GateRequest
    decision: Literal["allow", "deny"]
    checks: tuple[GateCheck, ...]
    changes: tuple[ShippedChange, ...]
    participants: tuple[str, ...]
    branch: str | None
    commit: str
    inputs: tuple[str, ...]
    previous: str | None
    settings_version: str
    emergency: Emergency | None = None  # opened by this decision
    notes: tuple[str, ...] = field(default_factory=tuple)
    declared: str | None = None  # an emergency declared earlier (`record emergency`) it used

    @property
    def allowed(self) -> bool:
        return self.decision == "allow"


# --- request validation ---------------------------------------------------------------------


def validate_request(req: GateRequest, settings: Settings) -> None:
    """Bad input is an error (exit 2), never a decision: an unset variable must not allow."""
    for name, value in (
        ("--repo", req.repo),
        ("--env", req.environment),
        ("--commit", req.commit),
        ("--artifact", req.artifact),
        ("--actor", req.actor),
        ("--triggered-by", req.triggered_by),
    ):
        if value is not None and not value.strip():
            raise UsageError(
                f"{name} is empty",
                expected=f"a value for {name} (an unset CI variable expands to nothing)",
                hint=f"check the variable passed to {name}, or leave the option out",
            )
    env = req.environment
    if env in settings.environments.pre_production:
        raise UsageError(
            f"{env!r} is a pre-production environment; the gate guards production deployments",
            expected=f"one of: {', '.join(settings.environments.production)}",
            hint="record pre-production deployments with `changeproof record deployment`",
        )
    if env not in settings.environments.production:
        known = [*settings.environments.production, *settings.environments.pre_production]
        raise ConfigError(
            f"unknown environment {env!r}",
            expected=f"a production environment from [environments]: {', '.join(settings.environments.production)}",
            hint=f"use one of {', '.join(known)} or add it to [environments] production in changeproof.toml",
        )
    if not SHA_RE.match(req.commit):
        raise UsageError(
            f"malformed commit {req.commit!r}",
            expected="a hexadecimal commit SHA (7 to 64 characters)",
            hint="pass the deployed commit, e.g. --commit $GITHUB_SHA or --commit $CI_COMMIT_SHA",
        )
    if req.artifact is not None and not ARTIFACT_RE.match(req.artifact):
        raise UsageError(
            f"malformed artifact digest {req.artifact!r}",
            expected="sha256:<64 lowercase hex digits>",
            hint="pass the image or package digest, e.g. from `docker inspect --format '{{.Id}}'`",
        )
    if req.now.tzinfo is None:
        raise UsageError("the decision time has no time zone")
    em = req.emergency
    if em is not None and em.incident is not None and not incident_ok(em.incident, settings):
        raise UsageError(
            f"incident reference {em.incident!r} matches none of the configured patterns",
            expected="e.g. INC-123, a Jira key like OPS-42, a PagerDuty incident id or URL "
            "(emergency.incident_patterns)",
            hint="pass the incident's real reference, or add its format to "
            "emergency.incident_patterns",
        )


# --- the decision (pure) --------------------------------------------------------------------


def _check(rule: str, control: str, outcome: Outcome, reasons: Iterable[str]) -> GateCheck:
    rs = tuple(reasons)
    return GateCheck(
        rule=rule, control=control, outcome=outcome.value, reasons=rs or ("(no detail)",)
    )


def _gate_results(change: Change, digest: str, ctx: Context) -> list[tuple[str, Outcome, str]]:
    from changeproof.controls import CHANGE_CONTROLS
    from changeproof.controls.evaluation import evaluate_change

    controls = tuple(c for c in CHANGE_CONTROLS if c.id.startswith(GATE_CONTROL_PREFIXES))
    return [
        (r.control, r.outcome, r.reasons[0]) for r in evaluate_change(change, digest, ctx, controls)
    ]


def _worst(outcomes: list[Outcome]) -> Outcome:
    from changeproof.outcomes import worst

    return worst(outcomes)


def decide(req: GateRequest, ev: GateEvidence, settings: Settings) -> Verdict:
    checks: list[GateCheck] = []
    notes = list(ev.notes)
    inputs: list[str] = []
    # 1. the commit is on a controlled branch (CM-DEP-1)
    if ev.change is None or ev.branch is None:
        checks.append(
            _check(
                "controlled-branch",
                "CM-DEP-1",
                Outcome.FAIL,
                [
                    f"commit {ev.commit[:12]} is not on any collected controlled branch of {req.repo}"
                ],
            )
        )
    else:
        cdig, ch = ev.change
        inputs.append(cdig)
        if settings.is_controlled(req.repo, ev.branch):
            checks.append(
                _check(
                    "controlled-branch",
                    "CM-DEP-1",
                    Outcome.PASS,
                    [f"commit {ev.commit[:12]} landed on {ev.branch} through {ch.id}"],
                )
            )
        else:
            checks.append(
                _check(
                    "controlled-branch",
                    "CM-DEP-1",
                    Outcome.FAIL,
                    [
                        f"commit {ev.commit[:12]} is on {ev.branch}, which is not a controlled branch"
                    ],
                )
            )
    # 2. every change shipped since the previous production deployment passes review/testing
    shipped: list[ShippedChange] = []
    pkeys: set[str] = set()
    for dig, c in ev.shipped:
        inputs.append(dig)
        keys, _ = participants(c, settings)
        pkeys |= keys
        results = _gate_results(c, dig, ev.context)
        worst = _worst([o for _, o, _ in results])
        # what stops it first, then what passes only by exception
        fails = tuple(f"{ctl}: {why}" for ctl, o, why in results if not o.ok) + tuple(
            f"{ctl} (exception): {why}" for ctl, o, why in results if o is Outcome.EXCEPTION
        )
        shipped.append(ShippedChange(id=c.id, outcome=worst.value, digest=dig, failing=fails))
    since = (
        f"since the production deployment {ev.previous[1].id} of {ev.previous[1].commit_sha[:12]}"
        if ev.previous
        else "up to this commit (there is no earlier production deployment)"
    )
    if ev.previous:
        inputs.append(ev.previous[0])
    bad = [s for s in shipped if not Outcome(s.outcome).ok]
    if not shipped:
        checks.append(
            _check("changes", "CM-DEP-1", Outcome.INDETERMINATE, ["no shipped change was found"])
        )
    elif bad:
        worst_bad = _worst([Outcome(s.outcome) for s in bad])
        lines = [f"{len(bad)} of {len(shipped)} change(s) shipped {since} fail review or testing:"]
        for s in bad[:10]:
            lines.append(f"{s.id}: {s.failing[0] if s.failing else s.outcome}")
        if len(bad) > 10:
            lines.append(f"… and {len(bad) - 10} more")
        checks.append(_check("changes", "CM-DEP-1", worst_bad, lines))
    else:
        names = ", ".join(s.id for s in shipped[:10]) + (" …" if len(shipped) > 10 else "")
        excepted = [s for s in shipped if s.outcome == Outcome.EXCEPTION.value]
        lines = [f"{len(shipped)} change(s) shipped {since} pass review and testing: {names}"]
        for s in excepted[:10]:
            lines.append(f"{s.id} only by exception: {s.failing[0] if s.failing else 'excepted'}")
        checks.append(_check("changes", "CM-DEP-1", Outcome.PASS, lines))
    # 3. staging first (CM-DEP-2)
    paths: list[str] = []
    risks: list[str | None] = []
    for _, c in ev.shipped:
        paths.extend(change_paths(c) or ())
        risks.append(detect_risk(c))
    soak = max(
        [soak_minutes(req.repo, settings, paths, r) for r in (risks or [None])]
        or [settings.deployment.min_staging_soak_minutes]
    )
    s_out, s_reasons, s_read = staging_rule(
        req.repo, ev.commit, req.artifact, req.now, ev.deployments, settings, soak
    )
    inputs.extend(s_read)
    checks.append(_check("staging", "CM-DEP-2", s_out, s_reasons))
    # 4. authorisation per the model (CM-DEP-3)
    actor = Actor(login=req.actor, type="user") if req.actor else None
    trig = Actor(login=req.triggered_by) if req.triggered_by else None
    a_out, a_reasons, a_read = authorisation_rule(
        repo=req.repo,
        environment=req.environment,
        commit=ev.commit,
        actor=actor,
        triggered_by=trig,
        before=req.now,
        approvals=ev.approvals,
        participants=frozenset(pkeys),
        settings=settings,
    )
    inputs.extend(a_read)
    checks.append(_check("authorisation", "CM-DEP-3", a_out, a_reasons))
    # 5. production access (CM-DEP-4)
    p_out, p_reasons = actor_rule(actor, settings)
    checks.append(_check("actor", "CM-DEP-4", p_out, p_reasons))
    failing = [c for c in checks if not Outcome(c.outcome).ok]
    decision: Literal["allow", "deny"] = "deny" if failing else "allow"
    emergency: Emergency | None = None
    # 6. the emergency path: only for a deployment that would be denied
    em_req = req.emergency
    labelled = sorted(
        {lab for _, c in ev.shipped for lab in c.labels if lab in settings.emergency.labels}
    )
    declared = _declared(ev, settings, pkeys) if failing and em_req is None else None
    if failing and declared is not None and not labelled:
        em_check, ok = _use_declared(declared, failing, settings, inputs, pkeys)
        checks.append(em_check)
        if ok:
            decision = "allow"
        else:
            declared = None
    elif failing and (em_req is not None or labelled):
        declared = None
        em_check, emergency = _emergency(req, ev, settings, failing, shipped, pkeys, labelled)
        checks.append(em_check)
        if emergency is not None:
            decision = "allow"
    elif em_req is not None:
        notes.append("emergency not needed: every rule passed, so no emergency was opened")
    for dig, _ in ev.context.exceptions:
        inputs.append(dig)
    return Verdict(
        request=req,
        decision=decision,
        checks=tuple(checks),
        changes=tuple(shipped),
        participants=tuple(sorted(pkeys)),
        branch=ev.branch,
        commit=ev.commit,
        inputs=tuple(sorted(set(inputs))),
        previous=ev.previous[1].id if ev.previous else None,
        settings_version=settings.version,
        emergency=emergency,
        notes=tuple(notes),
        declared=declared[1].id if declared is not None else None,
    )


def _declared(
    ev: GateEvidence, settings: Settings, pkeys: set[str]
) -> tuple[str, Emergency] | None:
    """An emergency declared (e.g. `changeproof record emergency`) for this very commit or
    its change, within the retro-review window before now: an old declaration does not
    authorise a later deployment. The newest one."""
    from datetime import timedelta

    if ev.change is None:
        return None
    own = ev.change[1].id
    window = timedelta(hours=settings.emergency.retro_review_hours)
    found = [
        (d, e)
        for d, e in ev.context.emergencies.values()
        if e.declared_at <= ev.context.now < e.declared_at + window
        and (e.commit_sha == ev.commit or e.subject == own or own in e.covers)
    ]
    return max(found, key=lambda p: p[1].declared_at) if found else None


def _use_declared(
    declared: tuple[str, Emergency],
    failing: list[GateCheck],
    settings: Settings,
    inputs: list[str],
    pkeys: set[str],
) -> tuple[GateCheck, bool]:
    from changeproof.controls.emergency import judge_declaration

    dig, e = declared
    inputs.append(dig)
    fixed = [c for c in failing if c.rule not in EMERGENCY_OVERRIDABLE]
    if fixed:
        why = "cannot override " + ", ".join(f"{c.rule} ({c.control})" for c in fixed)
        return _check("emergency", "CM-EMG-1", Outcome.FAIL, [f"emergency {e.id}: {why}"]), False
    outcome, reasons, _ = judge_declaration(e, settings, participants=frozenset(pkeys))
    if outcome is not Outcome.PASS:
        return (
            _check(
                "emergency",
                "CM-EMG-1",
                Outcome.FAIL,
                [f"emergency {e.id} is not valid: {'; '.join(reasons)}"],
            ),
            False,
        )
    overridden = ", ".join(f"{c.rule} ({c.control})" for c in failing)
    return (
        _check(
            "emergency",
            "CM-EMG-1",
            Outcome.EXCEPTION,
            [
                f"EMERGENCY {e.id} (declared {e.declared_at.isoformat()}): allowed under incident "
                f"{e.incident}, approved by {who(e.approver)}; overrides {overridden}",
                f"an independent retro review is due by {due_at(e, settings).isoformat()}",
            ],
        ),
        True,
    )


def _incident_from(changes: Iterable[Change], settings: Settings) -> str | None:
    token_re = re.compile(r"(?:https?://\S+|[A-Za-z0-9][\w-]+)")
    for c in changes:
        for text in (*c.tickets, c.title, c.body, *c.labels):
            for tok in token_re.findall(text or ""):
                if incident_ok(tok, settings):
                    return str(tok)
    return None


def _emergency(
    req: GateRequest,
    ev: GateEvidence,
    settings: Settings,
    failing: list[GateCheck],
    shipped: list[ShippedChange],
    pkeys: set[str],
    labelled: list[str],
) -> tuple[GateCheck, Emergency | None]:
    em = req.emergency or EmergencyRequest(incident=None, approver=None)
    how = "--emergency" if req.emergency is not None else f"label {', '.join(labelled)}"

    def deny(why: str) -> tuple[GateCheck, None]:
        return _check(
            "emergency", "CM-EMG-1", Outcome.FAIL, [f"emergency path ({how}): {why}"]
        ), None

    fixed = [c for c in failing if c.rule not in EMERGENCY_OVERRIDABLE]
    if fixed:
        return deny(
            "cannot override "
            + ", ".join(f"{c.rule} ({c.control})" for c in fixed)
            + ": it only lets through changes that skipped review, testing, staging or "
            "the normal authorisation"
        )
    if ev.change is None:
        return deny("the commit is not a known change")
    incident = em.incident or _incident_from((c for _, c in ev.shipped), settings)
    if not incident:
        return deny("no incident reference (pass --incident, e.g. INC-123)")
    if not incident_ok(incident, settings):
        return deny(f"incident reference {incident!r} matches no configured pattern")
    approver_login = em.approver
    if approver_login is None:
        # a label-declared emergency may be approved on the change by a designated approver
        for _, c in ev.shipped:
            for r in c.reviews or ():
                if r.state == "APPROVED" and is_designated(r.reviewer, settings):
                    approver_login = r.reviewer.login or r.reviewer.email
                    break
    if not approver_login:
        return deny("no emergency approver (pass --approver USER)")
    approver = Actor(login=approver_login)
    if not is_designated(approver, settings):
        return deny(
            f"{approver_login} is not a designated emergency approver "
            f"(emergency.approvers: {', '.join(settings.emergency.approvers) or 'none'})"
        )
    if approver.keys() & pkeys:
        return deny(f"{approver_login} is a participant of a shipped change and cannot approve it")
    declarer_login = em.declared_by or req.triggered_by or req.actor
    declarer = Actor(login=declarer_login) if declarer_login else None
    if declarer is not None and declarer.keys() & approver.keys():
        return deny(f"{approver_login} cannot approve an emergency they declared")
    _, change = ev.change
    eid = f"EMG-{req.now:%Y%m%dT%H%M%SZ}-{ev.commit[:8]}"
    emergency = Emergency(
        id=eid,
        repo=req.repo,
        subject=change.id,
        commit_sha=ev.commit,
        incident=incident,
        approver=approver,
        declared_by=declarer,
        declared_at=req.now,
        reason=em.reason or "deployment let through the gate's emergency path",
        environment=req.environment,
        covers=tuple(s.id for s in shipped if not Outcome(s.outcome).ok) or (change.id,),
        participants=tuple(sorted(pkeys)),
        # the raw declaration is written with the decision; see record()
        provenance=Provenance(
            source="gate", occurred_at=req.now, collected_at=req.now, raw_sha256="0" * 64
        ),
    )
    due = due_at(emergency, settings)
    overridden = ", ".join(f"{c.rule} ({c.control})" for c in failing)
    return (
        _check(
            "emergency",
            "CM-EMG-1",
            Outcome.EXCEPTION,
            [
                f"EMERGENCY {eid}: allowed under incident {incident}, approved by {who(approver)} "
                f"({how}); overrides {overridden}",
                f"an independent retro review is due by {due.isoformat()} "
                f"(`changeproof record review --subject {eid} --by USER`)",
            ],
        ),
        emergency,
    )


# --- reading the evidence -------------------------------------------------------------------


def load_evidence(db: GateStore, req: GateRequest, settings: Settings) -> GateEvidence:
    """Read what one decision needs; constant in the size of the store except for the
    changes actually shipped (found by first-parent position in the commit index)."""
    import msgspec

    from changeproof.gate_store import in_list, records_of

    commit = req.commit.lower()
    where = "sha = :sha" if len(commit) in (40, 64) else "sha LIKE :sha"
    rows = db.rows(
        "SELECT sha, branch, change_key, seq FROM commit_index "
        f"WHERE repo = :repo AND {where} LIMIT 3",
        {"repo": req.repo, "sha": commit if len(commit) in (40, 64) else commit + "%"},
    )
    if not rows:
        known = db.rows("SELECT 1 FROM commit_index WHERE repo = :repo LIMIT 1", {"repo": req.repo})
        if not known:
            repos = [
                str(r[0]) for r in db.rows("SELECT DISTINCT repo FROM commit_index LIMIT 10", {})
            ]
            raise NotFoundError(
                f"no evidence for repository {req.repo!r} in the store",
                expected="a repository collected into this workspace"
                + (f" (known: {', '.join(sorted(repos))})" if repos else ""),
                hint="pass --repo as `changeproof collect` named it, or collect it first",
            )
        raise NotFoundError(
            f"commit {req.commit} of {req.repo} is not in the store",
            expected="a commit on a collected controlled branch",
            hint="run `changeproof collect` after the merge and before the gate, "
            "or check the SHA you deploy",
        )
    if len({r[0] for r in rows}) > 1:
        raise UsageError(
            f"the abbreviated commit {req.commit} is ambiguous in {req.repo}",
            expected="a longer or full SHA",
        )
    branches = {str(r[1]) for r in rows}
    # a commit indexed on several branches: judge it on a controlled one
    row = sorted(rows, key=lambda r: (not settings.is_controlled(req.repo, str(r[1])), str(r[1])))[
        0
    ]
    full_sha, branch, change_key, seq = str(row[0]), str(row[1]), str(row[2]), int(row[3])
    notes: list[str] = []
    if len(branches) > 1:
        notes.append(
            f"commit is on several branches ({', '.join(sorted(branches))}); judged on {branch}"
        )
    deployments = [
        (d, x) for d, x in records_of(db, Deployment, req.repo) if x.started_at <= req.now
    ]
    prods = sorted(
        (
            (d, x)
            for d, x in deployments
            if x.environment == req.environment and x.status == "success"
        ),
        key=lambda p: p[1].finished_at or p[1].started_at,
        reverse=True,
    )
    previous: tuple[str, Deployment] | None = None
    prev_seq: int | None = None
    for d, x in prods:
        found = db.rows(
            "SELECT seq FROM commit_index WHERE repo = :repo AND branch = :branch AND sha = :sha",
            {"repo": req.repo, "branch": branch, "sha": x.commit_sha},
        )
        if not found:
            notes.append(
                f"previous production deployment {x.id} shipped {x.commit_sha[:12]}, "
                f"which is not on {branch}; looked further back"
            )
            continue
        previous, prev_seq = (d, x), int(found[0][0])
        break
    sql = "SELECT change_key FROM commit_index WHERE repo = :repo AND branch = :branch"
    params: dict[str, object] = {"repo": req.repo, "branch": branch, "seq": seq}
    if prev_seq is not None and prev_seq < seq:
        sql += " AND seq <= :seq AND seq > :prev"
        params["prev"] = prev_seq
    elif prev_seq is not None:
        notes.append(
            "redeploying or rolling back to a commit at or before the previous production "
            "deployment: only its own change is judged"
        )
        sql += " AND seq = :seq"
    else:
        sql += " AND seq <= :seq"
    keys = sorted({str(k) for (k,) in db.rows(sql, params)} | {change_key})
    dec = msgspec.json.Decoder(Change)
    shipped: list[tuple[str, Change]] = []
    for i in range(0, len(keys), 500):
        clause, kp = in_list("k", keys[i : i + 500])
        for dig, body in db.rows(
            f"SELECT digest, body FROM evidence WHERE kind = :kind AND key IN {clause}",
            {"kind": Change.kind, **kp},
        ):
            shipped.append((str(dig), dec.decode(bytes(body))))
    shipped.sort(key=lambda p: p[1].merged_at)
    change = next((p for p in shipped if p[1].id == change_key), None)
    if change is None:
        raise NotFoundError(f"the change {change_key} indexed for {full_sha[:12]} is missing")
    approvals = [
        (d, a)
        for d, a in records_of(db, DeploymentApproval, req.repo)
        if a.environment == req.environment
    ]
    return GateEvidence(
        commit=full_sha,
        branch=branch,
        change=change,
        shipped=tuple(shipped),
        previous=previous,
        deployments=tuple(deployments),
        approvals=tuple(approvals),
        context=_with_promotions(db, gate_context(db, settings, req.now, req.repo), shipped),
        notes=tuple(notes),
    )


def _with_promotions(db: GateStore, ctx: Context, shipped: list[tuple[str, Change]]) -> Context:
    """Promotion chains (e.g. release → main) are judged by the changes on the source branch
    that introduced their commits: index them exactly as the check does (CM-REV-1 outcome of
    every earlier source-branch change). Only when a shipped change is a promotion."""
    import dataclasses

    from changeproof.controls.review import IndependentApproval
    from changeproof.controls.standard import (
        INDEX_KEY,
        PromotionIndex,
        is_promotion_source,
        promotion_of,
    )
    from changeproof.gate_store import records_of

    s = ctx.settings
    promos = [c for _, c in shipped if promotion_of(c, s) is not None]
    if not promos:
        return ctx
    from changeproof.controls.evaluation import evaluate_change

    until = max(c.merged_at for c in promos)
    index = PromotionIndex()
    ictx = dataclasses.replace(ctx, extra={**ctx.extra, INDEX_KEY: index})
    rev1 = (IndependentApproval(),)
    for dig, c in records_of(db, Change, promos[0].repo):
        if c.merged_at > until:
            break
        if is_promotion_source(s, c.branch):
            index.observe(c, evaluate_change(c, dig, ictx, rev1)[0].outcome)
    return ictx


def gate_context(db: GateStore, settings: Settings, now: datetime, repo: str) -> Context:
    """The evaluation context for the change controls, limited to what this repository needs."""
    from changeproof.controls import CHANGE_CONTROLS
    from changeproof.evidence import record_type
    from changeproof.gate_store import records_of

    exceptions = tuple(records_of(db, ExceptionGrant))
    emergencies = {e.id: (d, e) for d, e in records_of(db, Emergency, repo)}
    retro: dict[str, list[tuple[str, RetroReview]]] = {}
    for d, r in records_of(db, RetroReview):
        retro.setdefault(r.subject, []).append((d, r))
    teams: dict[str, list[tuple[str, TeamMembership]]] = {}
    for d, t in records_of(db, TeamMembership):
        teams.setdefault(t.team, []).append((d, t))
    prot: dict[tuple[str, str], list[tuple[str, ProtectionSnapshot]]] = {}
    for d, p in records_of(db, ProtectionSnapshot, repo):
        prot.setdefault((p.repo, p.branch), []).append((d, p))
    kinds = sorted({k for c in CHANGE_CONTROLS for k in getattr(c, "reads", ())})
    tables = {k: tuple(records_of(db, record_type(k))) for k in kinds}  # as build_context does
    return Context(
        settings=settings,
        now=now,
        exceptions=exceptions,
        emergencies=emergencies,
        retro_reviews={k: tuple(v) for k, v in retro.items()},
        teams={k: tuple(v) for k, v in teams.items()},
        protections={k: tuple(v) for k, v in prot.items()},
        tables=tables,
    )


# --- recording ------------------------------------------------------------------------------


def decision_record(
    v: Verdict,
    raw_sha256: str,
    mode: Literal["store", "live"],
    recorded_at: datetime | None = None,
) -> GateDecision:
    from changeproof import __version__

    req = v.request
    return GateDecision(
        id=f"gate:{req.repo}:{req.environment}:{v.commit[:12]}:{req.now:%Y%m%dT%H%M%S.%fZ}:{raw_sha256[:8]}",
        repo=req.repo,
        environment=req.environment,
        commit_sha=v.commit,
        branch=v.branch,
        artifact=req.artifact,
        actor=Actor(login=req.actor) if req.actor else None,
        triggered_by=Actor(login=req.triggered_by) if req.triggered_by else None,
        decision=v.decision,
        emergency=v.emergency.id if v.emergency else v.declared,
        checks=v.checks,
        changes=v.changes,
        participants=v.participants,
        previous_deployment=v.previous,
        inputs=v.inputs,
        settings_version=v.settings_version,
        tool_version=__version__,
        mode=mode,
        decided_at=req.now,
        provenance=Provenance(
            source="gate",
            occurred_at=req.now,
            collected_at=recorded_at or req.now,
            raw_sha256=raw_sha256,
        ),
    )


def raw_payload(v: Verdict, mode: str) -> bytes:
    """What the locker keeps for a decision: the request and the verdict, canonical JSON."""
    import msgspec

    req = v.request
    return canonical_json(
        {
            "type": "changeproof.gate.decision/v1",
            "mode": mode,
            "request": {
                "repo": req.repo,
                "environment": req.environment,
                "commit": req.commit,
                "artifact": req.artifact,
                "actor": req.actor,
                "triggered_by": req.triggered_by,
                "emergency": None
                if req.emergency is None
                else {
                    "incident": req.emergency.incident,
                    "approver": req.emergency.approver,
                    "reason": req.emergency.reason,
                },
                "at": req.now.isoformat(),
            },
            "decision": v.decision,
            "checks": msgspec.to_builtins(v.checks),
            "changes": msgspec.to_builtins(v.changes),
            "inputs": list(v.inputs),
            "settings_version": v.settings_version,
        }
    )


@dataclass(frozen=True)
class Recorded:
    decision: GateDecision
    digest: str
    emergency: Emergency | None
    emergency_digest: str | None


def record(
    db: GateStore,
    v: Verdict,
    mode: Literal["store", "live"] = "store",
    *,
    extra: Iterable[Record] = (),
    extra_raw: bytes | None = None,
    recorded_at: datetime | None = None,
) -> Recorded:
    """Write the decision (and an opened emergency) into the locker and the store, atomically.

    ``extra``/``extra_raw``: evidence the decision was made from that is not in the store yet
    (live mode: the mapped GitHub records and the raw responses they came from).
    ``recorded_at``: when it was written (default: the wall clock; the decision's own time
    is ``--at``, which may differ for a replay)."""
    import msgspec

    recorded_at = recorded_at or datetime.now(UTC)

    raws: list[tuple[bytes, str, str]] = []
    if extra_raw is not None:
        raws.append((extra_raw, "github.live", "github"))
    raw = raw_payload(v, mode)
    raws.append((raw, "gate.decision", "gate"))
    rec = decision_record(v, sha256_bytes(raw), mode, recorded_at)
    records: list[Record] = [*extra, rec]
    em = None
    if v.emergency is not None:
        em_raw = canonical_json(
            {
                "type": "changeproof.emergency.declaration/v1",
                "gate_decision": rec.id,
                **msgspec.to_builtins(v.emergency),
            }
        )
        raws.append((em_raw, "emergency.declaration", "gate"))
        em = msgspec.structs.replace(
            v.emergency,
            provenance=Provenance(
                source="gate",
                occurred_at=v.request.now,
                collected_at=recorded_at,
                raw_sha256=sha256_bytes(em_raw),
            ),
        )
        records.append(em)
    digests = db.write(raws, records)
    n = len(records) - (2 if em is not None else 1)
    return Recorded(rec, digests[n], em, digests[n + 1] if em is not None else None)


# --- rendering ------------------------------------------------------------------------------

MARK: dict[GateOutcome, str] = {
    "pass": "pass",
    "fail": "FAIL",
    "indeterminate": "UNKNOWN",
    "exception": "EMERGENCY",
    "not_applicable": "n/a",
}


def to_json(v: Verdict, rec: Recorded) -> dict[str, object]:
    import msgspec

    req = v.request
    out: dict[str, object] = {
        "decision": v.decision,
        "exit_code": 0 if v.allowed else 1,
        "repo": req.repo,
        "environment": req.environment,
        "commit": v.commit,
        "branch": v.branch,
        "artifact": req.artifact,
        "actor": req.actor,
        "decided_at": req.now.isoformat(),
        "checks": msgspec.to_builtins(v.checks),
        "changes": msgspec.to_builtins(v.changes),
        "previous_deployment": v.previous,
        "notes": list(v.notes),
        "record": {
            "id": rec.decision.id,
            "digest": rec.digest,
            "raw_sha256": rec.decision.provenance.raw_sha256,
            "inputs": list(v.inputs),
            "settings_version": v.settings_version,
        },
        "emergency": None,
    }
    if v.declared:
        out["emergency"] = {"id": v.declared, "declared_earlier": True}
    if rec.emergency is not None:
        out["emergency"] = {
            "id": rec.emergency.id,
            "incident": rec.emergency.incident,
            "approver": who(rec.emergency.approver),
            "declared_at": rec.emergency.declared_at.isoformat(),
            "covers": list(rec.emergency.covers),
            "digest": rec.emergency_digest,
        }
    return out


def headline(v: Verdict) -> str:
    req = v.request
    verb = "ALLOW" if v.allowed else "DENY"
    if v.allowed and (v.emergency is not None or v.declared):
        verb = "ALLOW (EMERGENCY)"
    return f"{verb}: deploy {req.repo}@{v.commit[:12]} ({v.branch or '?'}) to {req.environment}"


def to_text(v: Verdict, rec: Recorded) -> str:
    lines = [headline(v)]
    for c in v.checks:
        lines.append(f"  {MARK[c.outcome]:<9} {c.rule:<17} {c.control:<9} {c.reasons[0]}")
        lines.extend(f"  {'':<9} {'':<17} {'':<9} {r}" for r in c.reasons[1:])
    for n in v.notes:
        lines.append(f"  note: {n}")
    lines.append(f"Recorded as {rec.decision.id} (sha256 {rec.digest}).")
    return "\n".join(lines)


def _gh_escape(text: str, prop: bool = False) -> str:
    out = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        out = out.replace(":", "%3A").replace(",", "%2C")
    return out


def to_github(v: Verdict, rec: Recorded) -> tuple[str, str]:
    """(workflow commands for stdout, Markdown for the job summary)."""
    cmds: list[str] = []
    for c in v.checks:
        if Outcome(c.outcome).ok and c.outcome != "exception":
            continue
        level = "warning" if c.outcome == "exception" else "error"
        title = _gh_escape(f"changeproof gate: {c.rule} ({c.control})", prop=True)
        cmds.append(f"::{level} title={title}::{_gh_escape(chr(10).join(c.reasons))}")
    title = _gh_escape("changeproof gate", prop=True)
    cmds.append(f"::{'notice' if v.allowed else 'error'} title={title}::{_gh_escape(headline(v))}")
    md = [
        f"### changeproof gate — {'✅' if v.allowed else '⛔'} {headline(v)}",
        "",
        "| rule | control | outcome | reason |",
        "|---|---|---|---|",
    ]
    for c in v.checks:
        reason = "<br>".join(r.replace("|", "\\|") for r in c.reasons[:6])
        md.append(f"| {c.rule} | {c.control} | {MARK[c.outcome]} | {reason} |")
    if v.changes:
        md += ["", f"<details><summary>{len(v.changes)} change(s) shipped</summary>", ""]
        md += [f"- `{s.id}` — {s.outcome}" for s in v.changes[:200]]
        md += ["", "</details>"]
    md += ["", f"Decision recorded as `{rec.decision.id}` (sha256 `{rec.digest}`).", ""]
    return "\n".join(cmds), "\n".join(md)


def to_gitlab(v: Verdict, rec: Recorded) -> str:
    """Text inside a collapsible GitLab job-log section."""
    import time

    t = int(time.time())
    start = f"\x1b[0Ksection_start:{t}:changeproof_gate[collapsed=false]\r\x1b[0K{headline(v)}"
    end = f"\x1b[0Ksection_end:{t}:changeproof_gate\r\x1b[0K"
    body = to_text(v, rec).split("\n", 1)[1]
    return f"{start}\n{body}\n{end}"
