"""The skyfleet client: ``Client(url, email=..., password=...)`` (or ``token=``, ``refresh_token=``).

    from skyfleet_client import Client

    with Client("http://127.0.0.1:8000", email="ada@example.org", password="…") as sky:
        image = sky.files.upload("m13.fits")
        job = sky.jobs.submit("sources.detect", {"file": {"file_id": image["id"]}})
        job.wait(timeout=600)
        job.download("out/")

Errors are the API's error envelope as exceptions (:mod:`skyfleet_client.errors`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Self

from skyfleet_client.errors import (
    BadRequest,
    Conflict,
    CredentialsRefused,
    Forbidden,
    JobFailed,
    LimitExceeded,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Rejected,
    ServerError,
    SkyfleetError,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)
from skyfleet_client.files import Files
from skyfleet_client.http import Session
from skyfleet_client.jobs import Job, Jobs
from skyfleet_client.retry import RetryPolicy

__all__ = ["BadRequest", "Client", "Conflict", "CredentialsRefused", "Forbidden", "Job", "JobFailed", "LimitExceeded",
           "NotFound", "PayloadTooLarge", "RateLimited", "Rejected", "RetryPolicy", "ServerError", "Session",
           "SkyfleetError", "Unauthorized", "Unavailable", "ValidationFailed"]

_UNSET: Any = object()


class Client:
    """The skyfleet API at ``url``, as one account."""

    def __init__(self, url: str, *, email: str | None = None, password: str | None = None,
                 token: str | None = None, refresh_token: str | None = None,
                 on_refresh: Callable[[str], None] | None = None, **options: Any) -> None:
        self.session = Session(url, email=email, password=password, token=token, refresh_token=refresh_token,
                               on_refresh=on_refresh, **options)
        self.jobs = Jobs(self.session)
        self.files = Files(self.session)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    def me(self) -> dict[str, Any]:
        data: dict[str, Any] = self.session.call("GET", "/api/auth/me")
        return data

    def limits(self) -> dict[str, Any]:
        data: dict[str, Any] = self.session.call("GET", "/api/jobs/limits")
        return data

    def job_types(self) -> list[dict[str, Any]]:
        """Each job type: description, input JSON Schema, result fields, retry policy, timeout."""
        data: list[dict[str, Any]] = self.session.call("GET", "/api/job-types")
        return data

    def job_type(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = self.session.call("GET", f"/api/job-types/{name}")
        return data

    # --- admin (and viewer) ------------------------------------------------------------------

    def queues(self) -> dict[str, Any]:
        data: dict[str, Any] = self.session.call("GET", "/api/admin/queues")
        return data

    def workers(self, state: str | None = None, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """The registered workers, newest first (``state``: live, lost or stopped)."""
        yield from self.session.pages("/api/admin/workers", {"state": state} if state else {}, page_size)

    def status(self) -> dict[str, Any]:
        """The fleet: pools, their workers, queue depths and decisions; the manager's lease."""
        data: dict[str, Any] = self.session.call("GET", "/api/admin/status")
        return data

    def history(self, window: str = "hour") -> dict[str, Any]:
        data: dict[str, Any] = self.session.call("GET", "/api/admin/history", params={"window": window})
        return data

    def scale(self, pool: str, count: int | None = _UNSET, min: int | None = _UNSET,
              max: int | None = _UNSET) -> dict[str, Any]:
        """Pin a pool (``count``; None unpins) and/or override its bounds (None restores one)."""
        body: dict[str, Any] = {"pool": pool}
        body |= {k: v for k, v in (("count", count), ("min", min), ("max", max)) if v is not _UNSET}
        data: dict[str, Any] = self.session.call("POST", "/api/admin/scale", json=body)
        return data

    def redeploy(self, pool: str) -> dict[str, Any]:
        data: dict[str, Any] = self.session.call("POST", "/api/admin/redeploy", json={"pool": pool})
        return data
