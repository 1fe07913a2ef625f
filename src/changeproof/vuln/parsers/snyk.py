"""Snyk ``test --json``: one project object, or a list of them with ``--all-projects``.

A vulnerability appears once per dependency path (``from``); it is one finding per advisory
and package. ``cvssScore``/``CVSSv3`` can be null (label then). ``filtered.ignore`` holds
Snyk-ignored findings: kept with status ``ignored`` (not a risk acceptance: no expiry).
"""

from __future__ import annotations

import msgspec

from changeproof.evidence import FindingObservation, FindingStatus, SeverityInput
from changeproof.vuln.identity import norm_target
from changeproof.vuln.parsers.base import Data, ParseContext, ParsedScan, decode
from changeproof.vuln.parsers.sniff import sniff

NAME = "snyk"


class _Vuln(msgspec.Struct):
    id: str
    packageName: str
    title: str = ""
    severity: str = ""
    cvssScore: float | None = None
    CVSSv3: str | None = None
    identifiers: dict[str, list[str]] | None = None
    version: str = ""
    fixedIn: list[str] | None = None
    isUpgradable: bool = False
    isPatchable: bool = False


class _Filtered(msgspec.Struct):
    ignore: list[_Vuln] = []


class _Project(msgspec.Struct):
    vulnerabilities: list[_Vuln]
    packageManager: str = ""
    projectName: str = ""
    displayTargetFile: str | None = None
    filtered: _Filtered | None = None


def parse(data: Data, ctx: ParseContext) -> ParsedScan:
    doc = decode(data, _Project | list[_Project], file=ctx.file, scanner=NAME, sniff=sniff)  # type: ignore[arg-type]
    projects: list[_Project] = doc if isinstance(doc, list) else [doc]
    when, src = ctx.settle_time(None)
    out: list[FindingObservation] = []
    targets: set[str] = set()
    coverage: set[tuple[str, str, str]] = set()
    from changeproof.vuln.identity import norm_ecosystem

    for p in projects:
        if ctx.target is not None:
            target = ctx.target
        elif p.projectName.startswith("docker-image|"):
            target = norm_target(p.projectName.split("|", 1)[1], image=True)
        else:
            target = ""
        targets.add(target)
        eco = p.packageManager
        coverage.add(("dependency", target, norm_ecosystem(eco) or "*"))
        seen: set[tuple[str, str]] = set()
        ignored = p.filtered.ignore if p.filtered else []
        for status, vulns in (("open", p.vulnerabilities), ("ignored", ignored)):
            st: FindingStatus = "open" if status == "open" else "ignored"
            for v in vulns:
                if (v.id, v.packageName) in seen:
                    continue
                seen.add((v.id, v.packageName))
                aliases = [
                    a
                    for kind, vals in (v.identifiers or {}).items()
                    if kind not in ("CWE",)
                    for a in vals
                ]
                sev = [SeverityInput(source="snyk", vector=v.CVSSv3, score=v.cvssScore)]
                if v.severity:
                    sev.append(SeverityInput(source="snyk", label=v.severity))
                out.append(
                    ctx.finding(
                        NAME,
                        advisory_id=v.id,
                        aliases=aliases,
                        package=v.packageName,
                        ecosystem=eco,
                        version=v.version or None,
                        severities=sev,
                        target=target,
                        manifest=(p.displayTargetFile or "").replace("\\", "/") or None,
                        title=v.title[:300],
                        url=f"https://security.snyk.io/vuln/{v.id}",
                        fixed_versions=tuple(v.fixedIn or ()),
                        fix_state="fixed" if v.fixedIn or v.isUpgradable else "not_fixed",
                        status=st,
                        status_reason="snyk ignore" if st == "ignored" else None,
                    )
                )
    return ParsedScan(
        tool="snyk",
        tool_version=None,
        format="snyk-test-json",
        scanned_at=when,
        scanned_at_source=src,
        findings=out,
        targets=tuple(sorted(targets)),
        coverage=tuple(sorted(coverage)),
    )
