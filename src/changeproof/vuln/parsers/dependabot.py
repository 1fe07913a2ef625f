"""Dependabot alerts: the REST list (``GET /repos/{o}/{r}/dependabot/alerts``), one alert, a
``dependabot_alert`` webhook delivery, or the GraphQL ``vulnerabilityAlerts`` connection.

An alert list is not a scan: absence from it proves nothing (it may be filtered by state), so
every Dependabot ingest is a *partial* scan. Its explicit states count instead: ``fixed`` means
fixed on the default branch (not deployed); ``dismissed`` is a dismissal, not a risk
acceptance. ``created_at`` is when GitHub raised the alert — a detection time, unlike the
advisory's ``published_at``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from changeproof.evidence import FindingObservation, FindingStatus, SeverityInput
from changeproof.vuln.parsers.base import (
    Data,
    ParseContext,
    ParsedScan,
    decode,
    first_byte,
    parse_time,
    probe_keys,
)
from changeproof.vuln.parsers.sniff import sniff

NAME = "dependabot"


class _Pkg(msgspec.Struct):
    name: str
    ecosystem: str = ""


class _Dependency(msgspec.Struct):
    package: _Pkg
    manifest_path: str = ""
    scope: str | None = None


class _Cvss(msgspec.Struct):
    vector_string: str | None = None
    score: float | None = None


class _CvssSeverities(msgspec.Struct):
    cvss_v3: _Cvss | None = None
    cvss_v4: _Cvss | None = None


class _Ident(msgspec.Struct):
    value: str
    type: str = ""


class _Advisory(msgspec.Struct):
    ghsa_id: str
    cve_id: str | None = None
    summary: str = ""
    severity: str = ""
    identifiers: list[_Ident] = []
    cvss: _Cvss | None = None
    cvss_severities: _CvssSeverities | None = None


class _Patched(msgspec.Struct):
    identifier: str


class _SecVuln(msgspec.Struct):
    severity: str = ""
    first_patched_version: _Patched | None = None


class _Alert(msgspec.Struct):
    number: int
    state: str
    dependency: _Dependency
    security_advisory: _Advisory
    created_at: str
    security_vulnerability: _SecVuln | None = None
    html_url: str | None = None
    fixed_at: str | None = None
    dismissed_at: str | None = None
    dismissed_reason: str | None = None
    auto_dismissed_at: str | None = None
    updated_at: str | None = None


class _Webhook(msgspec.Struct):
    action: str
    alert: _Alert


# --- GraphQL ------------------------------------------------------------------------------


class _GCvss(msgspec.Struct):
    vectorString: str | None = None
    score: float | None = None


class _GCvssSeverities(msgspec.Struct):
    cvssV3: _GCvss | None = None
    cvssV4: _GCvss | None = None


class _GAdvisory(msgspec.Struct):
    identifiers: list[_Ident] = []
    summary: str = ""
    cvss: _GCvss | None = None
    cvssSeverities: _GCvssSeverities | None = None


class _GPkg(msgspec.Struct):
    name: str
    ecosystem: str = ""


class _GSecVuln(msgspec.Struct):
    package: _GPkg
    advisory: _GAdvisory
    severity: str = ""
    firstPatchedVersion: _Patched | None = None


class _GNode(msgspec.Struct):
    securityVulnerability: _GSecVuln
    id: str = ""
    number: int | None = None
    createdAt: str | None = None
    state: str | None = None
    vulnerableManifestPath: str | None = None
    dismissedAt: str | None = None
    dismissReason: str | None = None
    fixedAt: str | None = None


class _GConn(msgspec.Struct):
    nodes: list[_GNode]


class _GRepo(msgspec.Struct):
    vulnerabilityAlerts: _GConn
    name: str = ""


class _GSearch(msgspec.Struct):
    nodes: list[_GRepo]


class _GData(msgspec.Struct):
    repository: _GRepo | None = None
    search: _GSearch | None = None


class _GraphQL(msgspec.Struct):
    data: _GData


_STATE: dict[str, FindingStatus] = {
    "open": "open",
    "fixed": "fixed",
    "dismissed": "dismissed",
    "auto_dismissed": "dismissed",
}


def _inputs(
    v3: tuple[str | None, float | None] | None,
    v4: tuple[str | None, float | None] | None,
    legacy: tuple[str | None, float | None] | None,
    label: str,
) -> list[SeverityInput]:
    out = []
    for src, pair in (("ghsa-v4", v4), ("ghsa-v3", v3), ("ghsa", legacy)):
        if pair is None:
            continue
        vec, score = pair
        # unscored advisories come back as score 0.0 with a null vector: that is not "none"
        if vec or (score is not None and score > 0):
            out.append(SeverityInput(source=src, vector=vec, score=score))
    if label:
        out.append(SeverityInput(source="ghsa", label=label))
    return out


def _alert(ctx: ParseContext, a: _Alert, target: str) -> FindingObservation:
    adv = a.security_advisory
    cs = adv.cvss_severities
    status = _STATE.get(a.state, "open")
    status_at: datetime | None = None
    if status == "fixed":
        status_at = parse_time(a.fixed_at) or parse_time(a.updated_at)
    elif status == "dismissed":
        status_at = parse_time(a.dismissed_at or a.auto_dismissed_at)
    sv = a.security_vulnerability
    patched = sv.first_patched_version.identifier if sv and sv.first_patched_version else None
    return ctx.finding(
        NAME,
        advisory_id=adv.ghsa_id,
        aliases=[adv.cve_id or "", *(i.value for i in adv.identifiers)],
        package=a.dependency.package.name,
        ecosystem=a.dependency.package.ecosystem,
        severities=_inputs(
            (cs.cvss_v3.vector_string, cs.cvss_v3.score) if cs and cs.cvss_v3 else None,
            (cs.cvss_v4.vector_string, cs.cvss_v4.score) if cs and cs.cvss_v4 else None,
            (adv.cvss.vector_string, adv.cvss.score) if adv.cvss else None,
            adv.severity or (sv.severity if sv else ""),
        ),
        target=target,
        manifest=a.dependency.manifest_path or None,
        title=adv.summary[:300],
        url=a.html_url,
        fixed_versions=(patched,) if patched else (),
        fix_state="fixed" if patched else "not_fixed",
        status=status,
        status_reason=a.dismissed_reason if status == "dismissed" else None,
        status_at=status_at,
        alert_created_at=parse_time(a.created_at),
    )


def _graphql_node(ctx: ParseContext, n: _GNode, target: str) -> FindingObservation:
    sv = n.securityVulnerability
    adv = sv.advisory
    ids = [i.value for i in adv.identifiers if i.value]
    ghsa = next((i.value for i in adv.identifiers if i.type == "GHSA"), None) or (
        ids[0] if ids else n.id
    )
    cs = adv.cvssSeverities
    state = (n.state or "OPEN").lower()
    status = _STATE.get(state, "open")
    return ctx.finding(
        NAME,
        advisory_id=ghsa,
        aliases=ids,
        package=sv.package.name,
        ecosystem=sv.package.ecosystem,
        severities=_inputs(
            (cs.cvssV3.vectorString, cs.cvssV3.score) if cs and cs.cvssV3 else None,
            (cs.cvssV4.vectorString, cs.cvssV4.score) if cs and cs.cvssV4 else None,
            (adv.cvss.vectorString, adv.cvss.score) if adv.cvss else None,
            sv.severity,
        ),
        target=target,
        manifest=n.vulnerableManifestPath or None,
        title=adv.summary[:300],
        fixed_versions=(sv.firstPatchedVersion.identifier,) if sv.firstPatchedVersion else (),
        fix_state="fixed" if sv.firstPatchedVersion else "not_fixed",
        status=status,
        status_reason=(n.dismissReason or None) if status == "dismissed" else None,
        status_at=parse_time(n.fixedAt if status == "fixed" else n.dismissedAt),
        alert_created_at=parse_time(n.createdAt),
    )


def parse(data: Data, ctx: ParseContext) -> ParsedScan:
    target = ctx.target or ""
    head = first_byte(data)
    out: list[FindingObservation] = []
    fmt = "dependabot-rest"
    if head == b"[":
        alerts = decode(data, list[_Alert], file=ctx.file, scanner=NAME, sniff=sniff)
        ctx.settle_time(None)
        out = [_alert(ctx, a, target) for a in alerts]
    else:
        keys = probe_keys(data, file=ctx.file, scanner=NAME, sniff=sniff)
        if "action" in keys and "alert" in keys:
            hook = decode(data, _Webhook, file=ctx.file, scanner=NAME, sniff=sniff)
            ctx.settle_time(None)
            out = [_alert(ctx, hook.alert, target)]
            fmt = f"dependabot-webhook/{hook.action}"
        elif "data" in keys:
            gql = decode(data, _GraphQL, file=ctx.file, scanner=NAME, sniff=sniff)
            ctx.settle_time(None)
            nodes: list[_GNode] = []
            if gql.data.repository is not None:
                nodes.extend(gql.data.repository.vulnerabilityAlerts.nodes)
            for repo in gql.data.search.nodes if gql.data.search else ():
                nodes.extend(repo.vulnerabilityAlerts.nodes)
            out = [_graphql_node(ctx, n, target) for n in nodes]
            fmt = "dependabot-graphql"
        else:
            one = decode(data, _Alert, file=ctx.file, scanner=NAME, sniff=sniff)
            ctx.settle_time(None)
            out = [_alert(ctx, one, target)]
    return ParsedScan(
        tool="dependabot",
        tool_version=None,
        format=fmt,
        scanned_at=ctx.when,
        scanned_at_source="option" if ctx.scanned_at is not None else "ingest",
        findings=out,
        targets=(target,),
        coverage=(),  # an alert list vouches for no absence
        partial=True,
        notes=["alert list: absence proves nothing; explicit fixed/dismissed states count"],
    )


def parse_alerts(alerts: list[dict[str, Any]], ctx: ParseContext) -> ParsedScan:
    """For the GitHub source: alerts already fetched from the REST API, as decoded JSON."""
    return parse(msgspec.json.encode(alerts), ctx)
