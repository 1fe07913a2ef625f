"""GitHub collection cost: a generated organisation served by the loopback replay server.

20 repositories × 500 merged PRs (10,000) with realistic sizes (1–3 approvals, some changes
requested, 60+ reviews / 70 commits / 150 files on ~1% each, ~1.5% renames, merge methods
60% squash / 20% merge / 10% rebase / 10% merge queue, a direct push every 60 PRs, a staging
deployment every 10 PRs and an approved production one every 40), 50 ms latency per request.

Prints requests and GraphQL points per 1,000 merged PRs (with where they go), wall and CPU
time (the replay server runs in this process, so CPU covers both sides; the machine's load
average is printed), the page sizes the collector chose, and what a re-collect with nothing
changed costs. Per-run artefacts (CI log archives: one download per workflow run) are counted
separately from the API requests that carry the evidence. Last line: JSON.

    python benchmarks/github_collect.py [--repos 20] [--prs 500] [--latency 0.05] [--workers 8]
                                        [--page-size 50]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

from changeproof.demo_github import GitHubReplay, ReplayServer, generate_org
from changeproof.locker import Signer
from changeproof.settings import Settings
from changeproof.sources.github import GitHubSource, Options
from changeproof.sources.github.collector import github_error_mapper
from changeproof.sources.http import HttpClient
from changeproof.store import Store

# One request per CI run (log archive) or per approved deployment (approvals): these scale with
# runs and deployments, not with PRs, and have no bulk API.
ARTEFACTS = ("rest:logs", "rest:approvals")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repos", type=int, default=20)
    ap.add_argument("--prs", type=int, default=500)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--page-size", type=int, default=50, help="merged PRs on a branch's first page")
    ap.add_argument(
        "--fixed-pages", action="store_true", help="keep every page at --page-size (no growth)"
    )
    args = ap.parse_args()

    t0 = time.perf_counter()
    org = generate_org(repos=args.repos, prs_per_repo=args.prs)
    gen_s = time.perf_counter() - t0
    replay = GitHubReplay(org, latency_s=args.latency)
    names = sorted(org.repos)
    with tempfile.TemporaryDirectory() as tmp, ReplayServer(replay) as url:
        store = Store.open(f"sqlite:///{Path(tmp) / 'store.db'}")
        signer = Signer.generate(Path(tmp) / "keys")

        def run() -> tuple[HttpClient, GitHubSource, float, float, list]:  # type: ignore[type-arg]
            client = HttpClient(url, error_mapper=github_error_mapper, timeout_s=60)
            opts = Options(workers=args.workers, page_size=args.page_size)
            if args.fixed_pages:
                opts = Options(workers=args.workers, page_size=args.page_size, grow_below_s=0.0)
            src = GitHubSource(client, Settings(), api_url=url, options=opts)
            t, cpu = time.perf_counter(), time.process_time()
            src.validate(names)
            res = src.collect(store, signer, names)
            wall, cpu = time.perf_counter() - t, time.process_time() - cpu
            client.close()
            return client, src, wall, cpu, res

        first, source, wall, cpu_s, results = run()
        again, _, rewall, _, _ = run()
        store.close()

    prs = sum(r.pull_requests for r in results)
    stats = first.stats.snapshot()
    by = stats["by_kind"]
    artefacts = sum(by.get(k, 0) for k in ARTEFACTS)
    api = stats["requests"] - artefacts
    per_k = 1000 / max(prs, 1)
    re_stats = again.stats.snapshot()
    rows = [
        ("merged PRs collected", f"{prs}"),
        ("changes stored (PRs + direct pushes + roots)", f"{sum(r.changes for r in results)}"),
        ("API requests (evidence)", f"{api}"),
        ("  per 1,000 merged PRs", f"{api * per_k:.1f}"),
        ("GraphQL points", f"{stats['points']}"),
        ("  per 1,000 merged PRs", f"{stats['points'] * per_k:.1f}"),
        ("per-run artefacts (log archives, approvals)", f"{artefacts}"),
        ("  per 1,000 merged PRs", f"{artefacts * per_k:.1f}"),
        *((f"  {label}", f"{n * per_k:.1f}") for label, n in _breakdown(by)),
        ("PR pages by size (merged PRs asked for)", _sizes(source.pages)),
        ("slowest PR page", f"{max((t for _, t in source.pages), default=0):.2f} s"),
        ("wall time, first collect", f"{wall:.1f} s"),
        ("CPU time, first collect (collector + replay)", f"{cpu_s:.1f} s"),
        ("load average (1, 5, 15 min) at the end", " ".join(f"{x:.1f}" for x in os.getloadavg())),
        (
            "  requests × latency ÷ workers",
            f"{stats['requests'] * args.latency / args.workers:.1f} s",
        ),
        ("re-collect, nothing changed: requests", f"{re_stats['requests']}"),
        ("  per repository", f"{re_stats['requests'] / len(names):.2f}"),
        ("  wall", f"{rewall:.2f} s"),
        ("(org generation, not timed above)", f"{gen_s:.1f} s"),
    ]
    w = max(len(a) for a, _ in rows)
    print(
        f"GitHub collect: {len(names)} repositories, {args.latency * 1000:.0f} ms latency, "
        f"{args.workers} workers"
    )
    for a, b in rows:
        print(f"  {a:<{w}}  {b:>10}")
    print("  requests by kind: " + ", ".join(f"{k}={v}" for k, v in sorted(by.items())))
    print(
        json.dumps(
            {
                "requests_per_1000_prs": round(api * per_k, 1),
                "points_per_1000_prs": round(stats["points"] * per_k, 1),
                "artefact_requests_per_1000_prs": round(artefacts * per_k, 1),
                "recollect_requests_per_repo": round(re_stats["requests"] / len(names), 2),
                "wall_s": round(wall, 1),
                "cpu_s": round(cpu_s, 1),
            }
        )
    )


# where the evidence requests go (request kinds → a readable label)
GROUPS = (
    ("GraphQL PR pages (with history and deployments)", ("graphql:prs",)),
    ("GraphQL history / deployments on their own", ("graphql:history", "graphql:deployments")),
    ("GraphQL nested overflow", ("graphql:overflow",)),
    ("GraphQL probes", ("graphql:probe",)),
    ("REST old names of renamed files", ("rest:files",)),
    (
        "REST configuration",
        (
            "rest:protection",
            "rest:rulesets",
            "rest:ruleset",
            "rest:environments",
            "rest:retention",
            "rest:rule-suites",
        ),
    ),
    ("REST API check, audit log, teams", ("rest:root", "rest:audit-log", "rest:team")),
)


def _breakdown(by: dict[str, int]) -> list[tuple[str, int]]:
    return [(label, sum(by.get(k, 0) for k in kinds)) for label, kinds in GROUPS]


def _sizes(pages: list[tuple[int, float]]) -> str:
    counts = Counter(size for size, _ in pages)
    return ", ".join(f"{n}×{size}" for size, n in sorted(counts.items()))


if __name__ == "__main__":
    main()
