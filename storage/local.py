"""The local-directory backend: each object is a file under one root directory.

Writes go to a temporary file beside the target and are renamed into place, so readers
never see half an object. Content types come from the key's extension. Downloads are
served by the API through signed links (:mod:`storage.signing`), hence no download URL.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from storage.base import (
    InvalidKey,
    ObjectNotFound,
    Readable,
    StorageError,
    StoredObject,
    copy_to_file,
    guess_content_type,
    validate_key,
)


class LocalStorage:
    """Objects as files under ``root`` (created when missing)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        validate_key(key)
        path = (self.root / key).resolve()
        # validate_key already refuses "..", but a symlink inside root could still point outside it.
        if not path.is_relative_to(self.root) or path == self.root:
            raise InvalidKey(f"invalid storage key {key!r}: outside the storage root")
        return path

    def _object(self, key: str, path: Path) -> StoredObject:
        try:
            info = path.stat()
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise ObjectNotFound(key) from exc
        if not path.is_file():
            raise ObjectNotFound(key)
        return StoredObject(key, info.st_size, "", guess_content_type(key))

    def put(self, key: str, stream: Readable, content_type: str = "application/octet-stream",
            max_bytes: int | None = None) -> StoredObject:
        """Store the stream (see :class:`storage.base.Storage`); ``content_type`` is implied by the key."""
        path = self._path(key)
        try:
            size, sha256 = copy_to_file(stream, path, max_bytes)
        except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
            # A key cannot be both an object and a "directory" of other objects.
            raise StorageError(f"cannot store {key!r}: it clashes with another object") from exc
        return StoredObject(key, size, sha256, guess_content_type(key))

    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> StoredObject:
        """Store a local file."""
        with open(path, "rb") as stream:
            return self.put(key, stream, content_type)

    def open(self, key: str) -> BinaryIO:
        """A readable stream of the object (:class:`ObjectNotFound` if absent)."""
        try:
            return open(self._path(key), "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise ObjectNotFound(key) from exc

    def get_file(self, key: str, path: Path, max_bytes: int | None = None) -> StoredObject:
        """Copy the object to a local file (atomically; :class:`ObjectTooLarge` past ``max_bytes``)."""
        with self.open(key) as stream:
            size, sha256 = copy_to_file(stream, Path(path), max_bytes)
        return StoredObject(key, size, sha256, guess_content_type(key))

    def stat(self, key: str) -> StoredObject:
        """Size and content type; ``sha256`` is "" (hashing on every stat would read the whole file)."""
        return self._object(key, self._path(key))

    def delete(self, key: str) -> None:
        """Delete one object and the directories it leaves empty; a missing object is not an error."""
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        for parent in path.parents:
            if parent == self.root:
                break
            try:
                parent.rmdir()
            except OSError:  # not empty (or already gone): stop climbing
                break

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix/`` (the whole directory); return how many."""
        directory = self._path(prefix)
        if not directory.is_dir():
            return 0
        count = sum(1 for _ in self.list(prefix))
        shutil.rmtree(directory)
        return count

    def list(self, prefix: str) -> Iterator[StoredObject]:
        """Every object under ``prefix/`` in key order ("" lists everything)."""
        directory = self._path(prefix) if prefix else self.root
        if not directory.is_dir():
            return
        keys = []
        for dirpath, _dirs, files in os.walk(directory):
            base = Path(dirpath).relative_to(self.root).as_posix()
            for name in files:
                key = name if base == "." else f"{base}/{name}"
                try:
                    keys.append(validate_key(key))
                except InvalidKey:  # a temporary file of a put in progress
                    continue
        # Sorting whole keys (not walking sorted directories) is what gives key order: "a.txt" < "a/b".
        for key in sorted(keys):
            try:
                yield self._object(key, self.root / key)
            except ObjectNotFound:  # deleted while we were listing
                continue

    def download_url(self, key: str, expires_s: int, filename: str | None = None) -> str | None:
        """None: the API serves local objects itself, through signed links."""
        validate_key(key)
        return None

    def local_path(self, key: str) -> Path:
        """The file that holds (or would hold) the object."""
        return self._path(key)
