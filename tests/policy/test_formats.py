"""HTML, PDF and DOCX say what the Markdown says, typeset: numbered sections, tables, page
numbers, a version block. The PDF is read back (text) and turned into images (pixels)."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path

import msgspec
import pytest

from changeproof.evidence import Actor, PolicyApproval, Provenance
from changeproof.policy import (
    document_digest,
    render_docx,
    render_html,
    render_markdown,
    render_pdf,
)
from changeproof.settings import Settings
from tests.policy.helpers import FIXED_CONTROLS

NOW = datetime(2026, 2, 3, 4, 5, tzinfo=UTC)


def acme() -> Settings:
    data = msgspec.to_builtins(Settings())
    data["organisation"] = {
        "name": "Acme <Payments> & Co",
        "policy_owner": "Chief Technology Officer",
        "policy_version": "3.2",
        "effective_date": date(2026, 5, 1),
    }
    data["emergency"]["approvers"] = ["cto"]
    return msgspec.convert(data, Settings)


def approval_for(s: Settings) -> PolicyApproval:
    digest = document_digest(render_markdown(s, FIXED_CONTROLS))
    return PolicyApproval(
        id=f"3.2@{NOW.isoformat()}",
        policy_version="3.2",
        document_sha256=digest,
        settings_version=s.version,
        approver=Actor(name="Dana Lee"),
        approved_at=NOW,
        provenance=Provenance(source="test", occurred_at=NOW, collected_at=NOW, raw_sha256=digest),
    )


def test_html_is_escaped_numbered_and_has_contents() -> None:
    s = acme()
    html = render_html(s, FIXED_CONTROLS, now=NOW)
    assert "Acme &lt;Payments&gt; &amp; Co" in html
    assert "<Payments>" not in html
    assert '<h2 id="1-purpose-and-scope">1. Purpose and scope</h2>' in html
    assert '<h3 id="42-required-approvals">4.2 Required approvals</h3>' in html
    assert '<a href="#4-code-review">4. Code review</a>' in html  # contents
    assert '<table class="doc-control">' in html and '<table class="grid">' in html
    # control links resolve to anchors in the appendix
    for target in set(re.findall(r'href="#(cm-[a-z]+-\d+[^"]*)"', html)):
        assert f'id="{target}"' in html, target
    assert '<em class="verified">' in html and '<em class="procedural">' in html
    assert "Not approved: no approval is recorded for this text" in html
    assert document_digest(render_markdown(s, FIXED_CONTROLS)) in html


def test_html_shows_an_approval_only_for_its_own_text() -> None:
    s = acme()
    a = approval_for(s)
    html = render_html(s, FIXED_CONTROLS, history=[a], now=NOW)
    assert "<th>Approved by</th><td>Dana Lee</td>" in html
    assert "2026-02-03 04:05 UTC" in html
    assert "<td>3.2</td><td>2026-02-03</td><td>Dana Lee</td>" in html  # version history
    assert "<td>this text</td>" in html
    older = msgspec.structs.replace(
        a,
        id="3.1@x",
        policy_version="3.1",
        document_sha256="0" * 64,
        approver=Actor(name="Eli Okafor"),
        approved_at=datetime(2025, 9, 1, tzinfo=UTC),
    )
    html = render_html(s, FIXED_CONTROLS, history=[older], now=NOW)
    assert "<th>Approved by</th>" not in html and "Not approved" in html
    row = "<td>3.1</td><td>2025-09-01</td><td>Eli Okafor</td><td>2025-09-01</td>"
    assert row + "<td><code>000000000000…</code></td><td></td>" in html
    # newest first
    html = render_html(s, FIXED_CONTROLS, history=[a, older], now=NOW)
    assert html.index("<td>3.2</td>") < html.index("<td>3.1</td>")


def test_pdf_renders_with_page_numbers_and_text() -> None:
    from pypdf import PdfReader

    s = acme()
    pdf = render_pdf(s, FIXED_CONTROLS, history=[approval_for(s)], now=NOW)
    assert pdf.startswith(b"%PDF-")
    reader = PdfReader(io.BytesIO(pdf))
    n = len(reader.pages)
    assert n >= 6
    pages = [p.extract_text() or "" for p in reader.pages]
    assert "Change Management Policy" in pages[0]
    assert "Acme <Payments> & Co" in pages[0]
    assert "Dana Lee" in pages[0]  # the approval block
    for i, text in enumerate(pages, start=1):
        assert f"Page {i} of {n}" in text
        assert "Version 3.2 · effective 2026-05-01" in text
    everything = "\n".join(pages)
    assert "4. Code review" in everything
    assert "Appendix A. Control catalogue" in everything
    assert "72 hours (3 days)" in everything  # the patch table
    # the contents page gives the page where each section starts
    toc = pages[1]
    m = re.search(r"8\. Emergency changes\s*\.*\s*(\d+)", toc)
    assert m, toc
    assert "8. Emergency changes" in pages[int(m.group(1)) - 1]


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="needs pdftoppm (poppler-utils)")
def test_pdf_pages_turned_to_images_contain_ink(tmp_path: Path) -> None:
    from PIL import Image

    pdf = render_pdf(acme(), FIXED_CONTROLS, now=NOW)
    (tmp_path / "p.pdf").write_bytes(pdf)
    subprocess.run(
        ["pdftoppm", "-r", "40", "-png", str(tmp_path / "p.pdf"), str(tmp_path / "page")],
        check=True,
        timeout=120,
    )
    images = sorted(tmp_path.glob("page-*.png"))
    assert len(images) >= 6
    for path in images:
        with Image.open(path) as im:
            inked = sum(im.convert("L").histogram()[:200])  # text, rules and table bands
        assert inked > 1000, f"{path.name} is blank"


def test_docx_has_the_text_tables_and_page_numbers() -> None:
    from docx import Document

    s = acme()
    data = render_docx(s, FIXED_CONTROLS, history=[approval_for(s)], now=NOW)
    doc = Document(io.BytesIO(data))
    text = "\n".join(p.text for p in doc.paragraphs)
    assert "Change Management Policy" in text
    assert "4.2 Required approvals" in text
    assert "Every change needs at least 1 (one) distinct independent human approval" in text
    headings = [
        p.text for p in doc.paragraphs if p.style is not None and p.style.name.startswith("Heading")
    ]
    assert "1. Purpose and scope" in headings and "Approval" in headings
    assert "Version history" in headings
    cells = {c.text for t in doc.tables for row in t.rows for c in row.cells}
    assert "Dana Lee" in cells and "72 hours (3 days)" in cells
    footer_xml = doc.sections[0].footer._element.xml
    assert 'w:instr="PAGE"' in footer_xml and 'w:instr="NUMPAGES"' in footer_xml
    assert "Version 3.2" in doc.sections[0].footer.paragraphs[0].text
    assert doc.core_properties.subject.endswith(approval_for(s).document_sha256)
