"""Semgrep's native ``--json`` output: ``{results: [{check_id, path, start, extra}], errors}``.

Severity: ``extra.severity`` ERROR → high, WARNING → medium, INFO → low (Semgrep's own
mapping); newer rules say CRITICAL/HIGH/MEDIUM/LOW directly.
"""

from __future__ import annotations

import msgspec

from changeproof.evidence import FindingObservation, SeverityInput
from changeproof.vuln.parsers.base import Data, ParseContext, ParsedScan, decode
from changeproof.vuln.parsers.sniff import sniff

NAME = "semgrep"

_LEVEL = {"ERROR": "high", "WARNING": "medium", "INFO": "low"}


class _Pos(msgspec.Struct):
    line: int | None = None


class _Extra(msgspec.Struct):
    message: str = ""
    severity: str = ""
    fingerprint: str | None = None
    is_ignored: bool = False


class _Result(msgspec.Struct):
    check_id: str
    path: str
    start: _Pos | None = None
    extra: _Extra | None = None


class _Doc(msgspec.Struct):
    results: list[_Result]
    errors: list[msgspec.Raw]
    version: str | None = None


def parse(data: Data, ctx: ParseContext) -> ParsedScan:
    doc = decode(data, _Doc, file=ctx.file, scanner=NAME, sniff=sniff)
    when, src = ctx.settle_time(None)
    target = ctx.target or ""
    out: list[FindingObservation] = []
    seen: set[tuple[str, str]] = set()
    for r in doc.results:
        extra = r.extra or _Extra()
        fp = (
            extra.fingerprint
            if extra.fingerprint and extra.fingerprint != "requires login"
            else None
        )
        line = r.start.line if r.start else None
        where = f"{r.path}#{fp}" if fp else f"{r.path}#L{line}" if line else r.path
        if (r.check_id, where) in seen:
            continue
        seen.add((r.check_id, where))
        label = _LEVEL.get(extra.severity.upper(), extra.severity.lower()) or None
        out.append(
            ctx.finding(
                NAME,
                advisory_id=r.check_id,
                package=where,
                ecosystem="semgrep",
                severities=[SeverityInput(source="semgrep", label=label)],
                category="code",
                target=target,
                manifest=r.path,
                title=extra.message.strip()[:300],
                status="suppressed" if extra.is_ignored else "open",
            )
        )
    return ParsedScan(
        tool="semgrep",
        tool_version=doc.version,
        format="semgrep-json",
        scanned_at=when,
        scanned_at_source=src,
        findings=out,
        targets=(target,),
        coverage=(("code", target, "semgrep"),),
        # rules that failed to run cannot vouch for absent findings
        partial=bool(doc.errors),
        notes=[f"{len(doc.errors)} semgrep error(s): treated as a partial scan"]
        if doc.errors
        else [],
    )
