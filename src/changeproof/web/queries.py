"""Read models for the API and the dashboard: plain dicts from the store, no web imports."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Any

import msgspec
import sqlalchemy as sa

from changeproof.evidence import (
    Change,
    Coverage,
    Deployment,
    DeploymentApproval,
    Emergency,
    ExceptionGrant,
    GateDecision,
    RetroReview,
)
from changeproof.outcomes import SEVERITY, Outcome, decode_group
from changeproof.settings import Settings
from changeproof.store import Store, from_us, outcome_pairs, schema

BAD = ("fail", "indeterminate")


def latest_run(store: Store) -> dict[str, Any] | None:
    r = schema.runs
    with store.connect() as conn:
        row = conn.execute(
            sa.select(r).where(r.c.finished_us.is_not(None)).order_by(r.c.id.desc()).limit(1)
        ).first()
    if row is None:
        return None
    import json

    try:
        scope = json.loads(row.scope)
    except ValueError:
        scope = {"text": row.scope}
    return {
        "id": row.id,
        "period": scope.get("period") if isinstance(scope, dict) else None,
        "repo": scope.get("repo") if isinstance(scope, dict) else None,
        "started_at": from_us(row.started_us).isoformat(),
        "finished_at": from_us(row.finished_us).isoformat(),
        "scope": row.scope,
        "results": row.result_count,
        "results_digest": row.results_digest,
    }


def _worst(outcomes: list[str]) -> str:
    if not outcomes:
        return "not_evaluated"
    return max(outcomes, key=lambda o: SEVERITY[Outcome(o)])


def subject_outcomes(store: Store, run_id: int) -> dict[str, str]:
    """Worst outcome per subject in a run."""
    t = schema.result_groups
    per: dict[str, list[str]] = defaultdict(list)
    with store.connect() as conn:
        for subj, worst in conn.execute(
            sa.select(t.c.subject, t.c.worst).where(t.c.run_id == run_id)
        ):
            per[subj].append(worst)
    return {k: _worst(v) for k, v in per.items()}


def _token_filter(control: str | None, outcome: str | None) -> str | None:
    """What a group's ``outcomes`` column (" CONTROL:outcome … ") must contain."""
    if control is not None and outcome is not None:
        return f" {control}:{outcome} "
    if control is not None:
        return f" {control}:"
    if outcome is not None:
        return f":{outcome} "
    return None


def results(
    store: Store,
    run_id: int,
    *,
    control: str | None = None,
    outcome: str | None = None,
    subject: str | None = None,
    repo: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[int, list[dict[str, Any]]]:
    """One page of a run's results (in the order the run gave them) and how many match.

    Results are stored a group per subject; the count and the page come from the groups'
    ``outcomes`` column, and only the page's groups are decoded."""
    t = schema.result_groups
    where = [t.c.run_id == run_id]
    if subject is not None:
        where.append(t.c.subject == subject)
    if repo is not None:
        where.append(t.c.repo == repo)
    needle = _token_filter(control, outcome)
    if needle is None:
        counted: Any = t.c.n
    else:
        where.append(t.c.outcomes.contains(needle, autoescape=True))
        # occurrences of the token filter in each group's outcomes (they cannot overlap)
        counted = (
            sa.func.length(t.c.outcomes) - sa.func.length(sa.func.replace(t.c.outcomes, needle, ""))
        ) / len(needle)

    def hit(token: str) -> bool:
        return needle is None or f" {token} ".find(needle) >= 0

    page: dict[int, list[int]] = {}  # group id -> positions of its results on the page
    with store.connect() as conn:
        total = int(conn.execute(sa.select(sa.func.sum(counted)).where(*where)).scalar() or 0)
        seen = 0
        q = sa.select(t.c.id, t.c.outcomes).where(*where).order_by(t.c.id)
        for gid, outcomes in conn.execute(q):
            for i, token in enumerate(outcomes.split()):
                if not hit(token):
                    continue
                if seen >= offset:
                    page.setdefault(int(gid), []).append(i)
                seen += 1
                if seen >= offset + limit:
                    break
            if seen >= offset + limit:
                break
        bodies = (
            {
                int(gid): body
                for gid, body in conn.execute(
                    sa.select(t.c.id, t.c.body).where(t.c.id.in_(sorted(page)))
                )
            }
            if page
            else {}
        )
    out: list[dict[str, Any]] = []
    as_json = msgspec.json.Encoder(order="sorted").encode
    for gid in sorted(page):
        items = decode_group(bodies[gid])
        # each result as its own canonical JSON object reads (keys sorted, lists)
        out.extend(msgspec.json.decode(as_json(items[i])) for i in page[gid])
    return total, out


def posture(store: Store, run_id: int) -> list[dict[str, Any]]:
    """Per control: outcome counts in the run and a pass-rate trend over the period (each
    change-level result dated by its change's merge time; daily buckets for periods up to
    eight weeks, weekly beyond)."""
    t, e = schema.result_groups, schema.evidence
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    dated: list[tuple[str, str, int]] = []
    q = (
        sa.select(t.c.outcomes, e.c.occurred_us)
        .select_from(t.outerjoin(e, sa.and_(e.c.kind == Change.kind, e.c.key == t.c.subject)))
        .where(t.c.run_id == run_id)
    )
    with store.connect() as conn:
        for outcomes, occurred in conn.execute(q):
            for control, outcome in outcome_pairs(outcomes):
                counts[control][outcome] += 1
                if occurred is not None:
                    dated.append((control, outcome, int(occurred)))
    day = 86400 * 1_000_000
    span = (max(d[2] for d in dated) - min(d[2] for d in dated)) if dated else 0
    width = day if span <= 56 * day else 7 * day
    buckets: dict[str, dict[int, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    for control, outcome, occurred in dated:
        buckets[control][occurred // width][outcome] += 1
    out = []
    for control in sorted(counts):
        c = counts[control]
        judged = c["pass"] + c["fail"] + c["indeterminate"] + c["exception"]
        trend = []
        for b in sorted(buckets[control]):
            w = buckets[control][b]
            j = w["pass"] + w["fail"] + w["indeterminate"] + w["exception"]
            if j:
                start = from_us(b * width).date().isoformat()
                trend.append({"week": start, "rate": (w["pass"] + w["exception"]) / j,
                              "judged": j})  # fmt: skip
        out.append(
            {
                "control": control,
                "counts": dict(c),
                "judged": judged,
                "rate": ((c["pass"] + c["exception"]) / judged) if judged else None,
                "trend": trend,
                "bucket": "day" if width == day else "week",
            }
        )
    return out


def change_summary(c: Change, outcome: str) -> dict[str, Any]:
    return {
        "id": c.id,
        "repo": c.repo,
        "branch": c.branch,
        "number": c.number,
        "type": c.change_type,
        "title": c.title,
        "author": (c.author.login or c.author.name) if c.author else None,
        "merged_at": c.merged_at.isoformat(),
        "merge_sha": c.merge_sha,
        "outcome": outcome,
    }


def changes(
    store: Store,
    run_id: int | None,
    *,
    repo: str | None = None,
    outcome: str | None = None,
    q: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[int, list[dict[str, Any]]]:
    worst = subject_outcomes(store, run_id) if run_id is not None else {}
    needle = (q or "").lower()
    rows = []
    for _, c in store.iter_records(Change, repo=repo):
        o = worst.get(c.id, "not_evaluated")
        if outcome is not None and o != outcome:
            continue
        if needle and needle not in c.title.lower() and needle not in c.id.lower():
            continue
        rows.append(c)
    rows.reverse()  # newest first
    return len(rows), [change_summary(c, worst.get(c.id, "not_evaluated"))
                       for c in rows[offset : offset + limit]]  # fmt: skip


def change_detail(store: Store, run_id: int | None, change_id: str) -> dict[str, Any] | None:
    hit = store.get(Change, change_id)
    if hit is None:
        return None
    dig, c = hit
    res = results(store, run_id, subject=c.id, limit=1000)[1] if run_id is not None else []
    related: list[dict[str, Any]] = []
    for sha in c.landed_shas:
        for cls in (Deployment, DeploymentApproval, GateDecision):
            for d, rec in store.by_subject(cls, sha):
                related.append({"kind": rec.kind, "digest": d, "record": msgspec.to_builtins(rec)})
    for cls2 in (Emergency, ExceptionGrant, RetroReview):
        for d, rec in store.by_subject(cls2, c.id):
            related.append({"kind": rec.kind, "digest": d, "record": msgspec.to_builtins(rec)})
    return {
        "change": msgspec.to_builtins(c),
        "digest": dig,
        "outcome": _worst([r["outcome"] for r in res]) if res else "not_evaluated",
        "results": sorted(res, key=lambda r: (-SEVERITY[Outcome(r["outcome"])], r["control"])),
        "related": related,
    }


def emergencies(store: Store, settings: Settings, now: datetime) -> list[dict[str, Any]]:
    from changeproof.controls.emergency import clock
    from changeproof.notify import clock_json

    reviews: dict[str, list[Any]] = {}
    for d, r in store.iter_records(RetroReview):
        reviews.setdefault(r.subject, []).append((d, r))
    clocks = [clock(e, d, reviews.get(e.id, []), settings, now)
              for d, e in store.iter_records(Emergency)]  # fmt: skip
    order = {"overdue": 0, "due_soon": 1, "open": 2, "closed_late": 3, "closed": 4}
    clocks.sort(key=lambda c: (order[c.status], c.due_at))
    return [clock_json(c) for c in clocks]


def findings(store: Store, settings: Settings, now: datetime) -> list[dict[str, Any]]:
    from changeproof.cli.findings import _clock, _row, load_states

    return [
        {**_row(s, now), "clock": _clock(s, now)} for s in load_states(store, settings, now, None)
    ]


def exceptions(store: Store, now: datetime) -> list[dict[str, Any]]:
    out = []
    for d, g in store.iter_records(ExceptionGrant):
        out.append(
            {
                "id": g.id,
                "control": g.control,
                "subject": g.subject,
                "reason": g.reason,
                "approver": g.approver.login or g.approver.name,
                "granted_at": g.granted_at.isoformat(),
                "expires_at": g.expires_at.isoformat(),
                "active": g.granted_at <= now < g.expires_at,
                "days_left": round((g.expires_at - now) / timedelta(days=1), 1),
                "digest": d,
            }
        )
    out.sort(key=lambda x: (not x["active"], x["expires_at"]))
    return out


def collection(store: Store, now: datetime) -> list[dict[str, Any]]:
    """Per repository: last good collect, gaps, and webhook events waiting for a re-collect."""
    latest: dict[str, Coverage] = {}
    good: dict[str, datetime] = {}
    for _, cov in store.iter_records(Coverage):
        prev = latest.get(cov.repo)
        if prev is None or cov.provenance.collected_at >= prev.provenance.collected_at:
            latest[cov.repo] = cov
        if cov.complete:
            t = cov.provenance.collected_at
            good[cov.repo] = max(good.get(cov.repo, t), t)
    d = schema.webhook_deliveries
    waiting: Counter[str] = Counter()
    last_hook: dict[str, int] = {}
    with store.connect() as conn:
        for repo, received, recollect in conn.execute(
            sa.select(d.c.repo, d.c.received_us, d.c.recollect).where(d.c.repo.is_not(None))
        ):
            last_hook[repo] = max(last_hook.get(repo, 0), received)
            g = good.get(repo)
            if recollect and (g is None or from_us(received) > g):
                waiting[repo] += 1
    repos = sorted(set(latest) | set(store.repos()) | set(last_hook))
    out = []
    for r in repos:
        last = latest.get(r)
        g = good.get(r)
        out.append(
            {
                "repo": r,
                "changes": store.count(Change.kind, r),
                "last_good_collect": g.isoformat() if g else None,
                "hours_since_good": round((now - g).total_seconds() / 3600, 1) if g else None,
                "complete": last.complete if last else None,
                "gaps": list(last.gaps) if last else [],
                "covered_until": last.end.isoformat() if last else None,
                "last_webhook": from_us(last_hook[r]).isoformat() if r in last_hook else None,
                "awaiting_recollect": waiting[r],
            }
        )
    return out


def deliveries(
    store: Store, *, status: str | None = None, limit: int = 50
) -> tuple[dict[str, int], list[dict[str, Any]]]:
    d = schema.webhook_deliveries
    q = sa.select(d).order_by(d.c.id.desc()).limit(limit)
    if status is not None:
        q = q.where(d.c.status == status)
    with store.connect() as conn:
        counts: dict[str, int] = {
            str(k): int(v)
            for k, v in conn.execute(
                sa.select(d.c.status, sa.func.count()).group_by(d.c.status)
            ).all()
        }
        rows = conn.execute(q).all()
    return counts, [
        {
            "id": r.id,
            "source": r.source,
            "delivery_id": r.delivery_id,
            "event": r.event,
            "action": r.action,
            "repo": r.repo,
            "received_at": from_us(r.received_us).isoformat(),
            "status": r.status,
            "recollect": bool(r.recollect),
            "raw_sha256": r.raw_sha256,
            "detail": r.detail,
        }
        for r in rows
    ]
