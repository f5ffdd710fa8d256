"""A per-process, short-lived cache of what each account may do (its :class:`Identity`).

Every authenticated request needs the token's account as it is *now* (its roles, and whether
it is disabled), not as it was when the token was issued. Reading that from PostgreSQL on every
request costs one round trip per request, which at a thousand workers heartbeating, claiming
and reporting is most of the database's load; this cache keeps the answer for
:data:`IDENTITY_TTL_S` seconds instead.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from flask import Flask, current_app

from api.auth.service import Identity

#: How long an account's roles and enabled state are trusted without reading them again.
IDENTITY_TTL_S = 5.0
#: How many accounts one process remembers; past it the oldest entry is dropped.
IDENTITY_CACHE_SIZE = 10_000
#: Where the app's cache lives in ``app.extensions`` (one per Flask app, not per module).
EXTENSION_KEY = "skyfleet_identity_cache"


class IdentityCache:
    """user id → the account's :class:`Identity`, or None when it is disabled or removed, kept
    for ``ttl_s`` seconds.

    The trade-off: a disabled account or a changed role is refused within ``ttl_s``
    (:data:`IDENTITY_TTL_S`) on every API process, and at once on the process that made the
    change (the admin routes call :meth:`invalidate` once their transaction has committed).
    Other processes, and changes made outside the API (the CLI, SQL by hand), wait out the
    TTL; in exchange an account's requests read the users table about once per TTL per process
    instead of once per request. The absence of an account is cached too, so a disabled
    account's token hammering the API does not read the table per request either.

    Thread-safe with a plain :class:`threading.Lock`, which gevent's monkey-patching turns
    into a greenlet lock; the lock is never held while the database is read. A read that was
    in flight when an entry was invalidated is not stored (it may predate the change), so an
    invalidation cannot be undone by a concurrent request. When an entry expires, one request
    reads the account again while the others go on with the expired entry (for at most another
    TTL): a fleet sharing one service account must not all read it at the same instant, each
    holding a pooled connection, every time the entry expires.
    """

    def __init__(self, ttl_s: float = IDENTITY_TTL_S, max_entries: int = IDENTITY_CACHE_SIZE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        #: Seconds an entry is trusted; read at each lookup, so changing it applies to stored entries.
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        # user id -> (when it was read, what was read); oldest read first.
        self._entries: OrderedDict[int, tuple[float, Identity | None]] = OrderedDict()
        # Bumped by every invalidation: a read that straddles one is not stored.
        self._generation = 0
        # Accounts being read again right now (the others use the expired entry meanwhile).
        self._loading: set[int] = set()

    def get(self, user_id: int, load: Callable[[int], Identity | None]) -> Identity | None:
        """The account's identity (None: disabled or removed), from the cache while it is
        fresh, otherwise from ``load(user_id)`` (which is then remembered)."""
        with self._lock:
            entry = self._entries.get(user_id)
            if entry is not None:
                read_at, identity = entry
                age = self._clock() - read_at
                if age < self.ttl_s or (user_id in self._loading and age < 2 * self.ttl_s):
                    return identity
            generation = self._generation
            self._loading.add(user_id)
        read_at = self._clock()
        try:
            identity = load(user_id)
        finally:
            with self._lock:
                self._loading.discard(user_id)
        with self._lock:
            if self._generation == generation:
                self._entries[user_id] = (read_at, identity)
                self._entries.move_to_end(user_id)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        return identity

    def invalidate(self, user_id: int) -> None:
        """Forget the account: its next request reads it again."""
        with self._lock:
            self._generation += 1
            self._entries.pop(user_id, None)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def install(app: Flask, ttl_s: float = IDENTITY_TTL_S) -> IdentityCache:
    """Give ``app`` its own cache (tests may change ``identity_cache(app).ttl_s``)."""
    cache = IdentityCache(ttl_s)
    app.extensions[EXTENSION_KEY] = cache
    return cache


def identity_cache(app: Flask | None = None) -> IdentityCache:
    """The cache of ``app`` (default: the running app)."""
    cache: IdentityCache = (app or current_app).extensions[EXTENSION_KEY]
    return cache


def forget_identity(user_id: int) -> None:
    """Drop the account from the running app's cache (after a change to its roles or state)."""
    identity_cache().invalidate(user_id)


@contextmanager
def identity_changes(user_id: int) -> Iterator[None]:
    """Around a transaction that changes the account's roles, enabled state or credentials:
    forget it once the block is over, committed or not (a failed commit may still have landed).

    Put it *outside* the transaction (``with identity_changes(id), ctx().transaction() as conn:``)
    so the entry goes after the commit: forgetting it before, a concurrent request could read
    and cache the old row again.
    """
    try:
        yield
    finally:
        forget_identity(user_id)
