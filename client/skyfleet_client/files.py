"""Files: your library of FITS files (streamed uploads, with progress)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from skyfleet_client.http import Session


class _Counting:
    """A file read in chunks by the upload, telling ``progress(sent, total)`` as it goes."""

    def __init__(self, file: IO[bytes], total: int, progress: Callable[[int, int], None] | None) -> None:
        self._file, self._total, self._progress, self._sent = file, total, progress, 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._file.read(size)
        self._sent += len(chunk)
        if self._progress is not None:
            self._progress(self._sent, self._total)
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        self._sent = 0 if offset == 0 and whence == 0 else self._sent
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def fileno(self) -> int:
        return self._file.fileno()


class Files:
    """``client.files``."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def upload(self, path: str | Path, name: str | None = None,
               progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Upload a FITS file, streamed from disk (never read whole into memory); its record
        (``id``: name it in a job's input as ``{"file_id": id}``). ``progress(sent, total)`` hears
        each chunk."""
        source = Path(path)
        total = source.stat().st_size
        with open(source, "rb") as file:
            counting = _Counting(file, total, progress)
            data: dict[str, Any] = self.session.call(
                "POST", "/api/files", data={"name": name} if name else None,
                files={"file": (source.name, counting, "application/fits")})
        return data

    def list(self, q: str | None = None, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Your files (admins: everyone's), newest first, every page in turn."""
        yield from self.session.pages("/api/files", {"q": q} if q else {}, page_size)

    def get(self, file_id: int) -> dict[str, Any]:
        data: dict[str, Any] = self.session.call("GET", f"/api/files/{file_id}")
        return data

    def delete(self, file_id: int) -> dict[str, Any]:
        """Delete a file (409 ``Conflict`` while a job reads it: ``details.job_ids`` names them)."""
        data: dict[str, Any] = self.session.call("DELETE", f"/api/files/{file_id}")
        return data
