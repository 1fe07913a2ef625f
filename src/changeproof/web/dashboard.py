"""The dashboard: server-rendered pages (Jinja2), inline CSS and SVG — no CDN, no scripts.

Sign-in takes any token that may read; it is kept in an HttpOnly, SameSite=Strict cookie.
"""

from __future__ import annotations

import urllib.parse
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

# runtime imports: FastAPI reads the handlers' annotations (this module is only loaded by
# the server)
from fastapi import FastAPI, Request
from fastapi.responses import Response
from jinja2 import DictLoader, Environment, select_autoescape
from markupsafe import Markup

from changeproof.web import queries, tokens
from changeproof.web.templates import TEMPLATES

if TYPE_CHECKING:
    from changeproof.web.app import State

OUTCOME_LABEL = {
    "pass": "pass",
    "fail": "fail",
    "indeterminate": "indeterminate",
    "exception": "exception",
    "not_applicable": "n/a",
    "not_evaluated": "not evaluated",
}


def sparkline(trend: list[dict[str, Any]], width: int = 220, height: int = 44) -> Markup:
    """Weekly pass rate as an inline SVG line with the last point marked."""
    if len(trend) == 1:  # one period of data: a level, not a line
        trend = [trend[0], {**trend[0]}]
    if not trend:
        return Markup(  # noqa: S704 - numbers only
            f'<svg class="spark" width="{width}" height="{height}" role="img" '
            'aria-label="no trend yet"></svg>'
        )
    pad = 4
    n = len(trend)
    xs = [pad + (width - 2 * pad) * (i / (n - 1) if n > 1 else 0.5) for i in range(n)]
    ys = [pad + (height - 2 * pad) * (1 - t["rate"]) for t in trend]
    pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
    area = f"{xs[0]:.1f},{height - pad} {pts} {xs[-1]:.1f},{height - pad}"
    last = trend[-1]
    label = f"pass rate, {trend[0]['week']} to {last['week']}: now {last['rate']:.0%}"
    tips = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.2"><title>from {t["week"]}: '
        f"{t['rate']:.0%} of {t['judged']}</title></circle>"
        for x, y, t in zip(xs, ys, trend, strict=True)
    )
    # only numbers and ISO dates computed here go into the markup
    return Markup(  # noqa: S704
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{label}">'
        f'<line x1="{pad}" x2="{width - pad}" y1="{pad}" y2="{pad}" class="grid"/>'
        f'<polygon points="{area}" class="area"/><polyline points="{pts}" class="line"/>'
        f"{tips}</svg>"
    )


def bar(counts: dict[str, int]) -> Markup:
    total = sum(counts.values()) or 1
    parts = []
    for k in ("pass", "exception", "not_applicable", "indeterminate", "fail"):
        v = counts.get(k, 0)
        if v:
            parts.append(
                f'<span class="seg o-{k}" style="width:{100 * v / total:.2f}%" '
                f'title="{OUTCOME_LABEL[k]}: {v}"></span>'
            )
    return Markup(f'<div class="stack">{"".join(parts)}</div>')  # noqa: S704 - counts only


def _env() -> Environment:
    env = Environment(loader=DictLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    env.filters["spark"] = sparkline
    env.filters["bar"] = bar
    env.filters["label"] = lambda o: OUTCOME_LABEL.get(o, o)
    env.filters["when"] = _when
    env.filters["q"] = lambda s: urllib.parse.quote(str(s), safe="")
    env.filters["pct"] = lambda r: "—" if r is None else f"{r:.0%}"
    return env


def _when(value: str | None) -> str:
    if not value:
        return "—"
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return value


def mount(app: FastAPI, st: State) -> None:
    from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

    from changeproof.web.app import COOKIE

    env = _env()
    store = st.store

    def who(request: Request) -> tokens.TokenInfo | None:
        raw = request.cookies.get(COOKIE)
        info = tokens.lookup(store, raw) if raw else None
        if info is None or not tokens.allows(info.scope, "read"):
            return None
        return info

    def page(request: Request, name: str, status: int = 200, **ctx: Any) -> Response:
        user = who(request)
        if user is None and name != "signin.html":
            return RedirectResponse("/signin?next=" + urllib.parse.quote(request.url.path), 303)
        html = env.get_template(name).render(
            user=user, path=request.url.path, org=st.settings.organisation.name, **ctx
        )
        return HTMLResponse(html, status, headers={
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "img-src data:; form-action 'self'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
        })  # fmt: skip

    def run_id() -> int | None:
        r = queries.latest_run(store)
        return None if r is None else int(r["id"])

    @app.get("/signin", include_in_schema=False)
    def signin_form(request: Request, next: str = "/") -> Response:
        return page(request, "signin.html", next=next if next.startswith("/") else "/")

    @app.post("/signin", include_in_schema=False)
    async def signin(request: Request) -> Response:
        form = urllib.parse.parse_qs((await request.body())[:4096].decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].strip()
        nxt = (form.get("next") or ["/"])[0]
        if not nxt.startswith("/") or nxt.startswith("//"):
            nxt = "/"
        info = tokens.lookup(store, token)
        if info is None or not tokens.allows(info.scope, "read"):
            return page(request, "signin.html", 401, next=nxt,
                        error="That token is not valid (or was revoked).")  # fmt: skip
        resp = RedirectResponse(nxt, 303)
        resp.set_cookie(COOKIE, token, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", max_age=12 * 3600)  # fmt: skip
        return resp

    @app.post("/signout", include_in_schema=False)
    def signout() -> Response:
        resp = RedirectResponse("/signin", 303)
        resp.delete_cookie(COOKIE)
        return resp

    @app.get("/", include_in_schema=False)
    def home(request: Request) -> Response:
        run = queries.latest_run(store)
        now = datetime.now(UTC)
        posture = queries.posture(store, int(run["id"])) if run else []
        overall: dict[str, int] = {}
        for p in posture:
            for k, v in p["counts"].items():
                overall[k] = overall.get(k, 0) + v
        ems = queries.emergencies(store, st.settings, now)
        coll = queries.collection(store, now)
        return page(request, "home.html", run=run, posture=posture, overall=overall,
                    emergencies=[e for e in ems if e["status"] in ("open", "due_soon", "overdue")],
                    collection=coll)  # fmt: skip

    @app.get("/changes", include_in_schema=False)
    def changes(request: Request, repo: str = "", outcome: str = "", q: str = "",
                page_no: int = 1) -> Response:  # fmt: skip
        page_no = max(1, min(page_no, 100000))
        total, rows = queries.changes(
            store, run_id(), repo=repo or None, outcome=outcome or None, q=q or None,
            limit=50, offset=(page_no - 1) * 50,
        )  # fmt: skip
        return page(request, "changes.html", rows=rows, total=total, repos=store.repos(),
                    repo=repo, outcome=outcome, q=q, page_no=page_no,
                    outcomes=list(OUTCOME_LABEL))  # fmt: skip

    @app.get("/changes/{change_id:path}", include_in_schema=False)
    def change(request: Request, change_id: str) -> Response:
        d = queries.change_detail(store, run_id(), change_id)
        if d is None:
            return page(request, "missing.html", 404, what=f"change {change_id}")
        return page(request, "change.html", d=d, c=d["change"])

    @app.get("/emergencies", include_in_schema=False)
    def emergencies(request: Request) -> Response:
        now = datetime.now(UTC)
        return page(request, "emergencies.html", rows=queries.emergencies(store, st.settings, now),
                    hours=st.settings.emergency.retro_review_hours)  # fmt: skip

    @app.get("/patching", include_in_schema=False)
    def patching(request: Request) -> Response:
        rows = queries.findings(store, st.settings, datetime.now(UTC))
        return page(request, "patching.html", rows=rows)

    @app.get("/exceptions", include_in_schema=False)
    def exceptions(request: Request) -> Response:
        return page(request, "exceptions.html", rows=queries.exceptions(store, datetime.now(UTC)))

    @app.get("/collection", include_in_schema=False)
    def collection(request: Request) -> Response:
        counts, dels = queries.deliveries(store, limit=25)
        return page(request, "collection.html", rows=queries.collection(store, datetime.now(UTC)),
                    counts=counts, deliveries=dels)  # fmt: skip

    @app.get("/audits", include_in_schema=False)
    def audits(request: Request) -> Response:
        assert st.audits is not None
        return page(request, "audits.html", rows=st.audits.list())

    @app.get("/audits/{audit_id}/package.zip", include_in_schema=False)
    def audit_zip(request: Request, audit_id: str) -> Response:
        assert st.audits is not None
        if who(request) is None:
            return RedirectResponse("/signin", 303)
        z = st.audits.zip_path(audit_id)
        if z is None:
            return page(request, "missing.html", 404, what=f"audit package {audit_id}")
        return FileResponse(z, media_type="application/zip",
                            filename=f"changeproof-audit-{audit_id}.zip")  # fmt: skip
