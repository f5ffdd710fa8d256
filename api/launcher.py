"""``skyfleet run``: the whole fleet on one machine, for a newcomer and for development.

Starts (or reuses) an embedded PostgreSQL when ``DATABASE_URL`` is unset, migrates it,
makes sure there are an admin and the local worker and manager service accounts, then runs
the API under gunicorn and the manager with its local backend, which starts worker
processes as the queue needs them (none while it is empty). Ctrl-C stops everything; the
data stays in the data directory for the next run.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import requests

from api.auth import service as accounts
from api.auth.models import Role
from api.config import generate_private_key_pem
from api.database import make_engine
from api.embedded import EmbeddedPostgres
from api.migrate import upgrade
from settings import load, setting

DEFAULT_PORT = 8000
DATA_DIR = ".skyfleet"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
LOCAL_WORKER_NAME = "local-worker"
LOCAL_MANAGER_NAME = "local-manager"
#: Most worker processes the local pool runs (SKYFLEET_LOCAL_WORKERS).
LOCAL_MAX_WORKERS = 2


@dataclass(frozen=True, kw_only=True)
class LaunchConfig:
    """What ``skyfleet run`` is told by its environment (the API, manager and workers read their own)."""

    data_dir: Path = setting(DATA_DIR, env="SKYFLEET_DATA_DIR")
    port: int = setting(DEFAULT_PORT, env="PORT", minimum=1, maximum=65535)
    #: None: an embedded PostgreSQL in the data directory.
    database_url: str | None = setting(None, env="DATABASE_URL", secret=True)
    admin_email: str | None = None
    admin_password: str | None = setting(None, secret=True)
    #: A PEM file with the RSA signing key; None: SKYFLEET_JWT_PRIVATE_KEY, or one generated in data_dir.
    jwt_key_file: str | None = setting(None, env="SKYFLEET_JWT_PRIVATE_KEY_FILE")
    #: The signing key itself, when the operator gives it (the API reads it itself).
    jwt_private_key: str | None = setting(None, secret=True)
    #: The local pool's maximum worker processes (0: no manager, no workers).
    workers: int = setting(LOCAL_MAX_WORKERS, env="SKYFLEET_LOCAL_WORKERS")
    #: Uploads and outputs; None: the data directory's ``storage``.
    storage_dir: str | None = setting(None, env="SKYFLEET_STORAGE_DIR")

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir).resolve())


def launch_config_from_env(environ: Mapping[str, str] | None = None) -> LaunchConfig:
    """The launcher's settings (the one settings loader: environment, settings file, defaults)."""
    return load(LaunchConfig, environ)


def _secret_file(path: Path, make: str | None = None) -> str:
    """Read a secret kept in the data directory, creating it (mode 0600) on first use."""
    if path.exists():
        return path.read_text().strip()
    value = make or secrets.token_urlsafe(48)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def prepare(cfg: LaunchConfig) -> tuple[str, dict[str, str], EmbeddedPostgres | None, list[str]]:
    """Database up and migrated, admin and worker accounts present.

    Returns (database URL, the environment that gives the API its signing key, the embedded server
    or None, lines to print).
    """
    embedded = None
    url = cfg.database_url
    if url is None:
        embedded = EmbeddedPostgres(cfg.data_dir / "pgdata")
        url = embedded.ensure_database("skyfleet")
    upgrade(url)
    key_env = _signing_key_env(cfg)
    notes: list[str] = []
    engine = make_engine(url, pool_size=1)
    try:
        with engine.begin() as conn:
            admin_email = cfg.admin_email or "admin@skyfleet.local"
            admin, generated = accounts.ensure_account(conn, admin_email, cfg.admin_password, [Role.ADMIN], "admin")
            if generated:
                notes.append(f"  admin login: {admin.email} / {generated}   (shown once)")
            elif cfg.admin_password:
                notes.append(f"  admin login: {admin.email} / (SKYFLEET_ADMIN_PASSWORD)")
            else:
                notes.append(f"  admin login: {admin.email} (password shown on the first run)")
            worker_password = _secret_file(cfg.data_dir / "local-worker-password")
            accounts.ensure_account(conn, accounts.service_email(LOCAL_WORKER_NAME), worker_password,
                                    [Role.WORKER], LOCAL_WORKER_NAME, is_service=True)
            manager_password = _secret_file(cfg.data_dir / "local-manager-password")
            accounts.ensure_account(conn, accounts.service_email(LOCAL_MANAGER_NAME), manager_password,
                                    [Role.MANAGER], LOCAL_MANAGER_NAME, is_service=True)
    finally:
        engine.dispose()
    return url, key_env, embedded, notes


def _signing_key_env(cfg: LaunchConfig) -> dict[str, str]:
    """Where the API finds its RS256 key: given by the operator, or generated once into the data dir."""
    if cfg.jwt_key_file:
        return {"SKYFLEET_JWT_PRIVATE_KEY_FILE": cfg.jwt_key_file}
    if cfg.jwt_private_key:
        return {}
    path = cfg.data_dir / "jwt-private-key.pem"
    _secret_file(path, make=generate_private_key_pem().strip())
    return {"SKYFLEET_JWT_PRIVATE_KEY_FILE": str(path)}


def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the API exited during start-up (code {proc.returncode})")
        try:
            if requests.get(f"{url}/api/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or still booting
            pass
        time.sleep(0.2)
    raise SystemExit(f"the API did not become healthy within {READY_TIMEOUT_S:.0f} s")


def stop_processes(procs: list[subprocess.Popen[bytes]], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM every live process, wait up to ``timeout_s`` in all, then SIGKILL what is left."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def manager_env(cfg: LaunchConfig, api_url: str, storage_env: dict[str, str]) -> dict[str, str]:
    """The manager's environment; its local workers inherit it (less ``SKYFLEET_MANAGER_*``).

    Unless the operator configured pools, there is one local pool of 0 to ``cfg.workers``
    processes serving every job type.
    """
    env = os.environ | storage_env | {
        "SKYFLEET_API_URL": api_url,
        "SKYFLEET_MANAGER_EMAIL": accounts.service_email(LOCAL_MANAGER_NAME),
        "SKYFLEET_MANAGER_PASSWORD": _secret_file(cfg.data_dir / "local-manager-password"),
        "SKYFLEET_WORKER_EMAIL": accounts.service_email(LOCAL_WORKER_NAME),
        "SKYFLEET_WORKER_PASSWORD": _secret_file(cfg.data_dir / "local-worker-password"),
        "SKYFLEET_WORKER_WORK_DIR": str(cfg.data_dir / "worker"),
    }
    if not (env.get("SKYFLEET_MANAGER_POOLS") or env.get("SKYFLEET_MANAGER_POOLS_FILE")):
        env["SKYFLEET_MANAGER_POOLS"] = json.dumps([{"name": "local", "job_types": "*", "backend": "local",
                                                     "min": 0, "max": cfg.workers}])
    return env


def check_settings(api_env: Mapping[str, str], manager_environ: Mapping[str, str] | None) -> None:
    """Every component's settings, read as each will read them, before any starts: a bad value
    stops ``skyfleet run`` with the variable's name rather than a process dying in the background."""
    from api.config import load_settings
    from manager.config import load_manager_settings
    from worker.config import load_worker_settings

    load_settings(api_env)
    if manager_environ is not None:
        load_manager_settings(manager_environ)
        load_worker_settings(manager_environ)  # what the local workers inherit


def run(cfg: LaunchConfig) -> int:
    """Run the fleet in the foreground until Ctrl-C or SIGTERM."""
    url, key_env, embedded, notes = prepare(cfg)
    api_url = f"http://127.0.0.1:{cfg.port}"
    # Uploads and outputs live in the data directory unless the operator chose otherwise;
    # the workers will get the same setting (they write outputs where the API serves them).
    storage_dir = cfg.storage_dir or str(cfg.data_dir / "storage")
    storage_env = {"SKYFLEET_STORAGE_DIR": storage_dir}
    env = os.environ | key_env | storage_env | {"DATABASE_URL": url, "PORT": str(cfg.port)}
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        manager_environ = manager_env(cfg, api_url, storage_env)
        check_settings(env, manager_environ if cfg.workers else None)
        api = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:api.gunicorn_conf", "api.wsgi:app"], env=env
        )
        procs.append(api)
        _wait_ready(api_url, api)
        if cfg.workers:
            manager = subprocess.Popen([sys.executable, "-m", "manager"], env=manager_environ)
            procs.append(manager)
        print(f"\nskyfleet is running: the console at {api_url}/  (API docs: {api_url}/api/docs)", flush=True)
        for line in notes:
            print(line, flush=True)
        if cfg.workers:
            print(f"  workers: 0 to {cfg.workers} local processes, started by the manager as jobs arrive "
                  f"(see {api_url}/api/admin/status)", flush=True)
        print(f"  data directory: {cfg.data_dir}\n  Ctrl-C stops everything.\n", flush=True)
        while not stopping:
            if api.poll() is not None:
                print(f"the API exited (code {api.returncode}); stopping", file=sys.stderr)
                return 1
            time.sleep(0.5)
        return 0
    finally:
        # The manager first (it stops its workers, which finish or release their jobs while the
        # API still answers), then the API, then the database.
        for proc in reversed(procs):
            stop_processes([proc])
        if embedded is not None:
            embedded.stop()
        print("skyfleet stopped.", flush=True)
