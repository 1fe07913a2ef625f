"""Plans attached to changes, applies bound to plans (CM-IAC-2), drift checks (CM-IAC-3) and
infrastructure review (CM-IAC-1), end to end through the CLI on a real store and locker.

Review evidence comes from a forge; here the reviewed changes are written to the store as a
forge collector would write them (the git source alone never proves an approval)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from changeproof.evidence import (
    Actor,
    Change,
    CommitInfo,
    FileChange,
    Provenance,
    Review,
    canonical_json,
)
from changeproof.locker import Locker
from changeproof.workspace import Workspace
from tests.iac.helpers import Cli

FIX = Path(__file__).parent.parent / "fixtures" / "iac"
FOR_EACH = FIX / "checkov_for_each.json"  # planned 2025-10-21T13:18:15Z, 5 creates
OIDC = FIX / "checkov_oidc_trust_policy.json"  # IAM roles, no usable timestamp
T = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
HEAD = "a" * 40
MERGE = "b" * 40
BOB = Actor(login="bob", email="bob@example.com")


def put_change(
    ws: Workspace,
    number: int,
    files: tuple[str, ...] = ("infra/main.tf",),
    approvers: tuple[tuple[str, datetime], ...] = (("carol", T + timedelta(hours=1)),),
    merged_at: datetime = T + timedelta(hours=2),
    repo: str = "acme/infra",
) -> Change:
    head = f"{number:02d}" + HEAD[2:]
    merge = f"{number:02d}" + MERGE[2:]
    commit = CommitInfo(
        sha=head,
        parents=("c" * 40,),
        author=BOB,
        committer=BOB,
        authored_at=T,
        committed_at=T,
        message="change infrastructure",
    )
    store = ws.open_store()
    try:
        with store.writer(Locker(ws.signer())) as w:
            raw = w.put_raw(
                canonical_json({"test": "change", "n": number}), kind="test.change", source="github"
            )
            c = Change(
                repo=repo,
                branch="main",
                number=number,
                change_type="merge",
                platform="github",
                merged_at=merged_at,
                merge_sha=merge,
                landed_shas=(merge,),
                base_sha="c" * 40,
                head_sha=head,
                title=f"change {number}",
                author=BOB,
                merged_by=BOB,
                merge_method="merge",
                commits=(commit,),
                reviews=tuple(
                    Review(
                        reviewer=Actor(login=who),
                        state="APPROVED",
                        submitted_at=at,
                        commit_sha=head,
                    )
                    for who, at in approvers
                ),
                files=tuple(FileChange(path=p, status="modified") for p in files),
                provenance=Provenance(
                    source="github", occurred_at=merged_at, collected_at=merged_at, raw_sha256=raw
                ),
            )
            w.put(c)
    finally:
        store.close()
    return c


@pytest.fixture
def cli(workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(workspace, capsys)


def at(h: float) -> str:
    return (T + timedelta(hours=h)).isoformat()


def changed_one_resource(tmp_path: Path) -> Path:
    doc = json.loads(FOR_EACH.read_bytes())
    rc = next(
        r
        for r in doc["resource_changes"]
        if r["address"] == 'aws_route53_zone.example["example2.eu"]'
    )
    rc["change"]["after"]["comment"] = "edited after review"
    out = tmp_path / "applied.json"
    out.write_text(json.dumps(doc))
    return out


def test_ingest_plan_json_counts_and_text(cli: Cli, workspace: Workspace) -> None:
    put_change(workspace, 7)
    out = cli.json(
        "ingest",
        "terraform-plan",
        str(FOR_EACH),
        "--repo",
        "acme/infra",
        "--change",
        "7",
        "--workspace",
        "prod",
    )
    assert out["counts"] == {"create": 5}
    assert out["change"] == "acme/infra#7" and out["workspace"] == "prod"
    assert out["planned_at"] == "2025-10-21T13:18:15+00:00"
    text = cli.ok(
        "ingest",
        "terraform-plan",
        str(OIDC),
        "--repo",
        "acme/infra",
        "--commit",
        "07" + MERGE[2:12],
    )
    assert "attached to acme/infra#7" in text and "5 to create, 4 to read" in text
    assert "IAM (privileged)" in text and "aws_iam_role" in text
    replace = cli.json(
        "ingest",
        "terraform-plan",
        str(FIX / "synthetic/plan_replace_iam_sensitive.json"),
        "--repo",
        "acme/infra",
        "--change",
        "7",
    )
    assert replace["replace"] == [
        {
            "address": "aws_db_instance.main",
            "action_reason": "replace_because_cannot_update",
            "replace_paths": ["engine_version", "storage[0].type"],
        }
    ]
    assert set(replace["destructive"]) == {"aws_db_instance.main", "aws_instance.old_bastion"}


def test_applied_plan_is_the_reviewed_plan(cli: Cli, workspace: Workspace, tmp_path: Path) -> None:
    put_change(workspace, 7)
    cli.ok(
        "ingest",
        "terraform-plan",
        str(FOR_EACH),
        "--repo",
        "acme/infra",
        "--change",
        "7",
        "--workspace",
        "prod",
    )
    # the same plan, re-serialised by `terraform show -json` on the apply runner
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(json.loads(FOR_EACH.read_bytes()), indent=2))
    a = cli.json(
        "record",
        "apply",
        "--plan",
        str(pretty),
        "--env",
        "production",
        "--repo",
        "acme/infra",
        "--workspace",
        "prod",
        "--at",
        at(3),
    )
    assert a["counts"] == {"create": 5}
    r = cli.results("CM-IAC-2")
    (res,) = r.values()
    assert res["outcome"] == "pass", res["reasons"]
    assert "acme/infra#7" in res["reasons"][0]


def test_applied_plan_differs_by_one_resource(
    cli: Cli, workspace: Workspace, tmp_path: Path
) -> None:
    put_change(workspace, 7)
    cli.ok(
        "ingest",
        "terraform-plan",
        str(FOR_EACH),
        "--repo",
        "acme/infra",
        "--change",
        "7",
        "--workspace",
        "prod",
    )
    cli.ok(
        "record",
        "apply",
        "--plan",
        str(changed_one_resource(tmp_path)),
        "--env",
        "production",
        "--repo",
        "acme/infra",
        "--workspace",
        "prod",
        "--at",
        at(3),
    )
    (res,) = cli.results("CM-IAC-2").values()
    assert res["outcome"] == "fail"
    assert "1 resource(s) differ" in res["reasons"][0]
    assert res["reasons"][1:] == [
        'aws_route53_zone.example["example2.eu"]: create with different values than reviewed'
    ]
    assert res["remediation"]


@pytest.mark.parametrize(
    ("overrides", "change_kw", "expect", "text"),
    [
        ({"--plan": None, "--no-plan": ""}, {}, "fail", "without a saved plan"),
        ({"--at": at(0.5)}, {}, "fail", "before acme/infra#7 was approved"),
        ({"--env": "staging"}, {}, "not_applicable", "not a production"),
        ({"--workspace": "dev"}, {}, "fail", "made for workspace prod"),
        (
            {},
            {"approvers": (("carol", datetime(2025, 10, 20, tzinfo=UTC)),)},
            "fail",
            "predate the plan",
        ),
        ({}, {"approvers": ()}, "fail", "0 of 1 required"),
        ({"--at": "2025-10-21T13:00:00Z"}, {}, "fail", "after the apply"),
    ],
)
def test_apply_rules(
    cli: Cli,
    workspace: Workspace,
    overrides: dict[str, str | None],
    change_kw: dict[str, object],
    expect: str,
    text: str,
) -> None:
    put_change(workspace, 7, **change_kw)  # type: ignore[arg-type]
    cli.ok(
        "ingest",
        "terraform-plan",
        str(FOR_EACH),
        "--repo",
        "acme/infra",
        "--change",
        "7",
        "--workspace",
        "prod",
    )
    opts: dict[str, str | None] = {
        "--plan": str(FOR_EACH),
        "--env": "production",
        "--workspace": "prod",
        "--at": at(3),
        **overrides,
    }
    args = [x for k, v in opts.items() if v is not None for x in ((k, v) if v else (k,))]
    cli.ok("record", "apply", *args, "--repo", "acme/infra")
    (res,) = cli.results("CM-IAC-2").values()
    assert res["outcome"] == expect, res["reasons"]
    assert text in " ".join(res["reasons"])


def test_privileged_plan_needs_two_approvals(cli: Cli, workspace: Workspace) -> None:
    put_change(workspace, 7)  # one approval
    put_change(
        workspace,
        8,
        approvers=(("carol", T + timedelta(hours=1)), ("dave", T + timedelta(hours=1.5))),
    )
    cli.ok(
        "ingest",
        "terraform-plan",
        str(OIDC),
        "--repo",
        "acme/infra",
        "--change",
        "7",
        "--workspace",
        "a",
    )
    cli.ok(
        "ingest",
        "terraform-plan",
        str(OIDC),
        "--repo",
        "acme/infra",
        "--change",
        "8",
        "--workspace",
        "b",
    )
    cli.ok(
        "record",
        "apply",
        "--plan",
        str(OIDC),
        "--env",
        "production",
        "--repo",
        "acme/infra",
        "--workspace",
        "a",
        "--at",
        at(3),
    )
    cli.ok(
        "record",
        "apply",
        "--plan",
        str(OIDC),
        "--env",
        "production",
        "--repo",
        "acme/infra",
        "--workspace",
        "b",
        "--at",
        at(3.5),
    )
    r = {k.split("|")[1]: v for k, v in cli.results("CM-IAC-2").items()}
    assert r["a"]["outcome"] == "fail" and "1 of 2 required" in r["a"]["reasons"][0]
    assert "IAM/destructive" in r["a"]["reasons"][0]
    assert r["b"]["outcome"] == "pass", r["b"]["reasons"]
    assert "no timestamp" in r["b"]["reasons"][0]


def test_plan_of_an_uncollected_change(cli: Cli, workspace: Workspace) -> None:
    put_change(workspace, 1)
    out = cli.ok(
        "ingest", "terraform-plan", str(FOR_EACH), "--repo", "acme/infra", "--change", "99"
    )
    assert "not collected yet" in out
    cli.ok(
        "record",
        "apply",
        "--plan",
        str(FOR_EACH),
        "--env",
        "production",
        "--repo",
        "acme/infra",
        "--at",
        at(3),
    )
    (res,) = cli.results("CM-IAC-2").values()
    assert res["outcome"] == "indeterminate" and "acme/infra#99" in res["reasons"][0]


def _counts(ws: Workspace) -> tuple[int, ...]:
    import sqlalchemy as sa

    from changeproof.store import schema

    store = ws.open_store()
    try:
        with store.connect() as conn:
            lock = conn.execute(
                sa.select(sa.func.count()).select_from(schema.locker_objects)
            ).scalar_one()
        return (store.count("plan"), store.count("apply"), store.count("drift"), int(lock))
    finally:
        store.close()


def test_bad_input_exit_2_and_nothing_written(
    cli: Cli, workspace: Workspace, tmp_path: Path
) -> None:
    import io
    import zipfile

    put_change(workspace, 7)
    before = _counts(workspace)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("tfplan", b"\x00")
    binary = tmp_path / "tfplan"
    binary.write_bytes(buf.getvalue())
    state = tmp_path / "terraform.tfstate"
    state.write_text(json.dumps({"version": 4, "serial": 1, "lineage": "x", "resources": []}))
    v2 = tmp_path / "v2.json"
    v2.write_text(json.dumps({"format_version": "2.0", "resource_changes": []}))
    for f in (binary, state, v2):
        for cmd in (
            ["ingest", "terraform-plan", str(f), "--repo", "acme/infra", "--change", "7"],
            ["record", "apply", "--plan", str(f), "--env", "production", "--repo", "acme/infra"],
            ["ingest", "drift", str(f), "--repo", "acme/infra", "--workspace", "prod"],
        ):
            rc, _, err = cli(*cmd)
            assert rc == 2, (cmd, err)
            assert "terraform show -json PLAN > plan.json" in err, err
    rc, _, err = cli(
        "ingest", "terraform-plan", str(FOR_EACH), "--repo", "acme/infra", "--commit", "f" * 12
    )
    assert rc == 2 and "no collected change" in err and "--change N" in err
    rc, _, err = cli("ingest", "terraform-plan", str(FOR_EACH), "--repo", "acme/infra")
    assert rc == 2 and "--change N or --commit SHA" in err
    rc, _, err = cli("record", "apply", "--env", "production", "--repo", "acme/infra")
    assert rc == 2 and "--no-plan" in err
    rc, _, err = cli(
        "ingest", "drift", "--exit-code", "3", "--repo", "acme/infra", "--workspace", "p"
    )
    assert rc == 2 and "detailed-exitcode" in err
    rc, _, err = cli("ingest", "pulumi-preview", str(FOR_EACH), "--repo", "acme/infra")
    assert rc == 2 and "Terraform plan" in err
    assert _counts(workspace) == before


# --- drift ----------------------------------------------------------------------------------


def test_drift_checks_and_age_limit(cli: Cli, workspace: Workspace) -> None:
    put_change(workspace, 1)  # `check` needs a collected repository
    syn = FIX / "synthetic"
    d = cli.json(
        "ingest",
        "drift",
        str(syn / "refresh_only_drift.json"),
        "--refresh-only",
        "--exit-code",
        "2",
        "--repo",
        "acme/infra",
        "--workspace",
        "prod",
    )
    assert d["status"] == "drift" and [x["address"] for x in d["drifted"]] == [
        "aws_security_group.web"
    ]
    assert d["moved"] == ["aws_s3_bucket.log → aws_s3_bucket.logs"]
    m = cli.json(
        "ingest",
        "drift",
        str(syn / "refresh_only_moved_only.json"),
        "--refresh-only",
        "--exit-code",
        "2",
        "--repo",
        "acme/infra",
        "--workspace",
        "stage",
    )
    assert m["status"] == "clean" and any("move-only" in n for n in m["notes"])
    cli.ok(
        "ingest",
        "drift",
        "--exit-code",
        "2",
        "--repo",
        "acme/infra",
        "--workspace",
        "prod",
        "--at",
        "2026-03-10T06:00:00Z",
    )

    def outcome(as_of: str) -> dict[str, tuple[str, str]]:
        r = cli.results("CM-IAC-3", "--as-of", as_of)
        return {k: (v["outcome"], " ".join(v["reasons"])) for k, v in r.items()}

    o = outcome("2026-03-07T00:00:00Z")
    assert o["acme/infra:prod"][0] == "pass" and "within the 7-day limit" in o["acme/infra:prod"][1]
    assert o["acme/infra:stage"][0] == "pass"
    o = outcome("2026-03-13T00:00:00Z")
    assert o["acme/infra:prod"][0] == "fail"
    assert "since 2026-03-05T06:00:00+00:00" in o["acme/infra:prod"][1]
    # an accepted-drift exception covers it (shown as exception, never pass)
    cli.ok(
        "record",
        "exception",
        "--control",
        "CM-IAC-3",
        "--subject",
        "acme/infra:prod",
        "--reason",
        "drift accepted while the vendor fixes the provider",
        "--approver",
        "ciso",
        "--at",
        "2026-03-12T00:00:00Z",
        "--expires",
        "2026-03-13T12:00:00Z",
    )
    assert outcome("2026-03-13T00:00:00Z")["acme/infra:prod"][0] == "exception"
    cli.ok(
        "ingest",
        "drift",
        "--exit-code",
        "0",
        "--repo",
        "acme/infra",
        "--workspace",
        "prod",
        "--at",
        "2026-03-13T06:00:00Z",
    )
    o = outcome("2026-03-14T00:00:00Z")
    assert o["acme/infra:prod"][0] == "pass" and "resolved" in o["acme/infra:prod"][1]
    # no check for longer than the limit: drift could be there unseen
    o = outcome("2026-03-30T00:00:00Z")
    assert o["acme/infra:prod"][0] == "indeterminate"
    cli.ok(
        "ingest",
        "drift",
        "--exit-code",
        "1",
        "--repo",
        "acme/infra",
        "--workspace",
        "broken",
        "--at",
        "2026-03-29T06:00:00Z",
    )
    o = outcome("2026-03-30T00:00:00Z")
    assert o["acme/infra:broken"][0] == "indeterminate" and "errored" in o["acme/infra:broken"][1]


def test_normal_plan_as_drift_check_counts_pending_changes(cli: Cli) -> None:
    d = cli.json(
        "ingest",
        "drift",
        str(FIX / "infracost_plan_with_target.json"),
        "--exit-code",
        "2",
        "--repo",
        "acme/infra",
        "--workspace",
        "w",
        "--at",
        "2026-03-01T00:00:00Z",
    )
    assert d["mode"] == "plan" and d["status"] == "drift"
    assert {(x["address"], x["cause"]) for x in d["drifted"]} == {
        ("aws_instance.web_app_1", "drift"),
        ("aws_instance.web_app_1", "pending"),
    }


def test_pulumi_preview_drift(cli: Cli, workspace: Workspace) -> None:
    put_change(workspace, 1)
    syn = FIX / "synthetic"
    d = cli.json(
        "ingest",
        "pulumi-preview",
        str(syn / "pulumi_preview_changes.json"),
        "--repo",
        "acme/infra",
        "--at",
        "2026-03-01T00:00:00Z",
    )
    assert d["workspace"] == "prod" and d["tool"] == "pulumi" and d["status"] == "drift"
    assert d["counts"] == {"replace": 1, "same": 1, "update": 1}
    c = cli.json(
        "ingest",
        "pulumi-preview",
        str(syn / "pulumi_preview_clean.json"),
        "--repo",
        "acme/infra",
        "--stack",
        "prod",
        "--at",
        "2026-03-02T00:00:00Z",
    )
    assert c["status"] == "clean"
    r = cli.results("CM-IAC-3", "--as-of", "2026-03-03T00:00:00Z")
    assert r["acme/infra:prod"]["outcome"] == "pass"


# --- CM-IAC-1 -------------------------------------------------------------------------------


def test_infrastructure_review(cli: Cli, workspace: Workspace) -> None:
    put_change(workspace, 1, files=("infra/main.tf",))
    put_change(workspace, 2, files=("infra/iam/deploy-policy.json",))
    put_change(workspace, 3, files=("app/main.py",))
    put_change(workspace, 4, files=("k8s/deploy.yaml",), approvers=())
    r = cli.results("CM-IAC-1")
    assert r["acme/infra#1"]["outcome"] == "pass"
    assert r["acme/infra#2"]["outcome"] == "fail"
    assert "IAM policy paths need 2" in r["acme/infra#2"]["reasons"][0]
    assert r["acme/infra#3"]["outcome"] == "not_applicable"
    assert r["acme/infra#4"]["outcome"] == "fail"
    assert "CM-REV-1" in r["acme/infra#4"]["reasons"][0]
    # the team rule, configured: carol is not on the platform team
    workspace.config_path.write_text(
        '[teams]\nsecurity = []\nplatform = ["dave"]\n\n[infrastructure]\nteam = "platform"\n'
    )
    r = cli.results("CM-IAC-1")
    assert r["acme/infra#1"]["outcome"] == "fail"
    assert "team platform" in r["acme/infra#1"]["reasons"][0]
