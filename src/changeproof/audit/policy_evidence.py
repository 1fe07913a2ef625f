"""The Change Management Policy in force during the audit period, for the package.

Which approved versions governed the period (with the exact approved Markdown, read back from
the evidence locker where ``changeproof policy approve`` stored it) and every finding about
the policy's approval, for example settings that changed without a newly approved version.
The policy module pulls in Jinja2 and markdown-it, so it is imported only when an audit runs.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from changeproof.audit.population import iso, who
from changeproof.settings import Settings
from changeproof.store import Store, schema

if TYPE_CHECKING:
    from changeproof.evidence import PolicyApproval

# What an auditor should hear when the approved text cannot be produced from the locker.
TEXT_MISSING = "policy-text-missing"
TEXT_ALTERED = "policy-text-altered"


@dataclass(frozen=True)
class Finding:
    code: str
    message: str
    hint: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "hint": self.hint}


@dataclass(frozen=True)
class VersionInForce:
    """One approved version and the part of the period it governed."""

    approval: PolicyApproval
    record_sha256: str | None  # the stored approval record (exported with the evidence)
    effective_from: datetime
    in_force_from: datetime
    in_force_until: datetime
    text: bytes | None  # the approved Markdown, when the locker holds it unaltered
    path: str | None  # where that text is in the package

    def to_dict(self) -> dict[str, object]:
        a = self.approval
        return {
            "version": a.policy_version,
            "approver": approver(a),
            "approved_at": iso(a.approved_at),
            "effective_date": a.effective_date.isoformat() if a.effective_date else None,
            "effective_from": iso(self.effective_from),
            "in_force_from": iso(self.in_force_from),
            "in_force_until": iso(self.in_force_until),
            "document_sha256": a.document_sha256,
            "settings_version": a.settings_version,
            "note": a.note,
            "approval_id": a.id,
            "record_sha256": self.record_sha256,
            "text_file": self.path,
        }


@dataclass(frozen=True)
class PolicyEvidence:
    versions: tuple[VersionInForce, ...]
    findings: tuple[Finding, ...]
    approvals_recorded: int
    current_version: str  # the policy version the settings in use name
    current_sha256: str  # SHA-256 of the policy the settings in use render
    current_approved: bool  # whether some recorded approval is for exactly that text

    def to_dict(self) -> dict[str, object]:
        return {
            "in_force_during_period": [v.to_dict() for v in self.versions],
            "findings": [f.to_dict() for f in self.findings],
            "approvals_recorded": self.approvals_recorded,
            "settings_in_use": {
                "policy_version": self.current_version,
                "document_sha256": self.current_sha256,
                "approved": self.current_approved,
            },
        }


def approver(a: PolicyApproval) -> str:
    """The approver as they signed: "Name <email>" when both are known."""
    p = a.approver
    if p.name and p.email:
        return f"{p.name} <{p.email}>"
    return who(p) or str(p.name or "")


def text_path(approval: PolicyApproval) -> str:
    """The text's place in the package; the digest keeps two texts of one label apart."""
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", approval.policy_version).strip("._") or "unnamed"
    return f"policy/policy-{label[:40]}-{approval.document_sha256[:12]}.md"


def gather(
    store: Store, settings: Settings, start: datetime, end: datetime, now: datetime
) -> PolicyEvidence:
    """The versions in force in [start, end) and every policy finding, as of ``now``."""
    from changeproof.evidence import PolicyApproval
    from changeproof.policy.versions import Window, effective_from, policy_status

    status = policy_status(store, settings, Window(start, end), now=now)
    findings = [Finding(f.code, f.message, f.hint) for f in status.findings]
    recorded = list(store.iter_records(PolicyApproval))
    digests = {a.id: d for d, a in recorded}
    texts = _texts(store, {a.document_sha256 for a in status.during})
    during = list(status.during)
    starts = [max(start, effective_from(a)) for a in during]
    versions: list[VersionInForce] = []
    for i, a in enumerate(during):
        body = texts.get(a.document_sha256)
        text: bytes | None = None
        if body is None:
            findings.append(
                Finding(
                    TEXT_MISSING,
                    f"The approved text of policy version {a.policy_version} (SHA-256 "
                    f"{a.document_sha256[:12]}…) is not in the evidence locker, so the package "
                    f"cannot show what was approved.",
                    "restore the locker from backup; the locker verification in this package "
                    "shows whether entries were deleted",
                )
            )
        elif hashlib.sha256(body).hexdigest() != a.document_sha256:
            findings.append(
                Finding(
                    TEXT_ALTERED,
                    f"The locker's copy of policy version {a.policy_version} no longer hashes "
                    f"to the approved SHA-256 {a.document_sha256[:12]}…: the stored text was "
                    f"altered after approval.",
                    "restore the locker from backup and investigate who changed it",
                )
            )
        else:
            text = body
        versions.append(
            VersionInForce(
                approval=a,
                record_sha256=digests.get(a.id),
                effective_from=effective_from(a),
                in_force_from=starts[i],
                in_force_until=starts[i + 1] if i + 1 < len(during) else end,
                text=text,
                path=text_path(a) if text is not None else None,
            )
        )
    approved = any(a.document_sha256 == status.document_sha256 for _, a in recorded)
    return PolicyEvidence(
        versions=tuple(versions),
        findings=tuple(findings),
        approvals_recorded=len(digests),
        current_version=status.policy_version,
        current_sha256=status.document_sha256,
        current_approved=approved,
    )


def _texts(store: Store, digests: set[str]) -> dict[str, bytes]:
    """The locker objects with these digests, exactly as stored (checked by the caller)."""
    if not digests:
        return {}
    o = schema.locker_objects
    with store.connect() as conn:
        rows = conn.execute(sa.select(o.c.digest, o.c.body).where(o.c.digest.in_(sorted(digests))))
        return {
            dig: bytes(body) if isinstance(body, bytes | memoryview) else str(body).encode()
            for dig, body in rows
        }
