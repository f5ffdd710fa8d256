"""Display scaling shared by image.composite and image.mosaic: limits, stretches, RGBA pictures.

Limits come from astropy.visualization intervals (percentiles, zscale or explicit), the
stretch from its stretch classes; pictures are written by Pillow. Arrays are in FITS order
(row 0 at the bottom); pictures are flipped so north-up data is shown north up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.visualization import (
    AsinhStretch,
    AsymmetricPercentileInterval,
    BaseStretch,
    LinearStretch,
    LogStretch,
    ManualInterval,
    PowerStretch,
    SinhStretch,
    SqrtStretch,
    ZScaleInterval,
)
from PIL import Image as PILImage

from worker.jobs.errors import PermanentError

#: Exponent of the ``power`` stretch when the payload gives none (astropy has no default).
DEFAULT_POWER_EXPONENT = 2.0
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg"}
EXTENSIONS = {"png": "png", "jpeg": "jpg"}


@dataclass(frozen=True)
class Limits:
    """The data values mapped to 0 and 1, and where they came from (percentile, zscale, manual)."""

    vmin: float
    vmax: float
    interval: str


def make_stretch(name: str, a: float | None = None) -> BaseStretch:
    """The astropy stretch called ``name`` (``zscale`` is linear); ``a`` its parameter, None: the default."""
    kwargs = {} if a is None else {"a": a}
    if name in ("linear", "zscale"):
        return LinearStretch()
    if name == "sqrt":
        return SqrtStretch()
    if name == "asinh":
        return AsinhStretch(**kwargs)
    if name == "sinh":
        return SinhStretch(**kwargs)
    if name == "log":
        return LogStretch(**kwargs)
    if name == "power":
        return PowerStretch(a if a is not None else DEFAULT_POWER_EXPONENT)
    raise ValueError(f"unknown stretch {name!r}")


def finite_values(data: np.ndarray, what: str) -> np.ndarray:
    """The finite pixels of ``data`` as a 1-D array; none at all → PermanentError naming ``what``."""
    values = data[np.isfinite(data)]
    if values.size == 0:
        raise PermanentError(f"{what} has no finite pixels (all NaN or infinite)")
    return values


def channel_limits(values: np.ndarray, stretch: str, lower_percentile: float, upper_percentile: float,
                   vmin: float | None = None, vmax: float | None = None) -> Limits:
    """Limits for finite ``values``: explicit ones win, else zscale (``stretch == "zscale"``) or percentiles."""
    if vmin is not None and vmax is not None:
        return Limits(float(vmin), float(vmax), "manual")
    if stretch == "zscale":
        auto_min, auto_max = ZScaleInterval().get_limits(values)
        kind = "zscale"
    else:
        auto_min, auto_max = AsymmetricPercentileInterval(lower_percentile, upper_percentile).get_limits(values)
        kind = "percentile"
    low = float(vmin) if vmin is not None else float(auto_min)
    high = float(vmax) if vmax is not None else float(auto_max)
    return Limits(low, high, kind if vmin is None and vmax is None else f"{kind}+manual")


def normalise(data: np.ndarray, limits: Limits, stretch: BaseStretch, gamma: float = 1.0) -> np.ndarray:
    """``data`` scaled to 0–1 (float32, NaN kept): interval, stretch, then ``v ** (1 / gamma)``.

    Flat limits (vmax ≤ vmin, e.g. a constant image) make a step: 1 above vmin, else 0.
    """
    out = np.array(data, dtype=np.float32, copy=True)
    if limits.vmax <= limits.vmin:
        nan = np.isnan(out)
        out = (out > limits.vmin).astype(np.float32)
        out[nan] = np.nan
        return out
    ManualInterval(limits.vmin, limits.vmax)(out, clip=True, out=out)
    stretch(out, clip=True, out=out)
    if gamma != 1.0:
        np.power(out, 1.0 / gamma, out=out)
    return out


def fit_size(width: int, height: int, max_size: int) -> tuple[int, int]:
    """(width, height) shrunk, aspect kept, so neither side exceeds ``max_size``; never enlarged."""
    scale = min(1.0, max_size / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def rgba_picture(rgb: np.ndarray, covered: np.ndarray) -> PILImage.Image:
    """An RGBA picture of ``rgb`` (H×W×3, 0–1) with alpha 0 where not ``covered``, north up.

    ``rgb`` is overwritten (scaled in place, so a large picture needs no float copies).
    """
    height, width = covered.shape
    pixels = np.empty((height, width, 4), dtype=np.uint8)
    np.clip(rgb, 0.0, 1.0, out=rgb)
    rgb *= 255.0
    # Round, not truncate, so 1.0 → 255 and 0.5 → 128.
    np.rint(rgb, out=rgb)
    pixels[..., :3] = rgb
    pixels[..., 3] = np.where(covered, 255, 0)
    pixels[..., :3][~covered] = 0
    return PILImage.fromarray(np.ascontiguousarray(pixels[::-1]))


def grey_preview(data: np.ndarray, stretch: str = "asinh", lower_percentile: float = 0.5,
                 upper_percentile: float = 99.5) -> tuple[PILImage.Image, Limits]:
    """A greyscale RGBA picture of ``data`` (NaN transparent) with the limits used."""
    covered = np.isfinite(data)
    limits = channel_limits(finite_values(data, "the image"), stretch, lower_percentile, upper_percentile)
    grey = np.nan_to_num(normalise(data, limits, make_stretch(stretch)), nan=0.0)
    return rgba_picture(np.repeat(grey[..., np.newaxis], 3, axis=2), covered), limits


def save_picture(picture: PILImage.Image, path: Path, fmt: str, max_size: int, quality: int = 90) -> PILImage.Image:
    """Write ``picture`` as PNG (RGBA) or JPEG (RGB, blanks black), shrunk to ``max_size``; returns it."""
    size = fit_size(picture.width, picture.height, max_size)
    if size != picture.size:
        # Pillow premultiplies alpha when resizing RGBA, so blanks do not darken their neighbours;
        # BOX averages every source pixel (no ringing around stars, unlike Lanczos).
        picture = picture.resize(size, PILImage.Resampling.BOX)
    if fmt == "png":
        picture.save(path, format="PNG", optimize=False)
    elif fmt == "jpeg":
        picture = picture.convert("RGB")
        picture.save(path, format="JPEG", quality=quality)
    else:
        raise ValueError(f"unknown picture format {fmt!r}")
    return picture


def bin_for_preview(data: np.ndarray, max_size: int) -> np.ndarray:
    """``data`` averaged over square blocks (NaN ignored) until its longest side is ≤ ``max_size``.

    A preview of a large mosaic is made from this, so the stretch and picture buffers scale
    with the preview, not with the mosaic. Blocks with no finite pixel stay NaN.
    """
    factor = math.ceil(max(data.shape) / max_size)
    if factor <= 1:
        return data
    ny, nx = (math.ceil(n / factor) * factor for n in data.shape)
    padded = np.full((ny, nx), np.nan, dtype=np.float32)
    padded[:data.shape[0], :data.shape[1]] = data
    blocks = padded.reshape(ny // factor, factor, nx // factor, factor)
    finite = np.isfinite(blocks)
    count = finite.sum(axis=(1, 3))
    total = np.where(finite, blocks, 0.0).sum(axis=(1, 3), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan).astype(np.float32)
