"""The manager's client of the API (``/api/manager/*``), as its MANAGER service account.

The endpoints of the manager's contract, under :data:`MANAGER_POLICY`: connection errors,
5xx and 429 are retried with backoff for a bounded time — a tick must not hang on a dead API
— after which the call raises :class:`~skyfleet_client.errors.Unavailable` and the tick holds.
Logging in, renewing the token and the retrying itself are the client base's,
:class:`skyfleet_client.http.Session`, which the worker's client shares.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from skyfleet_client.errors import Conflict
from skyfleet_client.http import Session
from skyfleet_client.retry import RetryPolicy

#: How long one call keeps retrying before the tick gives up on it (and holds).
RETRY_FOR_S = 4.0

MANAGER_POLICY = RetryPolicy(
    transient_statuses=frozenset({429, *range(500, 600)}),
    # Every manager request is safe to repeat: pools and decisions are upserts, a drain or a lease
    # taken twice is taken once.
    resend_unsafe=True,
    retry_for_s=RETRY_FOR_S,
    backoff_base_s=0.25,
    backoff_cap_s=2.0,
)


class ManagerApi:
    """The manager's endpoints; used from the manager's single loop thread."""

    def __init__(self, api_url: str, email: str, password: str, timeout_s: float = 10.0,
                 retry_for_s: float = RETRY_FOR_S) -> None:
        self.session = Session(api_url, email=email, password=password, timeout_s=timeout_s,
                               policy=dataclasses.replace(MANAGER_POLICY, retry_for_s=retry_for_s))

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
        except Conflict as exc:
            return False, exc.details

    def release_lease(self, holder: str) -> None:
        """``POST /api/manager/lease/release``: free the lease if this holder has it (one quick try)."""
        self._call("POST", "/api/manager/lease/release", {"holder": holder}, retry_for_s=1.0)

    def close(self) -> None:
        """Close the keep-alive connection."""
        self.session.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None,
              retry_for_s: float | None = None) -> dict[str, Any]:
        data = self.session.call(method, path, json=body, retry_for_s=retry_for_s)
        return data if isinstance(data, dict) else {}
