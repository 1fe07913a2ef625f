"""Trivy ``--format json`` (SchemaVersion 2) and ``trivy k8s`` reports.

Vulnerabilities carry per-source CVSS (v2/v3/v4 vectors and scores) beside Trivy's own label,
which follows the distro's rating for OS packages. Misconfigurations (status FAIL) and secrets
become ``config`` and ``secret`` findings. ``not_affected`` entries are not findings.
"""

from __future__ import annotations

import msgspec

from changeproof.errors import InputFormatError
from changeproof.evidence import FindingObservation, FixState, SeverityInput
from changeproof.vuln.identity import norm_target
from changeproof.vuln.parsers.base import (
    Data,
    ParseContext,
    ParsedScan,
    decode,
    parse_time,
    probe_keys,
)
from changeproof.vuln.parsers.sniff import sniff

NAME = "trivy"


class _Cvss(msgspec.Struct):
    V2Vector: str = ""
    V3Vector: str = ""
    V40Vector: str = ""
    V2Score: float | None = None
    V3Score: float | None = None
    V40Score: float | None = None


class _Vuln(msgspec.Struct):
    VulnerabilityID: str
    PkgName: str
    VendorIDs: list[str] = []
    PkgPath: str = ""
    InstalledVersion: str = ""
    FixedVersion: str = ""
    Status: str = ""
    Severity: str = ""
    SeveritySource: str = ""
    CVSS: dict[str, _Cvss] = {}
    Title: str = ""
    PrimaryURL: str = ""


class _Misconf(msgspec.Struct):
    ID: str
    Title: str = ""
    Severity: str = ""
    Status: str = ""
    PrimaryURL: str = ""


class _Secret(msgspec.Struct):
    RuleID: str
    Title: str = ""
    Severity: str = ""
    StartLine: int | None = None


class _Result(msgspec.Struct):
    Target: str
    Class: str = ""
    Type: str = ""
    Vulnerabilities: list[_Vuln] | None = None
    Misconfigurations: list[_Misconf] | None = None
    Secrets: list[_Secret] | None = None


class _Tool(msgspec.Struct):
    Version: str | None = None


class _Report(msgspec.Struct):
    SchemaVersion: int
    ArtifactName: str = ""
    ArtifactType: str = ""
    CreatedAt: str | None = None
    Results: list[_Result] | None = None
    Trivy: _Tool | None = None


class _K8sResource(msgspec.Struct):
    Namespace: str = ""
    Kind: str = ""
    Name: str = ""
    Results: list[_Result] | None = None


class _K8s(msgspec.Struct):
    ClusterName: str
    Vulnerabilities: list[_K8sResource] | None = None
    Misconfigurations: list[_K8sResource] | None = None


class _Either(msgspec.Struct):
    """Both shapes' fields in one pass (a report and a cluster scan share none): a valid file
    is decoded once, not probed for its keys first. Anything else — a field missing or of
    another type, bad JSON — is decoded the plain way, which names what is wrong."""

    SchemaVersion: int | msgspec.UnsetType = msgspec.UNSET
    ArtifactName: str = ""
    ArtifactType: str = ""
    CreatedAt: str | None = None
    Results: list[_Result] | None = None
    Trivy: _Tool | None = None
    ClusterName: str | msgspec.UnsetType = msgspec.UNSET
    Vulnerabilities: list[_K8sResource] | None = None
    Misconfigurations: list[_K8sResource] | None = None


def _decoded(data: Data, ctx: ParseContext) -> _Report | _K8s:
    """The file as a report or a cluster scan: what probing its keys and decoding that shape
    gives."""
    try:
        e = msgspec.json.decode(data, type=_Either)
    except (msgspec.DecodeError, msgspec.ValidationError):
        e = None
    if e is not None:
        if not isinstance(e.ClusterName, msgspec.UnsetType) and isinstance(
            e.SchemaVersion, msgspec.UnsetType
        ):
            return _K8s(e.ClusterName, e.Vulnerabilities, e.Misconfigurations)
        if not isinstance(e.SchemaVersion, msgspec.UnsetType):
            return _Report(
                e.SchemaVersion, e.ArtifactName, e.ArtifactType, e.CreatedAt, e.Results, e.Trivy
            )
    keys = probe_keys(data, file=ctx.file, scanner=NAME, sniff=sniff)
    if "ClusterName" in keys and "SchemaVersion" not in keys:
        return decode(data, _K8s, file=ctx.file, scanner=NAME, sniff=sniff)
    return decode(data, _Report, file=ctx.file, scanner=NAME, sniff=sniff)


_FIX: dict[str, FixState] = {
    "fixed": "fixed",
    "affected": "not_fixed",
    "fix_deferred": "not_fixed",
    "under_investigation": "unknown",
    "unknown": "unknown",
    "will_not_fix": "wont_fix",
    "end_of_life": "wont_fix",
}
_IMAGE_TYPES = ("container_image", "vm")
_CATEGORY = {
    "os-pkgs": "dependency",
    "lang-pkgs": "dependency",
    "config": "config",
    "secret": "secret",
}


def _severities(v: _Vuln) -> list[SeverityInput]:
    out: list[SeverityInput] = []
    for src, c in v.CVSS.items():
        if c.V40Vector or c.V40Score:
            out.append(SeverityInput(source=src, vector=c.V40Vector or None, score=c.V40Score))
        if c.V3Vector or c.V3Score:
            out.append(SeverityInput(source=src, vector=c.V3Vector or None, score=c.V3Score))
        if c.V2Vector:
            out.append(SeverityInput(source=src, vector=c.V2Vector))
    if v.Severity and v.Severity.upper() != "UNKNOWN":
        out.append(SeverityInput(source=v.SeveritySource or "trivy", label=v.Severity))
    return out


class _Builder:
    def __init__(self, ctx: ParseContext) -> None:
        self.ctx = ctx
        self.out: list[FindingObservation] = []
        self.coverage: set[tuple[str, str, str]] = set()
        self.targets: set[str] = set()
        self.not_affected = 0

    def results(self, results: list[_Result], target: str, image: bool) -> None:
        ctx = self.ctx
        self.targets.add(target)
        for r in results:
            cat = _CATEGORY.get(r.Class, "dependency")
            self.coverage.add((cat, target, "*"))
            manifest = (
                None if r.Class == "os-pkgs" or (image and r.Class != "lang-pkgs") else r.Target
            )
            for v in r.Vulnerabilities or ():
                if v.Status == "not_affected":
                    self.not_affected += 1
                    continue
                self.out.append(
                    ctx.finding(
                        NAME,
                        advisory_id=v.VulnerabilityID,
                        aliases=v.VendorIDs,
                        package=v.PkgName,
                        ecosystem=r.Type,
                        version=v.InstalledVersion or None,
                        severities=_severities(v),
                        target=target,
                        manifest=manifest or (v.PkgPath or None),
                        title=v.Title[:300],
                        url=v.PrimaryURL or None,
                        fixed_versions=tuple(
                            x.strip() for x in v.FixedVersion.split(",") if x.strip()
                        ),
                        fix_state=_FIX.get(v.Status, "fixed" if v.FixedVersion else "unknown"),
                    )
                )
            for m in r.Misconfigurations or ():
                if m.Status and m.Status.upper() != "FAIL":
                    continue
                self.out.append(
                    ctx.finding(
                        NAME,
                        advisory_id=m.ID,
                        package=r.Target,
                        severities=[SeverityInput(source="trivy", label=m.Severity or None)],
                        category="config",
                        target=target,
                        manifest=r.Target,
                        title=m.Title[:300],
                        url=m.PrimaryURL or None,
                    )
                )
            for s in r.Secrets or ():
                self.out.append(
                    ctx.finding(
                        NAME,
                        advisory_id=s.RuleID,
                        package=r.Target,
                        severities=[SeverityInput(source="trivy", label=s.Severity or None)],
                        category="secret",
                        target=target,
                        manifest=r.Target,
                        title=s.Title[:300],
                    )
                )


def parse(data: Data, ctx: ParseContext) -> ParsedScan:
    doc = _decoded(data, ctx)
    if isinstance(doc, _K8s):
        return _parse_k8s(doc, ctx)
    if doc.SchemaVersion != 2:
        raise InputFormatError(
            f"{ctx.file}: unknown Trivy SchemaVersion {doc.SchemaVersion} at JSON path $.SchemaVersion",
            expected="SchemaVersion 2 (trivy --format json since v0.20)",
            hint="re-run with a current Trivy, or upgrade changeproof; nothing from this file was ingested",
        )
    when, src = ctx.settle_time(parse_time(doc.CreatedAt))
    image = doc.ArtifactType in _IMAGE_TYPES
    if ctx.target is not None:
        target = ctx.target
    elif image:
        target = norm_target(doc.ArtifactName, image=True)
    elif doc.ArtifactType in ("filesystem", "repository") or doc.ArtifactName in ("", "."):
        target = ""
    else:
        target = norm_target(doc.ArtifactName)
    b = _Builder(ctx)
    b.results(doc.Results or [], target, image)
    notes = [f"{b.not_affected} not_affected entr(ies) skipped"] if b.not_affected else []
    return ParsedScan(
        tool="trivy",
        tool_version=doc.Trivy.Version if doc.Trivy else None,
        format=f"trivy-json/{doc.SchemaVersion}",
        scanned_at=when,
        scanned_at_source=src,
        findings=b.out,
        targets=tuple(sorted(b.targets)),
        coverage=tuple(sorted(b.coverage)),
        notes=notes,
    )


def _parse_k8s(doc: _K8s, ctx: ParseContext) -> ParsedScan:
    when, src = ctx.settle_time(None)
    b = _Builder(ctx)
    for res in (*(doc.Vulnerabilities or ()), *(doc.Misconfigurations or ())):
        for r in res.Results or ():
            # the workload's image is the target (tags stripped): the same image in two
            # deployments is one finding
            target = ctx.target or (
                norm_target(r.Target, image=True)
                if r.Class == "os-pkgs"
                else f"{res.Namespace}/{res.Kind}/{res.Name}"
            )
            b.results([r], target, r.Class == "os-pkgs")
    return ParsedScan(
        tool="trivy",
        tool_version=None,
        format="trivy-k8s",
        scanned_at=when,
        scanned_at_source=src,
        findings=b.out,
        targets=tuple(sorted(b.targets)),
        coverage=tuple(sorted(b.coverage)),
        notes=[f"cluster {doc.ClusterName}"],
    )
