"""Check a submission's input-file references before the job is queued.

A reference is ``{file_id}`` (an uploaded file), ``{key}`` (an object in storage) or
``{url}`` (fetched by the worker). The caller must be able to read each one: their own
upload, or the output of their own job (so jobs chain: a mosaic feeds a composite).
Admins may name any file or key. A URL must pass the address guard (no private,
loopback or link-local hosts unless allow-listed). Every failure names the field.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, text

from api.auth.guards import Caller
from api.errors import ValidationFailed
from api.jobs.schemas import input_schema
from api.queue.jobs import own_job_ids
from jobtypes import file_refs
from storage import InvalidKey, validate_key
from storage.netguard import AddressGuard, ForbiddenAddress

_JOB_OUTPUT_KEY = re.compile(r"^jobs/(\d+)/")


@dataclass
class _Refs:
    """The references of one submission, by kind, with the path of the field naming each."""

    file_ids: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    keys: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))


def check_inputs(conn: Connection, who: Caller, guard: AddressGuard,
                 bodies: list[dict[str, Any]]) -> list[list[int]]:
    """Validate every reference; return, per submission, the ids of the uploaded files it reads.

    Files are locked ``FOR KEY SHARE`` until the submission commits, so a concurrent delete
    waits, then sees the job and refuses (see api/files/service.py).
    """
    prefix = (lambda i: f"jobs.{i}.input_payload") if len(bodies) > 1 else (lambda i: "input_payload")
    problems: dict[str, list[str]] = {}
    per_body: list[_Refs] = []
    for i, body in enumerate(bodies):
        refs = _Refs()
        for path, ref in file_refs(input_schema(body["type"]), body["input_payload"]):
            where = f"{prefix(i)}.{path}"
            if "file_id" in ref:
                refs.file_ids[ref["file_id"]].append(f"{where}.file_id")
            elif "key" in ref:
                refs.keys[ref["key"]].append(f"{where}.key")
            else:
                try:
                    guard.check_url(ref["url"])
                except ForbiddenAddress as exc:
                    problems[f"{where}.url"] = [str(exc)]
        per_body.append(refs)

    all_ids = sorted({fid for refs in per_body for fid in refs.file_ids})
    all_keys = sorted({key for refs in per_body for key in refs.keys})
    readable_ids = _readable_files(conn, who, all_ids)
    key_files = _check_keys(conn, who, all_keys, per_body, problems)
    for refs in per_body:
        for fid, paths in refs.file_ids.items():
            if fid not in readable_ids:
                problems.update({p: [f"file {fid} not found"] for p in paths})
    if problems:
        summary = "; ".join(f"{p}: {' '.join(m)}" for p, m in problems.items())
        raise ValidationFailed(f"Validation failed: {summary}", details={"location": "json", "fields": problems})
    return [sorted(set(refs.file_ids) | {key_files[k] for k in refs.keys if k in key_files})
            for refs in per_body]


def _readable_files(conn: Connection, who: Caller, ids: list[int]) -> set[int]:
    if not ids:
        return set()
    rows = conn.execute(text("""
        SELECT id FROM files WHERE id = ANY(CAST(:ids AS bigint[])) AND (:is_admin OR user_id = :user_id)
        FOR KEY SHARE
    """), {"ids": ids, "is_admin": who.is_admin, "user_id": who.user_id}).scalars()
    return set(rows)


def _check_keys(conn: Connection, who: Caller, keys: list[str], per_body: list[_Refs],
                problems: dict[str, list[str]]) -> dict[str, int]:
    """Check each key; return the uploaded files (by key) that keys name, to link them to the job."""
    if not keys:
        return {}
    paths = {key: [p for refs in per_body for p in refs.keys.get(key, [])] for key in keys}
    valid: list[str] = []
    for key in keys:
        try:
            validate_key(key)
            valid.append(key)
        except InvalidKey as exc:
            problems.update({p: [str(exc)] for p in paths[key]})
    files: dict[str, int] = dict(conn.execute(text("""
        SELECT storage_key, id FROM files
        WHERE storage_key = ANY(CAST(:keys AS text[])) AND (:is_admin OR user_id = :user_id)
        FOR KEY SHARE
    """), {"keys": valid, "is_admin": who.is_admin, "user_id": who.user_id}).all())
    job_ids = sorted({int(m.group(1)) for key in valid if (m := _JOB_OUTPUT_KEY.match(key))})
    own_jobs = own_job_ids(conn, who, job_ids)
    for key in valid:
        match = _JOB_OUTPUT_KEY.match(key)
        if key in files or (match and int(match.group(1)) in own_jobs) or (who.is_admin and not match):
            continue
        problems.update({p: [f"no object {key!r} that you may read"] for p in paths[key]})
    return files
