"""The manager's HTTP client of the API (``/api/manager/*``) with its MANAGER service account.

It logs in on first use and again on a 401, retries connection errors, 5xx and 429 with
backoff for a bounded time (a tick must not hang on a dead API), and unwraps the
``{success, data}`` envelope. Modelled on the worker's client; the two components share no code.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import requests

from manager.errors import ApiRejected, ApiUnavailable

log = logging.getLogger(__name__)

RETRY_BASE_S = 0.25
RETRY_CAP_S = 2.0
#: How long one call keeps retrying before the tick gives up on it (and holds).
RETRY_FOR_S = 4.0


class ManagerApi:
    """One requests session, one bearer token; used from the manager's single loop thread."""

    def __init__(self, api_url: str, email: str, password: str, timeout_s: float = 10.0,
                 retry_for_s: float = RETRY_FOR_S) -> None:
        self.api_url = api_url.rstrip("/")
        self.email, self.password = email, password
        self.timeout_s, self.retry_for_s = timeout_s, retry_for_s
        self._session = requests.Session()
        self._token: str | None = None

    # -- the contract's endpoints ---------------------------------------------------------

    def report_pools(self, pools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``PUT /api/manager/pools``: the validated configuration; answers the pools with overrides."""
        return list(self._call("PUT", "/api/manager/pools", {"pools": pools})["pools"])

    def pools(self) -> list[dict[str, Any]]:
        """``GET /api/manager/pools``: each pool with pin, min/max overrides and redeploy generation."""
        return list(self._call("GET", "/api/manager/pools")["pools"])

    def queues(self) -> dict[str, dict[str, int]]:
        """``GET /api/manager/queues``: per job type, exact pending / scheduled / in-progress counts."""
        return dict(self._call("GET", "/api/manager/queues")["types"])

    def workers(self) -> list[dict[str, Any]]:
        """``GET /api/manager/workers``: the live workers with pool, revision, launch id, running jobs."""
        return list(self._call("GET", "/api/manager/workers")["workers"])

    def drain(self, worker_ids: list[int], only_idle: bool = True) -> list[int]:
        """``POST /api/manager/workers/drain``; the ids drained (with only_idle, busy ones are not)."""
        if not worker_ids:
            return []
        data = self._call("POST", "/api/manager/workers/drain",
                          {"worker_ids": worker_ids, "only_idle": only_idle})
        return [int(i) for i in data["drained"]]

    def record_decisions(self, decisions: list[dict[str, Any]]) -> int:
        """``POST /api/manager/decisions``; how many were recorded."""
        if not decisions:
            return 0
        return int(self._call("POST", "/api/manager/decisions", {"decisions": decisions})["recorded"])

    def acquire_lease(self, holder: str, ttl_s: float) -> tuple[bool, dict[str, Any]]:
        """``POST /api/manager/lease``: (True, lease) if this holder has it; (False, details) if not."""
        try:
            return True, self._call("POST", "/api/manager/lease", {"holder": holder, "ttl_s": ttl_s})
        except ApiRejected as exc:
            if exc.status == 409:
                return False, exc.details
            raise

    def release_lease(self, holder: str) -> None:
        """``POST /api/manager/lease/release``: free the lease if this holder has it (one quick try)."""
        self._call("POST", "/api/manager/lease/release", {"holder": holder}, retry_for_s=1.0)

    def close(self) -> None:
        """Close the keep-alive connection."""
        self._session.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _login(self) -> str:
        response = self._session.post(f"{self.api_url}/api/auth/login",
                                      json={"email": self.email, "password": self.password},
                                      timeout=self.timeout_s)
        if response.status_code != 200:
            error = _json(response).get("error", {})
            if response.status_code >= 500 or response.status_code == 429:
                raise requests.ConnectionError(f"login: HTTP {response.status_code}")
            raise ApiRejected(response.status_code, error.get("code", "ERROR"),
                              f"login as {self.email} failed: {error.get('message', '')}")
        self._token = str(response.json()["data"]["access_token"])
        return self._token

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None,
              retry_for_s: float | None = None) -> dict[str, Any]:
        """Send one request and return ``data``; ApiRejected on 4xx, ApiUnavailable when retries ran out."""
        deadline = time.monotonic() + (self.retry_for_s if retry_for_s is None else retry_for_s)
        delay = RETRY_BASE_S
        relogged = False
        while True:
            try:
                token = self._token or self._login()
                response = self._session.request(method, f"{self.api_url}{path}", json=body,
                                                 headers={"Authorization": f"Bearer {token}"},
                                                 timeout=self.timeout_s)
                if response.status_code == 401 and not relogged:
                    relogged, self._token = True, None
                    continue
                if response.status_code < 400:
                    data = _json(response).get("data")
                    return data if isinstance(data, dict) else {}
                if response.status_code < 500 and response.status_code != 429:
                    error = _json(response).get("error", {})
                    raise ApiRejected(response.status_code, error.get("code", "ERROR"),
                                      error.get("message", ""), error.get("details"))
                reason = f"HTTP {response.status_code}"
            except (requests.ConnectionError, requests.Timeout) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if time.monotonic() + delay > deadline:
                raise ApiUnavailable(f"{method} {path} failed: {reason}")
            log.debug("%s %s failed (%s); retrying in %.2f s", method, path, reason, delay)
            time.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(RETRY_CAP_S, delay * 2)


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
