"""The console's pages: sign-in, overview, jobs, a job, submit, files, fleet.

Reads go through the same modules as the API's routes, with the signed-in account as the
caller (users see their own jobs and files, admins and viewers the admin views). Actions are
not here: the pages call the public API from the browser (``static/console.js``).
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import posixpath
import secrets
from dataclasses import asdict
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, Response, abort, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from api.auth import accounts as account_rows
from api.auth import service as accounts
from api.auth.guards import Caller
from api.auth.models import ADMIN_READERS, Role
from api.auth.sessions import SESSION_COOKIE, close_session, forget_cookie, open_session, set_cookie
from api.callbacks.service import deliveries_of
from api.catalogue.describe import describe, describe_all
from api.console import results
from api.console.security import SignInNeeded, csrf_token, https, page_caller, secure_headers, to_sign_in
from api.console.stream import console_events
from api.context import ctx
from api.errors import NotFound, RateLimited, Unauthorized
from api.files.routes import download_entry
from api.files.service import list_files
from api.files.thumbnails import thumbnails
from api.fleet.status import fleet_status
from api.queue import jobs as queue_jobs
from api.queue import views as queue_views
from api.ratelimit.hooks import limit_login_attempt, record_failed_login
from jobtypes import ACTIVE_STATUSES, JobStatus, job_type_names

bp = Blueprint("console", __name__, template_folder="templates", static_folder="static",
               static_url_path="/console/static")

#: Longer credentials were never accepted (emails are at most 320 characters, passwords 256).
MAX_EMAIL_CHARS, MAX_PASSWORD_CHARS = 320, 256
#: The pre-sign-in cookie whose value the sign-in form must repeat (login CSRF).
LOGIN_COOKIE = "skyfleet_login"
PAGE_SIZE = 25
#: The job types with a result view of their own (templates/results/<type>.html).
_RESULT_TEMPLATES = {f"results/{name}.html" for name in (
    "sources.detect", "image.composite", "image.mosaic", "region.stats", "spectrum.extract", "fits.inspect",
    "table.page")}
STATUSES = [s.value for s in JobStatus]
#: The job list's time ranges (created within the last …).
RANGES = {"hour": dt.timedelta(hours=1), "day": dt.timedelta(days=1), "week": dt.timedelta(days=7),
          "month": dt.timedelta(days=30)}


@bp.after_request
def _headers(response: Response) -> Response:
    return secure_headers(response)


@bp.errorhandler(SignInNeeded)
def _sign_in(_: SignInNeeded) -> Response:
    return to_sign_in()


def _render(template: str, who: Caller | None, **values: Any) -> str:
    return render_template(template, who=who, csrf=csrf_token(), is_admin=bool(who and who.is_admin),
                           reads_admin=bool(who and who.roles & {r.value for r in ADMIN_READERS}),
                           submits=bool(who and who.roles & {Role.USER.value, Role.ADMIN.value}), **values)


def _not_found(who: Caller, what: str) -> tuple[str, int]:
    """The console's 404 page: the same whether the thing does not exist or is someone else's."""
    return _render("not_found.html", who, title="Not found", what=what), 404


# --- sign-in --------------------------------------------------------------------------------

def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site only (never another origin)."""
    if (not target or not target.startswith("/") or target.startswith("//") or urlsplit(target).netloc
            or "\\" in target or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in target)):
        return url_for("console.overview")  # (a backslash: browsers read "/\\host" as "//host")
    return target


@bp.get("/login")
def login() -> Response:
    # The value already set is kept: a second tab (or any request that lands here) must not
    # invalidate the form the first one shows.
    nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
    body = _render("login.html", None, title="Sign in", nonce=nonce, next=request.args.get("next", ""), error=None)
    response = Response(body)
    set_cookie(response, LOGIN_COOKIE, nonce, https(), max_age=3600)
    return response


@bp.post("/login")
def login_submit() -> Response | tuple[str, int]:
    form = request.form
    email, password = form.get("email", "").strip(), form.get("password", "")
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    fresh = secrets.token_urlsafe(24)

    def again(error: str, status: int) -> Response:
        body = _render("login.html", None, title="Sign in", nonce=fresh, next=form.get("next", ""),
                       error=error, email=email)
        response = Response(body, status=status)
        set_cookie(response, LOGIN_COOKIE, fresh, https(), max_age=3600)
        return response

    if not nonce or not hmac.compare_digest(nonce.encode(), form.get("nonce", "").encode()):
        return again("The sign-in form expired; please sign in again.", 400)
    if not email or not password:
        return again("Enter your email and password.", 422)
    if len(email) > MAX_EMAIL_CHARS or len(password) > MAX_PASSWORD_CHARS or "\x00" in email + password:
        return again("Wrong email or password.", 401)  # never accepted (PostgreSQL holds no NUL either)
    c = ctx()
    try:
        limit_login_attempt(email)
        with c.transaction() as conn:
            account = accounts.authenticate(conn, email, password)
            if account.is_service:
                raise Unauthorized("wrong email or password")  # service accounts do not use the console
            session_id, _ = open_session(conn, account.id)
    except RateLimited as exc:
        return again(exc.message, 429)
    except Unauthorized:
        record_failed_login(email)
        return again("Wrong email or password.", 401)
    response = redirect(_safe_next(form.get("next")))
    set_cookie(response, SESSION_COOKIE, session_id, https())
    forget_cookie(response, LOGIN_COOKIE, https())
    return response  # type: ignore[return-value]


@bp.post("/logout")
def logout() -> Response:
    page_caller()  # a live session, and the CSRF token (form field) checked
    session_id = request.cookies.get(SESSION_COOKIE, "")
    with ctx().transaction() as conn:
        close_session(conn, session_id)
    response = redirect(url_for("console.login"))
    forget_cookie(response, SESSION_COOKIE, https())
    return response  # type: ignore[return-value]


# --- pages ----------------------------------------------------------------------------------

@bp.get("/")
def index() -> Response:
    page_caller()
    return redirect(url_for("console.overview"))  # type: ignore[return-value]


def _overview_values(who: Caller) -> dict[str, Any]:
    c = ctx()
    with c.read() as conn:
        if who.roles & {r.value for r in ADMIN_READERS}:
            stats = queue_views.queue_stats(conn, job_type_names())
            values: dict[str, Any] = {
                "types": [asdict(s) for s in stats], "totals": queue_views.totals(stats),
                "workers": queue_views.worker_counts(conn, c.settings.worker_lost_after_s),
                "fleet": fleet_status(conn, c.settings.worker_lost_after_s),
            }
        else:
            values = {"types": None, "workers": None, "fleet": None}
        mine, _ = queue_jobs.list_jobs(conn, Caller(who.user_id, frozenset({Role.USER.value})), 1, 10, None, None,
                                       "-created_at")
    return values | {"recent": mine, "now": dt.datetime.now(dt.UTC)}


@bp.get("/overview")
def overview() -> str:
    who = page_caller()
    return _render("overview.html", who, title="Overview", **_overview_values(who))


@bp.get("/overview/live")
def overview_live() -> str:
    who = page_caller()
    return _render("overview_live.html", who, **_overview_values(who))


def _job_filters() -> dict[str, Any]:
    args = request.args
    status = args.get("status") if args.get("status") in STATUSES else None
    job_type = args.get("type") if args.get("type") in job_type_names() else None
    sort = args.get("sort", "-created_at")
    if sort.lstrip("-") not in queue_jobs.SORTABLE:
        sort = "-created_at"
    try:
        page = max(1, int(args.get("page", "1")))
    except ValueError:
        page = 1
    q = _text(args.get("q"))
    since = args.get("since") if args.get("since") in RANGES else None
    return {"status": status, "type": job_type, "sort": sort, "page": page, "q": q, "since": since}


def _text(raw: str | None, limit: int = 200) -> str | None:
    """A text filter as the database can take it (no NUL, which PostgreSQL text cannot hold), or None."""
    cleaned = (raw or "").replace("\x00", "").strip()[:limit]
    return cleaned or None


def _created_after(since: str | None) -> dt.datetime | None:
    return None if since is None else dt.datetime.now(dt.UTC) - RANGES[since]


@bp.get("/jobs")
def jobs() -> str:
    who = page_caller()
    f = _job_filters()
    with ctx().read() as conn:
        rows, total = queue_jobs.list_jobs(conn, who, f["page"], PAGE_SIZE, f["status"], f["type"], f["sort"],
                                           created_after=_created_after(f["since"]), q=f["q"])
    pages = max(1, -(-total // PAGE_SIZE))
    after = _created_after(f["since"])
    matching = {k: v for k, v in {"status": f["status"], "type": f["type"], "q": f["q"],
                                  "created_after": after.isoformat() if after else None}.items() if v}

    def link(**changes: Any) -> str:
        query = {k: v for k, v in ({**f, **changes}).items() if v not in (None, "")}
        return url_for("console.jobs") + ("?" + urlencode(query) if query else "")

    return _render("jobs.html", who, title="Jobs", jobs=rows, total=total, pages=pages, f=f, link=link,
                   matching=matching, ranges=list(RANGES),
                   statuses=STATUSES, types=job_type_names(), sortable=queue_jobs.SORTABLE,
                   active=[s.value for s in ACTIVE_STATUSES])


def _job_values(who: Caller, job_id: int) -> dict[str, Any] | None:
    with ctx().read() as conn:
        try:
            job = queue_jobs.get_visible_job(conn, who, job_id)
        except NotFound:
            return None
        attempts = queue_jobs.job_attempts(conn, job_id)
        callbacks = deliveries_of(conn, job_id)
        result = queue_jobs.get_result(conn, who, job_id) if job["status"] == JobStatus.SUCCEEDED else None
    files = []
    for f in (result or {}).get("files") or []:
        entry = download_entry(f["key"], f.get("name") or posixpath.basename(f["key"]), f.get("size"),
                               f.get("sha256"), f.get("content_type"))
        files.append(entry)
    template = f"results/{job['type']}.html"
    return {"job": job, "attempts": attempts, "callbacks": callbacks, "result": result, "files": files,
            "rv": results.view(job, result, files),
            "result_template": template if template in _RESULT_TEMPLATES else None,
            "active": job["status"] in {s.value for s in ACTIVE_STATUSES},
            "pretty": lambda value: json.dumps(value, indent=2, sort_keys=True, default=str)}


@bp.get("/jobs/<int:job_id>")
def job(job_id: int) -> str | tuple[str, int]:
    who = page_caller()
    values = _job_values(who, job_id)
    if values is None:
        return _not_found(who, f"job {job_id}")
    return _render("job.html", who, title=f"Job {job_id}", **values)


@bp.get("/jobs/<int:job_id>/live")
def job_live(job_id: int) -> str | tuple[str, int]:
    who = page_caller()
    values = _job_values(who, job_id)
    if values is None:
        return _not_found(who, f"job {job_id}")
    return _render("job_live.html", who, **values)


@bp.get("/submit")
def submit() -> str:
    who = page_caller()
    return _render("submit_choose.html", who, title="Submit", types=describe_all())


@bp.get("/submit/<string:job_type>")
def submit_type(job_type: str) -> str | tuple[str, int]:
    who = page_caller()
    if job_type not in job_type_names():
        return _not_found(who, f"job type {job_type}")
    with ctx().read() as conn:
        files, _ = list_files(conn, Caller(who.user_id, frozenset({Role.USER.value})), 1, 200, "-created_at", None)
    described = describe(job_type)
    return _render("submit.html", who, title=f"Submit {job_type}", jt=described,
                   fields=_form_fields(described["input_schema"]), files=files,
                   clone=request.args.get("input", ""))


def _form_fields(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The input schema's properties as form fields: kind, default, bounds, choices."""
    required = set(schema.get("required", []))
    out = []
    for name, prop in schema.get("properties", {}).items():
        if "$ref" in prop and prop["$ref"].endswith("/InputFile"):
            kind = "file"
        elif "enum" in prop:
            kind = "enum"
        elif prop.get("type") in ("integer", "number", "boolean", "string"):
            kind = prop["type"]
        else:
            kind = "json"
        out.append({"name": name, "kind": kind, "required": name in required, "default": prop.get("default"),
                    "minimum": prop.get("minimum"), "maximum": prop.get("maximum"), "enum": prop.get("enum"),
                    "description": prop.get("description", ""), "max_length": prop.get("maxLength")})
    return out


@bp.get("/files")
def files() -> str:
    who = page_caller()
    with ctx().read() as conn:
        rows, total = list_files(conn, who, 1, 200, "-created_at", _text(request.args.get("q")))
        thumbs = thumbnails(conn, [r["id"] for r in rows])
    for row in rows:
        thumb = thumbs.get(row["id"])
        row["thumbnail"] = thumb and (thumb | {"url": thumb["key"] and download_entry(
            thumb["key"], "thumbnail.png", None, None, "image/png")["url"]})
    return _render("files.html", who, title="Files", files=rows, total=total)


@bp.get("/fleet")
def fleet() -> str:
    who = page_caller()
    if not who.roles & {r.value for r in ADMIN_READERS}:
        abort(404)
    c = ctx()
    with c.read() as conn:
        status = fleet_status(conn, c.settings.worker_lost_after_s)
        workers, total = queue_views.list_workers(conn, 1, 200, None, lost_after_s=c.settings.worker_lost_after_s)
    return _render("fleet.html", who, title="Fleet", fleet=status, workers=workers, total=total,
                   now=dt.datetime.now(dt.UTC))


bp.add_url_rule("/console/events", "events", console_events)


@bp.get("/accounts")
def accounts_page() -> str:
    who = page_caller()
    if not who.roles & {r.value for r in ADMIN_READERS}:
        abort(404)
    with ctx().read() as conn:
        people, _ = account_rows.list_accounts(conn, account_rows.AccountFilter(is_service=False), 1, 500, "-created_at")
        services, _ = account_rows.list_accounts(conn, account_rows.AccountFilter(is_service=True), 1, 500,
                                                 "-created_at")
    return _render("accounts.html", who, title="Accounts", people=people, services=services)


@bp.app_errorhandler(404)
def _page_not_found(error: HTTPException) -> Any:
    """A 404 outside the API is a console page (inside it, the API's envelope)."""
    if request.path.startswith("/api/"):
        from api.app import render_http_exception
        return render_http_exception(error)
    if not request.accept_mimetypes.accept_html:  # an asset (an icon, an image): no page for it
        return secure_headers(Response("not found", 404, mimetype="text/plain"))
    try:
        who = page_caller()
    except SignInNeeded:
        return to_sign_in()
    return secure_headers(Response(_render("not_found.html", who, title="Not found", what=request.path), 404))
