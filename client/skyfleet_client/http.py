"""One authenticated, retrying connection to the API.

- **Authentication**: an access token, or an email and password (it logs in), or a refresh
  token (a saved login). An access token that expires is renewed with the refresh token, whose
  rotation is kept (``on_refresh`` hears each new one, to save it); if that fails and a
  password is known, it logs in again. Only then does a 401 reach the caller.
- **Waiting**: a 429 ``RATE_LIMIT_EXCEEDED`` or a 503 is sent again after its ``Retry-After``
  (the API did nothing with it), for at most ``max_wait_s`` in all; a request that could not
  reach the API is sent again only when repeating it is harmless (GET, HEAD, DELETE).
- **Errors**: every other error answer becomes the typed exception of
  :mod:`skyfleet_client.errors`, with the envelope's code, message and details.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from skyfleet_client.errors import RateLimited, SkyfleetError, Unauthorized, Unavailable, from_answer

DEFAULT_TIMEOUT_S = 30.0
#: The longest the client waits in all, per request, on Retry-After answers and lost connections.
DEFAULT_MAX_WAIT_S = 120.0
_IDEMPOTENT = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})


class Session:
    """The API at ``url`` (``https://skyfleet.example.org``), as one account."""

    def __init__(self, url: str, *, email: str | None = None, password: str | None = None,
                 token: str | None = None, refresh_token: str | None = None,
                 on_refresh: Callable[[str], None] | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 max_wait_s: float = DEFAULT_MAX_WAIT_S, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not (token or refresh_token or (email and password)):
            raise ValueError("give a token, a refresh token, or an email and a password")
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=timeout_s, transport=transport,
                                 headers={"Accept": "application/json"})
        self._email, self._password = email, password
        self._access, self.refresh_token = token, refresh_token
        self._on_refresh = on_refresh
        self.max_wait_s = max_wait_s
        self._sleep = sleep

    def close(self) -> None:
        self.http.close()

    # --- authentication ------------------------------------------------------------------

    def _take_tokens(self, data: dict[str, Any]) -> None:
        self._access = data["access_token"]
        if data.get("refresh_token"):
            self.refresh_token = data["refresh_token"]
            if self._on_refresh is not None:
                self._on_refresh(self.refresh_token)

    def login(self) -> None:
        """Log in with the email and password (a new access and refresh token)."""
        if not (self._email and self._password):
            raise Unauthorized("no password to log in with", "UNAUTHORIZED", 401)
        answer = self._send("POST", "/api/auth/login", json={"email": self._email, "password": self._password},
                            authenticated=False)
        self._take_tokens(answer.json()["data"])

    def renew(self) -> None:
        """A new access token: from the refresh token (rotated), else by logging in again."""
        if self.refresh_token:
            try:
                answer = self._send("POST", "/api/auth/refresh", json={"refresh_token": self.refresh_token},
                                    authenticated=False)
                self._take_tokens(answer.json()["data"])
                return
            except Unauthorized:
                self.refresh_token = None
                if not self._password:
                    raise
        self.login()

    def access_token(self) -> str:
        if not self._access:
            self.renew()
        assert self._access is not None
        return self._access

    # --- requests --------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send it (authenticated, renewing the token once if it expired); the answer, or the
        typed exception of an error answer."""
        try:
            return self._send(method, path, **kwargs)
        except Unauthorized:
            if not (self.refresh_token or self._password):
                raise
            self.renew()
            return self._send(method, path, **kwargs)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The ``data`` of the answer's envelope."""
        return self.request(method, path, **kwargs).json()["data"]

    def page(self, method: str, path: str, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """The ``data`` and ``meta`` of the answer's envelope."""
        body = self.request(method, path, **kwargs).json()
        return body["data"], body.get("meta") or {}

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
        """A streamed answer (a download, an event stream); errors as for :meth:`request`.
        ``authenticated=False`` for a URL that authorises itself (a presigned S3 URL must not
        carry a second credential)."""
        renewed = False
        extra = kwargs.pop("headers", None)
        while True:
            request = self.http.build_request(method, path, headers=self._headers(extra, authenticated), **kwargs)
            response = self.http.send(request, stream=True)
            try:
                if (response.status_code == 401 and authenticated and not renewed
                        and (self.refresh_token or self._password)):
                    renewed = True
                    response.close()
                    self.renew()
                    continue
                if response.status_code >= 400:
                    response.read()
                    raise _error(response)
                yield response
                return
            finally:
                response.close()

    def _headers(self, extra: dict[str, str] | None, authenticated: bool = True) -> dict[str, str]:
        headers = dict(extra or {})
        if authenticated:
            headers["Authorization"] = f"Bearer {self.access_token()}"
        return headers

    def _send(self, method: str, path: str, *, authenticated: bool = True, headers: dict[str, str] | None = None,
              **kwargs: Any) -> httpx.Response:
        waited = 0.0
        while True:
            try:
                response = self.http.request(method, path, headers=self._headers(headers, authenticated), **kwargs)
            except httpx.TransportError as exc:
                if method.upper() not in _IDEMPOTENT or waited >= self.max_wait_s:
                    raise Unavailable(f"the API at {self.url} could not be reached: {exc}", "UNAVAILABLE") from exc
                pause = min(2.0, self.max_wait_s - waited)
            else:
                if response.status_code < 400:
                    return response
                error = _error(response)
                if not isinstance(error, RateLimited | Unavailable):
                    raise error
                pause = _retry_after(response, error)
                if waited + pause > self.max_wait_s:
                    raise error
            self._sleep(pause)
            waited += pause
            for part in (kwargs.get("files") or {}).values():  # an upload is sent again from its start
                if isinstance(part, tuple) and hasattr(part[1], "seek"):
                    part[1].seek(0)


def _error(response: httpx.Response) -> SkyfleetError:
    try:
        body = response.json()
    except ValueError:
        body = None
    return from_answer(response.status_code, body)


def _retry_after(response: httpx.Response, error: SkyfleetError) -> float:
    """Seconds to wait before sending again (Retry-After, else the envelope's, else 1)."""
    for raw in (response.headers.get("Retry-After"), error.details.get("retry_after")):
        try:
            if raw is not None:
                return max(0.0, float(raw))
        except (TypeError, ValueError):
            continue
    return 1.0
