"""The worker's client of the API: the worker protocol's endpoints, under the worker's retry policy.

An outage of the API or of its database must cost a worker neither its life nor its finished
work, so :data:`WORKER_POLICY` waits out every transient failure — connection errors, timeouts,
408, 429, 502, 503, 504, also at the login that renews an expired token — with exponential
backoff and jitter, honouring ``Retry-After``, until the worker is told to stop (or for a
bounded ``retry_for_s``: the heartbeat, the shutdown). Everything else — the token kept and
renewed early, the retrying, the typed errors — is the client base's,
:class:`skyfleet_client.http.Session`. What reaches the worker is the answer, or
:class:`~skyfleet_client.errors.Rejected` (sending it again will not help: a 4xx, or a 500 the
API failed on *this* request, which the caller may split or drop),
:class:`~skyfleet_client.errors.Unavailable` (the retrying ran out, or the worker is stopping),
:class:`~skyfleet_client.errors.CredentialsRefused` (nothing will work).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, TypeVar

from skyfleet_client.errors import ServerError
from skyfleet_client.http import Session
from skyfleet_client.retry import RetryPolicy

from jobtypes import protocol
from worker.config import WorkerSettings

RETRY_BASE_S = 0.5
#: Low enough that a fleet resumes within seconds of an outage's end (jitter spreads the load).
RETRY_CAP_S = 5.0

WORKER_POLICY = RetryPolicy(
    transient_statuses=frozenset({408, 429, 502, 503, 504}),
    # Every worker request is safe to repeat: the attempt's fence token makes a second report,
    # heartbeat or release of the same attempt change nothing, and a lost claim's jobs are rescued.
    resend_unsafe=True,
    # The service account's credentials are known good: a login answered otherwise than "refused"
    # (a 500 while the database is down) is the API's trouble.
    auth_failures_transient=True,
    retry_for_s=None,
    backoff_base_s=RETRY_BASE_S,
    backoff_cap_s=RETRY_CAP_S,
    retry_after_spread=0.2,
    log_level=logging.WARNING,
)

M = TypeVar("M", bound=protocol.Answer)


class WorkerApi:
    """``/api/workers/*`` as the worker's service account; thread-safe (one token, one connection pool)."""

    def __init__(self, settings: WorkerSettings, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.session = Session(settings.api_url, email=settings.email, password=settings.password,
                               timeout_s=settings.http_timeout_s, policy=WORKER_POLICY, stop=stop)

    def register(self, register: protocol.Register) -> protocol.Registered:
        """``POST /api/workers``: this worker's id and the heartbeat interval the API expects."""
        return read(protocol.Registered, self._post("/api/workers", protocol.dump(register)))

    def claim(self, worker_id: int, claim: protocol.Claim, timeout_s: float) -> protocol.ClaimAnswer:
        """``POST …/claim``: long-polls up to ``claim.wait_s`` (hence ``timeout_s``), carrying reports."""
        return read(protocol.ClaimAnswer, self._post(f"/api/workers/{worker_id}/claim", protocol.dump(claim),
                                                     timeout=timeout_s))

    def results(self, worker_id: int, results: protocol.Results,
                retry_for_s: float | None = None) -> protocol.ResultsAnswer:
        """``POST …/results``: the reports' outcomes (a 409 lists those of stale attempts)."""
        return read(protocol.ResultsAnswer, self._post(f"/api/workers/{worker_id}/results",
                                                       protocol.dump(results), retry_for_s=retry_for_s))

    def heartbeat(self, worker_id: int, heartbeat: protocol.Heartbeat,
                  retry_for_s: float) -> protocol.HeartbeatAnswer:
        """``POST …/heartbeat``: extends the leases; says which attempts to stop, and whether to drain."""
        return read(protocol.HeartbeatAnswer, self._post(f"/api/workers/{worker_id}/heartbeat",
                                                         protocol.dump(heartbeat), retry_for_s=retry_for_s))

    def release(self, worker_id: int, release: protocol.Release, retry_for_s: float) -> None:
        """``POST …/release``: hand running attempts back to the queue (at shutdown)."""
        self._post(f"/api/workers/{worker_id}/release", protocol.dump(release), retry_for_s=retry_for_s)

    def deregister(self, worker_id: int, retry_for_s: float) -> None:
        """``POST …/deregister``: this worker is leaving."""
        self._post(f"/api/workers/{worker_id}/deregister", {}, retry_for_s=retry_for_s)

    def close(self) -> None:
        self.session.close()

    def _post(self, path: str, body: dict[str, Any], timeout: float | None = None,
              retry_for_s: float | None = None) -> Any:
        return self.session.call("POST", path, json=body, timeout=timeout or self.settings.http_timeout_s,
                                 retry_for_s=retry_for_s)


def read(kind: type[M], data: Any) -> M:
    """An answer of the API as the message it should be; one that is not is the API's error
    (a 500 in effect: :class:`ServerError`, handled like any rejected request)."""
    try:
        return protocol.read(kind, data)
    except protocol.ProtocolError as exc:
        raise ServerError(f"the API's answer is not a {kind.__name__}: {exc}", "BAD_ANSWER", 500) from None
