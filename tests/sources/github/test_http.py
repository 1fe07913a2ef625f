"""The shared HTTP client: retries with jitter, rate limits, ETags, pagination."""

from __future__ import annotations

import random
import time

import httpx
import pytest

from changeproof.errors import SourceError
from changeproof.sources.http import HttpClient, RateLimited, TransientError, next_link


def client(handler: object, sleeps: list[float], **kw: object) -> HttpClient:
    return HttpClient(
        "https://api.example.test",
        transport=httpx.MockTransport(handler),  # type: ignore[arg-type]
        sleep=sleeps.append,
        rng=random.Random(1),
        **kw,  # type: ignore[arg-type]
    )


def test_5xx_and_timeouts_retry_with_jittered_backoff() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ConnectTimeout("slow", request=request)
        if len(calls) < 4:
            return httpx.Response(502, text="bad gateway")
        return httpx.Response(200, json={"ok": True})

    sleeps: list[float] = []
    c = client(handler, sleeps, backoff_base_s=1.0)
    assert c.get_json("/x") == {"ok": True}
    assert len(sleeps) == 3 and c.stats.retries == 3
    for attempt, s in enumerate(sleeps):
        assert 0 <= s <= 2**attempt  # full jitter within the exponential bound


def test_gives_up_after_max_retries() -> None:
    sleeps: list[float] = []
    c = client(lambda r: httpx.Response(503), sleeps, max_retries=2)
    with pytest.raises(TransientError, match="HTTP 503 3 times"):
        c.get_json("/x")


def test_primary_limit_waits_for_reset_and_refuses_long_waits() -> None:
    reset = str(int(time.time()) + 30)
    n = []

    def handler(request: httpx.Request) -> httpx.Response:
        n.append(1)
        if len(n) == 1:
            return httpx.Response(
                403,
                json={"message": "API rate limit exceeded"},
                headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset},
            )
        return httpx.Response(200, json=[])

    sleeps: list[float] = []
    assert client(handler, sleeps).get_json("/x") == []
    assert 25 <= sleeps[0] <= 32
    n.clear()
    with pytest.raises(RateLimited, match="longer than"):
        client(handler, [], max_wait_s=5).get_json("/x")


def test_graphql_points_are_counted_and_exhaustion_waits() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "data": {
                    "rateLimit": {"cost": 3, "remaining": 4, "resetAt": "2000-01-01T00:00:00Z"}
                }
            },
        )

    sleeps: list[float] = []
    c = client(handler, sleeps)
    c.graphql(
        "https://api.example.test/graphql", "query Q { rateLimit { cost } }", {}, kind="graphql"
    )
    assert c.stats.points == 3 and sleeps == [1.0]  # reset already passed: a 1 s safety wait


def test_conditional_request_and_304() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("if-none-match") == '"v1"':
            return httpx.Response(304)
        return httpx.Response(200, json={"a": 1}, headers={"etag": '"v1"'})

    c = client(handler, [])
    first = c.request("GET", "/cfg")
    assert first.etag == '"v1"' and first.json() == {"a": 1}
    again = c.request("GET", "/cfg", etag=first.etag)
    assert again.not_modified and c.stats.not_modified == 1


def test_paginate_follows_link_headers() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params.get("page", "1"))
        assert request.url.params["per_page"] == "2"
        headers = {}
        if page < 3:
            headers["link"] = (
                f'<https://api.example.test/items?per_page=2&page={page + 1}>; rel="next", '
                '<https://api.example.test/items?per_page=2&page=3>; rel="last"'
            )
        return httpx.Response(200, json={"items": [page * 10, page * 10 + 1]}, headers=headers)

    c = client(handler, [])
    got = [i for _, items in c.paginate("/items", per_page=2, item_key="items") for i in items]
    assert got == [10, 11, 20, 21, 30, 31]
    assert next_link(None) is None


def test_not_json_is_one_clear_error() -> None:
    c = client(lambda r: httpx.Response(200, text="<html>login</html>"), [])
    with pytest.raises(SourceError, match="not JSON") as exc:
        c.get_json("/")
    assert "--api-url" in exc.value.message


def test_graphql_endpoint_for_github_and_enterprise_server() -> None:
    from changeproof.sources.github import graphql_url

    assert graphql_url("https://api.github.com") == "https://api.github.com/graphql"
    assert graphql_url("https://ghe.example.com/api/v3/") == "https://ghe.example.com/api/graphql"
