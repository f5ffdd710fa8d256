"""The manager's domain errors; each docstring is its default message."""

from __future__ import annotations

from typing import Any


class ManagerError(Exception):
    """The manager could not do what it was asked."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ApiUnavailable(ManagerError):
    """The API could not be reached or kept failing (connection errors, 5xx, 429)."""


class ApiRejected(ManagerError):
    """The API answered with a 4xx error envelope; repeating the request will not help."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.details = status, code, details or {}


class BackendError(ManagerError):
    """The backend (local processes or ECS) could not list, start or stop instances."""
