"""Worker settings from ``SKYFLEET_WORKER_*`` (and the shared ``SKYFLEET_*``) variables.

Read by the one settings loader (:mod:`settings`); fails fast naming the variable.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from settings import WORKER_CONCURRENCY, ConfigError, ServiceAccountSettings, StorageSettings, load, setting

CLAIM_WAIT_S = 20.0
IDLE_TIMEOUT_S = 0.0  # 0: never exit when idle
RESULT_BATCH = 500
STOP_GRACE_S = 30.0
#: A cancelled (or timed-out) handler gets this long to stop by itself before its process is killed.
CANCEL_GRACE_S = 10.0
MEMORY_BUDGET_MB = 2048
MIN_MEMORY_BUDGET_MB = 16
MAX_INPUT_BYTES = 2 * 1024**3
FETCH_TIMEOUT_S = 30.0
WORK_DIR = ".skyfleet/worker"
PREFIX = "SKYFLEET_WORKER_"

def default_name() -> str:
    """A worker's name unless told: host and process id."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, kw_only=True)
class WorkerSettings(ServiceAccountSettings, StorageSettings):
    """Everything a worker process can be configured with."""

    #: The job types this worker claims (``SKYFLEET_WORKER_TYPES``; empty: every type it has a handler for).
    job_types: tuple[str, ...] = setting((), env="SKYFLEET_WORKER_TYPES")
    name: str = setting(default_factory=default_name)
    concurrency: int = setting(WORKER_CONCURRENCY, minimum=1)
    #: Most jobs asked for in one claim (0: the concurrency).
    claim_batch: int = 0
    claim_wait_s: float = CLAIM_WAIT_S
    idle_timeout_s: float = IDLE_TIMEOUT_S
    result_batch: int = RESULT_BATCH
    #: On SIGTERM, running jobs get this long to finish before they are released.
    stop_grace_s: float = STOP_GRACE_S
    cancel_grace_s: float = CANCEL_GRACE_S
    #: Heartbeat at most this often apart (0: as the API says at registration).
    heartbeat_interval_s: float = setting(0.0, env="SKYFLEET_WORKER_HEARTBEAT_S")
    #: Peak memory one running job may use; bigger inputs fail permanently, before they are read.
    memory_budget_mb: int = setting(MEMORY_BUDGET_MB, env="SKYFLEET_WORKER_MEMORY_MB", minimum=MIN_MEMORY_BUDGET_MB)
    max_input_bytes: int = MAX_INPUT_BYTES
    fetch_timeout_s: float = FETCH_TIMEOUT_S
    work_dir: Path = Path(WORK_DIR)
    #: Reported at registration so the manager can tell its workers apart.
    pool: str | None = None
    revision: str | None = None
    launch_id: str | None = None
    #: ECS task metadata endpoint (set by the ECS agent in every container).
    ecs_metadata_uri: str | None = setting(None, env="ECS_CONTAINER_METADATA_URI_V4")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.claim_batch == 0:
            object.__setattr__(self, "claim_batch", self.concurrency)
        if self.result_batch == 0:
            object.__setattr__(self, "result_batch", RESULT_BATCH)


def load_worker_settings(environ: Mapping[str, str] | None = None) -> WorkerSettings:
    """The worker's settings; ConfigError naming the variable, also for a type it has no handler for."""
    from worker.jobs import HANDLERS

    settings = load(WorkerSettings, environ, prefix=PREFIX)
    unknown = [t for t in settings.job_types if t not in HANDLERS]
    if unknown:
        raise ConfigError(f"SKYFLEET_WORKER_TYPES: no handler for {unknown}; known: {sorted(HANDLERS)}")
    return settings if settings.job_types else replace(settings, job_types=tuple(sorted(HANDLERS)))
