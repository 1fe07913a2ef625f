"""The ASGI application: webhooks, the REST API under /api/v1, and the dashboard at /.

Imported only by `changeproof serve` (and tests): FastAPI is never loaded by other commands.
"""

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from changeproof.locker import Signer
from changeproof.settings import Settings
from changeproof.store import Store
from changeproof.web import queries, tokens
from changeproof.web.audits import Audits
from changeproof.web.webhooks import (
    GITLAB_EVENTS,
    KEPT_HEADERS,
    MAX_BODY,
    Delivery,
    Ingestor,
    Processor,
    github_signature_ok,
    gitlab_token_ok,
    kept_headers,
)
from changeproof.workspace import Workspace

COOKIE = "changeproof_token"
Outcomes = Literal["pass", "fail", "exception", "not_applicable", "indeterminate", "not_evaluated"]


@dataclass
class State:
    ws: Workspace
    settings: Settings
    store: Store
    signer: Signer
    github_secret: bytes | None
    gitlab_token: bytes | None
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    ingestor: Ingestor | None = None
    processor: Processor | None = None
    audits: Audits | None = None


def secrets_from(settings: Settings, env: dict[str, str]) -> tuple[bytes | None, bytes | None]:
    gh = env.get(settings.github.webhook_secret_env) if settings.github.webhook_secret_env else None
    gl = env.get(settings.gitlab.webhook_token_env) if settings.gitlab.webhook_token_env else None
    return (gh.encode() if gh else None), (gl.encode() if gl else None)


class Problem(BaseModel):
    detail: str


# --- request bodies (the API's side of the record commands' options) ----------------------


class DeploymentIn(BaseModel):
    env: str = Field(min_length=1, max_length=200)
    repo: str = Field(min_length=1, max_length=256)
    commit: str = Field(min_length=1, max_length=64)
    artifact: str | None = Field(default=None, max_length=80)
    status: Literal["started", "success", "failure", "in_progress", "queued", "error",
                    "inactive"] = "success"  # fmt: skip
    actor: str | None = Field(default=None, max_length=200)
    url: str | None = Field(default=None, max_length=2000)
    at: str | None = Field(default=None, max_length=64)
    finished_at: str | None = Field(default=None, max_length=64)
    id: str | None = Field(default=None, max_length=300)
    system: str = Field(default="record", min_length=1, max_length=64)


class ApprovalIn(BaseModel):
    env: str = Field(min_length=1, max_length=200)
    repo: str = Field(min_length=1, max_length=256)
    commit: str = Field(min_length=1, max_length=64)
    by: str = Field(min_length=1, max_length=200)
    state: Literal["approved", "rejected"] = "approved"
    comment: str = Field(default="", max_length=4000)
    at: str | None = Field(default=None, max_length=64)


class EmergencyIn(BaseModel):
    repo: str | None = Field(default=None, max_length=256)
    subject: str | None = Field(default=None, max_length=512)
    commit: str | None = Field(default=None, max_length=64)
    incident: str = Field(min_length=1, max_length=200)
    approver: str = Field(min_length=1, max_length=200)
    by: str | None = Field(default=None, max_length=200)
    env: str | None = Field(default=None, max_length=200)
    reason: str = Field(default="", max_length=4000)
    at: str | None = Field(default=None, max_length=64)


class ReviewIn(BaseModel):
    subject: str = Field(min_length=1, max_length=512)
    by: str = Field(min_length=1, max_length=200)
    notes: str = Field(default="", max_length=8000)
    at: str | None = Field(default=None, max_length=64)


class ExceptionIn(BaseModel):
    control: str = Field(min_length=1, max_length=32)
    subject: str = Field(min_length=1, max_length=512)
    reason: str = Field(min_length=1, max_length=4000)
    approver: str = Field(min_length=1, max_length=200)
    expires: str = Field(min_length=1, max_length=64)
    at: str | None = Field(default=None, max_length=64)


class GateIn(BaseModel):
    env: str = Field(min_length=1, max_length=200)
    commit: str = Field(min_length=1, max_length=64)
    repo: str | None = Field(default=None, max_length=256)
    artifact: str | None = Field(default=None, max_length=80)
    actor: str | None = Field(default=None, max_length=200)
    triggered_by: str | None = Field(default=None, max_length=200)
    at: str | None = Field(default=None, max_length=64)
    emergency: bool = False
    incident: str | None = Field(default=None, max_length=200)
    approver: str | None = Field(default=None, max_length=200)
    reason: str | None = Field(default=None, max_length=4000)


class AuditIn(BaseModel):
    period: str = Field(min_length=3, max_length=64, examples=["2026-01-01..2026-06-30"])
    tz: str = Field(default="UTC", max_length=64)
    sample: int | None = Field(default=None, ge=1, le=100000)
    seed: str | None = Field(default=None, max_length=128)
    risk: str = Field(default="5%", max_length=16)
    tolerable_rate: str = Field(default="10%", max_length=16)
    repos: list[str] = Field(default_factory=list, max_length=100)
    pdf: bool = False


def _args(pairs: list[tuple[str, Any]]) -> list[str]:
    out: list[str] = []
    for flag, value in pairs:
        if value is None or value is False:
            continue
        if value is True:
            out.append(flag)
        else:
            out += [flag, str(value)]
    return out


def create_app(
    ws: Workspace,
    *,
    env: dict[str, str] | None = None,
    workers: bool = True,
    forwarded_allow_ips: str | None = None,
) -> "Receivers":
    """The application for one workspace. ``workers=False`` leaves the processing queue
    alone (tests drive :meth:`Processor.run_once` themselves). ``forwarded_allow_ips``:
    proxies trusted for X-Forwarded-For/-Proto on the API and dashboard (run uvicorn with
    ``proxy_headers=False`` then: the webhook receivers use neither header and skip it)."""
    settings = ws.settings()
    store = ws.open_store()
    gh, gl = secrets_from(settings, dict(os.environ if env is None else env))
    st = State(ws, settings, store, ws.signer(), gh, gl)
    st.ingestor = Ingestor(store, st.signer, st.write_lock)
    st.processor = Processor(store, settings, st.write_lock, busy=st.ingestor.busy)
    st.audits = Audits(ws)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        assert st.ingestor is not None and st.processor is not None
        st.ingestor.start()
        if workers:
            st.ingestor.on_commit = st.processor.wake
            st.processor.start()
        try:
            yield
        finally:
            st.ingestor.stop()
            st.processor.stop()
            store.close()

    app = FastAPI(
        title="changeproof",
        version=_version(),
        description="Evidence that every change reaching production was authorised, reviewed, "
        "tested and deployed per policy. Authenticate with `Authorization: Bearer <token>` "
        "(`changeproof token create --scope read|record|gate|admin`).",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.cp = st
    bearer = HTTPBearer(auto_error=False)

    def need(scope: str) -> Callable[..., tokens.TokenInfo]:
        def check(
            request: Request,
            cred: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        ) -> tokens.TokenInfo:
            raw = cred.credentials if cred is not None else request.cookies.get(COOKIE)
            info = tokens.lookup(store, raw) if raw else None
            if info is None:
                raise HTTPException(
                    401, "a valid API token is required",
                    headers={"WWW-Authenticate": "Bearer"},
                )  # fmt: skip
            if not tokens.allows(info.scope, scope):
                raise HTTPException(
                    403, f"this token's scope {info.scope!r} does not allow {scope!r} calls"
                )
            return info

        return check

    read = Depends(need("read"))
    errors: dict[int | str, dict[str, Any]] = {
        401: {"model": Problem}, 403: {"model": Problem}, 422: {"model": Problem},
    }  # fmt: skip

    # --- API: health and queue -----------------------------------------------------------

    @app.get("/api/v1/health", tags=["server"])
    def health() -> dict[str, Any]:
        counts, _ = queries.deliveries(store, limit=0)
        return {"ok": True, "version": _version(), "deliveries": counts}

    @app.get("/api/v1/deliveries", tags=["server"], responses=errors, dependencies=[read])
    def list_deliveries(
        status: Literal["pending", "done", "error"] | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> dict[str, Any]:
        counts, rows = queries.deliveries(store, status=status, limit=limit)
        return {"counts": counts, "deliveries": rows}

    # --- API: record ---------------------------------------------------------------------

    def record_cmd(module: str, attr: str, args: list[str]) -> JSONResponse:
        import importlib

        from changeproof.web.bridge import CommandFailed, run

        cmd = getattr(importlib.import_module(module), attr)
        try:
            _, data = run(ws, cmd, args, st.write_lock)
        except CommandFailed as exc:
            raise HTTPException(exc.status, exc.message) from None
        return JSONResponse(data, 201)

    rec = Depends(need("record"))
    deploy_mod = "changeproof.cli.record_deploy"

    @app.post("/api/v1/deployments", tags=["record"], status_code=201, responses=errors,
              dependencies=[rec])  # fmt: skip
    def record_deployment(body: DeploymentIn) -> JSONResponse:
        """`changeproof record deployment`: a deployment to an environment."""
        return record_cmd(deploy_mod, "record_deployment", _args([
            ("--env", body.env), ("--repo", body.repo), ("--commit", body.commit),
            ("--artifact", body.artifact), ("--status", body.status), ("--actor", body.actor),
            ("--url", body.url), ("--at", body.at), ("--finished-at", body.finished_at),
            ("--id", body.id), ("--system", body.system),
        ]))  # fmt: skip

    @app.post("/api/v1/approvals", tags=["record"], status_code=201, responses=errors,
              dependencies=[rec])  # fmt: skip
    def record_approval(body: ApprovalIn) -> JSONResponse:
        """`changeproof record approval`: a release manager's deployment approval."""
        return record_cmd(deploy_mod, "record_approval", _args([
            ("--env", body.env), ("--repo", body.repo), ("--commit", body.commit),
            ("--by", body.by), ("--state", body.state), ("--comment", body.comment or None),
            ("--at", body.at),
        ]))  # fmt: skip

    @app.post("/api/v1/emergencies", tags=["record"], status_code=201, responses=errors,
              dependencies=[rec])  # fmt: skip
    def record_emergency(body: EmergencyIn) -> JSONResponse:
        """`changeproof record emergency`: declare an emergency change."""
        return record_cmd(deploy_mod, "record_emergency", _args([
            ("--repo", body.repo), ("--subject", body.subject), ("--commit", body.commit),
            ("--incident", body.incident), ("--approver", body.approver), ("--by", body.by),
            ("--env", body.env), ("--reason", body.reason or None), ("--at", body.at),
        ]))  # fmt: skip

    @app.post("/api/v1/reviews", tags=["record"], status_code=201, responses=errors,
              dependencies=[rec])  # fmt: skip
    def record_review(body: ReviewIn) -> JSONResponse:
        """`changeproof record review`: the retroactive review of an emergency or change."""
        return record_cmd(deploy_mod, "record_review", _args([
            ("--subject", body.subject), ("--by", body.by), ("--notes", body.notes or None),
            ("--at", body.at),
        ]))  # fmt: skip

    @app.post("/api/v1/exceptions", tags=["record"], status_code=201, responses=errors,
              dependencies=[rec])  # fmt: skip
    def record_exception(body: ExceptionIn) -> JSONResponse:
        """`changeproof record exception`: an approved, expiring exception to one control."""
        return record_cmd("changeproof.cli.record_exception", "record_exception", _args([
            ("--control", body.control), ("--subject", body.subject),
            ("--reason", body.reason), ("--approver", body.approver),
            ("--expires", body.expires), ("--at", body.at),
        ]))  # fmt: skip

    # --- API: gate -----------------------------------------------------------------------

    @app.post("/api/v1/gate", tags=["gate"], responses=errors,
              dependencies=[Depends(need("gate"))])  # fmt: skip
    def gate(body: GateIn) -> JSONResponse:
        """`changeproof gate`: decide (and record) allow/deny for a deployment. A deny is a
        200 with `decision: deny`; 422 means it could not decide (never an allow)."""
        from changeproof.cli.gate import gate as gate_cmd
        from changeproof.web.bridge import CommandFailed, run

        try:
            _, data = run(ws, gate_cmd, _args([
                ("--env", body.env), ("--commit", body.commit), ("--repo", body.repo),
                ("--artifact", body.artifact), ("--actor", body.actor),
                ("--triggered-by", body.triggered_by), ("--at", body.at),
                ("--emergency", body.emergency), ("--incident", body.incident),
                ("--approver", body.approver), ("--reason", body.reason),
            ]), st.write_lock)  # fmt: skip
        except CommandFailed as exc:
            raise HTTPException(exc.status, exc.message) from None
        return JSONResponse(data, 200)

    # --- API: query ----------------------------------------------------------------------

    def run_id() -> int | None:
        r = queries.latest_run(store)
        return None if r is None else int(r["id"])

    @app.get("/api/v1/changes", tags=["query"], responses=errors, dependencies=[read])
    def list_changes(
        repo: Annotated[str | None, Query(max_length=256)] = None,
        outcome: Outcomes | None = None,
        q: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    ) -> dict[str, Any]:
        """Changes on controlled branches, newest first, with their worst outcome in the
        latest check run."""
        total, rows = queries.changes(store, run_id(), repo=repo, outcome=outcome, q=q,
                                      limit=limit, offset=offset)  # fmt: skip
        return {"total": total, "changes": rows}

    @app.get("/api/v1/changes/{change_id:path}", tags=["query"], responses=errors,
             dependencies=[read])  # fmt: skip
    def get_change(change_id: str) -> dict[str, Any]:
        """One change: its record, every control's result with reasons, related evidence."""
        detail = queries.change_detail(store, run_id(), change_id)
        if detail is None:
            raise HTTPException(404, f"no change {change_id!r}")
        return detail

    @app.get("/api/v1/results", tags=["query"], responses=errors, dependencies=[read])
    def list_results(
        control: Annotated[str | None, Query(max_length=32)] = None,
        outcome: Outcomes | None = None,
        subject: Annotated[str | None, Query(max_length=512)] = None,
        repo: Annotated[str | None, Query(max_length=256)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    ) -> dict[str, Any]:
        """Results of the latest `changeproof check` run."""
        run = queries.latest_run(store)
        if run is None:
            return {"run": None, "total": 0, "results": []}
        total, rows = queries.results(store, int(run["id"]), control=control, outcome=outcome,
                                      subject=subject, repo=repo, limit=limit, offset=offset)  # fmt: skip
        return {"run": run, "total": total, "results": rows}

    @app.get("/api/v1/findings", tags=["query"], responses=errors, dependencies=[read])
    def list_findings() -> dict[str, Any]:
        """The patch board: every vulnerability finding with its remediation clock."""
        now = datetime.now(UTC)
        return {"as_of": now.isoformat(), "findings": queries.findings(store, settings, now)}

    @app.get("/api/v1/emergencies", tags=["query"], responses=errors, dependencies=[read])
    def list_emergencies() -> dict[str, Any]:
        """The emergency register with each retro-review clock."""
        now = datetime.now(UTC)
        return {"as_of": now.isoformat(),
                "emergencies": queries.emergencies(store, settings, now)}  # fmt: skip

    # --- API: audits ---------------------------------------------------------------------

    @app.post("/api/v1/audits", tags=["audit"], status_code=202, responses=errors,
              dependencies=[Depends(need("admin"))])  # fmt: skip
    def start_audit(body: Annotated[AuditIn, Body()]) -> dict[str, Any]:
        """Start building an audit package (admin). Poll its status, then download the zip."""
        from changeproof.errors import ChangeproofError

        assert st.audits is not None
        try:
            return st.audits.start(body.model_dump())
        except ChangeproofError as exc:
            raise HTTPException(422, exc.message) from None

    @app.get("/api/v1/audits", tags=["audit"], responses=errors, dependencies=[read])
    def list_audits() -> dict[str, Any]:
        assert st.audits is not None
        return {"audits": st.audits.list()}

    @app.get("/api/v1/audits/{audit_id}", tags=["audit"], responses=errors,
             dependencies=[read])  # fmt: skip
    def get_audit(audit_id: str) -> dict[str, Any]:
        assert st.audits is not None
        s = st.audits.get(audit_id)
        if s is None:
            raise HTTPException(404, f"no audit {audit_id!r}")
        return s

    @app.get("/api/v1/audits/{audit_id}/package.zip", tags=["audit"], responses=errors,
             dependencies=[read], response_class=FileResponse)  # fmt: skip
    def download_audit(audit_id: str) -> FileResponse:
        """The signed audit package (verify it with `changeproof verify FILE.zip`)."""
        assert st.audits is not None
        z = st.audits.zip_path(audit_id)
        if z is None:
            raise HTTPException(404, f"no finished audit package {audit_id!r}")
        return FileResponse(z, media_type="application/zip",
                            filename=f"changeproof-audit-{audit_id}.zip")  # fmt: skip

    from changeproof.web.dashboard import mount

    mount(app, st)
    return Receivers(app, st, forwarded_allow_ips=forwarded_allow_ips)


class Receivers:
    """The webhook receivers as a bare ASGI layer in front of the application.

    Deliveries are the hot path (hundreds a second): they skip routing, dependency solving
    and the request/response objects; everything else goes to FastAPI. Attribute access
    (``app.state`` …) is forwarded, so this stands in for the FastAPI app.
    """

    PATHS = ("/webhooks/github", "/webhooks/gitlab")

    def __init__(self, app: FastAPI, st: State, *, forwarded_allow_ips: str | None = None) -> None:
        self.app = app
        self.st = st
        self.rest: Any = app
        if forwarded_allow_ips is not None:
            # the proxy-headers middleware for everything but deliveries (one layer less
            # on the hot path; uvicorn would otherwise wrap the whole application in it)
            from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

            rest: Any = app  # an ASGI app; uvicorn's annotation is narrower than FastAPI's
            self.rest = ProxyHeadersMiddleware(rest, trusted_hosts=forwarded_allow_ips)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in self.PATHS:
            await self.rest(scope, receive, send)
            return
        if scope["method"] != "POST":
            await _reply(send, 405, {"detail": "POST deliveries here"}, (b"allow", b"POST"))
            return
        # only the headers a delivery uses are decoded (ASGI servers give names in lower
        # case; a server that does not is still understood)
        headers: dict[str, str] = {}
        for k, v in scope["headers"]:
            name = _WANTED.get(k) or _WANTED.get(k.lower())
            if name is not None:
                headers[name] = v.decode("latin-1")
        status, data = await self.deliver(scope["path"], headers, receive)
        await _reply(send, status, data)

    async def deliver(
        self, path: str, headers: dict[str, str], receive: Any
    ) -> tuple[int, dict[str, Any]]:
        st = self.st
        github = path.endswith("/github")
        secret = st.github_secret if github else st.gitlab_token
        if secret is None:
            which = "GitHub webhook secret" if github else "GitLab webhook token"
            return 503, {"detail": f"no {which} is configured on this server"}
        too_big = 413, {"detail": f"webhook bodies are limited to {MAX_BODY} bytes"}
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return too_big  # refused before reading any of it
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return 400, {"detail": "the sender went away"}
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:  # a chunked upload: stop reading at the limit
                return too_big
            chunks.append(chunk)
            if not msg.get("more_body"):
                break
        body = b"".join(chunks)
        if github:
            if not github_signature_ok(secret, body, headers.get("x-hub-signature-256")):
                return 401, {"detail": "missing or wrong X-Hub-Signature-256"}
            delivery = headers.get("x-github-delivery", "")
            event = headers.get("x-github-event", "")
            if not delivery or not event or len(delivery) > 128:
                return 400, {"detail": "X-GitHub-Delivery and X-GitHub-Event are required"}
            source = "github"
        else:
            if not gitlab_token_ok(secret, headers.get("x-gitlab-token")):
                return 401, {"detail": "missing or wrong X-Gitlab-Token"}
            header = headers.get("x-gitlab-event", "")
            event = GITLAB_EVENTS.get(
                header, header.lower().removesuffix(" hook").replace(" ", "_")
            )
            # GitLab sends a per-delivery UUID (16.x+); older versions: the body's digest
            delivery = (
                headers.get("x-gitlab-event-uuid")
                or headers.get("x-gitlab-webhook-uuid")
                or "sha256:" + hashlib.sha256(body).hexdigest()
            )
            if not event or len(delivery) > 128:
                return 400, {"detail": "X-Gitlab-Event is required"}
            source = "gitlab"
        # nothing is parsed before the answer: the processor reads the payload
        d = Delivery(source, delivery, event[:64], kept_headers(headers.get), body)
        assert st.ingestor is not None
        try:
            status = await st.ingestor.submit_async(d)
        except Exception:
            return 503, {"detail": "the delivery could not be stored; nothing was kept, retry"}
        return (202 if status == "accepted" else 200), {
            "delivery": d.delivery_id,
            "event": d.event,
            "status": status,
        }


# the request headers the receivers read (the kept ones, the GitLab token and the length):
# raw lower-case name → name
_WANTED = {h.encode("latin-1"): h for h in (*KEPT_HEADERS, "x-gitlab-token", "content-length")}


async def _reply(send: Any, status: int, data: dict[str, Any], *extra: tuple[bytes, bytes]) -> None:
    body = json.dumps(data).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()), *extra],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def http_stack() -> tuple[str, str]:
    """uvicorn's HTTP parser and event loop: the C ones (httptools, uvloop — dependencies of
    the server) when importable, else the pure-Python h11 and asyncio. Named explicitly so
    the server says which it runs; deliveries cost several times more CPU on the fallbacks."""
    import importlib.util

    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return http, loop


def _version() -> str:
    from changeproof import __version__

    return __version__
