"""table.page: paging, column choice, cell conversion (bytes, vectors, NaN, nulls, scaling), only the page read."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from marshmallow import ValidationError

from jobtypes import get_job_type
from tests.handlers.conftest import MakeContext
from tests.handlers.fitsfactory import make_wcs, write_sparse
from worker.jobs import PermanentError, handler_for

REF = {"key": "uploads/table.fits"}
N_ROWS = 25


def load(**payload: Any) -> dict[str, Any]:
    return get_job_type("table.page").input_schema().load({"file": REF, **payload})  # type: ignore[union-attr]


def run(make_context: MakeContext, path: Path, **payload: Any) -> dict[str, Any]:
    ctx = make_context((REF, path))
    result = handler_for("table.page")(load(**payload), ctx)
    json.dumps(result, allow_nan=False)
    assert get_job_type("table.page").result_schema().validate(result) == {}  # type: ignore[union-attr, misc]
    return result  # type: ignore[no-any-return]


def catalogue(path: Path) -> Path:
    """Primary + SCI image + a 25-row catalogue with string, vector, NaN and null columns."""
    ids = np.arange(N_ROWS, dtype=np.int32)
    ids[3] = -999  # TNULL
    flux = np.linspace(0.0, 24.0, N_ROWS).astype(np.float32)
    flux[[2, 7]] = np.nan
    table = fits.BinTableHDU.from_columns([
        fits.Column("ID", "J", null=-999, array=ids),
        fits.Column("NAME", "8A", array=np.array([f"src{i}".encode() for i in range(N_ROWS)])),
        fits.Column("FLUX", "E", unit="mJy", array=flux),
        fits.Column("POS", "2D", unit="deg", array=np.arange(2.0 * N_ROWS).reshape(N_ROWS, 2)),
        fits.Column("GOOD", "L", array=np.arange(N_ROWS) % 2 == 0),
    ], name="CAT")
    sci = fits.ImageHDU(np.zeros((20, 20), ">f4"), make_wcs((20, 20)).to_header(), name="SCI")
    fits.HDUList([fits.PrimaryHDU(), sci, table]).writeto(path)
    return path


def test_first_page_converts_every_kind_of_cell(make_context: MakeContext, tmp_path: Path) -> None:
    result = run(make_context, catalogue(tmp_path / "cat.fits"), limit=10)

    assert result["hdu_index"] == 2 and result["hdu_name"] == "CAT"
    assert (result["total_rows"], result["offset"], result["limit"], result["n_rows"]) == (N_ROWS, 0, 10, 10)
    assert result["columns"] == [
        {"name": "ID", "format": "J", "unit": None, "dtype": "int32", "shape": []},
        {"name": "NAME", "format": "8A", "unit": None, "dtype": "str", "shape": []},
        {"name": "FLUX", "format": "E", "unit": "mJy", "dtype": "float32", "shape": []},
        {"name": "POS", "format": "2D", "unit": "deg", "dtype": "float64", "shape": [2]},
        {"name": "GOOD", "format": "L", "unit": None, "dtype": "bool", "shape": []},
    ]
    rows = result["rows"]
    assert rows[0] == [0, "src0", 0.0, [0.0, 1.0], True]
    assert rows[1] == [1, "src1", 1.0, [2.0, 3.0], False]
    assert rows[2][2] is None and rows[7][2] is None  # NaN → null
    assert rows[3][0] is None  # TNULL → null
    assert [row[0] for row in rows] == [0, 1, 2, None, 4, 5, 6, 7, 8, 9]


def test_offset_limit_and_columns_in_the_order_asked(make_context: MakeContext, tmp_path: Path) -> None:
    result = run(make_context, catalogue(tmp_path / "cat.fits"), hdu="CAT", offset=5, limit=3,
                 columns=["pos", "Name", "NAME"])

    assert [c["name"] for c in result["columns"]] == ["POS", "NAME"]
    assert result["rows"] == [[[10.0, 11.0], "src5"], [[12.0, 13.0], "src6"], [[14.0, 15.0], "src7"]]


def test_last_partial_page_and_past_the_end(make_context: MakeContext, tmp_path: Path) -> None:
    path = catalogue(tmp_path / "cat.fits")

    last = run(make_context, path, offset=20, limit=10, columns=["ID"])
    assert last["n_rows"] == 5 and [r[0] for r in last["rows"]] == [20, 21, 22, 23, 24]

    for offset in (N_ROWS, 10_000):
        beyond = run(make_context, path, offset=offset, limit=10)
        assert beyond["rows"] == [] and beyond["n_rows"] == 0 and beyond["total_rows"] == N_ROWS
        assert len(beyond["columns"]) == 5


def test_stored_encodings_read_like_astropy_reads_them(make_context: MakeContext, tmp_path: Path) -> None:
    n = 6
    columns = [
        fits.Column("U16", "I", bzero=32768, array=np.array([0, 1, 40000, 65535, 7, 8], dtype=np.uint16)),
        fits.Column("SCALED", "J", array=np.arange(n, dtype=np.int32)),  # TSCAL/TZERO set below
        fits.Column("S8", "B", bzero=-128, array=np.array([-128, -1, 0, 1, 127, 5], dtype=np.int8)),
        fits.Column("BITS", "11X", array=np.array([[i % 2 == 0, True] + [False] * 9 for i in range(n)])),
        fits.Column("CPLX", "M", array=np.arange(n) + 1j * np.arange(n)),
        fits.Column("GRID", "6E", dim="(3,2)", array=np.arange(6.0 * n).reshape(n, 2, 3)),
        fits.Column("WORDS", "12A", dim="(4,3)", array=np.array([[b"ab", b"cd", b"ef"]] * n)),
        fits.Column("VARF", "PE()", array=[np.arange(i, dtype=np.float32) for i in range(n)]),
        fits.Column("VARS", "PA()", array=[f"v{'x' * i}" for i in range(n)]),
    ]
    table = fits.BinTableHDU.from_columns(columns)
    table.header["TSCAL2"], table.header["TZERO2"] = 0.5, 10.0  # stored 0, 1, 2 … mean 10, 10.5, 11 …
    path = tmp_path / "encodings.fits"
    table.writeto(path)

    result = run(make_context, path)

    rows = result["rows"]
    with fits.open(path) as hdul:
        data = hdul[1].data
        for i, row in enumerate(rows):
            assert row[0] == int(data["U16"][i])
            assert row[1] == float(data["SCALED"][i]) == 10.0 + 0.5 * i
            assert row[2] == int(data["S8"][i])
            assert row[3] == data["BITS"][i].tolist()
            assert row[4] == [float(data["CPLX"][i].real), float(data["CPLX"][i].imag)]
            assert row[5] == data["GRID"][i].tolist()
            assert row[6] == data["WORDS"][i].tolist()
            assert row[7] == data["VARF"][i].tolist()
            assert row[8] == f"v{'x' * i}"
    assert rows[2][0] == 40000 and rows[0][2] == -128 and rows[3][8] == "vxxx"
    dtypes = {c["name"]: (c["dtype"], c["shape"]) for c in result["columns"]}
    assert dtypes["U16"] == ("uint16", []) and dtypes["SCALED"] == ("float64", [])
    assert dtypes["S8"] == ("int8", []) and dtypes["BITS"] == ("bool", [11])
    assert dtypes["GRID"] == ("float32", [2, 3]) and dtypes["VARF"] == ("float32", None)


def test_undefined_logicals_are_null(make_context: MakeContext, tmp_path: Path) -> None:
    path = tmp_path / "logical.fits"
    fits.BinTableHDU.from_columns([fits.Column("FLAG", "3L", array=np.zeros((2, 3), bool))]).writeto(path)
    raw = bytearray(path.read_bytes())
    with fits.open(path) as hdul:
        start = hdul.fileinfo(1)["datLoc"]
    raw[start:start + 6] = b"T\x00F\x00\x00T"  # row 0: T, undefined, F; row 1: undefined, undefined, T
    path.write_bytes(bytes(raw))

    assert run(make_context, path)["rows"] == [[[True, None, False]], [[None, None, True]]]


def test_ascii_table(make_context: MakeContext, tmp_path: Path) -> None:
    path = tmp_path / "ascii.fits"
    fits.TableHDU.from_columns([fits.Column("X", "E15.7", array=np.array([1.5, 2.5, 3.5])),
                                fits.Column("S", "A6", array=np.array(["a", "bb", "ccc"]))]).writeto(path)

    result = run(make_context, path, offset=1)

    assert result["rows"] == [[2.5, "bb"], [3.5, "ccc"]] and result["total_rows"] == 3


def test_a_huge_table_is_not_read_whole(make_context: MakeContext, tmp_path: Path) -> None:
    n = 20_000_000
    header = fits.BinTableHDU.from_columns([fits.Column("X", "D"), fits.Column("FLAG", "L"),
                                            fits.Column("NAME", "8A")], nrows=1).header
    header["NAXIS2"] = n
    path = write_sparse(tmp_path / "huge.fits", [fits.PrimaryHDU().header, header])  # 340 MB, sparse

    tracemalloc.start()
    try:
        result = run(make_context, path, offset=n - 2, limit=1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert result["total_rows"] == n and result["rows"] == [[0.0, None, ""], [0.0, None, ""]]
    assert peak < 10 * 2**20, peak  # astropy's hdu.data alone would scan the logical column: 180 MB


def test_unknown_column_is_named(make_context: MakeContext, tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="'MAGNITUDE'"):
        run(make_context, catalogue(tmp_path / "cat.fits"), columns=["ID", "MAGNITUDE"])


@pytest.mark.parametrize("hdu, message", [("SCI", "not a table"), (0, "not a table"), ("NOPE", "no HDU 'NOPE'"),
                                          (7, "no HDU 7")])
def test_wrong_hdu_is_a_permanent_error(make_context: MakeContext, tmp_path: Path, hdu: Any, message: str) -> None:
    with pytest.raises(PermanentError, match=message):
        run(make_context, catalogue(tmp_path / "cat.fits"), hdu=hdu)


def test_file_without_table_or_not_fits(make_context: MakeContext, tmp_path: Path) -> None:
    image = tmp_path / "image.fits"
    fits.PrimaryHDU(np.zeros((4, 4))).writeto(image)
    with pytest.raises(PermanentError, match="no table HDU"):
        run(make_context, image)
    text = tmp_path / "notes.txt"
    text.write_text("hello\n" * 1000)
    with pytest.raises(PermanentError, match="not a FITS file"):
        run(make_context, text)


def test_a_page_too_large_is_refused(make_context: MakeContext, tmp_path: Path) -> None:
    path = tmp_path / "wide.fits"
    fits.BinTableHDU.from_columns([fits.Column("BLOB", "8000A", array=np.array([b"x"] * 1000))]).writeto(path)
    with pytest.raises(PermanentError, match="fewer rows"):
        run(make_context, path, limit=1000)
    assert run(make_context, path, limit=10)["rows"][0] == ["x"]


def test_schema_defaults_and_bounds() -> None:
    assert load() == {"file": REF, "hdu": None, "offset": 0, "limit": 100, "columns": None}
    assert load(limit=1)["limit"] == 1 and load(limit=1000)["limit"] == 1000
    assert load(hdu="CAT", columns=["a"])["hdu"] == "CAT"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"offset": -1}, "offset"),
        ({"offset": 1.5}, "offset"), ({"columns": []}, "columns"), ({"columns": [""]}, "columns"),
        ({"columns": "ID"}, "columns"), ({"hdu": True}, "hdu"), ({"hdu": -1}, "hdu"),
        ({"page": 2}, "page"),
    ]
    for bad, field in cases:
        with pytest.raises(ValidationError) as info:
            load(**bad)
        assert field in info.value.messages, bad
