"""``python -m bench.direct '<json spec>'``: one handler call outside the fleet, timed.

The ``jobtypes`` scenario runs this as a fresh subprocess per measurement, so the direct
figures come from a process in the same state as a worker's warm child: the handler's module
(the one the worker's forkserver preloads) is imported *before* the clock starts, the
handler is then called once on local files with a :class:`worker.jobs.JobContext`, and the
call alone is timed. No queue, HTTP, input fetch, output upload or result report.

The spec (a JSON object)::

    {"job_type": "sources.detect",
     "payload": {...},               # already loaded by the type's input schema
     "inputs": {"file_id:3": "/…/image.fits", …},   # ref_id → local file
     "output_dir": "/…/out",
     "memory_budget_bytes": 2147483648}

Printed on stdout, one JSON line: ``wall_s`` and ``cpu_s`` (the call), ``peak_rss_bytes`` (VmHWM of this
process after the call, imports included, as a worker child's is), ``import_rss_bytes``
(VmHWM before the call), ``outputs`` (name → bytes) and the handler's ``result``.
"""

from __future__ import annotations

import importlib
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from worker.jobs import HANDLERS, JobContext, handler_for
from worker.jobs.context import DEFAULT_MEMORY_BUDGET_BYTES
from worker.jobs.jsonsafe import jsonable


def peak_rss_bytes(status_path: str = "/proc/self/status") -> int:
    """VmHWM (peak resident set size) of a process, in bytes, from ``/proc/<pid>/status``."""
    with open(status_path) as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"no VmHWM line in {status_path}")


def _cpu_s() -> float:
    """User + system CPU seconds of this process so far (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Import the handler's module, then call the handler once; the figures and its result."""
    job_type = spec["job_type"]
    # What the worker's forkserver preloads for this type (worker.runtime: HANDLERS[t] module).
    importlib.import_module(HANDLERS[job_type].partition(":")[0])
    handler = handler_for(job_type)
    output_dir = Path(spec["output_dir"])
    output_dir.mkdir(parents=True, exist_ok=True)
    ctx = JobContext(job_id=0, attempt=1, inputs={k: Path(v) for k, v in spec["inputs"].items()},
                     output_dir=output_dir,
                     memory_budget_bytes=int(spec.get("memory_budget_bytes", DEFAULT_MEMORY_BUDGET_BYTES)))
    import_rss = peak_rss_bytes()
    cpu_before = _cpu_s()
    started = time.perf_counter()
    result = handler(spec["payload"], ctx)
    wall = time.perf_counter() - started
    cpu = _cpu_s() - cpu_before
    peak = peak_rss_bytes()
    outputs = {o.name: o.path.stat().st_size for o in ctx.outputs if o.path.is_file()}
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_bytes": peak, "import_rss_bytes": import_rss, "outputs": outputs,
            "result": jsonable(result)}  # as the worker's child does, but after the clock


def main(argv: list[str]) -> int:
    """Run the spec given as the one argument; print the figures as one JSON line."""
    if len(argv) != 1:
        print("usage: python -m bench.direct '<json spec>'", file=sys.stderr)
        return 2
    print(json.dumps(run(json.loads(argv[0])), allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
