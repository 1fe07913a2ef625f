"""Terraform plan and Pulumi preview parsing over the real plans of the corpus (format 0.1 to
1.2, Terraform 0.13 to 1.9) and synthetic files for what the corpus lacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from changeproof.errors import InputFormatError
from changeproof.iac.pulumi import parse_preview
from changeproof.iac.terraform import MASK, parse_plan, pending_items
from changeproof.settings import Settings

FIX = Path(__file__).parent.parent / "fixtures" / "iac"
IAM = Settings().infrastructure.iam_resource_types


def plan(name: str):  # type: ignore[no-untyped-def]
    path = FIX / name
    return parse_plan(path.read_bytes(), str(path), IAM)


@pytest.mark.parametrize(
    ("name", "fv", "counts"),
    [
        ("checkov_for_each.json", "1.2", {"create": 5}),
        ("checkov_oidc_trust_policy.json", "1.2", {"create": 5, "read": 4}),
        ("checkov_change_keys.json", "1.1", {"update": 2}),
        ("checkov_plan_with_deleted_resources.json", "1.1", {"replace": 1}),
        ("checkov_nested_child_modules.json", "0.1", {"create": 3}),
        ("infracost_plan_with_target.json", "0.2", {"update": 1}),
        ("infracost_example_plan.json", "0.2", {"create": 2}),
        (
            "terraform_compliance_actions_regular.json",
            "0.1",
            {"create": 1, "no-op": 1, "update": 1},
        ),
    ],
)
def test_corpus_plans_counts(name: str, fv: str, counts: dict[str, int]) -> None:
    p = plan(name)
    assert p.format_version == fv
    assert p.counts == counts
    # no-op resources are counted but not kept
    assert len(p.resources) == sum(n for a, n in counts.items() if a != "no-op")


def test_timestamp_and_flags_of_a_1_2_plan() -> None:
    p = plan("checkov_for_each.json")
    assert p.planned_at is not None and p.planned_at.isoformat() == "2025-10-21T13:18:15+00:00"
    assert p.applyable is True and p.errored is False and p.complete is True
    assert p.terraform_version == "1.9.5"
    assert p.notes == ()


def test_bad_timestamp_is_a_note_not_a_guess() -> None:
    p = plan("checkov_oidc_trust_policy.json")
    assert p.planned_at is None
    assert any("not RFC 3339" in n for n in p.notes)


def test_iam_called_out_data_sources_are_not() -> None:
    p = plan("checkov_oidc_trust_policy.json")
    assert set(p.iam) == {
        "module.poc.aws_iam_openid_connect_provider.r5",
        'module.poc.aws_iam_role.r6["p1"]',
        'module.poc.aws_iam_role.r6["p2"]',
        'module.poc.aws_iam_role.r1["p1"]',
        'module.poc.aws_iam_role.r1["p2"]',
    }
    reads = [r for r in p.resources if r.action == "read"]
    assert len(reads) == 4 and not any(r.iam for r in reads)
    assert {r.action_reason for r in reads} == {
        "read_because_dependency_pending",
        "read_because_config_unknown",
    }
    # plans of the same resources without IAM types are not privileged
    assert plan("checkov_for_each.json").iam == ()


def test_create_delete_replace_is_destructive() -> None:
    p = plan("checkov_plan_with_deleted_resources.json")
    (r,) = p.resources
    assert r.action == "replace" and r.actions == ("create", "delete") and r.destructive
    assert p.destructive == ("aws_secretsmanager_secret.default",)


def test_resource_drift_of_a_real_plan() -> None:
    p = plan("infracost_plan_with_target.json")
    assert [d.address for d in p.drift] == ["aws_instance.web_app_1"]
    assert p.drift[0].actions == ("update",)


def test_replace_reason_paths_moved_and_sensitive_masking() -> None:
    p = plan("synthetic/plan_replace_iam_sensitive.json")
    assert p.counts == {"delete": 1, "move": 1, "replace": 1, "update": 1}
    db = next(r for r in p.resources if r.address == "aws_db_instance.main")
    assert db.action == "replace" and db.actions == ("delete", "create")
    assert db.action_reason == "replace_because_cannot_update"
    assert db.replace_paths == ("engine_version", "storage[0].type")
    assert p.iam == ("aws_iam_role_policy.deploy",)
    assert set(p.destructive) == {"aws_db_instance.main", "aws_instance.old_bastion"}
    assert p.moved == ("aws_s3_bucket.log → aws_s3_bucket.logs",)
    stored = p.masked.decode()
    # neither the sensitive attribute, the sensitive output nor variables reach the locker
    for secret in ("old-secret-pw", "new-secret-pw", "hunter2-variable"):
        assert secret not in stored
    doc = json.loads(stored)
    rc = next(x for x in doc["resource_changes"] if x["address"] == "aws_db_instance.main")
    assert rc["change"]["after"]["password"] == MASK
    assert rc["change"]["after"]["engine_version"] == "16.2"
    assert doc["output_changes"]["db_password"]["after"] == MASK
    assert doc["digest"] == p.digest


def test_digest_is_canonical_not_byte_identity(tmp_path: Path) -> None:
    src = FIX / "checkov_for_each.json"
    doc = json.loads(src.read_bytes())
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(doc, indent=4, sort_keys=False))
    a, b = plan("checkov_for_each.json"), parse_plan(pretty.read_bytes(), "pretty", IAM)
    assert a.digest == b.digest and a.changes_digest == b.changes_digest
    assert a.file_sha256 != b.file_sha256
    # one value of one resource changed: both digests and that resource's digest move
    doc["resource_changes"][0]["change"]["after"]["comment"] = "changed after review"
    c = parse_plan(json.dumps(doc).encode(), "changed", IAM)
    assert c.digest != a.digest and c.changes_digest != a.changes_digest
    differ = [
        x.address for x, y in zip(a.resources, c.resources, strict=True) if x.digest != y.digest
    ]
    assert differ == [a.resources[0].address]


def test_pending_items_exclude_reads_and_moves() -> None:
    p = plan("synthetic/plan_replace_iam_sensitive.json")
    assert {x.address for x in pending_items(p)} == {
        "aws_db_instance.main",
        "aws_iam_role_policy.deploy",
        "aws_instance.old_bastion",
    }
    assert pending_items(plan("checkov_oidc_trust_policy.json"))  # creates are pending
    assert all(x.cause == "pending" for x in pending_items(plan("checkov_for_each.json")))


def test_refresh_only_move_is_not_drift() -> None:
    p = plan("synthetic/refresh_only_drift.json")
    assert [d.address for d in p.drift] == ["aws_security_group.web"]
    assert p.moved == ("aws_s3_bucket.log → aws_s3_bucket.logs",)
    q = plan("synthetic/refresh_only_moved_only.json")
    assert q.drift == () and q.moved == ("aws_s3_bucket.log → aws_s3_bucket.logs",)


# --- bad input ----------------------------------------------------------------------------


def _bad(tmp_path: Path, data: bytes) -> str:
    f = tmp_path / "in.json"
    f.write_bytes(data)
    with pytest.raises(InputFormatError) as ei:
        parse_plan(f.read_bytes(), str(f), IAM)
    return str(ei.value)


def test_binary_plan_file(tmp_path: Path) -> None:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:  # the layout of a saved plan: a zip archive
        z.writestr("tfplan", b"\x00binary")
        z.writestr("tfstate", b"{}")
    msg = _bad(tmp_path, buf.getvalue())
    assert "binary plan file" in msg and "terraform show -json PLAN > plan.json" in msg


def test_state_files(tmp_path: Path) -> None:
    raw_state = {
        "version": 4,
        "terraform_version": "1.9.5",
        "serial": 7,
        "lineage": "3f1c",
        "outputs": {},
        "resources": [],
    }
    msg = _bad(tmp_path, json.dumps(raw_state).encode())
    assert "state file" in msg and "terraform show -json PLAN > plan.json" in msg
    shown_state = {
        "format_version": "1.0",
        "terraform_version": "1.9.5",
        "values": {"root_module": {}},
    }
    msg = _bad(tmp_path, json.dumps(shown_state).encode())
    assert "state" in msg and "terraform show -json PLAN > plan.json" in msg


@pytest.mark.parametrize("fv", ["2.0", "3.1", "x.y"])
def test_unsupported_format_version(tmp_path: Path, fv: str) -> None:
    msg = _bad(tmp_path, json.dumps({"format_version": fv, "resource_changes": []}).encode())
    assert fv in msg and "terraform show -json PLAN > plan.json" in msg


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"", "is empty"),
        (b"not json at all", "is not JSON"),
        (b"[1, 2]", "JSON list"),
        (b'{"resource_changes": []}', "no format_version"),
        (
            b'{"format_version": "1.2", "resource_changes": [{"address": "a.b", "change": {"actions": ["explode"]}}]}',
            "unknown action",
        ),
        (b'{"steps": [], "changeSummary": {}}', "pulumi"),
    ],
)
def test_other_bad_input(tmp_path: Path, data: bytes, text: str) -> None:
    assert text in _bad(tmp_path, data)


def test_errored_incomplete_and_deferred_are_noted() -> None:
    doc = json.loads((FIX / "checkov_for_each.json").read_bytes())
    doc.update(
        errored=True, complete=False, deferred_changes=[{"reason": "provider_config_unknown"}]
    )
    p = parse_plan(json.dumps(doc).encode(), "x", IAM)
    assert p.errored is True and p.complete is False
    text = " ".join(p.notes)
    assert "errored" in text and "incomplete" in text and "1 deferred" in text


def test_newer_minor_format_is_read_with_a_note() -> None:
    doc = json.loads((FIX / "checkov_for_each.json").read_bytes())
    doc["format_version"] = "1.3"
    p = parse_plan(json.dumps(doc).encode(), "newer", IAM)
    assert p.counts == {"create": 5} and any("newer than 1.2" in n for n in p.notes)


# --- pulumi -------------------------------------------------------------------------------


def test_pulumi_preview_changes() -> None:
    pv = parse_preview((FIX / "synthetic/pulumi_preview_changes.json").read_bytes(), "pv")
    assert pv.stack == "prod"
    assert pv.counts == {"replace": 1, "same": 1, "update": 1}
    assert {(c.type, c.actions) for c in pv.changes} == {
        ("aws:s3/bucket:Bucket", ("update",)),
        ("aws:rds/instance:Instance", ("replace",)),
    }
    clean = parse_preview((FIX / "synthetic/pulumi_preview_clean.json").read_bytes(), "pv")
    assert clean.changes == () and clean.stack == "prod"


def test_pulumi_bad_input() -> None:
    with pytest.raises(InputFormatError, match="Terraform plan"):
        parse_preview((FIX / "checkov_for_each.json").read_bytes(), "x")
    with pytest.raises(InputFormatError, match="pulumi preview --json"):
        parse_preview(b'{"hello": 1}', "x")
