"""The control catalogue: an explicit registry of pure controls, each with its definition."""

from __future__ import annotations

from changeproof.controls.base import Context, Control, Definition, RecordControl, load_definition
from changeproof.controls.config import (
    BypassExposure,
    ConfigurationChanges,
    EffectiveProtection,
    EvidenceRetention,
)
from changeproof.controls.deployment import (
    Authorised,
    ProductionAccess,
    ShipsPassingChanges,
    StagingFirst,
)
from changeproof.controls.documentation import ChangeRecord
from changeproof.controls.emergency import DeclaredEmergency, RetroReviewed
from changeproof.controls.iac import (
    InfrastructureReviewed,
    MigrationsSafe,
    NoUnresolvedDrift,
    PlanBeforeApply,
)
from changeproof.controls.population import LockerVerifies, PopulationComplete
from changeproof.controls.review import (
    ChangeControl,
    CurrentApprovals,
    IndependentApproval,
    NoDirectPush,
    NoSelfApproval,
)
from changeproof.controls.sensitive import SensitivePathApproval
from changeproof.controls.testing import RequiredChecks, SecurityTesting
from changeproof.controls.vuln import CriticalViaEmergency, FreshScans, PatchDeadline

CHANGE_CONTROLS: tuple[ChangeControl, ...] = (
    IndependentApproval(),
    NoSelfApproval(),
    CurrentApprovals(),
    NoDirectPush(),
    SensitivePathApproval(),
    RequiredChecks(),
    SecurityTesting(),
    ChangeRecord(),
    InfrastructureReviewed(),
)

# Controls over deployments, findings, plans, repositories and the population.
RECORD_CONTROLS: tuple[RecordControl, ...] = (
    ShipsPassingChanges(),
    StagingFirst(),
    Authorised(),
    ProductionAccess(),
    DeclaredEmergency(),
    RetroReviewed(),
    EffectiveProtection(),
    BypassExposure(),
    ConfigurationChanges(),
    EvidenceRetention(),
    PopulationComplete(),
    LockerVerifies(),
    PlanBeforeApply(),
    NoUnresolvedDrift(),
    MigrationsSafe(),
    PatchDeadline(),
    CriticalViaEmergency(),
    FreshScans(),
)

ALL_CONTROLS: tuple[Control, ...] = (*CHANGE_CONTROLS, *RECORD_CONTROLS)


def by_id(control_id: str) -> Control:
    for c in ALL_CONTROLS:
        if c.id == control_id:
            return c
    raise KeyError(control_id)


__all__ = [
    "ALL_CONTROLS",
    "CHANGE_CONTROLS",
    "RECORD_CONTROLS",
    "ChangeControl",
    "Context",
    "Control",
    "Definition",
    "RecordControl",
    "by_id",
    "load_definition",
]
