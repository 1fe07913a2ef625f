"""Golden files of the canonical Markdown, with readable diffs.

Regenerate after an intended wording or settings change, then review the diff in git:

    CHANGEPROOF_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/policy/test_golden.py

The goldens render against a fixed control catalogue (tests/policy/helpers.py), so adding a
control elsewhere does not change them; a new or changed setting default does.
"""

from __future__ import annotations

import difflib
import os
from datetime import date
from pathlib import Path

import pytest

from changeproof.policy import document_digest, render_markdown
from changeproof.settings import Settings, parse_settings
from tests.policy.helpers import FIXED_CONTROLS

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("CHANGEPROOF_UPDATE_GOLDEN") == "1"

CUSTOM = {
    "controlled_branches": ["main", "release/*"],
    "organisation": {
        "name": "Acme Payments Ltd",
        "policy_owner": "Chief Technology Officer",
        "policy_version": "2.1",
        "effective_date": date(2026, 4, 1),
    },
    "review": {"approvals": 2, "allow_suggestion_commits": True},
    "rules": [
        {"repos": ["acme/ledger"], "paths": ["src/ledger/**"], "approvals": 3},
        {"repos": ["*"], "risk": "high", "min_staging_soak_minutes": 120},
    ],
    "sensitive_paths": [
        {
            "name": "payments",
            "patterns": ["src/payments/**", "src/auth/**"],
            "team": "appsec",
            "approvals": 1,
        },
    ],
    "teams": {"appsec": ["ana", "ben"]},
    "standard_changes": [
        {
            "name": "dependency updates",
            "authors": ["renovate[bot]"],
            "paths": ["**/package-lock.json"],
        }
    ],
    "promotions": [{"source": "release/*", "target": "main"}],
    "repositories": [
        {"name": "acme/ledger", "platform": "github"},
        {"name": "acme/infra", "platform": "gitlab", "controlled_branches": ["main", "prod"]},
    ],
    "identities": {"break_glass": ["acme-breakglass"], "service_accounts": ["svc-deploy"]},
    "environments": {"pre_production": ["staging", "uat"], "production": ["prod-eu"]},
    "deployment": {
        "model": "release_manager",
        "release_managers": ["rm-carla", "rm-dev"],
        "allowed_production_identities": ["svc-deploy"],
        "min_staging_soak_minutes": 30,
    },
    "emergency": {
        "approvers": ["cto", "oncall-lead"],
        "labels": ["sev1"],
        "retro_review_hours": 24,
        "slack_webhook_url": "https://hooks.slack.com/services/T/B/X",
    },
    "testing": {
        "allowed_conclusions": ["success"],
        "required_checks": ["build", "test"],
        "dependency_scanning_checks": ["Dependabot*"],
        "sast_checks": ["CodeQL"],
    },
    "patching": {"critical_hours": 48, "high_hours": 168, "critical_via_emergency": True},
    "documentation": {
        "required_fields": ["description", "justification", "risk", "testing", "rollback"],
        "high_risk_approvals": 3,
    },
    "retention": {"days": 730},
}


def custom_settings() -> Settings:
    """As a changeproof.toml with these values would load (TOML gives dates and lists)."""
    return parse_settings(CUSTOM)


CASES = {"default": Settings, "custom": custom_settings}


@pytest.mark.parametrize("name", sorted(CASES))
def test_markdown_matches_golden(name: str) -> None:
    settings = CASES[name]()
    # The settings version is a digest of every setting, defaults included: it changes whenever
    # a setting is added anywhere. Its presence is what matters here, not its value.
    version = settings.version[:16]
    text = render_markdown(settings, FIXED_CONTROLS)
    assert f"`{version}`" in text
    text = text.replace(version, "<settings-version>")
    path = GOLDEN / f"{name}.md"
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no golden {path}; run with CHANGEPROOF_UPDATE_GOLDEN=1 to create it"
    want = path.read_text(encoding="utf-8")
    if text != want:
        diff = "".join(
            difflib.unified_diff(
                want.splitlines(keepends=True),
                text.splitlines(keepends=True),
                fromfile=f"golden/{name}.md",
                tofile="rendered",
                n=1,
            )
        )
        pytest.fail(
            f"the rendered policy differs from golden/{name}.md "
            f"(CHANGEPROOF_UPDATE_GOLDEN=1 to accept):\n{diff}",
            pytrace=False,
        )


def test_rendering_is_deterministic() -> None:
    a = render_markdown(custom_settings(), FIXED_CONTROLS)
    b = render_markdown(custom_settings(), FIXED_CONTROLS)
    assert a == b and document_digest(a) == document_digest(b)
    assert a.endswith("\n") and not a.endswith("\n\n") and "\r" not in a
    assert "\n\n\n" not in a and all(line == line.rstrip() for line in a.split("\n"))


def test_digest_is_sha256_of_the_utf8_bytes() -> None:
    import hashlib

    text = render_markdown(custom_settings(), FIXED_CONTROLS)
    assert document_digest(text) == hashlib.sha256(text.encode("utf-8")).hexdigest()
    other = render_markdown(Settings(), FIXED_CONTROLS)
    assert document_digest(other) != document_digest(text)
