"""changeproof.toml → frozen, validated settings. Passed in, never global.

The same settings drive the checks, the gate and the rendered policy document, so what the
policy promises is what the checks enforce.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import tomllib
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from changeproof.errors import ConfigError
from changeproof.evidence import digest

SETTINGS_FILE = "changeproof.toml"

PosInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
Hours = Annotated[int, msgspec.Meta(ge=1, le=24 * 3650)]


class _S(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class Organisation(_S, frozen=True):
    name: str = "Example Organisation"
    policy_owner: str = "Head of Engineering"
    policy_version: str = "1.0"
    effective_date: date | None = None


class Review(_S, frozen=True):
    approvals: PosInt = 1
    # Suggestion commits applied from a reviewer's suggestion don't make them a participant.
    allow_suggestion_commits: bool = False
    # A missing dismissal/staleness record on a forge without review commits is indeterminate.
    require_current_approval: bool = True


class SensitivePaths(_S, frozen=True):
    name: str
    patterns: tuple[str, ...]
    team: str
    approvals: PosInt = 1

    def __post_init__(self) -> None:
        if not self.patterns:
            raise ValueError(f"sensitive path class {self.name!r} needs at least one pattern")


class Rule(_S, frozen=True):
    """An override of the review requirements for some repositories, paths or risk level."""

    repos: tuple[str, ...] = ("*",)
    paths: tuple[str, ...] = ()
    risk: Literal["low", "medium", "high"] | None = None
    approvals: PosInt | None = None
    min_staging_soak_minutes: NonNegInt | None = None


class StandardChange(_S, frozen=True):
    """A bot "standard change" policy: only bot commits, only these paths, checks passed."""

    name: str
    authors: tuple[str, ...]
    paths: tuple[str, ...]


class Promotion(_S, frozen=True):
    """A promotion chain: changes reach `target` from `source` (e.g. release → main)."""

    source: str
    target: str


class Repository(_S, frozen=True):
    name: str  # "owner/repo" for forges; any label for a local repository
    platform: Literal["git", "github", "gitlab", "gerrit"] = "github"
    path: str | None = None  # local clone, for the git source
    controlled_branches: tuple[str, ...] | None = None


class Identities(_S, frozen=True):
    bots: tuple[str, ...] = ("dependabot[bot]", "renovate[bot]", "github-actions[bot]")
    service_accounts: tuple[str, ...] = ()
    ai_reviewers: tuple[str, ...] = (
        "copilot-pull-request-reviewer[bot]",
        "Copilot",
        "coderabbitai[bot]",
    )
    break_glass: tuple[str, ...] = ()
    web_flow_committers: tuple[str, ...] = ("web-flow", "GitHub <noreply@github.com>")


class Environments(_S, frozen=True):
    pre_production: tuple[str, ...] = ("staging",)
    production: tuple[str, ...] = ("production",)

    def __post_init__(self) -> None:
        overlap = set(self.pre_production) & set(self.production)
        if overlap:
            raise ValueError(
                f"environment {sorted(overlap)[0]!r} cannot be both pre-production and production"
            )
        if not self.production:
            raise ValueError("at least one production environment is required")


class Deployment(_S, frozen=True):
    model: Literal["auto_deploy", "manual_trigger", "release_manager"] = "auto_deploy"
    pipeline_identities: tuple[str, ...] = ("github-actions[bot]", "gitlab-ci")
    deployers: tuple[str, ...] = ()
    release_managers: tuple[str, ...] = ()
    allowed_production_identities: tuple[str, ...] = ("github-actions[bot]", "gitlab-ci")
    min_staging_soak_minutes: NonNegInt = 0


class Emergency(_S, frozen=True):
    approvers: tuple[str, ...] = ()
    labels: tuple[str, ...] = ("emergency", "hotfix-emergency")
    retro_review_hours: Annotated[int, msgspec.Meta(ge=24, le=72)] = 48
    remind_before_hours: NonNegInt = 12
    incident_patterns: tuple[str, ...] = (
        r"^INC-?\d+$",
        r"^[A-Z][A-Z0-9]+-\d+$",
        r"^P[A-Z0-9]{6}$",
        r"^https://[\w.-]+\.pagerduty\.com/incidents/\w+$",
    )
    slack_webhook_url: str | None = None
    webhook_url: str | None = None

    def __post_init__(self) -> None:
        for pat in self.incident_patterns:
            try:
                re.compile(pat)
            except re.error as exc:
                raise ValueError(
                    f"incident pattern {pat!r} is not a regular expression: {exc}"
                ) from None


class Testing(_S, frozen=True):
    allowed_conclusions: tuple[Literal["success", "skipped", "neutral"], ...] = (
        "success",
        "skipped",
    )
    # Used when no protection snapshot tells which checks are required.
    required_checks: tuple[str, ...] = ()
    dependency_scanning_checks: tuple[str, ...] = ()
    sast_checks: tuple[str, ...] = ()


class Patching(_S, frozen=True):
    critical_hours: Hours = 72
    high_hours: Hours = 14 * 24
    medium_hours: Hours = 30 * 24
    low_hours: Hours = 90 * 24
    scan_max_age_days: PosInt = 7
    critical_via_emergency: bool = True
    # tier for findings with no score and no label (pip-audit, OSV without severity); flagged
    # needs-triage on the patch board
    unscored_tier: Literal["critical", "high", "medium", "low"] = "medium"
    # longest a risk acceptance may run before it must be renewed (days)
    max_acceptance_days: PosInt = 180

    def __post_init__(self) -> None:
        if not self.critical_hours <= self.high_hours <= self.medium_hours <= self.low_hours:
            raise ValueError(
                "patch deadlines must not grow shorter as severity falls "
                "(critical ≤ high ≤ medium ≤ low)"
            )


class Documentation(_S, frozen=True):
    required_fields: tuple[
        Literal["description", "justification", "affected_systems", "risk", "testing", "rollback"],
        ...,
    ] = ("description", "risk", "testing", "rollback")
    # A change marked high risk must also hold these (CM-DOC-1).
    high_risk_required_fields: tuple[
        Literal["description", "justification", "affected_systems", "risk", "testing", "rollback"],
        ...,
    ] = (
        "description",
        "justification",
        "affected_systems",
        "risk",
        "testing",
        "rollback",
    )
    high_risk_approvals: PosInt = 2
    ticket_patterns: tuple[str, ...] = (r"\b[A-Z][A-Z0-9]+-\d+\b",)


class Infrastructure(_S, frozen=True):
    """Path classes and rules for infrastructure changes (CM-IAC-1..4)."""

    iac_paths: tuple[str, ...] = (
        "**/*.tf",
        "**/*.tf.json",
        "**/*.tfvars",
        "**/*.tfvars.json",
        "**/*.tofu",
        "**/.terraform.lock.hcl",
        "**/terragrunt.hcl",
        "**/Pulumi.*.yaml",
        "**/Pulumi.yaml",
        "**/cloudformation/**",
        "**/*.template.json",
        "**/*.template.yaml",
        "**/template.yaml",
        "**/cdk.json",
        "**/k8s/**",
        "**/kubernetes/**",
        "**/charts/**",
        "**/Chart.yaml",
        "**/kustomization.yaml",
        "**/kustomization.yml",
        "**/helmfile.yaml",
    )
    iam_paths: tuple[str, ...] = ("**/iam/**", "**/*policy*.json", "**/*-policy.tf")
    migration_paths: tuple[str, ...] = (
        "**/alembic/versions/*.py",
        "**/migrations/*.py",
        "**/db/migrate/*.rb",
        "**/db/migration/V*.sql",
        "**/db/migration/U*.sql",
        "**/db/migration/R__*.sql",
        "**/changelog/*.xml",
        "**/changelog/*.yaml",
        "**/changelog/*.sql",
        "**/db.changelog*",
        "**/prisma/migrations/**",
        "**/migrations/*.sql",
        "**/*.up.sql",
        "**/*.down.sql",
    )
    drift_max_age_days: PosInt = 7
    # Plan resource types that change access (privileged changes; shell-style globs).
    iam_resource_types: tuple[str, ...] = (
        "aws_iam_*",
        "aws_*_policy",
        "aws_ssoadmin_*",
        "google_*_iam_*",
        "azurerm_role_*",
        "azuread_*role*",
        "kubernetes_*role*",
    )
    # The sensitive-path rule for infrastructure: a team whose members must approve changes
    # to these paths (None = any independent reviewer), and how many of them.
    team: str | None = None
    team_approvals: PosInt = 1
    # IAM paths, and plans with IAM or destructive changes, need this many approvals.
    privileged_approvals: PosInt = 2


class GitHub(_S, frozen=True):
    """Where `changeproof collect github` reads from (github.com or GitHub Enterprise Server)."""

    org: str | None = None  # collect every repository of this organisation
    repos: tuple[str, ...] = ()  # or these "owner/name" repositories
    api_url: str = "https://api.github.com"  # Enterprise Server: https://HOST/api/v3
    token_env: str = "GITHUB_TOKEN"  # environment variable holding the token
    app_id: str | None = None  # GitHub App auth instead of a token
    app_private_key_path: str | None = None
    app_installation_id: str | None = None
    workers: Annotated[int, msgspec.Meta(ge=1, le=16)] = 4
    page_size: Annotated[int, msgspec.Meta(ge=1, le=100)] = 50
    archive_logs: bool = True  # SHA-256 of every CI run's log archive into the locker
    # `changeproof serve`: environment variable holding the webhook secret (never the secret)
    webhook_secret_env: str = "CHANGEPROOF_GITHUB_WEBHOOK_SECRET"


class GitLab(_S, frozen=True):
    """Where `changeproof collect gitlab` reads from (gitlab.com or self-managed)."""

    projects: tuple[str, ...] = ()  # "group/subgroup/project" paths
    api_url: str = "https://gitlab.com/api/v4"  # self-managed: https://HOST/api/v4
    token_env: str = "CHANGEPROOF_GITLAB_TOKEN"  # environment variable holding the token
    # `changeproof serve`: environment variable holding the webhook token (never the token)
    webhook_token_env: str = "CHANGEPROOF_GITLAB_WEBHOOK_TOKEN"


class Retention(_S, frozen=True):
    days: Annotated[int, msgspec.Meta(ge=30)] = 365


class Settings(_S, frozen=True):
    organisation: Organisation = Organisation()
    controlled_branches: tuple[str, ...] = ("main", "master")
    review: Review = Review()
    rules: tuple[Rule, ...] = ()
    sensitive_paths: tuple[SensitivePaths, ...] = (
        SensitivePaths(
            name="security-sensitive",
            patterns=(
                "**/auth/**",
                "**/payments/**",
                "**/export/**",
                ".github/workflows/**",
                "CODEOWNERS",
                ".github/CODEOWNERS",
                "changeproof.toml",
            ),
            team="security",
        ),
    )
    teams: dict[str, tuple[str, ...]] = msgspec.field(default_factory=lambda: {"security": ()})
    standard_changes: tuple[StandardChange, ...] = ()
    promotions: tuple[Promotion, ...] = ()
    repositories: tuple[Repository, ...] = ()
    identities: Identities = Identities()
    environments: Environments = Environments()
    deployment: Deployment = Deployment()
    emergency: Emergency = Emergency()
    testing: Testing = Testing()
    patching: Patching = Patching()
    documentation: Documentation = Documentation()
    infrastructure: Infrastructure = Infrastructure()
    retention: Retention = Retention()
    github: GitHub = GitHub()
    gitlab: GitLab = GitLab()

    def __post_init__(self) -> None:
        if not self.controlled_branches:
            raise ValueError("controlled_branches must name at least one branch")
        for sp in self.sensitive_paths:
            if sp.team not in self.teams:
                raise ValueError(
                    f"sensitive path class {sp.name!r} names team {sp.team!r}, "
                    f"which is not defined under [teams]"
                )

    # --- lookups -------------------------------------------------------------------------

    @property
    def version(self) -> str:
        """Digest of the effective settings: results record which settings judged them."""
        return digest(msgspec.to_builtins(self))

    def repository(self, name: str) -> Repository | None:
        for repo in self.repositories:
            if repo.name == name:
                return repo
        return None

    def platform_of(self, repo: str) -> str:
        r = self.repository(repo)
        return r.platform if r else "git"

    def is_controlled(self, repo: str, branch: str) -> bool:
        r = self.repository(repo)
        branches = (
            r.controlled_branches if r and r.controlled_branches else self.controlled_branches
        )
        return any(fnmatch.fnmatchcase(branch, pat) for pat in branches)

    def required_approvals(self, repo: str, paths: Sequence[str], risk: str | None) -> int:
        """N for a change: the most demanding of the base count and every matching rule."""
        n = self.review.approvals
        if risk == "high":
            n = max(n, self.documentation.high_risk_approvals)
        for rule in self.rules:
            if rule.approvals is None:
                continue
            if not any(fnmatch.fnmatchcase(repo, p) for p in rule.repos):
                continue
            if rule.risk is not None and rule.risk != risk:
                continue
            if rule.paths and not any(path_matches(p, rule.paths) for p in paths):
                continue
            n = max(n, rule.approvals)
        return n

    def is_not_human(self, login: str | None, actor_type: str = "user") -> bool:
        if actor_type in ("bot", "app", "ai", "service"):
            return True
        if not login:
            return False
        low = login.lower()
        if low.endswith("[bot]"):
            return True
        ids = self.identities
        return low in lowered_names((*ids.bots, *ids.service_accounts, *ids.ai_reviewers))


@functools.lru_cache(maxsize=256)
def lowered_names(names: tuple[str, ...]) -> frozenset[str]:
    return frozenset(x.lower() for x in names)


def path_matches(path: str, patterns: Sequence[str]) -> bool:
    """Glob match where ``**/`` also matches the top level (``**/auth/**`` matches ``auth/x``)."""
    return _globs(tuple(patterns))(path) is not None


@functools.lru_cache(maxsize=1024)
def _globs(patterns: tuple[str, ...]) -> Callable[[str], re.Match[str] | None]:
    # One compiled alternation per pattern set: the same answers as fnmatchcase per pattern,
    # without re-translating globs for every path of every change (the check streams millions).
    alts = [fnmatch.translate(p) for p in patterns]
    alts += [fnmatch.translate(p[3:]) for p in patterns if p.startswith("**/")]
    if not alts:
        return lambda _path: None
    return re.compile("|".join(f"(?:{a})" for a in alts)).match


_PATH_RE = re.compile(r" - at `\$(?P<path>[^`]*)`")


def _key_from_error(message: str) -> tuple[str, str]:
    m = _PATH_RE.search(message)
    if not m:
        return "(top level)", message
    path = m.group("path")
    key = re.sub(r"\[(\d+)\]", r"[\1]", path).lstrip(".") or "(top level)"
    return key, message[: m.start()]


ALLOWED_HINTS: dict[str, str] = {
    "review.approvals": "a whole number of at least 1",
    "emergency.retro_review_hours": "a whole number of hours from 24 to 72",
    "deployment.model": '"auto_deploy", "manual_trigger" or "release_manager"',
    "retention.days": "a whole number of days, at least 30",
}


_MISSING = object()


def _value_at(data: Any, key: str) -> Any:
    cur = data
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        try:
            cur = cur[int(part[1:-1])] if part.startswith("[") else cur[part]
        except (KeyError, IndexError, TypeError, ValueError):
            return _MISSING
    return cur


def parse_settings(data: dict[str, Any], source: str = SETTINGS_FILE) -> Settings:
    try:
        return msgspec.convert(data, Settings, strict=True)
    except msgspec.ValidationError as exc:
        key, problem = _key_from_error(str(exc))
        base_key = re.sub(r"\[\d+\]", "", key)
        allowed = ALLOWED_HINTS.get(base_key)
        if problem.startswith("Object contains unknown field"):
            field = problem.split("`")[1] if "`" in problem else "?"
            where = f"under [{key}]" if key != "(top level)" else "at the top level"
            raise ConfigError(
                f"{source}: unknown key {field!r} {where}",
                expected="only the keys documented in the commented file `changeproof init` writes",
                hint=f"remove or correct {field!r}; `changeproof init --print` shows every key",
            ) from None
        got = _value_at(data, key)
        shown = f" (got {got!r})" if got is not _MISSING else ""
        raise ConfigError(
            f"{source}: invalid value for {key}{shown}: {problem}",
            expected=allowed or "a value of the documented type",
            hint=f"edit {key} in {source}; `changeproof init --print` shows the defaults",
        ) from None


def load_settings(path: Path) -> Settings:
    """Load and validate a settings file; a missing file means the safe defaults."""
    if not path.exists():
        return Settings()
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})",
            hint="save the file as UTF-8, or run `changeproof init --force` to start over",
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid TOML ({exc})",
            expected="a complete TOML file; it may be half-written or corrupt",
            hint="fix the line named above, or run `changeproof init --force` to start over",
        ) from None
    return parse_settings(data, str(path))
