"""Rate limits on the HTTP API: a ``before_request`` per caller, and the login limits.

- Every ``/api/`` request counts against ``user:{id}`` when it carries a valid access token,
  else against ``ip:{client address}``; ``settings.rate_limit_per_minute`` per one-minute
  window (0 turns the limiter off). Its responses carry ``X-RateLimit-Limit``,
  ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset``; over the limit, 429
  ``RATE_LIMIT_EXCEEDED`` with ``Retry-After``.
- Not limited: health, the OpenAPI document and docs (probes and browsers), CORS preflights,
  and the worker protocol under ``/api/workers`` — a worker's traffic is already bounded by
  long polling and one heartbeat per interval, and throttling a fleet's claims or results
  would stall the queue, not protect it.
- Login is limited per account (``login:{email}``) and per client address
  (``login-ip:{addr}``), counted on every attempt *before* the password is checked, so a
  brute force costs the attacker a 429 rather than the server an argon2 hash. Windows are one
  minute.
- Service accounts (the reserved ``@service.skyfleet.internal`` domain) are limited per
  address too, on their *failed* attempts (``login-ip-failed:{addr}``, the same allowance): a
  fleet logs in together, often from one NAT or load-balancer address, and each worker that
  is refused at login stops, so successful logins must not count. The count is checked before
  the password and incremented after a failure, so an address that keeps failing is refused
  before any more hashing (at most the allowance plus the requests already in flight get
  through per window). No per-account limit applies to them: their passwords are 192-bit
  random, so guessing is hopeless, and such a limit would only let anyone, from anywhere, lock
  a fleet out by failing on purpose. The address's budget is separate from people's, so a busy
  office behind the fleet's address cannot lock the fleet out either.
- If the counters cannot be reached the request goes through (fail open) with a warning: a
  limiter must not turn a database hiccup into an outage of its own.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

from flask import Flask, Response, g, request
from flask_jwt_extended import verify_jwt_in_request
from flask_jwt_extended.exceptions import JWTExtendedException
from jwt.exceptions import PyJWTError
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.middleware.proxy_fix import ProxyFix

from api.auth.service import is_service_email, normalise_email
from api.config import Settings
from api.context import ctx
from api.errors import RateLimited
from api.ratelimit import service
from api.ratelimit.service import Count, Limit

log = logging.getLogger(__name__)

_EXEMPT_PATHS = ("/api/health", "/api/openapi.json")
#: Signed download links are exempt too: the signature authorises them, and one user fetching a
#: job's hundreds of output files must not be throttled as an anonymous address.
_EXEMPT_PREFIXES = ("/api/docs", "/api/workers/", "/api/storage/")


def init_rate_limits(app: Flask, settings: Settings) -> None:
    """Install the per-caller limit and its headers (and ProxyFix when proxies are trusted)."""
    if settings.trusted_proxy_hops > 0:
        # Only the hops we run (an ALB: 1) are believed; anything further left in
        # X-Forwarded-For was written by the client and could be forged.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxy_hops)  # type: ignore[method-assign]
    # The headers hook serves the login limits too, which apply even with the general limit off.
    app.after_request(_add_headers)
    if settings.rate_limit_per_minute > 0:
        app.before_request(_limit_caller)


def client_address() -> str:
    """The client's address (ProxyFix has already put the forwarded one in place)."""
    return request.remote_addr or "unknown"


def _is_limited(path: str) -> bool:
    if request.method == "OPTIONS" or not path.startswith("/api/"):
        return False
    if path in _EXEMPT_PATHS or path == "/api/workers":
        return False
    return not path.startswith(_EXEMPT_PREFIXES)


def _caller_key() -> str | None:
    """``user:{id}`` for a valid access token, ``ip:{addr}`` without one; None if the
    database (the token's account lookup) is unreachable."""
    try:
        found = verify_jwt_in_request(optional=True)
    except (JWTExtendedException, PyJWTError):
        # A bad, expired or disabled account's token: the route answers 401; count it by address.
        found = None
    except SQLAlchemyError as exc:
        log.warning("rate limit skipped: the account lookup failed: %s", exc)
        return None
    if found is None:
        return f"ip:{client_address()}"
    return f"user:{found[1]['sub']}"


def _count(engine: Engine, limits: Sequence[Limit]) -> list[Count]:
    """Count the hits, or nothing (fail open) when the database cannot."""
    try:
        return service.count_hits(engine, limits)
    except SQLAlchemyError as exc:
        log.warning("rate limit skipped: counting failed: %s", exc)
        return []


def _peek(limits: Sequence[Limit]) -> list[Count]:
    """Where the keys stand without counting a hit, or nothing (fail open)."""
    try:
        return service.peek_hits(ctx().engine, limits)
    except SQLAlchemyError as exc:
        log.warning("rate limit skipped: reading the counters failed: %s", exc)
        return []


def _reject(count: Count, what: str) -> RateLimited:
    g.rate_limit_retry_after = count.retry_after_s
    reset_at = dt.datetime.fromtimestamp(count.reset_at, dt.UTC).isoformat().replace("+00:00", "Z")
    return RateLimited(
        f"too many {what}: at most {count.limit} a minute; retry in {count.retry_after_s} s",
        details={"limit": count.limit, "scope": count.key.split(":", 1)[0],
                 "retry_after": count.retry_after_s, "reset_at": reset_at},
    )


def _limit_caller() -> None:
    if not _is_limited(request.path):
        return
    key = _caller_key()
    if key is None:
        return
    c = ctx()
    counts = _count(c.engine, [Limit(key, c.settings.rate_limit_per_minute)])
    if not counts:
        return
    g.rate_limit = counts[0]
    if counts[0].exceeded:
        raise _reject(counts[0], "requests")


def _add_headers(response: Response) -> Response:
    count: Count | None = g.get("rate_limit")
    if count is not None:
        response.headers["X-RateLimit-Limit"] = str(count.limit)
        response.headers["X-RateLimit-Remaining"] = str(count.remaining)
        response.headers["X-RateLimit-Reset"] = str(count.reset_at)
    retry_after: int | None = g.get("rate_limit_retry_after")
    if retry_after is not None and response.status_code == RateLimited.status:
        response.headers["Retry-After"] = str(retry_after)
    return response


#: Failed service-account logins per client address.
_SERVICE_FAILURES = "login-ip-failed"


def limit_login_attempt(email: str) -> None:
    """Refuse (429) a login attempt over a limit; call it before the password is checked.

    A person's attempt counts against the account and the client address. A service
    account's is refused while the address has too many failed service logins this window
    (:func:`record_failed_login` counts them). Limits set to 0 are off.
    """
    s = ctx().settings
    email = normalise_email(email)
    if is_service_email(email):
        if s.login_limit_per_address > 0:
            failures = Limit(f"{_SERVICE_FAILURES}:{client_address()}", s.login_limit_per_address)
            over = [count for count in _peek([failures]) if count.exceeded]
            if over:
                raise _reject(over[0], "failed service-account logins from this address")
        return
    limits = []
    if s.login_limit_per_account > 0:
        limits.append(Limit(f"login:{email}", s.login_limit_per_account))
    if s.login_limit_per_address > 0:
        limits.append(Limit(f"login-ip:{client_address()}", s.login_limit_per_address))
    _enforce(limits, {"login": "login attempts for this account", "login-ip": "login attempts from this address"})


def record_failed_login(email: str) -> None:
    """Count a failed service-account login against the client address (people's attempts
    were all counted already)."""
    s = ctx().settings
    if is_service_email(email) and s.login_limit_per_address > 0:
        _count(ctx().engine, [Limit(f"{_SERVICE_FAILURES}:{client_address()}", s.login_limit_per_address)])


def limit_registration() -> None:
    """Registrations per client address share the login limit per address (each one costs an
    argon2 hash, and mass sign-ups are the same abuse as credential stuffing)."""
    s = ctx().settings
    if s.login_limit_per_address > 0:
        _enforce([Limit(f"register-ip:{client_address()}", s.login_limit_per_address)],
                 {"register-ip": "registrations from this address"})


def _enforce(limits: list[Limit], what: dict[str, str]) -> None:
    over = [count for count in _count(ctx().engine, limits) if count.exceeded]
    if over:
        worst = max(over, key=lambda count: count.retry_after_s)
        raise _reject(worst, what[worst.key.split(":", 1)[0]])
