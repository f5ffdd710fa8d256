"""Scenario ``jobtypes``: each astronomy job type on 2048×2048 inputs, through the fleet and called directly.

Target (the issue): wall time and peak memory through the fleet within 1.15× of calling the
same library code directly, plus a fixed cost under 100 ms for the time, i.e. ``fleet ≤ 1.15 ×
direct + 0.1 s``; the figure is ``fleet − 1.15 × direct`` against ``≤ 0.1 s``, and the memory
figure is ``fleet / direct`` peak RSS against ``≤ 1.15``. Method in ``bench/__main__.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from marshmallow import ValidationError

from bench.clients import HTTP_TIMEOUT_S, Api
from bench.direct import peak_rss_bytes
from bench.errors import BenchError
from bench.figures import ScenarioResult, Target, figure, say
from bench.fleet import ROOT, Fleet
from bench.options import Options
from bench.waiting import wait_for
from jobtypes import get_job_type
from worker.config import MEMORY_BUDGET_MB
from worker.jobs import HANDLERS

SCENARIO = "jobtypes"
TIME_RATIO, FIXED_COST_S, MEMORY_RATIO = 1.15, 0.1, 1.15
#: The workers' long-poll wait: pickup is woken by NOTIFY whatever it is, and a short wait lets a
#: stopped worker exit within about a second instead of finishing a 5 s poll.
CLAIM_WAIT_S = "1"
WARM_TIMEOUT_S = 120.0
#: Quiet time (no CPU used by the forkserver or its child) before the child counts as warm.
SETTLE_S = 0.3
MAX_JOB_WAIT_S = 600.0
DIRECT_MARGIN_S = 120.0
MIB = 2**20
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_JOB = """
    SELECT status, error, extract(epoch FROM finished_at - created_at)::float8,
           extract(epoch FROM started_at - created_at)::float8
    FROM jobs WHERE id = %s
"""
_RESULT = "SELECT result_payload FROM job_attempts WHERE job_id = %s AND outcome = 'SUCCEEDED'"
_FINISHED = ("SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT")

Refs = dict[str, dict[str, Any]]


class Skip(Exception):
    """This job type cannot be measured (handler missing or failing); the others go on."""


@dataclass(frozen=True)
class Case:
    """One job type's benchmark: the input files it reads and its payload over their references."""

    job_type: str
    inputs: tuple[str, ...]
    payload: Callable[[Refs], dict[str, Any]]
    what: str


def cases(field_ra: float, field_dec: float) -> tuple[Case, ...]:
    """The job types measured, in order, over the files of :mod:`bench.astro_inputs`."""
    region = {"shape": "ellipse", "frame": "icrs", "center": {"ra": field_ra, "dec": field_dec},
              "semi_major": 400.0, "semi_minor": 250.0, "angle_deg": 30.0}
    return (
        Case("fits.inspect", ("image",), lambda r: {"file": r["image"], "include_header": True},
             "headers and WCS footprint of the 2048² image"),
        Case("table.page", ("catalog",), lambda r: {"file": r["catalog"], "offset": 50_000, "limit": 1000},
             "rows 50 000–50 999 of a 100 000-row table"),
        Case("spectrum.extract", ("spectrum",), lambda r: {"file": r["spectrum"]},
             "100 000 points decimated to 2000"),
        Case("region.stats", ("image",), lambda r: {"file": r["image"], "region": region, "sigma_clip": True},
             "an 800″×500″ sky ellipse (≈ 1.3 Mpx), sigma-clipped"),
        Case("sources.detect", ("image",), lambda r: {"file": r["image"]},
             "DAOStarFinder at 5σ, ECSV + overlay PNG"),
        Case("image.composite", ("image", "channel2", "channel3"),
             lambda r: {"channels": [{"file": r["image"], "color": "blue"}, {"file": r["channel2"], "color": "green"},
                                     {"file": r["channel3"], "color": "red"}]},
             "3 channels, one reprojected, 2048² PNG"),
        Case("image.mosaic", ("image", "tile2"), lambda r: {"tiles": [{"file": r["image"]}, {"file": r["tile2"]}]},
             "2 tiles overlapping by 30 %, FITS + PNG"),
    )


# --- processes (/proc) ------------------------------------------------------------------------

def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (state first)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (from /proc/<pid>/task/*/children, else by scanning /proc)."""
    found: list[int] = []
    listed = list(Path(f"/proc/{pid}/task").glob("*/children"))
    if listed:
        for path in listed:
            try:
                found += [int(c) for c in path.read_text().split()]
            except OSError:
                continue  # that thread has exited meanwhile
        return found
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if int(_stat_fields(int(entry.name))[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue  # exited meanwhile
    return found


def forkserver_of(worker_pid: int) -> int | None:
    """The worker's multiprocessing forkserver (its child whose command line mentions it)."""
    for pid in children(worker_pid):
        try:
            if b"forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    return None


def cpu_ticks(pids: list[int]) -> int:
    """User + system clock ticks used so far by ``pids``."""
    total = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total


def wait_warm(proc: subprocess.Popen[bytes]) -> int:
    """Wait until the worker's forkserver has forked its warm child and both are idle; the forkserver's pid."""
    last: list[int] = []

    def probe() -> int | None:
        if proc.poll() is not None:
            raise BenchError(f"worker pid {proc.pid} exited (code {proc.returncode}) while warming up")
        server = forkserver_of(proc.pid)
        if server is None or not children(server):
            return None
        ticks = cpu_ticks([server, *children(server)])
        quiet = bool(last) and last[-1] == ticks
        last.append(ticks)
        return server if quiet else None

    return wait_for(probe, WARM_TIMEOUT_S, f"worker {proc.pid}'s warm job process", interval_s=SETTLE_S)


def tree_peak_rss(server: int) -> int:
    """The largest VmHWM among the forkserver and its children (the job ran in one of them)."""
    peaks = []
    for pid in [server, *children(server)]:
        try:
            peaks.append(peak_rss_bytes(f"/proc/{pid}/status"))
        except (OSError, RuntimeError):
            continue
    if not peaks:
        raise BenchError(f"forkserver {server} has gone; cannot read the job's peak memory")
    return max(peaks)


# --- one measurement each way ---------------------------------------------------------------

@dataclass
class FleetRun:
    """One job through the fleet: wall and pickup seconds (PostgreSQL's clock), CPU, peak RSS."""

    job_id: int
    wall_s: float
    pickup_s: float
    job_cpu_s: float
    worker_cpu_s: float
    job_rss: int
    worker_rss: int
    result: Any


@dataclass
class Run:
    """One measurement of a job type, through the fleet and direct."""

    job_id: int
    fleet_s: float
    direct_s: float
    pickup_s: float
    fleet_cpu_s: float
    direct_cpu_s: float
    worker_cpu_s: float
    fleet_rss: int
    direct_rss: int
    import_rss: int
    worker_rss: int
    results_equal: bool


def through_fleet(fleet: Fleet, api: Api, case: Case, payload: dict[str, Any], job_ids: list[int]) -> FleetRun:
    """Run the job on a fresh one-job worker whose warm child is idle; read its figures once it has finished."""
    found = get_job_type(case.job_type)
    timeout_s = min(MAX_JOB_WAIT_S, found.timeout_s if found else MAX_JOB_WAIT_S) + 30.0
    proc = fleet.start_workers(1, case.job_type, 1, 1, {"SKYFLEET_WORKER_CLAIM_WAIT_S": CLAIM_WAIT_S})[0]
    db = fleet.sql()
    try:
        server = wait_warm(proc)
        child_ticks, worker_ticks = cpu_ticks(children(server)), cpu_ticks([proc.pid])
        job = api.post("/api/jobs", {"type": case.job_type, "input_payload": payload, "cache": False})
        job_id = int(job["id"])
        job_ids.append(job_id)
        if job.get("origin") != "created":
            raise BenchError(f"job {job_id} was {job.get('origin')}, not created: the run would not be measured")

        def done() -> tuple[Any, ...] | None:
            row = db.one(_JOB, (job_id,))
            if row is None:
                raise BenchError(f"job {job_id} has vanished")
            if row[0] in _FINISHED or row[1] is not None:  # an error: finished, or waiting to retry
                return row
            if proc.poll() is not None:
                raise BenchError(f"worker pid {proc.pid} exited (code {proc.returncode}) running job {job_id}")
            return None

        status, error, wall_s, pickup_s = wait_for(done, timeout_s, f"{case.job_type} job {job_id}")
        if status != "SUCCEEDED":
            if status not in _FINISHED:
                api.post(f"/api/jobs/{job_id}/cancel", {})
            message = (error or {}).get("message", "no error recorded")
            raise Skip(f"job {job_id} {status} ({(error or {}).get('code')}): {message.strip()[:500]}")
        # The warm child is still alive (given back to the pool), so its counters are readable.
        run = FleetRun(job_id, float(wall_s), float(pickup_s),
                       job_cpu_s=(cpu_ticks(children(server)) - child_ticks) / CLOCK_TICKS,
                       worker_cpu_s=(cpu_ticks([proc.pid]) - worker_ticks) / CLOCK_TICKS,
                       job_rss=tree_peak_rss(server), worker_rss=peak_rss_bytes(f"/proc/{proc.pid}/status"),
                       result=None)
    finally:
        fleet.stop_workers([proc])
    run.result = db.value(_RESULT, (job_id,))
    return run


def direct(case: Case, payload: dict[str, Any], inputs: dict[str, str], out_dir: Path) -> dict[str, Any]:
    """Run the handler once in a fresh ``python -m bench.direct`` process; its figures and result."""
    found = get_job_type(case.job_type)
    spec = {"job_type": case.job_type, "payload": payload, "inputs": inputs, "output_dir": str(out_dir),
            "memory_budget_bytes": MEMORY_BUDGET_MB * MIB}
    try:
        done = subprocess.run([sys.executable, "-m", "bench.direct", json.dumps(spec)], check=False, cwd=ROOT,
                              capture_output=True, text=True,
                              timeout=(found.timeout_s if found else MAX_JOB_WAIT_S) + DIRECT_MARGIN_S)
    except subprocess.TimeoutExpired:
        raise Skip("the direct run timed out") from None
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        raise Skip(f"the direct run failed: {tail[0][:500]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def measure(fleet: Fleet, api: Api, case: Case, payload: dict[str, Any], loaded: dict[str, Any],
            inputs: dict[str, str], out_dir: Path, job_ids: list[int]) -> Run:
    """One fleet run then one direct run of the same payload over the same files."""
    f = through_fleet(fleet, api, case, payload, job_ids)
    d = direct(case, loaded, inputs, out_dir)
    # Normalise both through JSON: the fleet's result came back from jsonb.
    equal = json.loads(json.dumps(f.result)) == json.loads(json.dumps(d["result"]))
    return Run(job_id=f.job_id, fleet_s=f.wall_s, direct_s=float(d["wall_s"]), pickup_s=f.pickup_s,
               fleet_cpu_s=f.job_cpu_s, direct_cpu_s=float(d["cpu_s"]), worker_cpu_s=f.worker_cpu_s,
               fleet_rss=f.job_rss, direct_rss=int(d["peak_rss_bytes"]), import_rss=int(d["import_rss_bytes"]),
               worker_rss=f.worker_rss, results_equal=equal)


# --- the scenario -----------------------------------------------------------------------------

def upload(api: Api, path: Path) -> int:
    """Upload a FITS file as the admin (POST /api/files, multipart part ``file``); its file id."""
    with path.open("rb") as fh:
        response = api.session.post(f"{api.base_url}/api/files", files={"file": (path.name, fh, "application/fits")},
                                    timeout=HTTP_TIMEOUT_S)
    if response.status_code != 201:
        raise BenchError(f"upload of {path.name}: HTTP {response.status_code}: {response.text[:300]}")
    return int(response.json()["data"]["id"])


def selected(all_cases: tuple[Case, ...], wanted: str) -> list[Case]:
    """The cases ``--jobtype-types`` names (comma-separated, or ``all``)."""
    if wanted.strip() == "all":
        return list(all_cases)
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    known = {c.job_type: c for c in all_cases}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise BenchError(f"--jobtype-types: unknown {unknown}; choose from all, {', '.join(known)}")
    return [known[n] for n in names]


def check(case: Case, refs: Refs) -> tuple[dict[str, Any], dict[str, Any]]:
    """The case's submitted and schema-loaded payloads; Skip when its type or handler is missing."""
    found = get_job_type(case.job_type)
    if found is None or case.job_type not in HANDLERS:
        raise Skip("not in the job-type catalogue or in worker.jobs.HANDLERS")
    module = HANDLERS[case.job_type].partition(":")[0]
    if find_spec(module) is None:
        raise Skip(f"handler module {module} is missing")
    payload = case.payload(refs)
    try:
        loaded = found.input_schema().load(payload)
    except ValidationError as exc:
        raise Skip(f"the benchmark payload does not validate: {exc.messages}") from None
    return payload, loaded


def summarise(case: Case, runs: list[Run], result: ScenarioResult) -> None:
    """Medians of the runs as figures, a note line and the scenario data."""
    median = {key: statistics.median(getattr(r, key) for r in runs) for key in (
        "fleet_s", "direct_s", "pickup_s", "fleet_cpu_s", "direct_cpu_s", "worker_cpu_s",
        "fleet_rss", "direct_rss", "import_rss", "worker_rss")}
    fleet_s, direct_s = median["fleet_s"], median["direct_s"]
    fixed = fleet_s - TIME_RATIO * direct_s
    ratio = fleet_s / direct_s if direct_s > 0 else float("inf")
    memory_ratio = median["fleet_rss"] / median["direct_rss"]
    equal = all(r.results_equal for r in runs)
    t = case.job_type
    result.figures.append(figure(SCENARIO, f"{t}: fleet − 1.15 × direct wall", fixed, "s",
                                 Target("<=", FIXED_COST_S), fleet_s=fleet_s, direct_s=direct_s, ratio=ratio))
    result.figures.append(figure(SCENARIO, f"{t}: peak RSS fleet / direct", memory_ratio, "×",
                                 Target("<=", MEMORY_RATIO), fleet_mib=median["fleet_rss"] / MIB,
                                 direct_mib=median["direct_rss"] / MIB))
    result.notes.append(
        f"{t:<16} wall {direct_s:6.3f} → {fleet_s:6.3f} s ×{ratio:<5.2f} (pickup {median['pickup_s'] * 1000:3.0f} ms)"
        f"  CPU {median['direct_cpu_s']:5.2f} → {median['fleet_cpu_s']:5.2f} s (+ worker "
        f"{median['worker_cpu_s']:4.2f})  RSS {median['direct_rss'] / MIB:3.0f} → {median['fleet_rss'] / MIB:3.0f} MiB"
        f"{'' if equal else '  RESULTS DIFFER'}")
    result.data["types"][t] = {
        "what": case.what, "runs": [vars(r) for r in runs], "median": median, "ratio": ratio,
        "fixed_cost_s": fixed, "memory_ratio": memory_ratio, "results_equal": equal,
        "time_met": fixed <= FIXED_COST_S, "memory_met": memory_ratio <= MEMORY_RATIO,
    }


def bench_jobtypes(fleet: Fleet, opts: Options) -> ScenarioResult:
    """Each job type through a fresh one-job worker versus its handler called directly; medians of the runs."""
    from bench import astro_inputs  # numpy and astropy: only this scenario needs them

    if opts.jobtype_repeats < 1:
        raise BenchError("--jobtype-repeats must be at least 1")
    fleet.reset()
    chosen = selected(cases(astro_inputs.FIELD_RA_DEG, astro_inputs.FIELD_DEC_DEG), opts.jobtype_types)
    directory = opts.data_dir / "astro-inputs"
    say(f"  inputs in {directory} …")
    paths = astro_inputs.ensure_inputs(directory)
    api = fleet.admin_api()
    result = ScenarioResult(data={"repeats": opts.jobtype_repeats, "types": {}, "skipped": {}})
    file_ids: dict[str, int] = {}
    job_ids: list[int] = []
    started, load_before = time.monotonic(), os.getloadavg()[0]
    try:
        for name in sorted({n for c in chosen for n in c.inputs}):
            file_ids[name] = upload(api, paths[name])
        refs = {name: {"file_id": fid} for name, fid in file_ids.items()}
        for case in chosen:
            runs: list[Run] = []
            try:
                payload, loaded = check(case, refs)
                inputs = {f"file_id:{file_ids[n]}": str(paths[n]) for n in case.inputs}
                for i in range(opts.jobtype_repeats):
                    run = measure(fleet, api, case, payload, loaded, inputs,
                                  opts.data_dir / "direct-out" / f"{case.job_type}-{i}", job_ids)
                    runs.append(run)
                    say(f"  {case.job_type} run {i + 1}: fleet {run.fleet_s:.3f} s, direct {run.direct_s:.3f} s, "
                        f"RSS {run.fleet_rss / MIB:.0f} / {run.direct_rss / MIB:.0f} MiB")
            except Skip as exc:
                say(f"  {case.job_type}: SKIPPED — {exc}")
                result.notes.append(f"{case.job_type:<16} SKIPPED: {exc}")
                result.data["skipped"][case.job_type] = str(exc)
                continue
            summarise(case, runs, result)
    finally:
        _clean_up(api, job_ids, list(file_ids.values()))
        api.close()
    if not result.data["types"]:
        raise BenchError(f"no job type could be measured: {result.data['skipped']}")
    result.notes.append(
        f"direct → fleet, medians of {opts.jobtype_repeats} run(s); fleet wall: jobs.created_at → finished_at on a "
        f"fresh one-job worker; CPU and RSS: the job's process (worker: its parent's CPU besides); "
        f"load average {load_before:.1f} → {os.getloadavg()[0]:.1f}; {time.monotonic() - started:.0f} s in all")
    return result


def _clean_up(api: Api, job_ids: list[int], file_ids: list[int]) -> None:
    """Delete the benchmark's jobs (and their outputs) and uploads, so repeated runs do not fill the disk."""
    for path in [f"/api/jobs/{j}" for j in job_ids] + [f"/api/files/{f}" for f in file_ids]:
        try:
            response = api.session.delete(f"{api.base_url}{path}", timeout=HTTP_TIMEOUT_S)
            if response.status_code >= 400:
                say(f"  could not delete {path}: HTTP {response.status_code}")
        except OSError as exc:  # requests' errors are OSErrors; clean-up must not hide the scenario's error
            say(f"  could not delete {path}: {exc}")
