"""Worker settings from ``SKYFLEET_*`` environment variables; fails fast naming the variable."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

CONCURRENCY = 4
CLAIM_WAIT_S = 20.0
IDLE_TIMEOUT_S = 0.0  # 0: never exit when idle
RESULT_BATCH = 500
HTTP_TIMEOUT_S = 10.0
STOP_GRACE_S = 30.0


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
    from worker.handlers import HANDLERS

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
    )
