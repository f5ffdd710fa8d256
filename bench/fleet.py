"""The fleet under test: the embedded PostgreSQL, the API under gunicorn and worker processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import IO

import requests

from api.embedded import EmbeddedPostgres
from api.launcher import LaunchConfig, prepare, stop_processes
from bench.clients import Api, Db, login
from bench.errors import BenchError
from bench.figures import say
from bench.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
ADMIN_EMAIL = "admin@skyfleet.local"
ADMIN_PASSWORD = "bench-admin-password"
WORKER_EMAIL = "local-worker@service.skyfleet.internal"
TRUNCATE = "TRUNCATE job_attempts, job_requests, jobs, workers RESTART IDENTITY CASCADE"

READY_TIMEOUT_S = 60.0
CLAIM_WAIT_S = "5"  # the workers' long-poll wait per claim (SKYFLEET_WORKER_CLAIM_WAIT_S)


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Fleet:
    """The embedded PostgreSQL, the API and worker processes; :meth:`close` stops them all."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.log_dir = data_dir / "logs"
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}"
        self.database_url = ""
        self.key_env: dict[str, str] = {}
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
        url, key_env, embedded, _notes = prepare(LaunchConfig(
            data_dir=self.data_dir, port=self.port, database_url=None, admin_email=None,
            admin_password=ADMIN_PASSWORD, jwt_key_file=None, workers=0,
        ))
        self.database_url, self.key_env, self.embedded = url, key_env, embedded
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
            f"{os.environ.get('SKYFLEET_WEB_CONNECTIONS', '2000')} gevent connections) …")
        # The benchmarks measure the queue, not the per-user guards: a million pending jobs from
        # one account, hundreds of submissions a second.
        env = os.environ | self.key_env | {"DATABASE_URL": self.database_url, "PORT": str(self.port),
                                           "SKYFLEET_RATE_LIMIT_PER_MINUTE": "0",
                                           "SKYFLEET_MAX_ACTIVE_JOBS_PER_USER": "100000000",
                                           "SKYFLEET_STORAGE_DIR": str(self.data_dir / "storage")}
        argv = [sys.executable, "-m", "gunicorn", "-c", "python:api.gunicorn_conf", "api.wsgi:app"]
        self.api_proc = self._spawn(argv, env, "api.log")
        wait_for(self._api_healthy, READY_TIMEOUT_S, "the API to answer /api/health", interval_s=0.2)

    def _api_healthy(self) -> bool:
        """Whether /api/health answers 200; BenchError if the API has exited."""
        assert self.api_proc is not None
        if self.api_proc.poll() is not None:
            raise BenchError(f"the API exited during start-up (code {self.api_proc.returncode}); "
                             f"see {self.log_dir / 'api.log'}")
        try:
            return requests.get(f"{self.api_url}/api/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def start_workers(self, count: int, types: str, concurrency: int, claim_batch: int,
                      extra_env: dict[str, str] | None = None) -> list[subprocess.Popen[bytes]]:
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
            "SKYFLEET_STORAGE_DIR": str(self.data_dir / "storage"),
            "SKYFLEET_WORKER_WORK_DIR": str(self.data_dir / "work"),
        } | (extra_env or {})
        procs = []
        for _ in range(count):
            self._spawned += 1
            procs.append(self._spawn([sys.executable, "-m", "worker"], env, f"worker-{self._spawned}.log"))
        self.workers += procs
        wait_for(lambda: self._registered(procs), READY_TIMEOUT_S, f"{count} workers to register")
        return procs

    def _registered(self, procs: list[subprocess.Popen[bytes]]) -> bool:
        """Whether every one of ``procs`` has registered; BenchError if one has exited."""
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            raise BenchError(f"a worker exited during start-up (code {dead[0].returncode}); "
                             f"see {self.log_dir}")
        count = self.sql().value("SELECT count(*) FROM workers WHERE stopped_at IS NULL AND pid = ANY(%s)",
                                 ([p.pid for p in procs],))
        return bool(count == len(procs))

    def _spawn(self, argv: list[str], env: dict[str, str], log_name: str) -> subprocess.Popen[bytes]:
        """Start a child process in its own session, its output appended to ``log_dir/log_name``."""
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
