"""Download links for stored objects: S3 presigned URLs, or expiring signed links the API serves.

The local-directory backend has no URLs of its own, so the API signs
``/api/storage/<key>?expires=…&signature=…`` with an HMAC key derived from its signing key;
the link needs no bearer token (it *is* the authorisation) and stops working at ``expires``.
"""

from __future__ import annotations

import hashlib
import posixpath
import time
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from storage import Storage
from storage.signing import sign

LINK_PATH = "/api/storage/"


def link_secret(private_key_pem: str) -> bytes:
    """The HMAC key for signed links: derived from the token-signing key (one secret to manage)."""
    return hashlib.sha256(b"skyfleet signed links\0" + private_key_pem.encode()).digest()


@dataclass(frozen=True)
class Linker:
    """Makes download links for one API process."""

    storage: Storage
    secret: bytes
    ttl_s: int

    def link(self, key: str, base_url: str, filename: str | None = None) -> tuple[str, int]:
        """A URL that downloads ``key`` until the returned expiry (epoch seconds)."""
        expires_at = int(time.time()) + self.ttl_s
        name = filename or posixpath.basename(key)
        url = self.storage.download_url(key, self.ttl_s, name)
        if url is None:
            query = urlencode({"expires": expires_at, "signature": sign(key, expires_at, self.secret)})
            url = f"{base_url.rstrip('/')}{LINK_PATH}{quote(key)}?{query}"
        return url, expires_at
