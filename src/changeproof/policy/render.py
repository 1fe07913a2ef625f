"""Render the Change Management Policy: canonical Markdown first, every other format from it.

The Markdown is the document of record: its SHA-256 is what an approval records, and HTML,
PDF and DOCX are produced from its parsed tokens, so no format can say something the approved
text does not. The approval block is added around the text, never inside it.

WeasyPrint and python-docx are imported inside their render functions: the gate must start
fast, and only these two commands need them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Literal

from changeproof.controls.base import Control
from changeproof.errors import ChangeproofError
from changeproof.evidence import PolicyApproval
from changeproof.policy.context import build_context, filters, slug
from changeproof.settings import Settings

if TYPE_CHECKING:
    import jinja2
    from markdown_it import MarkdownIt
    from markdown_it.token import Token

Format = Literal["md", "html", "pdf", "docx"]
FORMATS: tuple[Format, ...] = ("md", "html", "pdf", "docx")


class RenderError(ChangeproofError):
    """A policy format could not be produced (usually a missing system library)."""


def _controls(controls: Iterable[Control] | None) -> tuple[Control, ...]:
    if controls is None:
        from changeproof.controls import ALL_CONTROLS

        return ALL_CONTROLS
    return tuple(controls)


@cache
def _env(kind: Literal["md", "html"]) -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("changeproof.policy", "templates"),
        # Markdown is escaped by the `t`/`c` filters; HTML by Jinja's autoescape.
        autoescape=kind == "html",  # noqa: S701 - Markdown is escaped by its filters
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(filters())
    return env


def _tidy(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    out = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
    return out.strip("\n") + "\n"


def render_markdown(settings: Settings, controls: Iterable[Control] | None = None) -> str:
    """The canonical policy text for these settings and controls (LF, one trailing newline)."""
    ctrl = _controls(controls)
    template = _env("md").get_template("policy.md.j2")
    # First pass learns the section numbers; the second resolves "section N" references.
    first = build_context(settings, ctrl)
    template.render(first)
    ctx = build_context(settings, ctrl, known=first["sec"].numbers)
    return _tidy(template.render(ctx))


def document_digest(markdown: str) -> str:
    """SHA-256 of the canonical Markdown's UTF-8 bytes (what `sha256sum policy.md` prints)."""
    return hashlib.sha256(markdown.encode("utf-8")).hexdigest()


# --- HTML ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Heading:
    level: int
    text: str
    anchor: str


def _markdown_parser() -> MarkdownIt:
    from markdown_it import MarkdownIt

    # html=False: names and paths from the settings are text, never markup.
    return MarkdownIt("commonmark", {"html": False, "typographer": False}).enable("table")


# Control ids and framework references must not break across lines in narrow table cells.
_REF = re.compile(
    r"(CM-[A-Z]+-\d+|A\.\d+\.\d+|CC\d+\.\d+|§164\.\d+(?:\([a-z0-9]+\))+|Art\. 21\(2\)\([a-j]\)"
    r"|\b\d+\.\d+\.\d+(?:\.\d+)?\b)"
)


def _keep_refs_whole(kids: list[Token]) -> list[Token]:
    from markdown_it.common.utils import escapeHtml
    from markdown_it.token import Token

    out: list[Token] = []
    for kid in kids:
        if kid.type != "text" or not _REF.search(kid.content):
            out.append(kid)
            continue
        html = "".join(
            f'<span class="ref">{escapeHtml(part)}</span>' if i % 2 else escapeHtml(part)
            for i, part in enumerate(_REF.split(kid.content))
        )
        out.append(Token("html_inline", "", 0, content=html))
    return out


def _inline_text(token: Token) -> str:
    return "".join(c.content for c in token.children or () if c.type in ("text", "code_inline"))


def _decorate(tokens: list[Token]) -> list[Heading]:
    """Anchor every heading, class the tables and the verification notes; list headings."""
    headings: list[Heading] = []
    seen: dict[str, int] = {}
    first_table = True
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open":
            text = _inline_text(tokens[i + 1])
            anchor = slug(text)
            if anchor in seen:
                seen[anchor] += 1
                anchor = f"{anchor}-{seen[anchor]}"
            else:
                seen[anchor] = 0
            tok.attrSet("id", anchor)
            level = int(tok.tag[1])
            if level == 2 and (text.startswith("Appendix") or text.endswith("Framework mapping")):
                tok.attrSet("class", "appendix")  # starts a new page in print
            headings.append(Heading(level, text, anchor))
        elif tok.type == "table_open":
            tok.attrSet("class", "doc-control" if first_table else "grid")
            first_table = False
        elif tok.type == "inline":
            tok.children = _keep_refs_whole(tok.children or [])
            kids = tok.children
            for j, kid in enumerate(kids[:-1]):
                if kid.type != "em_open" or kids[j + 1].type != "text":
                    continue
                nxt = kids[j + 1].content
                if nxt.startswith("(Verified by"):
                    kid.attrSet("class", "verified")
                elif nxt.startswith("(Procedural"):
                    kid.attrSet("class", "procedural")
    return headings


@dataclass(frozen=True)
class Document:
    """What the HTML and DOCX renderers need besides the text."""

    settings: Settings
    markdown: str
    digest: str
    approval: PolicyApproval | None  # the latest approval of exactly this text
    history: tuple[PolicyApproval, ...]  # every approval, oldest first
    generated_at: datetime


def _document(
    settings: Settings,
    controls: Iterable[Control] | None,
    history: Iterable[PolicyApproval],
    now: datetime | None,
) -> Document:
    md = render_markdown(settings, controls)
    dig = document_digest(md)
    hist = tuple(sorted(history, key=lambda a: a.approved_at))
    # Only an approval of exactly this text approves it; others are history.
    mine = [a for a in hist if a.document_sha256 == dig]
    return Document(settings, md, dig, mine[-1] if mine else None, hist, now or datetime.now(UTC))


def render_html(
    settings: Settings,
    controls: Iterable[Control] | None = None,
    *,
    history: Iterable[PolicyApproval] = (),
    now: datetime | None = None,
    for_print: bool = False,
) -> str:
    doc = _document(settings, controls, history, now)
    return _html(doc, for_print=for_print)


def _html(doc: Document, *, for_print: bool) -> str:
    md = _markdown_parser()
    tokens = md.parse(doc.markdown)
    headings = _decorate(tokens)
    # Split after the document-control table: title block, then contents, then the body.
    split = next(
        (i for i, t in enumerate(tokens) if t.type == "heading_open" and t.tag == "h2"),
        len(tokens),
    )
    front = md.renderer.render(tokens[:split], md.options, {})
    body = md.renderer.render(tokens[split:], md.options, {})
    org = doc.settings.organisation
    from importlib import resources

    css = (
        resources.files("changeproof.policy").joinpath("templates", "policy.css").read_text("utf-8")
    )
    return (
        _env("html")
        .get_template("policy.html.j2")
        .render(
            org=org,
            effective=org.effective_date.isoformat() if org.effective_date else None,
            front=front,
            body=body,
            toc=[h for h in headings if h.level == 2],
            digest=doc.digest,
            settings_version=doc.settings.version,
            approval=doc.approval,
            approval_rows=approval_rows(doc),
            history=history_rows(doc),
            generated=doc.generated_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            css=css,
            for_print=for_print,
        )
    )


def render_pdf(
    settings: Settings,
    controls: Iterable[Control] | None = None,
    *,
    history: Iterable[PolicyApproval] = (),
    now: datetime | None = None,
) -> bytes:
    html = render_html(settings, controls, history=history, now=now, for_print=True)
    try:
        from weasyprint import HTML  # type: ignore[import-untyped]
    except (ImportError, OSError) as exc:  # OSError: the pango libraries are missing
        raise RenderError(
            f"cannot render PDF: WeasyPrint is not usable here ({exc})",
            expected="the weasyprint package and the Pango libraries it loads",
            hint="install them (Debian/Ubuntu: apt-get install libpango-1.0-0 libpangoft2-1.0-0 "
            "libharfbuzz-subset0 fonts-dejavu-core), or render --format html and print that",
        ) from None
    pdf: bytes = HTML(string=html).write_pdf()
    return pdf


# --- DOCX ------------------------------------------------------------------------------------


def render_docx(
    settings: Settings,
    controls: Iterable[Control] | None = None,
    *,
    history: Iterable[PolicyApproval] = (),
    now: datetime | None = None,
) -> bytes:
    from changeproof.policy.word import build_docx

    doc = _document(settings, controls, history, now)
    tokens = _markdown_parser().parse(doc.markdown)
    return build_docx(doc, tokens)


def render(
    fmt: Format,
    settings: Settings,
    controls: Iterable[Control] | None = None,
    *,
    history: Iterable[PolicyApproval] = (),
    now: datetime | None = None,
) -> bytes:
    """The policy in one format, as bytes ready to write."""
    if fmt == "md":
        return render_markdown(settings, controls).encode("utf-8")
    if fmt == "html":
        return render_html(settings, controls, history=history, now=now).encode("utf-8")
    if fmt == "pdf":
        return render_pdf(settings, controls, history=history, now=now)
    if fmt == "docx":
        return render_docx(settings, controls, history=history, now=now)
    raise ValueError(fmt)


def history_rows(doc: Document) -> list[dict[str, str]]:
    """The version history: every recorded approval, newest first."""
    rows = []
    for a in reversed(doc.history):
        # In force from its approval, or from a later effective date (as policy_in_force).
        approved_on = a.approved_at.astimezone(UTC).date()
        eff = max(approved_on, a.effective_date or approved_on).isoformat()
        rows.append(
            {
                "version": a.policy_version,
                "approved": a.approved_at.astimezone(UTC).strftime("%Y-%m-%d"),
                "by": a.approver.name or a.approver.login or a.approver.email or "?",
                "effective": eff,
                "sha256": a.document_sha256[:12],
                "this": "this text" if a.document_sha256 == doc.digest else "",
            }
        )
    return rows


def approval_rows(doc: Document) -> list[tuple[str, str]]:
    """The approval block, as (label, value) rows, shared by HTML and DOCX."""
    a = doc.approval
    if a is None:
        return [
            ("Status", "Not approved: no approval is recorded for this text"),
            ("Document SHA-256", doc.digest),
            (
                "To approve",
                "changeproof policy approve --version "
                f"{doc.settings.organisation.policy_version} --by NAME",
            ),
        ]
    return [
        ("Status", "Approved"),
        ("Approved by", a.approver.name or a.approver.login or a.approver.email or "?"),
        ("Approved at", a.approved_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("Document SHA-256", a.document_sha256),
        ("Settings version", a.settings_version),
    ]
