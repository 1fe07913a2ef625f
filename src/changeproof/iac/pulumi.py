"""``pulumi preview --json`` (the "preview digest": config, steps, diagnostics, changeSummary).

Shape from pulumi/pulumi ``pkg/backend/display/json.go`` (``ShowPreviewDigest``): each step has
``op`` (same, create, update, delete, replace, create-replacement, delete-replaced, read,
refresh, import …), ``urn``, ``oldState``/``newState`` with secrets already shown as
``[secret]``, ``diffReasons`` and ``replaceReasons``. A scheduled preview of a stack that
proposes any change means the stack no longer matches its program: drift (or unapplied code).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

from changeproof.errors import InputFormatError
from changeproof.evidence import DriftItem, canonical_json
from changeproof.iac.terraform import load_document

PREVIEW_CMD = "pulumi preview --json --stack STACK > preview.json"
NO_CHANGE_OPS = frozenset({"same", "read", "refresh", "discard", "discard-replaced"})
REPLACE_OPS = frozenset(
    {"replace", "create-replacement", "delete-replaced", "import-replacement", "read-replacement"}
)


@dataclass(frozen=True)
class ParsedPreview:
    stack: str | None
    digest: str
    counts: dict[str, int]
    changes: tuple[DriftItem, ...]
    errors: tuple[str, ...]
    masked: bytes


def _urn_parts(urn: str) -> tuple[str | None, str, str]:
    """``urn:pulumi:STACK::PROJECT::TYPE::NAME`` → (stack, type, name)."""
    if not urn.startswith("urn:pulumi:"):
        return None, "", urn
    head, _, rest = urn[len("urn:pulumi:") :].partition("::")
    parts = rest.split("::")
    rtype = parts[1] if len(parts) > 1 else ""
    name = parts[-1] if len(parts) > 2 else urn
    return head or None, rtype.split("$")[-1], name


def parse_preview(data: bytes, name: str) -> ParsedPreview:
    doc = load_document(data, name, kind="a Pulumi preview")
    if "format_version" in doc:
        raise InputFormatError(
            f"{name} is a Terraform plan, not `pulumi preview --json` output",
            hint="ingest Terraform drift checks with `changeproof ingest drift PLAN.json`",
        )
    steps = doc.get("steps")
    if steps is None and "changeSummary" not in doc:
        raise InputFormatError(
            f"{name} has neither steps nor changeSummary: it is not a Pulumi preview",
            expected="the JSON document `pulumi preview --json` prints",
            hint=f"produce it with `{PREVIEW_CMD}`",
        )
    if steps is not None and not isinstance(steps, list):
        raise InputFormatError(f"{name}: steps is not a list", hint=f"re-run `{PREVIEW_CMD}`")
    stack: str | None = None
    by_urn: dict[str, DriftItem] = {}
    counts: Counter[str] = Counter()
    for st in steps or ():
        if not isinstance(st, dict) or not isinstance(st.get("urn"), str):
            raise InputFormatError(
                f"{name} has a step without a urn", hint=f"re-run `{PREVIEW_CMD}`"
            )
        op = str(st.get("op") or "same")
        s, rtype, _ = _urn_parts(st["urn"])
        stack = stack or s
        if rtype == "pulumi:pulumi:Stack" and op in NO_CHANGE_OPS:
            continue
        action = "replace" if op in REPLACE_OPS else op
        if op in NO_CHANGE_OPS:
            counts["same" if op != "read" else "read"] += 1
            continue
        if st["urn"] in by_urn:
            continue  # create-replacement / delete-replaced pairs are one replacement
        counts[action] += 1
        by_urn[st["urn"]] = DriftItem(address=st["urn"], type=rtype, actions=(action,))
    summary = doc.get("changeSummary")
    if isinstance(summary, dict) and not steps:
        for op, n in summary.items():
            if isinstance(n, int):
                counts[str(op)] += n
    errors = tuple(
        str(d.get("message", "")).strip()
        for d in doc.get("diagnostics") or ()
        if isinstance(d, dict) and d.get("severity") == "error"
    )
    changes = tuple(by_urn.values())
    if isinstance(summary, dict) and not steps:
        # a digest without steps (e.g. --suppress-outputs in old versions): trust the summary
        n = sum(v for k, v in summary.items() if k not in ("same", "read") and isinstance(v, int))
        if n and not changes:
            changes = (DriftItem(address=f"{n} resource change(s) (summary only)", actions=()),)
    masked = canonical_json(doc)  # secrets are already "[secret]" in pulumi's JSON
    return ParsedPreview(
        stack=stack,
        digest=hashlib.sha256(masked).hexdigest(),
        counts=dict(sorted(counts.items())),
        changes=changes,
        errors=errors,
        masked=masked,
    )
