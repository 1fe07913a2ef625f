"""The one HTTP client for forge sources: auth, retries, rate limits, ETags, pagination.

Built on ``httpx`` with an injectable transport, so tests and the offline demo replay recorded
or generated responses through exactly the code production uses (no patching).

* **Retries**: 5xx, timeouts, connection resets and truncated JSON bodies are retried with full
  jitter exponential backoff (``base * 2**attempt``, randomised) up to ``max_retries``.
* **Primary rate limits**: ``X-RateLimit-Remaining: 0`` with ``X-RateLimit-Reset`` makes the
  client wait for the reset (bounded by ``max_wait_s``) instead of failing; GraphQL point costs
  reported by the server (``rateLimit { cost }``) are added up in :class:`Stats`.
* **Secondary rate limits**: 403/429 with ``Retry-After`` or the "secondary rate limit" message
  are waited out and retried.
* **Conditional requests**: callers pass a stored ETag; a 304 comes back as ``not_modified``.

The clock (``sleep``) is injectable too, so tests exercise waiting without waiting.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from changeproof.errors import SourceError

RETRY_STATUSES = frozenset({500, 502, 503, 504})
SECONDARY_MARKERS = ("secondary rate limit", "abuse detection")


class TransientError(SourceError):
    """A failure worth retrying (5xx, timeout, truncated body); raised after retries run out."""


class RateLimited(SourceError):
    """The rate limit would need a longer wait than the caller allows."""


@dataclass
class Stats:
    """Request accounting, shared across threads (guarded by a lock)."""

    requests: int = 0
    graphql_requests: int = 0
    rest_requests: int = 0
    not_modified: int = 0
    retries: int = 0
    points: int = 0
    waited_s: float = 0.0
    by_kind: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, *, kind: str, graphql: bool) -> None:
        with self._lock:
            self.requests += 1
            if graphql:
                self.graphql_requests += 1
            else:
                self.rest_requests += 1
            self.by_kind[kind] = self.by_kind.get(kind, 0) + 1

    def bump(self, name: str, value: float = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + value)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "graphql_requests": self.graphql_requests,
                "rest_requests": self.rest_requests,
                "not_modified": self.not_modified,
                "retries": self.retries,
                "points": self.points,
                "waited_s": round(self.waited_s, 3),
                "by_kind": dict(sorted(self.by_kind.items())),
            }


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    content: bytes
    url: str
    etag: str | None = None

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    def json(self) -> Any:
        return decode_json(self.content, self.url)


def decode_json(content: bytes, url: str) -> Any:
    try:
        return msgspec.json.decode(content)
    except msgspec.DecodeError:
        snippet = content[:80].decode("utf-8", "replace").strip()
        raise SourceError(
            f"{url} answered with something that is not JSON ({snippet!r}…)",
            expected="a JSON response from the GitHub API",
            hint="check --api-url points at the API (https://HOST/api/v3 for Enterprise Server), "
            "not a web page or a proxy's login screen",
        ) from None


# Decides what an HTTP error means for the caller (bad token, missing scope, not found …).
ErrorMapper = Callable[[httpx.Response, str], SourceError | None]
# Supplies the Authorization header value; called before every request (tokens may refresh).
AuthProvider = Callable[[], str | None]


class HttpClient:
    """A thread-safe client for one API host. Construct once per run; share across workers."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: AuthProvider | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 5,
        backoff_base_s: float = 0.5,
        max_wait_s: float = 900.0,
        sleep: Callable[[float], None] = time.sleep,
        user_agent: str = "changeproof",
        error_mapper: ErrorMapper | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth = auth
        self._client = httpx.Client(
            transport=transport,
            timeout=timeout_s,
            follow_redirects=True,
            headers={"User-Agent": user_agent, "Accept": "application/vnd.github+json"},
        )
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.max_wait_s = max_wait_s
        self._sleep = sleep
        self._map_error = error_mapper
        self._rng = rng or random.Random()
        self.stats = Stats()

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return self.base_url + "/" + path.lstrip("/")

    # --- core ------------------------------------------------------------------------------

    def _wait(self, seconds: float, why: str) -> None:
        if seconds > self.max_wait_s:
            raise RateLimited(
                f"{why}: the API asks to wait {int(seconds)}s, longer than the "
                f"{int(self.max_wait_s)}s allowed",
                expected="rate limit headroom for this collection",
                hint="run again after the reset, or use a GitHub App (higher limits); "
                "what was collected so far is kept and the next run resumes",
            )
        self.stats.bump("waited_s", seconds)
        self._sleep(max(seconds, 0.0))

    def _backoff(self, attempt: int) -> float:
        # full jitter: uniform in [0, base * 2**attempt]
        return self._rng.uniform(0, self.backoff_base_s * (2**attempt))

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        etag: str | None = None,
        kind: str = "rest",
        expect_json: bool = True,
        accept: str | None = None,
        retries: int | None = None,
    ) -> Response:
        """Send one logical request, retrying transient failures and waiting out limits.

        ``retries`` overrides ``max_retries`` for 5xx/timeouts (GraphQL pages use 1 and halve
        the page instead of hammering a query that is too expensive for the server).
        """
        url = self.url(path)
        max_retries = self.max_retries if retries is None else retries
        graphql = kind.startswith("graphql")
        attempt = 0
        while True:
            headers: dict[str, str] = {}
            token = self._auth() if self._auth else None
            if token:
                headers["Authorization"] = token
            if etag:
                headers["If-None-Match"] = etag
            if accept:
                headers["Accept"] = accept
            content = msgspec.json.encode(json_body) if json_body is not None else None
            if content is not None:
                headers["Content-Type"] = "application/json"
            self.stats.add(kind=kind, graphql=graphql)
            try:
                # params=None, not {}: httpx replaces a URL's query string with the params given,
                # which would turn a followed `Link: rel="next"` URL back into page 1
                resp = self._client.request(
                    method, url, params=params or None, content=content, headers=headers
                )
                body = resp.content
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                if attempt >= max_retries:
                    raise TransientError(
                        f"{method} {url} failed {attempt + 1} times ({type(exc).__name__})",
                        expected="a reachable API",
                        hint="check the network and --api-url; the next run resumes",
                    ) from None
                self.stats.bump("retries")
                self._sleep(self._backoff(attempt))
                attempt += 1
                continue
            status = resp.status_code
            if status == 304:
                self.stats.bump("not_modified")
                return Response(304, resp.headers, b"", url, etag)
            wait = self._limit_wait(resp, body)
            if wait is not None:
                if attempt >= self.max_retries + 5:
                    raise RateLimited(
                        f"{method} {url} is still rate limited after {attempt + 1} attempts",
                        hint="run again later; the next run resumes where this one stopped",
                    )
                self.stats.bump("retries")
                self._wait(wait, f"rate limited on {url}")
                attempt += 1
                continue
            if status in RETRY_STATUSES:
                if attempt >= max_retries:
                    raise TransientError(
                        f"{method} {url} answered HTTP {status} {attempt + 1} times",
                        expected="a healthy API",
                        hint="try again later; the next run resumes where this one stopped",
                    )
                self.stats.bump("retries")
                self._sleep(self._backoff(attempt))
                attempt += 1
                continue
            if status >= 400:
                mapped = self._map_error(resp, url) if self._map_error else None
                if mapped is not None:
                    raise mapped
                raise SourceError(
                    f"{method} {url} answered HTTP {status}: {_message(body)}",
                    hint="run with --verbose for details",
                )
            if expect_json:
                try:
                    msgspec.json.decode(body)
                except msgspec.DecodeError:
                    if _looks_truncated(body, resp.headers):
                        if attempt >= self.max_retries:
                            raise TransientError(
                                f"{method} {url} returned truncated JSON {attempt + 1} times",
                                hint="try again later; the next run resumes",
                            ) from None
                        self.stats.bump("retries")
                        self._sleep(self._backoff(attempt))
                        attempt += 1
                        continue
                    decode_json(body, url)  # raises the clear "not JSON" error
            return Response(status, resp.headers, body, url, resp.headers.get("etag"))

    def download(
        self, path: str, *, kind: str = "rest:download", keep_max_bytes: int = 64 << 20
    ) -> tuple[str, int, bytes | None] | None:
        """Stream a (possibly large, redirected) file: (sha256, size, bytes if small enough).

        None when it does not exist (404/410: e.g. logs past their retention). Transient
        failures are retried like any request.
        """
        import hashlib

        url = self.url(path)
        for attempt in range(self.max_retries + 1):
            headers: dict[str, str] = {}
            token = self._auth() if self._auth else None
            if token:
                headers["Authorization"] = token
            self.stats.add(kind=kind, graphql=False)
            try:
                with self._client.stream("GET", url, headers=headers) as resp:
                    if resp.status_code in (404, 410):
                        return None
                    if resp.status_code in RETRY_STATUSES:
                        raise httpx.RemoteProtocolError(f"HTTP {resp.status_code}")
                    if resp.status_code >= 400:
                        raise SourceError(f"GET {url} answered HTTP {resp.status_code}")
                    h = hashlib.sha256()
                    size = 0
                    kept: list[bytes] | None = []
                    for chunk in resp.iter_bytes():
                        h.update(chunk)
                        size += len(chunk)
                        if kept is not None:
                            kept.append(chunk)
                            if size > keep_max_bytes:
                                kept = None  # too large to keep: the hash is still exact
                    return h.hexdigest(), size, b"".join(kept) if kept is not None else None
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError):
                if attempt >= self.max_retries:
                    raise TransientError(
                        f"GET {url} failed {attempt + 1} times",
                        hint="try again later; the next run resumes",
                    ) from None
                self.stats.bump("retries")
                self._sleep(self._backoff(attempt))
        return None

    def _limit_wait(self, resp: httpx.Response, body: bytes) -> float | None:
        """Seconds to wait when the response is a (primary or secondary) rate-limit refusal."""
        status = resp.status_code
        if status not in (403, 429):
            return None
        h = resp.headers
        text = body[:2000].decode("utf-8", "replace").lower()
        retry_after = h.get("retry-after")
        if retry_after is not None:
            try:
                return float(retry_after)
            except ValueError:
                return 60.0
        if any(m in text for m in SECONDARY_MARKERS):
            return 60.0
        if h.get("x-ratelimit-remaining") == "0":
            reset = h.get("x-ratelimit-reset")
            now = time.time()
            try:
                return max(float(reset) - now, 0.0) + 1.0 if reset else 60.0
            except ValueError:
                return 60.0
        if status == 429:
            return 60.0
        return None

    # --- helpers ---------------------------------------------------------------------------

    def get_json(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw).json()

    def paginate(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        per_page: int = 100,
        item_key: str | None = None,
        max_pages: int | None = None,
        kind: str = "rest",
    ) -> Iterator[tuple[Response, list[Any]]]:
        """Follow REST ``Link: rel="next"`` pages; yields (response, items of that page).

        ``item_key`` names the list inside an object body (``{"total_count", "workflow_runs"}``).
        Reusable by any REST collector (e.g. Dependabot alerts).
        """
        q: dict[str, Any] | None = {"per_page": per_page, **(params or {})}
        url: str | None = path
        pages = 0
        while url is not None:
            resp = self.request("GET", url, params=q, kind=kind)
            data = resp.json()
            items = data.get(item_key, []) if item_key and isinstance(data, dict) else data
            if not isinstance(items, list):
                raise SourceError(
                    f"{resp.url} did not return a list",
                    expected="a paginated JSON array",
                )
            yield resp, items
            pages += 1
            if max_pages is not None and pages >= max_pages:
                return
            nxt = next_link(resp.headers.get("link"))
            url = None if nxt == resp.url else nxt
            q = None  # the next link carries the query string (an empty dict would drop it)

    def graphql(
        self,
        url: str,
        query: str,
        variables: Mapping[str, Any],
        *,
        kind: str,
        retries: int | None = None,
    ) -> Any:
        """POST one GraphQL query; returns the parsed body (errors are the caller's to judge)."""
        resp = self.request(
            "POST",
            url,
            json_body={"query": query, "variables": dict(variables)},
            kind=kind,
            retries=retries,
        )
        data = resp.json()
        if isinstance(data, dict):
            rl = (data.get("data") or {}).get("rateLimit") if data.get("data") else None
            if isinstance(rl, dict) and isinstance(rl.get("cost"), int):
                self.stats.bump("points", rl["cost"])
                remaining = rl.get("remaining")
                if isinstance(remaining, int) and remaining < rl["cost"] * 2:
                    reset = rl.get("resetAt")
                    if isinstance(reset, str):
                        from datetime import datetime

                        delay = datetime.fromisoformat(reset).timestamp() - time.time()
                        self._wait(max(delay, 0.0) + 1.0, "GraphQL points exhausted")
        return data


def next_link(link: str | None) -> str | None:
    """The ``rel="next"`` URL of an RFC 8288 Link header, or None."""
    if not link:
        return None
    for part in link.split(","):
        seg = part.strip().split(";")
        if len(seg) < 2:
            continue
        if any(s.strip() in ('rel="next"', "rel=next") for s in seg[1:]):
            return seg[0].strip().strip("<>")
    return None


def _message(body: bytes) -> str:
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body[:120].decode("utf-8", "replace").strip() or "(empty body)"
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])
    return body[:120].decode("utf-8", "replace")


def _looks_truncated(body: bytes, headers: Mapping[str, str]) -> bool:
    """A JSON-typed body that fails to parse was cut off in transit: worth a retry."""
    ctype = headers.get("content-type", "")
    stripped = body.strip()
    return "json" in ctype and stripped[:1] in (b"{", b"[") and stripped[-1:] not in (b"}", b"]")
