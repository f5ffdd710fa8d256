"""``image.mosaic``: 2–50 images reprojected onto one optimal celestial WCS and co-added.

The output WCS and shape come from ``reproject.mosaicking.find_optimal_celestial_wcs``
(TAN, the first tile's frame, the finest input resolution unless ``resolution_arcsec`` is
given); ``reproject_and_coadd`` does the reprojection (interp, exact or adaptive), the
optional background matching and the combination, with NaN, not 0, where no tile has data.

Output cap: a mosaic above ``max_pixels`` is coarsened to fit when the resolution was left
to default (the result says so), and refused when ``resolution_arcsec`` was given.

Outputs: ``mosaic.fits`` (float32 primary image with the WCS, NaN blanks, and a
``FOOTPRINT`` image: the summed footprint weight, i.e. how many tiles contributed for
mean/sum), ``mosaic.png`` (an asinh preview, north up, blanks transparent), and a JSON
result with the shape, centre, pixel scale, corners and per-tile footprints (ICRS degrees).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales, wcs_to_celestial_frame
from reproject import reproject_adaptive, reproject_exact, reproject_interp
from reproject.mosaicking import find_optimal_celestial_wcs, reproject_and_coadd

from worker.jobs.context import JobContext, ref_id
from worker.jobs.errors import PermanentError
from worker.jobs.fitsimage import celestial_wcs, data_shape, find_hdu, load_image, open_fits
from worker.jobs.jsonsafe import jsonable
from worker.jobs.stretch import bin_for_preview, grey_preview, save_picture

REPROJECT_FUNCTIONS = {"interp": reproject_interp, "exact": reproject_exact, "adaptive": reproject_adaptive}
#: Reprojection runs in blocks so its coordinate arrays (~150 B/px) stay bounded.
REPROJECT_BLOCK_PX = (512, 512)
REPROJECT_BLOCK_BYTES = 512 * 512 * 160
#: Per output pixel: the float64 sum and footprint (16), then their float32 copies (4 at a time).
OUTPUT_BYTES_PER_PX = 20.0
#: Per output pixel a tile covers: its reprojected float64 array and footprint (16), kept for every
#: tile unless mean/sum without background matching adds them on the fly, plus temporaries (18).
SUBSET_BYTES_PER_PX = 16.0
SUBSET_TEMP_BYTES_PER_PX = 18.0
#: Per pixel of the largest input, read as float32 (one tile is in memory at a time).
INPUT_BYTES_PER_PX = 4.0
PREVIEW_MAX_SIZE_PX = 2048
#: Per preview pixel (limits, stretch, RGB and RGBA buffers); while it is made, each output pixel
#: holds the float32 mosaic and footprint (8) and the binning buffers (9).
PREVIEW_BYTES_PER_PX = 40.0
BINNING_BYTES_PER_PX = 17.0
#: How often a too-large default-resolution mosaic is coarsened before giving up.
MAX_COARSENING_STEPS = 5


@dataclass
class _Tile:
    """One input as read from its header."""

    index: int
    ref: dict[str, Any]
    hdu_index: int
    shape: tuple[int, int]
    wcs: WCS
    unit: str | None

    @property
    def name(self) -> str:
        return f"tile {self.index + 1} ({ref_id(self.ref)}, HDU {self.hdu_index})"


class _LazyTiles(Sequence[tuple[np.ndarray, WCS]]):
    """The tiles as (data, wcs), each read only when reproject_and_coadd asks for it.

    reproject_and_coadd indexes its inputs one at a time, so only one input image is in
    memory at once instead of all of them.
    """

    def __init__(self, tiles: list[_Tile], ctx: JobContext) -> None:
        self._tiles, self._ctx = tiles, ctx

    def __len__(self) -> int:
        return len(self._tiles)

    def __getitem__(self, index: int) -> tuple[np.ndarray, WCS]:  # type: ignore[override]
        tile = self._tiles[index]
        with open_fits(self._ctx.input_path(tile.ref)) as hdul:
            image = load_image(hdul, tile.hdu_index, self._ctx, INPUT_BYTES_PER_PX, dtype=np.float32)
        return image.data, tile.wcs


def _read_tiles(payload: dict[str, Any], ctx: JobContext) -> list[_Tile]:
    """Every tile's shape, celestial WCS and unit from its header (no pixels read)."""
    tiles = []
    for index, spec in enumerate(payload["tiles"]):
        with open_fits(ctx.input_path(spec["file"])) as hdul:
            hdu_index = find_hdu(hdul, spec.get("hdu"), "image")
            header = hdul[hdu_index].header
            ny, nx = data_shape(hdul[hdu_index])[-2:]
            shape = (ny, nx)
            wcs = celestial_wcs(header, shape)
            unit = header.get("BUNIT")
        where = f"tile {index + 1} ({ref_id(spec['file'])}, HDU {hdu_index})"
        if wcs is None:
            raise PermanentError(f"{where} has no celestial WCS, so it cannot be placed in a mosaic")
        tiles.append(_Tile(index, spec["file"], hdu_index, shape, wcs,
                           str(unit).strip() if unit else None))
    return tiles


def _pixel_scale_arcsec(wcs: WCS) -> float:
    return float(np.mean(proj_plane_pixel_scales(wcs)) * 3600.0)


def _optimal(tiles: list[_Tile], resolution_arcsec: float | None) -> tuple[WCS, tuple[int, int]]:
    try:
        wcs, shape = find_optimal_celestial_wcs(
            [(t.shape, t.wcs) for t in tiles], negative_lon_cdelt="auto",
            resolution=None if resolution_arcsec is None else resolution_arcsec * u.arcsec)
    except (ValueError, TypeError) as exc:
        raise PermanentError(f"no common celestial WCS for these tiles: {exc}") from None
    if len(shape) != 2 or min(shape) < 1:
        raise PermanentError(f"the tiles give an unusable mosaic shape {shape}")
    wcs.pixel_shape = (shape[1], shape[0])
    return wcs, (int(shape[0]), int(shape[1]))


def _output_grid(tiles: list[_Tile], payload: dict[str, Any]) -> tuple[WCS, tuple[int, int], bool]:
    """The output WCS and shape within ``max_pixels``, and whether the resolution was coarsened."""
    requested, cap = payload.get("resolution_arcsec"), payload["max_pixels"]
    wcs, shape = _optimal(tiles, requested)
    if shape[0] * shape[1] <= cap:
        return wcs, shape, False
    if requested is not None:
        suggest = requested * math.sqrt(shape[0] * shape[1] / cap)
        raise PermanentError(
            f"the mosaic would be {shape[1]}×{shape[0]} = {shape[0] * shape[1]:,} pixels at {requested:g}″/pixel, "
            f"above max_pixels = {cap:,}; ask for resolution_arcsec ≥ {suggest:.3g} or a larger max_pixels")
    scale = _pixel_scale_arcsec(wcs)
    for _ in range(MAX_COARSENING_STEPS):
        # 1 % extra so rounding the shape up does not leave it just above the cap.
        scale *= math.sqrt(shape[0] * shape[1] / cap) * 1.01
        wcs, shape = _optimal(tiles, scale)
        if shape[0] * shape[1] <= cap:
            return wcs, shape, True
    raise PermanentError(f"cannot fit the mosaic within max_pixels = {cap:,}")


def _in_output_pixels(tile: _Tile, wcs_out: WCS) -> tuple[np.ndarray, np.ndarray]:
    """The tile's outer corners (pixel edges) in the output's pixel coordinates."""
    ny, nx = tile.shape
    x = np.array([-0.5, nx - 0.5, nx - 0.5, -0.5])
    y = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
    return wcs_out.world_to_pixel(tile.wcs.pixel_to_world(x, y))


def _polygon_area(x: np.ndarray, y: np.ndarray) -> float:
    """Shoelace area of a simple polygon (pixels²)."""
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def _box(x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The output box (x0, x1, y0, y1) reproject_and_coadd reprojects the tile onto."""
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return 0, shape[1], 0, shape[0]
    return (max(0, math.floor(x.min() + 0.5)), min(shape[1], math.ceil(x.max() + 0.5)),
            max(0, math.floor(y.min() + 0.5)), min(shape[0], math.ceil(y.max() + 0.5)))


def _box_pixels(box: tuple[int, int, int, int]) -> float:
    return float(max(box[1] - box[0], 0) * max(box[3] - box[2], 0))


def _check_overlaps(tiles: list[_Tile], boxes: list[tuple[int, int, int, int]]) -> None:
    """Background matching compares overlaps: a tile that overlaps no other cannot be matched."""
    for tile, box in zip(tiles, boxes, strict=True):
        if not any(other is not box and box[0] < other[1] and other[0] < box[1]
                   and box[2] < other[3] and other[2] < box[3] for other in boxes):
            raise PermanentError(f"match_background needs every tile to overlap another, "
                                 f"but {tile.name} overlaps none")


def _check_memory(tiles: list[_Tile], shape: tuple[int, int], subsets: list[float], keeps_all: bool,
                  ctx: JobContext) -> None:
    """Refuse, before any pixel is read, a mosaic whose estimated peak exceeds the budget."""
    out_px = shape[0] * shape[1]
    factor = math.ceil(max(shape) / PREVIEW_MAX_SIZE_PX)
    preview_px = math.ceil(shape[0] / factor) * math.ceil(shape[1] / factor)
    # The coadd's peak and the preview's do not overlap: the float64 arrays are gone by then.
    needed = (max(out_px * OUTPUT_BYTES_PER_PX,
                  out_px * BINNING_BYTES_PER_PX + preview_px * PREVIEW_BYTES_PER_PX)
              + max(t.shape[0] * t.shape[1] for t in tiles) * INPUT_BYTES_PER_PX
              + (sum(subsets) if keeps_all else max(subsets)) * SUBSET_BYTES_PER_PX
              + max(subsets) * SUBSET_TEMP_BYTES_PER_PX + REPROJECT_BLOCK_BYTES)
    ctx.check_memory(needed, f"a {shape[1]}×{shape[0]} mosaic of {len(tiles)} tiles")


def _icrs(coords: SkyCoord) -> list[list[float]]:
    icrs = coords.icrs
    return [[float(ra), float(dec)] for ra, dec in zip(icrs.ra.deg, icrs.dec.deg, strict=True)]


def _footprint_icrs(wcs: WCS) -> list[list[float]]:
    """calc_footprint's corners (pixel centres of the corner pixels) as ICRS [ra, dec] degrees."""
    corners = wcs.calc_footprint()
    return _icrs(SkyCoord(corners[:, 0], corners[:, 1], unit="deg", frame=wcs_to_celestial_frame(wcs)))


def _progress(ctx: JobContext, count: int) -> Any:
    """reproject_and_coadd's progress_bar: a progress report and a cancellation check per tile."""
    def bar(indices: Iterable[int]) -> Iterator[int]:
        for index in indices:
            ctx.check_cancelled()
            ctx.report_progress(10 + 70 * index / count, "reprojecting", f"tile {index + 1} of {count}")
            yield index
    return bar


def _write_fits(ctx: JobContext, data: np.ndarray, footprint: np.ndarray, wcs: WCS, tiles: list[_Tile],
                payload: dict[str, Any]) -> None:
    header = wcs.to_header()
    units = {t.unit for t in tiles}
    if len(units) == 1 and None not in units:
        header["BUNIT"] = units.pop()
    header["NCOMBINE"] = (len(tiles), "number of input tiles")
    header["COMBINE"] = (payload["combine"], "how overlapping tiles were combined")
    header["REPROJ"] = (payload["method"], "reproject function: interp, exact or adaptive")
    header["BKGMATCH"] = (bool(payload["match_background"]), "backgrounds matched before combining")
    primary = fits.PrimaryHDU(data, header=header)
    weights = fits.ImageHDU(footprint, header=wcs.to_header(), name="FOOTPRINT")
    fits.HDUList([primary, weights]).writeto(ctx.output_path("mosaic.fits", "application/fits"), overwrite=True)


def mosaic(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Reproject and co-add the tiles of ``payload`` (loaded by ``MosaicInput``)."""
    ctx.report_progress(0, "reading", "reading headers")
    tiles = _read_tiles(payload, ctx)
    wcs_out, shape, coarsened = _output_grid(tiles, payload)
    corners_px = [_in_output_pixels(t, wcs_out) for t in tiles]
    boxes = [_box(x, y, shape) for x, y in corners_px]
    if payload["match_background"]:
        _check_overlaps(tiles, boxes)
    keeps_all = payload["match_background"] or payload["combine"] not in ("mean", "sum")
    _check_memory(tiles, shape, [_box_pixels(b) for b in boxes], keeps_all, ctx)

    ctx.check_cancelled()
    ctx.report_progress(10, "reprojecting", f"{len(tiles)} tiles onto {shape[1]}×{shape[0]} pixels")
    data, footprint = reproject_and_coadd(
        _LazyTiles(tiles, ctx), wcs_out, shape_out=shape,
        reproject_function=REPROJECT_FUNCTIONS[payload["method"]],
        combine_function=payload["combine"], match_background=payload["match_background"],
        block_sizes=[REPROJECT_BLOCK_PX] * len(tiles), progress_bar=_progress(ctx, len(tiles)),
        blank_pixel_value=np.nan)
    if payload["match_background"] and (footprint > 0).any() and not np.isfinite(data).any():
        raise PermanentError("background matching failed: the tiles' overlaps hold no common data")
    data = data.astype(np.float32)
    footprint = footprint.astype(np.float32)
    covered = float(np.isfinite(data).mean())
    if covered == 0:
        raise PermanentError("the mosaic holds no data: every tile is blank (NaN) where it falls")

    ctx.check_cancelled()
    ctx.report_progress(85, "writing", "mosaic.fits and mosaic.png")
    _write_fits(ctx, data, footprint, wcs_out, tiles, payload)
    picture, limits = grey_preview(bin_for_preview(data, PREVIEW_MAX_SIZE_PX))
    save_picture(picture, ctx.output_path("mosaic.png", "image/png"), "png", PREVIEW_MAX_SIZE_PX)
    del data, footprint

    ny, nx = shape
    centre = wcs_out.pixel_to_world((nx - 1) / 2.0, (ny - 1) / 2.0).icrs
    out_area = float(nx * ny)
    ctx.report_progress(100, "done", None)
    return jsonable({
        "files": {"fits": "mosaic.fits", "preview": "mosaic.png"},
        "shape": [ny, nx], "width": nx, "height": ny,
        "center": {"ra": float(centre.ra.deg), "dec": float(centre.dec.deg)},
        "frame": wcs_to_celestial_frame(wcs_out).name, "ctype": list(wcs_out.wcs.ctype),
        "pixel_scale_arcsec": _pixel_scale_arcsec(wcs_out), "coarsened_to_fit": coarsened,
        "corners": _footprint_icrs(wcs_out),
        "coverage_fraction": covered,
        "combine": payload["combine"], "method": payload["method"],
        "match_background": payload["match_background"],
        "preview": {"vmin": limits.vmin, "vmax": limits.vmax, "stretch": "asinh"},
        "tiles": [{
            "input": ref_id(t.ref), "hdu": t.hdu_index, "shape": list(t.shape), "unit": t.unit,
            "pixel_scale_arcsec": _pixel_scale_arcsec(t.wcs),
            "footprint": _footprint_icrs(t.wcs),
            # Share of the mosaic's area inside this tile's outline (its blanks included).
            "coverage_fraction": min(1.0, _polygon_area(x, y) / out_area) if np.all(np.isfinite(x)) else None,
        } for t, (x, y) in zip(tiles, corners_px, strict=True)],
    })
