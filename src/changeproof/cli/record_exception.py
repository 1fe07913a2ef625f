"""`changeproof record exception`: the exceptions register.

An exception is an approved, expiring deviation from one control for one subject (or a glob of
subjects). It never turns a failure into ``pass``: results it covers show ``exception`` with the
approver, the reason and the expiry. The approver must not be a participant of what it covers —
checked here against every stored change the subject names — and an expired exception stops
covering.
"""

from __future__ import annotations

import fnmatch
import hashlib
from datetime import UTC, datetime
from typing import Any

import click

from changeproof.cli import emit_json, opts
from changeproof.errors import UsageError

GLOB_CHARS = "*?["


def _text(name: str, value: str) -> str:
    v = value.strip()
    if not v:
        raise UsageError(f"{name} is empty", expected=f"a non-empty {name}")
    return v


def _control(control_id: str) -> str:
    from changeproof.controls import ALL_CONTROLS

    ids = sorted(c.id for c in ALL_CONTROLS)
    cid = control_id.strip().upper()
    if cid not in ids:
        raise UsageError(
            f"unknown control {control_id!r}",
            expected="a control id from the catalogue: " + ", ".join(ids),
            hint="list them with `changeproof controls`",
        )
    return cid


def _covered_changes(store: Any, subject: str) -> list[tuple[str, Any]]:
    """Every stored change the subject names: one id, a commit (repo@sha) or a glob."""
    from changeproof.evidence import Change

    if not any(ch in subject for ch in GLOB_CHARS):
        found = store.get(Change, subject)
        if found is None and "@" in subject:
            repo, sha = subject.split("@", 1)
            found = store.change_for_commit(repo, sha)
        return [found] if found is not None else []
    repo = subject.split("#", 1)[0].split("@", 1)[0]
    scan = None if any(ch in repo for ch in GLOB_CHARS) else repo
    return [
        (dig, c)
        for dig, c in store.iter_records(Change, repo=scan)
        if fnmatch.fnmatchcase(c.id, subject)
    ]


@click.command("exception")
@click.option("--control", "control_id", required=True, metavar="ID", help="e.g. CM-REV-1.")
@click.option(
    "--subject",
    required=True,
    metavar="S",
    help="What it covers, as check prints it (acme/api#42, acme/api@SHA) or a glob (acme/api#*).",
)
@click.option("--reason", required=True, metavar="TEXT", help="Why the deviation is accepted.")
@click.option("--approver", required=True, metavar="USER", help="Who approved it (forge login).")
@click.option("--expires", required=True, metavar="TIME", help="When it stops covering (ISO).")
@click.option("--at", "at", metavar="TIME", help="When it was granted (default now).")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.pass_context
def record_exception(
    ctx: click.Context,
    control_id: str,
    subject: str,
    reason: str,
    approver: str,
    expires: str,
    at: str | None,
    fmt: str,
) -> None:
    """Record an approved, expiring exception to one control for a subject.

    Results it covers show as `exception` (never `pass`) with the approver, reason and expiry.
    The approver must not be a participant (author, committer, co-author, pusher) of any change
    the subject names. An expired exception stops covering.

    \b
    Examples:
      changeproof record exception --control CM-REV-1 --subject acme/api#42 \\
          --reason "hotfix reviewed in INC-1234 bridge call" --approver carol \\
          --expires 2026-12-31
      changeproof record exception --control CM-TST-2 --subject 'acme/legacy#*' \\
          --reason "SAST not available for COBOL; compensating manual review" \\
          --approver ciso --expires 2027-03-31T00:00:00Z --format json
    """
    from changeproof.cli.timeparse import parse_instant
    from changeproof.controls.facts import participants
    from changeproof.evidence import Actor, ExceptionGrant, Provenance, canonical_json

    cid = _control(control_id)
    subj = _text("--subject", subject)
    why = _text("--reason", reason)
    who = _text("--approver", approver)
    granted = parse_instant(at, what="--at time") if at else datetime.now(UTC)
    until = parse_instant(expires, end_of_day=True, what="--expires time")
    if until <= granted:
        raise UsageError(
            f"--expires {expires!r} is not after the grant time {granted.isoformat()}",
            expected="an expiry in the future",
            hint="pass a later --expires (an exception must end)",
        )
    ws = opts(ctx).workspace()
    settings = ws.settings()
    store = ws.open_store()
    try:
        covered = _covered_changes(store, subj)
        approver_actor = Actor(login=who)
        for _dig, change in covered:
            keys, labels = participants(change, settings)
            if approver_actor.keys() & keys:
                role = next((lb for lb in labels if lb.lower().startswith(who.lower())), who)
                raise UsageError(
                    f"{who} cannot approve an exception for {change.id}: they are a participant "
                    f"of it ({role})",
                    expected="an approver who did not author, commit, co-author or push the change",
                    hint="ask an independent approver (e.g. the change manager or security lead)",
                )
        raw = {
            "type": "changeproof.record.exception/v1",
            "control": cid,
            "subject": subj,
            "reason": why,
            "approver": who,
            "granted_at": granted.isoformat(),
            "expires_at": until.isoformat(),
        }
        body = canonical_json(raw)
        grant_id = "EXC-" + hashlib.sha256(body).hexdigest()[:12]
        from changeproof.locker import Locker

        with store.writer(Locker(ws.signer())) as w:
            sha = w.put_raw(
                body, kind="record.exception", source="record", media_type="application/json"
            )
            grant = ExceptionGrant(
                id=grant_id,
                control=cid,
                subject=subj,
                reason=why,
                approver=approver_actor,
                granted_at=granted,
                expires_at=until,
                provenance=Provenance(
                    source="record", occurred_at=granted, collected_at=granted, raw_sha256=sha
                ),
            )
            dig = w.put(grant)
    finally:
        store.close()
    if fmt == "json":
        import msgspec

        emit_json(
            {
                "digest": dig,
                "kind": grant.kind,
                "covers_changes": [c.id for _, c in covered],
                "record": msgspec.to_builtins(grant),
            }
        )
        return
    names = ", ".join(c.id for _, c in covered[:5]) + (" …" if len(covered) > 5 else "")
    click.echo(
        f"recorded {grant_id}: {cid} for {subj} approved by {who} until {until.isoformat()}"
        + (f" (covers {names})" if covered else " (no stored change matches yet)")
    )
