"""The GitHub source end to end through the real HTTP client and a GitHub-shaped replay."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from changeproof.controls.facts import compute_facts
from changeproof.demo_github import Org, RepoBuilder
from changeproof.errors import SourceError
from changeproof.evidence import (
    Bypass,
    Change,
    Coverage,
    Deployment,
    DeploymentApproval,
    ProtectionSnapshot,
    TeamMembership,
)
from changeproof.settings import Settings
from changeproof.store import schema
from tests.sources.github.conftest import Harness, scenario_org

Make = Callable[..., Harness]
REPO = "octo-org/api"


@pytest.fixture
def collected(harness: Make) -> tuple[Harness, dict[str, Any], dict[int | str, Change]]:
    org, cases = scenario_org()
    h = harness(org)
    h.collect()
    by: dict[int | str, Change] = {}
    for c in h.store.records(Change, repo=REPO):
        by[c.number if c.number is not None else c.merge_sha] = c
    return h, cases, by


def change(by: dict[int | str, Change], pr: dict[str, Any]) -> Change:
    return by[int(pr["number"])]


def test_approved_by_non_author(collected: Any) -> None:
    _, cases, by = collected
    c = change(by, cases["approved"])
    assert c.author is not None and c.author.login == "alice"
    (r,) = c.reviews or ()
    assert r.reviewer.login == "octocat" and r.state == "APPROVED"
    assert r.commit_sha == c.head_sha  # the commit it approved, so currency is decidable
    facts = compute_facts(c, Settings())
    assert [a.name for a in facts.independent] == ["octocat"]


def test_self_merged_without_review(collected: Any) -> None:
    _, cases, by = collected
    c = change(by, cases["self_merged"])
    assert c.reviews == ()
    assert c.merged_by is not None and c.merged_by.login == "alice"
    assert compute_facts(c, Settings()).independent == []


def test_approval_on_outdated_commit(collected: Any) -> None:
    _, cases, by = collected
    c = change(by, cases["outdated"])
    (r,) = c.reviews or ()
    assert r.commit_sha != c.head_sha
    (a,) = compute_facts(c, Settings()).approvals
    assert a.current is False and not a.counts


def test_dismissed_approval(collected: Any) -> None:
    _, cases, by = collected
    c = change(by, cases["dismissed"])
    (r,) = c.reviews or ()
    assert r.state == "DISMISSED"
    assert r.dismissed_by is not None and r.dismissed_by.login == "alice"
    assert any(e.type == "review_dismissed" for e in c.timeline)
    assert compute_facts(c, Settings()).independent == []


def test_changes_requested_then_approved(collected: Any) -> None:
    _, cases, by = collected
    c = change(by, cases["changes_then_ok"])
    assert [r.state for r in c.reviews or ()] == ["CHANGES_REQUESTED", "APPROVED"]
    assert [a.name for a in compute_facts(c, Settings()).independent] == ["bob"]


def test_bot_pr(collected: Any) -> None:
    _, cases, by = collected
    c = change(by, cases["bot"])
    assert c.author is not None
    assert (c.author.login, c.author.type) == ("dependabot[bot]", "bot")
    assert c.labels == ("dependencies",)


def test_merge_methods_and_attribution(collected: Any) -> None:
    h, cases, by = collected
    m = change(by, cases["merge"])
    assert (m.change_type, m.merge_method) == ("merge", "merge")
    assert len(m.commits) == 3 and m.base_sha is not None
    s = change(by, cases["approved"])
    assert (s.change_type, s.merge_method) == ("squash", "squash")
    r = change(by, cases["rebase"])
    assert (r.change_type, r.merge_method) == ("rebase", "rebase")
    assert len(r.landed_shas) == 2 and r.merge_sha == r.landed_shas[-1]
    q = change(by, cases["queue"])
    assert q.change_type == "merge_queue" and q.merge_queue_sha == q.merge_sha
    assert any(ch.commit_sha == q.merge_sha for ch in q.checks or ())
    # every landed commit maps back to exactly its change
    for c in (m, s, r, q):
        for sha in c.landed_shas:
            got = h.store.change_for_commit(REPO, sha)
            assert got is not None and got[1].id == c.id


def test_direct_push(collected: Any) -> None:
    _, cases, by = collected
    c = by[cases["direct"]]
    assert c.change_type == "direct_push" and c.number is None
    assert c.author is not None and c.author.login == "mallory"
    assert c.reviews == ()
    kinds = sorted(c.change_type for c in by.values() if c.number is None)
    assert kinds == ["direct_push", "initial"]


def test_pagination_of_reviews_and_files(collected: Any) -> None:
    _, cases, by = collected
    c = change(by, cases["many_reviews"])
    assert len(c.reviews or ()) == 71
    assert [a.name for a in compute_facts(c, Settings()).independent] == ["erin"]
    f = change(by, cases["many_files"])
    assert f.files is not None and len(f.files) == 251 == f.files_total
    renamed = next(x for x in f.files if x.status == "renamed")
    assert renamed.paths() == ("src/auth/new.py", "src/old/login.py")


def test_past_3000_files_is_partial_not_truncated_silently(collected: Any) -> None:
    _, cases, by = collected
    c = change(by, cases["huge"])
    assert c.files_total == 3500
    assert c.files is not None and len(c.files) < 3500


def test_checks_and_ci_logs_in_locker(collected: Any) -> None:
    h, cases, by = collected
    c = change(by, cases["approved"])
    runs = [x for x in c.checks or () if x.kind == "check_run"]
    assert runs and all(x.app == "github-actions" and x.log_sha256 for x in runs)
    status = next(x for x in c.checks or () if x.kind == "status")
    assert status.creator == "ci-bot"
    with h.store.connect() as conn:
        body = conn.execute(
            schema.locker_objects.select().where(
                schema.locker_objects.c.digest == runs[0].log_sha256
            )
        ).first()
    assert body is not None and body.body.startswith(b"PK")


def test_configuration_snapshots_bypasses_and_deployments(collected: Any) -> None:
    h, _, _ = collected
    snaps = {s.branch: s for s in h.store.records(ProtectionSnapshot, repo=REPO)}
    main = snaps["main"]
    layers = {
        layer.layer.split(":")[0] + (":org" if layer.layer.endswith(":org") else ""): layer
        for layer in main.layers
    }
    classic = layers["classic"]
    assert classic.required_approvals == 2 and classic.enforce_admins  # from the OpenAPI example
    assert classic.required_checks == (("continuous-integration/travis-ci", None),)
    assert ("Team:234", "always") in layers["ruleset"].bypass_actors
    assert "ruleset:org" in layers
    assert main.log_retention_days == 90
    assert snaps["environment:staging"].layers[0].required_approvals == 1
    bypasses = h.store.records(Bypass, repo=REPO)
    assert [b.actor.login for b in bypasses if b.actor] == ["octocat"]  # only result=bypass
    (dep,) = h.store.records(Deployment, repo=REPO)
    assert dep.environment == "production" and dep.status == "success"
    (appr,) = h.store.records(DeploymentApproval, repo=REPO)
    assert appr.approver.login == "octocat" and appr.comment == "Ship it!"
    (team,) = h.store.records(TeamMembership)
    assert team.members == ("sam",)
    (cov,) = h.store.records(Coverage, repo=REPO)
    assert cov.complete and cov.branch == "main"


def test_audit_log_unreadable_is_stated(harness: Make) -> None:
    org, _ = scenario_org()
    h = harness(org)
    results, _ = h.collect()
    assert any("audit log of octo-org is not readable" in n for n in results[0].notes)
    org.audit_log = [
        {
            "action": "protected_branch.policy_override",
            "actor": "admin1",
            "repo": REPO,
            "branch": "refs/heads/main",
            "@timestamp": 1767600000000,
            "_document_id": "doc1",
        }
    ]
    results, _ = harness(org, "second").collect()
    assert not any("audit log" in n for n in results[0].notes)


def _bodies(h: Harness) -> set[tuple[str, str, bytes]]:
    """Evidence rows without collection times: what two equivalent runs must share."""
    out = set()
    with h.store.connect() as conn:
        for kind, key, body in conn.execute(
            schema.evidence.select().with_only_columns(
                schema.evidence.c.kind, schema.evidence.c.key, schema.evidence.c.body
            )
        ):
            data = msgspec.json.decode(body)
            data.get("provenance", {}).pop("collected_at", None)
            for k in ("end",):
                data.pop(k, None)
            if kind in ("coverage", "protection", "team"):
                # observations: when they were made differs between runs, what they saw must not
                data.get("provenance", {}).pop("occurred_at", None)
                key = key.rsplit("|", 1)[0] if kind != "coverage" else key
            out.add((kind, key, msgspec.json.encode(data, order="sorted")))
    return out


def test_recollect_unchanged_costs_at_most_two_requests_per_repo(collected: Any) -> None:
    h, _, _ = collected
    results, client = h.collect()
    assert results[0].skipped
    assert client.stats.requests == 2  # the API check (once per run) and the probe
    assert client.stats.by_kind.get("graphql:probe") == 1


def test_incremental_fetches_only_new_work(collected: Any) -> None:
    h, _, _ = collected
    b = RepoBuilder.__new__(RepoBuilder)  # continue the same repository's history
    repo = h.org.repos[REPO]
    b.repo, b.org, b.branch = repo, h.org, "main"
    b.clock = max(
        msgspec.convert(p["mergedAt"], type=__import__("datetime").datetime) for p in repo.prs
    )
    b.next_number, b.next_run, b.next_deploy = len(repo.prs) + 1, 5000, 50
    new = b.merge_pr(author="zoe", reviews=[("bob", "APPROVED", "head")])
    results, client = h.collect()
    # one probe, one page of PRs carrying the new stretch of history: nothing else
    assert client.stats.by_kind["graphql:prs"] == 1
    assert client.stats.graphql_requests == 2
    assert results[0].pull_requests == 1
    got = h.store.get(Change, f"{REPO}#{new['number']}")
    assert got is not None and got[1].author is not None and got[1].author.login == "zoe"


def test_interrupted_run_resumes_to_the_same_store(harness: Make) -> None:
    org, _ = scenario_org()
    whole = harness(org, "whole")
    whole.collect(page_size=3)
    broken = harness(org, "broken")
    broken.replay.fail("graphql:MergedPullRequests", 500, times=0)
    # let two pages through, then fail every PR page until the run gives up on the repo
    seen = {"n": 0}

    def fault(method: str, what: str, v: Any) -> Any:
        from changeproof.demo_github import Reply

        if what == "graphql:MergedPullRequests":
            seen["n"] += 1
            if seen["n"] > 2:
                return Reply(500, b'{"message":"boom"}', {"content-type": "application/json"})
        return None

    broken.replay.faults.append(fault)
    with pytest.raises(SourceError, match="could not be collected completely"):
        broken.collect(page_size=3)
    (cov,) = broken.store.records(Coverage, repo=REPO)
    assert not cov.complete and cov.gaps
    partial = broken.store.count("change", REPO)
    assert 0 < partial < whole.store.count("change", REPO)
    broken.replay.faults.clear()
    broken.collect(page_size=3)
    assert _bodies(broken) == _bodies(whole)


def test_502_halves_the_page_and_recovers(harness: Make) -> None:
    org, _ = scenario_org()
    h = harness(org)
    h.replay.fail("graphql:MergedPullRequests", 502, times=2)
    _, client = h.collect()
    assert h.store.count("change", REPO) == 14
    assert client.stats.by_kind["graphql:prs"] >= 3


@pytest.mark.parametrize(
    ("status", "headers", "body"),
    [
        (403, {"retry-after": "7"}, b'{"message": "You have exceeded a secondary rate limit."}'),
        (429, {}, b'{"message": "You have exceeded a secondary rate limit."}'),
        (
            403,
            {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "0"},
            b'{"message": "API rate limit exceeded"}',
        ),
    ],
)
def test_rate_limits_are_waited_out(
    harness: Make, status: int, headers: dict[str, str], body: bytes
) -> None:
    org, _ = scenario_org()
    h = harness(org)
    h.replay.fail(
        "graphql:Probe",
        status,
        times=1,
        body=body,
        headers={"content-type": "application/json", **headers},
    )
    h.collect()
    assert h.sleeps and max(h.sleeps) >= 1
    assert h.store.count("change", REPO) == 14


def test_graphql_error_inside_200(harness: Make) -> None:
    org, _ = scenario_org()
    h = harness(org)
    h.replay.fail(
        "graphql:Probe",
        200,
        times=1,
        body=b'{"data": null, "errors": [{"type": "INSUFFICIENT_SCOPES", "message": "Your token has not been granted the required scopes to execute this query."}]}',
    )
    with pytest.raises(SourceError, match="token may not read") as exc:
        h.collect()
    assert "scope" in exc.value.message
    assert h.store.count("change") == 0


def test_truncated_json_is_retried(harness: Make) -> None:
    org, _ = scenario_org()
    h = harness(org)
    h.replay.fail(
        "graphql:MergedPullRequests", 200, times=1, body=b'{"data": {"repository": {"pullRe'
    )
    _, client = h.collect()
    assert client.stats.retries >= 1
    assert h.store.count("change", REPO) == 14


def test_unknown_repository(harness: Make) -> None:
    org, _ = scenario_org()
    h = harness(org)
    with pytest.raises(SourceError, match="not found"):
        h.collect(["octo-org/nope"])
    assert h.store.count("change") == 0


def test_not_github_and_not_json(harness: Make) -> None:
    org, _ = scenario_org()
    h = harness(org)
    h.replay.fail(
        "GET /", 200, body=b"<html>Welcome to nginx</html>", headers={"content-type": "text/html"}
    )
    with pytest.raises(SourceError, match="not JSON"):
        h.collect()
    h.replay.fail("GET /", 200, body=b'{"hello": "world"}')
    with pytest.raises(SourceError, match="does not look like the GitHub API"):
        h.collect()
    assert h.store.count("change") == 0


def test_many_repositories_concurrently(harness: Make) -> None:
    org = Org(login="acme")
    for i in range(3):
        b = RepoBuilder(org, f"svc{i}")
        for _ in range(4):
            b.merge_pr(reviews=[("bob", "APPROVED", "head")])
    h = harness(org)
    results, _ = h.collect()
    assert [r.pull_requests for r in results] == [4, 4, 4]
    assert h.store.repos() == ["acme/svc0", "acme/svc1", "acme/svc2"]


def test_rebase_merge_found_late_in_history_is_attributed(harness: Make) -> None:
    # PR pages go oldest first, history newest first: the old rebase merge's commits arrive
    # after its PR was stored, and the final pass attributes them.
    org = Org(login="acme")
    b = RepoBuilder(org, "big")
    old = b.merge_pr(method="rebase", commits=3, reviews=[("bob", "APPROVED", "head")])
    for i in range(120):
        b.merge_pr(reviews=[("bob", "APPROVED", "head")])
        if i % 2:
            b.deploy("staging")
    h = harness(org)
    _, client = h.collect(page_size=20)
    got = h.store.get(Change, f"acme/big#{old['number']}")
    assert got is not None
    c = got[1]
    assert (c.change_type, c.merge_method, len(c.landed_shas)) == ("rebase", "rebase", 3)
    assert h.store.count("change", "acme/big") == 122  # + the root commit, no direct pushes
    # history and the 60 deployments (two pages) are carried by the PR pages
    assert "graphql:history" not in client.stats.by_kind
    assert "graphql:deployments" not in client.stats.by_kind
    assert len(h.store.records(Deployment, repo="acme/big")) == 60


def test_offline_collect_for_the_demo(tmp_path: Any) -> None:
    from changeproof.demo_github import collect_offline, generate_org
    from changeproof.workspace import Workspace

    ws = Workspace.resolve(str(tmp_path / "ws"), None, str(tmp_path / "changeproof.toml"))
    org = generate_org("demo", repos=2, prs_per_repo=30)
    results, stats = collect_offline(ws, org)
    assert [r.pull_requests for r in results] == [30, 30]
    assert stats["requests"] > 0
    store = ws.open_store()
    try:
        assert store.count("change") >= 60
        snap = next(
            s
            for s in store.records(ProtectionSnapshot, repo="demo/service-00")
            if s.branch == "main"
        )
        # the required check's app id (15368) is resolved to the slug its check runs carry
        assert ("test", "github-actions") in snap.layers[0].required_checks
    finally:
        store.close()


def test_graphql_rate_limited_inside_200_is_waited_out(harness: Make) -> None:
    org, _ = scenario_org()
    h = harness(org)
    h.replay.fail(
        "graphql:MergedPullRequests", 200, times=1,
        body=b'{"errors": [{"type": "RATE_LIMITED", "message": "API rate limit exceeded"}]}',
    )  # fmt: skip
    h.collect()
    assert 60.0 in h.sleeps
    assert h.store.count("change", REPO) == 14


def test_large_log_archives_keep_their_exact_hash(harness: Make) -> None:
    import hashlib

    org, cases = scenario_org()
    h = harness(org)
    h.collect(max_log_bytes=10)
    got = h.store.get(Change, f"{REPO}#{cases['approved']['number']}")
    assert got is not None
    run = next(c for c in got[1].checks or () if c.kind == "check_run")
    blob = next(
        iter(b for rid, b in org.repos[REPO].run_logs.items() if str(rid) in (run.url or ""))
    )
    assert run.log_sha256 == hashlib.sha256(blob).hexdigest()
    with h.store.connect() as conn:
        kinds = {
            k
            for (k,) in conn.execute(
                schema.locker_entries.select().with_only_columns(schema.locker_entries.c.kind)
            )
        }
    assert "github.actions_log_digest" in kinds and "github.actions_log" not in kinds


def test_configuration_the_token_cannot_read_is_stated(harness: Make) -> None:
    org, _ = scenario_org()
    org.repos[REPO].admin_readable = False  # 403 "Resource not accessible by integration"
    h = harness(org)
    results, _ = h.collect()
    notes = " ".join(results[0].notes)
    assert "classic branch protection exists but is not readable" in notes
    assert "rule-suite bypasses not readable" in notes
    main = next(s for s in h.store.records(ProtectionSnapshot, repo=REPO) if s.branch == "main")
    assert main.readable is False
    assert not any(layer.layer == "classic" for layer in main.layers)
