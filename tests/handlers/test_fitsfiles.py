"""fits.inspect on synthetic files: WCS footprints against astropy's own, tables, compression, headers only."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from marshmallow import ValidationError

from jobtypes import get_job_type
from tests.handlers.conftest import MakeContext
from tests.handlers.fitsfactory import DEC_DEG, RA_DEG, make_wcs, write_image, write_sparse
from worker.jobs import PermanentError, handler_for

REF = {"key": "uploads/in.fits"}


def load(**payload: Any) -> dict[str, Any]:
    return get_job_type("fits.inspect").input_schema().load({"file": REF, **payload})  # type: ignore[union-attr]


def run(make_context: MakeContext, path: Path, **payload: Any) -> dict[str, Any]:
    ctx = make_context((REF, path))
    result = handler_for("fits.inspect")(load(**payload), ctx)
    json.dumps(result, allow_nan=False)  # strict JSON, as jsonb needs
    assert get_job_type("fits.inspect").result_schema().validate(result) == {}  # type: ignore[union-attr, misc]
    assert ctx.progress_log  # type: ignore[attr-defined]
    return result  # type: ignore[no-any-return]


def catalogue_hdu() -> fits.BinTableHDU:
    """A table with string, vector, NaN and null-integer columns."""
    return fits.BinTableHDU.from_columns([
        fits.Column("ID", "J", null=-1, array=np.array([1, -1, 3, 4, 5])),
        fits.Column("NAME", "10A", array=np.array([b"alpha", b"beta  ", b"", b"gamma", b"delta"])),
        fits.Column("FLUX", "E", unit="Jy", array=np.array([1.5, np.nan, 3.0, np.inf, -2.0])),
        fits.Column("POS", "2D", unit="deg", array=np.arange(10.0).reshape(5, 2)),
    ], name="CAT")


def multi_extension_file(path: Path) -> Path:
    shape = (60, 80)
    primary = fits.PrimaryHDU()
    primary.header["TELESCOP"] = "JWST"
    sci = fits.ImageHDU(np.ones(shape, dtype=">f4"), header=make_wcs(shape).to_header(), name="SCI")
    sci.header["BUNIT"] = "MJy/sr"
    fits.HDUList([primary, sci, catalogue_hdu()]).writeto(path)
    return path


def test_image_footprint_scale_and_centre_match_astropy(make_context: MakeContext, tmp_path: Path) -> None:
    shape = (200, 300)
    wcs = make_wcs(shape, scale_arcsec=0.25, rotation_deg=30.0)
    path = write_image(tmp_path / "img.fits", np.zeros(shape), wcs=wcs)

    result = run(make_context, path)

    primary, sci = result["hdus"]
    assert primary["type"] == "PrimaryHDU" and primary["image"] == {"has_celestial_wcs": False}
    assert sci["type"] == "ImageHDU" and sci["name"] == "SCI" and sci["index"] == 1
    assert sci["shape"] == [200, 300] and sci["bitpix"] == -32 and sci["bunit"] == "MJy/sr"
    image = sci["image"]
    assert image["has_celestial_wcs"] is True and image["frame"] == "icrs"
    reference = WCS(fits.getheader(path, 1))
    np.testing.assert_allclose(image["footprint"], reference.calc_footprint(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(image["pixel_scale_arcsec"], [0.25, 0.25], rtol=1e-9)
    # CRPIX is the image centre, so the centre is CRVAL.
    assert image["centre"]["ra"] == pytest.approx(RA_DEG, abs=1e-9)
    assert image["centre"]["dec"] == pytest.approx(DEC_DEG, abs=1e-9)
    assert "header" not in sci


def test_multi_extension_file_lists_images_and_tables(make_context: MakeContext, tmp_path: Path) -> None:
    result = run(make_context, multi_extension_file(tmp_path / "multi.fits"))

    assert result["n_hdus"] == 3 and result["hdus_truncated"] is False
    assert [h["type"] for h in result["hdus"]] == ["PrimaryHDU", "ImageHDU", "BinTableHDU"]
    assert result["hdus"][1]["shape"] == [60, 80] and result["hdus"][1]["image"]["has_celestial_wcs"]
    table = result["hdus"][2]
    assert table["name"] == "CAT" and table["shape"] == [5] and "image" not in table
    assert table["table"]["n_rows"] == 5 and table["table"]["n_columns"] == 4
    assert [(c["name"], c["format"], c["unit"]) for c in table["table"]["columns"]] == [
        ("ID", "J", None), ("NAME", "10A", None), ("FLUX", "E", "Jy"), ("POS", "2D", "deg")]
    assert table["table"]["columns"][3]["shape"] == [2]


def test_compressed_image_is_described_from_its_image_header(make_context: MakeContext, tmp_path: Path) -> None:
    shape = (64, 96)
    header = make_wcs(shape).to_header()
    header["BUNIT"] = "DN/s"
    comp = fits.CompImageHDU(np.arange(shape[0] * shape[1], dtype=">f4").reshape(shape), header=header, name="SCI")
    path = tmp_path / "comp.fits"
    fits.HDUList([fits.PrimaryHDU(), comp]).writeto(path)

    hdu = run(make_context, path)["hdus"][1]

    assert hdu["type"] == "CompImageHDU" and hdu["compression"] == "RICE_1"
    assert hdu["shape"] == [64, 96] and hdu["bitpix"] == -32 and hdu["bunit"] == "DN/s"
    reference = WCS(header)
    reference.pixel_shape = (96, 64)
    np.testing.assert_allclose(hdu["image"]["footprint"], reference.calc_footprint(), atol=1e-9)


def test_big_endian_cube_takes_its_celestial_axes(make_context: MakeContext, tmp_path: Path) -> None:
    wcs = make_wcs((30, 40))
    header = wcs.to_header()
    header["CTYPE3"], header["CRVAL3"], header["CDELT3"], header["CUNIT3"] = "WAVE", 2e-6, 1e-9, "m"
    path = tmp_path / "cube.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((5, 30, 40), ">f8"), header, name="SCI")]).writeto(path)

    hdu = run(make_context, path)["hdus"][1]

    assert hdu["shape"] == [5, 30, 40] and hdu["bitpix"] == -64
    np.testing.assert_allclose(hdu["image"]["footprint"], wcs.calc_footprint(), atol=1e-9)


def test_headers_only_a_huge_image_costs_nothing(make_context: MakeContext, tmp_path: Path) -> None:
    header = fits.ImageHDU(header=make_wcs((8000, 8000)).to_header()).header
    header["BITPIX"], header["NAXIS"], header["NAXIS1"], header["NAXIS2"] = 16, 2, 8000, 8000
    # Scaled integers: reading them would allocate 256 MB of floats (a memory map would not show).
    header["BSCALE"], header["BZERO"] = 0.5, 100.0
    path = write_sparse(tmp_path / "huge.fits", [fits.PrimaryHDU().header, header])

    tracemalloc.start()
    try:
        result = run(make_context, path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert result["hdus"][1]["shape"] == [8000, 8000] and result["hdus"][1]["image"]["has_celestial_wcs"]
    assert peak < 10 * 2**20, peak


def test_header_cards_up_to_max_cards(make_context: MakeContext, tmp_path: Path) -> None:
    path = multi_extension_file(tmp_path / "multi.fits")

    result = run(make_context, path, include_header=True, max_cards=5)

    primary = result["hdus"][0]
    assert [c["keyword"] for c in primary["header"]] == ["SIMPLE", "BITPIX", "NAXIS", "EXTEND", "TELESCOP"]
    assert primary["header"][4]["value"] == "JWST" and primary["header"][0]["value"] is True
    assert primary["header_cards"] == 5 and primary["header_truncated"] is False
    table = result["hdus"][2]
    assert len(table["header"]) == 5 and table["header_truncated"] is True
    assert table["header_cards"] == len(fits.getheader(path, 2))


def test_undefined_header_values_are_null(make_context: MakeContext, tmp_path: Path) -> None:
    primary = fits.PrimaryHDU()
    primary.header["EMPTY"] = fits.card.UNDEFINED
    path = tmp_path / "undef.fits"
    primary.writeto(path)

    cards = run(make_context, path, include_header=True)["hdus"][0]["header"]

    assert {"keyword": "EMPTY", "value": None, "comment": None} in cards


def test_broken_wcs_is_reported_not_fatal(make_context: MakeContext, tmp_path: Path) -> None:
    header = make_wcs((10, 10)).to_header()
    header["CTYPE1"], header["CTYPE2"] = "RA---XYZ", "DEC--XYZ"  # no such projection
    path = tmp_path / "badwcs.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((10, 10)), header)]).writeto(path)

    image = run(make_context, path)["hdus"][1]["image"]

    assert image["has_celestial_wcs"] is False and "wcs_error" in image


@pytest.mark.parametrize("content", [b"", b"not a fits file at all" * 200, b"SIMPLE  =                    F" + b" " * 2850])
def test_not_fits_is_a_permanent_error(make_context: MakeContext, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.fits"
    path.write_bytes(content)
    with pytest.raises(PermanentError, match="not a"):
        run(make_context, path)


def test_schema_defaults_and_bounds() -> None:
    assert load() == {"file": REF, "include_header": False, "max_cards": 500}
    assert load(max_cards=0)["max_cards"] == 0 and load(max_cards=5000)["max_cards"] == 5000
    cases: list[tuple[dict[str, Any], str]] = [
        ({"max_cards": 5001}, "max_cards"), ({"max_cards": -1}, "max_cards"),
        ({"max_cards": "10"}, "max_cards"), ({"include_header": "maybe"}, "include_header"),
        ({"colour": "red"}, "colour"),
    ]
    for bad, field in cases:
        with pytest.raises(ValidationError) as info:
            load(**bad)
        assert field in info.value.messages
    with pytest.raises(ValidationError) as info:
        get_job_type("fits.inspect").input_schema().load({})  # type: ignore[union-attr]
    assert "file" in info.value.messages
