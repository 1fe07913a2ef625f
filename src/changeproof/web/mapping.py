"""Webhook payloads → the same evidence records the API sources write.

What one payload can prove is mapped; what it cannot is not invented. A deployment and its
statuses make a complete :class:`~changeproof.evidence.Deployment` (same id as the GitHub and
GitLab sources, so collect and webhooks update one record). A merged pull request, a push
to a controlled branch, or a protection/ruleset edit cannot make a complete Change or
ProtectionSnapshot from the payload alone (reviews, checks, files and the other protection
layers are not in it): the delivery stays in the locker as raw evidence and its repository
is marked for re-collection. Check, status, review and workflow events are kept as raw
evidence; collect reads them with the change they belong to.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from changeproof.evidence import Actor, Deployment, Provenance, Record
from changeproof.settings import Settings
from changeproof.store import from_us

GITHUB_STATE = {
    "success": "success",
    "failure": "failure",
    "error": "error",
    "inactive": "inactive",
    "in_progress": "in_progress",
    "queued": "queued",
    "pending": "queued",
    "waiting": "queued",
}
GITLAB_STATE = {
    "success": "success",
    "failed": "failure",
    "canceled": "error",
    "running": "in_progress",
    "created": "queued",
    "blocked": "queued",
}
FINAL = ("success", "failure", "error", "inactive")
_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")


@dataclass(frozen=True)
class Mapped:
    records: tuple[Record, ...] = ()
    recollect: bool = False
    note: str = ""


Lookup = Callable[[str], Deployment | None]


def _ts(value: Any) -> datetime | None:
    if not value:
        return None
    text = str(value)
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        pass
    try:  # GitLab: "2021-04-28 21:50:00 +0200"
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S %z").astimezone(UTC)
    except ValueError:
        return None


def _login(node: Any) -> Actor | None:
    if not isinstance(node, dict):
        return None
    login = node.get("login") or node.get("username")
    if not login:
        return None
    kind = "bot" if node.get("type") == "Bot" or str(login).endswith("[bot]") else "user"
    return Actor(login=str(login), name=node.get("name"), type=kind)  # type: ignore[arg-type]


def _merge(
    existing: Deployment | None,
    *,
    status: str,
    at: datetime,
    created: datetime,
) -> tuple[str, datetime, datetime | None]:
    """Combine this status with what earlier deliveries (or collect) stored.

    A protected deployment is created, waits for reviewers, then runs: it starts with its
    first running or final status (as the API sources say), not when it was created.
    """
    running = status not in ("queued",)
    start = at if running else created
    if existing is not None and existing.status not in ("queued",) and running:
        start = min(existing.started_at, at)
    elif existing is not None and not running:
        start = existing.started_at
    finished = at if status in FINAL else None
    if existing is not None and existing.status in FINAL and status not in FINAL:
        # statuses can arrive out of order: a final one is never undone by an older one
        return existing.status, existing.started_at, existing.finished_at
    return status, start, finished


def github(
    event: str, data: dict[str, Any], raw_sha: str, received: datetime, lookup: Lookup,
    settings: Settings,
) -> Mapped:  # fmt: skip
    repo = (data.get("repository") or {}).get("full_name")
    if event in ("deployment", "deployment_status"):
        dep = data["deployment"]
        rid = f"github:{repo}:{dep['id']}"
        created = _ts(dep.get("created_at")) or received
        if event == "deployment":
            status, at = "queued", created
            url = None
        else:
            ds = data["deployment_status"]
            status = GITHUB_STATE.get(str(ds.get("state")).lower(), "queued")
            at = _ts(ds.get("created_at")) or received
            url = ds.get("log_url") or ds.get("target_url") or None
        existing = lookup(rid)
        status, start, finished = _merge(existing, status=status, at=at, created=created)
        rec = Deployment(
            id=rid,
            repo=str(repo),
            environment=str(dep.get("environment") or "unknown"),
            commit_sha=str(dep["sha"]),
            status=status,  # type: ignore[arg-type]
            started_at=start,
            finished_at=finished,
            actor=_login(dep.get("creator")) or (existing.actor if existing else None),
            url=url or (existing.url if existing else None),
            system="github",
            provenance=Provenance(
                source="github-webhook", occurred_at=start, collected_at=received,
                raw_sha256=raw_sha, url=url,
            ),
        )  # fmt: skip
        return Mapped((rec,), note=f"deployment {rid} → {status}")
    if event == "pull_request":
        pr = data.get("pull_request") or {}
        if data.get("action") == "closed" and pr.get("merged"):
            return Mapped(
                recollect=True,
                note=f"{repo}#{pr.get('number')} merged: re-collect for its reviews, checks "
                "and files (the payload does not carry them)",
            )
        return Mapped(note=f"pull request {data.get('action')}: kept as raw evidence")
    if event == "push":
        branch = str(data.get("ref") or "").removeprefix("refs/heads/")
        if branch in settings.controlled_branches:
            forced = " (forced)" if data.get("forced") else ""
            return Mapped(
                recollect=True,
                note=f"push to controlled branch {branch}{forced}: re-collect its history",
            )
        return Mapped(note=f"push to {branch or '?'}: not a controlled branch")
    if event in ("branch_protection_rule", "repository_ruleset"):
        return Mapped(
            recollect=True,
            note=f"{event} {data.get('action')}: protection changed; re-collect the snapshot "
            "(one payload holds one layer, a snapshot needs all)",
        )
    return Mapped(note=f"{event} {data.get('action') or ''}: kept as raw evidence".strip())


def gitlab(
    event: str, data: dict[str, Any], raw_sha: str, received: datetime, lookup: Lookup
) -> Mapped:
    repo = (data.get("project") or {}).get("path_with_namespace")
    if event == "deployment":
        tail = str(data.get("commit_url") or "").rstrip("/").rsplit("/", 1)[-1]
        if not _SHA.fullmatch(tail) or not data.get("environment") or not repo:
            return Mapped(recollect=True, note="deployment without a full commit id: re-collect it")
        rid = f"gitlab:{repo}:{data['deployment_id']}"
        at = _ts(data.get("status_changed_at")) or received
        status = GITLAB_STATE.get(str(data.get("status")), "queued")
        existing = lookup(rid)
        status, start, finished = _merge(existing, status=status, at=at, created=at)
        rec = Deployment(
            id=rid,
            repo=str(repo),
            environment=str(data["environment"]),
            commit_sha=tail,
            status=status,  # type: ignore[arg-type]
            started_at=start,
            finished_at=finished,
            actor=_login(data.get("user")) or (existing.actor if existing else None),
            url=data.get("deployable_url"),
            system="gitlab",
            provenance=Provenance(
                source="gitlab-webhook", occurred_at=start, collected_at=received,
                raw_sha256=raw_sha, url=data.get("deployable_url"),
            ),
        )  # fmt: skip
        return Mapped((rec,), note=f"deployment {rid} → {status}")
    if event == "merge_request":
        attrs = data.get("object_attributes") or {}
        if attrs.get("action") == "merge" or attrs.get("state") == "merged":
            return Mapped(
                recollect=True,
                note=f"{repo}!{attrs.get('iid')} merged: re-collect for its approvals and "
                "pipelines",
            )
        return Mapped(note=f"merge request {attrs.get('action')}: kept as raw evidence")
    return Mapped(note=f"{event}: kept as raw evidence")


def map_delivery(
    source: str, event: str, body: bytes, raw_sha: str, received_us: int, lookup: Lookup,
    settings: Settings, *, data: Any = None,
) -> Mapped:  # fmt: skip
    """``data``: ``body`` already parsed by the caller (a dict); anything else, parsed here."""
    known = (
        event in {"pull_request", "pull_request_review", "push", "check_run", "check_suite",
                  "status", "deployment", "deployment_status", "workflow_run",
                  "branch_protection_rule", "repository_ruleset"}
        if source == "github"
        else event in ("merge_request", "pipeline", "deployment")
    )  # fmt: skip
    if not known:
        return Mapped(note=f"{source} event {event!r} is not used: kept as raw evidence")
    if not isinstance(data, dict):
        data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError("the payload is not a JSON object")
    received = from_us(received_us)
    if source == "github":
        return github(event, data, raw_sha, received, lookup, settings)
    return gitlab(event, data, raw_sha, received, lookup)
