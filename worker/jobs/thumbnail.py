"""``fits.thumbnail``: a small quick-look PNG of one image HDU, for the console's file library."""

from __future__ import annotations

from typing import Any

import numpy as np

from jobtypes.fitsfiles import FITS_THUMBNAIL
from worker.jobs.context import JobContext
from worker.jobs.fitsimage import load_image, open_fits
from worker.jobs.jsonsafe import jsonable
from worker.jobs.stretch import bin_for_preview, grey_preview, save_picture

OUTPUT = "thumbnail.png"


def thumbnail(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Bin the image down to ``payload["size"]``, stretch it (asinh) and write ``thumbnail.png``."""
    ctx.report_progress(0.0, "reading", None)
    with open_fits(ctx.input_path(payload["file"])) as hdul:
        image = load_image(hdul, payload["hdu"], ctx, FITS_THUMBNAIL.bytes_per_pixel, np.float32)
    ctx.check_cancelled()
    ctx.report_progress(50.0, "drawing", f"{image.data.shape[1]}×{image.data.shape[0]} pixels")
    # Binned to at most twice the size (cheap), then averaged down to it exactly (BOX).
    picture, _ = grey_preview(bin_for_preview(image.data, 2 * payload["size"]))
    saved = save_picture(picture, ctx.output_path(OUTPUT, "image/png"), "png", payload["size"])
    ctx.report_progress(100.0, "done", None)
    return jsonable({"hdu": image.hdu_index, "hdu_name": image.hdu_name, "width": saved.width,
                     "height": saved.height, "file": OUTPUT})
