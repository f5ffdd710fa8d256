"""Fetching a job's input files to local disk before its handler runs, and uploading its outputs.

A reference is ``{file_id}`` (an upload: the claim says under which storage key),
``{key}`` (an object in storage) or ``{url}`` (fetched through the address guard, so
private, loopback and link-local hosts are refused unless allow-listed). Every input is
size-limited. Problems the job cannot outgrow (no such object, forbidden address, too
large) are permanent errors; network trouble is retryable.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import requests
from marshmallow import Schema

from jobtypes import file_refs, get_job_type, protocol
from storage import ObjectNotFound, ObjectTooLarge, Storage, StorageError
from storage.netguard import AddressGuard, FetchTooLarge, ForbiddenAddress, fetch
from worker.jobs import PermanentError, ref_id


def _input_schema(job_type: str) -> Schema | None:
    """The type's input schema (built once, by its catalogue entry); None for an unknown type."""
    found = get_job_type(job_type)
    return None if found is None else found.inputs


def input_refs(job_type: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Every distinct input-file reference in ``payload``."""
    schema = _input_schema(job_type)
    if schema is None:
        return []
    refs: dict[str, dict[str, Any]] = {}
    for _path, ref in file_refs(schema, payload):
        refs.setdefault(ref_id(ref), ref)
    return list(refs.values())


class InputFetcher:
    """Fetches inputs from storage or the web into a job's directory."""

    def __init__(self, storage: Storage, guard: AddressGuard, max_bytes: int, timeout_s: float) -> None:
        self.storage, self.guard, self.max_bytes, self.timeout_s = storage, guard, max_bytes, timeout_s

    def fetch_all(self, job: protocol.ClaimedJob, into: Path) -> dict[str, str]:
        """Fetch every input of a claimed job; return ref_id → local path."""
        uploads = {f.file_id: f for f in job.input_files}
        local: dict[str, str] = {}
        for index, ref in enumerate(input_refs(job.type, job.input_payload)):
            into.mkdir(parents=True, exist_ok=True)
            path = into / f"input-{index}.fits"
            if "file_id" in ref:
                upload = uploads.get(ref["file_id"])
                if upload is None:
                    raise PermanentError(f"file {ref['file_id']} is not available to this job")
                path = self._from_storage(upload.key, path)
            elif "key" in ref:
                path = self._from_storage(ref["key"], path)
            else:
                self._from_url(ref["url"], path)
            local[ref_id(ref)] = str(path)
        return local

    def _from_storage(self, key: str, path: Path) -> Path:
        """The object as a local file: read in place from a local store (objects are immutable and
        replaced only by rename), else downloaded to ``path``."""
        try:
            in_place = self.storage.local_path(key)
        except StorageError as exc:
            raise PermanentError(f"input {key!r}: {exc}") from None
        if in_place is not None:
            if not in_place.is_file():
                raise PermanentError(f"input {key!r} does not exist in storage")
            if in_place.stat().st_size > self.max_bytes:
                raise PermanentError(f"input {key!r} is larger than the limit of {self.max_bytes} bytes")
            return in_place
        try:
            self.storage.get_file(key, path, self.max_bytes)
            return path
        except ObjectNotFound:
            raise PermanentError(f"input {key!r} does not exist in storage") from None
        except ObjectTooLarge:
            raise PermanentError(f"input {key!r} is larger than the limit of {self.max_bytes} bytes") from None
        except StorageError as exc:
            raise RuntimeError(f"cannot read input {key!r}: {exc}") from exc

    def _from_url(self, url: str, path: Path) -> None:
        try:
            with open(path, "wb") as out:
                fetch(url, out, self.max_bytes, self.guard, self.timeout_s)
        except ForbiddenAddress as exc:
            raise PermanentError(f"input URL refused: {exc}") from None
        except FetchTooLarge as exc:
            raise PermanentError(str(exc)) from None
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if 400 <= status < 500 and status not in (408, 429):
                raise PermanentError(f"input URL {url} answered HTTP {status}") from None
            raise RuntimeError(f"input URL {url} answered HTTP {status}") from exc


def upload_outputs(storage: Storage, job_id: int, attempt: int, token: uuid.UUID,
                   outputs: list[tuple[str, str, str | None]]) -> tuple[str, list[protocol.ReportedFile]]:
    """Store the outputs under the attempt's prefix (``protocol.output_prefix``); return that
    prefix and the files as the report lists them."""
    prefix = protocol.output_prefix(job_id, attempt, token)
    files = []
    for name, path, content_type in outputs:
        key = f"{prefix}/{name}"
        stored = storage.put_file(key, Path(path), content_type or "application/octet-stream")
        files.append(protocol.ReportedFile(key=key, name=name, size=stored.size, sha256=stored.sha256 or None,
                                           content_type=content_type or stored.content_type))
    return prefix, files
