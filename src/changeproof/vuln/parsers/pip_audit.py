"""pip-audit ``--format json``: ``{dependencies: [...], fixes: [...]}`` or the legacy bare list.

No severity, no CVSS and no dates: findings are unscored (provisional tier, ``needs_triage``)
unless another scanner reports the same advisory through an alias. Packages pip-audit could
not audit (``skip_reason``) are listed in the scan so their absence proves nothing.
"""

from __future__ import annotations

import msgspec

from changeproof.evidence import FindingObservation
from changeproof.vuln.identity import norm_package
from changeproof.vuln.parsers.base import Data, ParseContext, ParsedScan, decode
from changeproof.vuln.parsers.sniff import sniff

NAME = "pip-audit"


class _Vuln(msgspec.Struct):
    id: str
    fix_versions: list[str] = []
    aliases: list[str] = []


class _Dep(msgspec.Struct):
    name: str
    version: str | None = None
    vulns: list[_Vuln] = []
    skip_reason: str | None = None


class _Doc(msgspec.Struct):
    dependencies: list[_Dep]


def parse(data: Data, ctx: ParseContext) -> ParsedScan:
    doc = decode(data, _Doc | list[_Dep], file=ctx.file, scanner=NAME, sniff=sniff)  # type: ignore[arg-type]
    deps: list[_Dep] = doc if isinstance(doc, list) else doc.dependencies
    when, src = ctx.settle_time(None)
    target = ctx.target or ""
    out: list[FindingObservation] = []
    skipped: list[str] = []
    for d in deps:
        if d.skip_reason is not None:
            skipped.append(d.name)
            continue
        for v in d.vulns:
            out.append(
                ctx.finding(
                    NAME,
                    advisory_id=v.id,
                    aliases=v.aliases,
                    package=d.name,
                    ecosystem="pypi",
                    version=d.version,
                    target=target,
                    fixed_versions=tuple(v.fix_versions),
                    fix_state="fixed" if v.fix_versions else "not_fixed",
                    url=f"https://osv.dev/vulnerability/{v.id}",
                )
            )
    notes = [f"{len(skipped)} package(s) could not be audited"] if skipped else []
    return ParsedScan(
        tool="pip-audit",
        tool_version=None,
        format="pip-audit-json/" + ("legacy" if isinstance(doc, list) else "1"),
        scanned_at=when,
        scanned_at_source=src,
        findings=out,
        targets=(target,),
        coverage=(("dependency", target, "pypi"),),
        skipped=tuple(sorted({norm_package(s, "pypi") for s in skipped})),
        notes=notes,
    )
