"""Shared object storage for the API and the workers: a local directory or S3.

``open_storage("local", root=...)`` or ``open_storage("s3", bucket=...)`` gives a
:class:`Storage`; boto3 is only imported for S3, so ``import storage`` stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from storage.base import (
    MAX_KEY_LENGTH,
    InvalidKey,
    ObjectNotFound,
    ObjectTooLarge,
    Readable,
    Storage,
    StorageError,
    StoredObject,
    guess_content_type,
    validate_key,
)
from storage.local import LocalStorage

__all__ = [
    "MAX_KEY_LENGTH",
    "InvalidKey",
    "LocalStorage",
    "ObjectNotFound",
    "ObjectTooLarge",
    "Readable",
    "Storage",
    "StorageError",
    "StoredObject",
    "guess_content_type",
    "open_storage",
    "validate_key",
]


def open_storage(backend: str, *, root: str | Path = ".skyfleet/storage", bucket: str = "", prefix: str = "",
                 client: Any = None) -> Storage:
    """The storage ``backend`` names: "local" (files under ``root``) or "s3" (``bucket``/``prefix``)."""
    if backend == "local":
        return LocalStorage(Path(root))
    if backend == "s3":
        from storage.s3 import S3Storage

        return S3Storage(bucket, prefix, client)
    raise ValueError(f"unknown storage backend {backend!r} (expected 'local' or 's3')")
