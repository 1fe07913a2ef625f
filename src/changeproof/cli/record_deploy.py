"""`changeproof record deployment|approval|emergency|review`: deployment evidence from any
pipeline (GitHub Actions, GitLab CI, CircleCI, Jenkins, Argo CD …) and from people.

Each command validates everything first, then writes the raw submission into the locker and
the normalised record into the store in one transaction: bad input keeps nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from changeproof.cli import emit_json, opts
from changeproof.errors import NotFoundError, UsageError

STATUSES = ["started", "success", "failure", "in_progress", "queued", "error", "inactive"]


def _req(name: str, value: str | None) -> str:
    if value is None or not value.strip():
        raise UsageError(
            f"{name} is empty",
            expected=f"a value for {name} (an unset CI variable expands to nothing)",
            hint=f"check the variable passed to {name}",
        )
    return value.strip()


def _opt(name: str, value: str | None) -> str | None:
    return None if value is None else _req(name, value)


def _env(settings: Any, env: str) -> str:
    envs = settings.environments
    if env not in (*envs.production, *envs.pre_production):
        from changeproof.errors import ConfigError

        raise ConfigError(
            f"unknown environment {env!r}",
            expected="an environment from [environments]: "
            + ", ".join([*envs.pre_production, *envs.production]),
            hint="add it to [environments] in changeproof.toml, or fix --env",
        )
    return env


def _commit(value: str) -> str:
    from changeproof.gate import SHA_RE

    c = _req("--commit", value)
    if not SHA_RE.match(c):
        raise UsageError(
            f"malformed commit {c!r}",
            expected="a hexadecimal commit SHA (7 to 64 characters)",
        )
    return c.lower()


def _time(value: str | None, what: str, default: datetime) -> datetime:
    from changeproof.cli.timeparse import parse_instant

    return parse_instant(value, what=what) if value else default


def _full_sha(store: Any, repo: str, sha: str) -> str:
    """Expand an abbreviated SHA from the commit index when it is known there."""
    if len(sha) >= 40:
        return sha
    import sqlalchemy as sa

    from changeproof.store import schema

    ci = schema.commit_index
    with store.connect() as conn:
        rows = conn.execute(
            sa.select(ci.c.sha).where(ci.c.repo == repo, ci.c.sha.startswith(sha)).limit(2)
        ).all()
    return str(rows[0][0]) if len(rows) == 1 else sha


def _write(ws: Any, store: Any, kind: str, raw: dict[str, Any], build: Any) -> tuple[str, Any]:
    """One transaction: the raw submission into the locker, the record into the store."""
    from changeproof.evidence import canonical_json
    from changeproof.locker import Locker

    with store.writer(Locker(ws.signer())) as w:
        sha = w.put_raw(
            canonical_json({"type": f"changeproof.record.{kind}/v1", **raw}),
            kind=f"record.{kind}",
            source="record",
            media_type="application/json",
        )
        rec = build(sha)
        dig = w.put(rec)
    return dig, rec


def _prov(sha: str, occurred: datetime, now: datetime, url: str | None = None) -> Any:
    from changeproof.evidence import Provenance

    return Provenance(
        source="record", occurred_at=occurred, collected_at=now, raw_sha256=sha, url=url
    )


def _out(fmt: str, dig: str, rec: Any, text: str) -> None:
    if fmt == "json":
        import msgspec

        emit_json({"digest": dig, "kind": rec.kind, "record": msgspec.to_builtins(rec)})
    else:
        click.echo(text)


FORMAT = click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)


@click.command("deployment")
@click.option("--env", "environment", required=True, metavar="ENV")
@click.option("--repo", required=True, metavar="R")
@click.option("--commit", required=True, metavar="SHA")
@click.option("--artifact", metavar="sha256:…", help="Digest of the deployed artifact.")
@click.option("--status", type=click.Choice(STATUSES), default="success", show_default=True)
@click.option("--actor", metavar="ID", help="Identity that performed the deployment.")
@click.option("--url", metavar="URL", help="Link to the pipeline run or deployment.")
@click.option("--at", "at", metavar="TIME", help="When it started (default now).")
@click.option(
    "--finished-at", metavar="TIME", help="When it finished (default: --at for a final status)."
)
@click.option(
    "--id", "dep_id", metavar="ID", help="Stable id: record again with it to update the status."
)
@click.option(
    "--system",
    default="record",
    show_default=True,
    help="Deploying system (github, gitlab, argo …).",
)
@FORMAT
@click.pass_context
def record_deployment(
    ctx: click.Context,
    environment: str,
    repo: str,
    commit: str,
    artifact: str | None,
    status: str,
    actor: str | None,
    url: str | None,
    at: str | None,
    finished_at: str | None,
    dep_id: str | None,
    system: str,
    fmt: str,
) -> None:
    """Record a deployment to an environment (from any pipeline).

    \b
    Examples:
      changeproof record deployment --env staging --repo acme/api --commit $GITHUB_SHA
      changeproof record deployment --env production --repo acme/api --commit abc1234 \\
          --artifact sha256:… --actor github-actions[bot] --url $RUN_URL
      changeproof record deployment --env production --repo acme/api --commit abc1234 \\
          --id run-981-production --status started
      changeproof record deployment --env production --repo acme/api --commit abc1234 \\
          --id run-981-production --status success
    """
    from changeproof.evidence import Actor, Deployment
    from changeproof.gate import ARTIFACT_RE

    ws = opts(ctx).workspace()
    settings = ws.settings()
    environment = _env(settings, _req("--env", environment))
    repo = _req("--repo", repo)
    sha = _commit(commit)
    artifact = _opt("--artifact", artifact)
    if artifact is not None and not ARTIFACT_RE.match(artifact):
        raise UsageError(
            f"malformed artifact digest {artifact!r}", expected="sha256:<64 lowercase hex digits>"
        )
    actor = _opt("--actor", actor)
    url = _opt("--url", url)
    now = datetime.now(UTC)
    started = _time(at, "--at time", now)
    final = status in ("success", "failure", "error", "inactive")
    finished = _time(finished_at, "--finished-at time", started) if (finished_at or final) else None
    if finished is not None and finished < started:
        raise UsageError("--finished-at is before the deployment started (--at)")
    store = ws.open_store()
    try:
        sha = _full_sha(store, repo, sha)
        did = (
            _opt("--id", dep_id)
            or f"{system}:{repo}:{environment}:{sha[:12]}:{started:%Y%m%dT%H%M%SZ}"
        )
        raw = {
            "id": did,
            "env": environment,
            "repo": repo,
            "commit": sha,
            "artifact": artifact,
            "status": status,
            "actor": actor,
            "url": url,
            "started_at": started.isoformat(),
            "finished_at": finished.isoformat() if finished else None,
            "system": system,
        }
        dig, rec = _write(
            ws,
            store,
            "deployment",
            raw,
            lambda raw_sha: Deployment(
                id=did,
                repo=repo,
                environment=environment,
                commit_sha=sha,
                status=status,  # type: ignore[arg-type]
                started_at=started,
                finished_at=finished,
                artifact=artifact,
                actor=Actor(login=actor) if actor else None,
                url=url,
                system=system,
                provenance=_prov(raw_sha, started, now, url),
            ),
        )
    finally:
        store.close()
    _out(fmt, dig, rec, f"recorded deployment {did}: {repo}@{sha[:12]} → {environment} ({status})")


@click.command("approval")
@click.option("--env", "environment", required=True, metavar="ENV")
@click.option("--repo", required=True, metavar="R")
@click.option("--commit", required=True, metavar="SHA")
@click.option("--by", "by", required=True, metavar="USER", help="The approving release manager.")
@click.option(
    "--state", type=click.Choice(["approved", "rejected"]), default="approved", show_default=True
)
@click.option("--comment", default="", help="Free text kept with the approval.")
@click.option("--at", "at", metavar="TIME", help="When it was given (default now).")
@FORMAT
@click.pass_context
def record_approval(
    ctx: click.Context,
    environment: str,
    repo: str,
    commit: str,
    by: str,
    state: str,
    comment: str,
    at: str | None,
    fmt: str,
) -> None:
    """Record a release manager's sign-off (or rejection) of a deployment.

    \b
    Examples:
      changeproof record approval --env production --repo acme/api --commit abc1234 --by rm-alice
      changeproof record approval --env production --repo acme/api --commit abc1234 \\
          --by rm-alice --state rejected --comment "wait for the DB migration"
    """
    from changeproof.evidence import Actor, DeploymentApproval

    ws = opts(ctx).workspace()
    settings = ws.settings()
    environment = _env(settings, _req("--env", environment))
    repo = _req("--repo", repo)
    sha = _commit(commit)
    by = _req("--by", by)
    now = datetime.now(UTC)
    when = _time(at, "--at time", now)
    store = ws.open_store()
    try:
        sha = _full_sha(store, repo, sha)
        aid = f"approval:{repo}:{environment}:{sha[:12]}:{by}:{when:%Y%m%dT%H%M%S.%fZ}"
        raw = {
            "id": aid,
            "env": environment,
            "repo": repo,
            "commit": sha,
            "by": by,
            "state": state,
            "comment": comment,
            "at": when.isoformat(),
        }
        dig, rec = _write(
            ws,
            store,
            "approval",
            raw,
            lambda raw_sha: DeploymentApproval(
                id=aid,
                repo=repo,
                environment=environment,
                commit_sha=sha,
                approver=Actor(login=by),
                approved_at=when,
                state=state,  # type: ignore[arg-type]
                comment=comment,
                provenance=_prov(raw_sha, when, now),
            ),
        )
    finally:
        store.close()
    note = ""
    if by.lower() not in {x.lower() for x in settings.deployment.release_managers}:
        note = " (note: not listed in deployment.release_managers, so it will not count)"
    _out(fmt, dig, rec, f"recorded {state} of {repo}@{sha[:12]} for {environment} by {by}{note}")


def _find_change(store: Any, repo: str | None, subject: str) -> tuple[str, Any] | None:
    from changeproof.evidence import Change

    found = store.get(Change, subject)
    if found is None and repo is not None:
        found = store.change_for_commit(repo, subject.lower())
    if found is None and "@" in subject:
        r, sha = subject.split("@", 1)
        found = store.change_for_commit(r, sha.lower())
    return found  # type: ignore[no-any-return]


@click.command("emergency")
@click.option("--repo", metavar="R", help="Repository (needed with --commit).")
@click.option("--subject", metavar="CHANGE", help="The change (owner/repo#N or owner/repo@SHA).")
@click.option("--commit", metavar="SHA", help="…or the commit of the change.")
@click.option("--incident", required=True, metavar="REF", help="Incident reference.")
@click.option("--approver", required=True, metavar="USER", help="Designated emergency approver.")
@click.option("--by", "by", metavar="USER", help="Who declares it.")
@click.option("--env", "environment", metavar="ENV", help="Environment it is deployed to.")
@click.option("--reason", default="", help="Why this is an emergency.")
@click.option("--at", "at", metavar="TIME", help="When it was declared (default now).")
@FORMAT
@click.pass_context
def record_emergency(
    ctx: click.Context,
    repo: str | None,
    subject: str | None,
    commit: str | None,
    incident: str,
    approver: str,
    by: str | None,
    environment: str | None,
    reason: str,
    at: str | None,
    fmt: str,
) -> None:
    """Declare an emergency change (CM-EMG-1) and start its retro-review clock (CM-EMG-2).

    The gate does this itself with `changeproof gate --emergency`; use this when the
    emergency is declared outside the gate (e.g. from the incident tool).

    \b
    Examples:
      changeproof record emergency --subject acme/api#812 --incident INC-4711 --approver oncall-lead
      changeproof record emergency --repo acme/api --commit abc1234 --incident PD7X2K9Q \\
          --approver oncall-lead --by alice --reason "checkout down"
    """
    from changeproof.controls.emergency import due_at, incident_ok, is_designated
    from changeproof.controls.facts import participants
    from changeproof.evidence import Actor, Emergency

    ws = opts(ctx).workspace()
    settings = ws.settings()
    incident = _req("--incident", incident)
    approver = _req("--approver", approver)
    by = _opt("--by", by)
    if environment is not None:
        environment = _env(settings, _req("--env", environment))
    if not incident_ok(incident, settings):
        raise UsageError(
            f"incident reference {incident!r} matches none of the configured patterns",
            expected="e.g. INC-123, a Jira key, a PagerDuty id or URL (emergency.incident_patterns)",
        )
    if not is_designated(Actor(login=approver), settings):
        raise UsageError(
            f"{approver} is not a designated emergency approver",
            expected=f"one of emergency.approvers: {', '.join(settings.emergency.approvers) or '(none configured)'}",
            hint="add the approver to [emergency] approvers in changeproof.toml",
        )
    if by is not None and by.lower() == approver.lower():
        raise UsageError(f"{approver} cannot approve an emergency they declare")
    target = _opt("--subject", subject) or (_commit(commit) if commit else None)
    if target is None:
        raise UsageError("name the change: --subject owner/repo#N or --repo R --commit SHA")
    now = datetime.now(UTC)
    when = _time(at, "--at time", now)
    store = ws.open_store(write=False)
    try:
        found = _find_change(store, repo, target)
        if found is None:
            raise NotFoundError(
                f"no change {target!r} in the store",
                expected="a collected change (owner/repo#N, owner/repo@SHA, or --repo with --commit)",
                hint="run `changeproof collect` first",
            )
        _, change = found
        keys, _labels = participants(change, settings)
        if Actor(login=approver).keys() & keys:
            raise UsageError(
                f"{approver} is a participant of {change.id} and cannot approve its emergency"
            )
        eid = f"EMG-{when:%Y%m%dT%H%M%SZ}-{change.merge_sha[:8]}"
        raw = {
            "id": eid,
            "subject": change.id,
            "commit": change.merge_sha,
            "incident": incident,
            "approver": approver,
            "by": by,
            "env": environment,
            "reason": reason,
            "at": when.isoformat(),
        }
        dig, rec = _write(
            ws,
            store,
            "emergency",
            raw,
            lambda raw_sha: Emergency(
                id=eid,
                repo=change.repo,
                subject=change.id,
                commit_sha=change.merge_sha,
                incident=incident,
                approver=Actor(login=approver),
                declared_by=Actor(login=by) if by else None,
                declared_at=when,
                reason=reason,
                environment=environment,
                covers=(change.id,),
                participants=tuple(sorted(keys)),
                provenance=_prov(raw_sha, when, now),
            ),
        )
    finally:
        store.close()
    _out(
        fmt,
        dig,
        rec,
        f"declared emergency {eid} for {rec.subject} (incident {incident}, approved by "
        f"{approver}); independent retro review due {due_at(rec, settings).isoformat()}",
    )


@click.command("review")
@click.option("--subject", required=True, metavar="ID", help="Emergency id, change id or commit.")
@click.option("--by", "by", required=True, metavar="USER", help="The independent reviewer.")
@click.option("--notes", default="", help="What the review found.")
@click.option("--at", "at", metavar="TIME", help="When it was reviewed (default now).")
@FORMAT
@click.pass_context
def record_review(
    ctx: click.Context, subject: str, by: str, notes: str, at: str | None, fmt: str
) -> None:
    """Record the independent retroactive review of an emergency change (closes CM-EMG-2).

    The reviewer must be human and independent: not a participant of the change, not the
    emergency approver, not the declarer.

    \b
    Examples:
      changeproof record review --subject EMG-20260301T020304Z-abcdef12 --by bob
      changeproof record review --subject acme/api#812 --by bob --notes "fix is sound"
    """
    from changeproof.controls.emergency import due_at, review_counts
    from changeproof.evidence import Actor, Emergency, RetroReview

    ws = opts(ctx).workspace()
    settings = ws.settings()
    subject = _req("--subject", subject)
    by = _req("--by", by)
    now = datetime.now(UTC)
    when = _time(at, "--at time", now)
    store = ws.open_store(write=False)
    try:
        found = store.get(Emergency, subject)
        if found is not None:
            matches = [found]
        else:
            low = subject.lower()
            matches = [
                (d, e)
                for d, e in store.iter_records(Emergency)
                if e.subject == subject
                or subject in e.covers
                or (e.commit_sha is not None and len(low) >= 7 and e.commit_sha.startswith(low))
            ]
        if not matches:
            raise NotFoundError(
                f"no emergency for {subject!r}",
                expected="an emergency id (EMG-…), or the change or commit it covers",
                hint="list them with `changeproof emergencies`",
            )
        if len(matches) > 1:
            reviewed = {r.subject for _, r in store.iter_records(RetroReview)}
            open_ = [m for m in matches if m[1].id not in reviewed]
            if len(open_) != 1:
                raise UsageError(
                    f"{subject!r} names {len(matches)} emergencies",
                    expected="one emergency id: " + ", ".join(e.id for _, e in matches),
                )
            matches = open_
        _, e = matches[0]
        reviewer = Actor(login=by)
        draft = RetroReview(
            id=f"review:{e.id}:{by}:{when:%Y%m%dT%H%M%S.%fZ}",
            subject=e.id,
            reviewer=reviewer,
            reviewed_at=when,
            notes=notes,
            provenance=_prov("0" * 64, when, now),
        )
        why = review_counts(e, draft, settings, frozenset())
        if why is not None:
            raise UsageError(
                f"{by} cannot close {e.id}: {why}",
                expected="a human reviewer who did not take part in, approve or declare it",
            )
        raw = {"id": draft.id, "subject": e.id, "by": by, "notes": notes, "at": when.isoformat()}
        import msgspec

        dig, rec = _write(
            ws,
            store,
            "review",
            raw,
            lambda raw_sha: msgspec.structs.replace(draft, provenance=_prov(raw_sha, when, now)),
        )
    finally:
        store.close()
    due = due_at(e, settings)
    took = (when - e.declared_at).total_seconds() / 3600
    timing = (
        f"within the {settings.emergency.retro_review_hours} h window"
        if when <= due
        else f"LATE: {(when - due).total_seconds() / 3600:.1f} h after it was due"
    )
    _out(
        fmt,
        dig,
        rec,
        f"recorded retro review of {e.id} by {by}, {took:.1f} h after declaration ({timing})",
    )
