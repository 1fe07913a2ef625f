"""Grype ``-o json``: ``{matches, ignoredMatches, source, distro, descriptor}``.

``cvss[]`` can list v2 first and the label can disagree with the vector (the Grype golden has
"Low" beside CVSS 8.2), so every vector is scored and the documented order decides.
``relatedVulnerabilities`` supply aliases (the NVD record behind a GHSA) and their CVSS.
``ignoredMatches`` are kept with status ``ignored``: an ignore rule is not a risk acceptance.
"""

from __future__ import annotations

from typing import Any

import msgspec

from changeproof.evidence import FindingObservation, FindingStatus, FixState, SeverityInput
from changeproof.vuln.identity import norm_target
from changeproof.vuln.parsers.base import Data, ParseContext, ParsedScan, decode, parse_time
from changeproof.vuln.parsers.sniff import sniff

NAME = "grype"


class _Metrics(msgspec.Struct):
    baseScore: float | None = None


class _Cvss(msgspec.Struct):
    source: str = ""
    version: str = ""
    vector: str = ""
    metrics: _Metrics | None = None


class _Fix(msgspec.Struct):
    versions: list[str] = []
    state: str = ""


class _Vuln(msgspec.Struct):
    id: str
    namespace: str = ""
    severity: str = ""
    dataSource: str = ""
    cvss: list[_Cvss] = []
    fix: _Fix | None = None
    knownExploited: list[msgspec.Raw] | None = None  # only whether it is empty counts
    description: str = ""


class _Related(msgspec.Struct):
    id: str
    namespace: str = ""
    severity: str = ""
    cvss: list[_Cvss] | None = None


class _Location(msgspec.Struct):
    path: str = ""


class _Artifact(msgspec.Struct):
    name: str
    version: str = ""
    type: str = ""
    locations: list[_Location] = []


class _Match(msgspec.Struct):
    vulnerability: _Vuln
    artifact: _Artifact
    relatedVulnerabilities: list[_Related] = []


class _ImageTarget(msgspec.Struct):
    userInput: Any = None


class _Source(msgspec.Struct):
    type: str = ""
    # any JSON value; an image's target object is decoded for its userInput only (the rest,
    # layers and manifests, can be half the file)
    target: _ImageTarget | str | list[msgspec.Raw] | int | float | bool | None = None


class _Descriptor(msgspec.Struct):
    name: str
    version: str = ""
    timestamp: str = ""


class _Doc(msgspec.Struct):
    matches: list[_Match]
    descriptor: _Descriptor
    source: _Source | None = None
    ignoredMatches: list[_Match] = []


_FIX: dict[str, FixState] = {
    "fixed": "fixed",
    "not-fixed": "not_fixed",
    "wont-fix": "wont_fix",
    "unknown": "unknown",
}
_OS = ("deb", "rpm", "apk")


def _cvss_inputs(items: list[_Cvss] | None, default_source: str) -> list[SeverityInput]:
    out = []
    for c in items or ():
        score = c.metrics.baseScore if c.metrics else None
        if c.vector or score:
            out.append(
                SeverityInput(
                    source=c.source or default_source, vector=c.vector or None, score=score
                )
            )
    return out


def _target(src: _Source | None) -> tuple[str, bool]:
    if src is None:
        return "", False
    t = src.target
    if src.type == "image" and isinstance(t, _ImageTarget):
        return norm_target(str(t.userInput or ""), image=True), True
    if isinstance(t, str) and src.type not in ("directory", "dir", "file", "unknown"):
        return norm_target(t), False
    return "", False


def parse(data: Data, ctx: ParseContext) -> ParsedScan:
    doc = decode(data, _Doc, file=ctx.file, scanner=NAME, sniff=sniff)
    when, src = ctx.settle_time(parse_time(doc.descriptor.timestamp))
    target, image = _target(doc.source)
    if ctx.target is not None:
        target = ctx.target
    out: list[FindingObservation] = []
    seen: set[tuple[str, str, str]] = set()
    for status, matches in (("open", doc.matches), ("ignored", doc.ignoredMatches)):
        st: FindingStatus = "open" if status == "open" else "ignored"
        for m in matches:
            v, a = m.vulnerability, m.artifact
            key = (v.id, a.name, a.type)
            if key in seen:
                continue  # one package at several paths is one finding
            seen.add(key)
            sev = _cvss_inputs(v.cvss, v.namespace or "grype")
            for r in m.relatedVulnerabilities:
                sev.extend(_cvss_inputs(r.cvss, r.namespace or "related"))
            if v.severity and v.severity.lower() != "unknown":
                sev.append(SeverityInput(source=v.namespace or "grype", label=v.severity))
            fix = v.fix or _Fix()
            manifest = None
            if a.type not in _OS and a.locations:
                manifest = a.locations[0].path or None
            out.append(
                ctx.finding(
                    NAME,
                    advisory_id=v.id,
                    aliases=[r.id for r in m.relatedVulnerabilities],
                    package=a.name,
                    ecosystem=a.type,
                    version=a.version or None,
                    severities=sev,
                    target=target,
                    manifest=manifest,
                    url=v.dataSource or None,
                    fixed_versions=tuple(fix.versions),
                    fix_state=_FIX.get(fix.state, "fixed" if fix.versions else "unknown"),
                    known_exploited=bool(v.knownExploited),
                    status=st,
                    status_reason="grype ignore rule" if st == "ignored" else None,
                )
            )
    return ParsedScan(
        tool=doc.descriptor.name or "grype",
        tool_version=doc.descriptor.version or None,
        format="grype-json",
        scanned_at=when,
        scanned_at_source=src,
        findings=out,
        targets=(target,),
        coverage=(("dependency", target, "*"),),
        notes=["image scan"] if image else [],
    )
