"""The worker's HTTP client: logs in with its service account and waits out what is transient.

An outage of the API or of its database must cost a worker neither its life nor its finished
work, so a request is retried through every transient failure — connection errors, timeouts,
408, 429, 502, 503, 504, including at the login that renews an expired token — with
exponential backoff and jitter, honouring ``Retry-After``. What reaches the caller is an
answer: the envelope's ``data``; :class:`ApiRejected`, an error that sending the same request
again will not fix (a 4xx, or a 500: the API failed on *this* request, which the caller may
split or drop); :class:`ApiUnavailable` when the retrying ran out first (a bounded call, or
the worker is stopping); :class:`CredentialsRefused` when the credentials are wrong, after
which nothing will work.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import threading
import time
from typing import Any

import requests

from worker.config import WorkerSettings

log = logging.getLogger(__name__)

RETRY_BASE_S = 0.5
#: Low enough that a fleet resumes within seconds of an outage's end (jitter spreads the load).
RETRY_CAP_S = 5.0
#: An access token is renewed at a random point in this fraction of its lifetime.
RENEW_AT_FRACTION = (0.6, 0.8)
#: Lifetime assumed when the login answer does not say (renewal then rests on the 401).
RENEW_UNKNOWN_S = 600.0
#: After a failed early renewal, the next try (the current token is still valid meanwhile).
RENEW_RETRY_S = 5.0
#: A ``Retry-After`` further out than this is not believed (a misconfigured proxy's, or hostile).
RETRY_AFTER_CAP_S = 300.0
#: Answers that say "not now" rather than "not this request".
TRANSIENT_STATUSES = frozenset({408, 429, 502, 503, 504})
#: Login answers that mean the credentials are wrong (or the account disabled).
REFUSED_STATUSES = frozenset({401, 403})


class ApiError(Exception):
    """A request to the API did not succeed."""


class ApiRejected(ApiError):
    """The API answered with an error that sending the same request again will not fix (4xx, 500)."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details or {}


class ApiUnavailable(ApiError):
    """No answer: the API stayed unreachable or overloaded for the whole retry budget, or the worker is stopping."""


class CredentialsRefused(ApiError):
    """The API refused the service account (wrong password, disabled, or not a worker's): nothing will work."""


class _Transient(Exception):
    """One try failed in a way worth trying again (after ``retry_after`` seconds, if the API said so)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Backoff:
    """Exponential backoff with jitter, from ``base`` doubling up to ``cap``; a ``Retry-After`` wins."""

    def __init__(self, base: float = RETRY_BASE_S, cap: float = RETRY_CAP_S) -> None:
        self.base, self.cap = base, cap
        self._next = base

    def next_delay(self, retry_after: float | None = None) -> float:
        # Jitter spreads a fleet's retries, so a recovering API is not hit by every worker at once.
        delay = self._next * random.uniform(0.5, 1.0)
        self._next = min(self.cap, self._next * 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, RETRY_AFTER_CAP_S) * random.uniform(1.0, 1.2))
        return delay

    def reset(self) -> None:
        self._next = self.base


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), RETRY_AFTER_CAP_S)


class ApiClient:
    """Thread-safe enough for the worker: one session per thread, one shared token."""

    def __init__(self, settings: WorkerSettings, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self._local = threading.local()
        self._token: str | None = None
        self._refresh_token: str | None = None
        self._renew_at = 0.0
        self._token_lock = threading.Lock()
        self._stop = stop or threading.Event()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _token_for(self, rejected: str | None) -> str:
        """The current access token; a renewed one when it is due, missing or ``rejected``.

        Renewal is due at a random 60-80 % of the token's lifetime, so a fleet started together
        does not renew together, and it uses the refresh token (a lookup for the API, where a
        password login costs it an argon2 hash). While one thread renews a token that is still
        valid, the others carry on with it: a heartbeat never waits on a renewal. A renewal
        that fails for a transient reason keeps the current token and tries again shortly.
        """
        if self._token is not None and self._token != rejected:
            if time.monotonic() < self._renew_at or not self._token_lock.acquire(blocking=False):
                return self._token
            try:
                return self._renew(proactive=True)
            finally:
                self._token_lock.release()
        with self._token_lock:
            if self._token is not None and self._token != rejected:
                return self._token  # another thread renewed it meanwhile
            return self._renew(proactive=False)

    def _renew(self, proactive: bool) -> str:
        """Refresh (else log in); called with the token lock held."""
        current = self._token
        try:
            if self._refresh_token is not None:
                try:
                    return self._take_tokens(self._post_auth("refresh", {"refresh_token": self._refresh_token}))
                except CredentialsRefused:
                    self._refresh_token = None  # revoked, expired or rotated away: log in instead
            return self._take_tokens(self._post_auth("login", {"email": self.settings.email,
                                                               "password": self.settings.password}))
        except (_Transient, requests.ConnectionError, requests.Timeout) as exc:
            if not proactive or current is None:
                raise
            log.warning("could not renew the access token (%s); using the current one", exc)
            self._renew_at = time.monotonic() + RENEW_RETRY_S
            return current

    def _post_auth(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self._session().post(f"{self.settings.api_url}/api/auth/{action}", json=body,
                                         timeout=self.settings.http_timeout_s)
        if response.status_code in REFUSED_STATUSES:
            raise CredentialsRefused(f"{action} refused for {self.settings.email} ({_rejected(response)}); "
                                     "check SKYFLEET_WORKER_EMAIL and SKYFLEET_WORKER_PASSWORD")
        if response.status_code != 200:
            # Anything else is the API's trouble, not the account's (a database outage is a 503).
            raise _Transient(f"{action}: HTTP {response.status_code}",
                             parse_retry_after(response.headers.get("Retry-After")))
        data = _data(response)
        if not isinstance(data.get("access_token"), str):
            raise _Transient(f"{action}: no access token in the answer")
        return data

    def _take_tokens(self, data: dict[str, Any]) -> str:
        token: str = data["access_token"]
        refresh = data.get("refresh_token")
        self._refresh_token = refresh if isinstance(refresh, str) else None
        lifetime = data.get("expires_in")
        lifetime_s = float(lifetime) if isinstance(lifetime, int | float) and lifetime > 0 else RENEW_UNKNOWN_S
        self._renew_at = time.monotonic() + lifetime_s * random.uniform(*RENEW_AT_FRACTION)
        self._token = token
        return token

    def post(self, path: str, body: dict[str, Any], timeout: float | None = None,
             retry_for_s: float | None = None) -> dict[str, Any]:
        """POST and return the answer's ``data``, retrying whatever is transient.

        ``retry_for_s`` bounds the retrying (shutdown paths); None retries until the worker is
        told to stop. Raises :class:`ApiRejected`, :class:`ApiUnavailable` or :class:`CredentialsRefused`.
        """
        deadline = None if retry_for_s is None else time.monotonic() + retry_for_s
        backoff = Backoff()
        rejected: str | None = None
        while True:
            try:
                token = self._token_for(rejected)
                response = self._session().post(
                    f"{self.settings.api_url}{path}", json=body,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=timeout or self.settings.http_timeout_s,
                )
                if response.status_code == 401 and rejected is None:
                    # Most likely the token expired: the next try logs in again (once per request;
                    # a login answered 503 during an outage is retried like any transient failure).
                    rejected = token
                    continue
                if response.status_code < 400:
                    data = _json(response).get("data")
                    if not isinstance(data, dict):
                        raise _Transient(f"HTTP {response.status_code} without an envelope")
                    return data
                if response.status_code not in TRANSIENT_STATUSES:
                    raise _rejected(response)
                raise _Transient(f"HTTP {response.status_code}", parse_retry_after(response.headers.get("Retry-After")))
            except _Transient as exc:
                failure = exc
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                failure = _Transient(type(exc).__name__)  # the answer, if any, was lost on the way
            self._pause(path, failure, backoff.next_delay(failure.retry_after), deadline)

    def _pause(self, path: str, failure: _Transient, delay: float, deadline: float | None) -> None:
        """Wait ``delay`` before the next try, or raise ApiUnavailable if there is to be none."""
        if deadline is None:
            if self._stop.is_set():
                raise ApiUnavailable(f"POST {path} abandoned while stopping: {failure}")
            log.warning("POST %s failed (%s); retrying in %.1f s", path, failure, delay)
            if self._stop.wait(delay):
                raise ApiUnavailable(f"POST {path} abandoned while stopping: {failure}")
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ApiUnavailable(f"POST {path} failed: {failure}")
        # A bounded call (shutdown: stop is set) sleeps without looking at the stop event.
        log.warning("POST %s failed (%s); retrying in %.1f s", path, failure, min(delay, remaining))
        time.sleep(min(delay, remaining))


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _data(response: requests.Response) -> dict[str, Any]:
    data = _json(response).get("data")
    return data if isinstance(data, dict) else {}


def _rejected(response: requests.Response) -> ApiRejected:
    error = _json(response).get("error")
    error = error if isinstance(error, dict) else {}
    details = error.get("details")
    return ApiRejected(response.status_code, str(error.get("code", "ERROR")), str(error.get("message", "")),
                       details if isinstance(details, dict) else None)
