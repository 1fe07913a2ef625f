"""Every configurable value appears where it should: change one value and its sentence changes."""

from __future__ import annotations

from datetime import date
from typing import Any

import msgspec
import pytest

from changeproof.policy import render_markdown
from changeproof.settings import (
    Promotion,
    Repository,
    Rule,
    SensitivePaths,
    Settings,
    StandardChange,
)
from tests.policy.helpers import FIXED_CONTROLS, section


def with_(s: Settings, path: str, value: Any) -> Settings:
    """A copy of ``s`` with the dotted setting ``path`` replaced (validated like a file)."""
    data = msgspec.to_builtins(s)
    node = data
    *parents, leaf = path.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = msgspec.to_builtins(value)
    return msgspec.convert(data, Settings)


def md(s: Settings) -> str:
    return render_markdown(s, FIXED_CONTROLS)


DEFAULT = Settings()

# (setting, new value, section title, the sentence (fragment) it must produce there)
CASES: list[tuple[str, Any, str, str]] = [
    ("organisation.name", "Acme Payments Ltd", "Purpose", "how Acme Payments Ltd authorises"),
    (
        "organisation.policy_owner",
        "Chief Technology Officer",
        "Roles and responsibilities",
        "| Policy owner | Chief Technology Officer |",
    ),
    (
        "controlled_branches",
        ("main", "release/*"),
        "Scope",
        "The controlled branches are `main` and `release/*`",
    ),
    (
        "review.approvals",
        3,
        "Required approvals",
        "at least **3** (three) distinct independent human approvals before it is merged",
    ),
    (
        "documentation.high_risk_approvals",
        4,
        "Required approvals",
        "marks it high risk needs at least **4**",
    ),
    (
        "review.allow_suggestion_commits",
        True,
        "No self-approval",
        "whose review suggestion was committed through the forge's suggestion feature remains independent",
    ),
    (
        "review.require_current_approval",
        False,
        "Approvals cover the merged code",
        "accepts an approval whose currency the evidence cannot establish",
    ),
    (
        "rules",
        (Rule(repos=("acme/pay-*",), paths=("src/billing/**",), risk="high", approvals=3),),
        "Required approvals",
        "| `acme/pay-*` | `src/billing/**` | high | 3 |",
    ),
    (
        "rules",
        (Rule(repos=("acme/api",), min_staging_soak_minutes=90),),
        "Staging before production",
        "| `acme/api` | any | any | 90 minutes |",
    ),
    (
        "sensitive_paths",
        (SensitivePaths(name="payments", patterns=("src/pay/**",), team="security", approvals=2),),
        "Security-sensitive changes",
        "| payments | `src/pay/**` | `security` | 2 |",
    ),
    (
        "sensitive_paths",
        (),
        "Security-sensitive changes",
        "No security-sensitive path classes are configured",
    ),
    (
        "teams",
        {"security": ("alice", "bob")},
        "Roles and responsibilities",
        "Team `security`: `alice` and `bob`",
    ),
    (
        "standard_changes",
        (
            StandardChange(
                name="dependency updates", authors=("renovate[bot]",), paths=("**/package.json",)
            ),
        ),
        "Standard changes",
        "| dependency updates | `renovate[bot]` | `**/package.json` |",
    ),
    (
        "promotions",
        (Promotion(source="release", target="main"),),
        "Promotion branches",
        "| `release` | `main` |",
    ),
    (
        "repositories",
        (Repository(name="acme/api", platform="gitlab", controlled_branches=("main", "prod")),),
        "Scope",
        "| `acme/api` | gitlab | `main` and `prod` |",
    ),
    ("identities.bots", ("ci-robot",), "Definitions", "such as `ci-robot`"),
    (
        "identities.service_accounts",
        ("svc-deploy",),
        "Definitions",
        "the service accounts `svc-deploy`",
    ),
    ("identities.ai_reviewers", ("reviewbot",), "Definitions", "the AI reviewers `reviewbot`"),
    (
        "identities.break_glass",
        ("admin-breakglass",),
        "Enforcement in the repository",
        "Only the break-glass account `admin-breakglass` may be able to bypass branch protection",
    ),
    (
        "environments.pre_production",
        ("qa", "uat"),
        "Staging before production",
        "deployed successfully to `qa` or `uat` before its production deployment starts",
    ),
    (
        "environments.production",
        ("prod-eu", "prod-us"),
        "Environments and separation",
        "the production environments `prod-eu` and `prod-us`",
    ),
    ("deployment.model", "manual_trigger", "Deployment authorisation", "deploys by manual trigger"),
    (
        "deployment.model",
        "release_manager",
        "Deployment authorisation",
        "uses the release manager model",
    ),
    (
        "deployment.pipeline_identities",
        ("deploy-bot",),
        "Deployment authorisation",
        "triggered by the pipeline identity `deploy-bot` from a controlled branch",
    ),
    (
        "deployment.allowed_production_identities",
        ("deploy-bot", "oncall"),
        "Environments and separation",
        "performed only by the identities `deploy-bot` and `oncall`",
    ),
    (
        "deployment.min_staging_soak_minutes",
        45,
        "Staging before production",
        "must have run there for at least 45 minutes",
    ),
    (
        "emergency.approvers",
        ("cto", "oncall-lead"),
        "Declaration and approval",
        "The designated emergency approvers are `cto` and `oncall-lead`.",
    ),
    (
        "emergency.labels",
        ("sev1",),
        "Declaration and approval",
        "(by the label `sev1`, or by an emergency record)",
    ),
    (
        "emergency.retro_review_hours",
        24,
        "Retroactive review",
        "within **24 hours (1 day)** of its declaration",
    ),
    (
        "emergency.retro_review_hours",
        72,
        "Retroactive review",
        "within **72 hours (3 days)** of its declaration",
    ),
    (
        "emergency.remind_before_hours",
        6,
        "Retroactive review",
        "a reminder is due 6 hours before the deadline",
    ),
    (
        "emergency.incident_patterns",
        (r"^OPS-\d+$",),
        "Immediate logging",
        r"it must match `^OPS-\d+$`.",
    ),
    (
        "emergency.slack_webhook_url",
        "https://hooks.slack.com/services/T/B/X",
        "Immediate logging",
        "changeproof notifies the configured Slack channel of every declaration",
    ),
    (
        "emergency.webhook_url",
        "https://example.internal/hook",
        "Immediate logging",
        "changeproof notifies the configured webhook of every declaration",
    ),
    (
        "testing.allowed_conclusions",
        ("success",),
        "Automated checks before merge",
        "with the conclusion `success`.",
    ),
    (
        "testing.required_checks",
        ("build", "unit-tests"),
        "Automated checks before merge",
        "the required checks are `build` and `unit-tests`",
    ),
    (
        "testing.dependency_scanning_checks",
        ("Dependabot*", "snyk"),
        "Security testing",
        "must have run and completed on every change: `Dependabot*` and `snyk`",
    ),
    (
        "testing.sast_checks",
        ("CodeQL",),
        "Security testing",
        "(SAST) must have run and completed on every change: `CodeQL`",
    ),
    (
        "patching.critical_hours",
        24,
        "Security patches and vulnerability management",
        "| Critical | 9.0–10.0 | 24 hours (1 day) |",
    ),
    (
        "patching.high_hours",
        168,
        "Security patches and vulnerability management",
        "| High | 7.0–8.9 | 7 days |",
    ),
    (
        "patching.medium_hours",
        1000,
        "Security patches and vulnerability management",
        "| Medium | 4.0–6.9 | 1000 hours |",
    ),
    (
        "patching.low_hours",
        180 * 24,
        "Security patches and vulnerability management",
        "| Low | 0.1–3.9 | 180 days |",
    ),
    (
        "patching.critical_via_emergency",
        False,
        "Security patches and vulnerability management",
        "Normal change procedure, prioritised",
    ),
    (
        "patching.scan_max_age_days",
        3,
        "Security testing",
        "a vulnerability scan no older than 3 days",
    ),
    (
        "documentation.required_fields",
        ("description", "justification"),
        "Change documentation",
        "- the business justification.",
    ),
    (
        "documentation.ticket_patterns",
        (r"\bOPS-\d+\b",),
        "Change documentation",
        r"(recognised by `\bOPS-\d+\b`)",
    ),
    (
        "infrastructure.iac_paths",
        ("infra/**",),
        "Infrastructure changes",
        "| Infrastructure as code and Kubernetes configuration | `infra/**` |",
    ),
    (
        "infrastructure.iam_paths",
        ("iam/*.json",),
        "Infrastructure changes",
        "| Identity and access management | `iam/*.json` |",
    ),
    (
        "infrastructure.migration_paths",
        ("db/*.sql",),
        "Infrastructure changes",
        "| Database migrations | `db/*.sql` |",
    ),
    (
        "infrastructure.drift_max_age_days",
        2,
        "Infrastructure changes",
        "checked for drift at least every 2 days",
    ),
    ("retention.days", 730, "Evidence and retention", "retained for at least **730 days**"),
]

# Cases that need another setting changed first: (setting, value, title, sentence, base).
BASED: list[tuple[str, Any, str, str, dict[str, Any]]] = [
    (
        "deployment.deployers",
        ("dana", "eli"),
        "Deployment authorisation",
        "must be started by an authorised deployer: `dana` or `eli`",
        {"deployment.model": "manual_trigger"},
    ),
    (
        "deployment.release_managers",
        ("rm-ana",),
        "Deployment authorisation",
        "who is not a participant of any change it ships: `rm-ana`",
        {"deployment.model": "release_manager"},
    ),
]


CASES += [
    (
        "documentation.high_risk_required_fields",
        ("description", "risk", "testing", "rollback", "justification"),
        "Change documentation",
        "must also hold the business justification.",
    ),
    (
        "patching.unscored_tier",
        "high",
        "Security patches and vulnerability management",
        "A finding without a severity score is treated as high until it is triaged.",
    ),
    (
        "patching.max_acceptance_days",
        30,
        "Security patches and vulnerability management",
        "A risk acceptance lasts at most 30 days before it must be renewed.",
    ),
    (
        "infrastructure.privileged_approvals",
        3,
        "Infrastructure changes",
        "A privileged change needs at least **3** independent approvals",
    ),
    (
        "infrastructure.iam_resource_types",
        ("aws_iam_*",),
        "Infrastructure changes",
        "(resource types `aws_iam_*`)",
    ),
    (
        "infrastructure.team",
        "platform",
        "Infrastructure changes",
        "from members of the team `platform`",
    ),
]
BASED.append(
    (
        "infrastructure.team_approvals",
        2,
        "Infrastructure changes",
        "needs at least 2 independent approvals from members of the team `platform`",
        {"infrastructure.team": "platform"},
    )
)


ALL_CASES: list[tuple[str, Any, str, str, dict[str, Any]]] = [(*c, {}) for c in CASES] + BASED


@pytest.mark.parametrize(
    ("path", "value", "title", "sentence", "base"),
    ALL_CASES,
    ids=[f"{c[0]}={c[1]!r}"[:60] for c in ALL_CASES],
)
def test_value_appears_in_its_sentence(
    path: str, value: Any, title: str, sentence: str, base: dict[str, Any]
) -> None:
    start = DEFAULT
    for k, v in base.items():
        start = with_(start, k, v)
    before_md = md(start)
    before = section(before_md, title) if f" {title}\n" in before_md else ""
    after = section(md(with_(start, path, value)), title)
    assert sentence in after
    assert sentence not in before, "the text already says this before the change"


# Settings with no sentence of their own, and why (every other leaf must have a case above).
NOT_IN_POLICY = {
    "identities.web_flow_committers": "the forge's own committer identity: an attribution detail",
    "organisation.policy_version": "in the document-control block (tested separately)",
    "organisation.effective_date": "in the document-control block (tested separately)",
}


def _leaves(struct: type[msgspec.Struct], prefix: str = "") -> list[str]:
    out: list[str] = []
    for f in msgspec.structs.fields(struct):
        t = f.type
        if isinstance(t, type) and issubclass(t, msgspec.Struct):
            out.extend(_leaves(t, f"{prefix}{f.name}."))
        else:
            out.append(prefix + f.name)
    return out


# Whole tables that configure collection, not policy.
NOT_IN_POLICY_TABLES = ("github.", "gitlab.")


def test_every_setting_is_covered() -> None:
    covered = {c[0] for c in ALL_CASES} | set(NOT_IN_POLICY)
    missing = [
        leaf
        for leaf in _leaves(Settings)
        if leaf not in covered and not leaf.startswith(NOT_IN_POLICY_TABLES)
    ]
    assert not missing, f"settings without a policy sentence or a reason: {missing}"


def test_document_control_block() -> None:
    s = with_(DEFAULT, "organisation.policy_version", "2.3")
    s = with_(s, "organisation.effective_date", date(2026, 3, 1))
    text = md(s)
    assert "| Version | 2.3 |" in text
    assert "| Effective date | 2026-03-01 |" in text
    assert f"| Settings version | `{s.version[:16]}`" in text
    assert "| Effective date | On approval of this version |" in md(DEFAULT)


def test_no_designated_people_is_said_plainly() -> None:
    s = with_(DEFAULT, "deployment.model", "release_manager")
    text = section(md(s), "Deployment authorisation")
    assert "none is designated in the settings" in text
    s = with_(s, "deployment.release_managers", ("rm-ana",))
    text = section(md(s), "Deployment authorisation")
    assert "`rm-ana`" in text and "none is designated" not in text
    assert "No emergency approver is designated" in section(md(DEFAULT), "Declaration and approval")


def test_user_text_cannot_inject_markdown() -> None:
    s = with_(DEFAULT, "organisation.name", "Evil | Corp *bold* [x](http://e)")
    text = md(s)
    assert r"Evil \| Corp \*bold\* \[x\](http://e)" in text


def test_section_references_follow_optional_sections() -> None:
    plain = md(DEFAULT)
    assert "(section 4.7)" in section(plain, "Roles and responsibilities")  # enforcement
    s = with_(DEFAULT, "promotions", (Promotion(source="release", target="main"),))
    s = with_(
        s,
        "standard_changes",
        (StandardChange(name="deps", authors=("renovate[bot]",), paths=("x",)),),
    )
    moved = md(s)
    # two optional subsections now precede "Enforcement in the repository"
    assert "### 4.9 Enforcement in the repository" in moved
    assert "(section 4.9)" in section(moved, "Roles and responsibilities")
    assert "(section ?)" not in moved and "section ?" not in moved
