"""The account's access token: obtained, renewed before it expires, shared by every thread.

Credentials are an access token, or an email and password (a login), or a refresh token (a
saved login). A token from a login or a refresh is renewed at a random 60–80 % of its lifetime,
so a fleet started together does not renew together, and with the refresh token: a lookup for
the API, where a password login costs it an argon2 hash. The refresh token rotates; the new
one is handed to ``on_refresh`` (to be saved). A refused refresh token falls back to the
password, if there is one.

While one thread renews a token that is still valid, the others carry on with it: a heartbeat
never waits on a renewal. A renewal that fails for a transient reason keeps the current token
and is tried again shortly; a token the API refused is renewed by the first thread to need it
while the others wait for the new one.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import Any

from skyfleet_client.errors import CredentialsRefused, SkyfleetError
from skyfleet_client.retry import TryAgain

log = logging.getLogger(__name__)

#: An access token is renewed at a random point in this fraction of its lifetime.
RENEW_AT_FRACTION = (0.6, 0.8)
#: Lifetime assumed when the login answer does not say (renewal then rests on the 401).
RENEW_UNKNOWN_S = 600.0
#: After a failed early renewal, the next try (the current token is still valid meanwhile).
RENEW_RETRY_S = 5.0

#: One login (``"login"``) or refresh (``"refresh"``) request: the answer's ``data``; raises
#: CredentialsRefused, :class:`TryAgain`, or the error the caller gets.
Exchange = Callable[[str, dict[str, Any]], dict[str, Any]]


class Tokens:
    """The access token of one account and how it is renewed."""

    def __init__(self, exchange: Exchange, clock: Callable[[], float], *, email: str | None = None,
                 password: str | None = None, token: str | None = None, refresh_token: str | None = None,
                 on_refresh: Callable[[str], None] | None = None) -> None:
        if not (token or refresh_token or (email and password)):
            raise ValueError("give a token, a refresh token, or an email and a password")
        self.email, self._password = email, password
        self._exchange, self._clock = exchange, clock
        self._on_refresh = on_refresh
        self.access: str | None = token
        self.refresh_token = refresh_token
        self._renew_at = float("inf")  # a token given is used until the API refuses it
        self._lock = threading.Lock()

    @property
    def renewable(self) -> bool:
        """Whether a refused access token can be replaced (a refresh token or a password)."""
        return bool(self.refresh_token or self._password)

    def current(self, rejected: str | None = None) -> str:
        """The access token to send; a renewed one when it is due, missing or ``rejected``."""
        token = self.access
        if token is not None and token != rejected:
            if self._clock() < self._renew_at or not self._lock.acquire(blocking=False):
                return token
            try:
                return self._renew(proactive=True)
            finally:
                self._lock.release()
        with self._lock:
            if self.access is not None and self.access != rejected:
                return self.access  # another thread renewed it meanwhile
            return self._renew(proactive=False)

    def renew(self) -> str:
        """A new access token now: from the refresh token, else by logging in."""
        with self._lock:
            return self._renew(proactive=False)

    def login(self) -> str:
        """Log in with the email and password (a new access and refresh token)."""
        with self._lock:
            return self._login()

    def _renew(self, proactive: bool) -> str:
        """Refresh (else log in); called with the lock held."""
        current = self.access
        try:
            if self.refresh_token is not None:
                try:
                    return self._take(self._exchange("refresh", {"refresh_token": self.refresh_token}))
                except CredentialsRefused:
                    self.refresh_token = None  # revoked, expired or rotated away: log in instead
                    if not self._password:
                        raise
            return self._login()
        except (TryAgain, SkyfleetError) as exc:
            if not proactive or current is None or isinstance(exc, CredentialsRefused):
                raise
            log.warning("could not renew the access token (%s); using the current one", exc)
            self._renew_at = self._clock() + RENEW_RETRY_S
            return current

    def _login(self) -> str:
        if not (self.email and self._password):
            raise CredentialsRefused("no password to log in with", "UNAUTHORIZED", 401)
        return self._take(self._exchange("login", {"email": self.email, "password": self._password}))

    def _take(self, data: dict[str, Any]) -> str:
        token: str = data["access_token"]
        refresh = data.get("refresh_token")
        self.refresh_token = refresh if isinstance(refresh, str) else None
        if self.refresh_token and self._on_refresh is not None:
            self._on_refresh(self.refresh_token)
        lifetime = data.get("expires_in")
        lifetime_s = float(lifetime) if isinstance(lifetime, int | float) and lifetime > 0 else RENEW_UNKNOWN_S
        self._renew_at = self._clock() + lifetime_s * random.uniform(*RENEW_AT_FRACTION)
        self.access = token
        return token
