"""The package's pages in a real headless Chromium: no console error, no failed or external
request, and the charts are inline SVG. Uses the system's /usr/bin/chromium through Playwright
(never `playwright install`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.audit.conftest import AuditFn

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


def browse(pages: list[Path], inspect: Any = None) -> tuple[list[str], list[str]]:
    """Open each page; return (console errors/warnings, page errors and failed requests; URLs)."""
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page()
            page.on(
                "console",
                lambda m: (
                    problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning")
                    else None
                ),
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.on("request", lambda r: requests.append(r.url))
            for p in pages:
                page.goto(p.as_uri(), wait_until="load")
                if inspect is not None:
                    inspect(p, page)
        finally:
            browser.close()
    return problems, requests


def test_pages_open_without_console_errors(audit: AuditFn) -> None:
    res = audit(select=("acme/api#7", "acme/api#10", "acme/api#21", "acme/tool#1"), seed=None)
    pages = [res.out / "index.html", *sorted((res.out / "changes").glob("*.html"))]
    assert len(pages) == 5

    def inspect(p: Path, page: Any) -> None:
        assert page.title()
        if p.name == "index.html":
            assert page.locator("svg").count() == 3  # months, population, sample
            assert page.locator("#worksheet").count() == 1
            hrefs = page.eval_on_selector_all(
                "a[href^='changes/']", "els => els.map(e => e.getAttribute('href'))"
            )
            assert len(set(hrefs)) == 4
        else:
            assert page.locator("h2", has_text="Approvals").count() == 1

    problems, requests = browse(pages, inspect)
    assert not problems, problems
    assert requests and all(u.startswith("file://") for u in requests), requests


def test_the_check_catches_errors_and_outside_requests(audit: AuditFn) -> None:
    """The same harness on a page that breaks the rules reports it (the test above can fail)."""
    res = audit(select=("acme/api#7",), seed=None)
    index = res.out / "index.html"
    html = index.read_text()
    index.write_text(
        html.replace(
            "</body>",
            '<img src="https://cdn.example.invalid/x.png"><script>undefinedCall()</script></body>',
        )
    )
    problems, _ = browse([index])
    assert any("Content Security Policy" in p or "cdn.example.invalid" in p for p in problems), (
        problems
    )
