"""Whole-process time of `changeproof gate` with 100,000 changes in the store.

Usage: python benchmarks/gate.py [--changes N] [--runs R] [--keep DIR]

Builds a workspace whose store holds N reviewed, tested GitHub changes on main (with their
commit index), a previous production deployment ten changes back and a staging deployment of
the tip, then runs the real console script `changeproof gate --env production --commit TIP`
R times as a new process each time (start to exit, including recording the decision).
Prints a table and, as the last line, one JSON object with p50_ms and p95_ms.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from changeproof.evidence import (
    Actor,
    Change,
    CheckResult,
    CommitInfo,
    Deployment,
    Provenance,
    Review,
)
from changeproof.locker import Signer
from changeproof.store import Store

REPO = "bench/app"
SETTINGS = """
controlled_branches = ["main"]

[[repositories]]
name = "bench/app"
platform = "github"

[testing]
required_checks = ["ci"]
dependency_scanning_checks = ["dependency-review"]
sast_checks = ["codeql"]
"""


def sha(i: int, salt: str = "c") -> str:
    return hashlib.sha1(f"{salt}{i}".encode()).hexdigest()


def make_change(i: int, t0: datetime) -> Change:
    merged = t0 + timedelta(minutes=10 * i)
    head = sha(i, "h")
    author = Actor(login=f"dev{i % 40}", email=f"dev{i % 40}@example.com")
    reviewer = Actor(login=f"dev{(i + 1) % 40}", email=f"dev{(i + 1) % 40}@example.com")
    prov = Provenance(
        source="github",
        occurred_at=merged,
        collected_at=merged,
        raw_sha256=sha(i, "r").ljust(64, "0"),
    )
    return Change(
        repo=REPO,
        branch="main",
        number=i + 1,
        change_type="merge",
        platform="github",
        merged_at=merged,
        merge_sha=sha(i),
        landed_shas=(sha(i),),
        head_sha=head,
        title=f"Change {i}",
        author=author,
        merged_by=author,
        merge_method="merge",
        commits=(
            CommitInfo(
                sha=head,
                parents=(sha(i - 1),),
                author=author,
                committer=author,
                authored_at=merged - timedelta(minutes=5),
                committed_at=merged - timedelta(minutes=5),
                message=f"Change {i}",
            ),
        ),
        reviews=(
            Review(
                reviewer=reviewer,
                state="APPROVED",
                submitted_at=merged - timedelta(minutes=2),
                commit_sha=head,
            ),
        ),
        checks=tuple(
            CheckResult(
                name=name,
                conclusion="success",
                commit_sha=head,
                completed_at=merged - timedelta(minutes=3),
                app="github-actions",
            )
            for name in ("ci", "dependency-review", "codeql")
        ),
        files=(),
        files_total=0,
        provenance=prov,
    )


def build(home: Path, n: int) -> str:
    home.mkdir(parents=True, exist_ok=True)
    (home.parent / "changeproof.toml").write_text(SETTINGS)
    Signer.generate(home / "keys")
    store = Store.open(f"sqlite:///{home / 'store.db'}")
    t0 = datetime(2020, 1, 1, tzinfo=UTC)
    with store.writer() as w:
        for i in range(n):
            w.put(make_change(i, t0), seq=i * 1000)
        prev = n - 11
        tip = n - 1
        for env, i, status in (("production", prev, "success"), ("staging", tip, "success")):
            at = t0 + timedelta(minutes=10 * i + 5)
            w.put(
                Deployment(
                    id=f"bench:{env}:{i}",
                    repo=REPO,
                    environment=env,
                    commit_sha=sha(i),
                    status=status,  # type: ignore[arg-type]
                    started_at=at,
                    finished_at=at,
                    actor=Actor(login="github-actions[bot]"),
                    provenance=Provenance(
                        source="record", occurred_at=at, collected_at=at, raw_sha256="0" * 64
                    ),
                )
            )
    store.close()
    return sha(n - 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--keep", type=Path)
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="cp-gate-bench-"))
    home = root / "ws"
    t = time.perf_counter()
    tip = build(home, args.changes)
    build_s = time.perf_counter() - t
    exe = shutil.which("changeproof", path=str(Path(sys.executable).parent)) or "changeproof"
    cmd = [
        exe,
        "--home",
        str(home),
        "--config",
        str(root / "changeproof.toml"),
        "gate",
        "--env",
        "production",
        "--commit",
        tip,
        "--repo",
        REPO,
        "--actor",
        "github-actions[bot]",
        "--at",
        "2030-01-01T00:00:00Z",
    ]
    # as installed: pip byte-compiles the package, so leave out a PYTHONDONTWRITEBYTECODE the
    # shell may set (without cached bytecode every run compiles ~60 ms of modules again)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CHANGEPROOF_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    # one warm-up run compiles bytecode and fills the page cache
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if first.returncode != 0:
        print(first.stdout[-3000:], first.stderr[-2000:], file=sys.stderr)
        raise SystemExit(
            f"the gate did not allow the benchmark deployment (exit {first.returncode})"
        )
    times = []
    cpu = []  # user+sys of the child: what the run costs without other load on the machine
    for _ in range(args.runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, env=env, check=False)
        times.append((time.perf_counter() - t) * 1000)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) * 1000)
        if r.returncode != 0:
            raise SystemExit(f"gate exited {r.returncode}")
    times.sort()
    cpu.sort()
    load = os.getloadavg()[0]
    p50 = statistics.median(times)
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    print(f"{'changes in store':<28} {args.changes:>10,}")
    print(f"{'changes shipped per gate':<28} {10:>10}")
    print(f"{'store build (s)':<28} {build_s:>10.1f}")
    print(f"{'gate runs':<28} {args.runs:>10}")
    print(f"{'min (ms)':<28} {times[0]:>10.1f}")
    print(f"{'p50 (ms)':<28} {p50:>10.1f}")
    print(f"{'p95 (ms)':<28} {p95:>10.1f}")
    print(f"{'max (ms)':<28} {times[-1]:>10.1f}")
    print(f"{'cpu p50 (ms)':<28} {statistics.median(cpu):>10.1f}")
    print(f"{'load average (1 min)':<28} {load:>10.2f}")
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    print(
        json.dumps(
            {
                "changes": args.changes,
                "runs": args.runs,
                "p50_ms": round(p50, 1),
                "p95_ms": round(p95, 1),
                "cpu_p50_ms": round(statistics.median(cpu), 1),
                "load_avg_1m": round(load, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
