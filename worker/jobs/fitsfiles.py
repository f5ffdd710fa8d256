"""fits.inspect and table.page: what a FITS file holds, and one page of one of its tables.

``fits.inspect`` reads headers only — never pixels or rows — so it costs the same on a
10 GB mosaic as on a thumbnail. For each HDU it gives index, name, type, shape (numpy order;
rows for tables), BITPIX and BUNIT; for images the celestial WCS (pixel scale in arcsec from
``proj_plane_pixel_scales``, RA/Dec of the four corner pixel centres from ``calc_footprint``,
and of the centre), for tables the columns and row count.

``table.page`` returns rows [offset, offset + limit) as a list of lists in the order of the
``columns`` it lists. Only those rows are read (see :mod:`worker.jobs.fitstables`). An
offset at or past the end gives an empty page with ``total_rows`` set, so a client paging
forward learns it has reached the end rather than getting an error.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyError
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs.utils import proj_plane_pixel_scales, wcs_to_celestial_frame

from worker.jobs.context import JobContext
from worker.jobs.errors import PermanentError
from worker.jobs.fitsimage import IMAGE_TYPES, TABLE_TYPES, celestial_wcs, data_shape, find_hdu, open_fits
from worker.jobs.fitstables import TableReader, column_infos, resolve_columns
from worker.jobs.jsonsafe import jsonable

#: HDUs described at most; a file with more says so (``hdus_truncated``).
MAX_HDUS_LISTED = 1000
ARCSEC_PER_DEG = 3600.0
#: Stored bytes one page may carry (≈ 0.5–1 million numbers, tens of MB of JSON).
MAX_PAGE_BYTES = 4 * 2**20
#: Python objects per stored byte while a page is converted (a float32 becomes a 24-byte float).
PAGE_MEMORY_PER_STORED_BYTE = 16.0


# --- fits.inspect -------------------------------------------------------------------------------

def inspect(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Describe every HDU of ``payload["file"]`` from its headers."""
    path = ctx.input_path(payload["file"])
    ctx.report_progress(0.0, "reading", "reading the headers")
    with open_fits(path) as hdul:
        n_hdus = len(hdul)
        hdus = []
        ctx.report_progress(20.0, "describing", f"{n_hdus} HDUs")
        for index, hdu in enumerate(itertools.islice(hdul, MAX_HDUS_LISTED)):
            ctx.check_cancelled()
            hdus.append(describe_hdu(hdu, index, payload["include_header"], payload["max_cards"]))
    ctx.report_progress(100.0, "done")
    return jsonable({"n_hdus": n_hdus, "size_bytes": path.stat().st_size,
                     "hdus_truncated": n_hdus > MAX_HDUS_LISTED, "hdus": hdus})


def describe_hdu(hdu: Any, index: int, include_header: bool, max_cards: int) -> dict[str, Any]:
    """One HDU's entry in the fits.inspect result (no data read)."""
    header = hdu.header
    bunit = header.get("BUNIT")
    entry: dict[str, Any] = {
        "index": index,
        "name": hdu.name or "",
        "ver": int(hdu.ver),
        "type": type(hdu).__name__,
        "shape": list(data_shape(hdu)),
        "bitpix": header.get("BITPIX"),
        "bunit": str(bunit) if bunit else None,
    }
    with warnings.catch_warnings():
        # Non-standard but readable headers and WCS keywords are the norm in archives; describe them.
        warnings.simplefilter("ignore", AstropyWarning)
        if isinstance(hdu, TABLE_TYPES):
            n_rows = int(header.get("NAXIS2", 0))
            columns = [info.as_dict() for info in column_infos(hdu)]
            entry["shape"] = [n_rows]
            entry["table"] = {"n_rows": n_rows, "n_columns": len(columns), "columns": columns}
        elif isinstance(hdu, IMAGE_TYPES):
            entry["image"] = describe_image(header, entry["shape"])
            if isinstance(hdu, fits.CompImageHDU):
                entry["compression"] = hdu.compression_type
        if include_header:
            entry["header"] = header_cards(header, max_cards)
            entry["header_cards"] = len(header)
            entry["header_truncated"] = len(header) > max_cards
    return entry


def describe_image(header: fits.Header, shape: list[int]) -> dict[str, Any]:
    """Celestial WCS facts of an image header: pixel scale, corner and centre RA/Dec (degrees)."""
    if len(shape) < 2 or any(n <= 0 for n in shape):
        return {"has_celestial_wcs": False}
    ny, nx = shape[-2:]
    try:
        wcs = celestial_wcs(header, (ny, nx))
        if wcs is None:
            return {"has_celestial_wcs": False}
        scales = proj_plane_pixel_scales(wcs) * ARCSEC_PER_DEG
        # calc_footprint: RA/Dec of the centres of pixels (1,1), (1,ny), (nx,ny), (nx,1).
        corners = wcs.calc_footprint()
        ra, dec = wcs.pixel_to_world_values((nx - 1) / 2.0, (ny - 1) / 2.0)
    except (PermanentError, ValueError, MemoryError) as exc:
        # A broken WCS is worth reporting, not worth failing the whole inspection for.
        return {"has_celestial_wcs": False, "wcs_error": str(exc)}
    try:
        frame: str | None = wcs_to_celestial_frame(wcs).name
    except ValueError:
        frame = None
    return {
        "has_celestial_wcs": True,
        "ctype": [str(c) for c in wcs.wcs.ctype],
        # Coordinates are in this frame (icrs or fk5 for RA/Dec; galactic headers give l/b).
        "frame": frame,
        "pixel_scale_arcsec": [float(s) for s in scales],
        "footprint": np.asarray(corners).tolist(),
        "centre": {"ra": float(ra), "dec": float(dec)},
    }


def header_cards(header: fits.Header, max_cards: int) -> list[dict[str, Any]]:
    """The first ``max_cards`` cards as {keyword, value, comment}; undefined values are null."""
    cards = []
    for card in itertools.islice(header.cards, max_cards):
        try:
            value: Any = card.value
            comment = card.comment
        except (VerifyError, ValueError):
            value, comment = card.image.strip(), None
        if isinstance(value, fits.card.Undefined):
            value = None
        elif isinstance(value, complex):
            value = [value.real, value.imag]
        cards.append({"keyword": card.keyword, "value": value, "comment": comment or None})
    return cards


# --- table.page ---------------------------------------------------------------------------------

def table_page(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Rows [offset, offset + limit) of a table HDU of ``payload["file"]``, as lists of cells."""
    path = ctx.input_path(payload["file"])
    offset, limit = payload["offset"], payload["limit"]
    ctx.report_progress(0.0, "reading", "reading the table header")
    with open_fits(path) as hdul, warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        index = find_hdu(hdul, payload["hdu"], "table")
        hdu = hdul[index]
        names = resolve_columns(hdu, payload["columns"])
        infos = {info.name: info for info in column_infos(hdu)}
        with TableReader(path, hdul, index) as reader:
            total = reader.n_rows
            start, stop = min(offset, total), min(offset + limit, total)
            stored = reader.page_bytes(names, start, stop)
            if stored > MAX_PAGE_BYTES:
                raise PermanentError(
                    f"a page of {stop - start} rows of these columns holds {stored / 2**20:,.1f} MiB, more than "
                    f"the {MAX_PAGE_BYTES / 2**20:,.0f} MiB a page may hold: ask for fewer rows or columns")
            ctx.check_memory(stored * PAGE_MEMORY_PER_STORED_BYTE, f"a page of {stop - start} rows")
            columns: list[list[Any]] = []
            for done, name in enumerate(names):
                ctx.check_cancelled()
                ctx.report_progress(10.0 + 80.0 * done / len(names), "reading", f"column {name}")
                columns.append(reader.cells(name, start, stop))
    rows = [list(row) for row in zip(*columns, strict=True)] if names else []
    ctx.report_progress(100.0, "done")
    return jsonable({
        "hdu_index": index,
        "hdu_name": hdu.name or "",
        "total_rows": total,
        "offset": offset,
        "limit": limit,
        "n_rows": len(rows),
        "columns": [infos[name].as_dict() for name in names],
        "rows": rows,
    })
