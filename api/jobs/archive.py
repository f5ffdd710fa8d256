"""A zip of a job's outputs, produced as a stream: no temporary file, memory bounded by a chunk."""

from __future__ import annotations

import posixpath
import time
import zipfile
from collections.abc import Iterable, Iterator
from typing import Any

from jobtypes.protocol import ATTEMPT_PREFIX
from storage import Storage

#: Deflating one chunk takes a few milliseconds of CPU, during which (under gevent) no other
#: request of the process runs; after each, the stream yields to them (``time.sleep(0)``).
CHUNK_BYTES = 256 * 1024
#: Already-compressed formats are stored as they are; deflating them again costs CPU for nothing.
_STORED_SUFFIXES = (".png", ".jpg", ".jpeg", ".gz", ".fz", ".zip", ".bz2", ".xz")


class _Sink:
    """A write-only, non-seekable file that zipfile writes into and the generator drains.

    zipfile sees that it cannot seek and writes data descriptors after each member instead
    of patching sizes back into the local headers, which is what makes streaming possible.
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def member_name(key: str) -> str:
    """A file's name inside the archive: its path below the attempt's prefix (``ATTEMPT_PREFIX``)."""
    return ATTEMPT_PREFIX.sub("", key) or posixpath.basename(key)


def zip_stream(storage: Storage, files: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """Yield a zip archive of ``files`` (each ``{"key": …}``, one attempt's outputs)."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", allowZip64=True) as archive:  # type: ignore[call-overload]
        for entry in files:
            key = entry["key"]
            name = member_name(key)
            compress = zipfile.ZIP_STORED if name.lower().endswith(_STORED_SUFFIXES) else zipfile.ZIP_DEFLATED
            info = zipfile.ZipInfo(name)
            info.compress_type = compress
            with storage.open(key) as source, archive.open(info, "w", force_zip64=True) as member:
                while chunk := source.read(CHUNK_BYTES):
                    member.write(chunk)
                    if data := sink.drain():
                        yield data
                    time.sleep(0)  # let heartbeats and health checks of this process run
            if data := sink.drain():
                yield data
    yield sink.drain()
