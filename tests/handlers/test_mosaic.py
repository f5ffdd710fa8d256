"""image.mosaic: schema, coverage and combination of two overlapping tiles, FITS and PNG outputs, bad input."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from marshmallow import ValidationError
from PIL import Image

from jobtypes import file_refs, get_job_type
from tests.handlers.conftest import MakeContext
from tests.handlers.fitsfactory import make_wcs, write_image
from worker.jobs.errors import PermanentError
from worker.jobs.mosaic import mosaic

TILE = (200, 200)  # ny, nx
#: Tile 2's pixel p is tile 1's pixel p + OFFSET (x, y): they share 80 × 160 pixels (32 %).
OFFSET = (120, 40)
TILE1_VALUE, TILE2_VALUE = 1.0, 3.0


def load(payload: dict[str, Any]) -> dict[str, Any]:
    return get_job_type("image.mosaic").input_schema().load(payload)  # type: ignore[union-attr]


def tile_wcs(index: int) -> WCS:
    """Both tiles on one tangent plane, the second offset by OFFSET pixels (so its centre is too)."""
    dx, dy = OFFSET if index else (0, 0)
    return make_wcs(TILE, crpix=((TILE[1] + 1) / 2 - dx, (TILE[0] + 1) / 2 - dy))


def tiles(tmp_path: Path, datas: list[np.ndarray] | None = None,
          wcses: list[WCS | None] | None = None) -> list[tuple[dict[str, Any], Path]]:
    datas = datas or [np.full(TILE, TILE1_VALUE), np.full(TILE, TILE2_VALUE)]
    wcses = wcses or [tile_wcs(i) for i in range(len(datas))]
    return [({"key": f"t{i}.fits"}, write_image(tmp_path / f"t{i}.fits", d, w))
            for i, (d, w) in enumerate(zip(datas, wcses, strict=True))]


def run(make_context: MakeContext, inputs: list[tuple[dict[str, Any], Path]],
        **options: Any) -> tuple[dict[str, Any], dict[str, Path]]:
    ctx = make_context(*inputs)
    result = mosaic(load({"tiles": [{"file": ref} for ref, _ in inputs], **options}), ctx)
    json.dumps(result, allow_nan=False)
    stages = [p["stage"] for p in ctx.progress_log]  # type: ignore[attr-defined]
    assert stages[0] == "reading" and "reprojecting" in stages and stages[-1] == "done"
    return result, {o.name: o.path for o in ctx.outputs}


def read_fits(path: Path) -> tuple[np.ndarray, np.ndarray, fits.Header, WCS]:
    with fits.open(path) as hdul:
        data, header = hdul[0].data, hdul[0].header
        footprint = hdul["FOOTPRINT"].data
        assert header["BITPIX"] == -32 and data.dtype == np.dtype(">f4")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header)
        return np.array(data), np.array(footprint), header, wcs


def out_pixel(wcs_out: WCS, tile: int, x: float, y: float) -> tuple[int, int]:
    """The output (row, column) of pixel (x, y) of a tile."""
    ox, oy = wcs_out.world_to_pixel(tile_wcs(tile).pixel_to_world(x, y))
    return int(np.rint(oy)), int(np.rint(ox))


# --- schema ----------------------------------------------------------------------------------
def test_schema_defaults() -> None:
    payload = load({"tiles": [{"file": {"key": "a"}}, {"file": {"file_id": 3}, "hdu": "SCI"}]})
    assert payload == {"tiles": [{"file": {"key": "a"}, "hdu": None}, {"file": {"file_id": 3}, "hdu": "SCI"}],
                       "combine": "mean", "method": "interp", "match_background": False,
                       "resolution_arcsec": None, "max_pixels": 16_777_216}
    assert len(load({"tiles": [{"file": {"key": f"{i}"}} for i in range(50)]})["tiles"]) == 50


@pytest.mark.parametrize("options, field", [
    ({"tiles": [{"file": {"key": "a"}}]}, "tiles"),
    ({"tiles": [{"file": {"key": f"{i}"}} for i in range(51)]}, "tiles"),
    ({"combine": "median"}, "combine"), ({"method": "nearest"}, "method"),
    ({"resolution_arcsec": 0}, "resolution_arcsec"), ({"resolution_arcsec": -1}, "resolution_arcsec"),
    ({"max_pixels": 100}, "max_pixels"), ({"max_pixels": 8193 * 8192}, "max_pixels"),
    ({"match_background": "perhaps"}, "match_background"), ({"blank": 0}, "blank"),
])
def test_schema_refuses(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        load({"tiles": [{"file": {"key": "a"}}, {"file": {"key": "b"}}], **options})
    assert field in err.value.messages


def test_schema_input_files_are_found() -> None:
    schema = get_job_type("image.mosaic").input_schema()  # type: ignore[union-attr]
    payload = schema.load({"tiles": [{"file": {"key": "a"}}, {"file": {"url": "https://example.org/b.fits"}}]})
    assert [path for path, _ in file_refs(schema, payload)] == ["tiles.0.file", "tiles.1.file"]


def test_schema_refuses_tile_without_file() -> None:
    with pytest.raises(ValidationError) as err:
        load({"tiles": [{"file": {"key": "a"}}, {"hdu": 1}]})
    assert "file" in err.value.messages["tiles"][1]  # type: ignore[index,call-overload]


# --- two overlapping tiles -------------------------------------------------------------------
@pytest.mark.parametrize("combine, overlap", [
    ("mean", 2.0), ("sum", 4.0), ("min", 1.0), ("max", 3.0), ("first", 1.0), ("last", 3.0)])
def test_overlap_holds_the_combined_value(tmp_path: Path, make_context: MakeContext, combine: str,
                                          overlap: float) -> None:
    result, files = run(make_context, tiles(tmp_path), combine=combine)
    data, footprint, _, wcs = read_fits(files["mosaic.fits"])
    assert data[out_pixel(wcs, 0, 160, 120)] == pytest.approx(overlap)   # in both tiles
    assert data[out_pixel(wcs, 0, 20, 20)] == pytest.approx(TILE1_VALUE)  # tile 1 only
    assert data[out_pixel(wcs, 1, 180, 180)] == pytest.approx(TILE2_VALUE)  # tile 2 only
    for x, y in [(20, 220), (300, 20)]:  # inside the output's rectangle, outside both tiles
        assert np.isnan(data[out_pixel(wcs, 0, x, y)])
        assert footprint[out_pixel(wcs, 0, x, y)] == 0
    # Every finite value is one a tile or the combination can give; blanks are NaN, never 0.
    assert set(np.unique(np.round(data[np.isfinite(data)], 6))) <= {TILE1_VALUE, TILE2_VALUE, overlap}
    assert result["combine"] == combine


def test_output_covers_both_footprints(tmp_path: Path, make_context: MakeContext) -> None:
    result, files = run(make_context, tiles(tmp_path))
    data, footprint, header, wcs = read_fits(files["mosaic.fits"])
    ny, nx = data.shape
    assert result["shape"] == [ny, nx] and abs(ny - 240) <= 1 and abs(nx - 320) <= 1
    assert wcs.has_celestial and wcs.wcs.ctype[0] == "RA---TAN" and header["BUNIT"] == "MJy/sr"
    assert header["NCOMBINE"] == 2 and header["COMBINE"] == "mean"
    for index, tile in enumerate(result["tiles"]):
        own = tile_wcs(index)
        assert np.allclose(tile["footprint"], own.calc_footprint(), rtol=0, atol=1e-9)
        x, y = wcs.world_to_pixel_values(*np.array(tile["footprint"]).T)
        assert (x >= -0.5).all() and (x <= nx - 0.5).all() and (y >= -0.5).all() and (y <= ny - 0.5).all()
        assert tile["coverage_fraction"] == pytest.approx(40_000 / (ny * nx), rel=0.01)
        assert tile["input"] == f"key:t{index}.fits" and tile["hdu"] == 1 and tile["shape"] == [200, 200]
    # Union of the tiles over the output rectangle: (2 × 200² − 80 × 160) / (320 × 240).
    assert result["coverage_fraction"] == pytest.approx(67_200 / 76_800, rel=0.01)
    assert np.isfinite(data).mean() == pytest.approx(result["coverage_fraction"])
    assert footprint.shape == data.shape and footprint[out_pixel(wcs, 0, 160, 120)] == 2
    assert result["pixel_scale_arcsec"] == pytest.approx(0.5) and result["coarsened_to_fit"] is False
    centre = wcs.pixel_to_world((nx - 1) / 2, (ny - 1) / 2)
    assert [result["center"]["ra"], result["center"]["dec"]] == pytest.approx([centre.ra.deg, centre.dec.deg])
    assert np.allclose(result["corners"], wcs.calc_footprint(axes=(nx, ny)), rtol=0, atol=1e-9)


def test_preview_is_rgba_with_transparent_blanks(tmp_path: Path, make_context: MakeContext) -> None:
    result, files = run(make_context, tiles(tmp_path))
    data, _, _, wcs = read_fits(files["mosaic.fits"])
    assert result["files"] == {"fits": "mosaic.fits", "preview": "mosaic.png"}
    with Image.open(files["mosaic.png"]) as picture:
        assert picture.mode == "RGBA" and picture.size == (data.shape[1], data.shape[0])
        alpha = np.asarray(picture)[::-1, :, 3]  # back to FITS row order
    assert ((alpha == 0) == np.isnan(data)).all()
    assert alpha[out_pixel(wcs, 0, 20, 220)] == 0 and alpha[out_pixel(wcs, 0, 160, 120)] == 255


def test_match_background_levels_the_tiles(tmp_path: Path, make_context: MakeContext) -> None:
    result, files = run(make_context, tiles(tmp_path), match_background=True)
    data = read_fits(files["mosaic.fits"])[0]
    finite = data[np.isfinite(data)]
    # Corrections average zero: both tiles end at the mean of their levels.
    assert finite.min() == pytest.approx(2.0, abs=1e-3) and finite.max() == pytest.approx(2.0, abs=1e-3)
    assert result["match_background"] is True


def test_match_background_refuses_a_tile_that_overlaps_none(tmp_path: Path, make_context: MakeContext) -> None:
    apart = [tile_wcs(0), make_wcs(TILE, crpix=((TILE[1] + 1) / 2 - 260, (TILE[0] + 1) / 2))]
    inputs = tiles(tmp_path, wcses=apart)
    with pytest.raises(PermanentError, match=r"every tile to overlap another, but tile 1 \(key:t0.fits"):
        run(make_context, inputs, match_background=True)
    result, _ = run(make_context, inputs)  # without matching, disjoint tiles are fine
    assert result["coverage_fraction"] == pytest.approx(2 * 40_000 / (460 * 200), rel=0.01)


@pytest.mark.parametrize("method", ["exact", "adaptive"])
def test_other_reprojection_methods(tmp_path: Path, make_context: MakeContext, method: str) -> None:
    result, files = run(make_context, tiles(tmp_path), method=method)
    data, _, header, wcs = read_fits(files["mosaic.fits"])
    assert data[out_pixel(wcs, 0, 160, 120)] == pytest.approx(2.0, abs=1e-6)
    assert np.isnan(data[out_pixel(wcs, 0, 20, 220)])
    assert header["REPROJ"] == method == result["method"]


def test_resolution_and_pixel_cap(tmp_path: Path, make_context: MakeContext) -> None:
    inputs = tiles(tmp_path)
    result, _ = run(make_context, inputs, resolution_arcsec=1.0)
    assert result["pixel_scale_arcsec"] == pytest.approx(1.0)
    assert abs(result["height"] - 120) <= 1 and abs(result["width"] - 160) <= 1

    result, files = run(make_context, inputs, max_pixels=5000)
    assert result["coarsened_to_fit"] is True and result["width"] * result["height"] <= 5000
    assert result["pixel_scale_arcsec"] > 1.9
    assert read_fits(files["mosaic.fits"])[0].shape == (result["height"], result["width"])

    with pytest.raises(PermanentError, match="above max_pixels = 5,000; ask for resolution_arcsec ≥"):
        run(make_context, inputs, max_pixels=5000, resolution_arcsec=0.5)


def test_tiles_with_their_own_hdu(tmp_path: Path, make_context: MakeContext) -> None:
    err = fits.ImageHDU(np.zeros(TILE, dtype=np.float32), name="ERR")
    path = write_image(tmp_path / "two.fits", np.full(TILE, 5.0), tile_wcs(1), extra_hdus=[err])
    inputs = [tiles(tmp_path)[0], ({"key": "two.fits"}, path)]
    ctx = make_context(*inputs)
    payload = load({"tiles": [{"file": {"key": "t0.fits"}}, {"file": {"key": "two.fits"}, "hdu": "SCI"}],
                    "combine": "max"})
    result = mosaic(payload, ctx)
    assert [t["hdu"] for t in result["tiles"]] == [1, 1]
    data = read_fits(ctx.outputs[0].path)[0]
    assert np.nanmax(data) == pytest.approx(5.0)


# --- bad input -------------------------------------------------------------------------------
def test_tile_without_celestial_wcs_is_refused(tmp_path: Path, make_context: MakeContext) -> None:
    inputs = tiles(tmp_path, wcses=[tile_wcs(0), None])
    with pytest.raises(PermanentError, match=r"tile 2 \(key:t1.fits, HDU 1\) has no celestial WCS"):
        run(make_context, inputs)


def test_all_blank_tiles_are_refused(tmp_path: Path, make_context: MakeContext) -> None:
    inputs = tiles(tmp_path, datas=[np.full(TILE, np.nan), np.full(TILE, np.nan)])
    with pytest.raises(PermanentError, match="the mosaic holds no data"):
        run(make_context, inputs)


def test_not_fits_and_too_large_are_refused(tmp_path: Path, make_context: MakeContext) -> None:
    inputs = tiles(tmp_path)
    text = tmp_path / "notes.fits"
    text.write_text("SIMPLE? no")
    with pytest.raises(PermanentError, match="not a FITS file"):
        run(make_context, [inputs[0], ({"key": "notes.fits"}, text)])
    ctx = make_context(*inputs, memory_budget_bytes=2_000_000)
    with pytest.raises(PermanentError, match="mosaic of 2 tiles needs about"):
        mosaic(load({"tiles": [{"file": ref} for ref, _ in inputs]}), ctx)
    assert ctx.outputs == []
