"""Every astronomy job type through the whole fleet: upload over HTTP, run on real workers, download.

API under gunicorn and two worker processes; inputs are synthetic FITS files with a real
celestial WCS, uploaded through ``POST /api/files``; outputs are fetched through the links
``GET /api/jobs/{id}/download`` hands out (local signed links, or presigned S3 URLs on moto).
"""

from __future__ import annotations

import io
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import numpy as np
import pytest
import requests
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from PIL import Image

from tests.acceptance.conftest import PASSWORD, Fleet
from tests.handlers.fitsfactory import gaussian_stars, make_wcs, write_image

SHAPE = (256, 256)
STARS = [(40.3, 50.7), (120.5, 80.2), (200.1, 190.9), (70.8, 210.4), (180.6, 40.5)]


def upload(fleet: Fleet, path: Path) -> int:
    with open(path, "rb") as f:
        response = requests.post(f"{fleet.url}/api/files", files={"file": (path.name, f)},
                                 headers=fleet.headers(), timeout=30)
    assert response.status_code == 201, response.text
    return int(response.json()["data"]["id"])


def run(fleet: Fleet, job_type: str, payload: dict[str, Any], timeout: float = 90) -> dict[str, Any]:
    """Submit a job and follow it to its end; the finished job."""
    job = fleet.submit(job_type, payload)
    deadline = time.monotonic() + timeout
    while (current := fleet.job(job["id"]))["status"] in ("PENDING", "IN_PROGRESS"):
        assert time.monotonic() < deadline, f"{job_type} job {job['id']} still {current['status']}"
        time.sleep(0.1)
    return current


def result(fleet: Fleet, job_id: int) -> dict[str, Any]:
    response = requests.get(f"{fleet.url}/api/jobs/{job_id}/result", headers=fleet.headers(), timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


def output_key(fleet: Fleet, job_id: int, name: str) -> str:
    """The storage key of a job's output ``name``, written by its first (and only) attempt."""
    (key,) = [f["key"] for f in result(fleet, job_id)["files"] if f["name"] == name]
    assert key.startswith(f"jobs/{job_id}/attempt-1-") and key.endswith(f"/{name}"), key
    return str(key)


def downloads(fleet: Fleet, job_id: int) -> dict[str, bytes]:
    """Every output of a job, fetched through its download links (no token)."""
    response = requests.get(f"{fleet.url}/api/jobs/{job_id}/download", headers=fleet.headers(), timeout=10)
    assert response.status_code == 200, response.text
    files = {}
    for entry in response.json()["data"]:
        got = requests.get(urljoin(fleet.url, entry["url"]), timeout=30)
        assert got.status_code == 200, (entry, got.text[:200])
        assert len(got.content) == entry["size"]
        files[entry["name"]] = got.content
    return files


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    """A star field, a second overlapping tile, a table and an EXTRACT1D spectrum."""
    wcs = make_wcs(SHAPE, scale_arcsec=1.0)
    stars = write_image(tmp_path / "stars.fits", gaussian_stars(SHAPE, STARS, 4000.0, fwhm_px=3.0), wcs)
    # Offset diagonally, so the mosaic's bounding box has blank corners outside both footprints.
    shifted = make_wcs(SHAPE, ra=wcs.wcs.crval[0] + 60 / 3600 / np.cos(np.radians(wcs.wcs.crval[1])),
                       dec=wcs.wcs.crval[1] + 60 / 3600, scale_arcsec=1.0)
    tile = write_image(tmp_path / "tile2.fits", gaussian_stars(SHAPE, STARS[:2], 4000.0, seed=2), shifted)
    table = Table({"id": np.arange(250), "name": [f"src-{i}" for i in range(250)], "flux": np.linspace(0, 1, 250)})
    table["flux"][3] = np.nan
    catalogue = tmp_path / "catalogue.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(table)]).writeto(catalogue)
    wave = np.linspace(1.0, 5.0, 5000)
    flux = 1 + 0.1 * np.sin(wave * 7)
    flux[2500] = 9.0  # an emission line the decimation must keep
    spectrum = Table({"WAVELENGTH": wave, "FLUX": flux, "FLUX_ERROR": np.full(5000, 0.01)})
    spectrum["WAVELENGTH"].unit, spectrum["FLUX"].unit = "um", "Jy"
    x1d = tmp_path / "x1d.fits"
    hdu = fits.table_to_hdu(spectrum)
    hdu.name = "EXTRACT1D"
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(x1d)
    return {"stars": stars, "tile2": tile, "table": catalogue, "x1d": x1d}


def test_every_job_type_end_to_end(fleet: Fleet, images: dict[str, Path]):
    fleet.start_worker()
    fleet.start_worker()
    ids = {name: upload(fleet, path) for name, path in images.items()}
    stars = {"file_id": ids["stars"]}

    inspect = run(fleet, "fits.inspect", {"file": stars})
    assert inspect["status"] == "SUCCEEDED", inspect
    hdus = result(fleet, inspect["id"])["result_payload"]["hdus"]
    assert hdus[1]["name"] == "SCI" and hdus[1]["shape"] == [256, 256]

    page = run(fleet, "table.page", {"file": {"file_id": ids["table"]}, "offset": 0, "limit": 5})
    assert page["status"] == "SUCCEEDED", page
    rows = result(fleet, page["id"])["result_payload"]["rows"]
    assert len(rows) == 5 and rows[1][1] == "src-1" and rows[3][2] is None  # bytes → str, NaN → null

    spectrum = run(fleet, "spectrum.extract", {"file": {"file_id": ids["x1d"]}, "max_points": 200})
    assert spectrum["status"] == "SUCCEEDED", spectrum
    spec = result(fleet, spectrum["id"])["result_payload"]
    assert len(spec["flux"]) <= 200 and max(spec["flux"]) == 9.0

    stats = run(fleet, "region.stats", {"file": stars, "region": {
        "shape": "circle", "center": {"x": 128, "y": 128}, "radius": 20}})
    assert stats["status"] == "SUCCEEDED", stats
    assert result(fleet, stats["id"])["result_payload"]["n_pixels"] > 1000

    detect = run(fleet, "sources.detect", {"file": stars, "bkg_box": 32})
    assert detect["status"] == "SUCCEEDED", detect
    found = result(fleet, detect["id"])
    assert found["result_payload"]["n_sources"] == len(STARS)
    outputs = downloads(fleet, detect["id"])
    assert {"catalogue.ecsv", "overlay.png"} <= set(outputs)
    catalogue = Table.read(io.BytesIO(outputs["catalogue.ecsv"]).read().decode(), format="ascii.ecsv")
    assert len(catalogue) == len(STARS)
    assert Image.open(io.BytesIO(outputs["overlay.png"])).format == "PNG"
    assert all(f["sha256"] and f["size"] > 0 for f in found["files"])

    composite = run(fleet, "image.composite", {"channels": [
        {"file": stars, "color": "red"}, {"file": {"file_id": ids["tile2"]}, "color": "cyan"}]})
    assert composite["status"] == "SUCCEEDED", composite
    picture = Image.open(io.BytesIO(next(iter(downloads(fleet, composite["id"]).values()))))
    assert picture.size == (256, 256) and picture.mode == "RGBA"

    mosaic = run(fleet, "image.mosaic", {"tiles": [{"file": stars}, {"file": {"file_id": ids["tile2"]}}]})
    assert mosaic["status"] == "SUCCEEDED", mosaic
    mosaic_files = downloads(fleet, mosaic["id"])
    with fits.open(io.BytesIO(mosaic_files["mosaic.fits"])) as hdul:
        data = hdul[0].data if hdul[0].data is not None else hdul[1].data
        assert data.dtype == np.dtype(">f4") and min(data.shape) > 256  # larger than one tile
        assert np.isnan(data).any()  # blank outside both footprints
        assert WCS(hdul[0].header if hdul[0].data is not None else hdul[1].header).has_celestial

    # Jobs chain: a job's output key is an input of the next (the mosaic's FITS inspected).
    chained = run(fleet, "fits.inspect", {"file": {"key": output_key(fleet, mosaic["id"], "mosaic.fits")}})
    assert chained["status"] == "SUCCEEDED", chained

    # Each type's result view in the console, from these real results.
    console = console_session(fleet)
    views = {inspect["id"]: ['id="hdus"', 'class="footprint"'], page["id"]: ['id="rows"', 'id="next-page"'],
             spectrum["id"]: ['id="spectrum"', 'class="band"'], stats["id"]: ['id="stats"', "median"],
             detect["id"]: ['id="overlay"', 'id="ecsv"'], composite["id"]: ['id="picture"'],
             mosaic["id"]: ['id="picture"', 'id="sky"', "tile 2"]}
    for job_id, markers in views.items():
        html = console.get(f"{fleet.url}/jobs/{job_id}", timeout=10).text
        assert all(m in html for m in markers), (job_id, [m for m in markers if m not in html])
    assert console.get(f"{fleet.url}/jobs/{detect['id']}", timeout=10).text.count('<tr data-x=') == len(STARS)


def console_session(fleet: Fleet) -> requests.Session:
    """A requests session signed in to the console as the fleet's admin."""
    session = requests.Session()
    nonce = re.search(r'name="nonce" value="([^"]+)"', session.get(f"{fleet.url}/login", timeout=10).text)
    assert nonce is not None
    answer = session.post(f"{fleet.url}/login", data={"email": "admin@example.org", "password": PASSWORD,
                                                     "nonce": nonce.group(1)}, allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    return session


def test_bad_inputs_fail_at_once_without_retries(fleet: Fleet, images: dict[str, Path]):
    fleet.start_worker(SKYFLEET_WORKER_MEMORY_MB="16")
    ids = {name: upload(fleet, path) for name, path in images.items()}
    detect_png = run(fleet, "sources.detect", {"file": {"file_id": ids["stars"]}, "bkg_box": 32})
    png_key = output_key(fleet, detect_png["id"], "overlay.png")

    cases = {
        "not a FITS file": ("fits.inspect", {"file": {"key": png_key}}),
        "no 2-D image": ("sources.detect", {"file": {"file_id": ids["table"]}}),
        "off the image": ("region.stats", {"file": {"file_id": ids["stars"]}, "region": {
            "shape": "circle", "center": {"x": 5000, "y": 5000}, "radius": 10}}),
        "budget": ("image.mosaic", {"tiles": [{"file": {"file_id": ids["stars"]}},
                                              {"file": {"file_id": ids["tile2"]}}], "max_pixels": 8192 * 8192,
                                    "resolution_arcsec": 0.01}),
    }
    for why, (job_type, payload) in cases.items():
        job = run(fleet, job_type, payload)
        assert job["status"] == "FAILED", (why, job)
        assert job["attempt"] == 1, (why, job)  # not retried
        assert job["error"]["code"] == "PERMANENT_ERROR" and job["error"]["message"], (why, job)

    # A URL to a forbidden address never reaches a worker: refused at submission, field named.
    response = requests.post(f"{fleet.url}/api/jobs", headers=fleet.headers(), timeout=10, json={
        "type": "fits.inspect", "input_payload": {"file": {"url": "http://169.254.169.254/latest/meta-data"}}})
    assert response.status_code == 422
    assert "input_payload.file.url" in response.json()["error"]["details"]["fields"]


class TestOnS3:
    @pytest.fixture
    def api_env(self, moto_s3: dict[str, str]) -> dict[str, str]:
        return {"SKYFLEET_STORAGE_BACKEND": "s3", "SKYFLEET_S3_BUCKET": moto_s3["bucket"]}

    def test_inputs_and_outputs_live_in_s3(self, fleet: Fleet, images: dict[str, Path], moto_s3: dict[str, str]):
        fleet.start_worker(SKYFLEET_STORAGE_BACKEND="s3", SKYFLEET_S3_BUCKET=moto_s3["bucket"])
        file_id = upload(fleet, images["stars"])
        job = run(fleet, "sources.detect", {"file": {"file_id": file_id}, "bkg_box": 32})
        assert job["status"] == "SUCCEEDED", job
        outputs = downloads(fleet, job["id"])  # presigned URLs on the moto server
        assert Table.read(outputs["catalogue.ecsv"].decode(), format="ascii.ecsv") is not None
        import boto3
        keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=moto_s3["bucket"])["Contents"]}
        assert output_key(fleet, job["id"], "catalogue.ecsv") in keys
