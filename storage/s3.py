"""The S3 backend (boto3): objects under ``[prefix/]key`` in one bucket.

Uploads stream through boto3's managed transfer (multipart past 8 MiB), hashed and counted on
the way, so no object is ever held whole in memory. The SHA-256 is stored as the object
metadata ``sha256``; as it is only known at the end of the stream, a streamed upload is
followed by a server-side copy of the object onto itself that sets it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import quote

from botocore.exceptions import ClientError

from storage.base import (
    CHUNK_BYTES,
    ObjectNotFound,
    ObjectTooLarge,
    Readable,
    StorageError,
    StoredObject,
    copy_to_file,
    guess_content_type,
    validate_key,
)

DELETE_BATCH = 1000  # the most keys one DeleteObjects request accepts
LIST_PAGE_SIZE = 1000  # the most keys one ListObjectsV2 response holds
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


class _HashingReader:
    """A read-only stream that hashes and counts what passes through it and stops past a limit.

    Raising from ``read`` makes boto3 abort the transfer (a multipart upload is aborted, a
    single PUT never sent), so nothing is left behind.
    """

    def __init__(self, stream: Readable, max_bytes: int | None) -> None:
        self.stream = stream
        self.max_bytes = max_bytes
        self.size = 0
        self.digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        chunk = self.stream.read(n)
        self.size += len(chunk)
        if self.max_bytes is not None and self.size > self.max_bytes:
            raise ObjectTooLarge(f"more than {self.max_bytes} bytes")
        self.digest.update(chunk)
        return chunk


def content_disposition(filename: str) -> str:
    """An ``attachment`` Content-Disposition naming ``filename`` safely (RFC 6266, with a UTF-8 form)."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


class S3Storage:
    """Objects in ``bucket`` under ``prefix`` (``boto3.client("s3")`` unless a client is given)."""

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        if not bucket:
            raise StorageError("an S3 bucket name is required")
        self.bucket = bucket
        self.prefix = validate_key(prefix.strip("/")) if prefix.strip("/") else ""
        if client is None:
            import boto3  # boto3 is slow to import; only S3 users pay for it

            client = boto3.client("s3")
        self.client = client

    def __repr__(self) -> str:
        return f"S3Storage({self.bucket!r}, prefix={self.prefix!r})"

    def _name(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _key(self, name: str) -> str:
        return name[len(self.prefix) + 1:] if self.prefix else name

    def put(self, key: str, stream: Readable, content_type: str = "application/octet-stream",
            max_bytes: int | None = None) -> StoredObject:
        """Stream to S3 (see :class:`storage.base.Storage`), then record the SHA-256 as metadata."""
        name = self._name(key)
        reader = _HashingReader(stream, max_bytes)
        try:
            self.client.upload_fileobj(reader, self.bucket, name, ExtraArgs={"ContentType": content_type})
            sha256 = reader.digest.hexdigest()
            # Copying an object onto itself is how S3 changes metadata; managed copy handles > 5 GB.
            self.client.copy({"Bucket": self.bucket, "Key": name}, self.bucket, name, ExtraArgs={
                "MetadataDirective": "REPLACE", "ContentType": content_type, "Metadata": {"sha256": sha256}})
        except ClientError as exc:
            raise StorageError(f"cannot store {key!r}: {exc}") from exc
        return StoredObject(key, reader.size, sha256, content_type)

    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> StoredObject:
        """Store a local file: hashed first, so the metadata goes up with it and no copy is needed."""
        name = self._name(key)
        digest, size = hashlib.sha256(), 0
        with open(path, "rb") as stream:
            while chunk := stream.read(CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
        sha256 = digest.hexdigest()
        try:
            self.client.upload_file(str(path), self.bucket, name, ExtraArgs={
                "ContentType": content_type, "Metadata": {"sha256": sha256}})
        except ClientError as exc:
            raise StorageError(f"cannot store {key!r}: {exc}") from exc
        return StoredObject(key, size, sha256, content_type)

    def open(self, key: str) -> BinaryIO:
        """The object's streaming body (:class:`ObjectNotFound` if absent). Close it."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._name(key))
        except ClientError as exc:
            raise _translate(exc, key) from exc
        return cast(BinaryIO, response["Body"])

    def get_file(self, key: str, path: Path, max_bytes: int | None = None) -> StoredObject:
        """Copy the object to a local file (atomically; :class:`ObjectTooLarge` past ``max_bytes``)."""
        body = self.open(key)
        try:
            size, sha256 = copy_to_file(body, Path(path), max_bytes)
        finally:
            body.close()
        return StoredObject(key, size, sha256, guess_content_type(key))

    def stat(self, key: str) -> StoredObject:
        """Size, content type and the SHA-256 recorded at upload ("" for objects stored otherwise)."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        except ClientError as exc:
            raise _translate(exc, key) from exc
        return StoredObject(key, head["ContentLength"], head.get("Metadata", {}).get("sha256", ""),
                            head.get("ContentType") or guess_content_type(key))

    def delete(self, key: str) -> None:
        """Delete one object; a missing object is not an error (S3 says so itself)."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._name(key))
        except ClientError as exc:
            raise _translate(exc, key) from exc

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix/`` in batches of 1000; return how many."""
        count, batch = 0, []
        for name in self._names(prefix):
            batch.append({"Key": name})
            if len(batch) == DELETE_BATCH:
                count += self._delete_batch(batch)
                batch = []
        if batch:
            count += self._delete_batch(batch)
        return count

    def _delete_batch(self, batch: list[dict[str, str]]) -> int:
        try:
            response = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        except ClientError as exc:
            raise StorageError(f"cannot delete objects: {exc}") from exc
        if errors := response.get("Errors"):
            raise StorageError(f"cannot delete {len(errors)} objects, e.g. {errors[0]}")
        return len(batch)

    def _pages(self, prefix: str) -> Iterator[dict[str, Any]]:
        # S3 lists in key (UTF-8 byte) order, which for our ASCII keys is string order.
        start = f"{self._name(prefix)}/" if prefix else (f"{self.prefix}/" if self.prefix else "")
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start, PaginationConfig={"PageSize": LIST_PAGE_SIZE})
            for page in pages:
                yield from page.get("Contents", [])
        except ClientError as exc:
            raise StorageError(f"cannot list {prefix!r}: {exc}") from exc

    def _names(self, prefix: str) -> Iterator[str]:
        for item in self._pages(prefix):
            yield item["Key"]

    def list(self, prefix: str) -> Iterator[StoredObject]:
        """Every object under ``prefix/`` in key order ("" lists everything); content types are
        guessed from the keys, since listing does not return them."""
        for item in self._pages(prefix):
            key = self._key(item["Key"])
            yield StoredObject(key, item["Size"], "", guess_content_type(key))

    def download_url(self, key: str, expires_s: int, filename: str | None = None) -> str:
        """A presigned GET URL, valid ``expires_s`` seconds; with ``filename`` it downloads as an attachment."""
        params = {"Bucket": self.bucket, "Key": self._name(key)}
        if filename:
            params["ResponseContentDisposition"] = content_disposition(filename)
        return cast(str, self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_s))

    def local_path(self, key: str) -> Path | None:
        """None: S3 objects have no local file."""
        validate_key(key)
        return None


def _translate(exc: ClientError, key: str) -> StorageError:
    """A botocore error → ours: a missing key is :class:`ObjectNotFound`, anything else :class:`StorageError`."""
    code = str(exc.response.get("Error", {}).get("Code", ""))
    if code in _NOT_FOUND:
        return ObjectNotFound(key)
    return StorageError(f"S3 error on {key!r}: {exc}")
