"""Settings: the commented template is exactly the defaults; validation names file, key, allowed."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from changeproof.cli.core import template_text
from changeproof.errors import ConfigError
from changeproof.settings import Settings, load_settings, parse_settings, path_matches


def test_template_loads_to_exactly_the_defaults() -> None:
    assert parse_settings(tomllib.loads(template_text())) == Settings()


def test_template_documents_every_top_level_section() -> None:
    text = template_text()
    for name in Settings.__struct_fields__:
        assert name in text, f"{name} is not in the commented template"


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    assert load_settings(tmp_path / "none.toml") == Settings()


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"review": {"approvals": 0}}, "review.approvals"),
        ({"emergency": {"retro_review_hours": 12}}, "emergency.retro_review_hours"),
        ({"emergency": {"retro_review_hours": -1}}, "emergency.retro_review_hours"),
        ({"patching": {"critical_hours": 0}}, "patching.critical_hours"),
        ({"retention": {"days": 7}}, "retention.days"),
        ({"controlled_branches": "main"}, "controlled_branches"),
        ({"deployment": {"min_staging_soak_minutes": -3}}, "deployment.min_staging_soak_minutes"),
    ],
)
def test_impossible_values_name_the_key(data: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(data, "x.toml")
    assert key in str(err.value) and "x.toml" in str(err.value)


def test_cross_field_rules() -> None:
    with pytest.raises(ConfigError, match="both pre-production and production"):
        parse_settings({"environments": {"pre_production": ["prod"], "production": ["prod"]}})
    with pytest.raises(ConfigError, match="not defined under \\[teams\\]"):
        parse_settings({"sensitive_paths": [{"name": "a", "patterns": ["x"], "team": "ghost"}]})
    with pytest.raises(ConfigError, match="grow shorter"):
        parse_settings({"patching": {"critical_hours": 500, "high_hours": 100}})
    with pytest.raises(ConfigError, match="regular expression"):
        parse_settings({"emergency": {"incident_patterns": ["(unclosed"]}})


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match="unknown key 'aproovals' under \\[review\\]"):
        parse_settings({"review": {"aproovals": 2}})


def test_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_bytes(b"\xff\xfe[review]")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(p)


def test_half_written_file(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text(template_text()[:500])
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(p)


def test_required_approvals_per_repo_path_and_risk() -> None:
    s = parse_settings(
        {
            "rules": [
                {"repos": ["acme/pay*"], "approvals": 2},
                {"paths": ["infra/**"], "approvals": 3},
            ],
            "documentation": {"high_risk_approvals": 4},
        }
    )
    assert s.required_approvals("acme/web", ["src/x.py"], None) == 1
    assert s.required_approvals("acme/payments", ["src/x.py"], None) == 2
    assert s.required_approvals("acme/web", ["infra/main.tf"], "low") == 3
    assert s.required_approvals("acme/web", [], "high") == 4


def test_controlled_branches_globs() -> None:
    s = parse_settings({"controlled_branches": ["main", "release/*"]})
    assert s.is_controlled("r", "release/1.2") and not s.is_controlled("r", "feature/x")


def test_path_matches_top_level_double_star() -> None:
    assert path_matches("auth/login.py", ["**/auth/**"])
    assert path_matches("src/auth/login.py", ["**/auth/**"])
    assert not path_matches("authors.md", ["**/auth/**"])


def test_settings_version_changes_with_any_value() -> None:
    assert Settings().version != parse_settings({"review": {"approvals": 2}}).version
