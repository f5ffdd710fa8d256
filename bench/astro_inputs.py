"""Synthetic 2048×2048 inputs for the ``jobtypes`` scenario, written once into ``data_dir/astro-inputs/``.

The images look like calibrated survey data: an empty primary HDU and a ``SCI`` image
extension of big-endian float32 (BITPIX -32) with a celestial TAN WCS, sky plus Gaussian
noise, one bad column of NaN, and stars drawn from one sky catalogue, so every image of the
field shows the same stars where it overlaps the others:

- ``image.fits``: the reference field (region.stats, sources.detect, fits.inspect, the first
  mosaic tile and the first composite channel);
- ``tile2.fits``: the neighbouring field, 70 % of a width east, so the mosaic tiles overlap by 30 %;
- ``channel2.fits``: the reference grid in another band; ``channel3.fits``: a third band on a
  grid rotated by 12° and shifted by 40″, so the composite must reproject it;
- ``catalog.fits``: a ``CATALOG`` binary table of 100 000 rows (integer, float, string and
  vector columns) for table.page;
- ``x1d.fits``: a JWST-style ``EXTRACT1D`` table of 100 000 points (WAVELENGTH, FLUX,
  FLUX_ERROR, DQ) for spectrum.extract.

Everything is seeded, so the files are the same on every machine. A ``manifest.json``
records :data:`INPUTS_VERSION`; the files are made again when it is missing or differs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

#: Bump when the generator changes, so old files are not reused.
INPUTS_VERSION = 1
SHAPE = (2048, 2048)
#: The COSMOS field: far from the poles and from RA = 0, so no wrap-around.
FIELD_RA_DEG, FIELD_DEC_DEG = 150.12, 2.21
PIXEL_SCALE_ARCSEC = 0.5
#: Offset of the second mosaic tile, in widths (1 − overlap).
TILE2_OFFSET_WIDTHS = 0.7
CHANNEL3_ROTATION_DEG = 12.0
CHANNEL3_SHIFT_ARCSEC = 40.0
STARS_PER_TILE = 1500
STAR_FWHM_PX = 3.0
#: Star fluxes (sum of the stamp, data units): a Pareto tail from this minimum.
MIN_STAR_FLUX, STAR_FLUX_SLOPE = 300.0, 1.5
STAMP_HALF_PX = 7
BAD_COLUMN_X = 1500
TABLE_ROWS = 100_000
SPECTRUM_POINTS = 100_000
SPECTRUM_RANGE_UM = (0.6, 5.3)
SEED = 20261201

NAMES = ("image", "tile2", "channel2", "channel3", "catalog", "spectrum")
FILE_NAMES = {"image": "image.fits", "tile2": "tile2.fits", "channel2": "channel2.fits",
              "channel3": "channel3.fits", "catalog": "catalog.fits", "spectrum": "x1d.fits"}


@dataclass(frozen=True)
class Band:
    """How one band renders the field: sky level, noise and a flux scale for the stars."""

    name: str
    sky: float
    noise: float
    flux_scale: float


BANDS = {"F150W": Band("F150W", 100.0, 5.0, 1.0), "F277W": Band("F277W", 140.0, 6.0, 1.4),
         "F444W": Band("F444W", 80.0, 4.0, 0.8)}


def tan_wcs(ra_deg: float, dec_deg: float, rotation_deg: float = 0.0) -> WCS:
    """A TAN WCS of :data:`SHAPE` centred on (ra, dec), north up and east left before rotation."""
    ny, nx = SHAPE
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra_deg, dec_deg]
    wcs.wcs.crpix = [(nx + 1) / 2, (ny + 1) / 2]
    wcs.wcs.radesys = "ICRS"
    scale = PIXEL_SCALE_ARCSEC / 3600.0
    c, s = np.cos(np.radians(rotation_deg)), np.sin(np.radians(rotation_deg))
    wcs.wcs.cd = [[-scale * c, scale * s], [scale * s, scale * c]]
    wcs.pixel_shape = (nx, ny)
    return wcs


def field_wcs() -> dict[str, WCS]:
    """The WCS of each image file."""
    width_deg = SHAPE[1] * PIXEL_SCALE_ARCSEC / 3600.0
    cos_dec = np.cos(np.radians(FIELD_DEC_DEG))
    shift = CHANNEL3_SHIFT_ARCSEC / 3600.0
    reference = tan_wcs(FIELD_RA_DEG, FIELD_DEC_DEG)
    return {
        "image": reference,
        "channel2": reference,
        "tile2": tan_wcs(FIELD_RA_DEG + TILE2_OFFSET_WIDTHS * width_deg / cos_dec, FIELD_DEC_DEG),
        "channel3": tan_wcs(FIELD_RA_DEG + shift / cos_dec, FIELD_DEC_DEG + shift, CHANNEL3_ROTATION_DEG),
    }


def star_catalogue(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RA, Dec (deg) and flux of stars spread evenly over a box holding every image."""
    height_deg = SHAPE[0] * PIXEL_SCALE_ARCSEC / 3600.0
    width_deg = SHAPE[1] * PIXEL_SCALE_ARCSEC / 3600.0
    cos_dec = np.cos(np.radians(FIELD_DEC_DEG))
    # From 0.6 widths west of the centre to 1.3 east (tile 2), ±0.6 heights (the rotated grid).
    ra_span = (-0.6 * width_deg / cos_dec, (TILE2_OFFSET_WIDTHS + 0.6) * width_deg / cos_dec)
    dec_span = (-0.6 * height_deg, 0.6 * height_deg)
    box_tiles = (ra_span[1] - ra_span[0]) * cos_dec / width_deg * (dec_span[1] - dec_span[0]) / height_deg
    count = int(STARS_PER_TILE * box_tiles)
    ra = FIELD_RA_DEG + rng.uniform(*ra_span, count)
    dec = FIELD_DEC_DEG + rng.uniform(*dec_span, count)
    flux = MIN_STAR_FLUX * (1.0 + rng.pareto(STAR_FLUX_SLOPE, count))
    return ra, dec, flux


def render(wcs: WCS, band: Band, stars: tuple[np.ndarray, np.ndarray, np.ndarray],
           rng: np.random.Generator) -> np.ndarray:
    """Sky + noise + Gaussian stars at the catalogue's positions on this grid, float32."""
    image = rng.standard_normal(SHAPE, dtype=np.float32)
    image *= np.float32(band.noise)
    image += np.float32(band.sky)
    ra, dec, flux = stars
    x, y = wcs.all_world2pix(ra, dec, 0)
    margin = STAMP_HALF_PX + 1
    on = (x > -margin) & (x < SHAPE[1] + margin) & (y > -margin) & (y < SHAPE[0] + margin)
    x, y, flux = x[on], y[on], flux[on] * band.flux_scale
    sigma = STAR_FWHM_PX / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    offsets = np.arange(-STAMP_HALF_PX, STAMP_HALF_PX + 1)
    # One stamp per star around its nearest pixel: (stars, dy, dx) index and value arrays.
    cols = np.rint(x).astype(np.int64)[:, None, None] + offsets[None, None, :]
    rows = np.rint(y).astype(np.int64)[:, None, None] + offsets[None, :, None]
    values = (flux / (2 * np.pi * sigma**2))[:, None, None] * np.exp(
        -((cols - x[:, None, None]) ** 2 + (rows - y[:, None, None]) ** 2) / (2 * sigma**2))
    rows, cols = np.broadcast_arrays(rows, cols)
    inside = (rows >= 0) & (rows < SHAPE[0]) & (cols >= 0) & (cols < SHAPE[1])
    np.add.at(image, (rows[inside], cols[inside]), values[inside].astype(np.float32))
    image[: SHAPE[0] // 3, BAD_COLUMN_X] = np.nan
    return image


def image_hdus(data: np.ndarray, wcs: WCS, band: Band) -> fits.HDUList:
    """An empty primary HDU and a big-endian float32 SCI extension with the WCS."""
    primary = fits.PrimaryHDU()
    primary.header["TELESCOP"] = ("SKYFLEET", "synthetic benchmark data")
    primary.header["FILTER"] = band.name
    primary.header["DATE-OBS"] = "2026-12-01T00:00:00"
    primary.header["EXPTIME"] = (1000.0, "s")
    header = wcs.to_header()
    header["BUNIT"] = "MJy/sr"
    return fits.HDUList([primary, fits.ImageHDU(data.astype(">f4"), header=header, name="SCI")])


def catalog_hdus(rng: np.random.Generator) -> fits.HDUList:
    """A CATALOG table of :data:`TABLE_ROWS` sources with scalar, string and vector columns."""
    n = TABLE_ROWS
    mag = rng.uniform(16.0, 28.0, n).astype(np.float32)
    columns = [
        fits.Column("ID", "K", array=np.arange(1, n + 1)),
        fits.Column("RA", "D", unit="deg", array=FIELD_RA_DEG + rng.uniform(-0.15, 0.15, n)),
        fits.Column("DEC", "D", unit="deg", array=FIELD_DEC_DEG + rng.uniform(-0.15, 0.15, n)),
        fits.Column("MAG_AUTO", "E", unit="mag", array=mag),
        fits.Column("MAGERR_AUTO", "E", unit="mag", array=(0.01 * 10 ** (0.2 * (mag - 20))).astype(np.float32)),
        fits.Column("FLUX_APER", "3E", unit="uJy", array=rng.lognormal(0.0, 1.0, (n, 3)).astype(np.float32)),
        fits.Column("FLAGS", "J", array=rng.integers(0, 4, n, dtype=np.int32)),
        fits.Column("CLASS", "8A", array=rng.choice(np.array(["star", "galaxy", "qso"]), n)),
    ]
    return fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(columns, name="CATALOG")])


def spectrum_hdus(rng: np.random.Generator) -> fits.HDUList:
    """An EXTRACT1D table of :data:`SPECTRUM_POINTS` points: continuum, lines, noise, a NaN gap."""
    wave = np.linspace(*SPECTRUM_RANGE_UM, SPECTRUM_POINTS)
    flux = 1e-3 * (wave / 2.0) ** -1.5
    for centre, amplitude in ((0.6563 * 3.2, 4e-3), (0.5007 * 3.2, 3e-3), (1.875, -2e-4), (4.05, 1e-3)):
        flux += amplitude * np.exp(-0.5 * ((wave - centre) / 0.002) ** 2)
    error = 2e-5 + 0.02 * np.abs(flux)
    flux += rng.normal(0.0, 1.0, SPECTRUM_POINTS) * error
    gap = (wave > 3.9) & (wave < 3.95)  # the gap between detector segments
    flux[gap] = np.nan
    columns = [
        fits.Column("WAVELENGTH", "D", unit="um", array=wave),
        fits.Column("FLUX", "D", unit="Jy", array=flux),
        fits.Column("FLUX_ERROR", "D", unit="Jy", array=error),
        fits.Column("DQ", "J", array=np.where(gap, 1, 0).astype(np.int32)),
    ]
    return fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(columns, name="EXTRACT1D")])


def _write(path: Path, hdus: fits.HDUList) -> None:
    """Write through a temporary name, so an interrupted run never leaves half a file."""
    partial = path.with_suffix(".partial")
    hdus.writeto(partial, overwrite=True)
    os.replace(partial, path)


def generate(directory: Path) -> None:
    """Write every input file into ``directory`` (a minute at most; mostly noise and stars)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    stars = star_catalogue(rng)
    grids = field_wcs()
    bands = {"image": BANDS["F150W"], "tile2": BANDS["F150W"], "channel2": BANDS["F277W"],
             "channel3": BANDS["F444W"]}

    def image(name: str) -> Callable[[], fits.HDUList]:
        return lambda: image_hdus(render(grids[name], bands[name], stars, rng), grids[name], bands[name])

    makers = {name: image(name) for name in ("image", "tile2", "channel2", "channel3")}
    makers["catalog"] = lambda: catalog_hdus(rng)
    makers["spectrum"] = lambda: spectrum_hdus(rng)
    for name in NAMES:
        _write(directory / FILE_NAMES[name], makers[name]())
    manifest = {"version": INPUTS_VERSION, "files": {n: FILE_NAMES[n] for n in NAMES}}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def ensure_inputs(directory: Path) -> dict[str, Path]:
    """The input files by name (see :data:`NAMES`), generated first unless present and current."""
    manifest = directory / "manifest.json"
    paths = {name: directory / FILE_NAMES[name] for name in NAMES}
    try:
        current = json.loads(manifest.read_text()).get("version") == INPUTS_VERSION
    except (OSError, ValueError):
        current = False
    if not current or not all(p.is_file() for p in paths.values()):
        generate(directory)
    return paths
