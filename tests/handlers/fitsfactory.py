"""Synthetic FITS files with a real celestial WCS, for the handler tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

#: Near M13, far from the poles and from RA = 0, so no wrap-around surprises.
RA_DEG, DEC_DEG = 250.42, 36.46


def make_wcs(shape: tuple[int, int], ra: float = RA_DEG, dec: float = DEC_DEG, scale_arcsec: float = 0.5,
             rotation_deg: float = 0.0, crpix: tuple[float, float] | None = None) -> WCS:
    """A TAN WCS centred on (ra, dec) with square pixels of ``scale_arcsec`` (north up, east left)."""
    ny, nx = shape
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = list(crpix) if crpix else [(nx + 1) / 2, (ny + 1) / 2]
    s = scale_arcsec / 3600.0
    c, si = np.cos(np.radians(rotation_deg)), np.sin(np.radians(rotation_deg))
    wcs.wcs.cd = [[-s * c, s * si], [s * si, s * c]]
    wcs.pixel_shape = (nx, ny)
    return wcs


def gaussian_stars(shape: tuple[int, int], positions: Sequence[tuple[float, float]], flux: float | Sequence[float],
                   fwhm_px: float = 3.0, sky: float = 100.0, noise: float = 2.0, seed: int = 1) -> np.ndarray:
    """Sky plus Gaussian noise plus circular Gaussian stars at (x, y) zero-based pixel positions."""
    rng = np.random.default_rng(seed)
    image = rng.normal(sky, noise, shape)
    sigma = fwhm_px / 2.3548
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    fluxes = [float(flux)] * len(positions) if isinstance(flux, (int, float)) else [float(f) for f in flux]
    for (x, y), f in zip(positions, fluxes, strict=True):
        r = int(6 * sigma) + 1
        x0, x1, y0, y1 = max(0, int(x) - r), min(shape[1], int(x) + r + 2), max(0, int(y) - r), min(shape[0], int(y) + r + 2)
        sub_x, sub_y = xx[y0:y1, x0:x1], yy[y0:y1, x0:x1]
        image[y0:y1, x0:x1] += f / (2 * np.pi * sigma**2) * np.exp(
            -((sub_x - x) ** 2 + (sub_y - y) ** 2) / (2 * sigma**2))
    return image


def write_image(path: Path, data: np.ndarray, wcs: WCS | None = None, bunit: str | None = "MJy/sr",
                extname: str | None = "SCI", big_endian: bool = True, bscale: float | None = None,
                bzero: float | None = None, extra_hdus: Sequence[fits.hdu.base.ExtensionHDU] = ()) -> Path:
    """Write ``data`` as an image extension (empty primary, like JWST/HST products), or as the
    primary HDU when ``extname`` is None. ``bscale``/``bzero`` store it as scaled 16-bit integers."""
    header = wcs.to_header() if wcs is not None else fits.Header()
    if bunit:
        header["BUNIT"] = bunit
    array = data.astype(">f4" if big_endian else "<f4")
    if extname is None:
        hdu: fits.PrimaryHDU | fits.ImageHDU = fits.PrimaryHDU(array, header=header)
        hdus = [hdu]
    else:
        hdu = fits.ImageHDU(array, header=header, name=extname)
        hdus = [fits.PrimaryHDU(), hdu]
    if bscale is not None or bzero is not None:
        hdu.scale("int16", bscale=bscale or 1.0, bzero=bzero or 0.0)
    fits.HDUList([*hdus, *extra_hdus]).writeto(path, overwrite=True)
    return path


def write_sparse(path: Path, headers: Sequence[fits.Header]) -> Path:
    """A FITS file of the HDUs these headers declare, with zero-filled data that is never written: the file is
    sparse, so a table of a hundred million rows or a 10⁸-pixel image costs neither disk nor time. The first
    header must be a primary one (SIMPLE = T)."""
    with open(path, "wb") as f:
        for header in headers:
            f.write(header.tostring().encode("ascii"))
            naxis = int(header.get("NAXIS", 0))
            elements = int(np.prod([int(header[f"NAXIS{i}"]) for i in range(1, naxis + 1)])) if naxis else 0
            size = (elements * abs(int(header["BITPIX"])) // 8 + int(header.get("PCOUNT", 0))) * int(
                header.get("GCOUNT", 1))
            f.truncate(f.tell() + size + (-size) % 2880)
            f.seek(0, 2)
    return path
