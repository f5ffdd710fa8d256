"""The data library: upload FITS, list, get, download through a signed link, delete; file inputs of jobs."""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from marshmallow import Schema, fields

from api.auth.models import Role
from jobtypes import InputFile, JobType
from jobtypes.catalogue import CATALOGUE, register
from tests.helpers import count
from tests.integration.conftest import As, claim, make_account, report, submit
from tests.integration.conftest import register as register_worker


class _ReadsInput(Schema):
    image = InputFile(required=True)
    extra = fields.List(InputFile(), load_default=list)


@pytest.fixture(autouse=True, scope="module")
def file_job_type() -> Any:
    """A job type with file inputs (the astronomy types arrive with the worker issue)."""
    job_type = register(JobType(name="test.reads-input", description="Reads files (tests).",
                                input_schema=_ReadsInput, result_schema=Schema, timeout_s=60.0))
    yield job_type
    CATALOGUE.pop(job_type.name)


def fits_bytes(extra: int = 0) -> bytes:
    """A minimal valid FITS primary header (no data), padded to 2880 bytes, plus ``extra`` bytes."""
    cards = ["SIMPLE  =                    T", "BITPIX  =                    8", "NAXIS   =                    0", "END"]
    header = "".join(card.ljust(80) for card in cards).ljust(2880).encode()
    return header + b"\0" * extra


def upload(user: As, data: bytes, name: str = "image.fits") -> Any:
    return user.client.post("/api/files", data={"file": (io.BytesIO(data), name)},
                            headers={"Authorization": f"Bearer {user.token}"}, content_type="multipart/form-data")


def test_upload_list_get_download_delete(alice, app):
    data = fits_bytes(5000)
    response = upload(alice, data, "m 13.fits")
    assert response.status_code == 201, response.json
    file = response.json["data"]
    assert file["size"] == len(data) and file["name"] == "m_13.fits" and len(file["sha256"]) == 64
    listed = alice.get("/api/files?limit=10").json
    assert [f["id"] for f in listed["data"]] == [file["id"]]
    assert listed["meta"]["pagination"]["total"] == 1
    assert alice.get(f"/api/files/{file['id']}").json["data"]["storage_key"] == file["storage_key"]

    link = alice.get(f"/api/files/{file['id']}/download").json["data"]
    parts = urlsplit(link["url"])
    anonymous = app.test_client()
    with anonymous.get(f"{parts.path}?{parts.query}") as fetched:
        assert fetched.status_code == 200 and fetched.data == data
    tampered = anonymous.get(f"{parts.path}?{parts.query.replace('signature=', 'signature=x')}")
    assert tampered.status_code == 403 and tampered.json["error"]["code"] == "FORBIDDEN"
    expired = anonymous.get(f"{parts.path}?expires=1&signature=abc")
    assert expired.status_code == 403

    assert alice.delete(f"/api/files/{file['id']}").status_code == 200
    assert alice.get(f"/api/files/{file['id']}").status_code == 404
    assert anonymous.get(f"{parts.path}?{parts.query}").status_code == 404


def test_not_fits_missing_part_and_too_large(alice, app, engine):
    bad = upload(alice, b"PNG\x89 not a fits file" * 200)
    assert bad.status_code == 422 and "file" in bad.json["error"]["details"]["fields"]
    missing = alice.client.post("/api/files", data={"name": "x"}, content_type="multipart/form-data",
                                headers={"Authorization": f"Bearer {alice.token}"})
    assert missing.status_code == 422 and "file" in missing.json["error"]["details"]["fields"]
    app.extensions["skyfleet"].settings = app.extensions["skyfleet"].settings.with_(max_upload_bytes=4000)
    big = upload(alice, fits_bytes(200_000))
    assert big.status_code == 413 and big.json["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert "max_upload_bytes" in big.json["error"]["message"]
    assert count(engine, "files") == 0


def test_other_users_files_are_invisible(alice, bob, admin):
    file = upload(alice, fits_bytes()).json["data"]
    for path in (f"/api/files/{file['id']}", f"/api/files/{file['id']}/download"):
        assert bob.get(path).status_code == 404
        assert admin.get(path).status_code == 200
    assert bob.delete(f"/api/files/{file['id']}").status_code == 404
    assert bob.get("/api/files").json["meta"]["pagination"]["total"] == 0
    # Nor may Bob name Alice's file (by id or by key) as a job input.
    for ref in ({"file_id": file["id"]}, {"key": file["storage_key"]}):
        response = bob.post("/api/jobs", {"type": "test.reads-input", "input_payload": {"image": ref}})
        assert response.status_code == 422, response.json
        (field,) = response.json["error"]["details"]["fields"]
        assert field.startswith("input_payload.image.")


def test_file_inputs_are_checked_and_protect_the_file(alice, worker_account, engine):
    file = upload(alice, fits_bytes()).json["data"]
    job = submit(alice, "test.reads-input", {"image": {"file_id": file["id"]},
                                             "extra": [{"key": file["storage_key"]}]})
    busy = alice.delete(f"/api/files/{file['id']}")
    assert busy.status_code == 409
    assert busy.json["error"]["details"]["job_ids"] == [job["id"]]
    unknown = alice.post("/api/jobs", {"type": "test.reads-input", "input_payload": {"image": {"file_id": 99999}}})
    assert unknown.status_code == 422
    assert unknown.json["error"]["details"]["fields"] == {"input_payload.image.file_id": ["file 99999 not found"]}
    both = alice.post("/api/jobs", {"type": "test.reads-input",
                                    "input_payload": {"image": {"file_id": file["id"], "key": "a/b"}}})
    assert both.status_code == 422
    private = alice.post("/api/jobs", {"type": "test.reads-input",
                                       "input_payload": {"image": {"url": "http://169.254.169.254/latest"}}})
    assert private.status_code == 422 and "input_payload.image.url" in private.json["error"]["details"]["fields"]
    traversal = alice.post("/api/jobs", {"type": "test.reads-input",
                                         "input_payload": {"image": {"key": "uploads/../../etc/passwd"}}})
    assert traversal.status_code == 422
    # Once the job has finished the file may go.
    wid = register_worker(worker_account, ("test.reads-input",))
    (claimed,) = claim(worker_account, wid)
    assert report(worker_account, wid, claimed).status_code == 200
    assert alice.delete(f"/api/files/{file['id']}").status_code == 200
    assert count(engine, "job_files") == 0


def test_s3_backend_uploads_and_presigned_downloads(app_factory, moto_s3):
    """The same endpoints on S3 (moto's server): the upload lands in the bucket and the
    download URL is presigned by S3, fetched without any token."""
    s3_app = app_factory(storage_backend="s3", s3_bucket=moto_s3["bucket"], s3_prefix="fleet")
    carol = make_account(s3_app, "carol@example.org", [Role.USER])
    data = fits_bytes(3000)
    file = upload(carol, data).json["data"]
    link = carol.get(f"/api/files/{file['id']}/download").json["data"]
    assert link["url"].startswith(moto_s3["endpoint_url"]) and "Signature" in link["url"]
    assert requests.get(link["url"], timeout=10).content == data
    assert carol.delete(f"/api/files/{file['id']}").status_code == 200
    # S3 answers 403 rather than 404 for a missing key to a caller without ListBucket.
    assert requests.get(link["url"], timeout=10).status_code in (403, 404)


def test_signed_links_are_built_from_the_public_url_not_the_host_header(app, alice, app_factory):
    """A forged Host (or X-Forwarded-Host) must not steer where a download link points."""
    forged = {"Host": "evil.example", "X-Forwarded-Host": "evil.example"}
    public = app_factory(public_url="https://skyfleet.example.org/")
    carol = make_account(public, "carol@example.org", [Role.USER])
    data = fits_bytes(100)
    file = upload(carol, data).json["data"]
    link = carol.get(f"/api/files/{file['id']}/download", headers=forged).json["data"]
    parts = urlsplit(link["url"])
    assert (parts.scheme, parts.netloc) == ("https", "skyfleet.example.org")
    assert parts.path.startswith("/api/storage/uploads/") and "signature=" in parts.query
    with public.test_client().get(f"{parts.path}?{parts.query}") as fetched:
        assert fetched.status_code == 200 and fetched.data == data

    # Unset, the link follows the request: only then does the Host header decide.
    mine = upload(alice, data).json["data"]
    fallback = alice.get(f"/api/files/{mine['id']}/download", headers=forged).json["data"]
    assert urlsplit(fallback["url"]).netloc == "evil.example"
