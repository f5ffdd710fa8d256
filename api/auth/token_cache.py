"""Access tokens this process has verified already, so each is checked with RSA once.

Verifying an RS256 access token (base64 checks, the RSA signature, the claims) costs a few
hundred microseconds, on every request; a worker sends the same token for its whole lifetime
(15 minutes by default), hundreds of times. The token's text, once verified, maps to the
account and the expiry it carries: a request bearing exactly that text again needs neither
checked. The expiry still is (against the clock, at every use), and the account is looked up
as for any request (:mod:`api.auth.identity_cache`), so a disabled account is refused as soon
as it would be anyway. There is no revocation list of access tokens to consult.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

#: How many verified tokens one process remembers (the oldest go first).
VERIFIED_TOKENS_KEPT = 10_000


class VerifiedTokens:
    """token text → (user id, expiry as a Unix time), for tokens verified in this process."""

    def __init__(self, max_entries: int = VERIFIED_TOKENS_KEPT, clock: Callable[[], float] = time.time) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def user_of(self, token: str) -> int | None:
        """The account of a token verified before and not expired yet (None: verify it)."""
        with self._lock:
            hit = self._tokens.get(token)
            if hit is None:
                return None
            user_id, expires_at = hit
            if self._clock() >= expires_at:
                del self._tokens[token]
                return None
            return user_id

    def remember(self, token: str, user_id: int, expires_at: float) -> None:
        with self._lock:
            self._tokens[token] = (user_id, expires_at)
            self._tokens.move_to_end(token)
            while len(self._tokens) > self.max_entries:
                self._tokens.popitem(last=False)
