"""The manager's domain errors; each docstring is its default message.

The API's answers are the client base's errors (:mod:`skyfleet_client.errors`).
"""

from __future__ import annotations


class ManagerError(Exception):
    """The manager could not do what it was asked."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class BackendError(ManagerError):
    """The backend (local processes or ECS) could not list, start or stop instances."""
