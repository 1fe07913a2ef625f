"""Parsing times and periods given on the command line, with explicit time zones."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, tzinfo

from changeproof.errors import UsageError


def zone(name: str | None) -> tzinfo:
    if not name or name.upper() == "UTC":
        return UTC
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(
            f"unknown time zone {name!r}",
            expected="an IANA zone name such as Europe/Berlin or America/New_York, or UTC",
        ) from None


def parse_instant(
    text: str, tz: tzinfo = UTC, *, end_of_day: bool = False, what: str = "time"
) -> datetime:
    """ISO date or datetime → aware UTC datetime. A bare date is its midnight in ``tz``
    (or the next midnight when ``end_of_day``, so a period's end date is inclusive)."""
    t = text.strip()
    try:
        if len(t) == 10:
            d = date.fromisoformat(t)
            start = datetime(d.year, d.month, d.day, tzinfo=tz)
            return (start + timedelta(days=1) if end_of_day else start).astimezone(UTC)
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"malformed {what} {text!r}",
            expected="an ISO 8601 date or date-time, e.g. 2026-01-31 or 2026-01-31T17:00:00Z",
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    return dt.astimezone(UTC)


def parse_period(text: str, tz: tzinfo = UTC) -> tuple[datetime | None, datetime | None]:
    if ".." not in text:
        raise UsageError(
            f"malformed period {text!r}",
            expected="START..END with ISO dates, e.g. 2026-01-01..2026-06-30 (either side may be empty)",
        )
    a, b = text.split("..", 1)
    start = parse_instant(a, tz, what="period start") if a.strip() else None
    end = parse_instant(b, tz, end_of_day=True, what="period end") if b.strip() else None
    if start and end and end <= start:
        raise UsageError(f"the period {text!r} ends before it starts")
    return start, end
