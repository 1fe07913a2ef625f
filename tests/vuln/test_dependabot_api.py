"""Dependabot alerts through the real HTTP client (httpx MockTransport serving GitHub's own
REST example, split over two pages) into the store."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httpx

from changeproof.evidence import Scan, ScanFindings
from changeproof.locker import Signer
from changeproof.settings import Settings
from changeproof.sources.http import HttpClient
from changeproof.store import Store
from changeproof.vuln.dependabot_api import collect_dependabot
from tests.vuln.corpus import OPENAPI

API = "https://api.github.com"


def test_alerts_paginated_and_ingested(tmp_path: Path) -> None:
    alerts = json.loads((OPENAPI / "dependabot-alerts-for-repository.json").read_text())["value"]
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        assert request.url.path == "/repos/acme/api/dependabot/alerts"
        if request.url.params.get("after") == "c1":
            return httpx.Response(200, json=alerts[1:])
        assert request.url.params["state"] == "open,fixed,dismissed,auto_dismissed"
        nxt = f'<{API}/repos/acme/api/dependabot/alerts?per_page=1&after=c1>; rel="next"'
        return httpx.Response(200, json=alerts[:1], headers={"link": nxt})

    client = HttpClient(API, transport=httpx.MockTransport(handler), sleep=lambda _s: None)
    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    signer = Signer.generate(tmp_path / "keys")
    now = datetime(2026, 3, 1, tzinfo=UTC)
    try:
        (res,) = collect_dependabot(store, signer, client, ["acme/api"], Settings(), now)
        assert len(seen) == 2 and res.findings == 2 and res.partial
        (scan,) = store.records(Scan)
        assert scan.partial and scan.coverage == () and scan.repo == "acme/api"
        (batch,) = store.records(ScanFindings)
        by_pkg = {f.package: f for f in batch.findings}
        assert by_pkg["django"].status == "dismissed" and by_pkg["ansible"].tier == "high"
    finally:
        client.close()
        store.close()
