"""SARIF 2.1.0 from CodeQL, Semgrep, Grype, Trivy, dependency-check and others.

Severity: the rule's ``properties["security-severity"]`` — a number for CodeQL/Grype/Trivy,
a *label* for Semgrep OSS ("CRITICAL", "HIGH"…) — else a result-level ``properties.severity``,
else the SARIF ``level`` (error → high, warning → medium, note → none). Results of rules that
are not security rules (no security-severity, no "security" tag) are quality findings: kept,
but with no patch deadline. Results carrying ``suppressions`` are ``suppressed``.

Identity of a code finding: rule id + file + the location fingerprint GitHub also uses
(``partialFingerprints.primaryLocationLineHash``), else the start line.
"""

from __future__ import annotations

from typing import Any

import msgspec

from changeproof.errors import InputFormatError
from changeproof.evidence import FindingObservation, SeverityInput
from changeproof.vuln.identity import norm_ecosystem
from changeproof.vuln.parsers.base import Data, ParseContext, ParsedScan, decode, parse_time
from changeproof.vuln.parsers.sniff import sniff

NAME = "sarif"


class _Config(msgspec.Struct):
    level: str | None = None


class _Text(msgspec.Struct):
    text: str = ""


class _RuleProps(msgspec.Struct):
    # only these two are read; the rest of the property bag (descriptions…) is skipped
    security_severity: Any = msgspec.field(default=None, name="security-severity")
    tags: Any = None


class _Rule(msgspec.Struct):
    id: str
    defaultConfiguration: _Config | None = None
    properties: _RuleProps | None = None
    shortDescription: _Text | None = None
    helpUri: str | None = None


class _Driver(msgspec.Struct):
    name: str
    version: str | None = None
    semanticVersion: str | None = None
    rules: list[_Rule] | None = None


class _Tool(msgspec.Struct):
    driver: _Driver


class _ArtifactLocation(msgspec.Struct):
    uri: str = ""


class _Region(msgspec.Struct):
    startLine: int | None = None


class _Physical(msgspec.Struct):
    artifactLocation: _ArtifactLocation | None = None
    region: _Region | None = None


class _Location(msgspec.Struct):
    physicalLocation: _Physical | None = None


class _RuleRef(msgspec.Struct):
    id: str | None = None
    index: int | None = None


class _ResultProps(msgspec.Struct):
    severity: Any = None


class _Result(msgspec.Struct):
    ruleId: str | None = None
    ruleIndex: int | None = None
    rule: _RuleRef | None = None
    level: str | None = None
    message: _Text | None = None
    locations: list[_Location] | None = None
    partialFingerprints: dict[str, str] | None = None
    fingerprints: dict[str, str] | None = None
    suppressions: list[msgspec.Raw] | None = None  # only whether there are any counts
    properties: _ResultProps | None = None


class _Invocation(msgspec.Struct):
    endTimeUtc: str | None = None
    executionSuccessful: bool | None = None


class _Run(msgspec.Struct):
    tool: _Tool
    results: list[_Result] | None = None
    invocations: list[_Invocation] | None = None


class _Doc(msgspec.Struct):
    version: str
    runs: list[_Run]


def _rule_of(r: _Result, rules: list[_Rule], by_id: dict[str, _Rule]) -> _Rule | None:
    idx = r.ruleIndex if r.ruleIndex is not None else (r.rule.index if r.rule else None)
    if idx is not None and 0 <= idx < len(rules):
        return rules[idx]
    rid = r.ruleId or (r.rule.id if r.rule else None)
    return by_id.get(rid) if rid else None


def _result_severity(r: _Result) -> Any:
    return r.properties.severity if r.properties is not None else None


def _severities(r: _Result, rule: _Rule | None) -> list[SeverityInput]:
    props = rule.properties if rule else None
    sec = props.security_severity if props is not None else None
    tags = (props.tags if props is not None else None) or []
    res_sev = _result_severity(r)
    out: list[SeverityInput] = []
    if sec is not None and str(sec).strip():
        try:
            out.append(SeverityInput(source="security-severity", score=float(sec)))
        except ValueError:
            out.append(SeverityInput(source="security-severity", label=str(sec)))
    if isinstance(res_sev, str) and res_sev:
        out.append(SeverityInput(source="result-severity", label=res_sev))
    if out:
        return out
    level = r.level or (
        rule.defaultConfiguration.level if rule and rule.defaultConfiguration else None
    )
    level = level or "warning"  # SARIF §3.27.10: the default level is "warning"
    if isinstance(tags, list) and any(str(t).lower() == "security" for t in tags):
        return [SeverityInput(source="sarif-level", label=level)]
    # not a security rule: reported, but no patch deadline
    return [SeverityInput(source=f"sarif-level:{level}:non-security", label="info")]


def _memo_sev(
    memo: dict[tuple[int, str | None], tuple[SeverityInput, ...]], r: _Result, rule: _Rule | None
) -> tuple[SeverityInput, ...]:
    res_sev = _result_severity(r)
    if isinstance(res_sev, str) and res_sev:  # a result-level severity: not shared
        return tuple(_severities(r, rule))
    key = (id(rule), r.level)
    hit = memo.get(key)
    if hit is None:
        hit = memo[key] = tuple(_severities(r, rule))
    return hit


def parse(data: Data, ctx: ParseContext) -> ParsedScan:
    doc = decode(data, _Doc, file=ctx.file, scanner=NAME, sniff=sniff)
    if doc.version != "2.1.0":
        raise InputFormatError(
            f"{ctx.file}: unknown SARIF version {doc.version!r} at JSON path $.version",
            expected="SARIF 2.1.0",
            hint="export SARIF 2.1.0 from the tool; nothing from this file was ingested",
        )
    end_times = [
        t
        for run in doc.runs
        for inv in run.invocations or ()
        if (t := parse_time(inv.endTimeUtc)) is not None
    ]
    when, src = ctx.settle_time(max(end_times) if end_times else None)
    target = ctx.target or ""
    out: list[FindingObservation] = []
    coverage: set[tuple[str, str, str]] = set()
    tools: list[str] = []
    partial = False
    for run in doc.runs:
        drv = run.tool.driver
        tools.append(drv.name)
        eco = norm_ecosystem(drv.name)
        if any(inv.executionSuccessful is False for inv in run.invocations or ()):
            partial = True  # the tool says it did not finish: absence proves nothing
        coverage.add(("code", target, eco))
        rules = drv.rules or []
        by_id = {r.id: r for r in rules}
        seen: set[tuple[str, str]] = set()
        # results of one rule share its severity: compute it once per (rule, level)
        sev_memo: dict[tuple[int, str | None], tuple[SeverityInput, ...]] = {}
        for r in run.results or ():
            rule = _rule_of(r, rules, by_id)
            rid = r.ruleId or (r.rule.id if r.rule else None) or (rule.id if rule else None)
            if not rid:
                continue
            uri, line = "", None
            if r.locations:
                phys = r.locations[0].physicalLocation
                if phys is not None:
                    uri = phys.artifactLocation.uri if phys.artifactLocation else ""
                    line = phys.region.startLine if phys.region else None
            fps = r.partialFingerprints or {}
            fp = fps.get("primaryLocationLineHash") or next(
                iter((r.fingerprints or {}).values()), None
            )
            where = f"{uri}#{fp}" if fp else f"{uri}#L{line}" if line else uri
            if (rid, where) in seen:
                continue
            seen.add((rid, where))
            suppressed = bool(r.suppressions)
            text = (r.message.text if r.message else "") or (
                rule.shortDescription.text if rule and rule.shortDescription else ""
            )
            out.append(
                ctx.finding(
                    NAME,
                    advisory_id=rid,
                    package=where,
                    ecosystem=eco,
                    severities=_memo_sev(sev_memo, r, rule),
                    category="code",
                    target=target,
                    manifest=uri or None,
                    title=text[:300],
                    url=rule.helpUri if rule else None,
                    status="suppressed" if suppressed else "open",
                    status_reason="sarif suppression" if suppressed else None,
                )
            )
    first = doc.runs[0].tool.driver if doc.runs else None
    return ParsedScan(
        tool=", ".join(dict.fromkeys(tools)) or "sarif",
        tool_version=(first.version or first.semanticVersion) if first else None,
        format=f"sarif/{doc.version}",
        scanned_at=when,
        scanned_at_source=src,
        findings=out,
        targets=(target,),
        coverage=tuple(sorted(coverage)),
        notes=[] if doc.runs else ["no runs: covers nothing"],
        partial=partial,
    )
