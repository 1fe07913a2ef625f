"""Load evidence → run controls → store results with the digests of their inputs.

Streams changes from the store (constant memory) and computes each change's facts once for
all change controls. Results are deterministic: the same evidence, settings and ``now`` give
byte-identical results.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

import msgspec
import sqlalchemy as sa

from changeproof import __version__
from changeproof.controls import CHANGE_CONTROLS, RECORD_CONTROLS, ChangeControl, Context
from changeproof.controls.base import RecordControl
from changeproof.controls.exceptions import apply_exceptions
from changeproof.controls.facts import compute_facts
from changeproof.evidence import Change, ExceptionGrant, record_type
from changeproof.outcomes import Outcome, Result
from changeproof.settings import Settings
from changeproof.store import Store, schema, to_us

_enc = msgspec.json.Encoder(order="sorted")


@dataclass
class Period:
    start: datetime | None
    end: datetime | None

    def label(self) -> str:
        a = self.start.isoformat() if self.start else "beginning"
        b = self.end.isoformat() if self.end else "now"
        return f"{a}..{b}"


@dataclass
class Summary:
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    subjects: int = 0

    def add(self, r: Result) -> None:
        self.counts.setdefault(r.control, Counter())[r.outcome.value] += 1

    @property
    def ok(self) -> bool:
        return all(
            n == 0
            for c in self.counts.values()
            for k, n in c.items()
            if k in (Outcome.FAIL.value, Outcome.INDETERMINATE.value)
        )

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {k: dict(sorted(v.items())) for k, v in sorted(self.counts.items())}


def build_context(
    store: Store,
    settings: Settings,
    now: datetime,
    *,
    record_controls: tuple[RecordControl, ...] = RECORD_CONTROLS,
) -> Context:
    exceptions = tuple(store.iter_records(ExceptionGrant))
    kinds = sorted({k for c in record_controls for k in c.reads})
    tables = {k: tuple(store.iter_records(record_type(k))) for k in kinds}
    return Context(settings=settings, now=now, exceptions=exceptions, tables=tables)


def evaluate_change(
    change: Change, digest: str, ctx: Context, controls: tuple[ChangeControl, ...] = CHANGE_CONTROLS
) -> list[Result]:
    facts = compute_facts(change, ctx.settings)
    out = []
    for control in controls:
        r = control.evaluate(facts, ctx, digest)
        out.append(apply_exceptions(r, facts.participant_keys, ctx))
    return out


def iter_results(
    store: Store,
    settings: Settings,
    now: datetime,
    *,
    period: Period | None = None,
    repo: str | None = None,
    ctx: Context | None = None,
    on_change: Callable[[], None] | None = None,
) -> Iterator[Result]:
    ctx = ctx or build_context(store, settings, now)
    p = period or Period(None, None)
    worst: dict[str, Outcome] = {}
    for digest, change in store.iter_records(Change, repo=repo, start=p.start, end=p.end):
        if not settings.is_controlled(change.repo, change.branch):
            continue
        results = evaluate_change(change, digest, ctx)
        if RECORD_CONTROLS:
            worst[change.id] = _worst(results)
        yield from results
        if on_change is not None:
            on_change()
    if not RECORD_CONTROLS:
        return
    ctx = dataclasses.replace(ctx, change_outcomes=worst)
    for control in RECORD_CONTROLS:
        for subject, dig in control.subjects(ctx):
            yield apply_exceptions(control.evaluate(subject, ctx, dig), frozenset(), ctx)
        if control.record_kind is None:
            continue
        for dig, rec in store.iter_records(record_type(control.record_kind), repo=repo):
            occurred = rec.provenance.occurred_at  # type: ignore[attr-defined]
            if p.start is not None and occurred < p.start:
                continue
            if p.end is not None and occurred >= p.end:
                continue
            yield apply_exceptions(control.evaluate(rec, ctx, dig), frozenset(), ctx)


def _worst(results: list[Result]) -> Outcome:
    from changeproof.outcomes import worst

    return worst([r.outcome for r in results])


def result_digest(r: Result) -> tuple[str, bytes]:
    body = _enc.encode(r)
    return hashlib.sha256(body).hexdigest(), body


@dataclass
class CheckRun:
    run_id: int
    summary: Summary
    results_digest: str
    settings_digest: str


def run_check(
    store: Store,
    settings: Settings,
    now: datetime,
    *,
    period: Period | None = None,
    repo: str | None = None,
    keep: Callable[[Result], None] | None = None,
    on_change: Callable[[], None] | None = None,
) -> CheckRun:
    """Evaluate every change in scope and store the results as one run."""
    p = period or Period(None, None)
    summary = Summary()
    agg = hashlib.sha256()
    scope = msgspec.json.encode(
        {"period": p.label(), "repo": repo, "now": now.isoformat()}
    ).decode()
    with store.engine.begin() as conn:
        run_id = int(
            conn.execute(
                sa.insert(schema.runs).values(
                    started_us=to_us(now),
                    settings_digest=settings.version,
                    scope=scope,
                    tool_version=__version__,
                    result_count=0,
                )
            ).inserted_primary_key[0]  # type: ignore[index]
        )
        batch: list[dict[str, object]] = []
        count = 0
        for r in iter_results(store, settings, now, period=p, repo=repo, on_change=on_change):
            dig, body = result_digest(r)
            agg.update(dig.encode())
            summary.add(r)
            count += 1
            batch.append(
                {
                    "run_id": run_id,
                    "control": r.control,
                    "subject": r.subject,
                    "repo": r.repo,
                    "outcome": r.outcome.value,
                    "digest": dig,
                    "body": body,
                }
            )
            if keep is not None:
                keep(r)
            if len(batch) >= 5000:
                conn.execute(sa.insert(schema.results), batch)
                batch.clear()
        if batch:
            conn.execute(sa.insert(schema.results), batch)
        total = agg.hexdigest()
        conn.execute(
            sa.update(schema.runs)
            .where(schema.runs.c.id == run_id)
            .values(finished_us=to_us(now), results_digest=total, result_count=count)
        )
    return CheckRun(run_id, summary, total, settings.version)


def stored_results(store: Store, run_id: int, subject: str | None = None) -> list[Result]:
    t = schema.results
    q = sa.select(t.c.body).where(t.c.run_id == run_id)
    if subject is not None:
        q = q.where(t.c.subject == subject)
    with store.connect() as conn:
        return [msgspec.json.decode(b, type=Result) for (b,) in conn.execute(q.order_by(t.c.id))]
