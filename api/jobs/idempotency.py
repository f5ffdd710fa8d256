"""Idempotent submissions: the ``Idempotency-Key`` header of ``POST /api/jobs`` and ``/batch``.

A key belongs to one account and lives for ``SKYFLEET_IDEMPOTENCY_KEY_TTL_S`` (a day). Its row
is written in the transaction that submits the jobs, so a key exists exactly when its
submission committed: a client whose request timed out, or got a 503 after the commit,
retries with the same key and gets the first answer back instead of submitting twice.

The row is inserted *first* in that transaction, before anything is checked or enqueued.
A concurrent request with the same key then blocks in its own ``INSERT … ON CONFLICT`` on the
uncommitted row: if the first submission commits, the second finds the key and replays it;
if it rolls back (a 422, a 429 limit), the second inserts the key itself and submits. Either
way two requests with one key never both create jobs. The key row is the only lock taken
before the per-user submission lock (api.jobs.limits), so the two cannot deadlock.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import Connection, Engine, text

from api.errors import ValidationFailed
from api.queue.submit import Submitted

HEADER = "Idempotency-Key"
#: Answers that replay a stored submission carry this header, set to ``true``.
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
#: Printable ASCII, space included (what an HTTP header value can carry unambiguously).
_KEY_SYNTAX = re.compile(rf"[\x20-\x7e]{{1,{MAX_KEY_LENGTH}}}")
PRUNE_BATCH = 1000
PRUNE_MAX_BATCHES = 20

#: The OpenAPI parameter (flask-smorest ``@blp.doc(parameters=…)``).
KEY_PARAMETER: dict[str, Any] = {
    "in": "header",
    "name": HEADER,
    "required": False,
    "description": (
        "Makes the submission safe to retry. A repeat of a key (per account, kept for a day) gets the "
        "first answer back — its status code, the jobs as they are now, the original origin and "
        "request_id — with `Idempotent-Replayed: true`, and submits nothing. The same key with another "
        "method, path or body is a 422. 1 to 255 printable ASCII characters, e.g. a UUID."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": "^[\\x20-\\x7e]+$"},
}
#: The OpenAPI response header of a replayed answer.
REPLAYED_HEADER_DOC: dict[str, Any] = {
    REPLAYED_HEADER: {"description": "`true` when the answer replays an earlier submission with the same "
                                     "Idempotency-Key.", "schema": {"type": "string", "enum": ["true"]}},
}


def _invalid(why: str) -> ValidationFailed:
    return ValidationFailed(f"Validation failed: {HEADER}: {why}",
                            details={"location": "headers", "fields": {HEADER: [why]}})


def parse_key(raw: str | None) -> str | None:
    """The key a request sent, or None without the header; 422 when it is malformed."""
    if raw is None:
        return None
    if not _KEY_SYNTAX.fullmatch(raw):
        raise _invalid(f"must be 1 to {MAX_KEY_LENGTH} printable ASCII characters")
    return raw


def request_hash(method: str, path: str, body: bytes) -> str:
    """SHA-256 of the method, path and body; a JSON body is canonicalised (key order and spacing
    do not make another request, any value does)."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        payload = canonical.encode()
    except ValueError:
        payload = body
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), payload):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


@dataclass(frozen=True)
class StoredAnswer:
    """What a committed submission under a key answered."""

    request_hash: str
    status_code: int
    submitted: list[Submitted]


# A row older than the TTL that the pruner has not reached yet counts as gone: it is taken over.
# ON CONFLICT waits for a concurrent uncommitted insert of the same key, then (READ COMMITTED)
# sees its outcome: committed → no row returned, the caller replays; rolled back → inserted.
_CLAIM = text("""
    INSERT INTO idempotency_keys AS k (user_id, key, request_hash, status_code, submitted)
    VALUES (:user_id, :key, :hash, 0, '[]')
    ON CONFLICT (user_id, key) DO UPDATE
        SET request_hash = excluded.request_hash, status_code = 0, submitted = '[]', created_at = now()
        WHERE k.created_at < now() - make_interval(secs => :ttl_s)
    RETURNING true
""")

_FIND = text("""
    SELECT request_hash, status_code, submitted FROM idempotency_keys
    WHERE user_id = :user_id AND key = :key AND created_at >= now() - make_interval(secs => :ttl_s)
""")

_COMPLETE = text("""
    UPDATE idempotency_keys SET status_code = :status_code, submitted = :submitted
    WHERE user_id = :user_id AND key = :key
""")

_PRUNE = text("""
    DELETE FROM idempotency_keys WHERE (user_id, key) IN (
        SELECT user_id, key FROM idempotency_keys
        WHERE created_at < now() - make_interval(secs => :ttl_s)
        ORDER BY created_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED)
""")


def find_answer(conn: Connection, user_id: int, key: str, ttl_s: float) -> StoredAnswer | None:
    """The committed answer stored under ``key``, if it is younger than ``ttl_s``."""
    row = conn.execute(_FIND, {"user_id": user_id, "key": key, "ttl_s": ttl_s}).one_or_none()
    if row is None:
        return None
    submitted = [Submitted(int(s["job_id"]), int(s["request_id"]), str(s["origin"])) for s in row.submitted]
    return StoredAnswer(row.request_hash, int(row.status_code), submitted)


def claim_key(conn: Connection, user_id: int, key: str, hash_: str, ttl_s: float) -> bool:
    """Take ``key`` for this transaction's submission; False when a committed submission has it.

    Waits while another transaction holds the same key uncommitted. Call it first in the
    submitting transaction, then :func:`complete_key` once the jobs are enqueued.
    """
    params = {"user_id": user_id, "key": key, "hash": hash_, "ttl_s": ttl_s}
    return conn.execute(_CLAIM, params).scalar_one_or_none() is not None


def complete_key(conn: Connection, user_id: int, key: str, answer: StoredAnswer) -> None:
    """Record the answer under the key this transaction claimed."""
    submitted = [{"job_id": s.job_id, "request_id": s.request_id, "origin": s.origin} for s in answer.submitted]
    conn.execute(_COMPLETE, {"user_id": user_id, "key": key, "status_code": answer.status_code,
                             "submitted": Jsonb(submitted)})


def check_same_request(answer: StoredAnswer, hash_: str) -> None:
    """422 when a key comes back with another method, path or body."""
    if answer.request_hash != hash_:
        raise _invalid("this key was already used with a different request (method, path or body); "
                       "use a new key for a new submission")


def prune_keys(engine: Engine, ttl_s: float, batch_size: int = PRUNE_BATCH,
               max_batches: int = PRUNE_MAX_BATCHES) -> int:
    """Delete keys older than ``ttl_s`` in bounded batches; how many went."""
    total = 0
    for _ in range(max_batches):
        with engine.begin() as conn:
            deleted = conn.execute(_PRUNE, {"ttl_s": ttl_s, "limit": batch_size}).rowcount
        total += deleted
        if deleted < batch_size:
            break
    return total
