"""A million changes in SQLite and in PostgreSQL: insert rate, full check rate, gate p50, audit.

Usage:
  eval "$(scripts/pg start)"          # or pass --pg-url; without one PostgreSQL is skipped
  python benchmarks/scale.py [--changes N] [--repos R] [--backends sqlite,postgres]

Each change is a squash-merged pull request with an approving review, four passing checks,
two files, one commit and its raw payload in the locker; every --deploy-every'th change of
a repository (default 100, a release train) is deployed to staging and then production. Rows go in through the store's own Writer (batches of one
transaction each, every one ending with a signed locker checkpoint), exactly as collectors
write them. Then: `run_check` over everything (the full check, results stored) in a new
process, as `changeproof check` runs; the median of `changeproof gate` runs (a new process
each, as in a pipeline) and one
`changeproof audit` of the last 30 days. Figures for a command that does not exist in this
build are null. Prints a table; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from changeproof.evaluate import default_jobs, run_check
from changeproof.evidence import (
    Actor,
    Change,
    CheckResult,
    CommitInfo,
    Deployment,
    FileChange,
    Provenance,
    Review,
)
from changeproof.locker import Locker, Signer
from changeproof.settings import load_settings
from changeproof.store import Store
from changeproof.workspace import Workspace

T0 = datetime(2024, 1, 1, tzinfo=UTC)
STEP = timedelta(seconds=20)
BATCH = 10_000
CLI = [sys.executable, "-m", "changeproof"]
PEOPLE = [f"dev{i}" for i in range(200)]
BOT = Actor(login="github-actions[bot]", type="bot")

SETTINGS_TOML = """\
# benchmarks/scale.py: synthetic GitHub repositories whose required checks are build and test
controlled_branches = ["main"]

[testing]
required_checks = ["build", "test"]
dependency_scanning_checks = ["dependency-review"]
sast_checks = ["codeql"]
"""


def actor(login: str) -> Actor:
    return Actor(login=login, name=login.title(), email=f"{login}@example.com")


def sha_of(repo_i: int, n: int, salt: int = 0) -> str:
    # distinct in the first 12 hex digits (how reports abbreviate a commit)
    return f"{n:08x}{repo_i:04x}{salt:04x}".ljust(40, "0")


def make_change(repo: str, repo_i: int, n: int, at: datetime, raw_sha: str) -> Change:
    sha = sha_of(repo_i, n)
    author = actor(PEOPLE[(n * 7 + repo_i) % len(PEOPLE)])
    reviewer = actor(PEOPLE[(n * 7 + repo_i + 1) % len(PEOPLE)])
    commit = CommitInfo(
        sha=sha,
        parents=(sha_of(repo_i, n - 1),),
        author=author,
        committer=actor("web-flow"),
        authored_at=at - timedelta(hours=2),
        committed_at=at,
        message=f"Change {n} (#{n})",
    )
    return Change(
        repo=repo,
        branch="main",
        number=n,
        change_type="squash",
        platform="github",
        merged_at=at,
        merge_sha=sha,
        landed_shas=(sha,),
        base_sha=sha_of(repo_i, n - 1),
        head_sha=sha,
        title=f"Change {n}",
        author=author,
        merged_by=reviewer,
        merge_method="squash",
        commits=(commit,),
        reviews=(
            Review(
                reviewer=reviewer,
                state="APPROVED",
                submitted_at=at - timedelta(minutes=30),
                commit_sha=sha,
            ),
        ),
        checks=tuple(
            CheckResult(
                name=name,
                conclusion="success",
                commit_sha=sha,
                started_at=at - timedelta(minutes=50),
                completed_at=at - timedelta(minutes=40),
                app="github-actions",
            )
            for name in ("build", "test", "codeql", "dependency-review")
        ),
        files=(
            FileChange(path=f"src/module_{n % 50}.py", status="modified"),
            FileChange(path=f"tests/test_module_{n % 50}.py", status="modified"),
        ),
        files_total=2,
        tickets=(f"PROJ-{n}",),
        provenance=Provenance(source="github", occurred_at=at, collected_at=at, raw_sha256=raw_sha),
    )


def make_deployment(
    repo: str, repo_i: int, n: int, env: str, at: datetime, raw_sha: str
) -> Deployment:
    return Deployment(
        id=f"{repo}:{env}:{n}",
        repo=repo,
        environment=env,
        commit_sha=sha_of(repo_i, n),
        status="success",
        started_at=at,
        finished_at=at + timedelta(minutes=3),
        actor=BOT,
        system="github",
        provenance=Provenance(source="github", occurred_at=at, collected_at=at, raw_sha256=raw_sha),
    )


def plan(changes: int, repos: int) -> Iterator[tuple[int, int, datetime]]:
    """(repo index, PR number within the repo, merge time) in merge order."""
    for i in range(changes):
        yield i % repos, i // repos + 1, T0 + STEP * i


def last_number(changes: int, repos: int, r: int) -> int:
    """The highest PR number of repository ``r``."""
    return (changes - 1 - r) // repos + 1


def release_candidate(changes: int, repos: int, r: int, deploy_every: int) -> int:
    """The newest staged change of repository ``r``: in staging, waiting for the gate."""
    last = last_number(changes, repos, r)
    return max(deploy_every, last - last % deploy_every)


def insert(store: Store, signer: Signer, changes: int, repos: int, deploy_every: int) -> float:
    names = [f"acme/svc-{r:03d}" for r in range(repos)]
    t = time.perf_counter()
    it = iter(plan(changes, repos))
    done = 0
    while done < changes:
        with store.writer(Locker(signer)) as w:
            for _ in range(min(BATCH, changes - done)):
                r, n, at = next(it)
                repo = names[r]
                raw = w.put_raw(
                    f'{{"pull_request":"{repo}#{n}","merged_at":"{at.isoformat()}"}}'.encode(),
                    kind="github.pull",
                    source="github",
                )
                w.put(make_change(repo, r, n, at, raw), seq=n * 1000)
                if n % deploy_every == 0:
                    pending = n == release_candidate(changes, repos, r, deploy_every)
                    envs = (("staging", 5),) if pending else (("staging", 5), ("production", 40))
                    for env, delay in envs:
                        when = at + timedelta(minutes=delay)
                        draw = w.put_raw(
                            f"deployment {repo} {env} {n}".encode(),
                            kind="github.deployment",
                            source="github",
                        )
                        w.put(make_deployment(repo, r, n, env, when, draw))
                done += 1
    return time.perf_counter() - t


def run_cli(
    ws: Workspace, cwd: Path, *args: str, timeout: float = 3600
) -> subprocess.CompletedProcess[str]:
    # as installed: pip byte-compiles the package, so leave out a PYTHONDONTWRITEBYTECODE the
    # shell may set (without cached bytecode every run compiles ~60 ms of modules again)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CHANGEPROOF_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    return subprocess.run(
        [*CLI, "--home", str(ws.home), "--db", ws.db_url, "--config", str(ws.config_path), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=timeout,
    )


def has_command(name: str) -> bool:
    from changeproof.cli import COMMANDS

    if name not in COMMANDS:
        return False
    import importlib

    try:
        importlib.import_module(COMMANDS[name][0])
    except ImportError:
        return False
    return True


def gate_p50(
    ws: Workspace, cwd: Path, changes: int, repos: int, runs: int, deploy_every: int
) -> float | None:
    if not has_command("gate"):
        print("  gate: `changeproof gate` is not in this build — gate_p50_ms is null")
        return None
    # the release candidate of the first repository goes to production: the gate judges
    # every change shipped since the previous production deployment
    n = release_candidate(changes, repos, 0, deploy_every)
    end = T0 + STEP * changes
    times: list[float] = []
    for i in range(runs):
        t = time.perf_counter()
        out = run_cli(
            ws,
            cwd,
            "gate",
            "--env",
            "production",
            "--commit",
            sha_of(0, n),
            "--repo",
            "acme/svc-000",
            "--actor",
            "github-actions[bot]",
            "--at",
            (end + timedelta(hours=1, minutes=i)).isoformat(),
            "--format",
            "json",
        )
        times.append((time.perf_counter() - t) * 1000)
        if out.returncode not in (0, 1):
            print(f"  gate: exit {out.returncode}: {(out.stderr or out.stdout).strip()[:300]}")
            return None
    if out.returncode == 1:
        why = []
        try:
            for c in json.loads(out.stdout).get("checks", []):
                if c.get("outcome") != "pass":
                    why.append(f"{c.get('rule')}: {(c.get('reasons') or ['?'])[0]}")
        except ValueError:
            why.append(out.stdout.strip()[:200])
        print("  gate: decision was deny (timed all the same): " + "; ".join(why)[:400])
    return statistics.median(times)


def audit_seconds(ws: Workspace, cwd: Path, changes: int) -> float | None:
    if not has_command("audit"):
        print("  audit: `changeproof audit` is not in this build — audit_s is null")
        return None
    end = T0 + STEP * changes
    start = end - timedelta(days=30)
    out_dir = cwd / f"audit-{int(time.time() * 1000)}"
    t = time.perf_counter()
    out = run_cli(
        ws,
        cwd,
        "audit",
        "--period",
        f"{start.date().isoformat()}..{end.date().isoformat()}",
        "--seed",
        "scale-benchmark",
        "--out",
        str(out_dir),
        "--as-of",
        (end + timedelta(days=1)).isoformat(),
        "--no-pdf",
    )
    took = time.perf_counter() - t
    shutil.rmtree(out_dir, ignore_errors=True)
    if out.returncode != 0:
        print(f"  audit: exit {out.returncode}: {(out.stderr or out.stdout).strip()[:300]}")
        return None
    return took


def pg_server_cpu(store: Store) -> float | None:
    """CPU seconds used so far by a PostgreSQL server on this machine: the postmaster, its
    exited children (reaped: counted in its own figures) and the live ones. None when the
    server is elsewhere or /proc is not readable."""
    if store.dialect != "postgresql":
        return None
    try:
        with store.engine.connect() as conn:
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()

        def fields(p: int | str) -> list[str]:
            return Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()

        postmaster = int(fields(int(pid or 0))[1])
        ticks = sum(int(x) for x in fields(postmaster)[11:15])  # utime stime cutime cstime
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    f = fields(proc.name)
                except OSError:
                    continue
                if int(f[1]) == postmaster:
                    ticks += int(f[11]) + int(f[12])
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def fresh_pg_database(admin_url: str) -> tuple[str, str]:
    import uuid

    import psycopg

    admin = admin_url.replace("postgresql+psycopg://", "postgresql://")
    name = f"cp_scale_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    base = admin.split("?", 1)[0].rsplit("/", 1)[0]
    return name, f"{base}/{name}"


def drop_pg_database(admin_url: str, name: str) -> None:
    import psycopg

    admin = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def bench_backend(
    backend: str, url: str, work: Path, args: argparse.Namespace
) -> dict[str, float | None]:
    cfg = work / "changeproof.toml"
    cfg.write_text(SETTINGS_TOML)
    ws = Workspace.resolve(str(work / f"ws-{backend}"), url, str(cfg))
    ws.ensure_home()
    signer = ws.signer()
    store = Store.open(ws.db_url)
    try:
        print(f"[{backend}] inserting {args.changes:,} changes …", flush=True)
        took = insert(store, signer, args.changes, args.repos, args.deploy_every)
        ins = args.changes / took
        print(f"[{backend}] insert {took:8.1f} s  {ins:10,.0f} changes/s", flush=True)
        if store.dialect == "postgresql":
            with store.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("ANALYZE"))
    finally:
        store.close()
    # the check in a fresh process, as `changeproof check` runs (gate and audit are new
    # processes too): not in this one, whose heap the insert left large (its workers fork from
    # it; measured at a million on PostgreSQL: 76 CPU-s there against 64 in a fresh process)
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--check-only",
            ws.db_url,
            str(cfg),
            "--changes",
            str(args.changes),
            "--jobs",
            str(args.jobs or default_jobs()),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    took, cpu, results, server_cpu = got["seconds"], got["cpu"], got["results"], got["server_cpu"]
    chk = args.changes / took
    server = (
        f"; the database server {server_cpu:.1f} CPU-s"
        if server_cpu is not None
        else ("; the database server's CPU is not counted" if backend == "postgres" else "")
    )
    print(
        f"[{backend}] check  {took:8.1f} s  {chk:10,.0f} changes/s "
        f"({results:,} results; {cpu:.1f} CPU-s in the checking process and its workers = "
        f"{args.changes / cpu:,.0f} changes per CPU-second{server})",
        flush=True,
    )
    gate = gate_p50(ws, work, args.changes, args.repos, args.gate_runs, args.deploy_every)
    if gate is not None:
        print(f"[{backend}] gate   p50 {gate:8.1f} ms over {args.gate_runs} runs", flush=True)
    audit = audit_seconds(ws, work, args.changes)
    if audit is not None:
        print(f"[{backend}] audit  {audit:8.1f} s", flush=True)
    return {"insert": ins, "check": chk, "gate": gate, "audit": audit}


def check_only(url: str, cfg: Path, changes: int, jobs: int) -> None:
    """The full check, timed in this (fresh) process; prints one JSON object."""
    settings = load_settings(cfg)
    store = Store.open(url)
    try:
        now = T0 + STEP * changes + timedelta(days=1)
        s0 = pg_server_cpu(store)
        t, c0 = time.perf_counter(), time.process_time()
        run = run_check(store, settings, now, jobs=jobs)
        took = time.perf_counter() - t
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers, joined
        s1 = pg_server_cpu(store)
    finally:
        store.close()
    print(
        json.dumps(
            {
                "seconds": took,
                "cpu": time.process_time() - c0 + kids.ru_utime + kids.ru_stime,
                "results": sum(sum(c.values()) for c in run.summary.counts.values()),
                "server_cpu": None if s0 is None or s1 is None else s1 - s0,
            }
        )
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--check-only":
        ap = argparse.ArgumentParser()
        ap.add_argument("--check-only", nargs=2, metavar=("URL", "CONFIG"))
        ap.add_argument("--changes", type=int)
        ap.add_argument("--jobs", type=int)
        a = ap.parse_args()
        check_only(a.check_only[0], Path(a.check_only[1]), a.changes, a.jobs)
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--changes", type=int, default=1_000_000)
    ap.add_argument("--repos", type=int, default=20)
    ap.add_argument("--gate-runs", type=int, default=21)
    ap.add_argument("--deploy-every", type=int, default=100)
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument(
        "--jobs", type=int, default=0, help="processes judging changes (default: one per CPU)"
    )
    ap.add_argument(
        "--pg-url",
        default=os.environ.get("CHANGEPROOF_TEST_PG_URL") or os.environ.get("PG_URL"),
        help="A PostgreSQL server to create a scratch database on (env CHANGEPROOF_TEST_PG_URL).",
    )
    args = ap.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    figures: dict[str, dict[str, float | None]] = {}
    with tempfile.TemporaryDirectory(prefix="cp-scale-") as tmp:
        work = Path(tmp)
        for backend in backends:
            if backend == "sqlite":
                url = f"sqlite:///{work / 'ws-sqlite' / 'store.db'}"  # the workspace's own file
                figures[backend] = bench_backend(backend, url, work, args)
            elif backend == "postgres":
                if not args.pg_url:
                    print("[postgres] skipped: no --pg-url / CHANGEPROOF_TEST_PG_URL")
                    continue
                name, url = fresh_pg_database(args.pg_url)
                try:
                    figures[backend] = bench_backend(backend, url, work, args)
                finally:
                    drop_pg_database(args.pg_url, name)
            else:
                ap.error(f"unknown backend {backend!r}")

    def fig(backend: str, key: str, digits: int) -> float | None:
        v = figures.get(backend, {}).get(key)
        return None if v is None else round(v, digits)

    print()
    print(
        f"{args.changes:,} changes in {args.repos} repositories, "
        f"deployed every {args.deploy_every} changes per repository"
    )
    print(f"{'':<10}{'insert/s':>12}{'check/s':>12}{'gate p50 ms':>14}{'audit s':>10}")
    for b in ("sqlite", "postgres"):
        if b in figures:
            row = [fig(b, "insert", 0), fig(b, "check", 0), fig(b, "gate", 1), fig(b, "audit", 2)]
            print(
                f"{b:<10}"
                + "".join(
                    f"{'-' if v is None else v:>{w}}"
                    for v, w in zip(row, (12, 12, 14, 10), strict=True)
                )
            )
    print("targets: check >= 20,000 changes/s and gate p50 <= 300 ms on both")
    result: dict[str, Any] = {"changes": args.changes}
    for b, short in (("sqlite", "sqlite"), ("postgres", "postgres")):
        result[f"insert_changes_per_s_{short}"] = fig(b, "insert", 0)
        result[f"check_changes_per_s_{short}"] = fig(b, "check", 0)
        result[f"gate_p50_ms_{short}"] = fig(b, "gate", 1)
        result[f"audit_s_{short}"] = fig(b, "audit", 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
