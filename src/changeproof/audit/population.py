"""The population of changes in a period and its completeness reconciliation (CM-POP-1).

The population is every change landed on a controlled branch in the period (one row per
change, from the store the collectors filled). The reconciliation sets it against the
independent sources the store holds: the first-parent history every change was attributed
from, production deployments, ticket references, collection coverage, branch-protection
history and bypasses. Every unmatched item is listed, never just counted.
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import io
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec
import sqlalchemy as sa

from changeproof.evidence import (
    Bypass,
    Change,
    Coverage,
    Deployment,
    Emergency,
    ProtectionRule,
    ProtectionSnapshot,
)
from changeproof.outcomes import Result
from changeproof.settings import Settings
from changeproof.store import Store, schema, to_us

POPULATION_COLUMNS = (
    "id",
    "population",
    "repo",
    "branch",
    "number",
    "change_type",
    "platform",
    "merged_at",
    "merge_sha",
    "head_sha",
    "author",
    "merged_by",
    "title",
    "tickets",
    "labels",
    "emergency_records",
    "first_production_deploy",
    "record_sha256",
    "raw_sha256",
)


def iso(value: datetime | None) -> str:
    """Canonical UTC form (…Z): the population's bytes must not depend on source offsets."""
    if value is None:
        return ""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def who(actor: object) -> str:
    if actor is None:
        return ""
    login = getattr(actor, "login", None)
    return str(login or getattr(actor, "email", None) or getattr(actor, "name", None) or "")


class _Who(msgspec.Struct):
    login: str | None = None
    email: str | None = None
    name: str | None = None


class _Prov(msgspec.Struct):
    raw_sha256: str


class _Lite(msgspec.Struct, kw_only=True):
    """The fields of a stored Change the population needs; the rest of the body is skipped
    unparsed (several times faster than decoding and validating whole changes)."""

    repo: str
    branch: str
    number: int | None = None
    change_type: str
    platform: str
    merged_at: datetime
    merge_sha: str
    landed_shas: tuple[str, ...]
    head_sha: str | None = None
    title: str = ""
    author: _Who | None = None
    merged_by: _Who | None = None
    labels: tuple[str, ...] = ()
    tickets: tuple[str, ...] = ()
    provenance: _Prov

    @property
    def id(self) -> str:
        if self.number is not None:
            return f"{self.repo}#{self.number}"
        return f"{self.repo}@{self.merge_sha[:12]}"


@dataclass(slots=True)
class Row:
    id: str
    population: str
    repo: str
    branch: str
    number: int | None
    change_type: str
    platform: str
    merged_at: datetime
    merge_sha: str
    head_sha: str | None
    author: str
    merged_by: str
    title: str
    tickets: tuple[str, ...]
    labels: tuple[str, ...]
    emergency_records: tuple[str, ...]
    first_production_deploy: datetime | None
    record_sha256: str
    raw_sha256: str
    landed_shas: tuple[str, ...]
    seq: int | None
    merged_iso: str = ""

    def csv_cells(self) -> list[str]:
        return [
            self.id,
            self.population,
            self.repo,
            self.branch,
            "" if self.number is None else str(self.number),
            self.change_type,
            self.platform,
            self.merged_iso,
            self.merge_sha,
            self.head_sha or "",
            self.author,
            self.merged_by,
            self.title,
            ";".join(self.tickets),
            ";".join(self.labels),
            ";".join(self.emergency_records),
            iso(self.first_production_deploy),
            self.record_sha256,
            self.raw_sha256,
        ]

    def json_obj(self) -> dict[str, object]:
        return {
            "id": self.id,
            "population": self.population,
            "repo": self.repo,
            "branch": self.branch,
            "number": self.number,
            "change_type": self.change_type,
            "platform": self.platform,
            "merged_at": self.merged_iso,
            "merge_sha": self.merge_sha,
            "head_sha": self.head_sha,
            "author": self.author,
            "merged_by": self.merged_by,
            "title": self.title,
            "tickets": list(self.tickets),
            "labels": list(self.labels),
            "emergency_records": list(self.emergency_records),
            "first_production_deploy": iso(self.first_production_deploy) or None,
            "record_sha256": self.record_sha256,
            "raw_sha256": self.raw_sha256,
        }


@dataclass
class Unmatched:
    """One reconciliation item: what it is, which item, and why it did not match."""

    category: str
    repo: str
    item: str
    at: str
    detail: str

    def cells(self) -> list[str]:
        return [self.category, self.repo, self.item, self.at, self.detail]


@dataclass
class ConfigEvent:
    repo: str
    branch: str
    at: str
    summary: str
    changed: str
    digest: str
    raw_sha256: str


@dataclass
class Population:
    rows: list[Row]
    repos: list[str]
    unmatched: list[Unmatched] = field(default_factory=list)
    coverage: list[dict[str, object]] = field(default_factory=list)
    config_history: list[ConfigEvent] = field(default_factory=list)
    bypasses: list[dict[str, object]] = field(default_factory=list)
    # per repository: (branch, first-parent seq, deployment, record digest); branch and seq
    # are None when the deployed commit is on no collected controlled branch
    deployments: dict[str, list[tuple[str | None, int | None, Deployment, str]]] = field(
        default_factory=dict
    )
    emergencies: list[tuple[str, Emergency]] = field(default_factory=list)
    csv_bytes: bytes = b""
    json_bytes: bytes = b""
    counts: dict[str, int] = field(default_factory=dict)
    # results of population-level controls (e.g. CM-POP-1), filled by the audit's evaluation
    population_results: list[Result] = field(default_factory=list)

    @property
    def csv_sha256(self) -> str:
        return hashlib.sha256(self.csv_bytes).hexdigest()

    @property
    def json_sha256(self) -> str:
        return hashlib.sha256(self.json_bytes).hexdigest()

    def ids(self, population: str) -> list[str]:
        return [r.id for r in self.rows if r.population == population]


def _commit_index(
    store: Store, repos: Iterable[str]
) -> dict[tuple[str, str], tuple[str, str, int]]:
    """(repo, sha) → (branch, change key, first-parent seq) for every landed commit."""
    ci = schema.commit_index
    out: dict[tuple[str, str], tuple[str, str, int]] = {}
    with store.connect() as conn:
        for repo in repos:
            res = conn.execution_options(stream_results=True, yield_per=20000).execute(
                sa.select(ci.c.sha, ci.c.branch, ci.c.change_key, ci.c.seq).where(ci.c.repo == repo)
            )
            for sha, branch, key, seq in res:
                out[(repo, sha)] = (branch, key, int(seq))
    return out


def _lookup(
    index: dict[tuple[str, str], tuple[str, str, int]], store: Store, repo: str, sha: str
) -> tuple[str, str, int] | None:
    hit = index.get((repo, sha))
    if hit is not None or len(sha) >= 40:
        return hit
    found = store.change_for_commit(repo, sha)  # abbreviated sha: a prefix query
    if found is None:
        return None
    _, change = found
    for full in change.landed_shas:
        if full.startswith(sha):
            return index.get((repo, full))
    return None


def _rule_summary(layers: tuple[ProtectionRule, ...]) -> dict[str, object]:
    active = [r for r in layers if r.enforcement == "active"]
    return {
        "layers": len(layers),
        "requires_pr": any(r.requires_pr for r in active),
        "required_approvals": max((r.required_approvals for r in active), default=0),
        "dismiss_stale": any(r.dismiss_stale for r in active),
        "last_push_approval": any(r.require_last_push_approval for r in active),
        "code_owner_review": any(r.require_code_owner_review for r in active),
        "required_checks": sorted({c for r in active for c, _ in r.required_checks}),
        "force_push_blocked": bool(active) and not any(r.allow_force_push for r in active),
        "deletion_blocked": bool(active) and not any(r.allow_deletion for r in active),
        "admins_enforced": any(r.enforce_admins for r in active),
        "bypass_actors": sorted({a for r in active for a, _ in r.bypass_actors}),
    }


def _summary_text(s: dict[str, object]) -> str:
    checks = s["required_checks"]
    assert isinstance(checks, list)
    return (
        f"PR required: {'yes' if s['requires_pr'] else 'no'}; approvals: {s['required_approvals']}; "
        f"dismiss stale: {'yes' if s['dismiss_stale'] else 'no'}; "
        f"required checks: {', '.join(checks) or 'none'}; "
        f"force push blocked: {'yes' if s['force_push_blocked'] else 'no'}; "
        f"admins enforced: {'yes' if s['admins_enforced'] else 'no'}"
    )


def _diff(before: dict[str, object] | None, after: dict[str, object]) -> str:
    if before is None:
        return "first snapshot in scope"
    parts = [f"{k}: {before[k]} → {after[k]}" for k in after if before.get(k) != after[k]]
    return "; ".join(parts) or "no change in effective protection"


def build_population(
    store: Store,
    settings: Settings,
    *,
    start: datetime | None,
    end: datetime | None,
    now: datetime,
    repos: tuple[str, ...] = (),
    advance: Callable[[int], None] | None = None,
) -> Population:
    """Read the period's changes and reconcile them; constant work per change."""
    scope = list(repos) if repos else store.repos()
    in_scope = set(scope)
    index = _commit_index(store, scope)
    prod_envs = set(settings.environments.production)

    # --- emergencies: their own population -------------------------------------------------
    emergencies: list[tuple[str, Emergency]] = [
        (d, e) for d, e in store.iter_records(Emergency) if e.repo in in_scope
    ]
    emergency_of: dict[str, list[str]] = defaultdict(list)
    for _, e in emergencies:
        key: str | None = None
        if e.subject.startswith(e.repo + "#") or e.subject.startswith(e.repo + "@"):
            key = e.subject
        for sha in (e.commit_sha, e.subject):
            if key is None and sha and all(c in "0123456789abcdef" for c in sha) and len(sha) >= 7:
                hit = _lookup(index, store, e.repo, sha)
                key = hit[1] if hit else None
        emergency_of[key or e.subject].append(e.id)
    emergency_labels = {x.lower() for x in settings.emergency.labels}

    # --- production deployments, by branch in first-parent order ---------------------------
    deployments: dict[str, list[tuple[str | None, int | None, Deployment, str]]] = defaultdict(list)
    shipped: dict[tuple[str, str], list[tuple[int, datetime]]] = defaultdict(list)
    unmatched: list[Unmatched] = []
    for d, dep in store.iter_records(Deployment, end=now):
        if dep.repo not in in_scope:
            continue  # (deployments after the as-of instant did not exist yet)
        hit = _lookup(index, store, dep.repo, dep.commit_sha)
        seq = hit[2] if hit else None
        deployments[dep.repo].append((hit[0] if hit else None, seq, dep, d))
        if dep.environment not in prod_envs or dep.status != "success":
            continue
        if hit is not None:
            shipped[(dep.repo, hit[0])].append((hit[2], dep.started_at))
        in_period = (start is None or dep.started_at >= start) and (
            end is None or dep.started_at < end
        )
        if hit is None and in_period:
            unmatched.append(
                Unmatched(
                    "deployment without a change",
                    dep.repo,
                    dep.id,
                    iso(dep.started_at),
                    f"{dep.environment} deployment of {dep.commit_sha[:12]}: the commit is not on "
                    "any collected controlled branch, so no reviewed change accounts for it",
                )
            )
    # earliest production deploy shipping seq s = min start time over deploys with seq >= s
    ship_seq: dict[tuple[str, str], list[int]] = {}
    ship_min: dict[tuple[str, str], list[datetime]] = {}
    for k, lst in shipped.items():
        lst.sort()
        ship_seq[k] = [s for s, _ in lst]
        suffix: list[datetime] = [lst[-1][1]] * len(lst)
        for i in range(len(lst) - 2, -1, -1):
            suffix[i] = min(lst[i][1], suffix[i + 1])
        ship_min[k] = suffix

    # --- the changes -------------------------------------------------------------------------
    rows: list[Row] = []
    repos_with_deploys = {r for (r, _b) in shipped}
    controlled: dict[tuple[str, str], bool] = {}  # (glob matching per branch, not per change)
    for dig, ch in _iter_changes(store, scope, start, end):
        where = (ch.repo, ch.branch)
        ok = controlled.get(where)
        if ok is None:
            ok = controlled[where] = settings.is_controlled(ch.repo, ch.branch)
        if not ok:
            continue
        seqs = [index[(ch.repo, s)][2] for s in ch.landed_shas if (ch.repo, s) in index]
        seq = max(seqs) if seqs else None
        first_deploy = None
        if seq is not None and (ch.repo, ch.branch) in ship_seq:
            k = (ch.repo, ch.branch)
            i = bisect.bisect_left(ship_seq[k], seq)
            if i < len(ship_seq[k]):
                first_deploy = ship_min[k][i]
        em = tuple(emergency_of.get(ch.id, ()))
        is_emergency = bool(em) or any(lbl.lower() in emergency_labels for lbl in ch.labels)
        row = Row(
            id=ch.id,
            population="emergency" if is_emergency else "standard",
            repo=ch.repo,
            branch=ch.branch,
            number=ch.number,
            change_type=ch.change_type,
            platform=ch.platform,
            merged_at=ch.merged_at,
            merge_sha=ch.merge_sha,
            head_sha=ch.head_sha,
            author=who(ch.author),
            merged_by=who(ch.merged_by),
            title=ch.title,
            tickets=ch.tickets,
            labels=ch.labels,
            emergency_records=em,
            first_production_deploy=first_deploy,
            record_sha256=dig,
            raw_sha256=ch.provenance.raw_sha256,
            landed_shas=ch.landed_shas,
            seq=seq,
            merged_iso=iso(ch.merged_at),
        )
        rows.append(row)
        if ch.change_type == "direct_push":
            unmatched.append(
                Unmatched(
                    "direct push",
                    ch.repo,
                    ch.id,
                    iso(ch.merged_at),
                    f"{len(ch.landed_shas)} commit(s) landed on {ch.branch} by "
                    f"{who(ch.merged_by) or who(ch.author) or 'unknown'} without a pull request",
                )
            )
        if ch.change_type != "initial" and first_deploy is None:
            why = (
                f"no production deployment of {ch.repo} was recorded at all"
                if ch.repo not in repos_with_deploys
                else f"no successful production deployment of {ch.branch} at or after this change"
            )
            unmatched.append(
                Unmatched("change never deployed", ch.repo, ch.id, iso(ch.merged_at), why)
            )
        if ch.change_type not in ("initial", "direct_push") and not ch.tickets:
            unmatched.append(
                Unmatched(
                    "change without a ticket",
                    ch.repo,
                    ch.id,
                    iso(ch.merged_at),
                    "no ticket or incident reference in the title, body, branch or labels",
                )
            )
        if advance is not None:
            advance(1)
    rows.sort(key=lambda r: (r.merged_at, r.id))

    # emergency records that match no change in the population
    ids = {r.id for r in rows}
    matched = {x for r in rows for x in r.emergency_records}
    for _, e in emergencies:
        if (start is not None and e.declared_at < start) or (
            end is not None and e.declared_at >= end
        ):
            continue
        if e.id not in matched and e.subject not in ids:
            unmatched.append(
                Unmatched(
                    "emergency without a change",
                    e.repo,
                    e.id,
                    iso(e.declared_at),
                    f"declared for {e.subject} (incident {e.incident}), which is not a change "
                    "on a controlled branch in this period",
                )
            )

    pop = Population(rows=rows, repos=scope, unmatched=unmatched, emergencies=emergencies)
    pop.deployments = dict(deployments)
    pop.coverage = _coverage(store, settings, scope, rows, start, end, unmatched)
    pop.config_history = _config_history(store, scope, start, end)
    pop.bypasses = [
        {
            "id": b.id,
            "repo": b.repo,
            "branch": b.branch or "",
            "actor": who(b.actor),
            "at": iso(b.at),
            "source": b.source,
            "detail": b.detail,
            "record_sha256": d,
            "raw_sha256": b.provenance.raw_sha256,
        }
        for d, b in store.iter_records(Bypass)
        if b.repo in in_scope and (start is None or b.at >= start) and (end is None or b.at < end)
    ]
    pop.csv_bytes, pop.json_bytes = _canonical(rows)
    cats: dict[str, int] = defaultdict(int)
    for u in unmatched:
        cats[u.category] += 1
    pop.counts = {
        "changes": len(rows),
        "standard": sum(1 for r in rows if r.population == "standard"),
        "emergency": sum(1 for r in rows if r.population == "emergency"),
        "config_snapshots": len(pop.config_history),
        "bypasses": len(pop.bypasses),
        **{f"unmatched: {k}": v for k, v in sorted(cats.items())},
    }
    return pop


def _iter_changes(
    store: Store, scope: list[str], start: datetime | None, end: datetime | None
) -> Iterable[tuple[str, _Lite]]:
    t = schema.evidence
    decoder = msgspec.json.Decoder(_Lite)
    with store.connect() as conn:
        for repo in scope:
            q = sa.select(t.c.digest, t.c.body).where(t.c.kind == Change.kind, t.c.repo == repo)
            if start is not None:
                q = q.where(t.c.occurred_us >= to_us(start))
            if end is not None:
                q = q.where(t.c.occurred_us < to_us(end))
            res = conn.execution_options(stream_results=True, yield_per=5000).execute(
                q.order_by(t.c.occurred_us, t.c.id)
            )
            for part in res.partitions(5000):
                for dig, body in part:
                    yield dig, decoder.decode(body)


def _coverage(
    store: Store,
    settings: Settings,
    scope: list[str],
    rows: list[Row],
    start: datetime | None,
    end: datetime | None,
    unmatched: list[Unmatched],
) -> list[dict[str, object]]:
    """Did collection cover the whole period for every in-scope repository and branch?"""
    by: dict[tuple[str, str], list[Coverage]] = defaultdict(list)
    for _, c in store.iter_records(Coverage):
        if c.repo in scope and c.branch is not None:
            by[(c.repo, c.branch)].append(c)
    branches = {(r.repo, r.branch) for r in rows} | set(by)
    out: list[dict[str, object]] = []
    for repo, branch in sorted(branches):
        if not settings.is_controlled(repo, branch):
            continue
        covs = by.get((repo, branch), [])
        earliest = min((c.start for c in covs if c.start is not None), default=None)
        from_start = any(c.start is None for c in covs) or (
            earliest is not None and start is not None and earliest <= start
        )
        latest = max((c.end for c in covs), default=None)
        to_end = latest is not None and (end is None or latest >= end)
        gaps = sorted({g for c in covs for g in c.gaps})
        incomplete = [c.id for c in covs if not c.complete]
        ok = bool(covs) and from_start and to_end and not incomplete
        detail = []
        if not covs:
            detail.append("no collection run recorded for this branch")
        else:
            if not from_start:
                detail.append(f"collected only from {iso(earliest)}")
            if not to_end:
                detail.append(f"collected only up to {iso(latest)}, before the period ends")
            if incomplete:
                detail.append(f"{len(incomplete)} incomplete collection run(s)")
        detail.extend(gaps)
        out.append(
            {
                "repo": repo,
                "branch": branch,
                "sources": sorted({c.source for c in covs}),
                "from": iso(earliest)
                if covs and not any(c.start is None for c in covs)
                else "beginning",
                "to": iso(latest),
                "complete": ok,
                "detail": "; ".join(detail) or "covered the whole period",
            }
        )
        if not ok:
            unmatched.append(
                Unmatched("coverage gap", repo, branch, iso(latest), "; ".join(detail))
            )
    return out


def _config_history(
    store: Store, scope: list[str], start: datetime | None, end: datetime | None
) -> list[ConfigEvent]:
    """Protection snapshots in the period, plus the one in force when it began."""
    events: list[ConfigEvent] = []
    by: dict[tuple[str, str], list[tuple[str, ProtectionSnapshot]]] = defaultdict(list)
    for d, snap in store.iter_records(ProtectionSnapshot):
        if snap.repo in scope:
            by[(snap.repo, snap.branch)].append((d, snap))
    for (repo, branch), snaps in sorted(by.items()):
        before = [s for s in snaps if start is not None and s[1].provenance.occurred_at < start]
        inside = [
            s
            for s in snaps
            if (start is None or s[1].provenance.occurred_at >= start)
            and (end is None or s[1].provenance.occurred_at < end)
        ]
        chosen = before[-1:] + inside
        prev: dict[str, object] | None = None
        for d, snap in chosen:
            summ = _rule_summary(snap.layers)
            events.append(
                ConfigEvent(
                    repo,
                    branch,
                    iso(snap.provenance.occurred_at),
                    _summary_text(summ) if snap.readable else "configuration not readable",
                    (
                        "in force at the start of the period"
                        if before and (d, snap) == before[-1]
                        else _diff(prev, summ)
                    ),
                    d,
                    snap.provenance.raw_sha256,
                )
            )
            prev = summ
    return events


def _canonical(rows: list[Row]) -> tuple[bytes, bytes]:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(POPULATION_COLUMNS)
    for r in rows:
        w.writerow(r.csv_cells())
    csv_bytes = buf.getvalue().encode("utf-8")
    json_bytes = msgspec.json.encode([r.json_obj() for r in rows], order="sorted") + b"\n"
    return csv_bytes, json_bytes


def unmatched_csv(items: list[Unmatched]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["category", "repo", "item", "at", "detail"])
    for u in sorted(items, key=lambda u: (u.category, u.repo, u.at, u.item)):
        w.writerow(u.cells())
    return buf.getvalue().encode("utf-8")
