"""Hand-built evidence for lifecycle and control tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from changeproof.evidence import (
    Actor,
    Change,
    Deployment,
    FileChange,
    FindingObservation,
    Provenance,
    RiskAcceptance,
    Scan,
    SeverityTier,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SHA = "a" * 64
REPO = "acme/api"


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def prov(at: datetime) -> Provenance:
    return Provenance(source="test", occurred_at=at, collected_at=at, raw_sha256=SHA)


def scan(sid: str, at: datetime, *, partial: bool = False, eco: str = "pypi") -> Scan:
    return Scan(
        id=sid,
        repo=REPO,
        scanner="pip-audit",
        tool="pip-audit",
        format="pip-audit-json/1",
        scanned_at=at,
        partial=partial,
        targets=("",),
        coverage=() if partial else (("dependency", "", eco),),
        provenance=prov(at),
    )


def obs(
    sid: str,
    at: datetime,
    *,
    tier: SeverityTier = "high",
    advisory: str = "GHSA-aaaa-bbbb-cccc",
    aliases: tuple[str, ...] = (),
    version: str = "1.0",
    scanner: str = "pip-audit",
    **kw: object,
) -> FindingObservation:
    return FindingObservation(
        id=f"{sid}/1/{advisory}",
        repo=REPO,
        scan_id=sid,
        scanner=scanner,
        scanned_at=at,
        advisory_id=advisory,
        aliases=aliases,
        package="django",
        ecosystem="pypi",
        version=version,
        manifest="requirements.txt",
        tier=tier,
        **kw,  # type: ignore[arg-type]
    )


def change(n: int, at: datetime, files: tuple[str, ...] = ("requirements.txt",)) -> Change:
    sha = f"{n:040x}"
    return Change(
        repo=REPO,
        branch="main",
        number=n,
        change_type="merge",
        platform="github",
        merged_at=at,
        merge_sha=sha,
        landed_shas=(sha,),
        files=tuple(FileChange(path=p) for p in files),
        provenance=prov(at),
    )


def deploy(c: Change, at: datetime, env: str = "production", status: str = "success") -> Deployment:
    return Deployment(
        id=f"D-{c.number}-{env}",
        repo=REPO,
        environment=env,
        commit_sha=c.merge_sha,
        status=status,  # type: ignore[arg-type]
        started_at=at,
        finished_at=at,
        provenance=prov(at),
    )


def accept(at: datetime, until: datetime, advisory: str = "GHSA-aaaa-bbbb-cccc") -> RiskAcceptance:
    return RiskAcceptance(
        id=f"RA-{at:%j%H}",
        repo=REPO,
        advisory=advisory,
        requester=Actor(login="bob"),
        approver=Actor(login="carol"),
        reason="not reachable",
        accepted_at=at,
        expires_at=until,
        provenance=prov(at),
    )
