"""The storage interface shared by the API and the workers: objects under string keys.

Keys look like ``uploads/42/<uuid>/image.fits`` or ``jobs/7/attempt-1-5f0c2a9e81d34b7a/catalogue.ecsv``:
relative, ``/``-separated, no ``..``, no empty parts. Both backends (a local directory
and S3) implement :class:`Storage`.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from storage.cooperative import blocking

MAX_KEY_LENGTH = 1024
CHUNK_BYTES = 1024 * 1024
DEFAULT_CONTENT_TYPE = "application/octet-stream"
# Used with fullmatch: a "$" anchor would also accept a part ending in "\n".
_SAFE_PART = re.compile(r"[A-Za-z0-9._=+@,-]+")
# mimetypes says image/fits; FITS files here are data, and application/fits is the registered type.
_EXTRA_TYPES = {".fits": "application/fits", ".fit": "application/fits", ".fts": "application/fits",
                ".ecsv": "text/plain"}
_ENCODING_TYPES = {"gzip": "application/gzip", "bzip2": "application/x-bzip2", "xz": "application/x-xz"}


class StorageError(Exception):
    """Storage could not do what was asked (the message says why)."""


class ObjectNotFound(StorageError):
    """No object has this key."""


class ObjectTooLarge(StorageError):
    """The stream was longer than the size limit; nothing was stored."""


class InvalidKey(StorageError):
    """The key is not a safe relative path."""


class Readable(Protocol):
    """Anything ``put`` can read from: a file, a request body stream, a botocore body."""

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes (all that is left when -1); b"" at the end."""
        ...


@dataclass(frozen=True)
class StoredObject:
    """What is stored under a key. ``sha256`` is "" when the backend does not know it."""

    key: str
    size: int
    sha256: str = ""
    content_type: str = DEFAULT_CONTENT_TYPE


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key; raise :class:`InvalidKey` otherwise."""
    if not key or len(key) > MAX_KEY_LENGTH or key.startswith("/") or key.endswith("/"):
        raise InvalidKey(f"invalid storage key {key!r}")
    for part in key.split("/"):
        if part in {"", ".", ".."} or not _SAFE_PART.fullmatch(part):
            raise InvalidKey(f"invalid storage key {key!r}: bad part {part!r}")
    return key


def guess_content_type(key: str) -> str:
    """The content type a key's extension implies (``application/fits`` for FITS)."""
    kind, encoding = mimetypes.guess_type(key, strict=False)
    if encoding:
        return _ENCODING_TYPES.get(encoding, DEFAULT_CONTENT_TYPE)
    return _EXTRA_TYPES.get(os.path.splitext(key)[1].lower()) or kind or DEFAULT_CONTENT_TYPE


def copy_to_file(stream: Readable, path: Path, max_bytes: int | None = None) -> tuple[int, str]:
    """Copy ``stream`` to ``path`` atomically, in chunks; return its size and SHA-256 (hex).

    The bytes go to a temporary file in the same directory, which replaces ``path`` only once
    complete, so a reader sees the old file or the new one, never half of one. Past ``max_bytes``
    the temporary file is removed and :class:`ObjectTooLarge` raised.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # "~" is not allowed in keys, so a temporary file is never mistaken for an object.
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}~", suffix=".part")
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(CHUNK_BYTES):
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise ObjectTooLarge(f"more than {max_bytes} bytes")
                digest.update(chunk)
                out.write(chunk)
                time.sleep(0)  # under gevent, let the process's other requests run between chunks
            out.flush()
            # The rename below must not publish a file whose bytes are not on disk; flushing a big
            # file takes seconds, off the event loop.
            blocking(os.fsync, out.fileno())
        os.replace(temp_name, path)
    except BaseException:
        os.unlink(temp_name)
        raise
    return size, digest.hexdigest()


class Storage(Protocol):
    """Objects under keys. Every method validates its key first."""

    def put(self, key: str, stream: Readable, content_type: str = "application/octet-stream",
            max_bytes: int | None = None) -> StoredObject:
        """Store the stream (read in chunks, never whole in memory); return size and SHA-256.

        Raises :class:`ObjectTooLarge` past ``max_bytes``, leaving nothing behind.
        """
        ...

    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> StoredObject:
        """Store a local file."""
        ...

    def open(self, key: str) -> BinaryIO:
        """A readable stream of the object (:class:`ObjectNotFound` if absent). Close it."""
        ...

    def get_file(self, key: str, path: Path, max_bytes: int | None = None) -> StoredObject:
        """Copy the object to a local file."""
        ...

    def stat(self, key: str) -> StoredObject:
        """Size and content type (:class:`ObjectNotFound` if absent)."""
        ...

    def delete(self, key: str) -> None:
        """Delete one object; deleting a missing object is not an error."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix/``; return how many."""
        ...

    def list(self, prefix: str) -> Iterator[StoredObject]:
        """Every object under ``prefix/``, in key order."""
        ...

    def download_url(self, key: str, expires_s: int, filename: str | None = None) -> str | None:
        """A presigned URL that serves the object until it expires (S3), or None when the API
        must serve it itself through a signed link (local directory)."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The file holding the object when the backend is a local directory, else None."""
        ...
