"""sources.detect: known stars recovered in pixels and on the sky, files that read back, the M13 image."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from marshmallow import ValidationError
from PIL import Image

from jobtypes.photometry import SOURCES_DETECT
from tests.handlers.fitsfactory import gaussian_stars, make_wcs, write_image
from worker.jobs.context import JobContext
from worker.jobs.detect import detect_sources
from worker.jobs.errors import PermanentError
from worker.jobs.overlay import CIRCLE_COLOUR

SHAPE = (512, 512)
REF = {"key": "field.fits"}
N_STARS = 20
WCS_ROTATION_DEG = 25.0  # so RA/Dec depend on both pixel axes


def load(payload: dict[str, Any]) -> dict[str, Any]:
    return SOURCES_DETECT.input_schema().load(payload)


def star_positions() -> np.ndarray:
    """20 stars on a jittered 5×4 grid (≥ 80 px apart), at random sub-pixel positions."""
    rng = np.random.default_rng(42)
    gx, gy = np.meshgrid(np.arange(5), np.arange(4))
    x = 50 + 100 * gx.ravel() + rng.uniform(-10, 10, N_STARS) + rng.uniform(0, 1, N_STARS)
    y = 60 + 125 * gy.ravel() + rng.uniform(-10, 10, N_STARS) + rng.uniform(0, 1, N_STARS)
    return np.column_stack([x, y])


#: Geometric steps of 15 %, shuffled, so the flux order is unambiguous and unrelated to position.
FLUXES = np.random.default_rng(5).permutation(3000.0 * 1.15 ** np.arange(N_STARS))


@pytest.fixture(scope="module")
def field(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = gaussian_stars(SHAPE, [tuple(p) for p in star_positions()], FLUXES.tolist(), fwhm_px=3.0, sky=100.0, noise=2.0)
    path = tmp_path_factory.mktemp("field") / "field.fits"
    return write_image(path, data, make_wcs(SHAPE, rotation_deg=WCS_ROTATION_DEG), bunit="MJy/sr")


def run(tmp_path: Path, path: Path, **payload: Any) -> tuple[dict[str, Any], JobContext]:
    out = tmp_path / "out"
    out.mkdir(parents=True, exist_ok=True)
    progress: list[dict[str, Any]] = []
    ctx = JobContext(job_id=1, attempt=1, inputs={"key:field.fits": path}, output_dir=out,
                     progress_sink=progress.append)
    ctx.progress_log = progress  # type: ignore[attr-defined]
    result = detect_sources(load({"file": REF, **payload}), ctx)
    json.dumps(result, allow_nan=False)
    return result, ctx


@pytest.fixture(scope="module", params=["daofind", "segmentation"])
def detected(request: pytest.FixtureRequest, field: Path, tmp_path_factory: pytest.TempPathFactory):
    """One run per method on the star field, shared by the tests below."""
    return (request.param, *run(tmp_path_factory.mktemp(request.param), field, method=request.param))


def match(result: dict[str, Any]) -> np.ndarray:
    """For each true star, the distance (px) to the nearest detection and that detection's index."""
    found = np.array([[s["x"], s["y"]] for s in result["sources"]])
    truth = star_positions()
    distances = np.hypot(found[None, :, 0] - truth[:, None, 0], found[None, :, 1] - truth[:, None, 1])
    return np.column_stack([distances.min(axis=1), distances.argmin(axis=1)])


def test_every_star_is_recovered_within_half_a_pixel_and_nothing_else(detected):
    method, result, _ = detected
    assert result["method"] == method
    assert result["n_sources"] == N_STARS and result["truncated"] is False  # no spurious detections
    matched = match(result)
    assert matched[:, 0].max() < 0.5, matched[:, 0]
    assert len(set(matched[:, 1].astype(int))) == N_STARS  # one detection per star
    assert result["background_median"] == pytest.approx(100.0, abs=0.2)
    assert result["background_rms"] == pytest.approx(2.0, rel=0.05)
    assert result["unit"] == "MJy/sr" and result["has_wcs"] is True


def test_sky_positions_agree_with_the_wcs_within_a_tenth_of_an_arcsecond(detected):
    _, result, _ = detected
    wcs = make_wcs(SHAPE, rotation_deg=WCS_ROTATION_DEG)
    truth = star_positions()
    true_sky = wcs.pixel_to_world(truth[:, 0], truth[:, 1])
    index = match(result)[:, 1].astype(int)
    sources = [result["sources"][i] for i in index]
    found = SkyCoord([s["ra"] for s in sources] * u.deg, [s["dec"] for s in sources] * u.deg, frame="icrs")
    separations = found.separation(true_sky).arcsec
    assert separations.max() < 0.1, separations


def test_rows_are_sorted_by_flux_brightest_first(detected):
    _, result, _ = detected
    fluxes = [s["flux"] for s in result["sources"]]
    assert fluxes == sorted(fluxes, reverse=True)
    assert [s["id"] for s in result["sources"]] == list(range(1, N_STARS + 1))
    # The brightest detection is the brightest star, the faintest the faintest.
    truth = star_positions()
    first, last = result["sources"][0], result["sources"][-1]
    assert np.hypot(first["x"] - truth[FLUXES.argmax(), 0], first["y"] - truth[FLUXES.argmax(), 1]) < 0.5
    assert np.hypot(last["x"] - truth[FLUXES.argmin(), 0], last["y"] - truth[FLUXES.argmin(), 1]) < 0.5
    assert all(s["peak"] > 0 for s in result["sources"])


def test_catalogue_ecsv_reads_back_with_units(detected):
    _, result, ctx = detected
    outputs = {o.name: o for o in ctx.outputs}
    assert set(outputs) == {"catalogue.ecsv", "overlay.png"}
    table = Table.read(outputs["catalogue.ecsv"].path, format="ascii.ecsv")
    assert len(table) == N_STARS
    assert table["x"].unit == u.pix and table["ra"].unit == u.deg and table["dec"].unit == u.deg
    assert table["flux"].unit == u.Unit("MJy/sr")
    assert np.allclose(table["ra"], [s["ra"] for s in result["sources"]], rtol=0, atol=1e-10)
    assert np.allclose(table["flux"], [s["flux"] for s in result["sources"]])
    assert table.meta["method"] == result["method"]


def test_overlay_png_has_the_image_size_and_circles_at_the_flipped_positions(detected):
    _, _, ctx = detected
    path = next(o.path for o in ctx.outputs if o.name == "overlay.png")
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (SHAPE[1], SHAPE[0])
        pixels = np.asarray(png.convert("RGB"))
    green_y, green_x = np.nonzero(np.all(pixels == CIRCLE_COLOUR, axis=-1))
    assert green_x.size > 20 * N_STARS
    # Every circle pixel is near a star drawn FITS-style (row 0 at the bottom).
    truth = star_positions()
    png_x, png_y = truth[:, 0] + 0.5, SHAPE[0] - 0.5 - truth[:, 1]
    nearest = np.hypot(green_x[:, None] - png_x[None, :], green_y[:, None] - png_y[None, :]).min(axis=1)
    assert nearest.max() < 8.0
    # ... and the stars of the image itself are there too, bright inside their circles.
    rows, cols = np.round(png_y - 0.5).astype(int), np.round(png_x - 0.5).astype(int)
    assert pixels[rows, cols].min() > 200
    assert np.median(pixels[SHAPE[0] - 1 - rows, cols]) < 200  # unflipped, mostly empty sky


def test_progress_stages(detected):
    _, _, ctx = detected
    stages = [p["stage"] for p in ctx.progress_log]  # type: ignore[attr-defined]
    assert stages == ["reading", "background", "detecting", "catalogue", "done"]


def test_max_sources_keeps_the_brightest(field, tmp_path):
    full, _ = run(tmp_path / "full", field)
    capped, ctx = run(tmp_path / "capped", field, max_sources=5)
    assert capped["n_sources"] == N_STARS and capped["truncated"] is True
    assert capped["sources"] == full["sources"][:5]
    table = Table.read(next(o.path for o in ctx.outputs if o.name == "catalogue.ecsv"), format="ascii.ecsv")
    assert len(table) == 5


def test_the_threshold_separates_faint_from_bright_stars(tmp_path):
    # Peaks of about 25σ and 500σ over noise σ = 2 (a 3 px FWHM star peaks at flux / 10.2; the
    # smoothed image segmentation thresholds peaks at half that).
    positions, fluxes = [(120.4, 130.6), (380.2, 390.7)], [500.0, 10000.0]
    path = write_image(tmp_path / "two.fits", gaussian_stars(SHAPE, positions, fluxes))
    for method in ("daofind", "segmentation"):
        low, _ = run(tmp_path / method / "low", path, method=method, n_pixels=5)
        high, _ = run(tmp_path / method / "high", path, method=method, n_pixels=5, threshold_sigma=50.0)
        assert low["n_sources"] == 2, method
        assert high["n_sources"] == 1 and high["sources"][0]["x"] == pytest.approx(380.2, abs=0.5), method


def test_nan_pixels_are_masked_and_no_wcs_gives_null_sky_positions(tmp_path):
    positions = [(100.3, 100.6), (400.2, 400.9), (300.5, 120.1)]
    data = gaussian_stars(SHAPE, positions, 8000.0)
    data[250:350, :] = np.nan  # a blank stripe, as in a mosaic
    path = write_image(tmp_path / "nowcs.fits", data, wcs=None, bunit=None)
    for method in ("daofind", "segmentation"):
        result, ctx = run(tmp_path / method, path, method=method)
        assert result["n_sources"] == 3 and result["has_wcs"] is False
        assert all(s["ra"] is None and s["dec"] is None for s in result["sources"])
        assert all(not 250 <= s["y"] < 350 for s in result["sources"])
        table = Table.read(next(o.path for o in ctx.outputs if o.name == "catalogue.ecsv"), format="ascii.ecsv")
        assert "ra" not in table.colnames and len(table) == 3


def test_deblending_splits_a_close_pair(tmp_path):
    positions = [(200.0, 200.0), (208.0, 201.0), (400.0, 100.0)]  # the pair's segments touch
    path = write_image(tmp_path / "pair.fits", gaussian_stars(SHAPE, positions, [20000.0, 15000.0, 10000.0]))
    blended, _ = run(tmp_path / "blended", path, method="segmentation")
    deblended, _ = run(tmp_path / "deblended", path, method="segmentation", deblend=True)
    assert blended["n_sources"] == 2
    assert deblended["n_sources"] == 3


def test_an_empty_field_gives_an_empty_catalogue(tmp_path):
    path = write_image(tmp_path / "sky.fits", gaussian_stars(SHAPE, [], 0.0), make_wcs(SHAPE))
    for method in ("daofind", "segmentation"):
        result, ctx = run(tmp_path / method, path, method=method)
        assert result["n_sources"] == 0 and result["sources"] == []
        assert len(Table.read(next(o.path for o in ctx.outputs if o.name == "catalogue.ecsv"))) == 0


def test_a_large_image_gets_a_reduced_overlay(tmp_path):
    data = gaussian_stars((64, 4200), [(1000.2, 30.3), (3000.7, 20.1)], 8000.0)
    path = write_image(tmp_path / "strip.fits", data, make_wcs((64, 4200)))
    result, ctx = run(tmp_path, path, bkg_box=32)
    found = {(round(s["x"]), round(s["y"])) for s in result["sources"]}
    assert {(1000, 30), (3001, 20)} <= found
    with Image.open(next(o.path for o in ctx.outputs if o.name == "overlay.png")) as png:
        assert png.size == (1400, 22)  # reduced 3× to fit 2048 px
    assert result["outputs"]["overlay_size"] == [1400, 22]


def test_bad_inputs_are_permanent_errors(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("SIMPLE? no")
    with pytest.raises(PermanentError, match="not a FITS"):
        run(tmp_path / "a", text)
    table = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column(name="a", format="E", array=np.arange(3.0))])]).writeto(table)
    with pytest.raises(PermanentError, match="no 2-D image"):
        run(tmp_path / "b", table)
    small = write_image(tmp_path / "small.fits", gaussian_stars((50, 300), [], 0.0))
    with pytest.raises(PermanentError, match="smaller than the background box"):
        run(tmp_path / "c", small)
    blank = write_image(tmp_path / "blank.fits", np.full((100, 100), np.nan))
    with pytest.raises(PermanentError, match="no finite pixels"):
        run(tmp_path / "d", blank, bkg_box=32)
    with pytest.raises(PermanentError, match="HDU 5"):
        run(tmp_path / "e", small, hdu=5)


def test_an_image_over_the_memory_budget_is_refused(field, tmp_path):
    ctx = JobContext(job_id=1, attempt=1, inputs={"key:field.fits": field}, output_dir=tmp_path,
                     memory_budget_bytes=SHAPE[0] * SHAPE[1] * 10)
    with pytest.raises(PermanentError, match="budget"):
        detect_sources(load({"file": REF}), ctx)


def test_the_m13_image_shipped_with_astropy(tmp_path):
    """A real DSS image of M13 (300×300, 1″ pixels, TAN WCS at 250.4226°, +36.4602°, int16)."""
    try:
        from astropy.utils.data import get_pkg_data_filename

        path = Path(get_pkg_data_filename("data/m13.fits", package="astropy.io.fits.hdu.compressed.tests"))
    except Exception as exc:  # noqa: BLE001 - any failure to find test data means "not shipped"
        pytest.skip(f"astropy's m13.fits is not available: {exc}")
    if not path.is_file():
        pytest.skip("astropy's m13.fits is not available")
    m13 = SkyCoord(250.42 * u.deg, 36.46 * u.deg)
    for method in ("daofind", "segmentation"):
        result, _ = run(tmp_path / method, path, method=method)
        assert 100 <= result["n_sources"] <= 1000, result["n_sources"]  # a rich star field, not noise
        assert result["has_wcs"] is True
        sky = SkyCoord([s["ra"] for s in result["sources"]] * u.deg, [s["dec"] for s in result["sources"]] * u.deg)
        # The whole 5′ image lies within 0.06° of the cluster centre.
        assert sky.separation(m13).deg.max() < 0.06
        # The image is centred on the cluster, whose stars crowd towards the middle.
        mean = SkyCoord(np.mean(sky.ra), np.mean(sky.dec))
        assert mean.separation(m13).arcmin < 0.5


# --- schema -----------------------------------------------------------------------------------


def test_schema_defaults():
    loaded = load({"file": REF})
    assert loaded == {"file": REF, "hdu": None, "method": "daofind", "threshold_sigma": 5.0, "fwhm_px": 3.0,
                      "n_pixels": 10, "deblend": False, "bkg_box": 64, "max_sources": 5000}
    assert load(loaded) == loaded


@pytest.mark.parametrize("field_name, low, high, bad_low, bad_high", [
    ("threshold_sigma", 1.0, 50.0, 0.99, 50.1),
    ("fwhm_px", 0.5, 20.0, 0.49, 20.1),
    ("n_pixels", 1, 1000, 0, 1001),
    ("bkg_box", 16, 512, 15, 513),
    ("max_sources", 1, 100_000, 0, 100_001),
])
def test_schema_bounds(field_name, low, high, bad_low, bad_high):
    assert load({"file": REF, field_name: low})[field_name] == low
    assert load({"file": REF, field_name: high})[field_name] == high
    for bad in (bad_low, bad_high):
        with pytest.raises(ValidationError) as info:
            load({"file": REF, field_name: bad})
        assert field_name in info.value.messages


@pytest.mark.parametrize("payload, field_name", [
    ({"method": "sextractor"}, "method"),
    ({"n_pixels": 10.5}, "n_pixels"),
    ({"bkg_box": "64"}, "bkg_box"),
    ({"deblend": True}, "deblend"),  # daofind does not deblend
    ({"threshold": 5}, "threshold"),
    ({"hdu": -1}, "hdu"),
])
def test_schema_refuses(payload, field_name):
    with pytest.raises(ValidationError) as info:
        load({"file": REF, **payload})
    assert field_name in info.value.messages
    assert load({"file": REF, "method": "segmentation", "deblend": True})["deblend"] is True


def test_schema_requires_a_file():
    with pytest.raises(ValidationError) as info:
        load({"method": "daofind"})
    assert "file" in info.value.messages
