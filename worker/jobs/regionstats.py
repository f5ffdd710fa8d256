"""region.stats: statistics of the pixels inside a rectangle, circle, ellipse or polygon.

Pixel inclusion rule: a pixel belongs to the region when its *centre* lies inside it
(``regions`` ``to_mask(mode="center")``); pixel centres are at integer zero-based
coordinates. Sky regions (frame ``icrs``) are converted to pixel regions with the image's
celestial WCS first (``SkyRegion.to_pixel``). NaN and infinite pixels inside the region are
counted in ``n_nan`` and left out of every statistic. A region partly off the image is
measured over its overlap with the image (``clipped_to_image: true``).
"""

from __future__ import annotations

from typing import Any

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.stats import mad_std, sigma_clipped_stats
from astropy.wcs import WCS
from regions import (
    CirclePixelRegion,
    CircleSkyRegion,
    EllipsePixelRegion,
    EllipseSkyRegion,
    PixCoord,
    PixelRegion,
    PolygonPixelRegion,
    PolygonSkyRegion,
    RectanglePixelRegion,
    RectangleSkyRegion,
    SkyRegion,
)

from jobtypes.photometry import REGION_STATS
from worker.jobs.context import JobContext
from worker.jobs.errors import PermanentError
from worker.jobs.fitsimage import load_image, open_fits
from worker.jobs.jsonsafe import jsonable

#: regions' mask of the region's bounding box: float64 weights plus a boolean copy.
MASK_BYTES_PER_PIXEL = 9.0
PIXEL_RULE = "center"


def region_stats(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Measure the pixels of ``payload["region"]`` in one image HDU of ``payload["file"]``."""
    ctx.report_progress(0.0, "reading", "opening the FITS file")
    with open_fits(ctx.input_path(payload["file"])) as hdul:
        image = load_image(hdul, payload["hdu"], ctx, bytes_per_pixel=REGION_STATS.bytes_per_pixel)
    ctx.check_cancelled()

    ctx.report_progress(40.0, "measuring", "masking the region")
    spec = payload["region"]
    region = pixel_region(spec, image.wcs)
    values, geometry = region_values(region, image.data, ctx)
    ctx.check_cancelled()

    finite = values[np.isfinite(values)]
    result: dict[str, Any] = {
        "hdu": image.hdu_index,
        "hdu_name": image.hdu_name,
        "shape": spec["shape"],
        "frame": spec["frame"],
        "pixel_region": describe(region),
        "pixel_rule": PIXEL_RULE,
        "n_pixels": int(values.size),
        "n_valid": int(finite.size),
        "n_nan": int(values.size - finite.size),
        **plain_stats(finite),
        **clipped_stats(finite, payload["sigma_clip"]),
        "unit": image.unit,
        **geometry,
    }
    ctx.report_progress(100.0, "done", f"{finite.size} pixels measured")
    return jsonable(result)


def plain_stats(values: np.ndarray) -> dict[str, float | None]:
    """Mean, median, population std (ddof=0), MAD-based std, min, max and sum of finite ``values``."""
    if values.size == 0:
        return dict.fromkeys(("mean", "median", "std", "mad_std", "min", "max", "sum"))
    return {
        "mean": float(np.mean(values)),
        "median": float(np.median(values)),
        "std": float(np.std(values)),
        "mad_std": float(mad_std(values)),
        "min": float(np.min(values)),
        "max": float(np.max(values)),
        "sum": float(np.sum(values)),
    }


def clipped_stats(values: np.ndarray, clip: dict[str, Any] | None) -> dict[str, Any]:
    """astropy's sigma-clipped mean, median and std, when clipping was asked for."""
    out: dict[str, Any] = {"sigma_clip": clip, "clipped_mean": None, "clipped_median": None, "clipped_std": None}
    if clip is None or values.size == 0:
        return out
    mean, median, std = sigma_clipped_stats(values, sigma=clip["sigma"], maxiters=clip["maxiters"])
    return out | {"clipped_mean": float(mean), "clipped_median": float(median), "clipped_std": float(std)}


def pixel_region(spec: dict[str, Any], wcs: WCS | None) -> PixelRegion:
    """The ``regions`` pixel region a loaded region spec describes (sky regions via ``wcs``)."""
    if spec["frame"] == "pixel":
        return _pixel_shape(spec)
    if wcs is None:
        raise PermanentError("the region is in icrs coordinates but the image has no celestial WCS; "
                             "give the region in the pixel frame")
    sky = _sky_shape(spec)
    try:
        region = sky.to_pixel(wcs)
    except (ValueError, ArithmeticError) as exc:
        raise PermanentError(f"the icrs region cannot be converted to this image's pixels: {exc}") from None
    points = region.vertices if isinstance(region, PolygonPixelRegion) else region.center
    if not (np.all(np.isfinite(points.x)) and np.all(np.isfinite(points.y))):
        raise PermanentError("the icrs region falls outside this image's projection")
    return region


def _pixel_shape(spec: dict[str, Any]) -> PixelRegion:
    angle = spec["angle_deg"] * u.deg
    if spec["shape"] == "polygon":
        vertices = spec["vertices"]
        return PolygonPixelRegion(PixCoord(x=[v["x"] for v in vertices], y=[v["y"] for v in vertices]))
    center = PixCoord(x=spec["center"]["x"], y=spec["center"]["y"])
    if spec["shape"] == "circle":
        return CirclePixelRegion(center, radius=spec["radius"])
    if spec["shape"] == "rectangle":
        return RectanglePixelRegion(center, width=spec["width"], height=spec["height"], angle=angle)
    # regions' ellipse takes full axes.
    return EllipsePixelRegion(center, width=2 * spec["semi_major"], height=2 * spec["semi_minor"], angle=angle)


def _sky_shape(spec: dict[str, Any]) -> SkyRegion:
    angle = spec["angle_deg"] * u.deg
    if spec["shape"] == "polygon":
        vertices = spec["vertices"]
        return PolygonSkyRegion(SkyCoord(ra=[v["ra"] for v in vertices] * u.deg,
                                         dec=[v["dec"] for v in vertices] * u.deg, frame="icrs"))
    center = SkyCoord(ra=spec["center"]["ra"] * u.deg, dec=spec["center"]["dec"] * u.deg, frame="icrs")
    if spec["shape"] == "circle":
        return CircleSkyRegion(center, radius=spec["radius"] * u.arcsec)
    if spec["shape"] == "rectangle":
        return RectangleSkyRegion(center, width=spec["width"] * u.arcsec, height=spec["height"] * u.arcsec,
                                  angle=angle)
    return EllipseSkyRegion(center, width=2 * spec["semi_major"] * u.arcsec,
                            height=2 * spec["semi_minor"] * u.arcsec, angle=angle)


def region_values(region: PixelRegion, data: np.ndarray, ctx: JobContext) -> tuple[np.ndarray, dict[str, Any]]:
    """The pixel values inside ``region`` and on the image, with the bounding boxes and clipping flag."""
    bbox = region.bounding_box
    ny, nx = data.shape
    if bbox.ixmin >= nx or bbox.iymin >= ny or bbox.ixmax <= 0 or bbox.iymax <= 0:
        raise PermanentError(f"the region (pixels x {bbox.ixmin}…{bbox.ixmax - 1}, y {bbox.iymin}…"
                             f"{bbox.iymax - 1}) lies entirely off the {nx}×{ny} image")
    # The mask covers the region's whole bounding box, even the part off the image.
    ctx.check_memory(bbox.shape[0] * bbox.shape[1] * MASK_BYTES_PER_PIXEL, "the region's mask")
    mask = region.to_mask(mode=PIXEL_RULE)
    inside = mask.data > 0
    slices_large, slices_small = mask.get_overlap_slices(data.shape)
    on_image = inside[slices_small] if slices_small is not None else np.zeros((0, 0), bool)
    n_inside, n_on_image = int(inside.sum()), int(on_image.sum())
    if n_inside == 0:
        raise PermanentError("the region contains no pixel centre (pixel centres are at integer coordinates)")
    if n_on_image == 0:
        raise PermanentError(f"the region lies entirely off the {nx}×{ny} image")
    values = data[slices_large][on_image]
    ys, xs = np.nonzero(on_image)
    y0, x0 = slices_large[0].start, slices_large[1].start
    geometry = {
        "bbox": _bbox(bbox.ixmin, bbox.ixmax - 1, bbox.iymin, bbox.iymax - 1),
        "bbox_on_image": _bbox(x0 + xs.min(), x0 + xs.max(), y0 + ys.min(), y0 + ys.max()),
        "clipped_to_image": n_on_image < n_inside,
    }
    return values, geometry


def _bbox(x_min: int, x_max: int, y_min: int, y_max: int) -> dict[str, int]:
    return {"x_min": int(x_min), "x_max": int(x_max), "y_min": int(y_min), "y_max": int(y_max)}


def describe(region: PixelRegion) -> dict[str, Any]:
    """The pixel region as plain numbers (what a client needs to draw it on the image)."""
    if isinstance(region, PolygonPixelRegion):
        return {"vertices": [{"x": float(x), "y": float(y)} for x, y in zip(region.vertices.x, region.vertices.y,
                                                                             strict=True)]}
    out: dict[str, Any] = {"center": {"x": float(region.center.x), "y": float(region.center.y)}}
    if isinstance(region, CirclePixelRegion):
        out["radius"] = float(region.radius)
    elif isinstance(region, RectanglePixelRegion):
        out |= {"width": float(region.width), "height": float(region.height),
                "angle_deg": float(region.angle.to_value(u.deg))}
    elif isinstance(region, EllipsePixelRegion):
        out |= {"semi_major": float(region.width) / 2, "semi_minor": float(region.height) / 2,
                "angle_deg": float(region.angle.to_value(u.deg))}
    return out
