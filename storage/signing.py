"""Expiring signed links for objects in the local backend, which the API serves itself.

A link carries the key, an expiry (Unix seconds) and an HMAC-SHA256 of both under a server
secret, so it can be checked without any stored state and cannot be bent to another key
or a later expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time


def sign(key: str, expires_at: int, secret: bytes) -> str:
    """The signature of a link to ``key`` valid until ``expires_at`` (URL-safe base64, no padding)."""
    if not secret:
        raise ValueError("a signing secret is required")  # an empty key would make links forgeable
    # The expiry is all digits and comes last, so "key\nexpiry" cannot be read two ways.
    message = f"{key}\n{int(expires_at)}".encode()
    mac = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def verify(key: str, expires_at: int, signature: str, secret: bytes, now: float | None = None) -> bool:
    """True when ``signature`` is :func:`sign` of ``key`` and ``expires_at``, and that time is still ahead."""
    if (time.time() if now is None else now) >= expires_at:
        return False
    expected = sign(key, expires_at, secret).encode("ascii")
    # compare_digest takes the same time wherever the first difference is: no byte-by-byte guessing.
    return hmac.compare_digest(expected, signature.encode("utf-8", "replace"))
