"""The worker's HTTP client: logs in with its service account, retries what is worth retrying."""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

import requests

from worker.config import WorkerSettings

log = logging.getLogger(__name__)

RETRY_BASE_S = 0.5
RETRY_CAP_S = 15.0


class ApiRejected(Exception):
    """The API answered with a 4xx error envelope (retrying the same request will not help)."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details or {}


class ApiClient:
    """Thread-safe enough for the worker: one session per thread, one shared token."""

    def __init__(self, settings: WorkerSettings, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self._local = threading.local()
        self._token: str | None = None
        self._token_lock = threading.Lock()
        self._stop = stop or threading.Event()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _login(self) -> str:
        with self._token_lock:
            response = self._session().post(
                f"{self.settings.api_url}/api/auth/login",
                json={"email": self.settings.email, "password": self.settings.password},
                timeout=self.settings.http_timeout_s,
            )
            body = _json(response)
            if response.status_code != 200:
                error = body.get("error", {})
                raise ApiRejected(response.status_code, error.get("code", "ERROR"), error.get("message", "login failed"))
            self._token = body["data"]["access_token"]
            return self._token

    def post(self, path: str, body: dict[str, Any], timeout: float | None = None,
             retry_for_s: float | None = None) -> dict[str, Any]:
        """POST and return ``data``; retries connection errors, 5xx and 429 with backoff.

        ``retry_for_s`` bounds the retrying (None: until the worker is told to stop).
        Raises :class:`ApiRejected` for a 4xx answer.
        """
        deadline = None if retry_for_s is None else time.monotonic() + retry_for_s
        delay = RETRY_BASE_S
        relogged = False
        while True:
            try:
                token = self._token or self._login()
                response = self._session().post(
                    f"{self.settings.api_url}{path}", json=body,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=timeout or self.settings.http_timeout_s,
                )
                if response.status_code == 401 and not relogged:
                    relogged = True
                    self._token = None
                    continue
                if response.status_code < 400:
                    return _json(response)["data"]
                if response.status_code < 500 and response.status_code != 429:
                    error = _json(response).get("error", {})
                    raise ApiRejected(response.status_code, error.get("code", "ERROR"),
                                      error.get("message", ""), error.get("details"))
                reason = f"HTTP {response.status_code}"
            except (requests.ConnectionError, requests.Timeout) as exc:
                reason = type(exc).__name__
            if deadline is not None and time.monotonic() + delay > deadline:
                raise ConnectionError(f"POST {path} failed: {reason}")
            if deadline is None and self._stop.is_set() and retry_for_s is None:
                raise ConnectionError(f"POST {path} abandoned while stopping: {reason}")
            log.warning("POST %s failed (%s); retrying in %.1f s", path, reason, delay)
            time.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(RETRY_CAP_S, delay * 2)


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
