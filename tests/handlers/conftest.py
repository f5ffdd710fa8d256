"""Fixtures of the handler tests: a JobContext over local files, as the worker's child process has."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from worker.jobs.context import JobContext, ref_id

MakeContext = Callable[..., JobContext]


@pytest.fixture
def make_context(tmp_path: Path) -> MakeContext:
    """``make_context({"key": "a.fits"}: path, …, memory_budget_bytes=…)`` → a JobContext.

    Inputs are given as (reference, local path) pairs; outputs go to ``tmp_path/out``.
    """

    def build(*inputs: tuple[dict[str, Any], Path], **kwargs: Any) -> JobContext:
        out = tmp_path / "out"
        out.mkdir(exist_ok=True)
        progress: list[dict[str, Any]] = []
        ctx = JobContext(job_id=1, attempt=1, inputs={ref_id(ref): path for ref, path in inputs},
                         output_dir=out, progress_sink=progress.append, **kwargs)
        ctx.progress_log = progress  # type: ignore[attr-defined]
        return ctx

    return build
