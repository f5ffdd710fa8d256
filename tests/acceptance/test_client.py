"""The Python client (``client/``, its own distribution) against a real fleet: the API under
gunicorn with 2-second access tokens, a real worker, embedded PostgreSQL."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import pytest
from astropy.io import fits
from skyfleet_client import Client, JobFailed, NotFound, ValidationFailed

from tests.acceptance.conftest import PASSWORD, Fleet
from tests.handlers.fitsfactory import gaussian_stars, make_wcs, write_image

ROOT = Path(__file__).resolve().parents[2]
STARS = [(40.3, 50.7), (120.5, 80.2), (160.1, 150.9)]


@pytest.fixture
def api_env() -> dict[str, str]:
    return {"SKYFLEET_ACCESS_TOKEN_TTL_S": "2"}


def admin(fleet: Fleet, **options: object) -> Client:
    return Client(fleet.url, email="admin@example.org", password=PASSWORD, **options)  # type: ignore[arg-type]


def test_the_token_is_renewed_across_its_expiry_and_rotation_is_kept(fleet: Fleet):
    saved: list[str] = []
    with admin(fleet, on_refresh=saved.append) as sky:
        assert sky.me()["email"] == "admin@example.org"
        time.sleep(2.5)  # the access token has expired
        assert sky.me()["roles"] == ["ADMIN"]
        time.sleep(2.5)
        assert sky.limits()["max_batch"] == 1000
    assert len(saved) == 3 and len(set(saved)) == 3  # the login, then two rotations
    # A saved login alone (the newest refresh token) signs in; the rotated-away ones do not.
    with Client(fleet.url, refresh_token=saved[-1]) as again:
        assert again.me()["email"] == "admin@example.org"


def test_detect_sources_wait_and_download_checked(fleet: Fleet, tmp_path: Path):
    fleet.start_worker()
    shape = (160, 200)
    image = write_image(tmp_path / "m13.fits", gaussian_stars(shape, STARS, 5000.0), make_wcs(shape))
    sent: list[tuple[int, int]] = []
    with admin(fleet) as sky:
        record = sky.files.upload(image, progress=lambda done, total: sent.append((done, total)))
        assert sent[-1] == (image.stat().st_size, image.stat().st_size)
        assert record["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
        job = sky.jobs.submit("sources.detect", {"file": {"file_id": record["id"]}, "bkg_box": 32})
        events = [name for name, _ in job.events()]
        assert events[0] == "snapshot" and events[-1] == "completed"
        job.wait(timeout=120)
        paths = job.download(tmp_path / "out")
        files = {f["name"]: f for f in job.result()["files"]}
        assert {p.name for p in paths} == {"catalogue.ecsv", "overlay.png"}
        for path in paths:
            assert hashlib.sha256(path.read_bytes()).hexdigest() == files[path.name]["sha256"]
        assert job.download_zip(tmp_path / "all.zip").stat().st_size > 0


def test_a_failed_job_raises_with_its_error(fleet: Fleet, tmp_path: Path):
    fleet.start_worker()
    table = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column("A", "E", array=[1.0])])]
                 ).writeto(table)
    with admin(fleet) as sky:
        record = sky.files.upload(table)
        job = sky.jobs.submit("sources.detect", {"file": {"file_id": record["id"]}})
        with pytest.raises(JobFailed) as failed:
            job.wait(timeout=120)
        assert failed.value.code == "PERMANENT_ERROR" and failed.value.job["status"] == "FAILED"


def test_errors_are_typed_and_name_the_field(fleet: Fleet):
    with admin(fleet) as sky:
        with pytest.raises(ValidationFailed) as bad:
            sky.jobs.submit("sleep", {"seconds": -1})
        assert "input_payload.seconds" in bad.value.fields
        with pytest.raises(NotFound):
            sky.jobs.get(10**12)
        assert {t["name"] for t in sky.job_types()} >= {"sources.detect", "sleep"}
        assert sky.job_type("sleep")["input_schema"]["properties"]["seconds"]["minimum"] == 0


def test_submit_many_in_batches_and_list_every_page(fleet: Fleet):
    with admin(fleet) as sky:
        jobs = list(sky.jobs.submit_many(({"type": "noop", "input": {"tag": str(i)}} for i in range(5000)),
                                         batch_size=None))
        assert len({j.id for j in jobs}) == 5000
        assert [j.data["input_payload"]["tag"] for j in jobs[:3]] == ["0", "1", "2"]
        assert sum(1 for _ in sky.jobs.list(type="noop", status="PENDING")) == 5000
        done = sky.jobs.bulk("cancel", type="noop", status="PENDING")
        assert len(done["done"]) == 1000 and done["more"] is True


def test_the_package_installs_alone_with_light_dependencies(tmp_path: Path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(ROOT / "client")]
    subprocess.run(pip, check=True, timeout=600)
    frozen = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "freeze"], check=True,
                            capture_output=True, text=True).stdout.lower()
    for heavy in ("flask", "sqlalchemy", "astropy", "numpy", "psycopg"):
        assert heavy not in frozen, frozen
    imported = subprocess.run([str(venv / "bin" / "python"), "-c",
                               "import skyfleet_client, sys; print(sorted(m for m in sys.modules if '.' not in m))"],
                              check=True, capture_output=True, text=True).stdout
    assert "skyfleet_client" in imported and "flask" not in imported


class TestRateLimited:
    """A 429 is sent again after its Retry-After, not raised (the API's windows are epoch minutes)."""

    @pytest.fixture
    def api_env(self) -> dict[str, str]:
        return {"SKYFLEET_RATE_LIMIT_PER_MINUTE": "3"}

    def test_a_429_is_retried_after_retry_after(self, fleet: Fleet):
        waits: list[float] = []

        def sleep(seconds: float) -> None:
            waits.append(seconds)
            time.sleep(seconds)

        with admin(fleet, sleep=sleep) as sky:
            kinds = []
            while not waits and len(kinds) < 10:  # a window holds three: a fourth call waits
                kinds.append(sky.job_type("noop")["name"])
        assert set(kinds) == {"noop"}  # every call answered, the one over the limit after its wait
        assert len(waits) == 1 and 0 < waits[0] <= 61, waits  # as long as Retry-After said


class TestEventsWithoutAStream:
    """When the API has no event stream to spare (503), ``job.events()`` polls instead."""

    @pytest.fixture
    def api_env(self) -> dict[str, str]:
        return {"SKYFLEET_MAX_EVENT_STREAMS": "1", "SKYFLEET_WEB_WORKERS": "1"}

    def test_events_fall_back_to_polling(self, fleet: Fleet):
        import httpx

        fleet.start_worker(SKYFLEET_WORKER_CONCURRENCY="2")
        with admin(fleet) as sky:
            long_job = sky.jobs.submit("sleep", {"seconds": 8, "tag": "holds the only stream"})
            short = sky.jobs.submit("sleep", {"seconds": 1, "tag": "followed by polling"})
            token = sky.session.access_token()
            with httpx.stream("GET", f"{fleet.url}/api/jobs/{long_job.id}/events", timeout=60,
                              headers={"Authorization": f"Bearer {token}"}) as held:
                assert held.status_code == 200
                next(held.iter_lines())  # the stream is open and counted
                events = [name for name, _ in short.events()]
            assert events[-1] == "completed" and short.status == "SUCCEEDED", events
            long_job.cancel()
