"""The dashboard in real headless Chromium (Debian's /usr/bin/chromium through Playwright's
executable_path; never `playwright install`): sign in, open a failing change, read its
reasons, download an audit package. Screenshots are saved in the test's tmp dir."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from changeproof.audit.verify import verify_package
from tests.web.conftest import Server

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs the Debian chromium package at /usr/bin/chromium (apt-get install chromium); CI installs it",
)


def _audit(server: Server) -> str:
    with server.client("admin") as c:
        r = c.post("/api/v1/audits", json={"period": "2026-01-01..2026-01-31", "sample": 5,
                                           "seed": "browser"})  # fmt: skip
        assert r.status_code == 202, r.text
        aid = str(r.json()["id"])
        deadline = time.monotonic() + 300
        while c.get(f"/api/v1/audits/{aid}").json()["status"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.5)
    return aid


def test_sign_in_open_a_failing_change_and_download_a_package(
    demo_server: Server, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    aid = _audit(demo_server)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    problems: list[str] = []
    foreign: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            ctx = browser.new_context(
                accept_downloads=True, viewport={"width": 1280, "height": 900}
            )
            page = ctx.new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))

            def on_request(req: Any) -> None:
                if not req.url.startswith(demo_server.url):
                    foreign.append(req.url)

            page.on("request", on_request)

            # signed out: every page sends us to the sign-in form
            page.goto(f"{demo_server.url}/changes")
            assert "/signin" in page.url
            page.fill("#token", "cpt_not-a-token")
            page.click("button[type=submit]")
            assert page.locator("[role=alert]").inner_text().startswith("That token is not valid")
            page.screenshot(path=str(shots / "signin-refused.png"))
            # the refused sign-in answers 401, which Chromium logs; nothing else may error
            assert all("401" in p for p in problems)
            problems.clear()

            page.fill("#token", demo_server.tokens["read"])
            page.click("button[type=submit]")
            page.wait_for_url(f"{demo_server.url}/changes")
            cookie = next(c for c in ctx.cookies() if c["name"] == "changeproof_token")
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

            page.goto(f"{demo_server.url}/")
            cards = page.locator(".card[data-control]")
            assert cards.count() >= 10
            assert page.locator(".card svg.spark").count() == cards.count()
            page.screenshot(path=str(shots / "posture.png"), full_page=True)

            page.goto(f"{demo_server.url}/changes")
            page.select_option("select[name=outcome]", "fail")
            page.click("form.filters button")
            page.wait_for_url("**outcome=fail**")
            page.screenshot(path=str(shots / "changes-failing.png"))
            first = page.locator("td.mono a").first
            change_id = first.inner_text()
            first.click()
            page.wait_for_load_state()
            assert change_id in page.locator("p.sub.mono").inner_text()
            failing = page.locator("tr.result[data-outcome=fail]")
            assert failing.count() >= 1
            reasons = failing.first.locator("ul.reasons li")
            assert reasons.count() >= 1 and reasons.first.inner_text().strip()
            page.screenshot(path=str(shots / "change.png"), full_page=True)

            for name in ("emergencies", "patching", "exceptions", "collection"):
                page.goto(f"{demo_server.url}/{name}")
                assert page.locator("h1").count() == 1
                page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
            assert page.locator("table").first.locator("tr").count() >= 2

            page.goto(f"{demo_server.url}/audits")
            page.screenshot(path=str(shots / "audits.png"))
            link = page.locator(f"a.download[href='/audits/{aid}/package.zip']")
            with page.expect_download() as dl:
                link.click()
            target = tmp_path / "package.zip"
            dl.value.save_as(str(target))

            page.click("header form button")  # sign out
            page.wait_for_url("**/signin")
            page.goto(f"{demo_server.url}/changes")  # the session is gone
            assert "/signin" in page.url
            assert not [c for c in ctx.cookies() if c["name"] == "changeproof_token"]
        finally:
            browser.close()
    assert zipfile.is_zipfile(target)
    assert verify_package(target, trusted_key=demo_server.ws.public_key_pem()).ok
    assert problems == []
    assert foreign == []  # nothing fetched from anywhere else (no CDN)
    assert len(list(shots.glob("*.png"))) == 9
