"""Worker settings from ``SKYFLEET_*`` environment variables; fails fast naming the variable."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CONCURRENCY = 4
CLAIM_WAIT_S = 20.0
IDLE_TIMEOUT_S = 0.0  # 0: never exit when idle
RESULT_BATCH = 500
HTTP_TIMEOUT_S = 10.0
STOP_GRACE_S = 30.0
#: A cancelled (or timed-out) handler gets this long to stop by itself before its process is killed.
CANCEL_GRACE_S = 10.0
MEMORY_BUDGET_MB = 2048
MAX_INPUT_BYTES = 2 * 1024**3
FETCH_TIMEOUT_S = 30.0
WORK_DIR = ".skyfleet/worker"


class ConfigError(ValueError):
    """A worker setting is missing or malformed."""


@dataclass(frozen=True)
class WorkerSettings:
    api_url: str
    email: str
    password: str
    job_types: tuple[str, ...]
    name: str
    concurrency: int = CONCURRENCY
    #: Most jobs asked for in one claim (default: the concurrency).
    claim_batch: int = CONCURRENCY
    claim_wait_s: float = CLAIM_WAIT_S
    idle_timeout_s: float = IDLE_TIMEOUT_S
    result_batch: int = RESULT_BATCH
    http_timeout_s: float = HTTP_TIMEOUT_S
    #: On SIGTERM, running jobs get this long to finish before they are released.
    stop_grace_s: float = STOP_GRACE_S
    cancel_grace_s: float = CANCEL_GRACE_S
    #: Heartbeat at most this often apart (0: as the API says at registration).
    heartbeat_interval_s: float = 0.0
    #: Peak memory one running job may use; bigger inputs fail permanently, before they are read.
    memory_budget_mb: int = MEMORY_BUDGET_MB
    max_input_bytes: int = MAX_INPUT_BYTES
    fetch_timeout_s: float = FETCH_TIMEOUT_S
    #: Hosts or CIDR blocks URL inputs may reach although private or loopback.
    allowed_networks: tuple[str, ...] = ()
    work_dir: Path = Path(WORK_DIR)
    storage_backend: str = "local"
    storage_dir: str = ".skyfleet/storage"
    s3_bucket: str = ""
    s3_prefix: str = ""
    #: Reported at registration so the manager can tell its workers apart.
    pool: str | None = None
    revision: str | None = None
    launch_id: str | None = None
    #: ECS task metadata endpoint (set by the ECS agent in every container).
    ecs_metadata_uri: str | None = None


def _number(env: Mapping[str, str], name: str, default: float, kind: type = float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a {kind.__name__}, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative")
    return value


def load_worker_settings(environ: Mapping[str, str] | None = None) -> WorkerSettings:
    from worker.jobs import HANDLERS

    env = os.environ if environ is None else environ
    missing = [n for n in ("SKYFLEET_API_URL", "SKYFLEET_WORKER_EMAIL", "SKYFLEET_WORKER_PASSWORD") if not env.get(n)]
    if missing:
        raise ConfigError(f"{missing[0]} is not set")
    types_raw = env.get("SKYFLEET_WORKER_TYPES", "")
    job_types = tuple(t.strip() for t in types_raw.split(",") if t.strip()) or tuple(sorted(HANDLERS))
    unknown = [t for t in job_types if t not in HANDLERS]
    if unknown:
        raise ConfigError(f"SKYFLEET_WORKER_TYPES: no handler for {unknown}; known: {sorted(HANDLERS)}")
    concurrency = int(_number(env, "SKYFLEET_WORKER_CONCURRENCY", CONCURRENCY, int))
    if concurrency < 1:
        raise ConfigError("SKYFLEET_WORKER_CONCURRENCY must be at least 1")
    memory_mb = int(_number(env, "SKYFLEET_WORKER_MEMORY_MB", MEMORY_BUDGET_MB, int))
    if memory_mb < 16:
        raise ConfigError("SKYFLEET_WORKER_MEMORY_MB must be at least 16")
    backend = env.get("SKYFLEET_STORAGE_BACKEND", "local") or "local"
    if backend not in ("local", "s3"):
        raise ConfigError("SKYFLEET_STORAGE_BACKEND must be one of local, s3")
    if backend == "s3" and not env.get("SKYFLEET_S3_BUCKET"):
        raise ConfigError("SKYFLEET_S3_BUCKET is required when SKYFLEET_STORAGE_BACKEND=s3")
    return WorkerSettings(
        api_url=env["SKYFLEET_API_URL"].rstrip("/"),
        email=env["SKYFLEET_WORKER_EMAIL"],
        password=env["SKYFLEET_WORKER_PASSWORD"],
        job_types=job_types,
        name=env.get("SKYFLEET_WORKER_NAME") or f"{socket.gethostname()}-{os.getpid()}",
        concurrency=concurrency,
        claim_batch=int(_number(env, "SKYFLEET_WORKER_CLAIM_BATCH", concurrency, int)) or concurrency,
        claim_wait_s=_number(env, "SKYFLEET_WORKER_CLAIM_WAIT_S", CLAIM_WAIT_S),
        idle_timeout_s=_number(env, "SKYFLEET_WORKER_IDLE_TIMEOUT_S", IDLE_TIMEOUT_S),
        result_batch=int(_number(env, "SKYFLEET_WORKER_RESULT_BATCH", RESULT_BATCH, int)) or RESULT_BATCH,
        stop_grace_s=_number(env, "SKYFLEET_WORKER_STOP_GRACE_S", STOP_GRACE_S),
        cancel_grace_s=_number(env, "SKYFLEET_WORKER_CANCEL_GRACE_S", CANCEL_GRACE_S),
        heartbeat_interval_s=_number(env, "SKYFLEET_WORKER_HEARTBEAT_S", 0.0),
        memory_budget_mb=memory_mb,
        max_input_bytes=int(_number(env, "SKYFLEET_WORKER_MAX_INPUT_BYTES", MAX_INPUT_BYTES, int)),
        fetch_timeout_s=_number(env, "SKYFLEET_WORKER_FETCH_TIMEOUT_S", FETCH_TIMEOUT_S),
        allowed_networks=tuple(p.strip() for p in env.get("SKYFLEET_ALLOWED_NETWORKS", "").split(",") if p.strip()),
        work_dir=Path(env.get("SKYFLEET_WORKER_WORK_DIR") or WORK_DIR),
        storage_backend=backend,
        storage_dir=env.get("SKYFLEET_STORAGE_DIR") or ".skyfleet/storage",
        s3_bucket=env.get("SKYFLEET_S3_BUCKET", ""),
        s3_prefix=env.get("SKYFLEET_S3_PREFIX", ""),
        pool=env.get("SKYFLEET_WORKER_POOL") or None,
        revision=env.get("SKYFLEET_WORKER_REVISION") or None,
        launch_id=env.get("SKYFLEET_WORKER_LAUNCH_ID") or None,
        ecs_metadata_uri=env.get("ECS_CONTAINER_METADATA_URI_V4") or None,
    )
