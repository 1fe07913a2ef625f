"""Guess which scanner wrote a JSON document — only to say so when the wrong one was named."""

from __future__ import annotations

from typing import Any

import msgspec

_Top = dict[str, msgspec.Raw] | list[msgspec.Raw]


def _keys_of(raw: msgspec.Raw) -> set[str]:
    try:
        v = msgspec.json.decode(raw, type=dict[str, msgspec.Raw])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return set()
    return set(v)


def sniff(data: bytes | memoryview) -> str | None:
    try:
        top: Any = msgspec.json.decode(data, type=_Top)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if isinstance(top, list):
        if not top:
            return None
        k = _keys_of(top[0])
        if {"vulnerabilities", "packageManager"} <= k:
            return "snyk"
        if {"number", "security_advisory"} <= k:
            return "dependabot"
        if "name" in k and ("vulns" in k or "skip_reason" in k):
            return "pip-audit"
        return None
    k = set(top)
    if "SchemaVersion" in k or ("ClusterName" in k and "Vulnerabilities" in k):
        return "trivy"
    if {"matches", "descriptor"} <= k:
        return "grype"
    if "auditReportVersion" in k or ("advisories" in k and "metadata" in k):
        return "npm-audit"
    if {"runs", "version"} <= k:
        return "sarif"
    if {"results", "errors"} <= k:
        return "semgrep"
    if "results" in k:
        return "osv-scanner"
    if "dependencies" in k:
        return "pip-audit"
    if {"vulnerabilities", "packageManager"} <= k:
        return "snyk"
    if {"alert", "action"} <= k or "security_advisory" in k or "data" in k:
        return "dependabot"
    return None
