"""Full `check` over a large store: 1,000,000 changes with reviews, checks and deployments.

Generates the evidence straight into a SQLite store (batched ``executemany`` through
SQLAlchemy Core: records are encoded exactly as ``Writer.put`` encodes them, but the raw
payloads are NOT put into the locker, to keep generation fast — so CM-CFG-4 and CM-POP-2 see
missing raw evidence; that changes verdicts, not the work done). Then times ``run_check`` end
to end from the store (stream, evaluate every control, store every result) in a fresh process,
so the peak RSS is the check's own.

    python benchmarks/evaluate.py                 # 1,000,000 changes
    python benchmarks/evaluate.py --changes 50000 # quicker

Targets: >= 20,000 changes/s, peak RSS <= 1 GB. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import sqlalchemy as sa

from changeproof.evidence import (
    Actor,
    Change,
    CheckResult,
    CommitInfo,
    Coverage,
    Deployment,
    FileChange,
    ProtectionRule,
    ProtectionSnapshot,
    Provenance,
    Record,
    Review,
    TeamMembership,
)
from changeproof.settings import Settings, StandardChange, Testing, parse_settings
from changeproof.store import Store, evidence_row, schema

START = datetime(2025, 1, 1, tzinfo=UTC)
AS_OF = datetime(2026, 1, 15, tzinfo=UTC)
PEOPLE = [f"dev{i}" for i in range(200)]
SECURITY = PEOPLE[:10]
BODY = (
    "## Description\nRefactor the {area} module for clarity.\n\n"
    "## Risk\nlow\n\n## Testing\nUnit tests added; CI green.\n\n"
    "## Rollback\nRevert the merge commit.\n"
)
AREAS = ["billing", "auth", "search", "export", "ui", "api", "jobs", "infra"]


def settings() -> Settings:
    base = msgspec.to_builtins(Settings())
    s = parse_settings(base)
    return msgspec.structs.replace(
        s,
        teams={"security": tuple(SECURITY)},
        testing=Testing(
            required_checks=("build", "test"),
            dependency_scanning_checks=("dependency-review",),
            sast_checks=("CodeQL*",),
        ),
        standard_changes=(
            StandardChange(
                name="dependency updates",
                authors=("dependabot[bot]",),
                paths=("**/package.json", "**/package-lock.json"),
            ),
        ),
    )


def _sha(*parts: object) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()


def _prov(at: datetime, raw: str) -> Provenance:
    return Provenance(source="bench", occurred_at=at, collected_at=at, raw_sha256=raw)


def make_change(repo: str, n: int, i: int, at: datetime) -> Change:
    author = PEOPLE[i % len(PEOPLE)]
    reviewer = PEOPLE[(i * 7 + 3) % len(PEOPLE)]
    if reviewer == author:
        reviewer = PEOPLE[(i * 7 + 4) % len(PEOPLE)]
    head = _sha(repo, n, "head")
    merge = _sha(repo, n, "merge")
    base = _sha(repo, n, "base")
    bot = i % 25 == 0
    who = Actor(login="dependabot[bot]", type="bot") if bot else Actor(login=author)
    commits = (
        CommitInfo(
            sha=_sha(repo, n, "c1"),
            parents=(base,),
            author=who,
            committer=who,
            authored_at=at - timedelta(hours=3),
            committed_at=at - timedelta(hours=3),
            message="work",
        ),
        CommitInfo(
            sha=head,
            parents=(_sha(repo, n, "c1"),),
            author=who,
            committer=who,
            authored_at=at - timedelta(hours=2),
            committed_at=at - timedelta(hours=2),
            message="more work",
        ),
    )
    area = AREAS[i % len(AREAS)]
    files = (
        (FileChange(path="package.json"), FileChange(path="package-lock.json"))
        if bot
        else (
            FileChange(path=f"src/{area}/a.py", additions=10, deletions=2),
            FileChange(path=f"src/{area}/b.py", additions=3, deletions=1),
            FileChange(path=f"tests/test_{area}.py", additions=20, deletions=0),
        )
    )
    reviews = (
        ()
        if bot
        else (
            Review(
                reviewer=Actor(login=reviewer),
                state="APPROVED",
                submitted_at=at - timedelta(hours=1),
                commit_sha=head if i % 10 else _sha(repo, n, "c1"),
            ),
        )
        + (
            (
                Review(
                    reviewer=Actor(login=SECURITY[i % len(SECURITY)]),
                    state="APPROVED",
                    submitted_at=at - timedelta(minutes=30),
                    commit_sha=head,
                ),
            )
            if area in ("auth", "export")
            else ()
        )
    )
    done = at - timedelta(minutes=90)
    checks = tuple(
        CheckResult(
            name=name,
            conclusion="success" if (i % 50 or name != "test") else "failure",
            commit_sha=head,
            completed_at=done,
            app="github-actions",
        )
        for name in ("build", "test", "dependency-review", "CodeQL")
    )
    return Change(
        repo=repo,
        branch="main",
        number=n,
        change_type="merge",
        platform="github",
        merged_at=at,
        merge_sha=merge,
        landed_shas=(merge,),
        base_sha=base,
        head_sha=head,
        title=f"Change {n} in {area}",
        body=BODY.format(area=area) if i % 20 else "quick fix",
        author=who,
        merged_by=Actor(login=author),
        merge_method="merge",
        commits=commits,
        reviews=reviews,
        checks=checks,
        files=files,
        files_total=len(files),
        labels=("risk:low",) if i % 3 == 0 else (),
        provenance=_prov(at, hashlib.sha256(merge.encode()).hexdigest()),
    )


def _rows(rec: Record, seq: int | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    ev = evidence_row(rec)  # exactly the row Writer.put stores
    commits: list[dict[str, Any]] = []
    if isinstance(rec, Change):
        commits = [
            {"repo": rec.repo, "sha": s, "branch": rec.branch, "change_key": ev["key"],
             "seq": seq or 0}
            for s in rec.landed_shas
        ]  # fmt: skip
    return ev, commits


def generate(url: str, total: int, repos: int, deploy_every: int = 100) -> float:
    store = Store.open(url)
    t0 = time.perf_counter()
    step = timedelta(seconds=365 * 86400 / total * repos)
    ev_batch: list[dict[str, Any]] = []
    ci_batch: list[dict[str, Any]] = []
    per_repo = -(-total // repos)

    def flush(conn: sa.Connection) -> None:
        if ev_batch:
            conn.execute(sa.insert(schema.evidence), ev_batch)
            ev_batch.clear()
        if ci_batch:
            conn.execute(sa.insert(schema.commit_index), ci_batch)
            ci_batch.clear()

    with store.engine.begin() as conn:
        made = 0
        for r in range(repos):
            repo = f"acme/svc-{r:03d}"
            for layer_at, approvals in (
                (START - timedelta(days=1), 1),
                (START + timedelta(days=100), 0),
                (START + timedelta(days=103), 1),
            ):
                snap = ProtectionSnapshot(
                    repo=repo,
                    branch="main",
                    layers=(
                        ProtectionRule(
                            layer="classic",
                            requires_pr=True,
                            required_approvals=approvals,
                            dismiss_stale=True,
                            required_checks=(
                                ("build", "github-actions"),
                                ("test", "github-actions"),
                            ),
                            allow_force_push=False,
                            allow_deletion=False,
                            enforce_admins=True,
                        ),
                    ),
                    provenance=_prov(layer_at, _sha(repo, layer_at).ljust(64, "0")),
                )
                ev_batch.append(_rows(snap)[0])
            ev_batch.append(
                _rows(
                    Coverage(
                        id=f"bench:{repo}",
                        source="bench",
                        repo=repo,
                        branch="main",
                        start=None,
                        end=AS_OF,
                        complete=True,
                        provenance=_prov(AS_OF, _sha(repo, "cov").ljust(64, "0")),
                    )
                )[0]
            )
            for k in range(per_repo):
                if made >= total:
                    break
                at = START + step * k + timedelta(seconds=r)
                ch = make_change(repo, k + 1, made, at)
                ev, commits = _rows(ch, seq=k * 1000)
                ev_batch.append(ev)
                ci_batch.extend(commits)
                if k % deploy_every == deploy_every - 1:  # staging, then production
                    for env, lag in (("staging", 5), ("production", 30)):
                        dep = Deployment(
                            id=f"{repo}:{env}:{k}",
                            repo=repo,
                            environment=env,
                            commit_sha=ch.merge_sha,
                            status="success",
                            started_at=at + timedelta(minutes=lag),
                            finished_at=at + timedelta(minutes=lag + 3),
                            actor=Actor(login="github-actions[bot]", type="bot"),
                            system="github",
                            provenance=_prov(
                                at + timedelta(minutes=lag), _sha(repo, env, k).ljust(64, "0")
                            ),
                        )
                        ev_batch.append(_rows(dep)[0])
                made += 1
                if len(ev_batch) >= 5000:
                    flush(conn)
        ev_batch.append(
            _rows(
                TeamMembership(
                    team="security",
                    members=tuple(SECURITY),
                    provenance=_prov(START - timedelta(days=2), _sha("team").ljust(64, "0")),
                )
            )[0]
        )
        flush(conn)
    store.close()
    return time.perf_counter() - t0


def _count_changes(db: Path) -> int:
    store = Store.open(f"sqlite:///{db}")
    try:
        return store.count("change")
    finally:
        store.close()


def check_only(url: str, without: tuple[str, ...] = (), jobs: int = 1) -> None:
    import changeproof.evaluate as ev
    from changeproof.evaluate import Period, run_check

    if without:  # measure the rest of the catalogue when some controls cannot scale yet
        kept = tuple(c for c in ev.RECORD_CONTROLS if c.id not in without)  # type: ignore[attr-defined]
        ev.RECORD_CONTROLS = kept  # type: ignore[attr-defined]

    store = Store.open(url)
    changes = store.count("change")
    t0, c0 = time.perf_counter(), time.process_time()
    run = run_check(store, settings(), AS_OF, period=Period(None, None), jobs=jobs)
    elapsed = time.perf_counter() - t0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # the worker processes, joined
    main_cpu = time.process_time() - c0
    cpu = main_cpu + kids.ru_utime + kids.ru_stime
    store.close()
    # conservative: the main process's peak plus every worker at the largest worker's peak
    # (forked workers share much of their memory with the main process; this counts it twice)
    rss = (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        + (kids.ru_maxrss * jobs if jobs > 1 else 0)
    ) / 1024
    results = sum(sum(v.values()) for v in run.summary.counts.values())
    print(
        json.dumps(
            {
                "changes": changes,
                "seconds": elapsed,
                "cpu_seconds": cpu,
                "main_cpu_seconds": main_cpu,
                "results": results,
                "rss_mb": rss,
                "summary": run.summary.as_dict(),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--changes", type=int, default=1_000_000)
    ap.add_argument("--repos", type=int, default=100)
    ap.add_argument(
        "--deploy-every",
        type=int,
        default=100,
        help="one staging and one production deployment per N changes (default 100)",
    )
    ap.add_argument(
        "--db", help="SQLite file to use and keep (reused when it already holds changes)"
    )
    ap.add_argument(
        "--without",
        default="",
        metavar="IDS",
        help="comma-separated record controls to leave out (reported in the output)",
    )
    ap.add_argument(
        "--jobs",
        type=int,
        default=0,
        help="processes judging changes (default: one per CPU, as `check` does)",
    )
    ap.add_argument("--check-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.check_only:
        check_only(
            f"sqlite:///{args.db}", tuple(x for x in args.without.split(",") if x), args.jobs
        )
        return
    if args.jobs <= 0:
        from changeproof.evaluate import default_jobs

        args.jobs = default_jobs()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(args.db) if args.db else Path(tmp) / "bench.db"
        if db.exists() and _count_changes(db):
            print(f"reusing {db} ({_count_changes(db):,} changes)")
        else:
            gen_s = generate(f"sqlite:///{db}", args.changes, args.repos, args.deploy_every)
            print(
                f"generated {args.changes:,} changes in {args.repos} repositories in "
                f"{gen_s:.1f} s ({args.changes / gen_s:,.0f}/s; raw payloads not put in the "
                "locker)"
            )
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--check-only",
                "--db",
                str(db),
                "--without",
                args.without,
                "--jobs",
                str(args.jobs),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        data = json.loads(out.stdout.strip().splitlines()[-1])
    rate = data["changes"] / data["seconds"]
    print(
        f"{'control':<10} "
        + " ".join(f"{c:>14}" for c in ("pass", "fail", "exception", "n/a", "indeterminate"))
    )
    for control, counts in data["summary"].items():
        print(
            f"{control:<10} "
            + " ".join(
                f"{counts.get(c, 0):>14,}"
                for c in ("pass", "fail", "exception", "not_applicable", "indeterminate")
            )
        )
    print(
        f"\nfull check: {data['changes']:,} changes, {data['results']:,} results stored in "
        f"{data['seconds']:.1f} s = {rate:,.0f} changes/s (target >= 20,000)"
    )
    print(f"peak RSS of the check process: {data['rss_mb']:,.0f} MB (target <= 1,024)")
    print(f"processes judging changes: {args.jobs}")
    if args.without:
        print(f"left out of this run: {args.without}")
    cpu_rate = data["changes"] / data["cpu_seconds"]
    print(
        f"CPU time of the check: {data['cpu_seconds']:.1f} s = {cpu_rate:,.0f} changes per CPU-second"
        f" (main process {data['main_cpu_seconds']:.1f} s)"
    )
    print(
        json.dumps(
            {
                "changes_per_s": round(rate),
                "peak_rss_mb": round(data["rss_mb"]),
                "cpu_changes_per_s": round(cpu_rate),
                "results": data["results"],
                "jobs": args.jobs,
            }
        )
    )


if __name__ == "__main__":
    main()
