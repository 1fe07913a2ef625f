"""Finding lifecycles and patch clocks: a pure function of observations, scans, acceptances,
changes, deployments, settings and ``now``. Nothing here reads the store.

Rules (docs/vulnerabilities.md has the worked examples):

* **First detection** is the earliest scan that saw the finding (or, for Dependabot, when
  GitHub raised the alert) — never the advisory's publish date.
* **Deadline** = first detection + the tier's hours (settings.patching). On an **escalation**
  at time t the deadline becomes ``min(old, t + window(new))``: never later. On a
  de-escalation it is recomputed from first detection; a breach already reached stays.
* **Absence** counts only from a complete (non-partial) scan that covers the finding's
  category, target and ecosystem and did not skip its package. Missing from anything else is
  not a fix and the clock runs on.
* **Fixed** means fixed in production: the change that touched the package's manifest or
  lockfile, then the first successful production deployment that contains it. A fix merged
  (or reported fixed by Dependabot, or absent from a repository scan) but not deployed is
  ``fixed-not-deployed`` and its clock keeps running.
* **Regression**: reappearing after a verified absence opens a new occurrence with a new clock.
* **Risk acceptance**: pauses the clock while valid; on expiry the remaining time resumes. One
  recorded after the deadline does not erase the breach ("late acceptance").
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from changeproof.evidence import (
    Change,
    Deployment,
    FindingObservation,
    RiskAcceptance,
    Scan,
    SeverityTier,
)
from changeproof.settings import Settings
from changeproof.vuln.identity import MANIFESTS, AliasJoiner, canonical_id, finding_key
from changeproof.vuln.severity import TIER_ORDER

State = Literal["open", "fixed-not-deployed", "resolved", "accepted", "breached"]


def window(settings: Settings, tier: SeverityTier) -> timedelta | None:
    p = settings.patching
    hours = {
        "critical": p.critical_hours,
        "high": p.high_hours,
        "medium": p.medium_hours,
        "low": p.low_hours,
    }.get(tier)
    return None if hours is None else timedelta(hours=hours)


@dataclass
class FindingState:
    """One occurrence of one finding, with its clock as at ``now``."""

    key: str  # "F-<12 hex>", "#2" appended for a regression's new occurrence
    repo: str
    category: str
    target: str
    ecosystem: str
    package: str
    advisory: str
    aliases: tuple[str, ...]
    title: str
    tier: SeverityTier
    score: float | None
    severity_source: str
    needs_triage: bool
    first_detected_at: datetime
    last_seen_at: datetime
    due_at: datetime | None  # after escalations and acceptance pauses
    state: State = "open"
    breached: bool = False
    breached_at: datetime | None = None
    occurrence: int = 1
    regression: bool = False
    previous_closed_at: datetime | None = None
    verified_absent_at: datetime | None = None
    fix_reported_at: datetime | None = None
    fix_change: str | None = None
    fix_change_sha: str | None = None
    fix_merged_at: datetime | None = None
    deployment: str | None = None
    deployed_at: datetime | None = None
    resolved_at: datetime | None = None
    acceptance: str | None = None
    accepted_until: datetime | None = None
    late_acceptance: bool = False
    paused_hours: float = 0.0
    scanner_status: str | None = None  # dismissed / suppressed / ignored, as the scanner said
    scanners: tuple[str, ...] = ()
    manifest: str | None = None
    version: str | None = None
    evidence: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)

    def remaining_hours(self, now: datetime) -> float | None:
        if self.due_at is None:
            return None
        end = self.resolved_at or now
        return (self.due_at - end).total_seconds() / 3600


@dataclass
class _Occ:
    first: datetime
    last: datetime
    tier: SeverityTier
    due: datetime | None
    obs: list[tuple[str, FindingObservation]] = field(default_factory=list)
    breached_at: datetime | None = None
    closed_at: datetime | None = None  # verified absence
    fix_reported_at: datetime | None = None
    scanner_status: str | None = None


def _covers(scan: Scan, category: str, target: str, ecosystem: str, package: str) -> bool:
    if scan.partial or package.lower() in scan.skipped:
        return False
    return any(
        c == category and t == target and (e in ("*", ecosystem)) for c, t, e in scan.coverage
    )


def _touches(change: Change, category: str, ecosystem: str, manifest: str | None) -> str | None:
    """The file of ``change`` that can have fixed the finding, if any."""
    if not change.files:
        return None
    rel = (manifest or "").lstrip("/")
    rel_abs = bool(manifest and manifest.startswith("/"))
    for f in change.files:
        for path in f.paths():
            if category != "dependency":
                if rel and (path == rel or rel.endswith("/" + path)):
                    return path
                continue
            base = posixpath.basename(path)
            if rel and not rel_abs and posixpath.dirname(rel) not in ("", posixpath.dirname(path)):
                continue
            if rel and base == posixpath.basename(rel):
                return path
            pats = MANIFESTS.get(ecosystem, ())
            if any(fnmatch.fnmatchcase(base, p) or fnmatch.fnmatchcase(path, p) for p in pats):
                return path
    return None


touched_by = _touches  # public: the evaluator picks candidate fixes with the same rule


@dataclass(frozen=True)
class Linkage:
    """Changes that may carry fixes, and production deployments with the change they ship."""

    changes: Sequence[Change] = ()
    deployments: Sequence[tuple[Deployment, Change | None]] = ()


def _deployment_for(
    fix: Change, link: Linkage, settings: Settings
) -> tuple[Deployment, datetime] | None:
    best: tuple[Deployment, datetime] | None = None
    prod = set(settings.environments.production)
    for dep, shipped in link.deployments:
        if dep.environment not in prod or dep.status != "success" or shipped is None:
            continue
        if shipped.repo != fix.repo or shipped.branch != fix.branch:
            continue
        if shipped.merged_at < fix.merged_at:
            continue  # the deployed commit predates the fix on the branch
        at = dep.finished_at or dep.started_at
        if at < fix.merged_at:
            continue
        if best is None or at < best[1]:
            best = (dep, at)
    return best


def _clusters(
    observations: Iterable[tuple[str, FindingObservation]],
) -> list[list[tuple[str, FindingObservation]]]:
    groups: dict[tuple[str, str, str, str, str], list[tuple[str, FindingObservation]]] = {}
    for d, o in observations:
        groups.setdefault((o.repo, o.category, o.target, o.ecosystem, o.package), []).append((d, o))
    out: list[list[tuple[str, FindingObservation]]] = []
    for members in groups.values():
        uf = AliasJoiner()
        for _, o in members:
            uf.join((o.advisory_id.upper(), *(a.upper() for a in o.aliases)))
        byroot: dict[str, list[tuple[str, FindingObservation]]] = {}
        for d, o in members:
            byroot.setdefault(uf.find(o.advisory_id.upper()), []).append((d, o))
        out.extend(byroot.values())
    return out


def compute_states(
    observations: Iterable[tuple[str, FindingObservation]],
    scans: Iterable[Scan],
    acceptances: Iterable[RiskAcceptance],
    link: Linkage,
    settings: Settings,
    now: datetime,
) -> list[FindingState]:
    scans_by_repo: dict[str, list[Scan]] = {}
    for s in scans:
        scans_by_repo.setdefault(s.repo, []).append(s)
    for lst in scans_by_repo.values():
        lst.sort(key=lambda s: (s.scanned_at, s.id))
    acc_by_repo: dict[str, list[RiskAcceptance]] = {}
    for a in acceptances:
        acc_by_repo.setdefault(a.repo, []).append(a)
    changes_by_repo: dict[str, list[Change]] = {}
    for c in link.changes:
        changes_by_repo.setdefault(c.repo, []).append(c)
    out: list[FindingState] = []
    for members in _clusters(observations):
        members.sort(key=lambda x: (x[1].scanned_at, x[1].id))
        out.extend(
            _lifecycle(
                members,
                scans_by_repo.get(members[0][1].repo, []),
                acc_by_repo.get(members[0][1].repo, []),
                changes_by_repo.get(members[0][1].repo, []),
                link,
                settings,
                now,
            )
        )
    out.sort(key=lambda s: (s.repo, s.due_at or datetime.max.replace(tzinfo=now.tzinfo), s.key))
    return out


def _lifecycle(
    members: list[tuple[str, FindingObservation]],
    scans: list[Scan],
    acceptances: list[RiskAcceptance],
    changes: list[Change],
    link: Linkage,
    settings: Settings,
    now: datetime,
) -> list[FindingState]:
    o0 = members[0][1]
    seen_scans = {o.scan_id for _, o in members}
    events: list[tuple[datetime, int, FindingObservation | None]] = [
        (o.scanned_at, 0, o) for _, o in members
    ]
    for s in scans:
        if s.id not in seen_scans and _covers(s, o0.category, o0.target, o0.ecosystem, o0.package):
            events.append((s.scanned_at, 1, None))
    events.sort(key=lambda e: (e[0], e[1]))
    digests = {o.id: d for d, o in members}

    occs: list[_Occ] = []
    cur: _Occ | None = None
    for t, kind, o in events:
        if kind == 1:
            if cur is not None and cur.closed_at is None and t > cur.last:
                cur.closed_at = t
            continue
        assert o is not None
        if cur is None or cur.closed_at is not None:
            first = t
            if not occs and o.alert_created_at is not None:
                first = min(first, o.alert_created_at)
            w = window(settings, o.tier)
            cur = _Occ(first=first, last=t, tier=o.tier, due=None if w is None else first + w)
            occs.append(cur)
        else:
            cur.last = max(cur.last, t)
            if o.alert_created_at is not None and len(occs) == 1 and o.alert_created_at < cur.first:
                cur.first = o.alert_created_at
            _retier(cur, o.tier, t, settings)
        cur.obs.append((digests[o.id], o))
        if o.status == "fixed":
            cur.fix_reported_at = o.status_at or t
        elif o.status == "open":
            cur.fix_reported_at = None
            cur.scanner_status = None
        else:
            cur.scanner_status = f"{o.status}" + (
                f" ({o.status_reason})" if o.status_reason else ""
            )

    ids = {o0.advisory_id, *(a for _, o in members for a in (o.advisory_id, *o.aliases))}
    cid = canonical_id(ids)
    base_key = finding_key(o0.repo, o0.category, o0.target, o0.ecosystem, o0.package, cid)
    states: list[FindingState] = []
    prev_closed: datetime | None = None
    for n, occ in enumerate(occs, start=1):
        st = _state(occ, n, base_key, cid, ids, acceptances, changes, link, settings, now)
        st.regression = n > 1
        st.occurrence = n
        st.previous_closed_at = prev_closed
        if n > 1:
            st.notes.append(
                f"regression: reappeared after a verified fix on {prev_closed:%Y-%m-%d %H:%M} UTC"
                " — a new clock started"
            )
        prev_closed = occ.closed_at
        states.append(st)
    return states


def _retier(cur: _Occ, new: SeverityTier, t: datetime, settings: Settings) -> None:
    if new == cur.tier:
        return
    w = window(settings, new)
    if TIER_ORDER[new] > TIER_ORDER[cur.tier]:
        # escalation: never extends the deadline
        cand = None if w is None else t + w
        if cur.due is None:
            cur.due = cand
        elif cand is not None:
            cur.due = min(cur.due, cand)
    else:
        if cur.due is not None and t > cur.due and cur.breached_at is None:
            cur.breached_at = cur.due  # the breach already happened and stays recorded
        cur.due = None if w is None else cur.first + w
    cur.tier = new


def _state(
    occ: _Occ,
    n: int,
    base_key: str,
    cid: str,
    ids: set[str],
    acceptances: list[RiskAcceptance],
    changes: list[Change],
    link: Linkage,
    settings: Settings,
    now: datetime,
) -> FindingState:
    last = occ.obs[-1][1]
    rep = max((o for _, o in occ.obs), key=lambda o: (TIER_ORDER[o.tier], o.scanned_at))
    st = FindingState(
        key=base_key if n == 1 else f"{base_key}#{n}",
        repo=last.repo,
        category=last.category,
        target=last.target,
        ecosystem=last.ecosystem,
        package=last.package,
        advisory=cid,
        aliases=tuple(sorted(ids - {cid})),
        title=next((o.title for _, o in reversed(occ.obs) if o.title), ""),
        tier=occ.tier,
        score=rep.score if rep.tier == occ.tier else last.score,
        severity_source=rep.severity_source if rep.tier == occ.tier else last.severity_source,
        needs_triage=all(o.needs_triage for _, o in occ.obs),
        first_detected_at=occ.first,
        last_seen_at=occ.last,
        due_at=occ.due,
        breached_at=occ.breached_at,
        verified_absent_at=occ.closed_at,
        fix_reported_at=occ.fix_reported_at,
        scanner_status=occ.scanner_status,
        scanners=tuple(sorted({o.scanner for _, o in occ.obs})),
        manifest=next((o.manifest for _, o in reversed(occ.obs) if o.manifest), None),
        version=last.version,
        evidence=tuple(d for d, _ in occ.obs),
    )
    if st.needs_triage:
        st.notes.append("unscored by every scanner: provisional tier, needs triage")
    # --- fix linkage ------------------------------------------------------------------
    signal = occ.closed_at or occ.fix_reported_at
    if signal is not None:
        cands = [
            (c, path)
            for c in changes
            if occ.first < c.merged_at <= signal
            and (path := _touches(c, st.category, st.ecosystem, st.manifest)) is not None
        ]
        if cands:
            fix, path = max(cands, key=lambda x: x[0].merged_at)
            st.fix_change, st.fix_change_sha, st.fix_merged_at = (
                fix.id,
                fix.merge_sha,
                fix.merged_at,
            )
            st.notes.append(f"fix: {fix.id} changed {path}")
            dep = _deployment_for(fix, link, settings)
            if dep is not None:
                st.deployment, st.deployed_at = dep[0].id, dep[1]
                st.resolved_at = dep[1]
        elif occ.closed_at is not None and st.target:
            # no change to link, but a complete scan of the artifact itself no longer shows it
            st.resolved_at = occ.closed_at
            st.notes.append(
                f"verified absent from a complete scan of {st.target}; no fix change or "
                "deployment linked"
            )
    # --- risk acceptances (pause / resume) ---------------------------------------------
    stop = st.resolved_at or now
    due = occ.due
    if due is not None:
        ext = timedelta(0)
        covered = occ.first
        for a in sorted(acceptances, key=lambda a: a.accepted_at):
            if not _acceptance_matches(a, ids, st):
                continue
            if a.accepted_at >= stop:
                continue
            if a.accepted_at >= due + ext:
                st.late_acceptance = True
                st.notes.append(
                    f"late acceptance {a.id}: recorded after the deadline — the breach stands"
                )
                if a.accepted_at <= now < a.expires_at:
                    st.acceptance, st.accepted_until = a.id, a.expires_at
                continue
            s = max(a.accepted_at, occ.first, covered)
            e = min(a.expires_at, stop)
            if e > s:
                ext += e - s
                covered = e
            if a.accepted_at <= now < a.expires_at:
                st.acceptance, st.accepted_until = a.id, a.expires_at
        st.paused_hours = ext.total_seconds() / 3600
        st.due_at = due + ext
    # --- state ------------------------------------------------------------------------
    if st.due_at is not None and (stop > st.due_at or st.breached_at is not None):
        st.breached = True
        st.breached_at = st.breached_at or st.due_at
    if st.resolved_at is not None:
        st.state = "resolved"
    elif st.acceptance is not None and not st.late_acceptance:
        st.state = "accepted"
    elif st.breached:
        st.state = "breached"
    elif signal is not None:
        st.state = "fixed-not-deployed"
        if st.fix_change is None:
            why = "reported fixed" if occ.fix_reported_at else "absent from a complete scan"
            st.notes.append(f"{why}, but no fix change or production deployment is linked yet")
    else:
        st.state = "open"
    if st.scanner_status:
        st.notes.append(
            f"{st.scanner_status} in the scanner: not a risk acceptance (no approver, no "
            "expiry) — the clock runs; record one with `changeproof record risk-acceptance`"
        )
    return st


def _acceptance_matches(a: RiskAcceptance, ids: set[str], st: FindingState) -> bool:
    if a.repo != st.repo:
        return False
    if a.advisory.upper() not in {i.upper() for i in ids}:
        return False
    if a.package is not None and a.package.lower() != st.package.lower():
        return False
    return a.target is None or a.target == st.target
