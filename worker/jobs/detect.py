"""sources.detect: a source catalogue (JSON + ECSV) and an overlay PNG from one image HDU.

The background and its RMS come from photutils' ``Background2D`` (sigma-clipped
SExtractor estimator in ``bkg_box`` boxes, 3×3 median filter of the box grid). Then either

* ``daofind``: ``DAOStarFinder`` on the background-subtracted image, threshold
  ``threshold_sigma`` × the median background RMS; or
* ``segmentation``: the background-subtracted image convolved with a Gaussian of
  ``fwhm_px``, ``detect_sources`` above ``threshold_sigma`` × the background RMS map with at
  least ``n_pixels`` connected pixels, optionally ``deblend_sources``, then ``SourceCatalog``
  (windowed centroid, segment flux, peak).

NaN/inf pixels are masked throughout. Positions are zero-based pixels (centre of the first
pixel at 0, 0); RA/Dec are ICRS degrees from the celestial WCS (null without one); flux is
the sum of background-subtracted pixel values (over the DAOFIND kernel footprint, or over the
segment) in the image's unit, not a calibrated total flux; rows are sorted by flux, brightest
first, and capped at ``max_sources`` (the ECSV holds the same rows as the JSON).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import astropy.units as u
import numpy as np
from astropy.convolution import convolve
from astropy.stats import SigmaClip
from astropy.table import Table
from astropy.wcs import WCS
from photutils import segmentation as seg
from photutils.background import Background2D, SExtractorBackground, StdBackgroundRMS
from photutils.detection import DAOStarFinder
from photutils.utils.exceptions import NoDetectionsWarning

from jobtypes.photometry import SOURCES_DETECT
from worker.jobs.context import JobContext
from worker.jobs.errors import PermanentError
from worker.jobs.fitsimage import Image, load_image, open_fits
from worker.jobs.jsonsafe import jsonable
from worker.jobs.overlay import write_overlay

BKG_CLIP_SIGMA = 3.0
BKG_CLIP_MAXITERS = 10
BKG_FILTER_SIZE = 3
#: A box enters the background grid when at most this percentage of its pixels is masked, NaN,
#: padding or sigma-clipped. photutils' default of 10 drops every box of a crowded field
#: (clipping alone rejects 15 % of the pixels of each box of a globular cluster image).
BKG_EXCLUDE_PERCENTILE = 50.0
#: Gaussian smoothing kernel for segmentation: this many FWHM on a side (rounded up to odd).
KERNEL_SIZE_FWHM = 4.0
DEBLEND_LEVELS = 32
DEBLEND_CONTRAST = 0.001
#: What ``flux`` sums, per method (photutils 3: DAOStarFinder ``flux``, SourceCatalog ``segment_flux``).
FLUX_DEFINITION = {
    "daofind": "sum of background-subtracted pixel values within the DAOFIND kernel footprint",
    "segmentation": "sum of background-subtracted pixel values within the source segment",
}
#: Overlay circle radius, in FWHM.
CIRCLE_RADIUS_FWHM = 2.0


@dataclass
class Detections:
    """Sources as parallel arrays (zero-based pixel positions), in the order the finder gave them."""

    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    peak: np.ndarray

    @classmethod
    def empty(cls) -> Detections:
        return cls(*(np.zeros(0) for _ in range(4)))

    def brightest(self, n: int) -> Detections:
        """The ``n`` brightest, by flux descending (NaN flux last)."""
        order = np.argsort(np.where(np.isfinite(self.flux), -self.flux, np.inf), kind="stable")[:n]
        return Detections(self.x[order], self.y[order], self.flux[order], self.peak[order])


def detect_sources(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Run ``payload["method"]`` on one image HDU; write catalogue.ecsv and overlay.png."""
    ctx.report_progress(0.0, "reading", "opening the FITS file")
    with open_fits(ctx.input_path(payload["file"])) as hdul:
        image = load_image(hdul, payload["hdu"], ctx, bytes_per_pixel=SOURCES_DETECT.bytes_per_pixel)
    data, box = image.data, payload["bkg_box"]
    if min(data.shape) < box:
        raise PermanentError(f"the {data.shape[1]}×{data.shape[0]} image is smaller than the background box "
                             f"of {box} px; give a smaller bkg_box")
    mask = ~np.isfinite(data)
    if mask.all():
        raise PermanentError("the image has no finite pixels")
    ctx.check_cancelled()

    ctx.report_progress(15.0, "background", f"estimating the background in {box}×{box} boxes")
    bkg = background(data, mask, box)
    subtracted = np.where(mask, 0.0, data - bkg.background)
    rms_median = float(bkg.background_rms_median)
    ctx.check_cancelled()

    ctx.report_progress(40.0, "detecting", f"{payload['method']} above {payload['threshold_sigma']} σ")
    threshold = payload["threshold_sigma"] * rms_median  # segmentation thresholds the RMS map instead
    if payload["method"] == "daofind":
        found = daofind(subtracted, mask, threshold, payload["fwhm_px"])
    else:
        found = segmentation(subtracted, mask, payload["threshold_sigma"] * bkg.background_rms,
                             payload["fwhm_px"], payload["n_pixels"], payload["deblend"], ctx)
    n_found = int(found.x.size)
    kept = found.brightest(payload["max_sources"])
    ctx.check_cancelled()

    ctx.report_progress(75.0, "catalogue", f"{n_found} sources; sky positions and files")
    ra, dec = sky_positions(image.wcs, kept.x, kept.y)
    table = catalogue_table(kept, ra, dec, image, payload, rms_median, float(bkg.background_median))
    table.write(ctx.output_path("catalogue.ecsv", "text/x-ecsv"), format="ascii.ecsv", overwrite=True)
    size = write_overlay(ctx.output_path("overlay.png", "image/png"), data, kept.x, kept.y,
                         CIRCLE_RADIUS_FWHM * payload["fwhm_px"])

    ctx.report_progress(100.0, "done", f"{n_found} sources")
    return jsonable({
        "hdu": image.hdu_index,
        "hdu_name": image.hdu_name,
        "method": payload["method"],
        "n_sources": n_found,
        "truncated": n_found > kept.x.size,
        "background_median": float(bkg.background_median),
        "background_rms": rms_median,
        "threshold": threshold,
        "unit": image.unit,
        "has_wcs": image.wcs is not None,
        "sources": source_rows(kept, ra, dec),
        "outputs": {"catalogue": "catalogue.ecsv", "overlay": "overlay.png", "overlay_size": list(size),
                    # (ny, nx) of the image: where a source (x, y) falls on the overlay, which is
                    # flipped vertically and maybe reduced.
                    "image_shape": [int(n) for n in data.shape]},
    })


def background(data: np.ndarray, mask: np.ndarray, box: int) -> Background2D:
    """The sigma-clipped 2-D background and RMS; an image with too few good boxes is a PermanentError."""
    try:
        return Background2D(data, box, mask=mask, filter_size=BKG_FILTER_SIZE, exclude_percentile=BKG_EXCLUDE_PERCENTILE,
                            sigma_clip=SigmaClip(sigma=BKG_CLIP_SIGMA, maxiters=BKG_CLIP_MAXITERS),
                            bkg_estimator=SExtractorBackground(), bkg_rms_estimator=StdBackgroundRMS())
    except ValueError as exc:
        raise PermanentError(f"the background cannot be estimated (too few unmasked pixels in the "
                             f"{box}×{box} boxes?): {exc}") from None


def daofind(data: np.ndarray, mask: np.ndarray, threshold: float, fwhm_px: float) -> Detections:
    """DAOStarFinder on background-subtracted ``data``."""
    finder = DAOStarFinder(threshold=threshold, fwhm=fwhm_px)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDetectionsWarning)
        table = finder.find_stars(data, mask=mask)
    if table is None or len(table) == 0:
        return Detections.empty()
    return Detections(*(np.asarray(table[name], float) for name in ("x_centroid", "y_centroid", "flux", "peak")))


def segmentation(data: np.ndarray, mask: np.ndarray, threshold: np.ndarray, fwhm_px: float, n_pixels: int,
                 deblend: bool, ctx: JobContext) -> Detections:
    """Segments of the smoothed ``data`` above ``threshold``, optionally deblended, measured by SourceCatalog."""
    size = int(np.ceil(KERNEL_SIZE_FWHM * fwhm_px)) // 2 * 2 + 1
    kernel = seg.make_2dgaussian_kernel(fwhm_px, size=max(size, 3))
    convolved = convolve(data, kernel, mask=mask, normalize_kernel=False, nan_treatment="fill", fill_value=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDetectionsWarning)
        segments = seg.detect_sources(convolved, threshold, n_pixels, mask=mask)
    if segments is None:
        return Detections.empty()
    ctx.check_cancelled()
    if deblend:
        segments = seg.deblend_sources(convolved, segments, n_pixels, n_levels=DEBLEND_LEVELS,
                                   contrast=DEBLEND_CONTRAST, progress_bar=False)
        ctx.check_cancelled()
    catalog = seg.SourceCatalog(data, segments, convolved_data=convolved, mask=mask)
    x = np.atleast_1d(np.asarray(catalog.x_centroid_win, float))
    y = np.atleast_1d(np.asarray(catalog.y_centroid_win, float))
    # The windowed centroid is undefined for a few odd segments; fall back to the centre of mass.
    x = np.where(np.isfinite(x), x, np.atleast_1d(catalog.x_centroid))
    y = np.where(np.isfinite(y), y, np.atleast_1d(catalog.y_centroid))
    flux = np.atleast_1d(np.asarray(catalog.segment_flux, float))
    peak = np.atleast_1d(np.asarray(catalog.max_value, float))
    return Detections(x, y, flux, peak)


def sky_positions(wcs: WCS | None, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """ICRS RA and Dec (deg) of zero-based pixel positions, or (None, None) without a celestial WCS."""
    if wcs is None:
        return None, None
    if x.size == 0:
        return np.zeros(0), np.zeros(0)
    sky = wcs.pixel_to_world(x, y).icrs
    return sky.ra.deg, sky.dec.deg


def source_rows(kept: Detections, ra: np.ndarray | None, dec: np.ndarray | None) -> list[dict[str, Any]]:
    """The catalogue as JSON rows (ra/dec None without a WCS)."""
    n = kept.x.size
    ras = [None] * n if ra is None else ra.tolist()
    decs = [None] * n if dec is None else dec.tolist()
    columns = zip(kept.x.tolist(), kept.y.tolist(), ras, decs, kept.flux.tolist(), kept.peak.tolist(), strict=True)
    return [{"id": i + 1, "x": x, "y": y, "ra": r, "dec": d, "flux": f, "peak": p}
            for i, (x, y, r, d, f, p) in enumerate(columns)]


def catalogue_table(kept: Detections, ra: np.ndarray | None, dec: np.ndarray | None, image: Image,
                    payload: dict[str, Any], rms: float, median: float) -> Table:
    """The ECSV catalogue: positions in pix, sky positions in deg, flux and peak in the image's unit."""
    unit = _unit(image.unit)
    table = Table()
    table["id"] = np.arange(1, kept.x.size + 1)
    table["x"] = kept.x * u.pix
    table["y"] = kept.y * u.pix
    if ra is not None and dec is not None:
        table["ra"] = ra * u.deg
        table["dec"] = dec * u.deg
    table["flux"] = kept.flux * unit if unit is not None else kept.flux
    table["peak"] = kept.peak * unit if unit is not None else kept.peak
    table["x"].description = "zero-based pixel x (centre of the first pixel = 0)"
    table["y"].description = "zero-based pixel y"
    table["flux"].description = FLUX_DEFINITION[payload["method"]]
    table["peak"].description = "peak background-subtracted pixel value"
    table.meta.update({
        "method": payload["method"], "threshold_sigma": payload["threshold_sigma"], "fwhm_px": payload["fwhm_px"],
        "bkg_box": payload["bkg_box"], "background_median": median, "background_rms": rms,
        "hdu": image.hdu_index, "bunit": image.unit, "frame": "icrs" if ra is not None else None,
    })
    return table


def _unit(bunit: str | None) -> u.UnitBase | None:
    """The image's BUNIT as an astropy unit, or None when absent or not a unit astropy knows."""
    if not bunit:
        return None
    unit = u.Unit(bunit, parse_strict="silent")
    return None if isinstance(unit, u.UnrecognizedUnit) else unit
