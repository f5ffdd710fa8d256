"""Input and result schemas of region.stats and sources.detect.

Pixel coordinates are zero-based with pixel centres at integer values (the astropy,
photutils and regions convention): the first pixel covers -0.5 ≤ x < 0.5 and its centre
is (0, 0). Sky coordinates are ICRS degrees; sky lengths are arcseconds.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from jobtypes.catalogue import JobType, RetryPolicy, register
from jobtypes.inputs import Hdu, InputFile

# --- region.stats ---------------------------------------------------------------------------

SHAPES = ("rectangle", "circle", "ellipse", "polygon")
FRAMES = ("pixel", "icrs")
MIN_POLYGON_VERTICES = 3
MAX_POLYGON_VERTICES = 100
#: Largest radius, side or semi-axis: pixels in the pixel frame, arcseconds in the icrs frame.
MAX_REGION_EXTENT = 1.0e6
MAX_ANGLE_DEG = 360.0
DEFAULT_CLIP_SIGMA = 3.0
MIN_CLIP_SIGMA, MAX_CLIP_SIGMA = 1.0, 10.0
DEFAULT_CLIP_MAXITERS = 5
MIN_CLIP_MAXITERS, MAX_CLIP_MAXITERS = 1, 20

#: The size fields each shape needs; any other shape's size field is refused.
SHAPE_FIELDS: dict[str, tuple[str, ...]] = {
    "rectangle": ("center", "width", "height"),
    "circle": ("center", "radius"),
    "ellipse": ("center", "semi_major", "semi_minor"),
    "polygon": ("vertices",),
}
_ALL_SHAPE_FIELDS = ("center", "radius", "width", "height", "semi_major", "semi_minor", "vertices")
_FRAME_AXES = {"pixel": ("x", "y"), "icrs": ("ra", "dec")}


def _extent(description: str) -> fields.Float:
    return fields.Float(validate=validate.Range(min=0.0, min_inclusive=False, max=MAX_REGION_EXTENT),
                        metadata={"description": description + " (pixels; arcsec in the icrs frame)"})


class PointSchema(Schema):
    """A position: ``{"x", "y"}`` (zero-based pixels) in the pixel frame, ``{"ra", "dec"}`` (deg) in icrs."""

    x = fields.Float(allow_none=False)
    y = fields.Float(allow_none=False)
    ra = fields.Float(validate=validate.Range(min=0.0, max=360.0))
    dec = fields.Float(validate=validate.Range(min=-90.0, max=90.0))

    @validates_schema
    def one_pair(self, data: dict[str, Any], **_: Any) -> None:
        if set(data) not in ({"x", "y"}, {"ra", "dec"}):
            raise ValidationError("give either x and y (pixel frame) or ra and dec (icrs frame)")


class SigmaClipSchema(Schema):
    """Parameters of the sigma clipping (astropy.stats.sigma_clipped_stats)."""

    sigma = fields.Float(load_default=DEFAULT_CLIP_SIGMA,
                         validate=validate.Range(min=MIN_CLIP_SIGMA, max=MAX_CLIP_SIGMA))
    maxiters = fields.Integer(strict=True, load_default=DEFAULT_CLIP_MAXITERS,
                              validate=validate.Range(min=MIN_CLIP_MAXITERS, max=MAX_CLIP_MAXITERS))


class SigmaClipField(fields.Field):
    """``true`` (default parameters), ``false``/null (no clipping) or ``{"sigma", "maxiters"}``.

    Loads to None or to the full parameter object, so loading a loaded payload again is a no-op.
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict[str, Any] | None:
        if value is None or value is False:
            return None
        if value is True:
            value = {}
        if not isinstance(value, dict):
            raise ValidationError("must be true, false or an object {sigma, maxiters}")
        return SigmaClipSchema().load(value)


class RegionSchema(Schema):
    """A rectangle, circle, ellipse or polygon in pixel or icrs coordinates.

    ``angle_deg`` rotates rectangles and ellipses counter-clockwise, as in DS9 and the regions
    package: from the +x axis in the pixel frame, from the RA axis in the icrs frame. Rectangle
    ``width``/``height`` are full side lengths (width along the rotated x axis); an ellipse has
    ``semi_major`` along the rotated x axis and ``semi_minor`` perpendicular to it.
    """

    shape = fields.String(required=True, validate=validate.OneOf(SHAPES))
    frame = fields.String(load_default="pixel", validate=validate.OneOf(FRAMES))
    center = fields.Nested(PointSchema)
    radius = _extent("Circle radius")
    width = _extent("Rectangle full width")
    height = _extent("Rectangle full height")
    semi_major = _extent("Ellipse semi-major axis")
    semi_minor = _extent("Ellipse semi-minor axis")
    angle_deg = fields.Float(load_default=0.0, validate=validate.Range(min=-MAX_ANGLE_DEG, max=MAX_ANGLE_DEG))
    vertices = fields.List(fields.Nested(PointSchema),
                           validate=validate.Length(min=MIN_POLYGON_VERTICES, max=MAX_POLYGON_VERTICES))

    @validates_schema
    def shape_fields(self, data: dict[str, Any], **_: Any) -> None:
        """Each shape has exactly its own size fields, and its points are in its frame."""
        shape, frame = data.get("shape"), data.get("frame", "pixel")
        if shape not in SHAPE_FIELDS:
            return  # the OneOf error already names it
        errors: dict[str, list[str]] = {}
        needed = SHAPE_FIELDS[shape]
        for name in _ALL_SHAPE_FIELDS:
            if name in needed and data.get(name) is None:
                errors[name] = [f"required for a {shape}"]
            elif name not in needed and data.get(name) is not None:
                errors[name] = [f"does not apply to a {shape}"]
        if shape in ("circle", "polygon") and data.get("angle_deg", 0.0) != 0.0:
            errors["angle_deg"] = [f"does not apply to a {shape} (rotate the vertices instead)"
                                   if shape == "polygon" else "does not apply to a circle"]
        if shape == "ellipse" and None not in (data.get("semi_major"), data.get("semi_minor")) \
                and data["semi_minor"] > data["semi_major"]:
            errors["semi_minor"] = ["must not exceed semi_major (rotate by 90° instead)"]
        axes = set(_FRAME_AXES[frame])
        points = [("center", data["center"])] if data.get("center") else []
        points += [(f"vertices.{i}", p) for i, p in enumerate(data.get("vertices") or [])]
        for where, point in points:
            if set(point) != axes:
                errors.setdefault(where.partition(".")[0], []).append(
                    f"{where}: the {frame} frame takes {' and '.join(_FRAME_AXES[frame])}")
        if errors:
            raise ValidationError(errors)


class RegionStatsInput(Schema):
    """Statistics of the pixels whose centres lie inside a region of one image HDU."""

    file = InputFile(required=True)
    hdu = Hdu()
    region = fields.Nested(RegionSchema, required=True)
    sigma_clip = SigmaClipField(load_default=None, allow_none=True,
                                metadata={"description": "true, false or {sigma (3), maxiters (5)}"})


class BoundingBoxSchema(Schema):
    """Zero-based, inclusive pixel index ranges."""

    x_min = fields.Integer()
    x_max = fields.Integer()
    y_min = fields.Integer()
    y_max = fields.Integer()


class RegionStatsResult(Schema):
    hdu = fields.Integer()
    hdu_name = fields.String()
    shape = fields.String()
    frame = fields.String()
    #: The region as a pixel region (sky regions after conversion with the image's WCS).
    pixel_region = fields.Dict()
    pixel_rule = fields.String()
    n_pixels = fields.Integer(metadata={"description": "pixels inside the region and on the image"})
    n_valid = fields.Integer(metadata={"description": "finite pixels, used for the statistics"})
    n_nan = fields.Integer(metadata={"description": "NaN/inf pixels inside the region (excluded)"})
    mean = fields.Float(allow_none=True)
    median = fields.Float(allow_none=True)
    std = fields.Float(allow_none=True)
    mad_std = fields.Float(allow_none=True)
    min = fields.Float(allow_none=True)
    max = fields.Float(allow_none=True)
    sum = fields.Float(allow_none=True)
    sigma_clip = fields.Nested(SigmaClipSchema, allow_none=True)
    clipped_mean = fields.Float(allow_none=True)
    clipped_median = fields.Float(allow_none=True)
    clipped_std = fields.Float(allow_none=True)
    unit = fields.String(allow_none=True)
    bbox = fields.Nested(BoundingBoxSchema)
    bbox_on_image = fields.Nested(BoundingBoxSchema)
    clipped_to_image = fields.Boolean()


# --- sources.detect -------------------------------------------------------------------------

METHODS = ("daofind", "segmentation")
DEFAULT_THRESHOLD_SIGMA = 5.0
MIN_THRESHOLD_SIGMA, MAX_THRESHOLD_SIGMA = 1.0, 50.0
DEFAULT_FWHM_PX = 3.0
MIN_FWHM_PX, MAX_FWHM_PX = 0.5, 20.0
DEFAULT_MIN_AREA_PX = 10
MIN_MIN_AREA_PX, MAX_MIN_AREA_PX = 1, 1000
DEFAULT_BKG_BOX_PX = 64
MIN_BKG_BOX_PX, MAX_BKG_BOX_PX = 16, 512
DEFAULT_MAX_SOURCES = 5000
MIN_MAX_SOURCES, MAX_MAX_SOURCES = 1, 100_000


class DetectInput(Schema):
    """Point sources (DAOStarFinder) or segments above ``threshold_sigma`` × background RMS."""

    file = InputFile(required=True)
    hdu = Hdu()
    method = fields.String(load_default="daofind", validate=validate.OneOf(METHODS))
    threshold_sigma = fields.Float(load_default=DEFAULT_THRESHOLD_SIGMA,
                                   validate=validate.Range(min=MIN_THRESHOLD_SIGMA, max=MAX_THRESHOLD_SIGMA))
    fwhm_px = fields.Float(load_default=DEFAULT_FWHM_PX, validate=validate.Range(min=MIN_FWHM_PX, max=MAX_FWHM_PX))
    #: Segmentation only: the smallest number of connected pixels above the threshold.
    n_pixels = fields.Integer(strict=True, load_default=DEFAULT_MIN_AREA_PX,
                              validate=validate.Range(min=MIN_MIN_AREA_PX, max=MAX_MIN_AREA_PX))
    #: Segmentation only: split blended sources (multi-threshold watershed).
    deblend = fields.Boolean(load_default=False)
    bkg_box = fields.Integer(strict=True, load_default=DEFAULT_BKG_BOX_PX,
                             validate=validate.Range(min=MIN_BKG_BOX_PX, max=MAX_BKG_BOX_PX))
    max_sources = fields.Integer(strict=True, load_default=DEFAULT_MAX_SOURCES,
                                 validate=validate.Range(min=MIN_MAX_SOURCES, max=MAX_MAX_SOURCES))

    @validates_schema
    def deblend_needs_segmentation(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("deblend") and data.get("method", "daofind") != "segmentation":
            raise ValidationError("deblend applies to method segmentation only", field_name="deblend")


class SourceSchema(Schema):
    id = fields.Integer()
    x = fields.Float()
    y = fields.Float()
    ra = fields.Float(allow_none=True)
    dec = fields.Float(allow_none=True)
    flux = fields.Float(allow_none=True)
    peak = fields.Float(allow_none=True)


class DetectResult(Schema):
    hdu = fields.Integer()
    hdu_name = fields.String()
    method = fields.String()
    n_sources = fields.Integer(metadata={"description": "sources found (before the max_sources cap)"})
    truncated = fields.Boolean()
    background_median = fields.Float(allow_none=True)
    background_rms = fields.Float(allow_none=True)
    threshold = fields.Float(allow_none=True)
    unit = fields.String(allow_none=True)
    has_wcs = fields.Boolean()
    sources = fields.List(fields.Nested(SourceSchema))
    outputs = fields.Dict()


REGION_STATS = register(
    JobType(
        name="region.stats",
        handler="worker.jobs.regionstats:region_stats",
        description="Statistics (mean, median, std, MAD, min, max, sum, optional sigma clipping) of the pixels "
                    "inside a rectangle, circle, ellipse or polygon given in pixel or ICRS coordinates.",
        input_schema=RegionStatsInput,
        result_schema=RegionStatsResult,
        timeout_s=120.0,
        retry=RetryPolicy(max_attempts=3, backoff_base_s=2.0, backoff_cap_s=60.0),
        resource_class="small",
        # Measured peak (tracemalloc, 2048×2048, a region covering the whole image, sigma clipping):
        # 43 B/px — the float64 image, the region's values and the copies median and clipping make.
        bytes_per_pixel=48.0,
    )
)

SOURCES_DETECT = register(
    JobType(
        name="sources.detect",
        handler="worker.jobs.detect:detect_sources",
        description="Source detection (DAOStarFinder or segmentation) on the background-subtracted image; "
                    "a catalogue with RA/Dec as JSON and ECSV, and an overlay PNG.",
        input_schema=DetectInput,
        result_schema=DetectResult,
        timeout_s=600.0,
        retry=RetryPolicy(max_attempts=3, backoff_base_s=2.0, backoff_cap_s=60.0),
        resource_class="medium",
        # Measured peak (tracemalloc, 2048×2048): daofind 46 B/px, segmentation (with or without
        # deblending) 50 B/px — image, background and RMS maps, convolved image, segment map, PNG.
        bytes_per_pixel=64.0,
    )
)
