"""What a handler raises to say how its job ended, other than by returning a result."""

from __future__ import annotations


class PermanentError(Exception):
    """The job cannot succeed however often it is retried (bad input); it fails at once."""


class Cancelled(Exception):
    """The job was cancelled while running; raised by :meth:`JobContext.check_cancelled`."""
