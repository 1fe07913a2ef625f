"""The policy as a Word document, built from the canonical Markdown's tokens.

Only the constructs the policy template emits are handled: headings, paragraphs, bullet
lists, tables, strong/emphasis, code spans and links (kept as text). Anything else is a
programming error in the template and raises, rather than silently dropping text.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from markdown_it.token import Token

    from changeproof.policy.render import Document

MONO = "DejaVu Sans Mono"
ACCENT = (0x1F, 0x4E, 0x79)
MUTED = (0x5B, 0x64, 0x75)
AMBER = (0x8A, 0x5A, 0x00)


def build_docx(doc: Document, tokens: list[Token]) -> bytes:
    from docx import Document as new_document
    from docx.enum.table import WD_TABLE_ALIGNMENT
    from docx.shared import Cm, Pt, RGBColor

    from changeproof.policy.render import approval_rows, history_rows

    d = new_document()
    section = d.sections[0]
    section.page_height, section.page_width = Cm(29.7), Cm(21.0)
    section.left_margin = section.right_margin = Cm(1.9)
    section.top_margin = section.bottom_margin = Cm(2.2)
    normal = d.styles["Normal"]
    normal.font.name = "Calibri"
    normal.font.size = Pt(10)
    for level in (1, 2, 3):
        st = d.styles[f"Heading {level}"]
        st.font.color.rgb = RGBColor(*ACCENT)
        st.font.name = "Calibri"
    org = doc.settings.organisation
    d.core_properties.title = f"Change Management Policy — {org.name}"
    d.core_properties.author = org.policy_owner
    d.core_properties.subject = f"Version {org.policy_version}; SHA-256 {doc.digest}"
    d.core_properties.comments = "Rendered by changeproof from changeproof.toml"

    _header_footer(d, doc)

    # Approval block: outside the canonical text, right after the title block.
    def approval_block() -> None:
        d.add_heading("Approval", level=3)
        table = d.add_table(rows=0, cols=2)
        table.style = "Table Grid"
        table.alignment = WD_TABLE_ALIGNMENT.LEFT
        for label, value in approval_rows(doc):
            cells = table.add_row().cells
            cells[0].text = label
            run = cells[1].paragraphs[0].add_run(value)
            if label in ("Document SHA-256", "Settings version", "To approve"):
                run.font.name = MONO
                run.font.size = Pt(8)
        history = history_rows(doc)
        if history:
            d.add_heading("Version history", level=3)
            cols = ("version", "approved", "by", "effective", "sha256", "this")
            table = d.add_table(rows=1, cols=len(cols))
            table.style = "Table Grid"
            for cell, title in zip(
                table.rows[0].cells,
                ("Version", "Approved", "By", "In force from", "SHA-256", ""),
                strict=True,
            ):
                cell.text = title
            for h in history:
                for cell, key in zip(table.add_row().cells, cols, strict=True):
                    cell.text = h[key] + ("…" if key == "sha256" else "")
        d.add_paragraph()

    writer = _Writer(d)
    first_h2 = True
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.type == "heading_open" and tok.tag == "h2" and first_h2:
            approval_block()
            first_h2 = False
        i = writer.block(tokens, i)
    if first_h2:
        approval_block()
    footer = d.add_paragraph()
    run = footer.add_run(
        f"Rendered by changeproof from settings version {doc.settings.version[:16]}. "
        f"Document SHA-256 {doc.digest}."
    )
    run.font.size = Pt(7.5)
    run.font.color.rgb = RGBColor(*MUTED)
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


def _header_footer(d: Any, doc: Document) -> None:
    from docx.enum.text import WD_ALIGN_PARAGRAPH
    from docx.oxml import OxmlElement
    from docx.oxml.ns import qn
    from docx.shared import Pt, RGBColor

    org = doc.settings.organisation
    sec = d.sections[0]
    head = sec.header.paragraphs[0]
    head.text = f"{org.name} — Change Management Policy"
    footer = sec.footer.paragraphs[0]
    footer.alignment = WD_ALIGN_PARAGRAPH.RIGHT
    eff = f" · effective {org.effective_date.isoformat()}" if org.effective_date else ""
    footer.add_run(f"Version {org.policy_version}{eff} · Page ")
    for name in ("PAGE", "NUMPAGES"):
        fld = OxmlElement("w:fldSimple")
        fld.set(qn("w:instr"), name)
        r = OxmlElement("w:r")
        rpr = OxmlElement("w:rPr")  # the number in the same small grey as the words
        for tag, val in (("w:color", "5B6475"), ("w:sz", "16")):
            el = OxmlElement(tag)
            el.set(qn("w:val"), val)
            rpr.append(el)
        r.append(rpr)
        t = OxmlElement("w:t")
        t.text = "1"
        r.append(t)
        fld.append(r)
        footer._p.append(fld)
        if name == "PAGE":
            footer.add_run(" of ")
    for p in (head, footer):
        for run in p.runs:
            run.font.size = Pt(8)
            run.font.color.rgb = RGBColor(*MUTED)


class _Writer:
    def __init__(self, d: Any) -> None:
        self.d = d
        # Looking a style up by name scans every style; do it once.
        self.bullet = d.styles["List Bullet"]
        self.grid = d.styles["Table Grid"]

    def block(self, tokens: list[Token], i: int) -> int:
        tok = tokens[i]
        if tok.type == "heading_open":
            level = int(tok.tag[1])
            p = self.d.add_heading("", level=min(level, 3) if level > 1 else 0)
            self.inline(p, tokens[i + 1])
            return i + 3
        if tok.type == "paragraph_open":
            p = self.d.add_paragraph()
            self.inline(p, tokens[i + 1])
            return i + 3
        if tok.type == "bullet_list_open":
            return self.bullets(tokens, i)
        if tok.type == "table_open":
            return self.table(tokens, i)
        raise ValueError(f"the policy template emitted an unsupported Markdown block: {tok.type}")

    def bullets(self, tokens: list[Token], i: int) -> int:
        i += 1
        while tokens[i].type != "bullet_list_close":
            if tokens[i].type == "paragraph_open":
                p = self.d.add_paragraph(style=self.bullet)
                self.inline(p, tokens[i + 1])
                i += 3
            else:
                i += 1  # list_item_open / list_item_close
        return i + 1

    def table(self, tokens: list[Token], i: int) -> int:
        from docx.shared import Pt, RGBColor

        rows: list[tuple[bool, list[Token]]] = []
        j = i + 1
        current: list[Token] = []
        header = False
        while tokens[j].type != "table_close":
            t = tokens[j]
            if t.type == "thead_open":
                header = True
            elif t.type == "tbody_open":
                header = False
            elif t.type == "tr_open":
                current = []
            elif t.type == "inline":
                current.append(t)
            elif t.type == "tr_close":
                rows.append((header, current))
            j += 1
        ncols = max(len(r) for _, r in rows)
        table = self.d.add_table(rows=0, cols=ncols)
        table.style = self.grid
        for is_head, cells in rows:
            row = table.add_row().cells
            for k, inline in enumerate(cells):
                p = row[k].paragraphs[0]
                self.inline(p, inline, size=8.5)
                if is_head:
                    for run in p.runs:
                        run.bold = True
                        run.font.color.rgb = RGBColor(*ACCENT)
                        run.font.size = Pt(8.5)
        self.d.add_paragraph()
        return j + 1

    def inline(self, p: Any, inline: Token, size: float | None = None) -> None:
        from docx.shared import Pt, RGBColor

        bold = italic = False
        note: tuple[int, int, int] | None = None
        for kid in inline.children or ():
            if kid.type == "strong_open":
                bold = True
            elif kid.type == "strong_close":
                bold = False
            elif kid.type == "em_open":
                italic = True
            elif kid.type == "em_close":
                italic = False
                note = None
            elif kid.type in ("link_open", "link_close"):
                continue
            elif kid.type in ("softbreak", "hardbreak"):
                p.add_run(" ")
            elif kid.type in ("text", "code_inline"):
                text = kid.content
                if italic and text.startswith("(Verified by"):
                    note = MUTED
                elif italic and text.startswith("(Procedural"):
                    note = AMBER
                run = p.add_run(text)
                run.bold = bold
                run.italic = italic and note is None
                if kid.type == "code_inline":
                    run.font.name = MONO
                    run.font.size = Pt((size or 10) * 0.85)
                elif size:
                    run.font.size = Pt(size)
                if note is not None:
                    run.font.color.rgb = RGBColor(*note)
                    run.font.size = Pt(8)
            else:
                raise ValueError(f"unsupported inline Markdown in the policy: {kid.type}")
