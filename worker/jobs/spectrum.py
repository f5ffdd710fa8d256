"""spectrum.extract: a 1-D spectrum from an EXTRACT1D-style table, decimated for plotting.

The table is JWST's x1d layout (an ``EXTRACT1D`` binary table, one row per wavelength, with
WAVELENGTH, FLUX and FLUX_ERROR or ERROR columns) or anything alike: column names are
matched case-insensitively against common spellings, or given explicitly. Vector columns
(HST COS/STIS x1d: one row per segment or order, each a vector) are concatenated and sorted by
wavelength. Points with a non-finite wavelength are dropped (they cannot be plotted).

Decimation (when more than ``max_points`` remain): the first and last points are kept, and
the points between are split into ``(max_points - 2) // 2`` bins of equal point count, each
contributing its minimum- and maximum-flux points, in wavelength order. Peaks and troughs
survive however far the spectrum is thinned; a bin whose flux is all NaN keeps one point,
so gaps still show as nulls. Bins of equal count rather than equal width spend the whole
budget even when the spectrum has gaps in wavelength (between detector segments, say).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning

from worker.jobs.context import JobContext
from worker.jobs.errors import PermanentError
from worker.jobs.fitsimage import TABLE_TYPES, find_hdu, open_fits
from worker.jobs.fitstables import TableReader, resolve_column
from worker.jobs.jsonsafe import jsonable

#: Column spellings tried in order when the job does not name the column.
WAVELENGTH_NAMES = ("WAVELENGTH", "WAVE", "LAMBDA", "WAVELEN", "LAM")
FLUX_NAMES = ("FLUX", "FLUX_DENSITY", "FLAM", "FNU")
ERROR_NAMES = ("FLUX_ERROR", "ERROR", "FLUX_ERR", "ERR", "FLUXERR", "SIGMA", "UNCERTAINTY")
SPECTRUM_EXTNAME = "EXTRACT1D"
#: Peak bytes per spectrum point: three float64 columns, the selection, sort order and bin work arrays.
BYTES_PER_POINT = 96.0


def spectrum_extract(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Wavelength, flux and error of a spectrum in ``payload["file"]``, at most ``max_points`` points."""
    path = ctx.input_path(payload["file"])
    ctx.report_progress(0.0, "reading", "finding the spectrum")
    with open_fits(path) as hdul, warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        index = spectrum_hdu(hdul, payload)
        hdu = hdul[index]
        wave_col, flux_col, err_col = spectrum_columns(hdu, payload)
        with TableReader(path, hdul, index) as reader:
            cell = int(np.prod(hdu.columns.dtype[wave_col].shape, dtype=np.int64))
            ctx.check_memory(reader.n_rows * cell * BYTES_PER_POINT, f"a spectrum of {reader.n_rows * cell} points")
            wave = reader.numeric(wave_col)
            flux = reader.numeric(flux_col)
            error = reader.numeric(err_col) if err_col else None
            units = [_unit(reader.column(name)) if name else None for name in (wave_col, flux_col, err_col)]
    for name, values in ((flux_col, flux), (err_col, error)):
        if values is not None and values.shape != wave.shape:
            raise PermanentError(f"column {name!r} has cells of shape {list(values.shape[1:])}, the wavelength "
                                 f"column {wave_col!r} of {list(wave.shape[1:])}")
    ctx.check_cancelled()

    ctx.report_progress(50.0, "selecting", f"{wave.size} points")
    wave, flux = wave.ravel(), flux.ravel()
    error = error.ravel() if error is not None else None
    low, high = payload["wave_min"], payload["wave_max"]
    keep = np.isfinite(wave)
    if low is not None:
        keep &= wave >= low
    if high is not None:
        keep &= wave <= high
    selected = np.flatnonzero(keep)
    order = selected[np.argsort(wave[selected], kind="stable")]
    ctx.check_cancelled()

    ctx.report_progress(75.0, "decimating", f"{order.size} points in range")
    picked = order[minmax_decimate(flux[order], payload["max_points"])]
    ctx.report_progress(100.0, "done")
    return jsonable({
        "hdu_index": index,
        "hdu_name": hdu.name or "",
        "wavelength_column": wave_col,
        "flux_column": flux_col,
        "error_column": err_col,
        "wavelength_unit": units[0],
        "flux_unit": units[1],
        "error_unit": units[2],
        "wavelength": wave[picked],
        "flux": flux[picked],
        "error": error[picked] if error is not None else None,
        "n_points_total": int(wave.size),
        "n_points_in_range": int(order.size),
        "n_points_returned": int(picked.size),
        "decimated": bool(picked.size < order.size),
        "range": {"requested": [low, high],
                  "returned": [wave[picked[0]], wave[picked[-1]]] if picked.size else None},
    })


def minmax_decimate(flux: np.ndarray, max_points: int) -> np.ndarray:
    """Indices (increasing) of at most ``max_points`` points of ``flux`` that keep its shape for a plot:
    the first and last point, and the minimum and maximum of each of ``(max_points - 2) // 2``
    equal-count bins between them (NaN flux is ignored unless a whole bin is NaN)."""
    n = len(flux)
    if n <= max_points:
        return np.arange(n)
    n_bins = (max_points - 2) // 2
    interior = flux[1:-1]
    # Bins of equal count (sizes differ by at most one); each has ≥ 2 points as n - 2 > 2 * n_bins.
    starts = np.linspace(0, len(interior), n_bins + 1).astype(np.int64)[:-1]
    bin_of = np.repeat(np.arange(n_bins), np.diff(np.append(starts, len(interior))))
    picks = [np.array([0, n - 1])]
    for blank, reduce in ((np.inf, np.minimum), (-np.inf, np.maximum)):
        # NaN sorts as the worst candidate, so an all-NaN bin yields its first point (a gap in the plot).
        key = np.where(np.isnan(interior), blank, interior)
        best = reduce.reduceat(key, starts)
        hits = np.flatnonzero(key == best[bin_of])
        picks.append(1 + hits[np.searchsorted(hits, starts)])
    return np.unique(np.concatenate(picks))


def spectrum_hdu(hdul: fits.HDUList, payload: dict[str, Any]) -> int:
    """The HDU the job names, else the first EXTRACT1D table, else the first table with usable columns."""
    if payload["hdu"] is not None:
        return find_hdu(hdul, payload["hdu"], "table")
    tables = [i for i, h in enumerate(hdul) if isinstance(h, TABLE_TYPES)]
    if not tables:
        raise PermanentError("the file has no table HDU (a spectrum needs an EXTRACT1D-style table)")
    for index in tables:
        if hdul[index].name.upper() == SPECTRUM_EXTNAME:
            return index
    for index in tables:
        try:
            spectrum_columns(hdul[index], payload)
        except PermanentError:
            continue
        return index
    raise PermanentError(
        f"no table HDU has wavelength and flux columns (looked for {'/'.join(WAVELENGTH_NAMES)} and "
        f"{'/'.join(FLUX_NAMES)}); name them with wavelength_column and flux_column, or give hdu")


def spectrum_columns(hdu: Any, payload: dict[str, Any]) -> tuple[str, str, str | None]:
    """The table's wavelength, flux and (optional) error column names."""
    wave = _column(hdu, payload["wavelength_column"], WAVELENGTH_NAMES, "wavelength")
    flux = _column(hdu, payload["flux_column"], FLUX_NAMES, "flux")
    if wave is None or flux is None:
        role, names = ("wavelength", WAVELENGTH_NAMES) if wave is None else ("flux", FLUX_NAMES)
        raise PermanentError(f"HDU {hdu.name or ''!r} has no {role} column (looked for {', '.join(names)}; "
                             f"it has: {', '.join(hdu.columns.names)}); name it with {role}_column")
    return wave, flux, _column(hdu, payload["error_column"], ERROR_NAMES, "error")


def _column(hdu: Any, given: str | None, candidates: tuple[str, ...], role: str) -> str | None:
    """The column the job names (which must exist), else the first of ``candidates`` present, else None."""
    if given is not None:
        found = resolve_column(hdu, given)
        if found is None:
            raise PermanentError(f"HDU {hdu.name or ''!r} has no {role} column {given!r} "
                                 f"(it has: {', '.join(hdu.columns.names)})")
        return found
    for name in candidates:
        if (found := resolve_column(hdu, name)) is not None:
            return found
    return None


def _unit(col: fits.Column) -> str | None:
    return str(col.unit) if col.unit else None
