"""The REST API over a real server on a copy of the demo organisation's workspace."""

from __future__ import annotations

import time
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from click.testing import CliRunner

from changeproof.audit.verify import verify_package
from changeproof.errors import NotFoundError
from changeproof.evidence import Deployment, ExceptionGrant
from tests.web.conftest import Server


def test_no_token_is_401_bad_token_401_wrong_scope_403(demo_server: Server) -> None:
    with demo_server.client() as c:
        r = c.get("/api/v1/changes")
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"
        assert (
            c.get("/api/v1/changes", headers={"Authorization": "Bearer cpt_nope"}).status_code
            == 401
        )
        assert c.get("/api/v1/health").status_code == 200  # liveness needs no token
    body = {"env": "staging", "repo": "acme/web", "commit": "abc1234"}
    with demo_server.client("read") as c:
        assert c.post("/api/v1/deployments", json=body).status_code == 403
        assert c.post("/api/v1/gate", json={"env": "production", "commit": "x"}).status_code == 403
        assert (
            c.post("/api/v1/audits", json={"period": "2026-01-01..2026-01-31"}).status_code == 403
        )
    with demo_server.client("gate") as c:
        assert c.post("/api/v1/deployments", json=body).status_code == 403
        assert c.get("/api/v1/changes").status_code == 200  # gate ⊇ read
    with demo_server.client("record") as c:
        assert c.post("/api/v1/gate", json={"env": "production", "commit": "x"}).status_code == 403
        assert (
            c.post("/api/v1/audits", json={"period": "2026-01-01..2026-01-31"}).status_code == 403
        )


def test_revoked_token_stops_working(demo_server: Server) -> None:
    from changeproof.cli import main_group

    args = ["--home", str(demo_server.ws.home), "--config", str(demo_server.ws.config_path)]
    runner = CliRunner()
    made = runner.invoke(main_group, [*args, "token", "create", "--scope", "read", "--name", "x",
                                      "--format", "json"])  # fmt: skip
    assert made.exit_code == 0, made.output
    import json

    info = json.loads(made.stdout)
    assert info["token"].startswith("cpt_")
    headers = {"Authorization": f"Bearer {info['token']}"}
    assert httpx.get(f"{demo_server.url}/api/v1/changes", headers=headers).status_code == 200
    listed = runner.invoke(main_group, [*args, "token", "list", "--format", "json"])
    assert info["token"] not in listed.stdout  # only hashes are stored
    assert {"id": info["id"], "scope": "read", "name": "x"}.items() <= next(
        t for t in json.loads(listed.stdout) if t["id"] == info["id"]
    ).items()
    assert runner.invoke(main_group, [*args, "token", "revoke", str(info["id"])]).exit_code == 0
    assert httpx.get(f"{demo_server.url}/api/v1/changes", headers=headers).status_code == 401
    missing = runner.invoke(main_group, [*args, "token", "revoke", "99999"])
    # main() turns a ChangeproofError into its message and exit code 2
    assert isinstance(missing.exception, NotFoundError)
    assert missing.exception.exit_code == 2 and "no API token" in missing.exception.message


def _failing_change(c: httpx.Client) -> dict[str, Any]:
    r = c.get("/api/v1/changes", params={"outcome": "fail", "limit": 5})
    assert r.status_code == 200
    assert r.json()["total"] > 0
    return dict(r.json()["changes"][0])


def test_queries(demo_server: Server) -> None:
    with demo_server.client("read") as c:
        ch = _failing_change(c)
        # "#" starts a URL fragment: ids are sent percent-encoded
        detail = c.get(f"/api/v1/changes/{quote(ch['id'], safe='/')}").json()
        assert detail["outcome"] == "fail"
        failing = [r for r in detail["results"] if r["outcome"] == "fail"]
        assert failing and all(r["reasons"] for r in failing)
        assert c.get("/api/v1/changes/acme/none%231").status_code == 404
        res = c.get("/api/v1/results", params={"outcome": "fail", "limit": 3}).json()
        assert res["total"] >= 1 and len(res["results"]) <= 3
        assert all(r["outcome"] == "fail" for r in res["results"])
        em = c.get("/api/v1/emergencies").json()["emergencies"]
        assert {e["status"] for e in em} <= {"open", "due_soon", "overdue", "closed", "closed_late"}
        assert len(em) == 3
        fi = c.get("/api/v1/findings").json()["findings"]
        assert fi and all("state" in f for f in fi)
        assert c.get("/api/v1/changes", params={"limit": 0}).status_code == 422


def test_record_commands_through_the_api(demo_server: Server) -> None:
    with demo_server.client("read") as c:
        ch = _failing_change(c)
    now = datetime.now(UTC)
    with demo_server.client("record") as c:
        r = c.post("/api/v1/deployments", json={
            "env": "staging", "repo": ch["repo"], "commit": ch["merge_sha"][:10],
            "id": "api-run-1", "actor": "github-actions[bot]",
        })  # fmt: skip
        assert r.status_code == 201, r.text
        assert r.json()["record"]["commit_sha"] == ch["merge_sha"]  # expanded like the CLI does
        bad = c.post("/api/v1/deployments", json={"env": "nowhere", "repo": ch["repo"],
                                                  "commit": ch["merge_sha"]})  # fmt: skip
        assert bad.status_code == 422 and "nowhere" in bad.json()["detail"]
        r = c.post("/api/v1/approvals", json={
            "env": "production", "repo": ch["repo"], "commit": ch["merge_sha"],
            "by": "release-manager",
        })  # fmt: skip
        assert r.status_code == 201, r.text
        r = c.post("/api/v1/emergencies", json={
            "subject": ch["id"], "incident": "INC-9001", "approver": "cto-chris",
            "by": "oncall-olga", "env": "production", "reason": "outage",
        })  # fmt: skip
        assert r.status_code == 201, r.text
        eid = r.json()["record"]["id"]
        r = c.post("/api/v1/reviews", json={"subject": eid, "by": "oncall-lead-lee",
                                            "notes": "looked fine"})  # fmt: skip
        assert r.status_code == 201, r.text
        r = c.post("/api/v1/exceptions", json={
            "control": "CM-REV-1", "subject": ch["id"], "reason": "accepted by the CAB",
            "approver": "ciso", "expires": (now + timedelta(days=30)).isoformat(),
        })  # fmt: skip
        assert r.status_code == 201, r.text
    with demo_server.ws.open_store() as store:
        dep = store.get(Deployment, "api-run-1")
        assert dep is not None and dep[1].environment == "staging"
        grants = [g for _, g in store.iter_records(ExceptionGrant) if g.subject == ch["id"]]
        assert grants and grants[0].approver.login == "ciso"
    with demo_server.client("gate") as c:
        r = c.post("/api/v1/gate", json={"env": "production", "commit": ch["merge_sha"],
                                         "repo": ch["repo"], "actor": "github-actions[bot]"})  # fmt: skip
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["decision"] in ("allow", "deny") and out["record"]["digest"]
        r = c.post("/api/v1/gate", json={"env": "moon", "commit": ch["merge_sha"]})
        assert r.status_code == 422


def test_audit_start_and_download(demo_server: Server, tmp_path: Path) -> None:
    with demo_server.client("admin") as c:
        bad = c.post("/api/v1/audits", json={"period": "2026-01-01.."})
        assert bad.status_code == 422
        r = c.post("/api/v1/audits", json={"period": "2026-01-01..2026-01-31", "sample": 5,
                                           "seed": "api"})  # fmt: skip
        assert r.status_code == 202, r.text
        aid = r.json()["id"]
    with demo_server.client("read") as c:
        deadline = time.monotonic() + 300
        while (s := c.get(f"/api/v1/audits/{aid}").json())["status"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert s["status"] == "done", s
        assert aid in [a["id"] for a in c.get("/api/v1/audits").json()["audits"]]
        z = c.get(f"/api/v1/audits/{aid}/package.zip")
        assert z.status_code == 200 and z.headers["content-type"] == "application/zip"
        assert c.get("/api/v1/audits/nope/package.zip").status_code == 404
    path = tmp_path / "pkg.zip"
    path.write_bytes(z.content)
    assert zipfile.is_zipfile(path)
    rep = verify_package(path, trusted_key=demo_server.ws.public_key_pem())
    assert rep.ok, rep


@pytest.mark.parametrize("scope", ["read", "record", "gate", "admin"])
def test_openapi_is_published_without_a_token(demo_server: Server, scope: str) -> None:
    doc = httpx.get(f"{demo_server.url}/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    paths = set(doc["paths"])
    assert {"/api/v1/deployments", "/api/v1/gate", "/api/v1/changes", "/api/v1/audits",
            "/api/v1/audits/{audit_id}/package.zip"} <= paths  # fmt: skip
    assert not any(p.startswith("/webhooks") for p in paths)
    with demo_server.client(scope) as c:
        assert c.get("/api/v1/health").status_code == 200
