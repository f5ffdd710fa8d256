"""Input and result schemas of ``image.composite`` and ``image.mosaic``.

Colours are given as ``"#rrggbb"``, a colour name (``"red"``, ``"orange"`` …), a hue
``{"hue": 200}`` (degrees, full saturation and brightness) or an RGB triple of 0–1
components; all load to the triple, so a loaded payload loads again unchanged.
"""

from __future__ import annotations

import colorsys
import re
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from jobtypes.catalogue import JobType, RetryPolicy, register
from jobtypes.inputs import Hdu, InputFile

# --- image.composite -------------------------------------------------------------------
MIN_CHANNELS, MAX_CHANNELS = 1, 8
#: ``zscale`` is a ZScaleInterval with a linear stretch; the others use percentile limits.
STRETCHES = ("asinh", "linear", "log", "sqrt", "sinh", "power", "zscale")
DEFAULT_STRETCH = "asinh"
DEFAULT_LOWER_PERCENTILE = 0.5
DEFAULT_UPPER_PERCENTILE = 99.5
DEFAULT_WEIGHT = 1.0
MAX_WEIGHT = 100.0
DEFAULT_GAMMA, MIN_GAMMA, MAX_GAMMA = 1.0, 0.1, 10.0
MAX_STRETCH_A = 1e6
FORMATS = ("png", "jpeg")
DEFAULT_FORMAT = "png"
#: Pillow accepts up to 100, but above 95 JPEG files grow with no visible gain.
DEFAULT_JPEG_QUALITY, MIN_JPEG_QUALITY, MAX_JPEG_QUALITY = 90, 1, 95
#: Longest side of the output image, pixels.
DEFAULT_MAX_SIZE_PX, MIN_MAX_SIZE_PX, MAX_MAX_SIZE_PX = 2048, 16, 4096
#: Hues (degrees) of channels given no colour: blue for the first, red for the last.
FIRST_DEFAULT_HUE_DEG, LAST_DEFAULT_HUE_DEG = 240.0, 0.0

# --- image.mosaic ----------------------------------------------------------------------
MIN_TILES, MAX_TILES = 2, 50
COMBINE_FUNCTIONS = ("mean", "sum", "min", "max", "first", "last")
METHODS = ("interp", "exact", "adaptive")
#: Output pixel cap: 4096 × 4096 by default, at most 8192 × 8192 (the memory check still applies).
DEFAULT_MAX_PIXELS, MIN_MAX_PIXELS, MAX_MAX_PIXELS = 4096 * 4096, 64 * 64, 8192 * 8192
MAX_RESOLUTION_ARCSEC = 3600.0

_HEX = re.compile(r"#([0-9a-fA-F]{6})")
COLOR_NAMES: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0),
    "cyan": (0.0, 1.0, 1.0), "magenta": (1.0, 0.0, 1.0), "yellow": (1.0, 1.0, 0.0),
    "orange": (1.0, 0.5, 0.0), "white": (1.0, 1.0, 1.0),
}
_COLOR_HELP = ('a colour is "#rrggbb", a name (' + ", ".join(COLOR_NAMES) + '), {"hue": degrees 0–360} '
               "or [r, g, b] with components 0–1")


def hue_rgb(hue_deg: float) -> list[float]:
    """The fully saturated, full-brightness colour of a hue in degrees (0 red, 120 green, 240 blue)."""
    return [round(c, 6) for c in colorsys.hsv_to_rgb((hue_deg % 360.0) / 360.0, 1.0, 1.0)]


def parse_color(value: Any) -> list[float]:
    """``value`` in any accepted notation → ``[r, g, b]`` with components 0–1 (ValidationError if bad)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in COLOR_NAMES:
            return list(COLOR_NAMES[text])
        if m := _HEX.fullmatch(text):
            return [int(m.group(1)[i:i + 2], 16) / 255.0 for i in (0, 2, 4)]
        raise ValidationError(f"unknown colour {value!r}: {_COLOR_HELP}")
    if isinstance(value, dict):
        hue = value.get("hue")
        if set(value) != {"hue"} or isinstance(hue, bool) or not isinstance(hue, (int, float)) \
                or not 0.0 <= hue <= 360.0:
            raise ValidationError(f'a hue colour is {{"hue": degrees 0–360}}, got {value!r}')
        return hue_rgb(float(hue))
    if isinstance(value, (list, tuple)) and len(value) == 3 \
            and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in value):
        if not all(0.0 <= c <= 1.0 for c in value):
            raise ValidationError('RGB components are 0–1 (for 0–255 values use "#rrggbb")')
        return [float(c) for c in value]
    raise ValidationError(f"not a colour: {_COLOR_HELP}")


def default_color(index: int, count: int) -> list[float]:
    """The colour of channel ``index`` of ``count`` given none: white alone, else blue → red in order."""
    if count == 1:
        return list(COLOR_NAMES["white"])
    step = (FIRST_DEFAULT_HUE_DEG - LAST_DEFAULT_HUE_DEG) / (count - 1)
    return hue_rgb(FIRST_DEFAULT_HUE_DEG - index * step)


class ColorField(fields.Field):
    """A channel colour in any accepted notation, loaded as ``[r, g, b]`` (0–1)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[float]:
        return parse_color(value)


class ChannelSchema(Schema):
    """One channel of a composite: an image, its colour and how it is scaled to 0–1."""

    file = InputFile(required=True)
    hdu = Hdu()
    color = ColorField(load_default=None, allow_none=True, metadata={
        "description": f"Default: white for one channel, else hues from blue (first) to red (last); {_COLOR_HELP}."})
    weight = fields.Float(load_default=DEFAULT_WEIGHT,
                          validate=validate.Range(min=0.0, max=MAX_WEIGHT, min_inclusive=False))
    stretch = fields.String(load_default=DEFAULT_STRETCH, validate=validate.OneOf(STRETCHES))
    #: The stretch's parameter (asinh/sinh/log ``a``, power exponent); None: astropy's default (power: 2).
    stretch_a = fields.Float(load_default=None, allow_none=True,
                             validate=validate.Range(min=0.0, max=MAX_STRETCH_A, min_inclusive=False))
    lower_percentile = fields.Float(load_default=DEFAULT_LOWER_PERCENTILE, validate=validate.Range(min=0, max=100))
    upper_percentile = fields.Float(load_default=DEFAULT_UPPER_PERCENTILE, validate=validate.Range(min=0, max=100))
    #: Explicit limits in data units; each given one replaces its percentile (and zscale's limit).
    vmin = fields.Float(load_default=None, allow_none=True)
    vmax = fields.Float(load_default=None, allow_none=True)
    #: Applied after the stretch as ``v ** (1 / gamma)``: above 1 brightens the mid-tones.
    gamma = fields.Float(load_default=DEFAULT_GAMMA, validate=validate.Range(min=MIN_GAMMA, max=MAX_GAMMA))

    @validates_schema
    def limits_in_order(self, data: dict[str, Any], **_: Any) -> None:
        lower, upper = data.get("lower_percentile"), data.get("upper_percentile")
        if lower is not None and upper is not None and lower >= upper:
            raise ValidationError("must be above lower_percentile", "upper_percentile")
        vmin, vmax = data.get("vmin"), data.get("vmax")
        if vmin is not None and vmax is not None and vmin >= vmax:
            raise ValidationError("must be above vmin", "vmax")


class CompositeInput(Schema):
    """A colour composite of 1–8 images, reprojected onto the first channel's pixel grid."""

    channels = fields.List(fields.Nested(ChannelSchema), required=True,
                           validate=validate.Length(min=MIN_CHANNELS, max=MAX_CHANNELS))
    format = fields.String(load_default=DEFAULT_FORMAT, validate=validate.OneOf(FORMATS))
    quality = fields.Integer(strict=True, load_default=DEFAULT_JPEG_QUALITY,
                             validate=validate.Range(min=MIN_JPEG_QUALITY, max=MAX_JPEG_QUALITY),
                             metadata={"description": "JPEG quality (ignored for PNG)."})
    max_size = fields.Integer(strict=True, load_default=DEFAULT_MAX_SIZE_PX,
                              validate=validate.Range(min=MIN_MAX_SIZE_PX, max=MAX_MAX_SIZE_PX),
                              metadata={"description": "Longest side of the output, pixels (aspect kept)."})

    @post_load
    def fill_colors(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        """Give colourless channels their default colour, so the stored payload says what was drawn."""
        count = len(data["channels"])
        for index, channel in enumerate(data["channels"]):
            if channel.get("color") is None:
                channel["color"] = default_color(index, count)
        return data


class ChannelResult(Schema):
    input = fields.String(required=True)
    hdu = fields.Integer(required=True)
    color = fields.List(fields.Float(), required=True)
    weight = fields.Float(required=True)
    stretch = fields.String(required=True)
    interval = fields.String(required=True)
    vmin = fields.Float(allow_none=True)
    vmax = fields.Float(allow_none=True)
    gamma = fields.Float(required=True)
    reprojected = fields.Boolean(required=True)


class CompositeResult(Schema):
    file = fields.String(required=True)
    format = fields.String(required=True)
    width = fields.Integer(required=True)
    height = fields.Integer(required=True)
    grid_shape = fields.List(fields.Integer(), required=True)
    transparent_fraction = fields.Float(required=True)
    channels = fields.List(fields.Nested(ChannelResult), required=True)


class TileSchema(Schema):
    """One input of a mosaic."""

    file = InputFile(required=True)
    hdu = Hdu()


class MosaicInput(Schema):
    """2–50 images reprojected onto an optimal celestial WCS and co-added."""

    tiles = fields.List(fields.Nested(TileSchema), required=True,
                        validate=validate.Length(min=MIN_TILES, max=MAX_TILES))
    combine = fields.String(load_default="mean", validate=validate.OneOf(COMBINE_FUNCTIONS))
    method = fields.String(load_default="interp", validate=validate.OneOf(METHODS))
    match_background = fields.Boolean(load_default=False)
    resolution_arcsec = fields.Float(
        load_default=None, allow_none=True,
        validate=validate.Range(min=0.0, max=MAX_RESOLUTION_ARCSEC, min_inclusive=False),
        metadata={"description": "Output pixel scale (default: the finest input's; coarsened to fit max_pixels)."})
    max_pixels = fields.Integer(
        strict=True, load_default=DEFAULT_MAX_PIXELS,
        validate=validate.Range(min=MIN_MAX_PIXELS, max=MAX_MAX_PIXELS),
        metadata={"description": "Output pixel cap: without resolution_arcsec the scale is coarsened to fit, "
                                 "with it a larger mosaic is refused."})


class MosaicResult(Schema):
    files = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    shape = fields.List(fields.Integer(), required=True)
    center = fields.Dict(required=True)
    pixel_scale_arcsec = fields.Float(required=True)
    corners = fields.List(fields.List(fields.Float()), required=True)
    coverage_fraction = fields.Float(required=True)
    tiles = fields.List(fields.Dict(), required=True)


COMPOSITE = register(
    JobType(
        name="image.composite",
        handler="worker.jobs.composite:composite",
        description="Colour composite of 1–8 images (per-channel colour, weight, stretch, limits) as PNG/JPEG.",
        input_schema=CompositeInput,
        result_schema=CompositeResult,
        timeout_s=600.0,
        retry=RetryPolicy(max_attempts=2, backoff_base_s=5.0, backoff_cap_s=60.0),
        resource_class="large",
        # Measured: 45 B per grid pixel for three 2048² channels, one reprojected (15 per input pixel).
        bytes_per_pixel=20.0,
    )
)

MOSAIC = register(
    JobType(
        name="image.mosaic",
        handler="worker.jobs.mosaic:mosaic",
        description="2–50 images reprojected onto an optimal celestial WCS and co-added: FITS + PNG preview.",
        input_schema=MosaicInput,
        result_schema=MosaicResult,
        timeout_s=1800.0,
        retry=RetryPolicy(max_attempts=2, backoff_base_s=5.0, backoff_cap_s=60.0),
        resource_class="large",
        # Measured: 38 (mean) to 46 (max) B per input pixel for two 2048² tiles overlapping by 30 %.
        bytes_per_pixel=48.0,
    )
)
