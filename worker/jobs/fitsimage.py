"""Opening FITS inputs safely: the right HDU, native-endian floats, scaling applied, WCS, memory check.

Every image handler goes through :func:`load_image`, so the pitfalls are handled once:
big-endian arrays are converted to native order, BSCALE/BZERO are applied by astropy,
an image larger than the worker's budget is refused from its header before any pixel is
read, and the celestial WCS knows its ``pixel_shape`` (``calc_footprint`` needs it).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS, FITSFixedWarning

from worker.jobs.context import JobContext
from worker.jobs.errors import PermanentError

IMAGE_TYPES = (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)
TABLE_TYPES = (fits.BinTableHDU, fits.TableHDU)


def open_fits(path: Path) -> fits.HDUList:
    """Open a FITS file lazily (memory-mapped where possible); not FITS → PermanentError."""
    try:
        with open(path, "rb") as f:
            head = f.read(30)
        if not head.startswith(b"SIMPLE  =") or head[29:30] != b"T":
            raise PermanentError("the input is not a FITS file (it does not start with SIMPLE = T)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            # memmap=None, not True: astropy refuses to scale (BSCALE/BZERO/BLANK) a strictly
            # memory-mapped image, and falls back to reading such HDUs into memory otherwise.
            return fits.open(path, memmap=None, lazy_load_hdus=False)
    except (OSError, ValueError, TypeError) as exc:
        raise PermanentError(f"the input is not a readable FITS file: {exc}") from None


def _selector(hdu: int | str) -> int | str | tuple[str, int]:
    if isinstance(hdu, str) and "," in hdu:
        name, _, ver = hdu.partition(",")
        if ver.strip().isdigit():
            return name.strip(), int(ver)
    return hdu


def data_shape(h: Any) -> tuple[int, ...]:
    """The array shape an HDU declares in its header, numpy order (no data read)."""
    header = h.header
    # astropy ≥ 7 shows a CompImageHDU's image header (NAXISn); older versions the table's (ZNAXISn).
    if isinstance(h, fits.CompImageHDU) and "ZNAXIS" in header:
        naxis = int(header.get("ZNAXIS", 0))
        return tuple(int(header.get(f"ZNAXIS{i}", 0)) for i in range(naxis, 0, -1))
    naxis = int(header.get("NAXIS", 0))
    return tuple(int(header.get(f"NAXIS{i}", 0)) for i in range(naxis, 0, -1))


def _is_2d_image(h: Any) -> bool:
    shape = data_shape(h)
    return isinstance(h, IMAGE_TYPES) and len(shape) >= 2 and all(n > 0 for n in shape) \
        and all(n == 1 for n in shape[:-2])


def find_hdu(hdul: fits.HDUList, hdu: int | str | None, kind: str = "image") -> int:
    """The index of the HDU ``hdu`` names, or of the first 2-D image (``kind="table"``: table) HDU."""
    wanted = IMAGE_TYPES if kind == "image" else TABLE_TYPES
    if hdu is None:
        for index, h in enumerate(hdul):
            if (kind == "image" and _is_2d_image(h)) or (kind == "table" and isinstance(h, TABLE_TYPES)):
                return index
        raise PermanentError(f"the file has no {'2-D image' if kind == 'image' else 'table'} HDU")
    try:
        index = hdul.index_of(_selector(hdu))
        if not 0 <= index < len(hdul):  # index_of passes an integer through unchecked
            raise IndexError(index)
    except (KeyError, IndexError):
        raise PermanentError(f"the file has no HDU {hdu!r} (it has {len(hdul)}: "
                             f"{', '.join(h.name or str(i) for i, h in enumerate(hdul))})") from None
    if not isinstance(hdul[index], wanted) or (kind == "image" and not _is_2d_image(hdul[index])):
        raise PermanentError(f"HDU {hdu!r} is not a {'2-D image' if kind == 'image' else 'table'}")
    return index


@dataclass
class Image:
    """A 2-D image in native byte order, with its header, celestial WCS (or None) and unit."""

    data: np.ndarray
    header: fits.Header
    wcs: WCS | None
    hdu_index: int
    hdu_name: str
    unit: str | None


def celestial_wcs(header: fits.Header, shape: tuple[int, int]) -> WCS | None:
    """The header's celestial WCS with ``pixel_shape`` set, or None when it has none."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        warnings.simplefilter("ignore", AstropyWarning)
        try:
            wcs = WCS(header, naxis=2).celestial
        except (ValueError, KeyError, MemoryError) as exc:
            raise PermanentError(f"the image's WCS cannot be read: {exc}") from None
    if not wcs.has_celestial or wcs.naxis != 2:
        return None
    wcs.pixel_shape = (shape[1], shape[0])
    return wcs


def load_image(hdul: fits.HDUList, hdu: int | str | None, ctx: JobContext, bytes_per_pixel: float,
               dtype: type = np.float64) -> Image:
    """Read one 2-D image HDU as ``dtype`` (native order, BSCALE/BZERO applied).

    ``bytes_per_pixel`` is the handler's peak memory per pixel; the image is refused before
    reading when ``pixels × bytes_per_pixel`` exceeds the worker's budget.
    """
    index = find_hdu(hdul, hdu, "image")
    h = hdul[index]
    ny, nx = data_shape(h)[-2:]
    shape = (ny, nx)
    ctx.check_memory(shape[0] * shape[1] * bytes_per_pixel, f"a {shape[1]}×{shape[0]} image")
    try:
        raw = h.data
    except (OSError, ValueError, TypeError) as exc:
        raise PermanentError(f"HDU {index} cannot be read: {exc}") from None
    data = np.array(raw.reshape(shape), dtype=np.dtype(dtype).newbyteorder("="), copy=True)
    header = h.header
    unit = header.get("BUNIT")
    return Image(data, header, celestial_wcs(header, shape), index, h.name or "", str(unit) if unit else None)
