"""The API's error envelope as typed exceptions: ``except skyfleet_client.NotFound``."""

from __future__ import annotations

from typing import Any


class SkyfleetError(Exception):
    """An error answer of the API (or none: ``status`` 0 when it could not be reached)."""

    def __init__(self, message: str, code: str = "ERROR", status: int = 0,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message, self.code, self.status, self.details = message, code, status, details or {}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.code else self.message


class ValidationFailed(SkyfleetError):
    """422: the request named a field wrongly; :attr:`fields` maps each field to its messages."""

    @property
    def fields(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = self.details.get("fields") or {}
        return found


class BadRequest(SkyfleetError):
    """400: the body is not what the API reads (not JSON, say)."""


class Unauthorized(SkyfleetError):
    """401: no valid credentials (the client renews its token by itself before giving up)."""


class Forbidden(SkyfleetError):
    """403: the account may not do this (or a browser session without its CSRF token)."""


class NotFound(SkyfleetError):
    """404: no such job, file or type, or not yours."""


class Conflict(SkyfleetError):
    """409: the resource's state forbids it (cancel a finished job, delete an active one…)."""


class PayloadTooLarge(SkyfleetError):
    """413: the body or file is larger than the account's limit."""


class LimitExceeded(SkyfleetError):
    """429 LIMIT_EXCEEDED: an account limit (``details.limit`` names it)."""


class RateLimited(SkyfleetError):
    """429 RATE_LIMIT_EXCEEDED: too many requests; :attr:`retry_after` seconds to wait."""

    @property
    def retry_after(self) -> float:
        return float(self.details.get("retry_after") or 1)


class Unavailable(SkyfleetError):
    """503, or the API could not be reached: try again later."""


class JobFailed(SkyfleetError):
    """A job ended without succeeding (FAILED, CANCELLED or TIMED_OUT); :attr:`job` is it."""

    def __init__(self, job: dict[str, Any]) -> None:
        error = job.get("error") or {}
        super().__init__(f"job {job.get('id')} ended {job.get('status')}: {error.get('message', '')}".rstrip(": "),
                         str(error.get("code") or job.get("status")), 0, {"job": job})
        self.job = job


_BY_STATUS: dict[int, type[SkyfleetError]] = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound,
                                              409: Conflict, 413: PayloadTooLarge, 422: ValidationFailed,
                                              503: Unavailable}


def from_answer(status: int, body: Any) -> SkyfleetError:
    """The exception for an error answer (its envelope, or whatever came back)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return (_BY_STATUS.get(status, SkyfleetError))(f"HTTP {status}", f"HTTP_{status}", status)
    code, message = str(error.get("code") or f"HTTP_{status}"), str(error.get("message") or "")
    details = error.get("details") if isinstance(error.get("details"), dict) else {}
    if status == 429:
        kind: type[SkyfleetError] = RateLimited if code == "RATE_LIMIT_EXCEEDED" else LimitExceeded
    else:
        kind = _BY_STATUS.get(status, SkyfleetError)
    return kind(message, code, status, details)
