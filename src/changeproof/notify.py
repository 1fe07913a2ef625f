"""Reminders to a Slack incoming webhook and/or a generic JSON webhook.

Delivery is best effort with a hard time bound: each message is retried with exponential
backoff on connection errors, timeouts, 429 and 5xx, but never past ``deadline_s`` in total,
and nothing here raises — a notification can never block or fail a deployment. Every attempt's
outcome comes back as a :class:`Delivery` so callers can report it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from changeproof.settings import Settings

if TYPE_CHECKING:
    import httpx

    from changeproof.controls.emergency import Clock
    from changeproof.evidence import Emergency

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Delivery:
    target: str  # "slack" | "webhook"
    url: str
    ok: bool
    attempts: int
    status: int | None = None
    error: str | None = None


def _redact(url: str) -> str:
    """Webhook URLs are secrets (the path is the credential): show scheme and host only."""
    try:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://{rest.split('/', 1)[0]}/…"
    except ValueError:
        return "(webhook)"


def post_json(
    url: str,
    payload: dict[str, Any],
    *,
    target: str,
    transport: httpx.BaseTransport | None = None,
    deadline_s: float = 10.0,
    max_attempts: int = 5,
    base_delay_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Delivery:
    """POST ``payload``; retry transient failures with backoff within ``deadline_s``."""
    import httpx

    start = clock()
    attempts = 0
    status: int | None = None
    error: str | None = None
    shown = _redact(url)
    try:
        client = httpx.Client(transport=transport, follow_redirects=False)
    except Exception as exc:  # a broken proxy setting must not break the caller
        return Delivery(target, shown, False, 0, None, f"{type(exc).__name__}: {exc}")
    with client:
        while attempts < max_attempts:
            remaining = deadline_s - (clock() - start)
            if remaining <= 0:
                error = error or "deadline reached"
                break
            attempts += 1
            retry_after: float | None = None
            try:
                resp = client.post(url, json=payload, timeout=min(remaining, 5.0))
                status = resp.status_code
                if 200 <= status < 300:
                    return Delivery(target, shown, True, attempts, status)
                error = f"HTTP {status}"
                if status not in RETRY_STATUSES:
                    break
                ra = resp.headers.get("retry-after")
                if ra and ra.strip().isdigit():
                    retry_after = float(ra.strip())
            except httpx.HTTPError as exc:
                status = None
                error = f"{type(exc).__name__}: {exc}"
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                break
            delay = base_delay_s * 2 ** (attempts - 1)
            if retry_after is not None:
                delay = max(delay, retry_after)
            remaining = deadline_s - (clock() - start)
            if attempts >= max_attempts or delay >= remaining:
                break
            sleep(delay)
    return Delivery(target, shown, False, attempts, status, error)


def _targets(settings: Settings) -> list[tuple[str, str]]:
    e = settings.emergency
    out = []
    if e.slack_webhook_url:
        out.append(("slack", e.slack_webhook_url))
    if e.webhook_url:
        out.append(("webhook", e.webhook_url))
    return out


def clock_line(c: Clock) -> str:
    e = c.emergency
    when = (
        f"overdue by {-c.hours_left:.1f} h"
        if c.status == "overdue"
        else f"due in {c.hours_left:.1f} h"
    )
    return (
        f"{e.id} ({e.repo}, incident {e.incident}, subject {e.subject}): retro review {when} "
        f"(due {c.due_at.isoformat()})"
    )


def clock_json(c: Clock) -> dict[str, Any]:
    e = c.emergency
    return {
        "id": e.id,
        "repo": e.repo,
        "subject": e.subject,
        "commit": e.commit_sha,
        "incident": e.incident,
        "approver": e.approver.login or e.approver.email or e.approver.name,
        "declared_at": e.declared_at.isoformat(),
        "due_at": c.due_at.isoformat(),
        "status": c.status,
        "hours_left": round(c.hours_left, 2),
        "reviewed_by": c.reviewed_by,
        "reviewed_at": c.reviewed_at.isoformat() if c.reviewed_at else None,
    }


def _send_all(
    settings: Settings,
    slack_text: str,
    body: dict[str, Any],
    *,
    deadline_s: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
    **kw: Any,
) -> list[Delivery]:
    """Every configured target, within one total time budget (``deadline_s``)."""
    out = []
    end = clock() + deadline_s
    for target, url in _targets(settings):
        payload = {"text": slack_text} if target == "slack" else body
        left = max(0.0, end - clock())
        out.append(post_json(url, payload, target=target, deadline_s=left, clock=clock, **kw))
    return out


def notify_clocks(
    clocks: Iterable[Clock], settings: Settings, now: datetime | None = None, **kw: Any
) -> list[Delivery]:
    """Send the overdue and nearly-due retro-review clocks (nothing when none are)."""
    due = [c for c in clocks if c.status in ("overdue", "due_soon")]
    if not due:
        return []
    due.sort(key=lambda c: c.due_at)
    n_over = sum(1 for c in due if c.status == "overdue")
    head = (
        f":rotating_light: changeproof: {n_over} emergency retro review(s) overdue, "
        f"{len(due) - n_over} due soon"
    )
    text = "\n".join([head, *(f"• {clock_line(c)}" for c in due)])
    body = {
        "type": "changeproof.emergency.reminder/v1",
        "sent_at": (now or datetime.now(UTC)).isoformat(),
        "emergencies": [clock_json(c) for c in due],
    }
    return _send_all(settings, text, body, **kw)


def notify_opened(e: Emergency, due: datetime, settings: Settings, **kw: Any) -> list[Delivery]:
    """Tell the channel an emergency was declared and when its retro review is due."""
    text = (
        f":rotating_light: changeproof: emergency {e.id} declared for {e.repo} "
        f"({e.subject}, incident {e.incident}), approved by "
        f"{e.approver.login or e.approver.email}; independent retro review due "
        f"{due.isoformat()}"
    )
    body = {
        "type": "changeproof.emergency.declared/v1",
        "id": e.id,
        "repo": e.repo,
        "subject": e.subject,
        "commit": e.commit_sha,
        "incident": e.incident,
        "approver": e.approver.login or e.approver.email,
        "declared_at": e.declared_at.isoformat(),
        "due_at": due.isoformat(),
        "covers": list(e.covers),
    }
    return _send_all(settings, text, body, **kw)
