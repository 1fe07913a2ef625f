"""Load evidence → run controls → store results with the digests of their inputs.

Streams changes from the store (constant memory) and computes each change's facts once for
all change controls. Results are deterministic: the same evidence, settings and ``now`` give
byte-identical results.

Record controls are pure too; what they need beyond stored records is gathered here while the
changes stream past and handed over in ``Context.extra`` (see :mod:`changeproof.controls.config`
and :mod:`changeproof.controls.population` for the keys). Memory stays bounded by what is
*exceptional* (failing changes, weak windows, untraced deployments), not by the population,
apart from ``change_outcomes`` (one small entry per change, for the deployment controls).
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import gc
import hashlib
import itertools
import os
import queue
import socket
import threading
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, cast

import msgspec
import sqlalchemy as sa

from changeproof import __version__
from changeproof.controls import RECORD_CONTROLS, Context
from changeproof.controls.base import RecordControl
from changeproof.controls.config import BypassExposure, Span, Suspect, weak_windows
from changeproof.controls.deployment import PARTICIPANTS_KEY, REVIEW_TESTING_KEY, SHIPPED_KEY
from changeproof.controls.evaluation import evaluate_change
from changeproof.controls.exceptions import apply_exceptions
from changeproof.controls.facts import participants
from changeproof.controls.iac import APPROVALS_KEY as IAC_APPROVALS
from changeproof.controls.standard import INDEX_KEY, PromotionIndex, is_promotion_source
from changeproof.controls.vuln import (
    LINKAGE_KEY,
    REPOS_KEY,
    FixSignature,
    findings_in,
    fix_signatures,
    may_fix,
)
from changeproof.evidence import (
    Change,
    Deployment,
    ExceptionGrant,
    ProtectionSnapshot,
    Record,
    TeamMembership,
    record_type,
)
from changeproof.outcomes import SEVERITY, Outcome, Result, decode_group, encode_group
from changeproof.settings import Settings
from changeproof.store import (
    Store,
    bulk_write_pragmas,
    driver_rows,
    in_scope,
    now_utc,
    outcome_pairs,
    schema,
    to_us,
)
from changeproof.vuln.lifecycle import Linkage

__all__ = [
    "CheckRun",
    "Period",
    "ResultGroup",
    "Summary",
    "build_context",
    "default_jobs",
    "evaluate_change",  # re-exported from controls.evaluation (the gate imports it from there)
    "iter_changes",
    "iter_result_groups",
    "iter_results",
    "promotion_context",
    "result_group",
    "run_check",
    "stored_results",
    "vuln_linkage",
]

_OUTCOMES = {o.value: o for o in Outcome}

MAX_WINDOW_IDS = 50  # change ids listed per weak window (the count is always exact)
_BYPASS_SIGNALS = ("CM-REV-1", "CM-TST-1")


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
    record_controls: tuple[RecordControl, ...] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Context:
    """Everything but the changes: exceptions, team and protection history, and the record
    kinds the record controls declare in ``reads`` (small tables, loaded once)."""
    exceptions = tuple(store.iter_records(ExceptionGrant))
    controls = RECORD_CONTROLS if record_controls is None else record_controls
    kinds = sorted({k for c in controls for k in c.reads})
    tables = {k: tuple(store.iter_records(record_type(k))) for k in kinds}
    teams: dict[str, list[tuple[str, TeamMembership]]] = {}
    for dig, tm in store.iter_records(TeamMembership):
        teams.setdefault(tm.team, []).append((dig, tm))
    prot: dict[tuple[str, str], list[tuple[str, ProtectionSnapshot]]] = {}
    for dig, ps in store.iter_records(ProtectionSnapshot):
        prot.setdefault((ps.repo, ps.branch), []).append((dig, ps))
    return Context(
        settings=settings,
        now=now,
        exceptions=exceptions,
        tables=tables,
        teams={k: tuple(v) for k, v in teams.items()},
        protections={k: tuple(v) for k, v in prot.items()},
        extra=dict(extra or {}),
    )


R = TypeVar("R", bound=Record)


def _records(
    store: Store,
    ctx: Context,
    cls: type[R],
    repo: str | None,
    start: datetime | None,
    end: datetime | None,
) -> Iterable[tuple[str, R]]:
    """Stored records of one kind (of a repository, occurred in [start, end)) in time order:
    from the context when it holds that kind already (a million changes come with tens of
    thousands of deployments: decoded once, not once per deployment control), else read."""
    if cls.kind not in ctx.tables:
        return store.iter_records(cls, repo=repo, start=start, end=end)
    out: list[tuple[str, R]] = []
    for dig, rec in ctx.tables[cls.kind]:
        # the evidence row's repo and time are the record's (store.record_key)
        at = rec.provenance.occurred_at  # type: ignore[attr-defined]
        if repo is not None and getattr(rec, "repo", None) != repo:
            continue
        if (start is not None and at < start) or (end is not None and at >= end):
            continue
        out.append((dig, cast(R, rec)))
    return out


class _Facts:
    """What record controls need to know about a run of consecutive changes: gathered per
    batch (in a worker process, if any) and merged in stream order by :class:`_Population`."""

    __slots__ = ("hits", "spans", "traced")

    def __init__(self) -> None:
        # per (repo, branch): first, last, changes, direct pushes, their commits, changes
        # since the last shipped one, any shipped
        self.spans: dict[tuple[str, str], list[Any]] = {}
        self.hits: dict[str, list[Any]] = {}  # weak window -> [changes, first change ids]
        self.traced: set[tuple[str, str]] = set()


class _Population:
    """What record controls need to know about the streamed changes, gathered in one pass."""

    def __init__(self, store: Store, ctx: Context, period: Period, repo: str | None) -> None:
        self.worst: dict[str, Outcome] = {}
        self.all = _Facts()
        # weak protection windows, per branch, sorted by start
        self.windows: dict[tuple[str, str], list[tuple[datetime, datetime | None, str]]] = {}
        for wid, r, b, a, z, _why in weak_windows(ctx):
            self.windows.setdefault((r, b), []).append((a, z, wid))
        # production deployments in the period, by (repo, commit), until a change lands them;
        # and every deployment of the period (the ones the deployment controls judge)
        prod = set(ctx.settings.environments.production)
        self.deployed: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
        self.in_period: set[str] = set()
        for dig, dep in _records(store, ctx, Deployment, repo, period.start, period.end):
            self.in_period.add(dep.id)
            if dep.environment in prod:
                self.deployed.setdefault((dep.repo, dep.commit_sha), []).append(
                    (dep.id, dep.environment, dig)
                )
        self._early: dict[str, Any] = {}  # answers (or errors) of the work done early
        self._thread: threading.Thread | None = None
        self._abandoned = False

    def start_early(self, work: Mapping[str, Callable[[], Any]]) -> None:
        """Run store reads that need no streamed change (the locker's coverage, what each
        deployment shipped) on a thread while the changes are judged: the database does
        much of it without the GIL. Call it after any fork; :meth:`early` collects."""

        def run() -> None:
            for name, fn in work.items():
                if self._abandoned:  # the stream stopped: nobody will ask
                    return
                try:
                    self._early[name] = fn()
                except BaseException as exc:  # re-raised by early()
                    self._early[name] = exc

        if self._thread is None:
            self._thread = threading.Thread(target=run, name="check-early-reads", daemon=True)
            self._thread.start()

    def early(self, name: str, fn: Callable[[], Any]) -> Any:
        """What :meth:`start_early` computed for ``name`` (computed now if it was not)."""
        self.settle()
        if name not in self._early:
            self._early[name] = fn()
        value = self._early[name]
        if isinstance(value, BaseException):
            raise value
        return value

    def observe(self, f: _Facts, change: Change) -> None:
        """One judged change into the batch's facts ``f`` (changes in stream order)."""
        merged_at = change.merged_at
        key = (change.repo, change.branch)
        direct = change.change_type == "direct_push"
        span = f.spans.get(key)
        if span is None:
            span = f.spans[key] = [merged_at, merged_at, 0, 0, 0, 0, False]
        span[1] = merged_at
        span[2] += 1
        span[5] += 1
        if direct:
            span[3] += 1
            span[4] += len(change.landed_shas)
        wins = self.windows.get(key)
        if wins:
            i = bisect.bisect_right(wins, merged_at, key=lambda w: w[0])
            if i:
                _, z, wid = wins[i - 1]
                if z is None or merged_at < z:
                    hit = f.hits.setdefault(wid, [0, []])
                    hit[0] += 1
                    if len(hit[1]) < MAX_WINDOW_IDS:
                        hit[1].append(change.id)
        if self.deployed:
            for sha in change.landed_shas:
                if (change.repo, sha) in self.deployed:
                    f.traced.add((change.repo, sha))
                    span[5], span[6] = 0, True  # this change and every earlier one shipped

    def merge(self, f: _Facts) -> None:
        """A batch's facts, after every batch before it."""
        spans = self.all.spans
        for key, s in f.spans.items():
            span = spans.get(key)
            if span is None:
                spans[key] = s
                continue
            span[1] = s[1]
            span[2] += s[2]
            span[3] += s[3]
            span[4] += s[4]
            if s[6]:
                span[5], span[6] = s[5], True
            else:
                span[5] += s[5]
        for wid, (n, ids) in f.hits.items():
            hit = self.all.hits.setdefault(wid, [0, []])
            hit[0] += n
            hit[1].extend(ids[: MAX_WINDOW_IDS - len(hit[1])])
        self.all.traced |= f.traced

    def settle(self, *, abandon: bool = False) -> None:
        """Wait for the early reads (with ``abandon``, for the one under way only)."""
        self._abandoned = self._abandoned or abandon
        if self._thread is not None:
            self._thread.join()

    def gathered(self, store: Store, period: Period, repo: str | None) -> dict[str, Any]:
        missing = self.early("locker_missing", lambda: _locker_missing(store, period, repo))
        untraced: list[tuple[str, str, str, str, str]] = []
        traced = self.all.traced
        for (r, sha), deps in sorted(self.deployed.items()):
            if (r, sha) in traced or store.change_for_commit(r, sha) is not None:
                continue
            untraced.extend((dep_id, r, env, sha, dig) for dep_id, env, dig in deps)
        spans = self.all.spans
        return {
            "spans": {k: Span(v[0], v[1], v[2], v[3], v[4]) for k, v in spans.items()},
            "windows": {k: (v[0], tuple(v[1])) for k, v in self.all.hits.items()},
            "untraced_deployments": tuple(untraced),
            "unshipped": {k: v[5] for k, v in spans.items() if v[6] and v[5]},
            "locker_missing": missing,
        }


def _locker_missing(store: Store, period: Period, repo: str | None) -> dict[str, tuple[int, int]]:
    """Per repository: (changes in the period, changes whose raw payload the locker lacks)."""
    e, o = schema.evidence, schema.locker_objects
    # an outer join (a locker object's digest is its key: one match at most), not a
    # correlated EXISTS: PostgreSQL hashes the join where it looked every change's payload up
    # in the index one by one (measured at 300,000 changes: 0.51 s of the server against 1.3)
    q = sa.select(e.c.repo, sa.func.count(), sa.func.count() - sa.func.count(o.c.digest))
    q = in_scope(
        q.select_from(e.outerjoin(o, o.c.digest == e.c.raw_sha256)),
        Change.kind,
        repo,
        period.start,
        period.end,
    )
    with store.connect() as conn:
        rows = conn.execute(q.group_by(e.c.repo)).all()
    return {str(r[0]): (int(r[1]), int(r[2] or 0)) for r in rows if r[0]}


class ResultGroup(NamedTuple):
    """Every result one run gave one subject, as stored (a row of ``result_groups``): a
    change's results together, a record's one. The body is decoded only when someone needs
    the :class:`Result` objects themselves (most consumers count and store)."""

    subject: str
    repo: str | None
    outcomes: str  # " CONTROL:outcome CONTROL:outcome " in result order
    worst: str
    n: int
    digest: str  # sha256 of body; "" when the body was not encoded (see bodies_for)
    body: bytes  # the results as canonical JSON (outcomes.encode_group)

    def results(self) -> list[Result]:
        return decode_group(self.body)


_Group = tuple[str, str | None, str, str, int, str, bytes]  # a ResultGroup's fields


def result_group(
    results: list[Result], *, encode: bool = True, judged: tuple[str, str] | None = None
) -> _Group:
    """Results of one subject as one stored group (plain tuple: cheap to send between
    processes). ``encode=False`` leaves the body and digest empty. ``judged``: the group's
    outcome tokens (" CONTROL:outcome … ") and worst outcome when the caller has them."""
    first = results[0]
    if judged is None:
        outs = [r.outcome for r in results]
        # Outcome is a StrEnum: concatenation gives its value (without the enum's slow .value)
        tokens = " ".join([r.control + ":" + o for r, o in zip(results, outs, strict=True)])
        judged = (" " + tokens + " ", str.__str__(max(outs, key=SEVERITY.__getitem__)))
    if encode:
        body = encode_group(results)
        digest = hashlib.sha256(body).hexdigest()
    else:
        body, digest = b"", ""
    return (first.subject, first.repo, judged[0], judged[1], len(results), digest, body)


def result_groups(
    results: list[Result], bodies_for: frozenset[str] | None = None
) -> tuple[_Group, ...]:
    """:func:`result_group` for each run of consecutive results with one subject; with
    ``bodies_for``, only those subjects' groups are encoded."""
    runs: list[list[Result]] = [results]
    if len({r.subject for r in results}) > 1:
        runs = []
        for r in results:
            if not runs or r.subject != runs[-1][0].subject:
                runs.append([])
            runs[-1].append(r)
    return tuple(
        result_group(run, encode=bodies_for is None or run[0].subject in bodies_for) for run in runs
    )


class _Chunk(NamedTuple):
    """Stored groups of a batch of changes (or a run of record results) with what the check
    counts and the record controls need from them. Workers send these back: per-batch
    totals and parallel lists keep the main process's work per change small."""

    groups: list[_Group]
    digests: str  # the groups' digests, concatenated in order (the run digest hashes them)
    tokens: Counter[str]  # "CONTROL:outcome" -> results
    results: int
    ids: list[str]  # the judged changes (on controlled branches), in order
    worst: list[str]  # each one's worst outcome
    review_testing: list[str]  # each one's worst review/testing outcome (CM-DEP-1 asks)
    participants: dict[str, frozenset[str]]  # only under the release-manager model
    iac_approvals: dict[str, Mapping[str, str]]  # CM-IAC-1 publishes these for CM-IAC-2
    facts: _Facts | None


def _chunk(groups: list[_Group], **judged: Any) -> _Chunk:
    tokens: Counter[str] = Counter()
    tokens.update(" ".join([g[2] for g in groups]).split())
    return _Chunk(
        groups,
        "".join([g[5] for g in groups]),
        tokens,
        sum([g[4] for g in groups]),
        judged.get("ids", []),
        judged.get("worst", []),
        judged.get("review_testing", []),
        judged.get("participants", {}),
        judged.get("iac_approvals", {}),
        judged.get("facts"),
    )


# PostgreSQL: one array parameter (planned once per shape, not once per list length) and
# results in binary format — bodies as text are hex, twice the bytes for the server to encode
# and the client to decode (measured: half the CPU on both sides for 100,000 change bodies)
_BY_IDS_SQL = "SELECT id, kind, digest, body FROM evidence WHERE id = ANY(%s)"


def _pg_binary_rows(conn: sa.Connection, sql: str, ids: list[int]) -> list[Any]:
    raw = conn.connection.driver_connection
    assert raw is not None
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        return list(raw.execute(sql, [ids], binary=True).fetchall())
    except dbapi_error as exc:  # reported as SQLAlchemy reports any other statement's failure
        raise sa.exc.DBAPIError.instance(sql, [ids], exc, dbapi_error) from exc


class _Judge:
    """Judges changes from their stored bodies; runs in-process or in a worker process."""

    def __init__(
        self, ctx: Context, pop: _Population, bodies_for: frozenset[str] | None = None
    ) -> None:
        self.ctx = ctx
        self.pop = pop  # read-only here: the weak windows and deployments to match
        # None: every row with its canonical body and digest; else only these subjects' rows
        # (the others are counted, never stored or decoded: the audit)
        self.bodies_for = bodies_for
        self.settings = ctx.settings
        self.need_participants = ctx.settings.deployment.model == "release_manager"
        index = ctx.extra.get(INDEX_KEY)
        self.index = index if isinstance(index, PromotionIndex) else None
        self.decode = msgspec.json.Decoder(Change).decode
        self.controlled: dict[tuple[str, str], bool] = {}
        # CM-IAC-2 looks up CM-IAC-1's approval details only for changes a stored plan is
        # attached to: keep just those (one small dict per change was ~400 bytes of the main
        # process's memory per change, 0.4 GB at a million)
        self.plan_subjects = frozenset(
            s for _, p in ctx.table("plan") if (s := getattr(p, "subject", None)) is not None
        )
        # CM-CFG-2 judges each change that failed CM-REV-1 or CM-TST-1 against the protection
        # in force at its merge: here, as the change is judged (in the workers), not after
        # the stream on one core (a tenth of the changes at a million: ≈ 2 s of the tail)
        self.bypass = next((c for c in RECORD_CONTROLS if isinstance(c, BypassExposure)), None)
        self.store: Store | None = None  # set for workers that read change bodies themselves
        self._reader: tuple[int, Store] | None = None  # (pid, this process's own connections)

    def batch_ids(self, ids: list[int]) -> _Chunk:
        """:meth:`batch` for stored changes named by row id, read by this process itself on
        its own connections: the bodies never pass through the parent (reading, pickling and
        piping them there cost a quarter of its time), and no read transaction stays open for
        the whole stream (a long one would keep SQLite from checkpointing the results as they
        are committed). A row changed since the ids were listed is judged as it is now (its
        digest says which); a row gone since is skipped."""
        assert self.store is not None
        pid = os.getpid()
        if self._reader is None or self._reader[0] != pid:
            # never the parent's connections: they are shared sockets and files after a fork
            self._reader = (pid, self.store.reopen())
        t = schema.evidence
        # by primary key alone (a condition on the kind would let SQLite pick the kind index
        # and scan every change); the kind is checked here
        q = sa.select(t.c.id, t.c.kind, t.c.digest, t.c.body).where(
            t.c.id.in_(sa.bindparam("ids", expanding=True))
        )
        reader = self._reader[1]
        kind = Change.kind
        try:
            rows: Sequence[Any]
            with reader.connect() as conn:
                if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
                    rows = _pg_binary_rows(conn, _BY_IDS_SQL, ids)
                else:
                    rows = conn.execute(q, {"ids": ids}).all()
            got = {i: (d, b) for i, k, d, b in rows if k == kind}
        except sa.exc.SQLAlchemyError as exc:
            from changeproof.store import _explain_db_error

            raise _explain_db_error(reader.url, exc) from None
        return self.batch([got[i] for i in ids if i in got])

    def close(self) -> None:
        """Close this process's own connections, if :meth:`batch_ids` opened any (a worker
        never needs to: it ends with its process)."""
        if self._reader is not None and self._reader[0] == os.getpid():
            self._reader[1].close()
        self._reader = None

    def batch(self, rows: list[tuple[str, bytes]] | list[tuple[str, Any]]) -> _Chunk:
        groups: list[_Group] = []
        ids: list[str] = []
        worst: list[str] = []
        rt: list[str] = []
        parts: dict[str, frozenset[str]] = {}
        iac: dict[str, Mapping[str, str]] = {}
        facts = _Facts()
        decode = self.decode
        for digest, body in rows:
            change = decode(body)
            judged = self.one(digest, change, facts)
            if judged is None:
                continue
            gs, change_worst, review_testing, approvals = judged
            groups.extend(gs)
            ids.append(change.id)
            worst.append(change_worst)
            rt.append(review_testing)
            if self.need_participants:
                parts[change.id] = participants(change, self.settings)[0]
            if approvals and change.id in self.plan_subjects:
                iac[change.id] = approvals
        return _chunk(
            groups,
            ids=ids,
            worst=worst,
            review_testing=rt,
            participants=parts,
            iac_approvals=iac,
            facts=facts,
        )

    def one(
        self, digest: str, change: Change, facts: _Facts
    ) -> tuple[tuple[_Group, ...], str, str, Mapping[str, str] | None] | None:
        """The change's stored groups (its results; then CM-CFG-2's, if it is a probable
        bypass), its worst outcome, its worst review/testing outcome and CM-IAC-1's details;
        None for a change on a branch that is not controlled."""
        settings = self.settings
        promotion_source = self.index is not None and is_promotion_source(settings, change.branch)
        where = (change.repo, change.branch)
        controlled = self.controlled.get(where)
        if controlled is None:  # glob matching once per branch, not once per change
            controlled = self.controlled[where] = settings.is_controlled(*where)
        if not controlled:
            if promotion_source:
                assert self.index is not None
                self.index.observe(change, _rev1(change, digest, self.ctx))
            return None
        results = evaluate_change(change, digest, self.ctx)
        iac = None
        rev1 = None
        failed: list[str] = []
        # one pass for what the record controls need: the worst review/testing outcome (as
        # _review_testing computes it), CM-IAC-1's details, CM-REV-1's verdict, bypass signals
        # — and, in the same pass, the stored group's outcome tokens and worst outcome
        rt, rt_severity = Outcome.NOT_APPLICABLE, -1
        tokens: list[str] = []
        worst, worst_severity = Outcome.NOT_APPLICABLE, -1
        subject = results[0].subject
        one_subject = True
        for r in results:
            control, outcome = r.control, r.outcome
            severity = SEVERITY[outcome]
            tokens.append(control + ":" + outcome)  # a StrEnum concatenates as its value
            if severity > worst_severity:  # the first of the worst, as max() picks it
                worst, worst_severity = outcome, severity
            if r.subject != subject:
                one_subject = False
            if control == "CM-IAC-1":
                if r.details:
                    iac = r.details
            elif control == "CM-REV-1":
                rev1 = outcome
            if outcome is Outcome.FAIL and control in _BYPASS_SIGNALS:
                failed.append(control)
            if severity > rt_severity and control.startswith(_REVIEW_TESTING):
                rt, rt_severity = outcome, severity
        if promotion_source and rev1 is not None:
            assert self.index is not None
            self.index.observe(change, rev1)
        self.pop.observe(facts, change)
        bodies_for = self.bodies_for
        if one_subject:
            groups: tuple[_Group, ...] = (
                result_group(
                    results,
                    encode=bodies_for is None or subject in bodies_for,
                    judged=(" " + " ".join(tokens) + " ", str.__str__(worst)),
                ),
            )
        else:
            groups = result_groups(results, bodies_for)
        if failed and self.bypass is not None:
            suspect = Suspect(
                change.id, change.repo, change.branch, change.merged_at, tuple(failed), digest
            )
            found = self.bypass.suspect(suspect, self.ctx)
            if found is not None:
                bypass = self.bypass.evaluate(found[0], self.ctx, found[1])
                r = apply_exceptions(bypass, frozenset(), self.ctx)
                # encoded whatever ``bodies_for`` says, as every record control's result is
                groups = (*groups, result_group([r]))
        return groups, str.__str__(worst), str.__str__(rt), iac


def _worker_start() -> None:
    """In each forked worker, which inherits the judge and its read-only context."""
    gc.freeze()  # the inherited context is long-lived; keep collections off it
    gc.set_threshold(100_000, 50, 1000)


def default_jobs() -> int:
    """Processes for judging changes: one per CPU this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


PARALLEL_FROM = 5_000  # fewer changes than this are judged in-process (no pool start-up)
_BATCH = 500
_SEGMENT = 50_000  # result groups per committed segment of a run
_ABANDONED_AFTER_US = 15 * 60 * 1_000_000  # an unfinished run silent this long is gone


def _changes_query(
    cols: tuple[Any, ...], repo: str | None, start: datetime | None, end: datetime | None
) -> sa.Select[Any]:
    """The stored changes in scope, per repository in merge order (the check's stream order)."""
    t = schema.evidence
    q = in_scope(sa.select(*cols), Change.kind, repo, start, end)
    return q.order_by(t.c.repo, t.c.occurred_us, t.c.id)


def _change_rows(
    store: Store,
    repo: str | None,
    start: datetime | None,
    end: datetime | None,
    batch: int = _BATCH,
) -> Iterator[list[tuple[str, bytes, str]]]:
    """Stored changes as (digest, body, repository) batches, in :func:`iter_changes` order."""
    t = schema.evidence
    q = _changes_query((t.c.digest, t.c.body, t.c.repo), repo, start, end)
    with store.connect() as conn:
        res = conn.execution_options(stream_results=True, yield_per=batch).execute(q)
        try:
            for part in res.partitions(batch):
                # bytes, not a driver buffer: batches may be pickled to a worker
                yield [(str(d), b if type(b) is bytes else bytes(b), str(r)) for d, b, r in part]
        finally:
            res.close()  # a server-side cursor (PostgreSQL) must not outlive an abandoned stream


_ID_PAGE = 50_000


def _change_ids(
    store: Store,
    repo: str | None,
    start: datetime | None,
    end: datetime | None,
    first_ids: dict[str, int],
    batch: int = _BATCH,
) -> Iterator[list[int]]:
    """Row ids of the stored changes, in :func:`_change_rows` order, ``batch`` at a time.
    Read a page at a time (keyset), each page its own short read: nothing holds one snapshot
    for the whole stream. ``first_ids`` gets each repository's first row id."""
    t = schema.evidence
    q = _changes_query((t.c.id, t.c.repo, t.c.occurred_us), repo, start, end).limit(_ID_PAGE)
    after: tuple[Any, ...] | None = None
    pending: list[int] = []
    while True:
        page = q
        if after is not None:
            page = q.where(sa.tuple_(t.c.repo, t.c.occurred_us, t.c.id) > sa.tuple_(*after))
        with store.connect() as conn:
            rows = conn.execute(page).all()
        for i, r, _ in rows:
            if r not in first_ids:
                first_ids[r] = i
            pending.append(i)
            if len(pending) >= batch:
                yield pending
                pending = []
        if len(rows) < _ID_PAGE:
            break
        last_id, last_repo, last_at = rows[-1]
        after = (last_repo, last_at, last_id)
    if pending:
        yield pending


def _judge_all(
    store: Store,
    judge: _Judge,
    period: Period,
    repo: str | None,
    jobs: int,
    parallel_from: int,
    first_of_repo: dict[str, str],
    batch: int = _BATCH,
) -> Iterator[_Chunk]:
    """Every change in scope judged, a batch at a time, in stream order. With ``jobs`` > 1
    (and no promotion chains, whose index makes each promotion depend on the changes before
    it) batches are judged by a pool of worker processes, a bounded number in flight,
    answers in order."""
    from changeproof import forkpool

    parallel = (
        jobs > 1
        and judge.index is None
        and forkpool.available()
        and store.reopenable  # workers read the changes on their own connections
        and store.count(Change.kind) >= parallel_from
    )

    def batches() -> Iterator[list[tuple[str, bytes]]]:
        for part in _change_rows(store, repo, period.start, period.end, batch):
            for dig, _, r in part:
                first_of_repo.setdefault(r, dig)
            yield [(d, b) for d, b, _ in part]

    if not parallel:
        for rows in batches():
            yield judge.batch(rows)
        return
    # The workers fork before the stream opens (ordered_map forks first, then pulls batches):
    # they inherit the judge and its context, and no open cursor. They get row ids and read
    # the bodies themselves.
    judge.store = store
    first_ids: dict[str, int] = {}
    try:
        yield from forkpool.ordered_map(
            judge.batch_ids,
            _change_ids(store, repo, period.start, period.end, first_ids, batch),
            jobs,
            setup=_worker_start,
        )
    finally:
        judge.store = None
    if first_ids:  # each repository's first change's digest (CM-VUL-* name it)
        t = schema.evidence
        with store.connect() as conn:
            digests = dict(
                conn.execute(
                    sa.select(t.c.id, t.c.digest).where(t.c.id.in_(list(first_ids.values())))
                ).all()
            )
        for r, i in first_ids.items():
            if i in digests:
                first_of_repo.setdefault(r, str(digests[i]))


def iter_result_groups(
    store: Store,
    settings: Settings,
    now: datetime,
    *,
    period: Period | None = None,
    repo: str | None = None,
    ctx: Context | None = None,
    on_change: Callable[[int], None] | None = None,
    extra: Mapping[str, Any] | None = None,
    jobs: int = 1,
    parallel_from: int = PARALLEL_FROM,
    bodies_for: frozenset[str] | None = None,
    batch: int = _BATCH,
) -> Generator[_Chunk, None, None]:
    """Every result of the period as stored groups (:class:`ResultGroup`'s fields as plain
    tuples), a chunk at a time: one group per change with all its results, then one per
    record control's result. ``on_change(n)`` hears of every ``n`` changes judged.

    Groups and chunks, not rows: per-result and per-change Python work in the main process
    is what limits a check once workers judge. ``jobs`` > 1 judges changes in that many
    worker processes once the store holds at least ``parallel_from`` changes (results, order
    and digests as in-process). With ``bodies_for``, groups of other subjects come with an
    empty digest and body (not encoded at all: for consumers that count most results and
    read few, the audit). ``batch`` changes are judged at a time (a worker's unit of work)."""
    p = period or Period(None, None)
    base_extra = {**(extra or {}), "period": (p.start, p.end)}
    if ctx is None:
        ctx = build_context(store, settings, now, extra=base_extra)
    else:
        ctx = dataclasses.replace(ctx, extra={**ctx.extra, **base_extra})
    pop = _Population(store, ctx, p, repo)
    if settings.promotions:
        ctx = dataclasses.replace(ctx, extra={**ctx.extra, INDEX_KEY: PromotionIndex()})
    judge = _Judge(ctx, pop, bodies_for)
    iac_approvals: dict[str, Mapping[str, str]] = {}
    # for deployments made without the gate: each change's review/testing verdict, and (only
    # under the release-manager model) its participants
    review_testing: dict[str, Outcome] = {}
    change_participants: dict[str, frozenset[str]] = {}
    first_of_repo: dict[str, str] = {}
    outcome = _OUTCOMES.__getitem__

    early: dict[str, Callable[[], Any]] = {
        "locker_missing": lambda: _locker_missing(store, p, repo),
    }
    if RECORD_CONTROLS:
        early["shipped"] = lambda: shipped_changes(store, settings, repo=repo)
    try:
        for chunk in _judge_all(store, judge, p, repo, jobs, parallel_from, first_of_repo, batch):
            pop.start_early(early)  # now that the workers (if any) have forked
            if chunk.facts is not None:
                pop.merge(chunk.facts)
            pop.worst.update(zip(chunk.ids, map(outcome, chunk.worst), strict=True))
            review_testing.update(zip(chunk.ids, map(outcome, chunk.review_testing), strict=True))
            change_participants.update(chunk.participants)
            iac_approvals.update(chunk.iac_approvals)
            yield chunk
            if on_change is not None and chunk.ids:
                on_change(len(chunk.ids))
    except BaseException:
        pop.settle(abandon=True)  # no thread outlives a stream that stopped early
        raise
    pop.settle()
    if not RECORD_CONTROLS:
        return
    shipped = pop.early("shipped", early["shipped"])
    # the deployment controls judge the period's deployments only: what those shipped from
    # before the period is judged too (never assumed); older deployments' shipments are not
    judged = pop.in_period
    for dep_id, ids in shipped.items():
        if dep_id not in judged:
            continue
        for cid in ids:
            if cid in review_testing:
                continue
            # shipped in the period but merged before it: judge it too (never assume)
            found = store.get(Change, cid)
            if found is None:
                continue
            res = evaluate_change(found[1], found[0], ctx)
            review_testing[cid] = _review_testing(res)
            if judge.need_participants:
                change_participants[cid] = participants(found[1], settings)[0]
    ctx = dataclasses.replace(
        ctx,
        change_outcomes=pop.worst,
        extra={
            **ctx.extra,
            **pop.gathered(store, p, repo),
            IAC_APPROVALS: iac_approvals,
            SHIPPED_KEY: shipped,
            REVIEW_TESTING_KEY: review_testing,
            PARTICIPANTS_KEY: change_participants,
            LINKAGE_KEY: vuln_linkage(
                store,
                fix_signatures(findings_in(ctx)),
                (cast(Deployment, r) for _, r in ctx.table(Deployment.kind)),
            ),
            REPOS_KEY: first_of_repo,
        },
    )
    groups: list[_Group] = []
    for control in RECORD_CONTROLS:
        for subject, dig in control.subjects(ctx):
            r = apply_exceptions(control.evaluate(subject, ctx, dig), frozenset(), ctx)
            groups.append(result_group([r]))
            if len(groups) >= _BATCH:
                yield _chunk(groups)
                groups = []
        if control.record_kind is None:
            continue
        for dig, rec in _records(
            store, ctx, record_type(control.record_kind), repo, p.start, p.end
        ):
            r = apply_exceptions(control.evaluate(rec, ctx, dig), frozenset(), ctx)
            groups.append(result_group([r]))
            if len(groups) >= _BATCH:
                yield _chunk(groups)
                groups = []
    if groups:
        yield _chunk(groups)


def iter_results(
    store: Store,
    settings: Settings,
    now: datetime,
    *,
    period: Period | None = None,
    repo: str | None = None,
    ctx: Context | None = None,
    on_change: Callable[[int], None] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Generator[Result, None, None]:
    """:func:`iter_result_groups`, each group decoded to its :class:`Result` objects."""
    chunks = iter_result_groups(
        store, settings, now, period=period, repo=repo, ctx=ctx, on_change=on_change, extra=extra
    )
    try:
        for chunk in chunks:
            for group in chunk.groups:
                yield from decode_group(group[6])
    finally:
        chunks.close()


def vuln_linkage(
    store: Store,
    sigs: Mapping[str, frozenset[FixSignature]],
    deployments: Iterable[Deployment],
) -> Linkage:
    """For finding lifecycles: the changes that can be a fix (any time: a fix may land after
    the period) and each deployment with the change it ships — only in repositories with
    findings (``sigs``, from :func:`~changeproof.controls.vuln.fix_signatures`)."""
    changes = [
        c
        for name in sorted(sigs)
        for _, c in store.iter_records(Change, repo=name)
        if may_fix(c, sigs[name])
    ]
    shipped: list[tuple[Deployment, Change | None]] = []
    for dep in deployments:
        found = store.change_for_commit(dep.repo, dep.commit_sha) if dep.repo in sigs else None
        shipped.append((dep, found[1] if found else None))
    return Linkage(changes=changes, deployments=shipped)


_REVIEW_TESTING = ("CM-REV-", "CM-TST-")


def _review_testing(results: list[Result]) -> Outcome:
    """The worst review/testing outcome of one change (what CM-DEP-1 asks about)."""
    from changeproof.outcomes import worst

    return worst([r.outcome for r in results if r.control.startswith(_REVIEW_TESTING)])


def shipped_changes(
    store: Store, settings: Settings, *, repo: str | None = None
) -> dict[str, tuple[str, ...]]:
    """Per successful production deployment, the changes it shipped, from the commit index:
    every change landed on the deployed commit's branch after the commit the previous
    successful production deployment of that repository ran, up to this commit.

    A deployment whose commit is not on a collected controlled branch gets no entry (CM-DEP-1
    then says it cannot trace it)."""
    prod = set(settings.environments.production)
    by_repo: dict[str, list[Deployment]] = {}
    for _, d in store.iter_records(Deployment, repo=repo):
        if d.environment in prod and d.status == "success":
            by_repo.setdefault(d.repo, []).append(d)
    ci = schema.commit_index
    out: dict[str, tuple[str, ...]] = {}
    with store.connect() as conn:
        for r, deps in by_repo.items():
            deps.sort(key=lambda d: d.started_at)
            # where each deployed commit sits (a few IN queries, not two queries a deployment)
            at: dict[str, tuple[str, int]] = {}
            shas = sorted({d.commit_sha for d in deps})
            for i in range(0, len(shas), 500):
                q = sa.select(ci.c.sha, ci.c.branch, ci.c.seq).where(
                    ci.c.repo == r, ci.c.sha.in_(shas[i : i + 500])
                )
                for sha, branch, seq in conn.execute(q):
                    at[str(sha)] = (str(branch), int(seq))
            # each such branch's changes in first-parent order, read once
            lines: dict[str, tuple[list[int], list[str]]] = {}
            for branch in sorted({b for b, _ in at.values()}):
                q = (
                    sa.select(ci.c.seq, ci.c.change_key)
                    .where(ci.c.repo == r, ci.c.branch == branch)
                    .order_by(ci.c.seq)
                )
                # every change of the branch: a million rows at a million changes
                rows = driver_rows(conn, q)
                lines[branch] = ([int(x[0]) for x in rows], [str(x[1]) for x in rows])
            last_seq: dict[str, int] = {}
            for d in deps:
                hit = at.get(d.commit_sha)
                if hit is None:
                    continue
                branch, seq = hit
                prev = last_seq.get(branch)
                seqs, keys = lines[branch]
                lo = 0 if prev is None else bisect.bisect_right(seqs, prev)
                out[d.id] = tuple(sorted(set(keys[lo : bisect.bisect_right(seqs, seq)])))
                last_seq[branch] = max(seq, prev or seq)
    return out


def iter_changes(
    store: Store,
    *,
    repo: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    batch: int = 5000,
) -> Iterator[tuple[str, Change]]:
    """Stream changes repository by repository, each in merge order.

    The order follows the (kind, repo, occurred_us) index, so the database never sorts the
    population (a global time order made SQLite sort every change body in a temporary b-tree:
    gigabytes at a million changes). Every per-branch fact the evaluator gathers (spans, weak
    windows, promotion chains) only needs merge order within a repository.
    """
    decode = msgspec.json.Decoder(Change).decode
    for part in _change_rows(store, repo, start, end, batch):
        for dig, body, _ in part:
            yield dig, decode(body)


def _rev1(change: Change, digest: str, ctx: Context) -> Outcome:
    """CM-REV-1 for a change on an uncontrolled promotion-source branch (for the index only)."""
    from changeproof.controls.review import IndependentApproval

    return evaluate_change(change, digest, ctx, (IndependentApproval(),))[0].outcome


def promotion_context(store: Store, ctx: Context, change: Change) -> Context:
    """For explaining one promotion: the index of its source branches up to its merge, built
    the same way the full run builds it (every earlier change, in merge order)."""
    if not ctx.settings.promotions:
        return ctx
    index = PromotionIndex()
    ctx = dataclasses.replace(ctx, extra={**ctx.extra, INDEX_KEY: index})
    for dig, c in store.iter_records(Change, repo=change.repo, end=change.merged_at):
        if c.id != change.id and is_promotion_source(ctx.settings, c.branch):
            index.observe(c, _rev1(c, dig, ctx))
    return ctx


class _ResultWriter:
    """Batched result-group inserts through the driver's executemany with positional rows.

    The statement is compiled once for the connection's dialect (SQLite and PostgreSQL alike);
    per-row parameter processing in the ORM-less Core path was a third of the check's time.
    """

    COLS = ("run_id", "subject", "repo", "outcomes", "worst", "n", "digest", "body")

    def __init__(
        self, conn: sa.Connection, run_id: int, batch: int = 2_000, segment: int | None = None
    ) -> None:
        compiled = (
            sa.insert(schema.result_groups)
            .inline()
            .compile(dialect=conn.dialect, column_keys=list(self.COLS))
        )
        self.conn = conn
        self.sql = compiled.string
        order = tuple(compiled.positiontup or ()) if compiled.positional else None
        # positional drivers (SQLite) take tuples in the statement's order; named ones dicts
        self.order = None if order is None else tuple(self.COLS.index(n) for n in order)
        self.run_id = run_id
        self.batch = batch if segment is None else max(1, min(batch, segment))
        # commit every ``segment`` groups (None: the caller commits). One transaction for a
        # million changes left SQLite 1.5 GB of WAL to copy into the database at the commit,
        # seconds with one core idle; segments are checkpointed while the check goes on.
        self.segment = segment
        self.uncommitted = 0
        self.rows: list[Any] = []
        # PostgreSQL (psycopg 3): binary COPY, several times the rate of executemany
        self.copy_types: list[str] | None = None
        if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
            from changeproof.store import _pg_copy_types

            self.copy_types = _pg_copy_types(schema.result_groups, list(self.COLS))
        self.copy_sql = f"COPY result_groups ({', '.join(self.COLS)}) FROM STDIN (FORMAT BINARY)"
        # SQLite: many rows per statement. The driver releases the GIL around every step, and
        # with one row per statement this thread then waits for it again after each row while
        # the evaluating thread runs; a step per slice of rows makes that rare.
        self.per = 1
        if conn.dialect.name == "sqlite" and self.order == tuple(range(len(self.COLS))):
            from changeproof.store import _sqlite_rows_per_statement

            self.per = _sqlite_rows_per_statement(conn, len(self.COLS))
            one = "(" + ", ".join("?" for _ in self.COLS) + ")"
            head = self.sql.split(" VALUES ", 1)[0]
            self.many_sql = f"{head} VALUES {', '.join(one for _ in range(self.per))}"

    def add_groups(self, group: Iterable[_Group]) -> None:
        run_id = self.run_id
        if self.copy_types is not None or self.order == (0, 1, 2, 3, 4, 5, 6, 7):
            self.rows.extend([(run_id, *g) for g in group])
        elif self.order is None:
            self.rows.extend([dict(zip(self.COLS, (run_id, *g), strict=True)) for g in group])
        else:
            self.rows.extend([tuple((run_id, *g)[i] for i in self.order) for g in group])
        if len(self.rows) >= self.batch:
            self._send(self.rows)
            self.rows = []

    # Batches go to one writer thread, in order, on the run's own connection and transaction:
    # the driver releases the GIL while the database stores rows, so evaluation of the next
    # changes overlaps with storing the previous results on a second core.

    _queue: queue.Queue[list[Any] | None] | None = None
    _thread: threading.Thread | None = None
    _error: BaseException | None = None

    def _send(self, rows: list[Any]) -> None:
        if self._error is not None:
            raise self._error
        if self._queue is None:
            self._queue = queue.Queue(maxsize=4)
            self._thread = threading.Thread(target=self._drain, name="results-writer")
            self._thread.start()
        self._queue.put(rows)

    def _drain(self) -> None:
        assert self._queue is not None
        while (rows := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._write(rows)
                except BaseException as exc:  # re-raised in the evaluating thread
                    self._error = exc

    def _write(self, rows: list[Any]) -> None:
        if self.copy_types is not None:
            # the DBAPI connection of the run's own transaction: the COPY commits with it
            raw = self.conn.connection.driver_connection
            assert raw is not None
            dbapi_error = self.conn.dialect.loaded_dbapi.Error
            try:
                with raw.cursor() as cur, cur.copy(self.copy_sql) as cp:
                    cp.set_types(self.copy_types)
                    for row in rows:
                        cp.write_row(row)
            except dbapi_error as exc:  # as SQLAlchemy reports any other statement's failure
                raise sa.exc.DBAPIError.instance(self.copy_sql, None, exc, dbapi_error) from exc
            self._wrote(len(rows))
            return
        per = self.per
        full = len(rows) - len(rows) % per if per > 1 else 0
        if full:
            flat = itertools.chain.from_iterable
            slices = [tuple(flat(rows[i : i + per])) for i in range(0, full, per)]
            self.conn.exec_driver_sql(self.many_sql, slices)
        if full < len(rows):
            self.conn.exec_driver_sql(self.sql, rows[full:])
        self._wrote(len(rows))

    def _wrote(self, n: int) -> None:
        self.uncommitted += n
        if self.segment is not None and self.uncommitted >= self.segment:
            self.conn.execute(
                sa.update(schema.runs)
                .where(schema.runs.c.id == self.run_id)
                .values(beat_us=to_us(now_utc()))
            )
            self.conn.commit()
            self.uncommitted = 0

    def abort(self) -> None:
        self.rows = []
        self._error = self._error or RuntimeError("aborted")
        if self._queue is not None and self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._queue = self._thread = None

    def close(self) -> None:
        """Write what is left and wait for the writer; re-raise its error, if any."""
        if self.rows:
            if self._queue is None:
                self._write(self.rows)
            else:
                self._queue.put(self.rows)
            self.rows = []
        if self._queue is not None and self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._queue = self._thread = None
        if self._error is not None:
            raise self._error


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
    keep: Callable[[ResultGroup], None] | None = None,
    on_change: Callable[[int], None] | None = None,
    extra: Mapping[str, Any] | None = None,
    jobs: int = 1,
    parallel_from: int = PARALLEL_FROM,
    batch: int = _BATCH,
    segment: int | None = _SEGMENT,
) -> CheckRun:
    """Evaluate every change in scope and store the results as one run. ``keep`` sees every
    stored group (``group.results()`` decodes its results); ``on_change(n)`` hears of every
    ``n`` changes judged; ``jobs`` > 1 judges changes in worker processes. Results are
    committed ``segment`` groups at a time; the run counts (for every reader) only once it
    is marked finished, and a run that fails is removed."""
    with _gc_relaxed():
        return _run_check(
            store,
            settings,
            now,
            period=period,
            repo=repo,
            keep=keep,
            on_change=on_change,
            extra=extra,
            jobs=jobs,
            parallel_from=parallel_from,
            batch=batch,
            segment=segment,
        )


@contextlib.contextmanager
def _gc_relaxed() -> Iterator[None]:
    """Fewer cyclic-GC passes while streaming: the check allocates millions of short-lived,
    acyclic objects, and full collections re-walked the long-lived context each time (~12%
    of the run). Thresholds and the frozen generation are restored afterwards."""
    old = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


def _drop_run(store: Store, run_id: int) -> None:
    """Remove what a run that did not finish committed (best effort: if the database cannot
    be reached now, the run stays unfinished, ignored, and the next check removes it)."""
    with contextlib.suppress(sa.exc.SQLAlchemyError), store.engine.begin() as conn:
        _delete_runs(conn, [run_id])


def _delete_runs(conn: sa.Connection, ids: list[int]) -> None:
    conn.execute(sa.delete(schema.result_groups).where(schema.result_groups.c.run_id.in_(ids)))
    conn.execute(sa.delete(schema.runs).where(schema.runs.c.id.in_(ids)))


def _owner_gone(owner: str | None, beat_us: int | None, now_us: int) -> bool:
    if beat_us is None or now_us - beat_us > _ABANDONED_AFTER_US:
        return True
    host, _, pid = (owner or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's check: only its silence tells
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists (another user's process)
        return False
    # a killed process stays a zombie until its parent reaps it: it writes nothing more
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{int(pid)}/stat").read_bytes()
        return stat.rsplit(b")", 1)[1].split()[0] == b"Z"
    return False


def _drop_abandoned_runs(conn: sa.Connection) -> None:
    """Remove unfinished runs whose check is gone (killed before it could clean up)."""
    r = schema.runs
    rows = conn.execute(
        sa.select(r.c.id, r.c.owner, r.c.beat_us).where(r.c.finished_us.is_(None))
    ).all()
    now_us = to_us(now_utc())
    gone = [int(i) for i, owner, beat in rows if _owner_gone(owner, beat, now_us)]
    if gone:
        _delete_runs(conn, gone)


def _run_check(
    store: Store,
    settings: Settings,
    now: datetime,
    *,
    period: Period | None,
    repo: str | None,
    keep: Callable[[ResultGroup], None] | None,
    on_change: Callable[[int], None] | None,
    extra: Mapping[str, Any] | None,
    jobs: int,
    parallel_from: int,
    batch: int,
    segment: int | None = _SEGMENT,
) -> CheckRun:
    p = period or Period(None, None)
    summary = Summary()
    agg = hashlib.sha256()
    scope = msgspec.json.encode(
        {"period": p.label(), "repo": repo, "now": now.isoformat()}
    ).decode()
    with store.engine.connect() as conn:
        with conn.begin():
            _drop_abandoned_runs(conn)
            run_id = int(
                conn.execute(
                    sa.insert(schema.runs).values(
                        started_us=to_us(now),
                        settings_digest=settings.version,
                        scope=scope,
                        tool_version=__version__,
                        result_count=0,
                        owner=f"{socket.gethostname()}:{os.getpid()}",
                        beat_us=to_us(now_utc()),
                    )
                ).inserted_primary_key[0]  # type: ignore[index]
            )
        with bulk_write_pragmas(conn):
            # committed a segment at a time: readers ignore the run until it is marked finished
            write = _ResultWriter(conn, run_id, segment=segment)
            count = 0
            stream = iter_result_groups(
                store,
                settings,
                now,
                period=p,
                repo=repo,
                on_change=on_change,
                extra=extra,
                jobs=jobs,
                parallel_from=parallel_from,
                batch=batch,
            )
            tokens: Counter[str] = Counter()  # "CONTROL:outcome" -> results
            try:
                for chunk in stream:
                    agg.update(chunk.digests.encode())
                    tokens.update(chunk.tokens)
                    count += chunk.results
                    write.add_groups(chunk.groups)
                    if keep is not None:
                        for g in chunk.groups:
                            keep(ResultGroup(*g))
                write.close()
                pairs = outcome_pairs(" ".join(tokens))  # the same order as tokens' keys
                for (control, outcome), n in sorted(zip(pairs, tokens.values(), strict=True)):
                    summary.counts.setdefault(control, Counter())[outcome] += n
                total = agg.hexdigest()
                conn.execute(
                    sa.update(schema.runs)
                    .where(schema.runs.c.id == run_id)
                    .values(finished_us=to_us(now), results_digest=total, result_count=count)
                )
                conn.commit()
            except BaseException:
                write.abort()  # stop the writer before the transaction rolls back
                stream.close()  # and close the evidence cursors now, not at garbage collection
                with contextlib.suppress(sa.exc.SQLAlchemyError):
                    conn.rollback()
                _drop_run(store, run_id)
                raise
    return CheckRun(run_id, summary, total, settings.version)


def stored_results(store: Store, run_id: int, subject: str | None = None) -> list[Result]:
    """A stored run's results (of one subject), in the order the run gave them."""
    t = schema.result_groups
    q = sa.select(t.c.body).where(t.c.run_id == run_id)
    if subject is not None:
        q = q.where(t.c.subject == subject)
    with store.connect() as conn:
        return [r for (b,) in conn.execute(q.order_by(t.c.id)) for r in decode_group(b)]
