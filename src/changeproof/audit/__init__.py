"""Audits: the period's population, its reconciliation, a reproducible sample and a signed,
self-verifying evidence package (``run_audit``), checked offline by ``verify_package``."""

from __future__ import annotations

from changeproof.audit.package import AuditRequest, AuditResult, run_audit
from changeproof.audit.verify import PackageReport, verify_package

__all__ = ["AuditRequest", "AuditResult", "PackageReport", "run_audit", "verify_package"]
