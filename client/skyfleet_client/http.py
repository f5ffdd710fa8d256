"""One authenticated, retrying connection to the API: the base of every client of it.

- **Authentication** (:mod:`skyfleet_client.auth`): an access token, or an email and password,
  or a refresh token; renewed before it expires, and once more when the API refuses it. Only
  a token refused even fresh reaches the caller (:class:`~skyfleet_client.errors.Unauthorized`),
  or a login refused (:class:`~skyfleet_client.errors.CredentialsRefused`).
- **Retrying** (:mod:`skyfleet_client.retry`): what the session's :class:`RetryPolicy` calls
  transient is waited out — with backoff and jitter, honouring ``Retry-After`` — for the policy's
  budget (seconds, or until ``stop`` is set); a request whose answer was lost is sent again only
  if the policy allows (by default only an idempotent one).
- **Errors** (:mod:`skyfleet_client.errors`): every error answer is a typed exception with the
  envelope's code, message and details; :class:`~skyfleet_client.errors.Unavailable` when the
  retrying ran out.

Thread-safe: one ``httpx.Client`` (its connection pool) and one token serve every thread.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx

from skyfleet_client.auth import Tokens
from skyfleet_client.errors import (
    CredentialsRefused,
    Forbidden,
    SkyfleetError,
    Unauthorized,
    Unavailable,
    from_answer,
)
from skyfleet_client.retry import Attempts, RetryPolicy, TryAgain, parse_retry_after

DEFAULT_TIMEOUT_S = 30.0
#: The longest a public client's call keeps trying: waiting out 429 and 503, reconnecting.
DEFAULT_MAX_WAIT_S = 120.0
#: The public client's policy: rate limits and 503 waited out; only idempotent requests resent.
PUBLIC_POLICY = RetryPolicy(retry_for_s=DEFAULT_MAX_WAIT_S, backoff_base_s=0.5, backoff_cap_s=2.0)

T = TypeVar("T")


class Session:
    """The API at ``url`` (``https://skyfleet.example.org``), as one account, under one retry policy.

    ``max_wait_s`` sets the policy's budget; ``stop`` ends an unbounded policy's retrying;
    ``transport``, ``clock`` and ``sleep`` are for tests.
    """

    def __init__(self, url: str, *, email: str | None = None, password: str | None = None,
                 token: str | None = None, refresh_token: str | None = None,
                 on_refresh: Callable[[str], None] | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 max_wait_s: float | None = None, policy: RetryPolicy = PUBLIC_POLICY,
                 stop: threading.Event | None = None, transport: httpx.BaseTransport | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.url = url.rstrip("/")
        self.policy = policy if max_wait_s is None else dataclasses.replace(policy, retry_for_s=max_wait_s)
        self.tokens = Tokens(self._exchange, clock, email=email, password=password, token=token,
                             refresh_token=refresh_token, on_refresh=on_refresh)
        self.http = httpx.Client(base_url=self.url, timeout=timeout_s, transport=transport,
                                 headers={"Accept": "application/json"})
        self.stop = stop or threading.Event()
        self._clock, self._sleep = clock, sleep

    def close(self) -> None:
        """Close the keep-alive connections."""
        self.http.close()

    # --- authentication ------------------------------------------------------------------

    @property
    def refresh_token(self) -> str | None:
        """The current refresh token (it rotates: save the latest to log in again later)."""
        return self.tokens.refresh_token

    def login(self) -> None:
        """Log in with the email and password (a new access and refresh token)."""
        self._with_retries("POST /api/auth/login", None, lambda: self.tokens.login())

    def access_token(self) -> str:
        """The current access token (renewed first if it is due)."""
        return self._token()

    def _token(self, rejected: str | None = None) -> str:
        """The access token to send (a new one if ``rejected``), waiting out a renewal's outage."""
        return self._with_retries("POST /api/auth", None, lambda: self.tokens.current(rejected))

    def _exchange(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        """One login or refresh request: the tokens, or why not (see :data:`auth.Exchange`)."""
        try:
            _, envelope = self._try("POST", f"/api/auth/{action}", None, envelope=True, json=body)
        except (Unauthorized, Forbidden) as exc:
            raise CredentialsRefused(f"{action} refused for {self.tokens.email or 'this login'}: {exc.message}",
                                     exc.code, exc.status, exc.details) from None
        except SkyfleetError as exc:
            if self.policy.auth_failures_transient and not isinstance(exc, CredentialsRefused):
                raise TryAgain(exc) from None  # the API's trouble, not the account's
            raise
        data = envelope["data"]
        if not isinstance(data, dict) or not isinstance(data.get("access_token"), str):
            raise TryAgain(Unavailable(f"{action}: no access token in the answer", "UNAVAILABLE"))
        return data

    # --- requests --------------------------------------------------------------------------

    def request(self, method: str, path: str, *, retry_for_s: float | None = None, **kwargs: Any) -> httpx.Response:
        """Send it (authenticated, retrying per the policy; ``retry_for_s`` overrides its budget);
        the answer, or the typed exception of an error answer."""
        return self._send(method, path, envelope=False, retry_for_s=retry_for_s, **kwargs)[0]

    def call(self, method: str, path: str, *, retry_for_s: float | None = None, **kwargs: Any) -> Any:
        """The ``data`` of the answer's envelope (an answer without one is not the API's: it is
        retried as if lost)."""
        return self._send(method, path, envelope=True, retry_for_s=retry_for_s, **kwargs)[1]["data"]

    def page(self, method: str, path: str, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """The ``data`` and ``meta`` of the answer's envelope."""
        envelope = self._send(method, path, envelope=True, **kwargs)[1]
        return envelope["data"], envelope.get("meta") or {}

    def pages(self, path: str, params: dict[str, Any], page_size: int = 100) -> Iterator[Any]:
        """Every row of a paginated list, page after page (``meta.pagination.has_next``)."""
        page = 1
        while True:
            rows, meta = self.page("GET", path, params=params | {"page": page, "limit": page_size})
            yield from rows
            if not (meta.get("pagination") or {}).get("has_next"):
                return
            page += 1

    @contextmanager
    def stream(self, method: str, path: str, *, authenticated: bool = True,
               **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed answer (a download, an event stream), not retried; errors as for :meth:`request`.
        ``authenticated=False`` for a URL that authorises itself (a presigned S3 URL must not
        carry a second credential)."""
        rejected: str | None = None
        extra = kwargs.pop("headers", None)
        while True:
            token = self._token(rejected) if authenticated else None
            request = self.http.build_request(method, path, headers=_headers(extra, token), **kwargs)
            response = self.http.send(request, stream=True)
            try:
                if response.status_code == 401 and token and rejected is None and self.tokens.renewable:
                    rejected = token
                    continue
                if response.status_code >= 400:
                    response.read()
                    raise _error(response)
                yield response
                return
            finally:
                response.close()

    def _send(self, method: str, path: str, *, envelope: bool, retry_for_s: float | None = None,
              authenticated: bool = True, **kwargs: Any) -> tuple[httpx.Response, dict[str, Any]]:
        """The request's answer (and its envelope, if ``envelope``), authenticated unless told not
        to, retried per the policy."""
        rejected: str | None = None

        def once() -> tuple[httpx.Response, dict[str, Any]]:
            nonlocal rejected
            while True:
                token = self.tokens.current(rejected) if authenticated else None
                try:
                    return self._try(method, path, token, envelope=envelope, **kwargs)
                except Unauthorized:
                    # Most likely the token expired: renew it and send again, once per request
                    # (a renewal answered 503 during an outage is waited out like any failure).
                    if token is None or rejected is not None or not self.tokens.renewable:
                        raise
                    rejected = token

        return self._with_retries(f"{method} {path}", retry_for_s, once)

    def _with_retries(self, what: str, retry_for_s: float | None, attempt: Callable[[], T]) -> T:
        """``attempt()`` again after each :class:`TryAgain`, until it succeeds or the budget ends."""
        budget = self.policy.retry_for_s if retry_for_s is None else retry_for_s
        attempts = Attempts(self.policy, what, budget, self.stop, self._clock, self._sleep)
        while True:
            try:
                return attempt()
            except TryAgain as failure:
                attempts.pause(failure.error, failure.retry_after)

    def _try(self, method: str, path: str, token: str | None, *, envelope: bool,
             headers: dict[str, str] | None = None, **kwargs: Any) -> tuple[httpx.Response, dict[str, Any]]:
        """One try: the answer and (if ``envelope``) its envelope, read once; :class:`TryAgain` if
        the policy waits this failure out; else the error."""
        for part in (kwargs.get("files") or {}).values():  # an upload sent again starts from the start
            if isinstance(part, tuple) and hasattr(part[1], "seek"):
                part[1].seek(0)
        try:
            response = self.http.request(method, path, headers=_headers(headers, token), **kwargs)
        except httpx.TransportError as exc:  # the answer, if any, was lost on the way
            lost = Unavailable(f"the API at {self.url} could not be reached: {type(exc).__name__}: {exc}",
                               "UNAVAILABLE")
            if not self.policy.may_resend(method):
                raise lost from exc
            raise TryAgain(lost) from None
        if response.status_code >= 400:
            error = _error(response)
            if self.policy.is_transient(error):
                raise TryAgain(error, _retry_after(response, error))
            raise error
        if not envelope:
            return response, {}
        body = _envelope(response)
        if body is None:
            lost = Unavailable(f"HTTP {response.status_code} without the API's envelope", "UNAVAILABLE",
                               response.status_code)
            if not self.policy.may_resend(method):
                raise lost
            raise TryAgain(lost)
        return response, body


def _headers(extra: dict[str, str] | None, token: str | None) -> dict[str, str]:
    headers = dict(extra or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _envelope(response: httpx.Response) -> dict[str, Any] | None:
    """The API's ``{success, data, meta}`` envelope of an answer; None if it has none."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) and isinstance(body.get("data"), dict | list) else None


def _error(response: httpx.Response) -> SkyfleetError:
    try:
        body = response.json()
    except ValueError:
        body = None
    return from_answer(response.status_code, body)


def _retry_after(response: httpx.Response, error: SkyfleetError) -> float | None:
    """Seconds the API asked to wait: ``Retry-After``, else the envelope's ``details.retry_after``."""
    header = parse_retry_after(response.headers.get("Retry-After"))
    return header if header is not None else parse_retry_after(error.details.get("retry_after"))
