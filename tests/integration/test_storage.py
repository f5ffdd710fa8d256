"""Both storage backends behave alike: the local directory, and S3 (moto's server)."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests

import storage.s3
from storage import (
    InvalidKey,
    LocalStorage,
    ObjectNotFound,
    ObjectTooLarge,
    Storage,
    StorageError,
    open_storage,
)
from storage.s3 import S3Storage

MiB = 1024 * 1024


class Stream:
    """A non-seekable stream (like a request body), optionally calling back before each read."""

    def __init__(self, data: bytes, on_read: Any = None) -> None:
        self._data = io.BytesIO(data)
        self._on_read = on_read

    def read(self, n: int = -1) -> bytes:
        if self._on_read:
            self._on_read()
        return self._data.read(n)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return open_storage("local", root=tmp_path / "storage")
    bucket = request.getfixturevalue("moto_s3")["bucket"]
    return open_storage("s3", bucket=bucket, prefix="skyfleet/test")


@pytest.fixture
def local(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage")


@pytest.fixture
def s3(moto_s3: dict[str, str]) -> S3Storage:
    return S3Storage(moto_s3["bucket"], prefix="skyfleet/test")


def keys(store: Storage, prefix: str = "") -> list[str]:
    return [obj.key for obj in store.list(prefix)]


# --- what both backends do ---------------------------------------------------------------------------------

def test_put_then_open_and_stat(store: Storage):
    data = b"SIMPLE  =                    T" + os.urandom(5000)
    stored = store.put("uploads/1/image.fits", Stream(data), "application/fits")
    assert (stored.key, stored.size, stored.sha256) == ("uploads/1/image.fits", len(data), sha(data))
    with store.open("uploads/1/image.fits") as stream:
        assert stream.read() == data
    info = store.stat("uploads/1/image.fits")
    assert (info.size, info.content_type) == (len(data), "application/fits")


def test_put_replaces_an_object(store: Storage):
    store.put("jobs/1/out.json", Stream(b'{"a": 1}'), "application/json")
    store.put("jobs/1/out.json", Stream(b'{"a": 22}'), "application/json")
    with store.open("jobs/1/out.json") as stream:
        assert stream.read() == b'{"a": 22}'
    assert keys(store) == ["jobs/1/out.json"]


def test_an_empty_object(store: Storage):
    assert store.put("jobs/1/empty.txt", Stream(b"")).size == 0
    assert store.stat("jobs/1/empty.txt").size == 0


def test_missing_objects(store: Storage, tmp_path: Path):
    with pytest.raises(ObjectNotFound):
        store.open("jobs/1/missing.fits")
    with pytest.raises(ObjectNotFound):
        store.stat("jobs/1/missing.fits")
    with pytest.raises(ObjectNotFound):
        store.get_file("jobs/1/missing.fits", tmp_path / "copy.fits")
    store.delete("jobs/1/missing.fits")  # not an error
    assert store.delete_prefix("jobs/1") == 0
    assert keys(store, "jobs") == []


def test_list_is_in_key_order_and_keeps_to_the_prefix(store: Storage):
    for key in ["jobs/1/b.txt", "jobs/1/a/z.txt", "jobs/1/a.txt", "jobs/10/x.txt", "jobs/1-x/y.txt", "uploads/1"]:
        store.put(key, Stream(key.encode()))
    assert keys(store, "jobs/1") == ["jobs/1/a.txt", "jobs/1/a/z.txt", "jobs/1/b.txt"]
    assert keys(store, "jobs") == ["jobs/1-x/y.txt", "jobs/1/a.txt", "jobs/1/a/z.txt", "jobs/1/b.txt",
                                   "jobs/10/x.txt"]
    assert len(keys(store)) == 6
    assert [obj.size for obj in store.list("jobs/10")] == [len(b"jobs/10/x.txt")]


def test_delete_and_delete_prefix(store: Storage):
    for key in ["jobs/1/attempt-1/a.fits", "jobs/1/attempt-2/a.fits", "jobs/1/b.json", "jobs/10/a.fits"]:
        store.put(key, Stream(b"x"))
    store.delete("jobs/1/b.json")
    with pytest.raises(ObjectNotFound):
        store.stat("jobs/1/b.json")
    assert store.delete_prefix("jobs/1") == 2
    assert keys(store) == ["jobs/10/a.fits"]  # "jobs/10" is not under "jobs/1/"


def test_put_file_and_get_file(store: Storage, tmp_path: Path):
    data = os.urandom(3 * MiB + 17)
    source = tmp_path / "source.fits"
    source.write_bytes(data)
    stored = store.put_file("jobs/2/attempt-1/image.fits", source, "application/fits")
    assert (stored.size, stored.sha256) == (len(data), sha(data))
    target = tmp_path / "deep" / "copy.fits"
    fetched = store.get_file("jobs/2/attempt-1/image.fits", target)
    assert target.read_bytes() == data
    assert (fetched.size, fetched.sha256) == (len(data), sha(data))


def test_get_file_past_max_bytes_leaves_no_file(store: Storage, tmp_path: Path):
    store.put("jobs/3/big.bin", Stream(b"x" * 1000))
    with pytest.raises(ObjectTooLarge):
        store.get_file("jobs/3/big.bin", tmp_path / "out" / "big.bin", max_bytes=999)
    assert list((tmp_path / "out").iterdir()) == []
    assert store.get_file("jobs/3/big.bin", tmp_path / "out" / "big.bin", max_bytes=1000).size == 1000


def test_put_past_max_bytes_stores_nothing(store: Storage):
    with pytest.raises(ObjectTooLarge):
        store.put("uploads/4/image.fits", Stream(b"x" * 2001), max_bytes=2000)
    with pytest.raises(ObjectNotFound):
        store.stat("uploads/4/image.fits")
    assert keys(store) == []
    assert store.put("uploads/4/image.fits", Stream(b"x" * 2000), max_bytes=2000).size == 2000


def test_a_failed_put_keeps_the_previous_object(store: Storage):
    store.put("uploads/5/image.fits", Stream(b"old"))
    with pytest.raises(ObjectTooLarge):
        store.put("uploads/5/image.fits", Stream(b"new and far too long"), max_bytes=5)
    with store.open("uploads/5/image.fits") as stream:
        assert stream.read() == b"old"


@pytest.mark.parametrize("call", [
    lambda s: s.put("../escape", Stream(b"x")),
    lambda s: s.put_file("/etc/passwd", Path(__file__)),
    lambda s: s.open("jobs/../../etc/passwd"),
    lambda s: s.get_file("a//b", Path("unused")),
    lambda s: s.stat(""),
    lambda s: s.delete("jobs/x y"),
    lambda s: s.delete_prefix("jobs/"),
    lambda s: list(s.list("../")),
    lambda s: s.download_url("/abs", 60),
    lambda s: s.local_path("jobs/.."),
])
def test_every_method_refuses_unsafe_keys(store: Storage, call: Any):
    with pytest.raises(InvalidKey):
        call(store)


def test_open_storage_refuses_an_unknown_backend():
    with pytest.raises(ValueError, match="gcs"):
        open_storage("gcs")


# --- the local directory -----------------------------------------------------------------------------------

def test_local_objects_are_plain_files(local: LocalStorage):
    local.put("jobs/1/out.ecsv", Stream(b"# %ECSV 1.0"))
    path = local.local_path("jobs/1/out.ecsv")
    assert path == local.root / "jobs" / "1" / "out.ecsv"
    assert path.read_bytes() == b"# %ECSV 1.0"
    assert local.download_url("jobs/1/out.ecsv", 60, "out.ecsv") is None
    assert local.stat("jobs/1/out.ecsv").content_type == "text/plain"


def test_local_readers_never_see_half_an_object(local: LocalStorage):
    local.put("uploads/1/image.fits", Stream(b"old" * 1000))
    seen: list[tuple[bytes, list[str]]] = []

    def peek() -> None:  # runs in the middle of the second put
        with local.open("uploads/1/image.fits") as stream:
            seen.append((stream.read(), keys(local)))

    new = os.urandom(3 * MiB)
    local.put("uploads/1/image.fits", Stream(new, on_read=peek))
    assert len(seen) >= 3  # 1 MiB chunks: peeked before, between and after them
    assert all(content == b"old" * 1000 and listed == ["uploads/1/image.fits"] for content, listed in seen)
    assert local.local_path("uploads/1/image.fits").read_bytes() == new


def test_local_put_past_max_bytes_removes_its_temporary_file(local: LocalStorage):
    local.put("uploads/1/keep.fits", Stream(b"keep"))
    with pytest.raises(ObjectTooLarge):
        local.put("uploads/1/image.fits", Stream(b"x" * (2 * MiB)), max_bytes=MiB)
    assert sorted(p.name for p in (local.root / "uploads" / "1").iterdir()) == ["keep.fits"]


def test_local_delete_prefix_removes_the_directory(local: LocalStorage):
    local.put("jobs/1/attempt-1/a.fits", Stream(b"x"))
    local.put("jobs/1/b.fits", Stream(b"x"))
    assert local.delete_prefix("jobs/1") == 2
    assert not (local.root / "jobs" / "1").exists()


def test_local_delete_prunes_empty_directories(local: LocalStorage):
    local.put("jobs/1/attempt-1/a.fits", Stream(b"x"))
    local.put("jobs/1/b.fits", Stream(b"x"))
    local.delete("jobs/1/attempt-1/a.fits")
    assert sorted(p.name for p in (local.root / "jobs" / "1").iterdir()) == ["b.fits"]


def test_local_keys_cannot_escape_through_a_symlink(local: LocalStorage, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (local.root / "link").symlink_to(outside)
    with pytest.raises(InvalidKey):
        local.put("link/stolen.txt", Stream(b"x"))
    with pytest.raises(InvalidKey):
        local.open("link/stolen.txt")
    assert list(outside.iterdir()) == []


def test_local_an_object_cannot_also_be_a_prefix(local: LocalStorage):
    local.put("jobs/1", Stream(b"x"))
    with pytest.raises(StorageError):
        local.put("jobs/1/a.fits", Stream(b"x"))
    local.put("jobs/2/a.fits", Stream(b"x"))
    with pytest.raises(StorageError):
        local.put("jobs/2", Stream(b"x"))
    with pytest.raises(ObjectNotFound):
        local.open("jobs/2")


def test_local_concurrent_puts_leave_one_whole_object(local: LocalStorage):
    payloads = [bytes([i]) * (2 * MiB) for i in range(4)]
    threads = [threading.Thread(target=local.put, args=("uploads/1/image.fits", Stream(p))) for p in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert local.local_path("uploads/1/image.fits").read_bytes() in payloads
    assert [p.name for p in (local.root / "uploads" / "1").iterdir()] == ["image.fits"]


# --- S3 ----------------------------------------------------------------------------------------------------

def test_s3_objects_live_under_the_prefix_with_their_sha256(s3: S3Storage):
    data = b"SIMPLE  =                    T"
    s3.put("uploads/1/image.fits", Stream(data), "application/fits")
    head = s3.client.head_object(Bucket=s3.bucket, Key="skyfleet/test/uploads/1/image.fits")
    assert head["Metadata"]["sha256"] == sha(data)
    assert head["ContentType"] == "application/fits"
    assert s3.stat("uploads/1/image.fits").sha256 == sha(data)
    assert s3.local_path("uploads/1/image.fits") is None


def test_s3_presigned_url_serves_the_bytes(s3: S3Storage):
    data = os.urandom(4096)
    s3.put("jobs/1/attempt-1/image.fits", Stream(data), "application/fits")
    response = requests.get(s3.download_url("jobs/1/attempt-1/image.fits", 60), timeout=10)
    assert response.status_code == 200 and response.content == data
    named = requests.get(s3.download_url("jobs/1/attempt-1/image.fits", 60, filename='m31 "é".fits'), timeout=10)
    assert named.content == data
    assert named.headers["Content-Disposition"] == \
        "attachment; filename=\"m31 ___.fits\"; filename*=UTF-8''m31%20%22%C3%A9%22.fits"


def test_s3_presigned_url_carries_its_expiry(s3: S3Storage):
    # moto serves expired URLs anyway, so check what S3 itself enforces: the signed expiry.
    query = parse_qs(urlparse(s3.download_url("jobs/1/a.txt", 300)).query)
    assert abs(int(query["Expires"][0]) - (time.time() + 300)) < 30


def _count_calls(client: Any, operation: str) -> list[str]:
    calls: list[str] = []
    client.meta.events.register(f"before-call.s3.{operation}", lambda **_: calls.append(operation))
    return calls


def test_s3_big_objects_stream_as_multipart_uploads(s3: S3Storage):
    data = os.urandom(9 * MiB)
    parts = _count_calls(s3.client, "UploadPart")
    stored = s3.put("jobs/1/attempt-1/big.fits", Stream(data), "application/fits")
    assert len(parts) == 2  # 8 MiB + 1 MiB
    assert (stored.size, stored.sha256) == (len(data), sha(data))
    assert s3.stat("jobs/1/attempt-1/big.fits").sha256 == sha(data)
    with s3.open("jobs/1/attempt-1/big.fits") as stream:
        assert hashlib.sha256(stream.read()).hexdigest() == sha(data)


def test_s3_too_large_multipart_upload_is_aborted(s3: S3Storage):
    started = _count_calls(s3.client, "CreateMultipartUpload")
    with pytest.raises(ObjectTooLarge):
        s3.put("uploads/1/big.fits", Stream(os.urandom(17 * MiB)), max_bytes=16 * MiB + 1)
    assert started  # the limit was hit mid-upload, not before it
    assert s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", []) == []
    assert keys(s3) == []


def test_s3_delete_prefix_works_in_batches(s3: S3Storage, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(storage.s3, "DELETE_BATCH", 2)
    batches = _count_calls(s3.client, "DeleteObjects")
    for i in range(5):
        s3.put(f"jobs/1/f{i}.txt", Stream(b"x"))
    s3.put("jobs/2/keep.txt", Stream(b"x"))
    assert s3.delete_prefix("jobs/1") == 5
    assert len(batches) == 3
    assert keys(s3) == ["jobs/2/keep.txt"]


def test_s3_list_follows_pagination(s3: S3Storage, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(storage.s3, "LIST_PAGE_SIZE", 2)
    pages = _count_calls(s3.client, "ListObjectsV2")
    for i in range(5):
        s3.put(f"many/{i}", Stream(b""))
    assert keys(s3, "many") == [f"many/{i}" for i in range(5)]
    assert len(pages) == 3


def test_s3_missing_bucket_is_a_storage_error(s3: S3Storage):
    missing = S3Storage("no-such-bucket-here", client=s3.client)
    with pytest.raises(StorageError):
        missing.put("a/b", Stream(b"x"))
    with pytest.raises(StorageError):
        list(missing.list("a"))


def test_open_storage_builds_an_s3_client_from_the_environment(s3: S3Storage):
    # The fixture has pointed AWS_ENDPOINT_URL and the credentials at moto; no client is passed here.
    from_env = open_storage("s3", bucket=s3.bucket)
    from_env.put("a/b.txt", Stream(b"hello"))
    body = s3.client.get_object(Bucket=s3.bucket, Key="a/b.txt")["Body"].read()
    assert body == b"hello"
