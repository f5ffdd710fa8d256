"""What a handler runs with: its inputs as local files, a directory for outputs, progress, cancellation.

A handler is ``run(payload, ctx) -> dict``: ``payload`` is the job's loaded input payload,
the returned dict its JSON result (run it through :func:`worker.jobs.jsonsafe.jsonable`
when it may hold NaN or numpy scalars). Inputs have been fetched before the handler runs
(``ctx.input_path(ref)``); files written under ``ctx.output_path(name)`` are uploaded to
storage after it returns. The same class serves the worker's child processes and tests
that call handlers directly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from worker.jobs.errors import Cancelled, PermanentError

#: Budget when nothing else is configured: 2 GiB per running job.
DEFAULT_MEMORY_BUDGET_BYTES = 2 * 1024**3
_OUTPUT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class CancelFlag(Protocol):
    def is_set(self) -> bool: ...


class _NeverCancelled:
    def is_set(self) -> bool:
        return False


def ref_id(ref: Mapping[str, Any]) -> str:
    """A stable name for an input reference: ``file_id:12``, ``key:uploads/…`` or ``url:https://…``."""
    for kind in ("file_id", "key", "url"):
        if kind in ref:
            return f"{kind}:{ref[kind]}"
    raise PermanentError(f"not an input-file reference: {dict(ref)!r}")


@dataclass(frozen=True)
class OutputFile:
    """A file a handler wrote, before upload."""

    name: str
    path: Path
    content_type: str | None = None


@dataclass
class JobContext:
    job_id: int
    attempt: int
    #: ref_id(ref) → the local file holding that input.
    inputs: Mapping[str, Path]
    output_dir: Path
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES
    cancel_flag: CancelFlag = field(default_factory=_NeverCancelled)
    progress_sink: Callable[[dict[str, Any]], None] = lambda _progress: None
    outputs: list[OutputFile] = field(default_factory=list)

    def input_path(self, ref: Mapping[str, Any]) -> Path:
        """The local file of an input reference from the payload."""
        try:
            return self.inputs[ref_id(ref)]
        except KeyError:
            raise PermanentError(f"input {ref_id(ref)} was not fetched for this job") from None

    def output_path(self, name: str, content_type: str | None = None) -> Path:
        """Where to write the output ``name`` (e.g. ``catalogue.ecsv``); it is uploaded after success."""
        if not _OUTPUT_NAME.fullmatch(name) or any(o.name == name for o in self.outputs):
            raise ValueError(f"bad or repeated output name {name!r}")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / name
        self.outputs.append(OutputFile(name, path, content_type))
        return path

    def report_progress(self, percent: float | None = None, stage: str | None = None,
                        message: str | None = None) -> None:
        """Sent with the worker's next heartbeat (the latest report wins)."""
        if percent is not None:
            percent = max(0.0, min(100.0, float(percent)))
        self.progress_sink({"percent": percent, "stage": stage, "message": message})

    def check_cancelled(self) -> None:
        """Raise :class:`Cancelled` if the job was cancelled; call it between stages."""
        if self.cancel_flag.is_set():
            raise Cancelled()

    def check_memory(self, needed_bytes: float, what: str) -> None:
        """Refuse (permanently) work whose estimated peak memory exceeds this worker's budget."""
        if needed_bytes > self.memory_budget_bytes:
            raise PermanentError(
                f"{what} needs about {needed_bytes / 2**20:,.0f} MiB, more than this worker's "
                f"budget of {self.memory_budget_bytes / 2**20:,.0f} MiB per job")
