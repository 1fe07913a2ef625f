"""``npm audit --json``: npm 7+ (``auditReportVersion: 2``) and npm 6 (``advisories`` map).

npm 7+ rows are per *package*; each ``via`` entry is either an advisory object or the name
of the dependency the problem comes through. Findings are keyed per advisory (the GHSA in
``url``) and the package it is in, never per row, so an advisory shows once.
"""

from __future__ import annotations

import msgspec

from changeproof.errors import InputFormatError
from changeproof.evidence import FindingObservation, SeverityInput
from changeproof.vuln.parsers.base import Data, ParseContext, ParsedScan, decode, probe_keys
from changeproof.vuln.parsers.sniff import sniff

NAME = "npm-audit"


class _Cvss(msgspec.Struct):
    score: float | None = None
    vectorString: str | None = None


class _Via(msgspec.Struct):
    name: str
    url: str = ""
    title: str = ""
    severity: str = ""
    source: int | None = None
    cvss: _Cvss | None = None
    range: str = ""


class _Pkg(msgspec.Struct):
    name: str
    severity: str = ""
    via: list[_Via | str] = []
    fixAvailable: bool | dict[str, object] = False


class _V7(msgspec.Struct):
    auditReportVersion: int
    vulnerabilities: dict[str, _Pkg]


class _V6Finding(msgspec.Struct):
    version: str = ""


class _V6Adv(msgspec.Struct):
    id: int
    module_name: str
    severity: str = ""
    title: str = ""
    url: str = ""
    cves: list[str] = []
    github_advisory_id: str | None = None
    patched_versions: str = ""
    findings: list[_V6Finding] = []
    cvss: _Cvss | None = None


class _V6(msgspec.Struct):
    advisories: dict[str, _V6Adv]


def _ghsa(url: str) -> str | None:
    tail = url.rstrip("/").rsplit("/", 1)[-1]
    return tail if tail.upper().startswith("GHSA-") else None


def _sev(label: str, cvss: _Cvss | None) -> list[SeverityInput]:
    out = [SeverityInput(source="npm", label=label or None)]
    if cvss is not None and (cvss.vectorString or cvss.score):
        out.insert(0, SeverityInput(source="ghsa", vector=cvss.vectorString, score=cvss.score))
    return out


def parse(data: Data, ctx: ParseContext) -> ParsedScan:
    keys = probe_keys(data, file=ctx.file, scanner=NAME, sniff=sniff)
    if "auditReportVersion" in keys:
        return _parse_v7(data, ctx)
    if "advisories" in keys:
        return _parse_v6(data, ctx)
    # neither shape: let the v7 decoder name the missing field and sniff the real scanner
    return _parse_v7(data, ctx)


def _parse_v7(data: Data, ctx: ParseContext) -> ParsedScan:
    doc = decode(data, _V7, file=ctx.file, scanner=NAME, sniff=sniff)
    if doc.auditReportVersion != 2:
        raise InputFormatError(
            f"{ctx.file}: unknown npm audit report version {doc.auditReportVersion} "
            "at JSON path $.auditReportVersion",
            expected="auditReportVersion 2 (npm 7 and later) or the npm 6 `advisories` format",
            hint="upgrade changeproof, or report the new format; nothing from this file was ingested",
        )
    when, src = ctx.settle_time(None)
    target = ctx.target or ""
    seen: set[tuple[str, str]] = set()
    out: list[FindingObservation] = []
    for row in doc.vulnerabilities.values():
        fixed = bool(row.fixAvailable)
        for via in row.via:
            if isinstance(via, str):
                continue  # "comes through <dep>": reported on that dependency's own row
            adv = _ghsa(via.url) or (f"NPM-{via.source}" if via.source is not None else via.url)
            pkg = via.name or row.name
            if not adv or (adv, pkg) in seen:
                continue
            seen.add((adv, pkg))
            out.append(
                ctx.finding(
                    NAME,
                    advisory_id=adv,
                    package=pkg,
                    ecosystem="npm",
                    severities=_sev(via.severity, via.cvss),
                    target=target,
                    manifest="package-lock.json",
                    title=via.title[:300],
                    url=via.url or None,
                    fix_state="fixed" if fixed else "not_fixed",
                )
            )
    return ParsedScan(
        tool="npm",
        tool_version=None,
        format="npm-audit/2",
        scanned_at=when,
        scanned_at_source=src,
        findings=out,
        targets=(target,),
        coverage=(("dependency", target, "npm"),),
    )


def _parse_v6(data: Data, ctx: ParseContext) -> ParsedScan:
    doc = decode(data, _V6, file=ctx.file, scanner=NAME, sniff=sniff)
    when, src = ctx.settle_time(None)
    target = ctx.target or ""
    out: list[FindingObservation] = []
    for adv in doc.advisories.values():
        ident = adv.github_advisory_id or _ghsa(adv.url) or f"NPM-{adv.id}"
        version = adv.findings[0].version if adv.findings else None
        out.append(
            ctx.finding(
                NAME,
                advisory_id=ident,
                aliases=adv.cves,
                package=adv.module_name,
                ecosystem="npm",
                version=version or None,
                severities=_sev(adv.severity, adv.cvss),
                target=target,
                manifest="package-lock.json",
                title=adv.title[:300],
                url=adv.url or None,
                fix_state="fixed" if adv.patched_versions not in ("", "<0.0.0") else "not_fixed",
            )
        )
    return ParsedScan(
        tool="npm",
        tool_version=None,
        format="npm-audit/1",
        scanned_at=when,
        scanned_at_source=src,
        findings=out,
        targets=(target,),
        coverage=(("dependency", target, "npm"),),
    )
