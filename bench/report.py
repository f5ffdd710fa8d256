"""The run's report: its context, the summary of targets, and results.json."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.figures import Figure, format_figure, say
from bench.options import Options


def meta(opts: Options) -> dict[str, Any]:
    """The context the figures were taken in."""
    return {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": opts.quick,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
        "cpu_count": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "web_workers": int(os.environ.get("SKYFLEET_WEB_WORKERS", "2")),
        "web_connections": int(os.environ.get("SKYFLEET_WEB_CONNECTIONS", "2000")),
    }


def print_summary(figures: list[Figure], errors: dict[str, str]) -> None:
    """Every figure with a target, with its verdict, and the scenarios that failed."""
    judged = [f for f in figures if f.target is not None]
    if judged:
        say("\n== targets ==")
        for fig in judged:
            say(format_figure(fig))
    for name, error in errors.items():
        say(f"  {name}: {error}" if name == "interrupted" else f"  {name}: FAILED ({error})")


def write_results(path: Path, info: dict[str, Any], figures: list[Figure], data: dict[str, Any],
                  errors: dict[str, str]) -> None:
    """Write everything measured so far as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    info = info | {"finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                   "load_average_at_end": list(os.getloadavg())}
    body = {"meta": info, "figures": [asdict(f) for f in figures], "scenarios": data, "errors": errors}
    path.write_text(json.dumps(body, indent=2, default=str) + "\n")
