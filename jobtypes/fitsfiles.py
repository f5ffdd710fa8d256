"""Input and result schemas of fits.inspect, table.page and spectrum.extract.

These three read FITS files without processing pixels: ``fits.inspect`` reads headers only,
``table.page`` reads only the rows of one page of a binary table, and ``spectrum.extract``
reads three columns of an EXTRACT1D-style table. All are cheap ("small", no bytes per pixel).
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from jobtypes.catalogue import JobType, RetryPolicy, register
from jobtypes.inputs import Hdu, InputFile

DEFAULT_MAX_CARDS = 500
MAX_MAX_CARDS = 5000
DEFAULT_PAGE_ROWS = 100
MAX_PAGE_ROWS = 1000
#: FITS allows at most 999 columns in a table.
MAX_COLUMNS = 999
MAX_COLUMN_NAME_LENGTH = 68
DEFAULT_MAX_POINTS = 2000
MIN_MAX_POINTS = 10
MAX_MAX_POINTS = 100_000
INSPECT_TIMEOUT_S = 120.0
TABLE_TIMEOUT_S = 120.0
SPECTRUM_TIMEOUT_S = 300.0
#: Reading a file fails again the same way; one retry covers a flaky input fetch.
READ_RETRY = RetryPolicy(max_attempts=2, backoff_base_s=2.0, backoff_cap_s=30.0)


def _column_name(**kwargs: Any) -> fields.String:
    return fields.String(validate=validate.Length(min=1, max=MAX_COLUMN_NAME_LENGTH), **kwargs)


# --- fits.inspect -------------------------------------------------------------------------------

class FitsInspectInput(Schema):
    """Describe every HDU of a FITS file from its headers (no pixel or row is read)."""

    file = InputFile(required=True)
    #: Also return the header cards of each HDU.
    include_header = fields.Boolean(load_default=False)
    #: At most this many header cards per HDU (the result says when an HDU's header was cut).
    max_cards = fields.Integer(strict=True, load_default=DEFAULT_MAX_CARDS,
                               validate=validate.Range(min=0, max=MAX_MAX_CARDS))


class FitsInspectResult(Schema):
    n_hdus = fields.Integer(required=True)
    size_bytes = fields.Integer()
    hdus_truncated = fields.Boolean()
    #: Per HDU: index, name, ver, type, shape, bitpix, bunit; ``image`` (WCS, pixel scale,
    #: footprint, centre) or ``table`` (rows, columns); ``header`` when asked for.
    hdus = fields.List(fields.Dict(), required=True)


# --- table.page ---------------------------------------------------------------------------------

class TablePageInput(Schema):
    """One page of rows of a FITS table; only those rows are read."""

    file = InputFile(required=True)
    hdu = Hdu(metadata={"description": "Table HDU index or name (default: the first table HDU)."})
    offset = fields.Integer(strict=True, load_default=0, validate=validate.Range(min=0))
    limit = fields.Integer(strict=True, load_default=DEFAULT_PAGE_ROWS,
                           validate=validate.Range(min=1, max=MAX_PAGE_ROWS))
    #: Only these columns, in this order (names match case-insensitively); default all.
    columns = fields.List(_column_name(), load_default=None, allow_none=True,
                          validate=validate.Length(min=1, max=MAX_COLUMNS))


class TableColumnInfo(Schema):
    name = fields.String(required=True)
    format = fields.String(required=True)
    unit = fields.String(allow_none=True)
    dtype = fields.String(required=True)
    shape = fields.List(fields.Integer(), allow_none=True)


class TablePageResult(Schema):
    hdu_index = fields.Integer(required=True)
    hdu_name = fields.String(required=True)
    total_rows = fields.Integer(required=True)
    offset = fields.Integer(required=True)
    limit = fields.Integer(required=True)
    n_rows = fields.Integer(required=True)
    columns = fields.List(fields.Nested(TableColumnInfo), required=True)
    #: A list of rows, each a list of cells in the order of ``columns``: strings for text,
    #: lists for vector cells, [re, im] for complex numbers, null for NaN and undefined values.
    #: An offset at or past the end gives no rows (``total_rows`` says how many there are).
    rows = fields.List(fields.List(fields.Raw(allow_none=True)), required=True)


# --- spectrum.extract ---------------------------------------------------------------------------

class SpectrumExtractInput(Schema):
    """A 1-D spectrum from an EXTRACT1D-style table, decimated for plotting."""

    file = InputFile(required=True)
    hdu = Hdu(metadata={"description": "Table HDU index or name (default: EXTRACT1D, else the first "
                                       "table with wavelength and flux columns)."})
    #: Wavelength range to return, in the table's wavelength unit (inclusive).
    wave_min = fields.Float(load_default=None, allow_none=True)
    wave_max = fields.Float(load_default=None, allow_none=True)
    #: At most this many points; longer spectra keep each bin's minimum and maximum flux.
    max_points = fields.Integer(strict=True, load_default=DEFAULT_MAX_POINTS,
                                validate=validate.Range(min=MIN_MAX_POINTS, max=MAX_MAX_POINTS))
    #: Column names (case-insensitive); default: WAVELENGTH/WAVE/LAMBDA, FLUX, FLUX_ERROR/ERROR/ERR.
    wavelength_column = _column_name(load_default=None, allow_none=True)
    flux_column = _column_name(load_default=None, allow_none=True)
    error_column = _column_name(load_default=None, allow_none=True)

    @validates_schema
    def range_in_order(self, data: dict[str, Any], **_: Any) -> None:
        low, high = data.get("wave_min"), data.get("wave_max")
        if low is not None and high is not None and not low < high:
            raise ValidationError("must be greater than wave_min", field_name="wave_max")


class SpectrumExtractResult(Schema):
    hdu_index = fields.Integer(required=True)
    hdu_name = fields.String(required=True)
    wavelength_column = fields.String(required=True)
    flux_column = fields.String(required=True)
    error_column = fields.String(allow_none=True)
    wavelength_unit = fields.String(allow_none=True)
    flux_unit = fields.String(allow_none=True)
    error_unit = fields.String(allow_none=True)
    #: Increasing wavelength; flux and error at the same points (null where NaN).
    wavelength = fields.List(fields.Float(allow_none=True), required=True)
    flux = fields.List(fields.Float(allow_none=True), required=True)
    error = fields.List(fields.Float(allow_none=True), allow_none=True)
    n_points_total = fields.Integer(required=True)
    n_points_in_range = fields.Integer(required=True)
    n_points_returned = fields.Integer(required=True)
    decimated = fields.Boolean(required=True)
    #: ``requested``: [wave_min, wave_max] as given; ``returned``: the span of the points returned.
    range = fields.Dict(required=True)


FITS_INSPECT = register(
    JobType(
        name="fits.inspect",
        handler="worker.jobs.fitsfiles:inspect",
        description="HDU list of a FITS file: shapes, units, WCS footprints (RA/Dec corners), table columns; "
                    "optionally header cards. Reads headers only.",
        input_schema=FitsInspectInput,
        result_schema=FitsInspectResult,
        timeout_s=INSPECT_TIMEOUT_S,
        retry=READ_RETRY,
        resource_class="small",
        bytes_per_pixel=0.0,
    )
)

TABLE_PAGE = register(
    JobType(
        name="table.page",
        handler="worker.jobs.fitsfiles:table_page",
        description="A page of rows of a FITS table (bytes→str, vectors→lists, NaN→null); only the page is read.",
        input_schema=TablePageInput,
        result_schema=TablePageResult,
        timeout_s=TABLE_TIMEOUT_S,
        retry=READ_RETRY,
        resource_class="small",
        bytes_per_pixel=0.0,
    )
)

SPECTRUM_EXTRACT = register(
    JobType(
        name="spectrum.extract",
        handler="worker.jobs.spectrum:spectrum_extract",
        description="1-D spectrum (wavelength, flux, error) from an EXTRACT1D-style table, min/max-decimated "
                    "for plotting.",
        input_schema=SpectrumExtractInput,
        result_schema=SpectrumExtractResult,
        timeout_s=SPECTRUM_TIMEOUT_S,
        retry=READ_RETRY,
        resource_class="small",
        bytes_per_pixel=0.0,
    )
)


# --- fits.thumbnail -----------------------------------------------------------------------------

THUMBNAIL_SIZE_PX = 256


class FitsThumbnailInput(Schema):
    """A small quick-look picture of one image HDU (zscale-like percentiles, asinh stretch)."""

    file = InputFile(required=True)
    hdu = Hdu()
    #: The picture's longer side, in pixels.
    size = fields.Integer(strict=True, load_default=THUMBNAIL_SIZE_PX, validate=validate.Range(min=32, max=1024))


class FitsThumbnailResult(Schema):
    hdu = fields.Integer(required=True)
    hdu_name = fields.String()
    width = fields.Integer(required=True)
    height = fields.Integer(required=True)
    #: The output's name: ``thumbnail.png``.
    file = fields.String(required=True)


FITS_THUMBNAIL = register(
    JobType(
        name="fits.thumbnail",
        handler="worker.jobs.thumbnail:thumbnail",
        description="A quick-look PNG (at most 1024 px on a side) of one image HDU of a FITS file, as the "
                    "console shows beside each uploaded file.",
        input_schema=FitsThumbnailInput,
        result_schema=FitsThumbnailResult,
        timeout_s=INSPECT_TIMEOUT_S,
        retry=READ_RETRY,
        resource_class="small",
        # float32 pixels (4), the binned copy and the picture buffers (at most as many again).
        bytes_per_pixel=12.0,
    )
)
