"""region.stats: statistics equal numpy's on an independently built pixel mask; schema bounds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import mad_std, sigma_clipped_stats
from marshmallow import ValidationError

from jobtypes.photometry import REGION_STATS
from tests.handlers.fitsfactory import gaussian_stars, make_wcs, write_image
from worker.jobs.errors import PermanentError
from worker.jobs.regionstats import region_stats

SHAPE = (512, 512)
REF = {"key": "img.fits"}
YY, XX = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]


def load(payload: dict[str, Any]) -> dict[str, Any]:
    return REGION_STATS.input_schema().load(payload)


def image_data() -> np.ndarray:
    return gaussian_stars(SHAPE, [(100.3, 200.7), (300.6, 310.2), (5.0, 500.0)], [5000.0, 20000.0, 8000.0])


@pytest.fixture
def image(tmp_path: Path) -> tuple[Path, np.ndarray]:
    data = image_data().astype(np.float32).astype(np.float64)  # what the file holds
    return write_image(tmp_path / "img.fits", data, make_wcs(SHAPE)), data


def run(make_context, path: Path, region: dict[str, Any], **extra: Any) -> dict[str, Any]:
    ctx = make_context((REF, path))
    result = region_stats(load({"file": REF, "region": region, **extra}), ctx)
    json.dumps(result, allow_nan=False)
    return result


def assert_matches_numpy(result: dict[str, Any], data: np.ndarray, mask: np.ndarray) -> None:
    values = data[mask]
    finite = values[np.isfinite(values)]
    assert result["n_pixels"] == values.size
    assert result["n_nan"] == values.size - finite.size
    assert result["n_valid"] == finite.size
    expected = {"mean": np.mean(finite), "median": np.median(finite), "std": np.std(finite),
                "mad_std": mad_std(finite), "min": np.min(finite), "max": np.max(finite), "sum": np.sum(finite)}
    for name, value in expected.items():
        assert result[name] == pytest.approx(float(value), rel=1e-9, abs=1e-9), name


def rotated(cx: float, cy: float, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in the frame of a shape rotated counter-clockwise by angle_deg."""
    t = np.radians(angle_deg)
    dx, dy = XX - cx, YY - cy
    return dx * np.cos(t) + dy * np.sin(t), -dx * np.sin(t) + dy * np.cos(t)


def in_polygon(xs: list[float], ys: list[float]) -> np.ndarray:
    """Even-odd ray casting at every pixel centre (independent of regions)."""
    inside = np.zeros(SHAPE, bool)
    n = len(xs)
    for i in range(n):
        x1, y1, x2, y2 = xs[i], ys[i], xs[(i + 1) % n], ys[(i + 1) % n]
        crosses = (y1 > YY) != (y2 > YY)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x1 + (YY - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (XX < x_at)
    return inside


def test_circle_equals_numpy_on_the_same_pixels(make_context, image):
    path, data = image
    ctx = make_context((REF, path))
    region = {"shape": "circle", "center": {"x": 100.3, "y": 200.7}, "radius": 20.4}
    result = region_stats(load({"file": REF, "region": region}), ctx)
    json.dumps(result, allow_nan=False)
    mask = (XX - 100.3) ** 2 + (YY - 200.7) ** 2 <= 20.4**2
    assert_matches_numpy(result, data, mask)
    assert result["unit"] == "MJy/sr"
    assert result["pixel_rule"] == "center"
    assert result["bbox"] == {"x_min": 80, "x_max": 121, "y_min": 180, "y_max": 221}
    assert result["clipped_to_image"] is False
    assert result["clipped_mean"] is None and result["sigma_clip"] is None
    stages = [p["stage"] for p in ctx.progress_log]  # type: ignore[attr-defined]
    assert stages == ["reading", "measuring", "done"]


def test_rotated_rectangle_and_ellipse_equal_numpy(make_context, image):
    path, data = image
    u, v = rotated(300.6, 310.2, 35.0)
    result = run(make_context, path, {"shape": "rectangle", "center": {"x": 300.6, "y": 310.2}, "width": 41.3,
                                      "height": 17.7, "angle_deg": 35.0})
    assert_matches_numpy(result, data, (np.abs(u) <= 41.3 / 2) & (np.abs(v) <= 17.7 / 2))
    result = run(make_context, path, {"shape": "ellipse", "center": {"x": 300.6, "y": 310.2}, "semi_major": 30.2,
                                      "semi_minor": 12.1, "angle_deg": 35.0})
    assert_matches_numpy(result, data, (u / 30.2) ** 2 + (v / 12.1) ** 2 <= 1.0)
    assert result["pixel_region"]["semi_major"] == pytest.approx(30.2)


def test_concave_polygon_equals_numpy(make_context, image):
    path, data = image
    xs = [250.2, 350.7, 350.3, 300.1, 300.4, 250.6]  # an L shape, so the notch must stay out
    ys = [250.3, 250.8, 290.2, 290.6, 370.1, 370.4]
    result = run(make_context, path, {"shape": "polygon", "vertices": [{"x": x, "y": y} for x, y in
                                                                        zip(xs, ys, strict=True)]})
    mask = in_polygon(xs, ys)
    assert 7800 < mask.sum() < 8200 and mask[270, 330] and not mask[330, 330]  # 100×40 + 50×80, notch out
    assert_matches_numpy(result, data, mask)


def test_icrs_regions_equal_the_pixel_regions_after_conversion(make_context, image):
    path, _ = image
    wcs = make_wcs(SHAPE)

    def sky(x: float, y: float) -> dict[str, float]:
        c = wcs.pixel_to_world(x, y)
        return {"ra": float(c.ra.deg), "dec": float(c.dec.deg)}

    pairs = [
        ({"shape": "circle", "center": {"x": 300.6, "y": 310.2}, "radius": 24.6},
         {"shape": "circle", "center": sky(300.6, 310.2), "radius": 12.3}),  # 0.5″ pixels
        ({"shape": "rectangle", "center": {"x": 100.3, "y": 200.7}, "width": 40.6, "height": 21.2, "angle_deg": 30},
         {"shape": "rectangle", "center": sky(100.3, 200.7), "width": 20.3, "height": 10.6, "angle_deg": 30}),
        ({"shape": "polygon", "vertices": [{"x": 10.2, "y": 20.3}, {"x": 90.7, "y": 30.1}, {"x": 50.4, "y": 99.8}]},
         {"shape": "polygon", "vertices": [sky(10.2, 20.3), sky(90.7, 30.1), sky(50.4, 99.8)]}),
    ]
    for pixel, icrs in pairs:
        expected = run(make_context, path, pixel)
        got = run(make_context, path, {**icrs, "frame": "icrs"})
        for name in ("n_pixels", "mean", "median", "std", "sum", "bbox"):
            assert got[name] == expected[name], (pixel["shape"], name)
        assert got["frame"] == "icrs"


def test_nan_pixels_are_counted_and_excluded(make_context, tmp_path):
    data = image_data().astype(np.float32).astype(np.float64)
    data[195:205, 95:103] = np.nan
    data[200, 110] = np.inf
    path = write_image(tmp_path / "img.fits", data, make_wcs(SHAPE))
    result = run(make_context, path, {"shape": "circle", "center": {"x": 100.3, "y": 200.7}, "radius": 15.2},
                 sigma_clip=True)
    mask = (XX - 100.3) ** 2 + (YY - 200.7) ** 2 <= 15.2**2
    assert result["n_nan"] == int((~np.isfinite(data[mask])).sum()) == 81
    assert_matches_numpy(result, data, mask)
    finite = data[mask][np.isfinite(data[mask])]
    mean, median, std = sigma_clipped_stats(finite, sigma=3.0, maxiters=5)
    assert (result["clipped_mean"], result["clipped_median"], result["clipped_std"]) == pytest.approx(
        (mean, median, std), rel=1e-12)


def test_all_nan_region_gives_nulls_not_nan(make_context, tmp_path):
    data = image_data()
    data[:50, :50] = np.nan
    path = write_image(tmp_path / "img.fits", data, make_wcs(SHAPE))
    result = run(make_context, path, {"shape": "circle", "center": {"x": 20, "y": 20}, "radius": 10},
                 sigma_clip=True)
    assert result["n_valid"] == 0 and result["n_nan"] == result["n_pixels"] > 0
    assert result["mean"] is None and result["clipped_median"] is None


def test_sigma_clipped_values_match_astropy(make_context, image):
    path, data = image
    result = run(make_context, path, {"shape": "circle", "center": {"x": 100.3, "y": 200.7}, "radius": 25.5},
                 sigma_clip={"sigma": 2.5, "maxiters": 3})
    values = data[(XX - 100.3) ** 2 + (YY - 200.7) ** 2 <= 25.5**2]
    mean, median, std = sigma_clipped_stats(values, sigma=2.5, maxiters=3)
    assert result["sigma_clip"] == {"sigma": 2.5, "maxiters": 3}
    assert (result["clipped_mean"], result["clipped_median"], result["clipped_std"]) == pytest.approx(
        (mean, median, std), rel=1e-12)
    assert result["clipped_std"] < result["std"] / 5  # the star is clipped away


def test_big_endian_scaled_integers_give_the_same_stats_as_native_floats(make_context, tmp_path):
    # Values exactly representable as int16 × 0.5 + 1000, so the scaled file holds the same numbers.
    ints = np.random.default_rng(7).integers(-3000, 3000, SHAPE)
    data = ints * 0.5 + 1000.0
    scaled = write_image(tmp_path / "scaled.fits", data, make_wcs(SHAPE), big_endian=True, bscale=0.5, bzero=1000.0)
    native = write_image(tmp_path / "native.fits", data, make_wcs(SHAPE), big_endian=False)
    with fits.open(scaled) as hdul:
        assert hdul[1].header["BITPIX"] == 16 and hdul[1].header["BSCALE"] == 0.5
    region = {"shape": "ellipse", "center": {"x": 256.2, "y": 240.9}, "semi_major": 80.5, "semi_minor": 40.2,
              "angle_deg": -20.0}
    ctx = make_context(({"key": "scaled"}, scaled), ({"key": "native"}, native))
    a = region_stats(load({"file": {"key": "scaled"}, "region": region, "sigma_clip": True}), ctx)
    b = region_stats(load({"file": {"key": "native"}, "region": region, "sigma_clip": True}), ctx)
    assert a == b
    assert a["mean"] == pytest.approx(float(np.mean(data[((rotated(256.2, 240.9, -20.0)[0] / 80.5) ** 2 + (
        rotated(256.2, 240.9, -20.0)[1] / 40.2) ** 2) <= 1])), rel=1e-12)


def test_partly_off_the_image_measures_the_overlap(make_context, image):
    path, data = image
    result = run(make_context, path, {"shape": "circle", "center": {"x": 5.3, "y": 500.2}, "radius": 30.1})
    mask = (XX - 5.3) ** 2 + (YY - 500.2) ** 2 <= 30.1**2
    assert_matches_numpy(result, data, mask)
    assert result["clipped_to_image"] is True
    assert result["bbox_on_image"] == {"x_min": 0, "x_max": 35, "y_min": 471, "y_max": 511}
    assert result["bbox"]["x_min"] < 0 and result["bbox"]["y_max"] > 511


@pytest.mark.parametrize("region, message", [
    ({"shape": "circle", "center": {"x": 600.0, "y": 100.0}, "radius": 50.0}, "entirely off"),
    ({"shape": "rectangle", "center": {"x": -100.0, "y": -100.0}, "width": 50.0, "height": 20.0}, "entirely off"),
    # The bounding box touches the image but no pixel centre of the disc is on it.
    ({"shape": "circle", "center": {"x": -1.0, "y": -1.0}, "radius": 1.2}, "entirely off"),
    ({"shape": "circle", "center": {"x": 10.5, "y": 10.5}, "radius": 0.3}, "no pixel centre"),
    ({"shape": "circle", "frame": "icrs", "center": {"ra": 10.0, "dec": -40.0}, "radius": 5.0}, "outside|off"),
])
def test_regions_off_the_image_are_permanent_errors(make_context, image, region, message):
    path, _ = image
    with pytest.raises(PermanentError, match=message):
        run(make_context, path, region)


def test_sky_region_without_wcs_is_a_permanent_error(make_context, tmp_path):
    path = write_image(tmp_path / "img.fits", image_data(), wcs=None)
    with pytest.raises(PermanentError, match="no celestial WCS"):
        run(make_context, path, {"shape": "circle", "frame": "icrs", "center": {"ra": 250.4, "dec": 36.4},
                                 "radius": 5.0})
    assert run(make_context, path, {"shape": "circle", "center": {"x": 50, "y": 50}, "radius": 5})["n_pixels"] > 0


def test_bad_files_are_permanent_errors(make_context, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a FITS file")
    table = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column(name="a", format="E", array=np.arange(3.0))])]).writeto(table)
    region = {"shape": "circle", "center": {"x": 1, "y": 1}, "radius": 2}
    with pytest.raises(PermanentError, match="not a FITS"):
        run(make_context, text, region)
    with pytest.raises(PermanentError, match="no 2-D image"):
        run(make_context, table, region)
    big = write_image(tmp_path / "img.fits", image_data())
    with pytest.raises(PermanentError, match="budget"):
        region_stats(load({"file": REF, "region": region}), make_context((REF, big), memory_budget_bytes=2**20))


# --- schema -----------------------------------------------------------------------------------

CIRCLE = {"shape": "circle", "center": {"x": 1.0, "y": 2.0}, "radius": 3.0}


def errors(payload: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(ValidationError) as info:
        load(payload)
    return info.value.messages  # type: ignore[return-value]


def test_schema_defaults_and_idempotent_load():
    loaded = load({"file": REF, "region": CIRCLE})
    assert loaded["hdu"] is None and loaded["sigma_clip"] is None
    assert loaded["region"]["frame"] == "pixel" and loaded["region"]["angle_deg"] == 0.0
    assert load({"file": REF, "region": CIRCLE, "sigma_clip": True})["sigma_clip"] == {"sigma": 3.0, "maxiters": 5}
    assert load({"file": REF, "region": CIRCLE, "sigma_clip": False})["sigma_clip"] is None
    assert load({"file": REF, "region": CIRCLE, "sigma_clip": {"sigma": 2}})["sigma_clip"] == {"sigma": 2.0,
                                                                                              "maxiters": 5}
    again = load({"file": REF, "region": CIRCLE, "sigma_clip": True})
    assert load(again) == again


@pytest.mark.parametrize("clip", [{"sigma": 0.9}, {"sigma": 10.1}, {"maxiters": 0}, {"maxiters": 21},
                                  {"maxiters": 2.5}, {"sigmas": 3}, "yes", 3])
def test_schema_refuses_bad_sigma_clip(clip):
    assert "sigma_clip" in errors({"file": REF, "region": CIRCLE, "sigma_clip": clip})


def test_schema_accepts_the_sigma_clip_bounds():
    for clip in ({"sigma": 1, "maxiters": 1}, {"sigma": 10, "maxiters": 20}):
        assert load({"file": REF, "region": CIRCLE, "sigma_clip": clip})["sigma_clip"] == clip


@pytest.mark.parametrize("region, field", [
    ({"shape": "circle", "center": {"x": 1, "y": 2}}, "radius"),
    ({"shape": "circle", "radius": 3}, "center"),
    ({"shape": "rectangle", "center": {"x": 1, "y": 2}, "width": 3}, "height"),
    ({"shape": "ellipse", "center": {"x": 1, "y": 2}, "semi_major": 3}, "semi_minor"),
    ({"shape": "polygon"}, "vertices"),
    ({**CIRCLE, "width": 3}, "width"),  # a rectangle's field on a circle
    ({**CIRCLE, "angle_deg": 10}, "angle_deg"),
    ({"shape": "ellipse", "center": {"x": 1, "y": 2}, "semi_major": 3, "semi_minor": 4}, "semi_minor"),
    ({**CIRCLE, "radius": 0}, "radius"),
    ({**CIRCLE, "radius": -1}, "radius"),
    ({**CIRCLE, "radius": 2e6}, "radius"),
    ({**CIRCLE, "center": {"x": 1}}, "center"),
    ({**CIRCLE, "frame": "icrs"}, "center"),  # icrs wants ra/dec
    ({**CIRCLE, "center": {"ra": 10, "dec": 20}}, "center"),  # pixel wants x/y
    ({**CIRCLE, "frame": "icrs", "center": {"ra": 400, "dec": 20}}, "center"),
    ({**CIRCLE, "frame": "galactic"}, "frame"),
    ({**CIRCLE, "shape": "annulus"}, "shape"),
    ({**CIRCLE, "colour": "red"}, "colour"),
    ({**CIRCLE, "center": {"x": float("nan"), "y": 1}}, "center"),
])
def test_schema_names_the_bad_region_field(region, field):
    assert field in errors({"file": REF, "region": region})["region"]


def test_polygon_needs_3_to_100_vertices():
    def polygon(n: int) -> dict[str, Any]:
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        return {"shape": "polygon", "vertices": [{"x": 50 + 10 * np.cos(a), "y": 50 + 10 * np.sin(a)} for a in t]}

    assert len(load({"file": REF, "region": polygon(3)})["region"]["vertices"]) == 3
    assert len(load({"file": REF, "region": polygon(100)})["region"]["vertices"]) == 100
    assert "vertices" in errors({"file": REF, "region": polygon(2)})["region"]
    assert "vertices" in errors({"file": REF, "region": polygon(101)})["region"]
    mixed = polygon(3)
    mixed["vertices"][1] = {"ra": 10.0, "dec": 10.0}
    assert "vertices" in errors({"file": REF, "region": mixed})["region"]


def test_schema_requires_file_and_region():
    messages = errors({"hdu": 1})
    assert "file" in messages and "region" in messages
