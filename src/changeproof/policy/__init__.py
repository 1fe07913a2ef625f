"""The Change Management Policy, rendered from the settings the checks enforce.

* :func:`render_markdown` — the canonical text; its SHA-256 is what an approval records.
* :func:`render` — the same text as Markdown, HTML, PDF (WeasyPrint) or DOCX (python-docx).
* :func:`approve` — record who approved which rendered text, in the locker and the store.
* :func:`policy_in_force` / :func:`policy_findings` — for the audit package and `policy status`.
"""

from __future__ import annotations

from changeproof.policy.render import (
    FORMATS,
    Format,
    RenderError,
    document_digest,
    render,
    render_docx,
    render_html,
    render_markdown,
    render_pdf,
)

__all__ = [
    "FORMATS",
    "Format",
    "RenderError",
    "document_digest",
    "render",
    "render_docx",
    "render_html",
    "render_markdown",
    "render_pdf",
]
