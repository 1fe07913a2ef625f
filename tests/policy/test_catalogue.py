"""Every registered control is covered, and nothing unregistered is claimed as verified."""

from __future__ import annotations

import re
from importlib import resources

from changeproof.controls import ALL_CONTROLS
from changeproof.controls.frameworks import KNOWN
from changeproof.policy import render_markdown
from changeproof.policy.context import heading_of, show_ref, slug
from changeproof.settings import Settings
from tests.policy.helpers import FIXED_CONTROLS, fixed_control, section

TAG = re.compile(r"\*\(Verified by (.+?)\.\)\*")


def verified_ids(markdown: str) -> set[str]:
    ids: set[str] = set()
    for m in TAG.finditer(markdown):
        ids.update(re.findall(r"\[(CM-[A-Z]+-\d+)\]", m.group(1)))
    return ids


def test_every_registered_control_is_in_the_catalogue_and_the_mapping() -> None:
    text = render_markdown(Settings())
    appendix = text.split("## Appendix A. Control catalogue", 1)[1]
    mapping = section(text, "Framework mapping")
    assert ALL_CONTROLS, "the registry is empty"
    for c in ALL_CONTROLS:
        d = c.definition
        assert f"### {d.id} — " in appendix, d.id
        row = next(line for line in mapping.split("\n") if line.startswith(f"| [{d.id}]("))
        for fw, refs in d.mappings.items():
            for ref in refs:
                assert show_ref(fw, ref) in row, (d.id, fw, ref)
        assert f"(#{slug(heading_of(d))})" in row


def test_every_registered_control_verifies_a_requirement() -> None:
    """Each control the policy text knows is cited where its requirement is stated."""
    text = render_markdown(Settings())
    cited = verified_ids(text)
    template = (
        resources.files("changeproof.policy").joinpath("templates", "policy.md.j2").read_text()
    )
    template_ids = set(re.findall(r'"(CM-[A-Z]+-\d+)"', template))
    for c in ALL_CONTROLS:
        if c.id in template_ids:
            assert c.id in cited, f"{c.id} is registered but its requirement is not tagged"
    # every id the template cites is one CONTROLS.md names
    assert all(
        re.fullmatch(r"CM-(REV|CFG|TST|DEP|DOC|EMG|IAC|VUL|POP)-\d", i) for i in template_ids
    )


def test_unregistered_controls_are_marked_procedural() -> None:
    only_review = [c for c in FIXED_CONTROLS if c.id.startswith("CM-REV")]
    text = render_markdown(Settings(), only_review)
    retro = section(text, "Retroactive review")
    assert "*(Procedural: not verified automatically.)*" in retro
    assert "CM-EMG-2" not in text
    assert verified_ids(text) == {"CM-REV-1", "CM-REV-2"}
    with_emg = render_markdown(Settings(), FIXED_CONTROLS)
    assert "*(Verified by [CM-EMG-2]" in section(with_emg, "Retroactive review")


def test_a_new_control_appears_without_template_changes() -> None:
    extra = fixed_control("CM-XYZ-9", "A control added later", {"nis2": ("21(2)(d)",)})
    text = render_markdown(Settings(), (*FIXED_CONTROLS, extra))
    assert "### CM-XYZ-9 — A control added later" in text
    row = next(line for line in text.split("\n") if line.startswith("| [CM-XYZ-9]("))
    assert "Art. 21(2)(d)" in row
    assert "| Art. 21(2)(d) | CM-XYZ-9 |" in section(text, "Framework mapping")


def test_mapping_ids_shown_are_real() -> None:
    text = section(render_markdown(Settings()), "Framework mapping")
    for fw, known in KNOWN.items():
        for c in ALL_CONTROLS:
            for ref in c.definition.mappings.get(fw, ()):
                assert ref in known, (c.id, fw, ref)
                assert show_ref(fw, ref) in text


def test_definition_text_is_escaped_but_code_kept() -> None:
    text = render_markdown(Settings(), FIXED_CONTROLS)
    assert r"with `code` and \*stars\*." in text


def test_the_frameworks_without_any_mapping_are_named() -> None:
    only = [fixed_control("CM-REV-1", "Only SOC 2", {"soc2": ("CC8.1",)})]
    text = render_markdown(Settings(), only)
    assert "No registered control maps to ISO 27001:2022, PCI DSS v4.0, HIPAA and NIS2." in text
