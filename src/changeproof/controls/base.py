"""What every control is: a definition beside pure code.

A control is a pure function of evidence, settings and an injected ``now``. It never fetches,
never writes and never raises for missing evidence: "could not evaluate" is the outcome
``indeterminate`` with a reason.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any, ClassVar, Literal

import msgspec

from changeproof.evidence import (
    Change,
    Deployment,
    DeploymentApproval,
    Emergency,
    ExceptionGrant,
    ProtectionSnapshot,
    Record,
    RetroReview,
    TeamMembership,
)
from changeproof.outcomes import OK, Outcome, Result
from changeproof.settings import Settings

SubjectKind = Literal[
    "change", "deployment", "repository", "finding", "plan", "emergency", "population", "locker"
]

FRAMEWORKS = ("soc2", "iso27001", "pci_dss", "hipaa", "nis2")


class Definition(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The auditor-facing description of a control, loaded from its definition file."""

    id: str
    title: str
    subject: SubjectKind
    statement: str
    mappings: dict[str, tuple[str, ...]]
    evidence: tuple[str, ...]
    procedure: str
    pass_criterion: str
    outcomes: dict[str, str]
    remediation: str


@cache
def load_definition(control_id: str) -> Definition:
    ref = resources.files("changeproof.controls").joinpath("definitions", f"{control_id}.toml")
    data = tomllib.loads(ref.read_text(encoding="utf-8"))
    return msgspec.convert(data, Definition)


@dataclass(frozen=True)
class Context:
    """Everything a control may read besides its subject. Built by the evaluator."""

    settings: Settings
    now: datetime
    exceptions: tuple[tuple[str, ExceptionGrant], ...] = ()
    emergencies: Mapping[str, tuple[str, Emergency]] = field(default_factory=dict)
    retro_reviews: Mapping[str, tuple[tuple[str, RetroReview], ...]] = field(default_factory=dict)
    teams: Mapping[str, tuple[tuple[str, TeamMembership], ...]] = field(default_factory=dict)
    protections: Mapping[tuple[str, str], tuple[tuple[str, ProtectionSnapshot], ...]] = field(
        default_factory=dict
    )
    deployments: tuple[tuple[str, Deployment], ...] = ()
    deployment_approvals: tuple[tuple[str, DeploymentApproval], ...] = ()
    # Other evidence tables, by record kind, loaded for the controls that declare them in
    # ``reads``: (digest, record) in time order.
    tables: Mapping[str, tuple[tuple[str, Record], ...]] = field(default_factory=dict)
    # Per change id, the worst outcome of the change controls (filled by the evaluator
    # before record controls run, e.g. for CM-DEP-1).
    change_outcomes: Mapping[str, Outcome] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def table(self, kind: str) -> tuple[tuple[str, Record], ...]:
        return self.tables.get(kind, ())


class Control:
    """Base class: subclasses set ``id`` and implement :meth:`evaluate`."""

    id: ClassVar[str]
    subject_kind: ClassVar[SubjectKind] = "change"

    @property
    def definition(self) -> Definition:
        return load_definition(self.id)

    def evaluate(self, subject: Any, ctx: Context, digest: str) -> Result:
        raise NotImplementedError

    def remediation_for(self, outcome: Outcome) -> str | None:
        """The definition's remediation for an unacceptable outcome, else None."""
        if outcome in OK:
            return None
        text = _REMEDIATION.get(self.id)
        if text is None:
            text = _REMEDIATION[self.id] = load_definition(self.id).remediation
        return text

    def result(
        self,
        subject_id: str,
        outcome: Outcome,
        reasons: list[str] | tuple[str, ...],
        *,
        repo: str | None = None,
        evidence: tuple[str, ...] = (),
        details: dict[str, str] | None = None,
    ) -> Result:
        return Result(
            control=self.id,
            subject=subject_id,
            outcome=outcome,
            reasons=tuple(reasons),
            repo=repo,
            evidence=evidence
            if len(evidence) == 1 and type(evidence) is tuple
            else tuple(sorted(set(evidence))),
            remediation=self.remediation_for(outcome),
            details=details or {},
        )


# control id → its definition's remediation (definitions are loaded once and never change)
_REMEDIATION: dict[str, str] = {}


class RecordControl(Control):
    """A control over each stored record of one kind (a deployment, a finding, a plan…).

    The evaluator streams every record of ``record_kind`` and calls :meth:`evaluate` with it;
    ``reads`` names the other record kinds it needs loaded into ``Context.tables``.
    Controls over a repository or the population override :meth:`subjects` instead, to
    derive their subjects from the context (still pure).
    """

    record_kind: ClassVar[str | None] = None
    reads: ClassVar[tuple[str, ...]] = ()

    def subjects(self, ctx: Context) -> list[tuple[Any, str]]:
        """Subjects not stored as records (repositories, the population): (subject, digest)."""
        return []


def record_digest_of(records: list[tuple[str, Record]]) -> tuple[str, ...]:
    return tuple(d for d, _ in records)


def subject_of(change: Change) -> str:
    return change.id
