"""The registry is complete and honest: every control has a definition whose mapping ids are
real, and the controls stay pure (no imports of the store, the sources or the web server)."""

from __future__ import annotations

import ast
import re
from importlib import resources
from pathlib import Path

import pytest

from changeproof.controls import ALL_CONTROLS, CHANGE_CONTROLS, RECORD_CONTROLS, by_id
from changeproof.controls.base import load_definition
from changeproof.controls.frameworks import KNOWN, unknown_ids

CONTROLS_DIR = Path(str(resources.files("changeproof.controls")))
FORBIDDEN = ("changeproof.sources", "changeproof.store", "changeproof.web")
# CONTROLS.md lists these; each must be registered.
CATALOGUE = (
    *(f"CM-REV-{i}" for i in range(1, 6)),
    *(f"CM-CFG-{i}" for i in range(1, 5)),
    "CM-TST-1",
    "CM-TST-2",
    *(f"CM-DEP-{i}" for i in range(1, 5)),
    "CM-DOC-1",
    "CM-EMG-1",
    "CM-EMG-2",
    *(f"CM-IAC-{i}" for i in range(1, 5)),
    *(f"CM-VUL-{i}" for i in range(1, 4)),
    "CM-POP-1",
    "CM-POP-2",
)
MINE = (
    "CM-REV-4", "CM-CFG-1", "CM-CFG-2", "CM-CFG-3", "CM-CFG-4", "CM-TST-1", "CM-TST-2",
    "CM-DOC-1", "CM-POP-1", "CM-POP-2",
)  # fmt: skip


def test_ids_are_unique_and_resolvable() -> None:
    ids = [c.id for c in ALL_CONTROLS]
    assert len(ids) == len(set(ids))
    assert all(by_id(i).id == i for i in ids)
    assert {c.id for c in CHANGE_CONTROLS}.isdisjoint({c.id for c in RECORD_CONTROLS})


@pytest.mark.parametrize("control_id", MINE)
def test_this_issues_controls_are_registered(control_id: str) -> None:
    assert by_id(control_id).id == control_id


def test_registered_controls_cover_the_catalogue_so_far() -> None:
    registered = {c.id for c in ALL_CONTROLS}
    assert registered <= set(CATALOGUE), registered - set(CATALOGUE)


@pytest.mark.parametrize("control", ALL_CONTROLS, ids=lambda c: c.id)
def test_every_registered_control_has_a_complete_definition(control: object) -> None:
    d = control.definition  # type: ignore[attr-defined]
    assert d.id == control.id  # type: ignore[attr-defined]
    assert d.title and d.statement and d.procedure and d.pass_criterion and d.remediation
    assert d.evidence, f"{d.id} names no evidence"
    assert set(d.outcomes) == {"pass", "fail", "exception", "not_applicable", "indeterminate"}
    assert d.mappings.get("soc2"), f"{d.id} maps to no SOC 2 criterion"
    assert unknown_ids(d.mappings) == [], f"{d.id} maps to ids that do not exist"


def test_every_definition_file_belongs_to_a_registered_control() -> None:
    files = {p.stem for p in (CONTROLS_DIR / "definitions").glob("*.toml")}
    assert files == {c.id for c in ALL_CONTROLS}


def test_the_mapping_check_is_real() -> None:
    # the validation these tests rely on rejects invented identifiers
    assert unknown_ids({"soc2": ("CC8.1", "CC8.2")}) == ["soc2:CC8.2"]
    assert unknown_ids({"iso27001": ("A.8.32", "A.8.35")}) == ["iso27001:A.8.35"]
    assert unknown_ids({"pci": ("6.5.1",)}) == ["pci:(unknown framework)"]
    assert "CC8.2" not in KNOWN["soc2"]


def test_a_missing_definition_is_an_error() -> None:
    load_definition.cache_clear()
    with pytest.raises(FileNotFoundError):
        load_definition("CM-XXX-9")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append(node.module)
            out.extend(f"{node.module}.{a.name}" for a in node.names)
    return out


def _offending(path: Path) -> list[str]:
    return [m for m in _imports(path) if m.startswith(FORBIDDEN)]


def test_controls_import_no_store_sources_or_web() -> None:
    files = sorted(CONTROLS_DIR.rglob("*.py"))
    assert len(files) >= 10
    bad = {str(p.relative_to(CONTROLS_DIR)): _offending(p) for p in files if _offending(p)}
    assert bad == {}


def test_the_import_scan_catches_lazy_and_aliased_imports(tmp_path: Path) -> None:
    p = tmp_path / "bad.py"
    p.write_text(
        "import os\n"
        "def f():\n"
        "    from changeproof.store import Store\n"
        "    import changeproof.sources.git as g\n"
        "    from changeproof import web\n"
        "    return Store, g, web\n"
    )
    assert _offending(p) == [
        "changeproof.store",
        "changeproof.store.Store",
        "changeproof.sources.git",
        "changeproof.web",
    ]


def test_definitions_do_not_name_fictional_criteria() -> None:
    text = "\n".join(p.read_text() for p in (CONTROLS_DIR / "definitions").glob("*.toml"))
    assert not re.search(r"\bCC8\.[2-9]\b", text)
