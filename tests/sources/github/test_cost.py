"""What the GitHub source saves on requests, and that the saving loses no evidence."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from changeproof.demo_github import Org, RepoBuilder
from changeproof.errors import SourceError
from changeproof.evidence import Bypass, Change, ProtectionSnapshot
from changeproof.sources.github import queries as q
from tests.sources.github.conftest import Harness

Make = Callable[..., Harness]


def _org(repos: int, prs: int = 2, login: str = "acme") -> tuple[Org, list[RepoBuilder]]:
    org = Org(login=login)
    builders = []
    for i in range(repos):
        b = RepoBuilder(org, f"svc{i:02d}")
        for _ in range(prs):
            b.merge_pr(reviews=[("bob", "APPROVED", "head")])
        builders.append(b)
    return org, builders


def _collect(h: Harness, **opts: Any) -> tuple[Any, Any]:
    client = h.client()
    src = h.source(client, **opts)
    names = sorted(h.org.repos)
    src.validate(names)
    src.collect(h.store, h.signer, names)
    return src, client


def test_probes_are_batched_and_a_recollect_costs_two_requests(harness: Make) -> None:
    org, _ = _org(q.PROBE_BATCH + 2, prs=1)
    h = harness(org)
    _, client = _collect(h)
    assert client.stats.by_kind["graphql:probe"] == 2  # 27 repositories, 25 per probe
    assert h.store.count("change") == 2 * len(org.repos)  # a PR and the root commit each
    _, again = _collect(h)
    # nothing changed: the API check and the two probes, for 27 repositories
    assert again.stats.requests == 3
    assert again.stats.by_kind == {"rest:root": 1, "graphql:probe": 2}


def test_a_missing_repository_among_several_is_named_and_nothing_written(harness: Make) -> None:
    org, _ = _org(3, prs=1)
    h = harness(org)
    with pytest.raises(SourceError, match="acme/nope was not found"):
        h.collect(["acme/svc00", "acme/nope", "acme/svc01"])
    assert h.store.count("change") == 0


def test_pages_grow_while_fast_and_never_past_a_size_that_failed(harness: Make) -> None:
    org, _ = _org(1, prs=260)
    fast = harness(org, "fast")
    src, _ = _collect(fast)
    assert [size for size, _ in src.pages] == [50, 100, 100, 100]  # 50 + 100 + 100 + 10
    fixed = harness(org, "fixed")
    src, _ = _collect(fixed, grow_below_s=0.0)  # never fast enough: stays at 50
    assert [size for size, _ in src.pages] == [50] * 6
    failed = harness(org, "failed")
    failed.replay.fail("graphql:MergedPullRequests", 502, times=1)
    src, _ = _collect(failed)
    sizes = [size for size, _ in src.pages]
    assert sizes[0] == 25 and max(sizes) == 25  # the 502 at 50 halved it for good
    for h in (fast, fixed, failed):
        assert h.store.count("change") == 261
    # the same evidence whatever the page sizes
    assert _changes(fast) == _changes(fixed) == _changes(failed)


def _changes(h: Harness) -> list[bytes]:
    out = []
    for c in h.store.records(Change):
        out.append(
            msgspec.json.encode(
                msgspec.structs.replace(
                    c, provenance=msgspec.structs.replace(c.provenance, collected_at=None)
                )
            )
        )
    return sorted(out)


def _bypasses(h: Harness) -> set[tuple[Any, ...]]:
    return {
        (b.id, b.repo, b.branch, b.actor.login if b.actor else None, b.at, b.detail)
        for b in h.store.records(Bypass)
    }


def test_rule_suites_once_per_organisation_or_per_repository_without_org_admin(
    harness: Make,
) -> None:
    org, builders = _org(3)
    for i, b in enumerate(builders):
        b.bypass_push(f"admin{i}")
    admin = harness(org, "admin")
    _, client = _collect(admin)
    assert client.stats.by_kind["rest:rule-suites"] == 1  # the organisation's listing
    found = _bypasses(admin)
    assert {(r, a) for _, r, _, a, _, _ in found} == {
        ("acme/svc00", "admin0"), ("acme/svc01", "admin1"), ("acme/svc02", "admin2"),
    }  # fmt: skip
    org.admin_readable = False  # 403 at the organisation: each repository's own listing
    member = harness(org, "member")
    _, client = _collect(member)
    assert client.stats.by_kind["rest:rule-suites"] == 1 + 3
    assert _bypasses(member) == found


def test_organisation_ruleset_read_once_for_every_repository(harness: Make) -> None:
    org, builders = _org(3)
    for i, b in enumerate(builders):
        b.ruleset(rid=100 + i)
    builders[0].ruleset(rid=7, org=True, bypass=(("OrganizationAdmin", 1, "pull_request"),))
    h = harness(org)
    _, client = _collect(h)
    # three repository rulesets and the organisation's one; the probe listed them (no REST list)
    assert client.stats.by_kind["rest:ruleset"] == 3 + 1
    assert "rest:rulesets" not in client.stats.by_kind
    for repo in org.repos:
        (main,) = [s for s in h.store.records(ProtectionSnapshot, repo=repo) if s.branch == "main"]
        assert sorted(layer.layer.split(":")[0] for layer in main.layers) == [
            "ruleset", "ruleset",
        ]  # fmt: skip
        assert any(
            ("OrganizationAdmin:1", "pull_request") in layer.bypass_actors for layer in main.layers
        )


def test_more_rulesets_than_the_probe_lists_are_read_from_rest(harness: Make) -> None:
    org, (b,) = _org(1)
    for i in range(51):
        b.ruleset(rid=1000 + i)
    h = harness(org)
    _, client = _collect(h)
    assert client.stats.by_kind["rest:rulesets"] == 1
    assert client.stats.by_kind["rest:ruleset"] == 51
    (main,) = [s for s in h.store.records(ProtectionSnapshot) if s.branch == "main"]
    assert len(main.layers) == 51


def test_no_protection_and_no_environments_cost_no_requests(harness: Make) -> None:
    org, (_bare, guarded) = _org(2)
    guarded.protect()
    guarded.environment("production", reviewers=("rm",))
    h = harness(org)
    _, client = _collect(h)
    assert client.stats.by_kind["rest:protection"] == 1  # only the protected repository's
    assert client.stats.by_kind["rest:environments"] == 1
    snaps = {(s.repo, s.branch): s for s in h.store.records(ProtectionSnapshot)}
    assert snaps[("acme/svc00", "main")].layers == () and snaps[("acme/svc00", "main")].readable
    assert [x.layer.split(":")[0] for x in snaps[("acme/svc01", "main")].layers] == ["classic"]
    assert ("acme/svc01", "environment:production") in snaps


def test_an_error_inside_a_probed_repository_is_not_taken_for_a_missing_one(
    harness: Make,
) -> None:
    org, _ = _org(2, prs=1)
    h = harness(org)
    h.replay.fail(
        "graphql:Probe", 200, times=1,
        body=b'{"data": {"r0": {"nameWithOwner": "acme/svc00"}, "r1": null}, "errors": ['
        b'{"type": "NOT_FOUND", "path": ["r0", "defaultBranchRef"], "message": "gone"}]}',
    )  # fmt: skip
    with pytest.raises(SourceError, match="query failed") as exc:
        h.collect()
    assert "not found" not in exc.value.message
    assert h.store.count("change") == 0
