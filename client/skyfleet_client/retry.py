"""When a request that failed is sent again: the retry policy, its backoff and its budget.

A :class:`RetryPolicy` says which failures are transient (the statuses that mean "not now"),
whether a request that may have reached the API (a lost connection, a garbled answer) is sent
again even when repeating it is not harmless, how long one call keeps trying (seconds, or until
its caller is told to stop), and how long to wait between tries: exponential backoff with
jitter, or the ``Retry-After`` the API asked for, believed up to a cap. Each client states its
own; :class:`Attempts` applies one to one call. Nothing here does I/O.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from skyfleet_client.errors import LimitExceeded, SkyfleetError, Unavailable

log = logging.getLogger(__name__)

#: Methods that can be sent again whatever became of the first try.
IDEMPOTENT = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
#: A ``Retry-After`` further out than this is not believed (a misconfigured proxy's, or hostile).
RETRY_AFTER_CAP_S = 300.0


@dataclass(frozen=True)
class RetryPolicy:
    """What one client sends again, for how long, and how long it waits in between."""

    #: Answers that mean "not now" rather than "not this request".
    transient_statuses: frozenset[int] = frozenset({429, 503})
    #: Send again a request that is not idempotent (a POST) after a lost connection or a garbled
    #: answer, although the API may have acted on it: right when the API's endpoints are
    #: themselves safe to repeat (the worker protocol's are, by their fence tokens).
    resend_unsafe: bool = False
    #: A login or refresh answered with anything but a refusal is the API's trouble, waited out
    #: (a service account whose credentials are known good), rather than the caller's error.
    auth_failures_transient: bool = False
    #: How long one call keeps trying, in seconds; None: until the client's stop event is set.
    retry_for_s: float | None = 120.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 5.0
    #: A ``Retry-After`` is waited out times a random factor up to 1 + this (spreads a fleet).
    retry_after_spread: float = 0.0
    #: Each retry is logged at this level (what is about to be waited for, and why).
    log_level: int = logging.DEBUG

    def is_transient(self, error: SkyfleetError) -> bool:
        """Whether this error answer is worth waiting out (an account's limit never is)."""
        return error.status in self.transient_statuses and not isinstance(error, LimitExceeded)

    def may_resend(self, method: str) -> bool:
        """Whether a request whose answer was lost may be sent again."""
        return self.resend_unsafe or method.upper() in IDEMPOTENT


class TryAgain(Exception):
    """One try failed in a way the policy waits out: ``error`` is what the caller gets if the
    retrying ends, ``retry_after`` what the API asked for (seconds), if anything."""

    def __init__(self, error: SkyfleetError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error, self.retry_after = error, retry_after


class Backoff:
    """Exponential backoff with jitter, from ``base`` doubling up to ``cap``; a ``Retry-After`` wins."""

    def __init__(self, base: float = 0.5, cap: float = 5.0, retry_after_spread: float = 0.0) -> None:
        self.base, self.cap, self.spread = base, cap, retry_after_spread
        self._next = base

    def next_delay(self, retry_after: float | None = None) -> float:
        # Jitter spreads a fleet's retries, so a recovering API is not hit by every worker at once.
        delay = self._next * random.uniform(0.5, 1.0)
        self._next = min(self.cap, self._next * 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, RETRY_AFTER_CAP_S) * random.uniform(1.0, 1.0 + self.spread))
        return delay

    def reset(self) -> None:
        self._next = self.base


def parse_retry_after(value: object) -> float | None:
    """Seconds to wait from a ``Retry-After`` (seconds or an HTTP date); None if absent or unreadable."""
    if value is None or value == "":
        return None
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        try:
            when = email.utils.parsedate_to_datetime(str(value))
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), RETRY_AFTER_CAP_S)


class Attempts:
    """One call's tries under a policy: :meth:`pause` waits before the next, or says there is none.

    A bounded call (``retry_for_s`` seconds) makes its last try at its deadline, and gives up at
    once when the API asked it to wait past the deadline; its waits ignore the stop event (a
    bounded call is how a stopping caller says its goodbyes). An unbounded one waits on the stop
    event and ends when it is set.
    """

    def __init__(self, policy: RetryPolicy, what: str, retry_for_s: float | None, stop: threading.Event,
                 clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
        self.what, self._stop, self._clock, self._sleep = what, stop, clock, sleep
        self._level = policy.log_level
        self._backoff = Backoff(policy.backoff_base_s, policy.backoff_cap_s, policy.retry_after_spread)
        self._deadline = None if retry_for_s is None else clock() + retry_for_s

    def pause(self, failure: SkyfleetError, retry_after: float | None) -> None:
        """Wait before the next try; raise (an :class:`Unavailable`) if there is to be none."""
        delay = self._backoff.next_delay(retry_after)
        if self._deadline is None:
            if not self._stop.is_set():
                log.log(self._level, "%s failed (%s); retrying in %.1f s", self.what, failure, delay)
                if not self._stop.wait(delay):
                    return
            raise Unavailable(f"{self.what} abandoned while stopping: {failure}", failure.code, failure.status,
                              failure.details)
        remaining = self._deadline - self._clock()
        if remaining <= 0 or (retry_after is not None and retry_after > remaining):
            raise _gave_up(f"{self.what} failed", failure)
        log.log(self._level, "%s failed (%s); retrying in %.1f s", self.what, failure, min(delay, remaining))
        self._sleep(min(delay, remaining))


def _gave_up(why: str, failure: SkyfleetError) -> Unavailable:
    """The last failure as the caller sees it: itself if it says "unavailable" (a
    :class:`RateLimited` keeps its ``retry_after``), else wrapped in one."""
    if isinstance(failure, Unavailable):
        return failure
    return Unavailable(f"{why}: {failure}", failure.code, failure.status, failure.details)
