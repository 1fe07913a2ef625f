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
from changeproof.policy.versions import (
    PolicyFinding,
    PolicyStatus,
    Window,
    approvals,
    approve,
    policy_findings,
    policy_in_force,
    policy_status,
)

__all__ = [
    "FORMATS",
    "Format",
    "PolicyFinding",
    "PolicyStatus",
    "RenderError",
    "Window",
    "approvals",
    "approve",
    "document_digest",
    "policy_findings",
    "policy_in_force",
    "policy_status",
    "render",
    "render_docx",
    "render_html",
    "render_markdown",
    "render_pdf",
]
