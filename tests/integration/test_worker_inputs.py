"""Worker-side inputs and identity: files fetched from storage or a URL, outputs uploaded, ECS metadata."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from jobtypes import protocol
from storage import LocalStorage
from storage.netguard import AddressGuard
from worker.ecs import task_identity
from worker.inputs import InputFetcher, input_refs, upload_outputs
from worker.jobs import PermanentError

FITS = b"SIMPLE  =                    T" + b" " * 2850


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, tuple[int, bytes]]] = {}

    def do_GET(self) -> None:
        status, body = self.routes.get(self.path, (404, b"no"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _job(payload: dict[str, Any], input_files: list[dict[str, Any]] | None = None) -> protocol.ClaimedJob:
    return protocol.read(protocol.ClaimedJob, {
        "job_id": 1, "token": str(uuid.uuid4()), "type": "test.inputs", "attempt": 1, "max_attempts": 3,
        "input_payload": payload, "lease_expires_at": "2026-12-04T00:00:00Z", "timeout_s": 0.0,
        "input_files": input_files or []})


@pytest.fixture(autouse=True)
def _type_with_two_inputs() -> Iterator[None]:
    """A job type of this test only, whose schema names two input files."""
    from marshmallow import Schema

    from jobtypes import CATALOGUE, InputFile, JobType

    class Inputs(Schema):
        first = InputFile(required=True)
        second = InputFile(load_default=None, allow_none=True)

    CATALOGUE["test.inputs"] = JobType("test.inputs", "two inputs", Inputs)
    yield
    del CATALOGUE["test.inputs"]


def test_refs_of_a_payload_are_found_once_each():
    refs = input_refs("test.inputs", {"first": {"key": "a/b.fits"}, "second": {"key": "a/b.fits"}})
    assert refs == [{"key": "a/b.fits"}]


def test_inputs_come_from_storage_by_key_and_by_file_id(tmp_path: Path):
    storage = LocalStorage(tmp_path / "store")
    storage.put("uploads/1/abc/img.fits", io.BytesIO(FITS))
    fetcher = InputFetcher(storage, AddressGuard(), max_bytes=10_000, timeout_s=5)
    local = fetcher.fetch_all(_job({"first": {"file_id": 7}, "second": {"key": "uploads/1/abc/img.fits"}},
                                   [{"file_id": 7, "key": "uploads/1/abc/img.fits", "size": 2880, "name": "img"}]),
                              tmp_path)
    assert set(local) == {"file_id:7", "key:uploads/1/abc/img.fits"}
    assert all(Path(p).read_bytes() == FITS for p in local.values())


@pytest.mark.parametrize("payload, files, message", [
    ({"first": {"key": "uploads/1/nothing.fits"}}, [], "does not exist"),
    ({"first": {"file_id": 9}}, [], "file 9 is not available"),
    ({"first": {"key": "uploads/1/abc/img.fits"}}, [], "larger than the limit"),
])
def test_missing_or_oversized_inputs_are_permanent_errors(tmp_path: Path, payload, files, message):
    storage = LocalStorage(tmp_path / "store")
    storage.put("uploads/1/abc/img.fits", io.BytesIO(FITS))
    fetcher = InputFetcher(storage, AddressGuard(), max_bytes=1000, timeout_s=5)
    with pytest.raises(PermanentError, match=message):
        fetcher.fetch_all(_job(payload, files), tmp_path)


def test_url_inputs_pass_the_address_guard(tmp_path: Path, web: str):
    _Handler.routes = {"/m13.fits": (200, FITS), "/big.fits": (200, FITS * 4), "/gone.fits": (410, b"gone")}
    storage = LocalStorage(tmp_path / "store")
    refused = InputFetcher(storage, AddressGuard(), max_bytes=10_000, timeout_s=5)
    with pytest.raises(PermanentError, match="refused"):
        refused.fetch_all(_job({"first": {"url": f"{web}/m13.fits"}}), tmp_path)

    allowed = InputFetcher(storage, AddressGuard(["127.0.0.1"]), max_bytes=10_000, timeout_s=5)
    local = allowed.fetch_all(_job({"first": {"url": f"{web}/m13.fits"}}), tmp_path)
    assert Path(local[f"url:{web}/m13.fits"]).read_bytes() == FITS
    with pytest.raises(PermanentError, match="more than the limit"):
        allowed.fetch_all(_job({"first": {"url": f"{web}/big.fits"}}), tmp_path)
    with pytest.raises(PermanentError, match="HTTP 410"):
        allowed.fetch_all(_job({"first": {"url": f"{web}/gone.fits"}}), tmp_path)


def test_outputs_go_under_the_attempts_prefix_with_sizes_and_checksums(tmp_path: Path):
    storage = LocalStorage(tmp_path / "store")
    out = tmp_path / "catalogue.ecsv"
    out.write_text("# %ECSV 1.0\nx y\n1 2\n")
    token = uuid.UUID("0123456789abcdef" "fedcba9876543210")
    prefix, files = upload_outputs(storage, 12, 3, token, [("catalogue.ecsv", str(out), None)])
    assert prefix == "jobs/12/attempt-3-0123456789abcdef"  # 16 hex digits of the attempt's token
    assert [protocol.dump(f) for f in files] == [
        {"key": "jobs/12/attempt-3-0123456789abcdef/catalogue.ecsv", "size": out.stat().st_size, "name": "catalogue.ecsv",
         "sha256": hashlib.sha256(out.read_bytes()).hexdigest(), "content_type": "text/plain"}]


def test_ecs_identity_from_the_task_metadata_endpoint(web: str):
    task = {"Cluster": "arn:aws:ecs:eu-west-1:123456789012:cluster/skyfleet",
            "TaskARN": "arn:aws:ecs:eu-west-1:123456789012:task/skyfleet/0123456789abcdef"}
    _Handler.routes = {"/v4/abc/task": (200, json.dumps(task).encode())}
    assert task_identity(f"{web}/v4/abc") == {"ecs_task_arn": task["TaskARN"], "ecs_cluster_arn": task["Cluster"]}
    assert task_identity(None) == {"ecs_task_arn": None, "ecs_cluster_arn": None}
    # An endpoint that does not answer does not stop the worker from starting.
    assert task_identity(f"{web}/v4/missing") == {"ecs_task_arn": None, "ecs_cluster_arn": None}
