"""Reading rows of a FITS table straight from the file, so a page costs only its rows.

astropy's ``hdu.data`` is memory-mapped, but building it scans every logical (``L``)
column in full, so a page of a table with a hundred million rows would read them all. A
:class:`TableReader` instead maps the raw big-endian records (and the heap of
variable-length arrays) with numpy and converts only the rows asked for, the way astropy
would: TSCAL/TZERO applied (the TZERO = 2**15/2**31/2**63 convention read as unsigned),
TNULL and undefined logicals as None, strings decoded and right-stripped, bits as booleans,
complex numbers as [re, im]. Column descriptions come from the header alone.
ASCII tables (rare, small) go through astropy, whose conversion of a slice is lazy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
from astropy.io import fits

from worker.jobs.errors import PermanentError

#: TZERO values that mark a signed integer column as unsigned (FITS 4.0, section 7.3.2).
_UNSIGNED_ZERO = {"I": 2**15, "J": 2**31, "K": 2**63}
#: Heap element types of variable-length (P/Q) columns.
_HEAP_DTYPES = {"L": "i1", "X": "u1", "B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "A": "S1",
                "E": ">f4", "D": ">f8", "C": ">c8", "M": ">c16"}
_BASE_DTYPES = {"B": "uint8", "I": "int16", "J": "int32", "K": "int64", "E": "float32", "D": "float64",
                "C": "complex64", "M": "complex128", "A": "str", "L": "bool", "X": "bool"}
NUMERIC_CODES = "BIJKED"


@dataclass(frozen=True)
class ColumnInfo:
    """A table column as a client sees it: ``dtype`` of the values returned, ``shape`` of a cell
    (``[]`` scalar, ``None`` variable-length)."""

    name: str
    format: str
    unit: str | None
    dtype: str
    shape: list[int] | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _code(col: fits.Column) -> str:
    """The TFORM type letter (for P/Q columns, of their elements)."""
    fmt = col.format
    return str(fmt.p_format if fmt.format in "PQ" else fmt.format)


def _value_dtype(col: fits.Column, code: str) -> str:
    bscale = 1.0 if col.bscale is None else float(col.bscale)
    bzero = 0.0 if col.bzero is None else float(col.bzero)
    if code in NUMERIC_CODES and (bscale != 1.0 or bzero != 0.0):
        if bscale == 1.0 and _UNSIGNED_ZERO.get(code) == bzero:
            return "u" + _BASE_DTYPES[code]
        if bscale == 1.0 and code == "B" and bzero == -128:
            return "int8"
        return "float64"
    return _BASE_DTYPES.get(code, "str")


def column_infos(hdu: fits.BinTableHDU | fits.TableHDU) -> list[ColumnInfo]:
    """The columns of a table HDU, from its header (no row is read)."""
    columns = hdu.columns
    infos = []
    for col in columns:
        unit = str(col.unit) if col.unit else None
        if isinstance(hdu, fits.TableHDU):
            code = col.format.format
            dtype = "str" if code == "A" else "int64" if code == "I" else "float64"
            infos.append(ColumnInfo(col.name, str(col.format), unit, dtype, []))
            continue
        code = _code(col)
        if col.format.format in "PQ":
            shape: list[int] | None = None
        elif code == "X":
            shape = [int(col.format.repeat)] if col.format.repeat > 1 else []
        else:
            shape = list(columns.dtype[col.name].shape)
        infos.append(ColumnInfo(col.name, str(col.format), unit, _value_dtype(col, code), shape))
    return infos


def resolve_column(hdu: fits.BinTableHDU | fits.TableHDU, name: str) -> str | None:
    """The table's spelling of column ``name`` (exact match first, then case-insensitive), or None."""
    names = list(hdu.columns.names)
    if name in names:
        return name
    folded = [n for n in names if n.casefold() == name.casefold()]
    return folded[0] if folded else None


def resolve_columns(hdu: fits.BinTableHDU | fits.TableHDU, wanted: list[str] | None) -> list[str]:
    """The table's names of the ``wanted`` columns (all when None), each once, in order; an unknown
    name is a PermanentError that names it."""
    if wanted is None:
        return list(hdu.columns.names)
    found: list[str] = []
    for name in wanted:
        real = resolve_column(hdu, name)
        if real is None:
            raise PermanentError(f"the table has no column {name!r} (it has: {', '.join(hdu.columns.names)})")
        if real not in found:
            found.append(real)
    return found


def _strings(raw: np.ndarray) -> np.ndarray:
    # FITS pads strings with spaces (numpy already drops trailing NULs); trailing blanks carry no meaning.
    return np.strings.rstrip(np.strings.decode(raw, "utf-8", "replace"), " ")


def _logicals(raw: np.ndarray) -> np.ndarray:
    out = np.full(raw.shape, None, dtype=object)
    out[raw == ord("T")] = True
    out[raw == ord("F")] = False
    return out


def _scaled(col: fits.Column, code: str, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Physical values of an integer or float column (native order) and the TNULL mask, if any."""
    native = raw.astype(raw.dtype.newbyteorder("="))
    mask = native == int(col.null) if code in "BIJK" and isinstance(col.null, (int, np.integer)) else None
    bscale = 1.0 if col.bscale is None else float(col.bscale)
    bzero = 0.0 if col.bzero is None else float(col.bzero)
    if bscale == 1.0 and bzero == 0.0:
        values = native
    elif bscale == 1.0 and _UNSIGNED_ZERO.get(code) == bzero:
        unsigned = np.dtype(f"u{native.itemsize}")
        values = native.view(unsigned) ^ unsigned.type(1 << (8 * native.itemsize - 1))
    elif bscale == 1.0 and code == "B" and bzero == -128:
        values = (native.astype(np.int16) - 128).astype(np.int8)
    else:
        values = native * bscale + bzero
    return values, mask


def _with_nulls(values: np.ndarray, mask: np.ndarray | None) -> list[Any]:
    if mask is None or not mask.any():
        return values.tolist()  # type: ignore[no-any-return]
    cells = values.astype(object)
    cells[mask] = None
    return cells.tolist()  # type: ignore[no-any-return]


def _cells(col: fits.Column, code: str, raw: np.ndarray, repeat: int) -> list[Any]:
    """JSON-ready cells (or elements of one variable-length cell) of raw stored values."""
    if code == "A":
        return _strings(raw).tolist()  # type: ignore[no-any-return]
    if code == "L":
        return _logicals(raw).tolist()  # type: ignore[no-any-return]
    if code == "X":
        bits = np.unpackbits(raw.reshape(len(raw), -1), axis=-1)[:, :repeat].astype(bool)
        return (bits[:, 0] if repeat == 1 else bits).tolist()  # type: ignore[no-any-return]
    if code in "CM":
        native = raw.astype(raw.dtype.newbyteorder("="))
        return np.stack([native.real, native.imag], axis=-1).tolist()  # type: ignore[no-any-return]
    return _with_nulls(*_scaled(col, code, raw))


class TableReader:
    """Rows of one table HDU, read through a memory map so only the rows asked for are touched."""

    def __init__(self, path: Path, hdul: fits.HDUList, index: int) -> None:
        self.hdu = hdul[index]
        if not isinstance(self.hdu, (fits.BinTableHDU, fits.TableHDU)):
            raise PermanentError(f"HDU {index} is not a table")
        header = self.hdu.header
        self.n_rows = int(header.get("NAXIS2", 0))
        self._columns = {col.name: col for col in self.hdu.columns}
        self._ascii = isinstance(self.hdu, fits.TableHDU)
        self._records: np.ndarray | None = None
        self._heap: np.ndarray | None = None
        if self._ascii or self.n_rows == 0:
            return
        dtype = self.hdu.columns.dtype.newbyteorder(">")
        row_bytes = int(header.get("NAXIS1", 0))
        if dtype.itemsize != row_bytes:
            raise PermanentError(f"HDU {index}: rows of {row_bytes} bytes (NAXIS1) do not match its columns "
                                 f"({dtype.itemsize} bytes)")
        data_offset = int(hdul.fileinfo(index)["datLoc"])
        table_bytes = row_bytes * self.n_rows
        try:
            self._records = np.memmap(path, dtype=dtype, mode="r", offset=data_offset, shape=(self.n_rows,))
            heap_start = int(header.get("THEAP", table_bytes))
            heap_bytes = int(header.get("PCOUNT", 0)) - (heap_start - table_bytes)
            if heap_bytes > 0 and any(col.format.format in "PQ" for col in self._columns.values()):
                self._heap = np.memmap(path, dtype=np.uint8, mode="r", offset=data_offset + heap_start,
                                       shape=(heap_bytes,))
        except (ValueError, OSError) as exc:
            raise PermanentError(f"HDU {index}: the table data cannot be read (truncated file?): {exc}") from None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Drop the memory maps (they close once no view of them is left)."""
        self._records = None
        self._heap = None

    def column(self, name: str) -> fits.Column:
        return self._columns[name]

    def _raw(self, name: str, start: int, stop: int) -> np.ndarray:
        if self._records is None or start >= stop:
            dtype = self.hdu.columns.dtype.newbyteorder(">")
            return np.zeros((0,), dtype=dtype)[name]
        # A copy of just these rows: the only part of the file that is read.
        return np.array(self._records[start:stop][name])

    def page_bytes(self, names: list[str], start: int, stop: int) -> int:
        """Bytes of stored data the cells of ``names`` in rows [start, stop) hold, heap included."""
        if self._ascii:
            return (stop - start) * sum(int(self.hdu.columns.dtype[n].itemsize) for n in names)
        total = 0
        for name in names:
            col = self._columns[name]
            if col.format.format in "PQ":
                counts = self._raw(name, start, stop)[:, 0].astype(np.int64)
                total += int(counts.sum()) * np.dtype(_HEAP_DTYPES[_code(col)]).itemsize
            else:
                total += (stop - start) * int(self.hdu.columns.dtype[name].itemsize)
        return total

    def cells(self, name: str, start: int, stop: int) -> list[Any]:
        """The JSON-ready cells of column ``name`` in rows [start, stop)."""
        col = self._columns[name]
        if self._ascii:
            values = self.hdu.data[start:stop].field(name)
            if values.dtype.kind in "SU":
                return np.strings.rstrip(np.asarray(values).astype(str), " ").tolist()  # type: ignore[no-any-return]
            return np.asarray(values).tolist()  # type: ignore[no-any-return]
        raw = self._raw(name, start, stop)
        code = _code(col)
        if col.format.format in "PQ":
            return [self._heap_cell(col, code, int(count), int(offset)) for count, offset in raw]
        return _cells(col, code, raw, int(col.format.repeat))

    def _heap_cell(self, col: fits.Column, code: str, count: int, offset: int) -> Any:
        if count == 0:
            return "" if code == "A" else []
        dtype = np.dtype(_HEAP_DTYPES[code])
        nbytes = (count + 7) // 8 if code == "X" else count * dtype.itemsize
        if self._heap is None or offset < 0 or offset + nbytes > len(self._heap):
            raise PermanentError(f"column {col.name!r}: a variable-length cell points outside the heap")
        raw = np.array(self._heap[offset:offset + nbytes]).view(dtype)
        if code == "A":
            return _strings(raw.view(f"S{count}"))[0].item()
        if code == "X":
            return np.unpackbits(raw)[:count].astype(bool).tolist()
        return _cells(col, code, raw, 1)

    def numeric(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Column ``name`` as float64 (cells keep their shape), scaled, with TNULL cells as NaN."""
        stop = self.n_rows if stop is None else stop
        col = self._columns[name]
        if self._ascii:
            if col.format.format == "A":
                raise PermanentError(f"column {name!r} is not numeric (TFORM {col.format})")
            return np.asarray(self.hdu.data[start:stop].field(name), dtype=np.float64)
        code = _code(col)
        if col.format.format in "PQ" or code not in NUMERIC_CODES:
            raise PermanentError(f"column {name!r} is not a fixed-length numeric column (TFORM {col.format})")
        values, mask = _scaled(col, code, self._raw(name, start, stop))
        values = values.astype(np.float64)
        if mask is not None:
            values[mask] = np.nan
        return values
