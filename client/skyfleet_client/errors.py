"""The API's answers that are not a success, as one hierarchy of typed exceptions.

Three kinds, by what the caller can do about them::

    SkyfleetError
    ├── Rejected             an answer that sending the same request again will not change
    │   ├── BadRequest 400, Unauthorized 401, Forbidden 403, NotFound 404, Conflict 409,
    │   │   PayloadTooLarge 413, ValidationFailed 422, LimitExceeded 429 LIMIT_EXCEEDED
    │   └── ServerError      500: the API failed on *this* request (a caller may split or drop it)
    ├── Unavailable          no answer yet: unreachable, 502/503/504, or the retrying ran out
    │   └── RateLimited      429 RATE_LIMIT_EXCEEDED: too many requests for now
    ├── CredentialsRefused   the login (or refresh) was refused: nothing will work until fixed
    └── JobFailed            a job ended without succeeding (not an HTTP answer)

``except skyfleet_client.NotFound`` for one answer, ``except Rejected`` for every final one.
"""

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


class Rejected(SkyfleetError):
    """The API answered with an error that sending the same request again will not fix (4xx, 500)."""


class BadRequest(Rejected):
    """400: the body is not what the API reads (not JSON, say)."""


class Unauthorized(Rejected):
    """401: the access token was refused (the client renews it by itself once before giving up)."""


class Forbidden(Rejected):
    """403: the account may not do this (or a browser session without its CSRF token)."""


class NotFound(Rejected):
    """404: no such job, file or type, or not yours."""


class Conflict(Rejected):
    """409: the resource's state forbids it (cancel a finished job, delete an active one…)."""


class PayloadTooLarge(Rejected):
    """413: the body or file is larger than the account's limit."""


class ValidationFailed(Rejected):
    """422: the request named a field wrongly; :attr:`fields` maps each field to its messages."""

    @property
    def fields(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = self.details.get("fields") or {}
        return found


class LimitExceeded(Rejected):
    """429 LIMIT_EXCEEDED: an account limit (``details.limit`` names it); waiting does not lift it."""


class ServerError(Rejected):
    """500: the API failed on this request (another request may well succeed)."""


class Unavailable(SkyfleetError):
    """No answer: the API could not be reached, or stayed overloaded (502, 503, 504) for the whole
    retry budget, or the caller is stopping. Try again later."""


class RateLimited(Unavailable):
    """429 RATE_LIMIT_EXCEEDED: too many requests; :attr:`retry_after` seconds to wait."""

    @property
    def retry_after(self) -> float:
        return float(self.details.get("retry_after") or 1)


class CredentialsRefused(SkyfleetError):
    """The API refused the account's login or refresh token (wrong password, disabled account, a
    revoked login): no request will succeed until the credentials are fixed."""


class JobFailed(SkyfleetError):
    """A job ended without succeeding (FAILED, CANCELLED or TIMED_OUT); :attr:`job` is it."""

    def __init__(self, job: dict[str, Any]) -> None:
        error = job.get("error") or {}
        super().__init__(f"job {job.get('id')} ended {job.get('status')}: {error.get('message', '')}".rstrip(": "),
                         str(error.get("code") or job.get("status")), 0, {"job": job})
        self.job = job


_BY_STATUS: dict[int, type[SkyfleetError]] = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound,
                                              409: Conflict, 413: PayloadTooLarge, 422: ValidationFailed,
                                              500: ServerError, 502: Unavailable, 503: Unavailable,
                                              504: Unavailable}


def _kind(status: int, code: str) -> type[SkyfleetError]:
    if status == 429:
        # Only an account's limit is final; any other 429 (a proxy's, without an envelope) is "not now".
        return LimitExceeded if code == "LIMIT_EXCEEDED" else RateLimited
    return _BY_STATUS.get(status) or (ServerError if status >= 500 else Rejected)


def from_answer(status: int, body: Any) -> SkyfleetError:
    """The exception for an error answer (its envelope, or whatever came back)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return _kind(status, "")(f"HTTP {status}", f"HTTP_{status}", status)
    code, message = str(error.get("code") or f"HTTP_{status}"), str(error.get("message") or "")
    details = error.get("details") if isinstance(error.get("details"), dict) else {}
    return _kind(status, code)(message, code, status, details)
