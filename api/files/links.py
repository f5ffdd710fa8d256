"""Download links for stored objects: S3 presigned URLs, or expiring signed links the API serves.

The local-directory backend has no URLs of its own, so the API signs
``/api/storage/<key>?expires=…&signature=…`` with an HMAC key derived from its signing key;
the link needs no bearer token (it *is* the authorisation) and stops working at ``expires``.

Such a link is absolute, and its origin comes from ``SKYFLEET_PUBLIC_URL`` when it is set. Only
without it is the request's own base URL used, which a client or a misconfigured proxy
controls through the ``Host`` header (and a shared cache would then hand a forged link to others).
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
    #: The API's public base URL (settings.public_url); empty: the request's.
    public_url: str = ""

    def link(self, key: str, request_base_url: str, filename: str | None = None) -> tuple[str, int]:
        """A URL that downloads ``key`` until the returned expiry (epoch seconds).

        ``request_base_url`` is used only when no public URL is configured.
        """
        expires_at = int(time.time()) + self.ttl_s
        name = filename or posixpath.basename(key)
        url = self.storage.download_url(key, self.ttl_s, name)
        if url is None:
            query = urlencode({"expires": expires_at, "signature": sign(key, expires_at, self.secret)})
            base_url = self.public_url or request_base_url
            url = f"{base_url.rstrip('/')}{LINK_PATH}{quote(key)}?{query}"
        return url, expires_at
