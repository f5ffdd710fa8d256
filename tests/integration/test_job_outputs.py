"""Job reads with ETag, limits, outputs: result file list, download URLs, streamed zip, delete."""

from __future__ import annotations

import datetime as dt
import io
import uuid
import zipfile
from typing import Any
from urllib.parse import urlsplit

from flask import Flask

from jobtypes import protocol
from tests.helpers import count
from tests.integration.conftest import As, claim, register, report, submit


def _finish_with_outputs(app: Flask, user: As, worker: As, outputs: dict[str, bytes]) -> dict[str, Any]:
    """Run one noop job as the worker would: write outputs under the attempt prefix, report them."""
    job = submit(user, "noop", {"tag": f"{len(outputs)} outputs"})
    wid = register(worker)
    (claimed,) = claim(worker, wid, max_jobs=1)
    storage = app.extensions["skyfleet"].storage
    prefix = protocol.output_prefix(job["id"], 1, uuid.UUID(claimed["token"]))
    files = []
    for name, data in outputs.items():
        stored = storage.put(f"{prefix}/{name}", io.BytesIO(data))
        files.append({"key": stored.key, "name": name, "size": stored.size, "sha256": stored.sha256,
                      "content_type": stored.content_type})
    response = report(worker, wid, claimed, result_payload={"ok": True}, files=files)
    assert response.status_code == 200, response.json
    return job


def test_download_urls_zip_and_delete(app, alice, bob, worker_account, engine):
    outputs = {f"tile-{i}.txt": f"tile {i}\n".encode() * (i + 1) for i in range(120)}
    outputs["preview.png"] = b"\x89PNG" + bytes(range(256)) * 10
    job = _finish_with_outputs(app, alice, worker_account, outputs)

    result = alice.get(f"/api/jobs/{job['id']}/result").json["data"]
    assert {f["name"] for f in result["files"]} == set(outputs)

    listing = alice.get(f"/api/jobs/{job['id']}/download").json
    assert listing["meta"]["count"] == len(outputs) == len(listing["data"])  # no cap on the count
    anonymous = app.test_client()
    for entry in listing["data"][:5]:
        parts = urlsplit(entry["url"])
        with anonymous.get(f"{parts.path}?{parts.query}") as fetched:
            assert fetched.data == outputs[entry["name"]]
        assert dt.datetime.fromisoformat(entry["expires_at"]) > dt.datetime.now(dt.UTC)

    archive = alice.get(f"/api/jobs/{job['id']}/download.zip")
    assert archive.status_code == 200 and archive.mimetype == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.data)) as z:
        assert {n: z.read(n) for n in z.namelist()} == outputs

    for path in ("download", "download.zip", "result"):
        assert bob.get(f"/api/jobs/{job['id']}/{path}").status_code == 404
    assert bob.delete(f"/api/jobs/{job['id']}").status_code == 404

    deleted = alice.delete(f"/api/jobs/{job['id']}")
    assert deleted.status_code == 200 and deleted.json["data"]["deleted_objects"] == len(outputs)
    assert alice.get(f"/api/jobs/{job['id']}").status_code == 404
    assert count(engine, "jobs") == 0 and count(engine, "job_attempts") == 0
    assert list(app.extensions["skyfleet"].storage.list(f"jobs/{job['id']}")) == []


def test_downloads_and_delete_of_unfinished_jobs_are_conflicts(alice):
    job = submit(alice, "sleep", {"seconds": 5})
    for path in ("download", "download.zip"):
        response = alice.get(f"/api/jobs/{job['id']}/{path}")
        assert response.status_code == 409 and response.json["error"]["details"]["status"] == "PENDING"
    assert alice.delete(f"/api/jobs/{job['id']}").status_code == 409


def test_outputs_outside_the_attempt_prefix_are_refused(alice, worker_account):
    job = submit(alice, "noop", {"tag": "escape"})
    wid = register(worker_account)
    (claimed,) = claim(worker_account, wid)
    mine = uuid.UUID(claimed["token"]).hex[:16]
    other = uuid.uuid4().hex[:16]
    for key in (f"jobs/999/attempt-1-{mine}/x.txt", f"jobs/{job['id']}/attempt-2-{mine}/x.txt",
                f"jobs/{job['id']}/attempt-1-{other}/x.txt", f"jobs/{job['id']}/attempt-1/x.txt",
                f"jobs/{job['id']}/../x"):
        response = report(worker_account, wid, claimed, files=[{"key": key, "size": 1}])
        assert response.status_code == 422, key
        assert "results.0.files" in str(response.json["error"]["details"]["fields"])


def test_etag_and_not_modified(alice, worker_account):
    job = submit(alice, "noop", {"tag": "etag"})
    first = alice.get(f"/api/jobs/{job['id']}")
    etag = first.headers["ETag"]
    assert alice.get(f"/api/jobs/{job['id']}", headers={"If-None-Match": etag}).status_code == 304
    wid = register(worker_account)
    claim(worker_account, wid)
    changed = alice.get(f"/api/jobs/{job['id']}", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert changed.json["data"]["status"] == "IN_PROGRESS"


def test_limits_are_visible_and_enforced(app, alice, admin, engine):
    context = app.extensions["skyfleet"]
    context.settings = context.settings.with_(max_active_jobs_per_user=3, user_min_priority=2)
    limits = alice.get("/api/jobs/limits").json["data"]
    assert limits["max_active_jobs"] == 3 and limits["active_jobs"] == 0 and limits["min_priority"] == 2
    urgent = alice.post("/api/jobs", {"type": "noop", "priority": 0})
    assert urgent.status_code == 422 and "priority" in urgent.json["error"]["details"]["fields"]
    assert submit(admin, "noop", {"tag": "admins may"}, priority=0)["priority"] == 0
    for i in range(3):
        submit(alice, "noop", {"tag": str(i)})
    over = alice.post("/api/jobs", {"type": "noop", "input_payload": {"tag": "one too many"}})
    assert over.status_code == 429 and over.json["error"]["code"] == "LIMIT_EXCEEDED"
    assert over.json["error"]["details"] == {"limit": "max_active_jobs", "max": 3, "active": 3, "requested": 1}
    batch = alice.post("/api/jobs/batch", {"jobs": [{"type": "noop"}]})
    assert batch.status_code == 429
    # A per-account override beats the default.
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE users SET max_active_jobs = 10, min_priority = 0 WHERE id = %s",
                             (alice.user_id,))
    assert alice.get("/api/jobs/limits").json["data"]["max_active_jobs"] == 10
    assert alice.post("/api/jobs", {"type": "noop", "priority": 0}).status_code == 201


def test_list_filters_by_created_range_and_owner(alice, bob, admin):
    a = submit(alice, "noop", {"tag": "a"})
    b = submit(bob, "noop", {"tag": "b"})
    created = a["created_at"]
    after = alice.get("/api/jobs", query_string={"created_after": created}).json["data"]
    assert [j["id"] for j in after] == [a["id"]]
    before = alice.get("/api/jobs", query_string={"created_before": created}).json["data"]
    assert before == []
    mine = admin.get("/api/jobs", query_string={"user_id": bob.user_id}).json["data"]
    assert [j["id"] for j in mine] == [b["id"]]
    naive = alice.get("/api/jobs", query_string={"created_after": "2026-01-01T00:00:00"})
    assert naive.status_code == 422 and "created_after" in naive.json["error"]["details"]["fields"]
