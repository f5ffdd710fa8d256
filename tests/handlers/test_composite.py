"""image.composite: schema, picture size and colours, transparency, limits, reprojection, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.visualization import ZScaleInterval
from marshmallow import ValidationError
from PIL import Image

from jobtypes import file_refs, get_job_type
from tests.handlers.conftest import MakeContext
from tests.handlers.fitsfactory import gaussian_stars, make_wcs, write_image
from worker.jobs.composite import composite
from worker.jobs.errors import PermanentError

SHAPE = (80, 120)  # ny, nx


def load(payload: dict[str, Any]) -> dict[str, Any]:
    return get_job_type("image.composite").input_schema().load(payload)  # type: ignore[union-attr]


def stars(shape: tuple[int, int] = SHAPE, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    positions = [(float(x), float(y)) for x, y in rng.uniform(5, min(shape) - 5, (6, 2))]
    return gaussian_stars(shape, positions, flux=5000.0, seed=seed)


def run(tmp_path: Path, make_context: MakeContext, images: list[tuple[np.ndarray, Any]],
        channels: list[dict[str, Any]] | None = None, **options: Any) -> tuple[dict[str, Any], Path]:
    """Write ``images`` ((data, wcs) pairs), run a composite over them, return (result, output file)."""
    inputs = []
    specs = channels or [{} for _ in images]
    for index, ((data, wcs), spec) in enumerate(zip(images, specs, strict=True)):
        ref = {"key": f"c{index}.fits"}
        inputs.append((ref, write_image(tmp_path / f"c{index}.fits", data, wcs)))
        spec.setdefault("file", ref)
    ctx = make_context(*inputs)
    result = composite(load({"channels": specs, **options}), ctx)
    json.dumps(result, allow_nan=False)
    stages = [p["stage"] for p in ctx.progress_log]  # type: ignore[attr-defined]
    assert stages[0] == "reading" and stages[-1] == "done"
    assert [o.name for o in ctx.outputs] == [result["file"]]
    return result, ctx.outputs[0].path


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as picture:
        return np.asarray(picture)


# --- schema ----------------------------------------------------------------------------------
def test_schema_defaults() -> None:
    payload = load({"channels": [{"file": {"key": "a.fits"}}]})
    assert payload["format"] == "png" and payload["quality"] == 90 and payload["max_size"] == 2048
    channel = payload["channels"][0]
    assert channel == {"file": {"key": "a.fits"}, "hdu": None, "color": [1.0, 1.0, 1.0], "weight": 1.0,
                       "stretch": "asinh", "stretch_a": None, "lower_percentile": 0.5, "upper_percentile": 99.5,
                       "vmin": None, "vmax": None, "gamma": 1.0}
    three = load({"channels": [{"file": {"key": f"{i}.fits"}} for i in range(3)]})
    assert [c["color"] for c in three["channels"]] == [[0, 0, 1], [0, 1, 0], [1, 0, 0]]


def test_schema_input_files_are_found() -> None:
    schema = get_job_type("image.composite").input_schema()  # type: ignore[union-attr]
    payload = schema.load({"channels": [{"file": {"key": "a"}}, {"file": {"file_id": 2}, "hdu": "SCI"}]})
    assert list(file_refs(schema, payload)) == [("channels.0.file", {"key": "a"}), ("channels.1.file", {"file_id": 2})]


def test_schema_colour_notations_agree_and_reload_unchanged() -> None:
    notations = ["#ff0000", "red", " RED ", {"hue": 0}, {"hue": 360}, [1, 0, 0]]
    for color in notations:
        assert load({"channels": [{"file": {"key": "a"}, "color": color}]})["channels"][0]["color"] == [1, 0, 0]
    assert load({"channels": [{"file": {"key": "a"}, "color": "#ff8000"}]})["channels"][0]["color"] == \
        pytest.approx([1.0, 128 / 255, 0.0])
    assert load({"channels": [{"file": {"key": "a"}, "color": {"hue": 200}}]})["channels"][0]["color"] == \
        pytest.approx([0.0, 2 / 3, 1.0], abs=1e-6)
    # The stored payload is the loaded one; loading it again changes nothing.
    once = load({"channels": [{"file": {"key": "a"}, "color": {"hue": 30}}, {"file": {"key": "b"}}]})
    assert load(json.loads(json.dumps(once))) == once


@pytest.mark.parametrize("channel, field", [
    ({"color": "#ff88"}, "color"), ({"color": "chartreuse"}, "color"), ({"color": {"hue": 400}}, "color"),
    ({"color": {"hue": 10, "saturation": 1}}, "color"), ({"color": [1, 2, 3]}, "color"),
    ({"color": [1, 0]}, "color"), ({"color": [True, 0, 0]}, "color"),
    ({"weight": 0}, "weight"), ({"weight": -1}, "weight"), ({"stretch": "histeq"}, "stretch"),
    ({"gamma": 0.05}, "gamma"), ({"gamma": 10.5}, "gamma"),
    ({"lower_percentile": -1}, "lower_percentile"), ({"upper_percentile": 100.5}, "upper_percentile"),
    ({"lower_percentile": 50, "upper_percentile": 50}, "upper_percentile"),
    ({"lower_percentile": 90, "upper_percentile": 10}, "upper_percentile"),
    ({"vmin": 5, "vmax": 1}, "vmax"), ({"stretch_a": 0}, "stretch_a"), ({"shade": 1}, "shade"),
    ({"file": {"key": "a", "url": "https://example.org/a.fits"}}, "file"),
])
def test_schema_refuses_bad_channel(channel: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        load({"channels": [{"file": {"key": "a.fits"}, **channel}]})
    assert field in err.value.messages["channels"][0]  # type: ignore[index,call-overload]


@pytest.mark.parametrize("options, field", [
    ({"channels": []}, "channels"),
    ({"channels": [{"file": {"key": f"{i}"}} for i in range(9)]}, "channels"),
    ({"max_size": 15}, "max_size"), ({"max_size": 4097}, "max_size"),
    ({"format": "tiff"}, "format"), ({"quality": 0}, "quality"), ({"quality": 96}, "quality"),
    ({"size": 10}, "size"),
])
def test_schema_refuses_bad_options(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        load({"channels": [{"file": {"key": "a.fits"}}], **options})
    assert field in err.value.messages


def test_schema_bounds_accepted() -> None:
    eight = load({"channels": [{"file": {"key": f"{i}"}, "gamma": 0.1 + i} for i in range(8)], "max_size": 4096})
    assert len(eight["channels"]) == 8 and eight["channels"][7]["gamma"] == pytest.approx(7.1)
    assert load({"channels": [{"file": {"key": "a"}, "gamma": 10, "lower_percentile": 0, "upper_percentile": 100}],
                 "max_size": 16})["max_size"] == 16


# --- pictures --------------------------------------------------------------------------------
def test_single_channel_is_grey_rgba_of_the_image_size(tmp_path: Path, make_context: MakeContext) -> None:
    result, path = run(tmp_path, make_context, [(stars(), make_wcs(SHAPE))])
    assert (result["width"], result["height"], result["format"], result["file"]) == (120, 80, "png", "composite.png")
    rgba = pixels(path)
    assert rgba.shape == (80, 120, 4)
    assert np.array_equal(rgba[..., 0], rgba[..., 1]) and np.array_equal(rgba[..., 1], rgba[..., 2])
    assert (rgba[..., 3] == 255).all() and rgba[..., 0].max() == 255 and rgba[..., 0].min() == 0
    assert result["downsampled"] is False and result["transparent_fraction"] == 0.0


def test_max_size_downsamples_keeping_aspect(tmp_path: Path, make_context: MakeContext) -> None:
    shape = (150, 300)
    result, path = run(tmp_path, make_context, [(stars(shape), make_wcs(shape))], max_size=100)
    assert (result["width"], result["height"]) == (100, 50) and result["downsampled"] is True
    assert result["grid_shape"] == [150, 300]
    assert pixels(path).shape == (50, 100, 4)


def test_colours_add_and_red_only_channel_has_no_green_or_blue(tmp_path: Path, make_context: MakeContext) -> None:
    wcs = make_wcs(SHAPE)
    result, path = run(tmp_path, make_context, [(stars(seed=1), wcs)], [{"color": "red"}])
    rgba = pixels(path)
    assert rgba[..., 0].max() == 255 and not rgba[..., 1].any() and not rgba[..., 2].any()

    flat = np.full(SHAPE, 10.0)
    linear = {"stretch": "linear", "vmin": 0.0, "vmax": 10.0}
    result, path = run(tmp_path, make_context, [(flat, wcs)] * 3,
                       [{"color": "red", **linear}, {"color": "#00ff00", "weight": 0.5, **linear},
                        {"color": {"hue": 240}, "gamma": 2.0, "vmax": 40.0, "stretch": "linear", "vmin": 0.0}])
    rgb = pixels(path)[..., :3].reshape(-1, 3)
    # Red full, green at half weight, blue at (10/40) ** (1/2) = 0.5 through gamma 2.
    assert (rgb == [255, 128, 128]).all()
    assert len(result["channels"]) == 3


def test_transparent_only_where_no_channel_has_data(tmp_path: Path, make_context: MakeContext) -> None:
    first, second = stars(seed=1), stars(seed=2)
    first[:10, :30] = np.nan      # bottom-left corner: no data in either channel
    second[:10, :30] = np.nan
    first[:10, 60:90] = np.nan    # only the first channel is blank here
    result, path = run(tmp_path, make_context, [(first, make_wcs(SHAPE)), (second, make_wcs(SHAPE))])
    alpha = pixels(path)[..., 3]
    # FITS row 0 is the bottom of the picture (north up).
    assert (alpha[-10:, :30] == 0).all() and (alpha[:-10, :] == 255).all()
    assert (alpha[-10:, 30:] == 255).all()
    assert not pixels(path)[-10:, :30, :3].any()
    assert result["transparent_fraction"] == pytest.approx(300 / (80 * 120))


def test_jpeg_output(tmp_path: Path, make_context: MakeContext) -> None:
    result, path = run(tmp_path, make_context, [(stars(), make_wcs(SHAPE))], format="jpeg", quality=80)
    assert result["file"] == "composite.jpg" and result["content_type"] == "image/jpeg"
    assert path.name == "composite.jpg"
    with Image.open(path) as picture:
        assert picture.format == "JPEG" and picture.mode == "RGB" and picture.size == (120, 80)


def test_limits_reported_per_channel(tmp_path: Path, make_context: MakeContext) -> None:
    data = [stars(seed=s) for s in (1, 2, 3)]
    wcs = make_wcs(SHAPE)
    result, _ = run(tmp_path, make_context, [(d, wcs) for d in data], [
        {"lower_percentile": 1, "upper_percentile": 99},
        {"stretch": "zscale"},
        {"vmin": 90.0, "vmax": 400.0, "stretch": "log", "stretch_a": 100.0},
    ])
    first, second, third = result["channels"]
    f32 = [d.astype(np.float32) for d in data]
    assert first["interval"] == "percentile" and first["stretch"] == "asinh"
    assert [first["vmin"], first["vmax"]] == pytest.approx(list(np.percentile(f32[0], [1, 99])), rel=1e-5)
    assert second["interval"] == "zscale" and second["stretch"] == "zscale"
    assert [second["vmin"], second["vmax"]] == pytest.approx(list(ZScaleInterval().get_limits(f32[1])), rel=1e-5)
    assert (third["interval"], third["vmin"], third["vmax"], third["stretch_a"]) == ("manual", 90.0, 400.0, 100.0)
    assert [c["input"] for c in result["channels"]] == ["key:c0.fits", "key:c1.fits", "key:c2.fits"]
    assert all(c["hdu"] == 1 and c["reprojected"] is False for c in result["channels"])


def test_channel_on_another_grid_is_reprojected(tmp_path: Path, make_context: MakeContext) -> None:
    ny, nx = SHAPE
    flat = np.ones(SHAPE)
    linear = {"stretch": "linear", "vmin": 0.0, "vmax": 1.0}
    # The second channel's pixel p is the first's pixel p - 40 in x: it misses the first's last 40 columns.
    shifted = make_wcs(SHAPE, crpix=((nx + 1) / 2 + 40, (ny + 1) / 2))
    result, path = run(tmp_path, make_context, [(flat, make_wcs(SHAPE)), (flat, shifted)],
                       [{"color": "red", **linear}, {"color": "green", **linear}])
    assert [c["reprojected"] for c in result["channels"]] == [False, True]
    green = pixels(path)[..., 1]
    assert (green[:, : nx - 41] == 255).all() and (green[:, nx - 39:] == 0).all()
    assert (pixels(path)[..., 0] == 255).all()
    assert result["channels"][1]["coverage_fraction"] == pytest.approx((nx - 40) / nx, abs=0.01)

    # Rotated by 30° about the centre, a smaller channel covers what its own footprint covers.
    small = (40, 40)
    rotated = make_wcs(small, rotation_deg=30.0)
    result, path = run(tmp_path, make_context, [(flat, make_wcs(SHAPE)), (np.ones(small), rotated)],
                       [{"color": "red", **linear}, {"color": "green", **linear}])
    covered = pixels(path)[::-1, :, 1] > 0  # back to FITS row order
    assert covered.sum() == pytest.approx(40 * 40, rel=0.05)
    assert covered[ny // 2, nx // 2] and not covered[0, 0] and not covered[ny // 2, nx // 2 + 25]


def test_same_shape_without_wcs_is_pixel_aligned(tmp_path: Path, make_context: MakeContext) -> None:
    result, path = run(tmp_path, make_context, [(stars(seed=1), None), (stars(seed=2), make_wcs(SHAPE))])
    assert [c["reprojected"] for c in result["channels"]] == [False, False]
    assert pixels(path).shape == (80, 120, 4)


# --- bad input -------------------------------------------------------------------------------
def test_different_shapes_without_wcs_are_refused(tmp_path: Path, make_context: MakeContext) -> None:
    with pytest.raises(PermanentError, match="no celestial WCS.*same shape"):
        run(tmp_path, make_context, [(stars(), None), (stars((60, 60)), None)])
    with pytest.raises(PermanentError, match="channel 2 is 60×60 pixels but channel 1 is 120×80"):
        run(tmp_path, make_context, [(stars(), make_wcs(SHAPE)), (stars((60, 60)), None)])


def test_all_nan_channel_is_refused(tmp_path: Path, make_context: MakeContext) -> None:
    with pytest.raises(PermanentError, match="channel 2 .* has no finite pixels"):
        run(tmp_path, make_context, [(stars(), None), (np.full(SHAPE, np.nan), None)])


def test_not_fits_and_too_large_are_refused(tmp_path: Path, make_context: MakeContext) -> None:
    text = tmp_path / "notes.fits"
    text.write_text("not a FITS file")
    ctx = make_context(({"key": "notes.fits"}, text))
    with pytest.raises(PermanentError, match="not a FITS file"):
        composite(load({"channels": [{"file": {"key": "notes.fits"}}]}), ctx)

    path = write_image(tmp_path / "big.fits", stars(), make_wcs(SHAPE))
    ctx = make_context(({"key": "big.fits"}, path), memory_budget_bytes=100_000)
    with pytest.raises(PermanentError, match="1-channel composite on a 120×80 grid needs about"):
        composite(load({"channels": [{"file": {"key": "big.fits"}}]}), ctx)
    assert ctx.outputs == []


def test_missing_hdu_is_refused(tmp_path: Path, make_context: MakeContext) -> None:
    with pytest.raises(PermanentError, match="no HDU 'ERR'"):
        run(tmp_path, make_context, [(stars(), None)], [{"hdu": "ERR"}])
