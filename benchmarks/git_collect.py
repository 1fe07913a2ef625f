"""Collect and check a 100,000-commit first-parent history built with `git fast-import`.

Usage: python benchmarks/git_collect.py [--commits N] [--keep DIR]

The history mixes GitHub merge commits (each bringing one or two feature commits), squash
merges, GitLab merges and direct pushes, touching a few files each. Prints a table and, as
the last line, one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from changeproof.evaluate import default_jobs, run_check
from changeproof.locker import Locker, Signer
from changeproof.settings import Settings
from changeproof.sources.git import GitSource
from changeproof.store import Store

PEOPLE = [f"Dev {i} <dev{i}@example.com>" for i in range(40)]


def build_stream(n: int, rng: random.Random) -> bytes:
    out: list[bytes] = []
    mark = 0
    t = 1_700_000_000
    main_mark = 0

    def commit(ref: str, who: str, msg: str, parent: int, merge: int | None, path: str) -> int:
        nonlocal mark, t
        mark += 1
        t += 7
        data = msg.encode()
        lines = [
            f"commit {ref}",
            f"mark :{mark}",
            f"author {who} {t} +0000",
            f"committer {who} {t} +0000",
            f"data {len(data)}",
        ]
        out.append("\n".join(lines).encode() + b"\n" + data + b"\n")
        if parent:
            out.append(f"from :{parent}\n".encode())
        if merge:
            out.append(f"merge :{merge}\n".encode())
        body = f"{mark}\n".encode()
        out.append(f"M 644 inline {path}\ndata {len(body)}\n".encode() + body + b"\n")
        return mark

    for i in range(n):
        who = rng.choice(PEOPLE)
        path = f"src/mod{rng.randrange(200)}/file{rng.randrange(20)}.py"
        kind = rng.random()
        if i == 0:
            main_mark = commit("refs/heads/main", who, "initial", 0, None, "README.md")
        elif kind < 0.45:
            side = main_mark
            for k in range(rng.choice((1, 1, 2))):
                side = commit("refs/heads/feature", who, f"work {i}.{k}", side, None, path)
            main_mark = commit(
                "refs/heads/main",
                "GitHub <noreply@github.com>",
                f"Merge pull request #{i} from acme/feature-{i}\n\nFeature {i}",
                main_mark,
                side,
                path,
            )
        elif kind < 0.85:
            main_mark = commit("refs/heads/main", who, f"Change {i} (#{i})", main_mark, None, path)
        elif kind < 0.95:
            side = commit("refs/heads/topic", who, f"mr work {i}", main_mark, None, path)
            main_mark = commit(
                "refs/heads/main",
                who,
                f"Merge branch 'topic-{i}' into 'main'\n\nSee merge request acme/app!{i}",
                main_mark,
                side,
                path,
            )
        else:
            main_mark = commit("refs/heads/main", who, f"hotfix {i}", main_mark, None, path)
    return b"".join(out)


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--commits", type=int, default=100_000)
    ap.add_argument("--keep", type=Path)
    args = ap.parse_args()
    rng = random.Random(42)
    work = Path(tempfile.mkdtemp(prefix="cp-bench-"))
    try:
        repo = work / "repo"
        subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
        t0 = time.perf_counter()
        stream = build_stream(args.commits, rng)
        subprocess.run(["git", "-C", str(repo), "fast-import", "--quiet"], input=stream, check=True)
        subprocess.run(["git", "-C", str(repo), "checkout", "-q", "main"], check=True)
        build_s = time.perf_counter() - t0

        settings = Settings()
        signer = Signer.generate(work / "keys")
        store = Store.open(f"sqlite:///{work / 'store.db'}")
        now = datetime(2026, 11, 1, tzinfo=UTC)
        src = GitSource(repo, settings, repo="acme/app")
        t0 = time.perf_counter()
        cpu0, git0, main0 = time.process_time(), _children_cpu(), time.thread_time()
        with store.writer(Locker(signer)) as w:
            res = src.collect_branch(store, w, "main", since=None, now=now)
        collect_s = time.perf_counter() - t0
        # CPU time: this process (both its threads: parsing, and storing on a second one),
        # and the git processes it ran (the host is often shared)
        collect_cpu = time.process_time() - cpu0
        collect_git_cpu = _children_cpu() - git0
        # the parsing thread alone: the longest chain when the cores are free
        collect_main_cpu = time.thread_time() - main0
        collect_load = os.getloadavg()[0]  # wall figures mean little when this is high

        # as `changeproof check` runs it: one judging process per CPU
        jobs = default_jobs()
        t0 = time.perf_counter()
        run = run_check(store, settings, now, jobs=jobs)
        check_s = time.perf_counter() - t0
        changes = sum(run.summary.counts["CM-REV-1"].values())

        repo_more = 100
        for i in range(repo_more):
            (repo / "more.txt").write_text(str(i))
            subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
            subprocess.run(
                ["git", "-C", str(repo), "-c", "user.name=x", "-c", "user.email=x@y",
                 "commit", "-q", "-m", f"later (#{10_000_000 + i})"],
                check=True,
            )  # fmt: skip
        t0 = time.perf_counter()
        with store.writer(Locker(signer)) as w:
            res2 = src.collect_branch(store, w, "main", since=None, now=now)
        recollect_s = time.perf_counter() - t0
        store.close()
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        figures = {
            "first_parent_commits": res.commits,
            "collect_s": round(collect_s, 2),
            "collect_commits_per_s": round(res.commits / collect_s),
            "collect_cpu_s": round(collect_cpu, 2),
            "collect_git_cpu_s": round(collect_git_cpu, 2),
            "collect_commits_per_cpu_s": round(res.commits / collect_cpu),
            "collect_main_thread_cpu_s": round(collect_main_cpu, 2),
            "collect_load_avg_1m": round(collect_load, 2),
            "check_changes": changes,
            "check_s": round(check_s, 2),
            "check_changes_per_s": round(changes / check_s),
            "check_jobs": jobs,
            "incremental_commits": res2.commits,
            "incremental_collect_s": round(recollect_s, 3),
            "peak_rss_mb": round(rss_mb),
        }
        print(
            f"built {args.commits:,} first-parent commits with git fast-import in {build_s:.1f} s"
        )
        print(f"{'measure':<28}{'value':>14}")
        print(f"{'collect: commits':<28}{res.commits:>14,}")
        print(f"{'collect: seconds':<28}{collect_s:>14.2f}")
        print(
            f"{'collect: commits/s':<28}{figures['collect_commits_per_s']:>14,}   target ≥ 10,000"
        )
        print(f"{'collect: CPU s (py + git)':<28}{collect_cpu:>8.2f} + {collect_git_cpu:.2f}")
        print(f"{'collect: commits/CPU-s (py)':<28}{figures['collect_commits_per_cpu_s']:>14,}")
        print(f"{'collect: CPU s, main thread':<28}{collect_main_cpu:>14.2f}")
        print(f"{'collect: load avg (1 min)':<28}{collect_load:>14.2f}")
        print(f"{'check: changes':<28}{changes:>14,}")
        print(f"{'check: seconds':<28}{check_s:>14.2f}")
        print(f"{'check: changes/s':<28}{figures['check_changes_per_s']:>14,}   target ≥ 20,000")
        print(f"{'check: judging processes':<28}{jobs:>14}")
        print(f"{'incremental: new commits':<28}{res2.commits:>14,}")
        print(f"{'incremental: seconds':<28}{recollect_s:>14.3f}")
        print(f"{'peak RSS (MB)':<28}{figures['peak_rss_mb']:>14,}")
        if args.keep:
            shutil.copytree(work, args.keep, dirs_exist_ok=True)
        print(json.dumps(figures))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
