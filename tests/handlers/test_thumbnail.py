"""fits.thumbnail: a quick-look PNG of one image HDU, within the size asked for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from jobtypes import get_job_type
from tests.handlers.conftest import MakeContext
from tests.handlers.fitsfactory import gaussian_stars, make_wcs, write_image
from worker.jobs import PermanentError, handler_for

REF = {"key": "uploads/in.fits"}


def run(make_context: MakeContext, path: Path, **payload: Any) -> tuple[dict[str, Any], Any]:
    ctx = make_context((REF, path))
    loaded = get_job_type("fits.thumbnail").input_schema().load({"file": REF, **payload})  # type: ignore[union-attr]
    result = handler_for("fits.thumbnail")(loaded, ctx)
    json.dumps(result, allow_nan=False)
    assert get_job_type("fits.thumbnail").result_schema().validate(result) == {}  # type: ignore[union-attr, misc]
    return result, ctx


def test_a_wide_image_becomes_a_picture_within_the_size(make_context: MakeContext, tmp_path: Path) -> None:
    shape = (300, 900)
    data = gaussian_stars(shape, [(100.0, 150.0), (800.0, 40.0)], 5000.0)
    data[:10, :10] = np.nan  # blanks stay transparent
    path = write_image(tmp_path / "wide.fits", data, make_wcs(shape))
    result, ctx = run(make_context, path, size=128)
    assert (result["width"], result["height"]) == (128, 43) and result["file"] == "thumbnail.png"
    picture = Image.open(ctx.output_dir / "thumbnail.png")  # type: ignore[attr-defined]
    assert picture.size == (128, 43) and picture.mode == "RGBA"
    assert picture.getpixel((0, 42))[3] == 0  # the NaN corner (bottom-left: FITS row 0 is at the bottom)
    assert np.asarray(picture.convert("L")).max() > 200  # the stars are bright


def test_a_table_only_file_is_a_permanent_error(make_context: MakeContext, tmp_path: Path) -> None:
    from astropy.io import fits
    path = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column("A", "E", array=[1.0])])]
                 ).writeto(path)
    with pytest.raises(PermanentError):
        run(make_context, path)
