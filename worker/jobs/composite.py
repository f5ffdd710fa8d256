"""``image.composite``: an additive colour composite of 1–8 images as PNG (RGBA) or JPEG.

The first channel sets the pixel grid (its shape, orientation and resolution): a composite
is normally of one field, and the first channel's grid makes the output size predictable.
Channels with a different celestial WCS or shape are reprojected onto it with
``reproject_interp``; channels without a WCS are taken as pixel-aligned and must all have
the first channel's shape.

Each channel's limits come from its own native pixels (percentiles, zscale or explicit
values); its pixels then go through interval, stretch and gamma to 0–1, are multiplied by
colour × weight and summed into RGB, clipped to 0–1. Pixels where no channel has data are
transparent in PNG (black in JPEG).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.wcs import WCS, WCSCOMPARE_ANCILLARY
from reproject import reproject_interp

from worker.jobs.context import JobContext, ref_id
from worker.jobs.errors import PermanentError
from worker.jobs.fitsimage import celestial_wcs, data_shape, find_hdu, load_image, open_fits
from worker.jobs.jsonsafe import jsonable
from worker.jobs.stretch import (
    CONTENT_TYPES,
    EXTENSIONS,
    channel_limits,
    finite_values,
    make_stretch,
    normalise,
    rgba_picture,
    save_picture,
)

#: Peak memory per pixel of the output grid: RGB float32 accumulator (12), coverage (1),
#: one normalised channel and a product buffer (8), picture buffers (8), plus the
#: reprojection of one channel (float64 result and block results: about 24).
GRID_BYTES_PER_PX = 29.0
REPROJECT_BYTES_PER_PX = 24.0
#: Reprojection runs in blocks so its coordinate arrays (~150 B/px) stay bounded.
REPROJECT_BLOCK_PX = (512, 512)
REPROJECT_BLOCK_BYTES = 512 * 512 * 160
#: Peak memory per pixel of one native channel: float32 data (4), its finite values and
#: the percentile's sorted copy (16), the finite mask (1).
CHANNEL_BYTES_PER_PX = 21.0
#: WCS pixel-matrix and reference differences below this are the same grid (degrees/pixels).
SAME_GRID_TOLERANCE = 1e-9


@dataclass
class _Plan:
    """One channel as read from its header: where it is, its shape and WCS."""

    index: int
    channel: dict[str, Any]
    hdu_index: int
    shape: tuple[int, int]
    wcs: WCS | None
    reproject: bool = False


def _same_grid(a: _Plan, b: _Plan) -> bool:
    if a.shape != b.shape:
        return False
    if a.wcs is None or b.wcs is None:
        return True
    return bool(a.wcs.wcs.compare(b.wcs.wcs, cmp=WCSCOMPARE_ANCILLARY, tolerance=SAME_GRID_TOLERANCE))


def _plan(payload: dict[str, Any], ctx: JobContext) -> list[_Plan]:
    """Read every channel's header (no pixels) and decide which must be reprojected."""
    plans = []
    for index, channel in enumerate(payload["channels"]):
        with open_fits(ctx.input_path(channel["file"])) as hdul:
            hdu_index = find_hdu(hdul, channel.get("hdu"), "image")
            ny, nx = data_shape(hdul[hdu_index])[-2:]
            shape = (ny, nx)
            wcs = celestial_wcs(hdul[hdu_index].header, shape)
        plans.append(_Plan(index, channel, hdu_index, shape, wcs))
    reference = plans[0]
    if all(p.wcs is not None for p in plans):
        for plan in plans[1:]:
            plan.reproject = not _same_grid(plan, reference)
    else:
        # Without a WCS there is nothing to reproject with: the grids must already agree.
        for plan in plans[1:]:
            if plan.shape != reference.shape:
                missing = [str(p.index + 1) for p in plans if p.wcs is None]
                raise PermanentError(
                    f"channel {plan.index + 1} is {plan.shape[1]}×{plan.shape[0]} pixels but channel 1 is "
                    f"{reference.shape[1]}×{reference.shape[0]}; channel(s) {', '.join(missing)} have no "
                    "celestial WCS to reproject with, so all channels must have the same shape")
    return plans


def _check_memory(plans: list[_Plan], ctx: JobContext) -> None:
    """Refuse, before any pixel is read, a composite whose estimated peak exceeds the budget."""
    grid = plans[0].shape[0] * plans[0].shape[1]
    reprojecting = any(p.reproject for p in plans)
    per_grid = GRID_BYTES_PER_PX + (REPROJECT_BYTES_PER_PX if reprojecting else 0.0)
    largest_channel = max(p.shape[0] * p.shape[1] for p in plans)
    fixed = REPROJECT_BLOCK_BYTES if reprojecting else 0.0
    ctx.check_memory(grid * per_grid + largest_channel * CHANNEL_BYTES_PER_PX + fixed,
                     f"a {len(plans)}-channel composite on a {plans[0].shape[1]}×{plans[0].shape[0]} grid")


def _channel_pixels(plan: _Plan, reference: _Plan, ctx: JobContext) -> tuple[np.ndarray, dict[str, Any]]:
    """The channel scaled to 0–1 on the reference grid (NaN: no data), and what was used."""
    channel = plan.channel
    with open_fits(ctx.input_path(channel["file"])) as hdul:
        image = load_image(hdul, plan.hdu_index, ctx, bytes_per_pixel=CHANNEL_BYTES_PER_PX, dtype=np.float32)
    what = f"channel {plan.index + 1} ({ref_id(channel['file'])}, HDU {image.hdu_index})"
    limits = channel_limits(finite_values(image.data, what), channel["stretch"], channel["lower_percentile"],
                            channel["upper_percentile"], channel.get("vmin"), channel.get("vmax"))
    data = image.data
    if plan.reproject:
        assert plan.wcs is not None and reference.wcs is not None
        data = reproject_interp((data, plan.wcs), reference.wcs, shape_out=reference.shape,
                                return_footprint=False, block_size=REPROJECT_BLOCK_PX)
    del image
    stretch = make_stretch(channel["stretch"], channel.get("stretch_a"))
    scaled = normalise(data, limits, stretch, channel["gamma"])
    used = {
        "input": ref_id(channel["file"]), "hdu": plan.hdu_index, "color": channel["color"],
        "weight": channel["weight"], "stretch": channel["stretch"], "stretch_a": channel.get("stretch_a"),
        "interval": limits.interval, "vmin": limits.vmin, "vmax": limits.vmax, "gamma": channel["gamma"],
        "reprojected": plan.reproject, "shape": list(plan.shape),
        "coverage_fraction": float(np.isfinite(scaled).mean()),
    }
    return scaled, used


def composite(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Build the composite picture described by ``payload`` (loaded by ``CompositeInput``)."""
    ctx.report_progress(0, "reading", "reading headers")
    plans = _plan(payload, ctx)
    _check_memory(plans, ctx)
    reference = plans[0]
    rgb = np.zeros((*reference.shape, 3), dtype=np.float32)
    covered = np.zeros(reference.shape, dtype=bool)
    product = np.empty(reference.shape, dtype=np.float32)
    channels = []
    for plan in plans:
        ctx.check_cancelled()
        ctx.report_progress(5 + 80 * plan.index / len(plans), "scaling",
                            f"channel {plan.index + 1} of {len(plans)}"
                            + (" (reprojecting)" if plan.reproject else ""))
        scaled, used = _channel_pixels(plan, reference, ctx)
        finite = np.isfinite(scaled)
        covered |= finite
        scaled[~finite] = 0.0
        for component, value in enumerate(plan.channel["color"]):
            if value:
                np.multiply(scaled, value * plan.channel["weight"], out=product)
                rgb[..., component] += product
        channels.append(used)
        del scaled, finite

    ctx.check_cancelled()
    ctx.report_progress(85, "writing", f"encoding {payload['format'].upper()}")
    fmt = payload["format"]
    name = f"composite.{EXTENSIONS[fmt]}"
    picture = save_picture(rgba_picture(rgb, covered), ctx.output_path(name, CONTENT_TYPES[fmt]), fmt,
                           payload["max_size"], payload["quality"])
    ctx.report_progress(100, "done", None)
    return jsonable({
        "file": name, "content_type": CONTENT_TYPES[fmt], "format": fmt,
        "width": picture.width, "height": picture.height,
        "grid_shape": list(reference.shape), "downsampled": picture.size != (reference.shape[1], reference.shape[0]),
        "transparent_fraction": float(1.0 - covered.mean()),
        "channels": channels,
    })
