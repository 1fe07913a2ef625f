"""Dependabot alerts from the GitHub REST API (``GET /repos/{owner}/{repo}/dependabot/alerts``).

Every state is fetched (open, fixed, dismissed, auto-dismissed): the explicit states are the
evidence (a fix on the default branch, a dismissal and its reason), and absence from the list
proves nothing — the ingest is a partial scan like any Dependabot input. The pages of one
repository are joined into one JSON array, which is the raw evidence kept in the locker.
All repositories are fetched before anything is written, then written in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from changeproof.settings import Settings
from changeproof.vuln.ingest import FileResult, ingest_bytes

STATES = "open,fixed,dismissed,auto_dismissed"


def fetch_alerts(client: Any, repo: str, *, per_page: int = 100) -> tuple[str, bytes]:
    """(API URL, every alert of ``repo`` as one JSON array)."""
    path = f"/repos/{repo}/dependabot/alerts"
    items: list[Any] = []
    for _resp, page in client.paginate(
        path, params={"state": STATES}, per_page=per_page, kind="dependabot_alerts"
    ):
        items.extend(page)
    return client.url(path), msgspec.json.encode(items)


def collect_dependabot(
    store: Any,
    signer: Any,
    client: Any,
    repos: Sequence[str],
    settings: Settings,
    now: datetime,
) -> list[FileResult]:
    from changeproof.locker import Locker

    fetched = [(repo, *fetch_alerts(client, repo)) for repo in repos]
    with store.writer(Locker(signer)) as w:
        return [
            ingest_bytes(w, "dependabot", data, file=url, repo=repo, now=now, settings=settings)
            for repo, url, data in fetched
        ]
