"""Requests the GitLab source needs per 1,000 merged MRs with full evidence, against a replay.

Usage: python benchmarks/gitlab_collect.py [--mrs N] [--projects P]

The replay is the in-memory GitLab the tests use (tests/sources/gitlab/fake_gitlab.py), served
through httpx.MockTransport so the real HTTP client, pagination and retries run. A third of the
MRs have pushes after they were opened (their versions are fetched), a few percent of landings
are direct pushes, and every tenth merge is deployed.

The naive figure is what a per-MR REST collector needs for the same evidence: the MR list
pages, then for every MR GET merge_requests/:iid, /approvals, /approval_state, /notes,
/versions, /commits, /pipelines, /pipelines/:id/jobs and /changes (9 requests), plus the same
history, configuration and deployment pages. Last line: one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.sources.gitlab.fake_gitlab import Commit, FakeGitLab, User, sha

from changeproof.cli.collect_gitlab import build_gitlab_client, graphql_url_for
from changeproof.locker import Signer
from changeproof.settings import Settings
from changeproof.sources.gitlab import GitLabSource
from changeproof.store import Store

API = "https://gitlab.example.com/api/v4"
PER_MR_REST = 9


def build(fake: FakeGitLab, projects: int, mrs: int, rng: random.Random) -> None:
    people = [User(f"dev{i}", f"Dev {i}", f"dev{i}@example.com") for i in range(30)]
    bot = User("project_1_bot_deploy", "deploy", bot=True)
    per = mrs // projects
    for p in range(projects):
        proj = fake.project(f"acme/app{p}")
        proj.initial(people[0])
        for i in range(1, per + 1):
            author, reviewer = rng.sample(people, 2)
            cs = proj.branch_commits(author, rng.choice((1, 1, 2, 3)))
            kw: dict[str, Any] = {}
            if rng.random() < 0.33:
                t_first = proj.tick()
                extra = Commit(
                    sha("x"), author, author, "address review", proj.tick(), [cs[-1].sha]
                )
                kw = {
                    "pushes": [(author, extra.at, [extra])],
                    "versions": [
                        (1, t_first, cs[-1].sha, cs),
                        (2, extra.at, extra.sha, [*cs, extra]),
                    ],
                }
                cs = [*cs, extra]
            proj.merge(
                i,
                author,
                commits=cs,
                approvers=[reviewer],
                method=rng.choice(("merge", "merge", "squash", "ff")),
                **kw,
            )
            if rng.random() < 0.03:
                proj.direct_push(rng.choice(people))
            if i % 10 == 0:
                proj.deploy("staging", proj.history[-1].sha, bot)
                proj.deploy("production", proj.history[-1].sha, bot, approver=reviewer)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mrs", type=int, default=2000)
    ap.add_argument("--projects", type=int, default=4)
    args = ap.parse_args()
    rng = random.Random(7)
    fake = FakeGitLab()
    build(fake, args.projects, args.mrs, rng)
    work = Path(tempfile.mkdtemp(prefix="cp-gl-"))
    store = Store.open(f"sqlite:///{work / 'store.db'}")
    signer = Signer.generate(work / "keys")
    now = datetime(2027, 1, 1, tzinfo=UTC)
    client = build_gitlab_client(API, fake.token, transport=fake.transport())
    src = GitLabSource(client, Settings(), graphql_url=graphql_url_for(API))
    t0 = time.perf_counter()
    totals = {"mrs": 0, "changes": 0, "versions": 0}
    for path in fake.projects:
        r = src.collect_project(store, signer, path, since=None, now=now)
        totals["mrs"] += r.merge_requests
        totals["changes"] += r.changes
        totals["versions"] += r.versions_fetched
    wall = time.perf_counter() - t0
    first = len(fake.requests)
    kinds: dict[str, int] = {}
    for req in fake.requests:
        k = (
            "graphql"
            if "graphql" in req
            else req.split("/")[-1]
            if not req.split("/")[-1].isdigit()
            else "versions/:id"
        )
        kinds[k] = kinds.get(k, 0) + 1
    for path in fake.projects:
        src.collect_project(store, signer, path, since=None, now=now)
    recollect = len(fake.requests) - first
    client.close()
    store.close()

    mrs = totals["mrs"]
    graphql = kinds.get("graphql", 0)
    shared = first - graphql - totals["versions"]  # history, config, deployments, diffs
    naive = math.ceil(mrs / 100) * args.projects + PER_MR_REST * mrs + shared
    per1000 = round(first * 1000 / mrs, 1)
    naive1000 = round(naive * 1000 / mrs, 1)
    print(f"{'measure':<44}{'value':>12}")
    print(f"{'merged MRs collected':<44}{mrs:>12,}")
    print(f"{'changes (landings incl. direct pushes)':<44}{totals['changes']:>12,}")
    print(f"{'requests (all)':<44}{first:>12,}")
    for k, v in sorted(kinds.items()):
        print(f"{'  ' + k:<44}{v:>12,}")
    print(f"{'requests per 1,000 MRs':<44}{per1000:>12,}")
    print(f"{'per-MR REST collector, per 1,000 MRs':<44}{naive1000:>12,}")
    print(f"{'ratio (target ≤ 10%)':<44}{per1000 / naive1000:>12.1%}")
    print(f"{'re-collect, nothing changed (requests)':<44}{recollect:>12,}")
    print(f"{'wall time (s, no network latency)':<44}{wall:>12.2f}")
    print(
        json.dumps(
            {
                "requests_per_1000_mrs": per1000,
                "naive_requests_per_1000_mrs": naive1000,
                "ratio": round(per1000 / naive1000, 4),
                "recollect_requests_per_project": round(recollect / args.projects, 1),
                "wall_s": round(wall, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
