"""Policy versions: who approved which rendered text, which version was in force when, and
what an auditor should hear when the settings moved on without a new approval.

An approval stores the canonical Markdown itself in the locker (its SHA-256 is the document
digest), so the exact approved text can always be produced again and compared.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Protocol

import msgspec
import sqlalchemy as sa

from changeproof.controls.base import Control
from changeproof.errors import UsageError
from changeproof.evidence import Actor, PolicyApproval, Provenance
from changeproof.locker import Locker, Signer
from changeproof.policy.render import document_digest, render_markdown
from changeproof.settings import Settings
from changeproof.store import Store, from_us, schema

SOURCE = "changeproof policy approve"


class HasPeriod(Protocol):
    """Anything with an optional start and end (``changeproof.evaluate.Period`` fits)."""

    @property
    def start(self) -> datetime | None: ...

    @property
    def end(self) -> datetime | None: ...


@dataclass(frozen=True)
class Window:
    start: datetime | None
    end: datetime | None


def approve(
    store: Store,
    signer: Signer,
    settings: Settings,
    *,
    version: str,
    by: str,
    now: datetime,
    note: str = "",
    controls: Iterable[Control] | None = None,
    approved_at: datetime | None = None,
) -> PolicyApproval:
    """Record that ``by`` approved the policy rendered from ``settings`` as ``version``.

    The version must be the one the settings name, so the approved text carries it.
    Everything is written in one transaction: the text into the locker, the record into the
    store.
    """
    declared = settings.organisation.policy_version
    if version != declared:
        raise UsageError(
            f"cannot approve version {version!r}: the settings name policy version {declared!r}",
            expected="--version equal to organisation.policy_version in changeproof.toml",
            hint=f"set policy_version = {version!r} under [organisation] and render again, "
            f"or approve --version {declared}",
        )
    if not by.strip():
        raise UsageError("--by is empty", expected="the name or login of the approver")
    md = render_markdown(settings, controls)
    digest = document_digest(md)
    for _, prior in store.iter_records(PolicyApproval):
        if prior.policy_version == version and prior.document_sha256 != digest:
            raise UsageError(
                f"version {version} was already approved for a different text "
                f"(SHA-256 {prior.document_sha256[:12]}…, by {_who(prior.approver)} on "
                f"{prior.approved_at.date().isoformat()})",
                expected="a new version number for a changed policy",
                hint="raise policy_version under [organisation] in changeproof.toml, "
                "then approve that version",
            )
    recorded = now.astimezone(UTC)
    # an approval given earlier (a CAB meeting, a signed PDF) may be recorded later: the record
    # says when it was given, its provenance when changeproof recorded it — both are visible
    at = approved_at.astimezone(UTC) if approved_at is not None else recorded
    if at > recorded:
        raise UsageError(
            f"the approval time {at.isoformat()} is in the future",
            expected="the time the approval was given, at or before now",
        )
    with store.writer(Locker(signer)) as w:
        raw = w.put_raw(
            md.encode("utf-8"), kind="policy", source=SOURCE, media_type="text/markdown"
        )
        record = PolicyApproval(
            id=f"{version}@{at.isoformat()}",
            policy_version=version,
            document_sha256=digest,
            settings_version=settings.version,
            approver=_actor(by),
            approved_at=at,
            effective_date=settings.organisation.effective_date,
            note=note,
            provenance=Provenance(
                source=SOURCE, occurred_at=at, collected_at=recorded, raw_sha256=raw
            ),
        )
        w.put(record)
    return record


def _actor(by: str) -> Actor:
    text = by.strip()
    if "<" in text and text.endswith(">"):
        name, email = text[: text.index("<")].strip(), text[text.index("<") + 1 : -1].strip()
        return Actor(name=name or None, email=email or None)
    if " " in text:
        return Actor(name=text)
    return Actor(login=text)


def _who(actor: Actor) -> str:
    return actor.name or actor.login or actor.email or "?"


def approvals(store: Store) -> list[PolicyApproval]:
    """Every recorded approval, oldest first."""
    return sorted((a for _, a in store.iter_records(PolicyApproval)), key=lambda a: a.approved_at)


def effective_from(approval: PolicyApproval) -> datetime:
    """When an approved version takes effect: its approval, or its later effective date."""
    if approval.effective_date is None:
        return approval.approved_at
    start = datetime.combine(approval.effective_date, time(0), tzinfo=UTC)
    return max(approval.approved_at, start)


def in_force(history: Iterable[PolicyApproval], at: datetime) -> PolicyApproval | None:
    """The approved version in force at ``at``: the latest to take effect at or before it."""
    best: PolicyApproval | None = None
    for a in history:
        if effective_from(a) > at:
            continue
        if best is None or (effective_from(a), a.approved_at) >= (
            effective_from(best),
            best.approved_at,
        ):
            best = a
    return best


def policy_in_force(store: Store, at: datetime) -> PolicyApproval | None:
    """Which approved policy version was in force at a given time (None: none was)."""
    return in_force(approvals(store), at)


def versions_during(
    history: Iterable[PolicyApproval], start: datetime | None, end: datetime | None
) -> list[PolicyApproval]:
    """The versions in force at some moment of [start, end): the one in force at the start
    and every one taking effect inside the period."""
    hist = list(history)
    out: list[PolicyApproval] = []
    if start is not None:
        first = in_force(hist, start)
        if first is not None:
            out.append(first)
    for a in sorted(hist, key=effective_from):
        t = effective_from(a)
        if (start is None or t > start) and (end is None or t < end) and a not in out:
            out.append(a)
    return out


@dataclass(frozen=True)
class PolicyFinding:
    """A plain-language finding about the policy's approval, for `policy status` and audits."""

    code: str
    message: str
    hint: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "hint": self.hint}


@dataclass(frozen=True)
class PolicyStatus:
    document_sha256: str
    settings_version: str
    policy_version: str
    latest: PolicyApproval | None
    during: tuple[PolicyApproval, ...]
    findings: tuple[PolicyFinding, ...]

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "policy_version": self.policy_version,
            "document_sha256": self.document_sha256,
            "settings_version": self.settings_version,
            "latest_approval": msgspec.to_builtins(self.latest) if self.latest else None,
            "in_force_during_period": [msgspec.to_builtins(a) for a in self.during],
            "findings": [f.to_dict() for f in self.findings],
        }


def _day(value: datetime | date) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return value.isoformat()


def policy_status(
    store: Store,
    settings: Settings,
    period: HasPeriod | None = None,
    *,
    controls: Iterable[Control] | None = None,
    now: datetime | None = None,
) -> PolicyStatus:
    """The current policy's approval state and the versions in force during ``period``.

    ``now`` decides which approved version is in force for the current settings (default:
    the current time); a version approved with a later effective date is pending, not missing.
    """
    p: HasPeriod = period or Window(None, None)
    history = approvals(store)
    md = render_markdown(settings, controls)
    digest = document_digest(md)
    latest = max(history, key=lambda a: a.approved_at) if history else None
    during = versions_during(history, p.start, p.end)
    findings: list[PolicyFinding] = []
    version = settings.organisation.policy_version
    approve_cmd = "changeproof policy approve --version V --by NAME"

    if not history:
        findings.append(
            PolicyFinding(
                "policy-never-approved",
                "No version of the Change Management Policy has ever been approved: there is "
                "no record of who accepted the rules the checks enforce.",
                f"render it (changeproof policy --format pdf --out policy.pdf), have the policy "
                f"owner read it, then record the approval: {approve_cmd.replace('V', version)}",
            )
        )
    else:
        at = now or datetime.now(UTC)
        force_now = in_force(history, at)
        approved_text = [a for a in history if a.document_sha256 == digest]
        pending = [a for a in approved_text if effective_from(a) > at]
        if force_now is not None and force_now.document_sha256 != digest and approved_text:
            if not pending:
                old = max(approved_text, key=lambda a: a.approved_at)
                findings.append(
                    PolicyFinding(
                        "policy-superseded-in-use",
                        f"The settings in use render version {old.policy_version} (approved "
                        f"{_day(old.approved_at)}), but version {force_now.policy_version}, "
                        f"approved by {_who(force_now.approver)} on "
                        f"{_day(force_now.approved_at)}, has superseded it: the checks enforce "
                        f"rules that are no longer the policy in force.",
                        "restore the settings of the version in force, or approve the settings "
                        "in use as a new version",
                    )
                )
        elif not approved_text:
            assert latest is not None
            if latest.settings_version != settings.version:
                what = (
                    f"The settings changed after version {latest.policy_version} was approved "
                    f"by {_who(latest.approver)} on {_day(latest.approved_at)}, and no new "
                    f"version has been approved: the checks now enforce rules nobody approved "
                    f"(settings version {settings.version[:12]}, approved "
                    f"{latest.settings_version[:12]})."
                )
            else:
                what = (
                    f"The policy text changed since version {latest.policy_version} was approved "
                    f"by {_who(latest.approver)} on {_day(latest.approved_at)} (the control "
                    f"catalogue or the policy template changed; the settings did not), and no "
                    f"new version has been approved."
                )
            same_label = [a for a in history if a.policy_version == version]
            hint = (
                f"raise policy_version under [organisation] (version {version} was approved "
                f"for another text), render and review it, then {approve_cmd}"
                if same_label
                else f"render and review the policy, then {approve_cmd.replace('V', version)}"
            )
            findings.append(PolicyFinding("policy-changed-unapproved", what, hint))
        labels: dict[str, set[str]] = {}
        for a in history:
            labels.setdefault(a.policy_version, set()).add(a.document_sha256)
        for label, digests in sorted(labels.items()):
            if len(digests) > 1:
                findings.append(
                    PolicyFinding(
                        "policy-version-reused",
                        f"Version {label} was approved for {len(digests)} different texts, so "
                        f"the version number does not identify what was approved.",
                        "give every changed text a new policy_version before approving it",
                    )
                )
    if p.start is not None and history:
        first_in_force = in_force(history, p.start)
        if first_in_force is None:
            first = min(history, key=effective_from)
            start_of = effective_from(first)
            if p.end is None or start_of < p.end:
                findings.append(
                    PolicyFinding(
                        "policy-gap",
                        f"No approved policy version was in force from {_day(p.start)} until "
                        f"{_day(start_of)}, when version {first.policy_version} took effect.",
                        "changes in that span were governed by no approved policy; record "
                        "the explanation for the auditor",
                    )
                )
            else:
                findings.append(
                    PolicyFinding(
                        "policy-gap",
                        f"No approved policy version was in force at any time in the period "
                        f"({_day(p.start)} to {_day(p.end)}); the first approval took effect "
                        f"on {_day(start_of)}.",
                        "changes in the period were governed by no approved policy; record "
                        "the explanation for the auditor",
                    )
                )
    findings.extend(_unapproved_runs(store, history, p))
    return PolicyStatus(
        document_sha256=digest,
        settings_version=settings.version,
        policy_version=version,
        latest=latest,
        during=tuple(during),
        findings=tuple(findings),
    )


def _unapproved_runs(
    store: Store, history: list[PolicyApproval], p: HasPeriod
) -> list[PolicyFinding]:
    """Check runs in the period judged by settings that the version in force did not have."""
    if not history:
        return []
    from changeproof.store import to_us

    t = schema.runs
    q = (
        sa.select(t.c.started_us, t.c.settings_digest)
        .where(t.c.finished_us.is_not(None))  # an unfinished run counts for nothing yet
        .order_by(t.c.started_us)
    )
    if p.start is not None:
        q = q.where(t.c.started_us >= to_us(p.start))
    if p.end is not None:
        q = q.where(t.c.started_us < to_us(p.end))
    with store.connect() as conn:
        rows = conn.execute(q).all()
    seen: dict[tuple[str, str | None], tuple[datetime, int]] = {}
    for started_us, settings_digest in rows:
        at = from_us(int(started_us))
        force = in_force(history, at)
        if force is None or force.settings_version == settings_digest:
            continue
        key = (str(settings_digest), force.id)
        first, count = seen.get(key, (at, 0))
        seen[key] = (first, count + 1)
    out = []
    for (settings_digest, force_id), (first, count) in seen.items():
        force = next(a for a in history if a.id == force_id)
        out.append(
            PolicyFinding(
                "checks-ran-on-unapproved-settings",
                f"From {_day(first)}, {count} check run(s) used settings version "
                f"{settings_digest[:12]}, but the policy in force (version "
                f"{force.policy_version}, approved by {_who(force.approver)}) was approved for "
                f"settings version {force.settings_version[:12]}: the settings changed without "
                f"a newly approved policy.",
                "approve a policy version for the settings in use, or restore the approved "
                "settings",
            )
        )
    return out


def policy_findings(
    store: Store,
    settings: Settings,
    period: HasPeriod | None = None,
    *,
    controls: Iterable[Control] | None = None,
    now: datetime | None = None,
) -> list[PolicyFinding]:
    """Plain-language findings about the policy's approval over ``period`` (for audits)."""
    return list(policy_status(store, settings, period, controls=controls, now=now).findings)
