"""OSV-Scanner ``--format json``: ``{results: [{source, packages: [{package, vulnerabilities,
groups}]}]}``.

Each package's ``groups`` cluster the OSV records that are the same problem (ids + aliases):
one finding per group. ``severity[].score`` is a **vector string**; ``max_severity`` is a
computed number or ``""``. ``MAL-*`` (malicious package) advisories are critical.
"""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec

from changeproof.evidence import FindingObservation, SeverityInput
from changeproof.vuln.parsers.base import Data, ParseContext, ParsedScan, decode
from changeproof.vuln.parsers.sniff import sniff

NAME = "osv-scanner"


class _Sev(msgspec.Struct):
    type: str = ""
    score: str = ""


class _Event(msgspec.Struct):
    fixed: str | None = None


class _Range(msgspec.Struct):
    type: str = ""
    events: list[_Event] = []


class _AffPkg(msgspec.Struct):
    name: str = ""
    ecosystem: str = ""


class _Affected(msgspec.Struct):
    package: _AffPkg | None = None
    ranges: list[_Range] = []


class _DbSpecific(msgspec.Struct):
    # GHSA: LOW / MODERATE / HIGH / CRITICAL; other databases put other things here
    severity: Any = None


class _Vuln(msgspec.Struct):
    id: str
    aliases: list[str] | None = None
    summary: str = ""
    severity: list[_Sev] | None = None
    affected: list[_Affected] | None = None
    # only GHSA's severity label is read; the rest (often large) is skipped by the decoder
    database_specific: _DbSpecific | None = None


class _Group(msgspec.Struct):
    ids: list[str]
    aliases: list[str] | None = None
    max_severity: str = ""


class _Pkg(msgspec.Struct):
    name: str = ""
    version: str = ""
    ecosystem: str = ""
    commit: str = ""


class _PkgResult(msgspec.Struct):
    package: _Pkg
    vulnerabilities: list[_Vuln] | None = None
    groups: list[_Group] | None = None


class _SourceInfo(msgspec.Struct):
    path: str = ""
    type: str = ""


class _Result(msgspec.Struct):
    source: _SourceInfo
    packages: list[_PkgResult] | None = None


class _Doc(msgspec.Struct):
    results: list[_Result] | None


def _fixed_versions(v: _Vuln, name: str) -> list[str]:
    out: list[str] = []
    for a in v.affected or ():
        if a.package is not None and a.package.name and a.package.name != name:
            continue
        for r in a.ranges:
            if r.type != "GIT":  # commit ranges: fixes are commit hashes, not versions
                out.extend(e.fixed for e in r.events if e.fixed)
    return out


def parse(data: Data, ctx: ParseContext) -> ParsedScan:
    doc = decode(data, _Doc, file=ctx.file, scanner=NAME, sniff=sniff)
    when, src = ctx.settle_time(None)
    target = ctx.target or ""
    out: list[FindingObservation] = []
    for res in doc.results or ():
        for p in res.packages or ():
            by_id = {v.id: v for v in p.vulnerabilities or ()}
            groups = p.groups or [_Group(ids=[v.id]) for v in p.vulnerabilities or ()]
            name = p.package.name or p.package.commit
            for g in groups:
                vulns = [by_id[i] for i in g.ids if i in by_id]
                ids = {*g.ids, *(g.aliases or ())}
                sev: list[SeverityInput] = []
                fixed: list[str] = []
                title = ""
                for v in vulns:
                    ids.update(v.aliases or ())
                    title = title or v.summary
                    for s in v.severity or ():
                        if s.type.startswith("CVSS") and s.score:
                            sev.append(SeverityInput(source=f"osv:{v.id}", vector=s.score))
                    ds = v.database_specific
                    if ds is not None and isinstance(ds.severity, str) and ds.severity:
                        sev.append(SeverityInput(source=f"osv:{v.id}", label=ds.severity))
                    fixed.extend(_fixed_versions(v, p.package.name))
                if g.max_severity:
                    with contextlib.suppress(ValueError):
                        sev.append(SeverityInput(source="osv-max", score=float(g.max_severity)))
                primary = g.ids[0] if g.ids else ""
                if not primary:
                    continue
                out.append(
                    ctx.finding(
                        NAME,
                        advisory_id=primary,
                        aliases=sorted(ids - {primary}),
                        package=name,
                        ecosystem=p.package.ecosystem or ("git" if p.package.commit else ""),
                        version=p.package.version or p.package.commit or None,
                        severities=sev,
                        target=target,
                        manifest=res.source.path or None,
                        title=title[:300],
                        url=f"https://osv.dev/vulnerability/{primary}",
                        fixed_versions=tuple(sorted(set(fixed))),
                        fix_state="fixed" if fixed else "unknown",
                    )
                )
    return ParsedScan(
        tool="osv-scanner",
        tool_version=None,
        format="osv-scanner-json",
        scanned_at=when,
        scanned_at_source=src,
        findings=out,
        targets=(target,),
        coverage=(("dependency", target, "*"),),
    )
