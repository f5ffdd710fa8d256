"""An overlay PNG: the image (zscale, asinh stretch) with circles at detected sources.

The PNG is shown the way DS9 shows FITS: pixel (0, 0) at the bottom left, so north is up
for a north-up image. Images larger than :data:`MAX_PNG_SIDE_PX` on a side are reduced by
an integer factor (box average) first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.visualization import AsinhStretch, ZScaleInterval
from PIL import Image, ImageDraw

MAX_PNG_SIDE_PX = 2048
CIRCLE_COLOUR = (0, 255, 0)
MIN_CIRCLE_RADIUS_PX = 4.0
#: zlib level: 1 encodes a 2048² overlay several times faster than the default 6, for a slightly bigger file.
PNG_COMPRESS_LEVEL = 1


def stretch_to_8bit(data: np.ndarray) -> np.ndarray:
    """``data`` mapped to 0–255 with zscale limits and an asinh stretch; NaN/inf become 0."""
    finite = np.isfinite(data)
    if not finite.any():
        return np.zeros(data.shape, np.uint8)
    vmin, vmax = ZScaleInterval().get_limits(data[finite])
    if not vmax > vmin:  # a flat image: zscale has no range to stretch
        vmin, vmax = float(np.min(data[finite])), float(np.max(data[finite])) + 1.0
    scaled = np.clip((np.where(finite, data, vmin) - vmin) / (vmax - vmin), 0.0, 1.0)
    return np.round(AsinhStretch()(scaled, clip=True) * 255.0).astype(np.uint8)


def reduction_factor(shape: tuple[int, int]) -> int:
    """The integer factor that brings the longer side to at most :data:`MAX_PNG_SIDE_PX`."""
    return max(1, math.ceil(max(shape) / MAX_PNG_SIDE_PX))


def write_overlay(path: Path, data: np.ndarray, xs: Sequence[float] | np.ndarray, ys: Sequence[float] | np.ndarray,
                  radius_px: float) -> tuple[int, int]:
    """Write the overlay PNG of ``data`` with circles of ``radius_px`` (image pixels) at (xs, ys).

    Returns the PNG's (width, height).
    """
    factor = reduction_factor(data.shape)
    picture = Image.fromarray(np.flipud(stretch_to_8bit(data)), mode="L")
    if factor > 1:
        picture = picture.reduce(factor)
    picture = picture.convert("RGB")
    draw = ImageDraw.Draw(picture)
    ny = data.shape[0]
    r = max(MIN_CIRCLE_RADIUS_PX, radius_px / factor)
    for x, y in zip(xs, ys, strict=True):
        # Pixel centres are at integer coordinates; the PNG is flipped vertically.
        px, py = (x + 0.5) / factor, (ny - 0.5 - y) / factor
        draw.ellipse((px - r, py - r, px + r, py + r), outline=CIRCLE_COLOUR, width=1)
    picture.save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return picture.size
