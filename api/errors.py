"""Domain errors of the API. Each docstring is its default message; one handler renders them.

Nothing here imports Flask: the queue engine and services raise these, the app renders them
in the ``{success: false, error: {code, message, details}}`` envelope.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """The server failed to handle the request."""

    status: int = 500
    code: str = "INTERNAL_ERROR"

    def __init__(self, message: str | None = None, details: dict[str, Any] | None = None) -> None:
        self.message = message or (self.__doc__ or "").strip()
        self.details = details or {}
        super().__init__(self.message)


class BadRequest(ApiError):
    """The request is malformed."""

    status, code = 400, "BAD_REQUEST"


class InvalidJson(BadRequest):
    """Invalid JSON body."""


class Unauthorized(ApiError):
    """Missing or invalid authentication."""

    status, code = 401, "UNAUTHORIZED"


class Forbidden(ApiError):
    """Your account may not do this."""

    status, code = 403, "FORBIDDEN"


class CsrfFailed(Forbidden):
    """A signed-in browser's state-changing request came without the session's CSRF token
    (header X-CSRF-Token): only the console's own pages send it."""

    code = "CSRF_FAILED"


class NotFound(ApiError):
    """No such resource."""

    status, code = 404, "NOT_FOUND"


class Conflict(ApiError):
    """The request conflicts with the resource's current state."""

    status, code = 409, "CONFLICT"


class StaleAttempt(Conflict):
    """This attempt is no longer the job's current one (its lease was rescued, or the job was cancelled)."""


class WorkerGone(Conflict):
    """This worker was stopped or declared lost (silent too long); register again."""

    code = "WORKER_GONE"


class PayloadTooLarge(ApiError):
    """The request body is too large."""

    status, code = 413, "PAYLOAD_TOO_LARGE"


class ValidationFailed(ApiError):
    """Request validation failed."""

    status, code = 422, "VALIDATION_ERROR"


class LimitExceeded(ApiError):
    """A per-account limit (see GET /api/jobs/limits) would be exceeded."""

    status, code = 429, "LIMIT_EXCEEDED"


class RateLimited(ApiError):
    """Rate limit exceeded; retry after the number of seconds in the Retry-After header."""

    status, code = 429, "RATE_LIMIT_EXCEEDED"


class ServiceUnavailable(ApiError):
    """Service temporarily unavailable."""

    status, code = 503, "SERVICE_UNAVAILABLE"


#: Envelope codes for HTTP statuses raised by Flask/werkzeug/webargs rather than by us.
HTTP_CODES: dict[int, str] = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}
