"""The audit package end to end: population, reconciliation, sample, pages, signed manifest,
the auditor's standard-tool commands, OSCAL, and offline verification against tampering."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from changeproof.audit import sampling, verify_package
from changeproof.audit.package import read_select_file
from changeproof.errors import UsageError
from changeproof.locker import Signer
from changeproof.workspace import Workspace
from tests.audit.builders import T0
from tests.audit.conftest import AuditFn

OSCAL = Path("/work/shared/corpus/external/usnistgov-OSCAL/json/schema")
FIXTURES = Path(__file__).parent / "fixtures"


def rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def test_population_reconciliation_and_sample(audit: AuditFn) -> None:
    res = audit()
    pkg = res.out
    pop = rows(pkg / "population/population.csv")
    ids = {r["id"] for r in pop}
    # git: initial commit, PR #1 merge, the direct push; forge: 60 PRs
    assert len(pop) == 63 == res.population["changes"]
    assert "acme/tool#1" in ids and "acme/api#60" in ids
    direct = [r for r in pop if r["change_type"] == "direct_push"]
    assert len(direct) == 1 and direct[0]["repo"] == "acme/tool"
    # canonical files and their digests are recorded
    meta = json.loads((pkg / "audit.json").read_text())
    assert (
        meta["population"]["csv_sha256"]
        == hashlib.sha256((pkg / "population/population.csv").read_bytes()).hexdigest()
    )
    assert (
        meta["population"]["json_sha256"]
        == hashlib.sha256((pkg / "population/population.json").read_bytes()).hexdigest()
    )
    assert meta["operator"] == "auditor@test" and meta["period"]["time_zone"] == "UTC"
    assert (
        meta["period"]["start"] == "2026-01-01T00:00:00Z"
        and meta["period"]["end"] == "2026-02-01T00:00:00Z"
    )
    assert len(json.loads((pkg / "population/population.json").read_text())) == 63
    # emergency changes are their own population
    emergency = {r["id"] for r in pop if r["population"] == "emergency"}
    assert emergency == {"acme/api#10", "acme/api#20"}
    assert {r["id"] for r in rows(pkg / "population/emergency.csv")} == emergency
    # every unmatched item is listed
    un = rows(pkg / "reconciliation/unmatched.csv")
    cats: dict[str, set[str]] = {}
    for u in un:
        cats.setdefault(u["category"], set()).add(u["item"])
    assert cats["direct push"] == {direct[0]["id"]}
    assert cats["deployment without a change"] == {"dep-rogue"}
    assert "acme/tool#1" in cats["change never deployed"]  # acme/tool has no deployments at all
    assert "acme/api#59" not in cats["change never deployed"]  # shipped by the deploy of #60
    assert "acme/api#5" in cats["change without a ticket"]
    # configuration history: the snapshot in force at the start, and the weakening inside
    cfg = rows(pkg / "reconciliation/configuration-history.csv")
    assert len(cfg) == 2
    assert cfg[0]["change"] == "in force at the start of the period"
    assert "required_approvals: 2 → 1" in cfg[1]["change"]
    assert [b["id"] for b in rows(pkg / "reconciliation/bypasses.csv")] == ["byp-1"]
    assert {r["id"] for r in rows(pkg / "reconciliation/emergency-records.csv")} == {
        "EMG-10",
        "EMG-20",
    }
    # the sample: statistical size per population, recorded with its parameters
    plans = meta["sample"]
    assert plans["standard"]["population"] == 61 and plans["emergency"]["population"] == 2
    assert plans["standard"]["size"] == sampling.hypergeometric_size(0.05, 0.10, 61) == 21 < 29
    assert plans["emergency"]["size"] == 2
    assert plans["standard"]["seed"] == "fixed-seed"
    sample = rows(pkg / "sample/sample.csv")
    assert len(sample) == 23 == len(res.sample)
    # worksheet: a row per sampled change, outcome + reason column per attribute
    ws = rows(pkg / "worksheet.csv")
    assert [w["id"] for w in ws] == [s["id"] for s in sample]
    assert "CM-REV-1" in ws[0] and "CM-REV-1 reason" in ws[0]
    for w in ws:
        assert w["CM-REV-1"] in ("pass", "fail", "n/a", "exception", "indeterminate")
        assert w["CM-REV-1 reason"]
        assert (pkg / w["evidence_page"]).is_file()
    by = {w["id"]: w for w in ws}
    for cid, w in by.items():
        n = int(cid.rsplit("#", 1)[1]) if cid.startswith("acme/api#") else None
        if n is not None and n % 7 == 0:
            assert w["CM-REV-1"] == "fail" and w["deviation"] == "yes"
        elif n is not None:
            assert w["CM-REV-1"] == "pass", w["CM-REV-1 reason"]
    # controls and settings in force
    ctl = rows(pkg / "controls.csv")
    assert {"CM-REV-1", "CM-REV-5"} <= {c["id"] for c in ctl}
    assert all((pkg / f"controls/definitions/{c['id']}.toml").is_file() for c in ctl)
    assert (
        json.loads((pkg / "settings/effective-settings.json").read_text())["review"]["approvals"]
        == 1
    )


def test_evidence_page_shows_the_change_and_links_raw_evidence(audit: AuditFn) -> None:
    res = audit(
        select=("acme/api#20", "acme/api#21", "acme/tool#1"), seed=None, select_source="list.txt"
    )
    pkg = res.out
    assert res.sample == ["acme/api#21", "acme/tool#1", "acme/api#20"]
    page = next((pkg / "changes").glob("acme_api_20-*.html")).read_text()
    assert "EMG-20" in page and "INC-20" in page and "RR-20" in page  # emergency + retro review
    # the authorisation record of the deployment (of #21) that shipped #20
    auth = page[page.index("<h2>Authorisation record</h2>") : page.index("<h2>Emergency record")]
    assert "gate_decision" in auth and "gate-acme/api-21" in auth and "acme/api#20" in auth
    assert "bob" in page and "APPROVED" in page
    head = hashlib.sha1(b"head20").hexdigest()
    assert head in page  # the approved commit
    assert "dep-acme/api-21-staging" in page or "staging" in page
    assert page.index(">staging<") < page.index(">production<")  # pre-production first
    assert "staging ran the same artifact as production, and started before it" in page
    # every linked record and raw file is in the package with the digest it is named by
    for link in set(re.findall(r'href="\.\./(evidence/[^"]+)"', page)):
        data = (pkg / link).read_bytes()
        name = Path(link).name.removesuffix(".json")
        assert hashlib.sha256(data).hexdigest() == name
    seg = json.loads((pkg / "evidence/locker-segment.json").read_text())
    assert seg["entries"] and seg["checkpoint"]["seq"] >= max(e["seq"] for e in seg["entries"])
    for e in seg["entries"]:
        line = f"changeproof-locker-v1\n{e['seq']}\n{e['digest']}\n{e['kind']}\n{e['source']}\n{e['recorded_us']}\n{e['prev_hash']}\n"
        assert hashlib.sha256(line.encode()).hexdigest() == e["entry_hash"]
    git_page = next((pkg / "changes").glob("acme_tool_1-*.html")).read_text()
    assert "No review evidence was collected" in git_page
    plans = json.loads((pkg / "audit.json").read_text())["sample"]
    assert plans["standard"]["method"].startswith("auditor-supplied list")


def test_select_file_errors(audit: AuditFn, tmp_path: Path) -> None:
    f = tmp_path / "ids.txt"
    f.write_text("# auditor's picks\nacme/api#3\n\nacme/api#3\nacme/api#999\n")
    ids = read_select_file(f)
    assert ids == ("acme/api#3", "acme/api#999")
    with pytest.raises(UsageError, match=r"acme/api#999"):
        audit(select=ids, seed=None)
    assert not (tmp_path / "pkg").exists()  # nothing half-written
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pkg")]
    f.write_text("\n# nothing\n")
    with pytest.raises(UsageError, match="names no change"):
        read_select_file(f)


def test_same_seed_same_sample_whatever_the_store_order(tmp_path: Path) -> None:
    from changeproof.audit import AuditRequest, run_audit
    from changeproof.settings import Settings
    from changeproof.store import Store
    from tests.audit.builders import fill_forge

    samples = []
    for i, order in enumerate(
        (list(range(1, 81)), list(range(80, 0, -1)), list(range(1, 81, 2)) + list(range(2, 81, 2)))
    ):
        ws = Workspace.resolve(str(tmp_path / f"ws{i}"), None, str(tmp_path / "none.toml"))
        ws.ensure_home()
        store = Store.open(ws.db_url)
        fill_forge(ws, store, 80, order=order)
        for seed in ("s1", "s2"):
            req = AuditRequest(
                start=T0,
                end=T0 + timedelta(days=31),
                period_text="p",
                tz="UTC",
                out=tmp_path / f"p{i}{seed}",
                operator="a@b",
                now=T0 + timedelta(days=40),
                seed=seed,
                pdf=False,
            )
            samples.append((i, seed, run_audit(store, Settings(), ws.signer(), req).sample))
        store.close()
    s1 = [s for _, seed, s in samples if seed == "s1"]
    s2 = [s for _, seed, s in samples if seed == "s2"]
    assert s1[0] == s1[1] == s1[2]
    assert s2[0] == s2[1] == s2[2]
    assert s1[0] != s2[0]


def test_out_folder_must_be_new_or_empty(audit: AuditFn, tmp_path: Path) -> None:
    out = tmp_path / "used"
    out.mkdir()
    (out / "old.txt").write_text("x")
    with pytest.raises(UsageError, match="not empty"):
        audit(out=out)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert audit(out=empty).out == empty.absolute()


# --- verification ------------------------------------------------------------------------


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _tamper_changed(p: Path) -> str:
    f = p / "worksheet.csv"
    f.write_text(f.read_text().replace(",fail,", ",pass,", 1))
    return "worksheet.csv: changed"


def _tamper_missing(p: Path) -> str:
    victim = sorted((p / "changes").iterdir())[0]
    victim.unlink()
    return f"changes/{victim.name}: missing"


def _tamper_added(p: Path) -> str:
    (p / "evidence" / "raw" / "extra-evidence.json").write_text("{}")
    return "evidence/raw/extra-evidence.json: added"


def _tamper_signature(p: Path) -> str:
    _flip(p / "manifest.json.sig")
    return "manifest.json: bad signature"


def _tamper_manifest(p: Path) -> str:
    m = json.loads((p / "manifest.json").read_text())
    target = next(f for f in m["files"] if f["path"] == "worksheet.csv")
    target["sha256"] = hashlib.sha256(b"forged").hexdigest()
    (p / "manifest.json").write_text(json.dumps(m, indent=2))
    return "manifest.json: bad signature"


def _tamper_sums(p: Path) -> str:
    f = p / "SHA256SUMS"
    f.write_text(f.read_text().replace("worksheet.csv", "worksheet.csv.old"))
    return "SHA256SUMS: changed"


def _tamper_resign(p: Path) -> str:
    """An attacker edits a file and re-signs everything with their own key."""
    from changeproof.audit.package import AuditRequest as _Req
    from changeproof.audit.package import _sign

    _tamper_changed(p)
    for n in ("manifest.json", "manifest.json.sig", "SHA256SUMS", "SHA256SUMS.sig"):
        (p / n).unlink()
    evil = Signer.generate(p.parent / "evil-keys")
    (p / "public-key.pem").write_bytes(evil.public_pem)
    _sign(evil, p, _Req(start=T0, end=T0, period_text="", tz="UTC", out=p, operator="x", now=T0))
    return "not the pinned key"


TAMPERING = {
    "changed file": _tamper_changed,
    "missing file": _tamper_missing,
    "added file": _tamper_added,
    "bad signature": _tamper_signature,
    "manifest edited": _tamper_manifest,
    "checksum list edited": _tamper_sums,
    "re-signed with another key": _tamper_resign,
}


def test_intact_package_verifies(audit: AuditFn, workspace: Workspace) -> None:
    res = audit(zip=True)
    for target in (res.out, res.zip_path):
        assert target is not None
        rep = verify_package(target, trusted_key=workspace.public_key_pem())
        assert rep.ok, rep.problems
        assert rep.files == len(json.loads((res.out / "manifest.json").read_text())["files"])


@pytest.mark.parametrize("kind", list(TAMPERING))
def test_every_kind_of_tampering_is_named(audit: AuditFn, workspace: Workspace, kind: str) -> None:
    res = audit()
    expected = TAMPERING[kind](res.out)
    rep = verify_package(res.out, trusted_key=workspace.public_key_pem())
    assert not rep.ok
    assert any(expected in p for p in rep.problems), rep.problems


def test_tampered_zip_is_named(audit: AuditFn, tmp_path: Path) -> None:
    res = audit(zip=True)
    assert res.zip_path is not None
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(res.zip_path) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/worksheet.csv"):
                data = data.replace(b",fail,", b",pass,", 1)
            dst.writestr(info, data)
        dst.writestr("pkg/smuggled.txt", b"x")
    rep = verify_package(bad)
    assert any("worksheet.csv: changed" in p for p in rep.problems)
    assert any("smuggled.txt: added" in p for p in rep.problems)


def test_not_a_package_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(UsageError, match=r"manifest\.json"):
        verify_package(tmp_path / "d")
    (tmp_path / "f.zip").write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="neither a folder nor a zip"):
        verify_package(tmp_path / "f.zip")


# --- the auditor's standard tools ----------------------------------------------------------


def _verify_md_commands(pkg: Path) -> list[str]:
    """The indented command lines of VERIFY.md, exactly as the auditor would paste them."""
    text = (pkg / "VERIFY.md").read_text()
    return [
        ln[4:]
        for ln in text.splitlines()
        if ln.startswith("    ") and not ln.startswith("    changeproof")
    ]


def _bash(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script], cwd=cwd, capture_output=True, text=True, check=False, timeout=120
    )


@pytest.mark.skipif(
    shutil.which("openssl") is None or shutil.which("sha256sum") is None,
    reason="needs openssl and sha256sum",
)
def test_verify_md_commands_work_with_openssl_and_sha256sum(
    audit: AuditFn, workspace: Workspace
) -> None:
    res = audit()
    pkg = res.out
    cmds = _verify_md_commands(pkg)
    fp_cmd = next(c for c in cmds if c.startswith("openssl pkey "))
    out = _bash(fp_cmd, pkg)
    meta = json.loads((pkg / "audit.json").read_text())
    assert out.stdout.split()[0] == meta["public_key_fingerprint"]
    assert meta["public_key_fingerprint"].startswith(Signer.load(workspace.keys_dir).key_id)
    for c in (c for c in cmds if c.startswith("openssl pkeyutl")):
        out = _bash(c, pkg)
        assert out.returncode == 0 and "Signature Verified Successfully" in out.stdout, out.stderr
    sums = next(c for c in cmds if c.startswith("sha256sum --strict"))
    assert "all files match" in _bash(sums, pkg).stdout
    added = "\n".join(c for c in cmds if c.startswith(("find ", "cut ", "diff ")))
    assert "no file added or missing" in _bash(added, pkg).stdout
    # selection re-performed with sha256sum equals sample.csv, for each population
    sample = rows(pkg / "sample/sample.csv")
    block = [c for c in cmds if c.startswith(("SEED=", "awk "))]
    for seed_line, awk_line in zip(block[::2], block[1::2], strict=True):
        pop = re.search(r'\$2=="(\w+)"', awk_line)
        assert pop is not None
        got = _bash(seed_line + "\n" + awk_line, pkg).stdout.split("\n")
        want = [f"{s['rank_sha256']} {s['id']}" for s in sample if s["population"] == pop.group(1)]
        assert [g for g in got if g] == want
    # and the same commands catch tampering
    (pkg / "manifest.json").write_text(
        (pkg / "manifest.json").read_text().replace('"size"', '"size" ', 1)
    )
    bad = _bash(next(c for c in cmds if "-in manifest.json" in c), pkg)
    assert bad.returncode != 0 and "Signature Verified Successfully" not in bad.stdout
    _tamper_changed(pkg)
    assert _bash(sums, pkg).returncode != 0
    _tamper_added(pkg)
    assert "no file added or missing" not in _bash(added, pkg).stdout


# --- OSCAL ---------------------------------------------------------------------------------


def _validator(schema_file: Path) -> Any:
    import regex  # type: ignore[import-untyped]  # the NIST schemas use \p{L}; re cannot

    def pattern(validator: object, patrn: str, instance: object, schema: object) -> Iterator[Any]:
        if isinstance(instance, str) and not regex.search(patrn, instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {patrn!r}")

    cls = jsonschema.validators.extend(jsonschema.Draft7Validator, {"pattern": pattern})
    schema = json.loads(schema_file.read_text())
    return cls(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


@pytest.mark.parametrize("select", [None, ("acme/api#7",)])
def test_oscal_documents_are_schema_valid(audit: AuditFn, select: tuple[str, ...] | None) -> None:
    res = audit(select=select, seed=None if select else "fixed-seed")
    pkg = res.out
    ap = json.loads((pkg / "oscal/assessment-plan.json").read_text())
    ar = json.loads((pkg / "oscal/assessment-results.json").read_text())
    for doc, name in (
        (ap, "oscal_assessment-plan_schema.json"),
        (ar, "oscal_assessment-results_schema.json"),
    ):
        errors = sorted(
            _validator(OSCAL / name).iter_errors(doc), key=lambda e: list(e.absolute_path)
        )
        assert not errors, [f"{list(e.absolute_path)}: {e.message[:200]}" for e in errors[:5]]
    result = ar["assessment-results"]["results"][0]
    n_attr = len(rows(pkg / "worksheet.csv")[0]) - 8
    per_change = [
        o for o in result["observations"] if any(p["name"] == "change-id" for p in o["props"])
    ]
    assert len(per_change) == len(res.sample) * (n_attr // 2)
    f = {x["target"]["target-id"]: x["target"]["status"]["state"] for x in result["findings"]}
    assert f["CM-REV-1"] == ("not-satisfied" if select else f["CM-REV-1"])
    # judged over the period, not per change: the policy's approval and the locker
    assert f["policy-never-approved"] == "not-satisfied" and f["CM-POP-2"] == "satisfied"
    # every back-matter hash matches the file it names
    for r in ar["assessment-results"]["back-matter"]["resources"]:
        link = r["rlinks"][0]
        data = (pkg / "oscal" / link["href"]).resolve().read_bytes()
        assert hashlib.sha256(data).hexdigest() == link["hashes"][0]["value"]


def test_oscal_validator_rejects_a_broken_document(audit: AuditFn) -> None:
    res = audit()
    ar = json.loads((res.out / "oscal/assessment-results.json").read_text())
    del ar["assessment-results"]["results"][0]["start"]
    ar["assessment-results"]["uuid"] = "not-a-uuid"
    errs = list(_validator(OSCAL / "oscal_assessment-results_schema.json").iter_errors(ar))
    assert len(errs) >= 2


# --- PDF and CLI ---------------------------------------------------------------------------


@pytest.mark.parametrize("jobs", [1, 2])  # 2: rendered in a forked process beside the pages
def test_pdf_summary(audit: AuditFn, workspace: Workspace, jobs: int) -> None:
    res = audit(pdf=True, jobs=jobs)
    data = (res.out / "summary.pdf").read_bytes()
    assert data.startswith(b"%PDF-") and len(data) > 2000
    assert verify_package(res.out, trusted_key=workspace.public_key_pem()).ok  # signed with it


CLI = [sys.executable, "-m", "changeproof"]


def _cli(ws: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANGEPROOF_")}
    return subprocess.run(
        [*CLI, "--home", str(ws.home), "--db", ws.db_url, "--config", str(ws.config_path), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env=env,
    )


def test_cli_audit_and_verify(populated: object, workspace: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "cli-pkg"
    p = _cli(
        workspace,
        "audit",
        "--period",
        "2026-01-01..2026-01-31",
        "--tz",
        "Europe/Berlin",
        "--repos",
        "acme/api",
        "--risk",
        "10%",
        "--tolerable-rate",
        "10%",
        "--seed",
        "cli",
        "--out",
        str(out),
        "--zip",
        "--no-pdf",
        "--operator",
        "ann@audit",
        "--format",
        "json",
    )
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["population"]["changes"] == 60  # acme/tool excluded by --repos
    meta = json.loads((out / "audit.json").read_text())
    assert meta["period"]["start"] == "2025-12-31T23:00:00Z"  # midnight in Berlin
    assert meta["filters"]["repositories"] == ["acme/api"] and meta["operator"] == "ann@audit"
    assert data["sample_plans"]["standard"]["size"] == 18  # 10%/10% on 58, hypergeometric
    ok = _cli(
        workspace,
        "verify",
        str(out.with_suffix(".zip")),
        "--public-key",
        str(workspace.keys_dir / "locker-ed25519.pub.pem"),
    )
    assert ok.returncode == 0 and ok.stdout.startswith("intact"), ok.stdout + ok.stderr
    _tamper_missing(out)
    bad = _cli(workspace, "verify", str(out), "--format", "json")
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["problems"][0].endswith("missing (listed in the manifest)")
    text = _cli(workspace, "verify", str(out))
    assert text.returncode == 1 and "TAMPERED" in text.stdout and "missing" in text.stdout
    # bad input: exit 2 with a clear message and nothing written
    (tmp_path / "ids.txt").write_text("acme/api#12345\n")
    err = _cli(
        workspace,
        "audit",
        "--period",
        "2026-01-01..2026-01-31",
        "--select",
        str(tmp_path / "ids.txt"),
        "--out",
        str(tmp_path / "never"),
    )
    assert (
        err.returncode == 2 and "acme/api#12345" in err.stderr and not (tmp_path / "never").exists()
    )
    err = _cli(workspace, "audit", "--period", "2026-01-01..", "--out", str(tmp_path / "never"))
    assert err.returncode == 2 and "open-ended" in err.stderr
    err = _cli(
        workspace,
        "audit",
        "--period",
        "2026-01-01..2026-01-31",
        "--risk",
        "2",
        "--out",
        str(tmp_path / "never"),
    )
    assert err.returncode == 2 and "between 0 and 1" in err.stderr


def test_empty_period_still_gives_a_verifiable_package(audit: AuditFn) -> None:
    res = audit(start=T0 + timedelta(days=300), end=T0 + timedelta(days=301), period_text="empty")
    assert res.population["changes"] == 0 and res.sample == []
    assert rows(res.out / "population/population.csv") == []
    assert "No change was sampled" in (res.out / "index.html").read_text()
    assert verify_package(res.out).ok
    for doc, name in (
        ("assessment-plan", "oscal_assessment-plan_schema.json"),
        ("assessment-results", "oscal_assessment-results_schema.json"),
    ):
        data = json.loads((res.out / f"oscal/{doc}.json").read_text())
        assert not list(_validator(OSCAL / name).iter_errors(data))


def test_as_of_ignores_later_deployments(audit: AuditFn) -> None:
    # judged at 06:30: #3's production deploy (04:00) had happened, #6's (07:00) had not
    res = audit(now=T0 + timedelta(hours=6, minutes=30), end=T0 + timedelta(hours=7))
    never = {
        u["item"]
        for u in rows(res.out / "reconciliation/unmatched.csv")
        if u["category"] == "change never deployed"
    }
    assert "acme/api#3" not in never and {"acme/api#5", "acme/api#6"} <= never


def _resign(p: Path, signer: Signer) -> None:
    from changeproof.audit.package import AuditRequest as _Req
    from changeproof.audit.package import _sign

    for n in ("manifest.json", "manifest.json.sig", "SHA256SUMS", "SHA256SUMS.sig"):
        (p / n).unlink()
    _sign(signer, p, _Req(start=T0, end=T0, period_text="", tz="UTC", out=p, operator="x", now=T0))


def test_evidence_is_checked_even_under_a_valid_signature(
    audit: AuditFn, workspace: Workspace, tmp_path: Path
) -> None:
    """A package re-signed with the organisation's own key (a faulty or malicious generator)
    still fails when a raw file does not match its name or the locker segment does not
    re-derive; a package re-signed with another key fails on the locker checkpoint even
    without --public-key."""
    res = audit()
    raw = sorted((res.out / "evidence/raw").iterdir())[0]
    raw.write_bytes(raw.read_bytes() + b" edited")
    seg_path = res.out / "evidence/locker-segment.json"
    seg = json.loads(seg_path.read_text())
    seg["entries"][0]["kind"] = "something-else"
    seg_path.write_text(json.dumps(seg))
    _resign(res.out, Signer.load(workspace.keys_dir))
    rep = verify_package(res.out, trusted_key=workspace.public_key_pem())
    assert any(f"evidence/raw/{raw.name}: its content's SHA-256" in p for p in rep.problems)
    assert any("chain entry #" in p and "does not re-derive" in p for p in rep.problems)

    other = audit(out=tmp_path / "other")
    evil = Signer.generate(tmp_path / "evil")
    (other.out / "public-key.pem").write_bytes(evil.public_pem)
    _resign(other.out, evil)
    rep = verify_package(other.out)  # no pinned key
    assert rep.problems == [
        "evidence/locker-segment.json: the locker checkpoint is not signed by the package key"
    ]


def test_progress_counts_both_passes(
    populated: object, workspace: Workspace, tmp_path: Path
) -> None:
    from changeproof.audit import AuditRequest, run_audit
    from changeproof.settings import Settings
    from changeproof.store import Store

    assert isinstance(populated, Store)
    seen: list[int] = []
    req = AuditRequest(
        start=T0,
        end=T0 + timedelta(days=31),
        period_text="p",
        tz="UTC",
        out=tmp_path / "prog",
        operator="a@b",
        now=T0 + timedelta(days=40),
        seed="s",
        pdf=False,
    )
    res = run_audit(populated, Settings(), workspace.signer(), req, advance=seen.append)
    assert sum(seen) == 2 * res.population["changes"]  # read once, evaluated once


def test_no_seed_no_list_and_stale_zip_are_refused(audit: AuditFn, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no seed and no sample list"):
        audit(seed=None)
    (tmp_path / "z.zip").write_bytes(b"old")
    with pytest.raises(UsageError, match=r"z\.zip already exists"):
        audit(out=tmp_path / "z", zip=True)
    assert not (tmp_path / "z").exists() and (tmp_path / "z.zip").read_bytes() == b"old"


def test_unknown_repository_is_refused(audit: AuditFn) -> None:
    with pytest.raises(UsageError, match=r"no changes were collected for acme/nope.*acme/api"):
        audit(repos=("acme/nope",))


def test_manifest_paths_outside_the_package_are_refused(
    audit: AuditFn, workspace: Workspace
) -> None:
    res = audit()
    m = json.loads((res.out / "manifest.json").read_text())
    m["files"].append({"path": "../outside.txt", "sha256": "0" * 64, "size": 1})
    (res.out / "manifest.json").write_text(json.dumps(m))
    _resign_manifest_only(res.out, Signer.load(workspace.keys_dir))
    rep = verify_package(res.out)
    assert "../outside.txt: a manifest path outside the package (refused)" in rep.problems


def _resign_manifest_only(p: Path, signer: Signer) -> None:
    import base64

    body = (p / "manifest.json").read_bytes()
    (p / "manifest.json.sig").write_bytes(base64.b64decode(signer.sign(body)))
