"""Manager settings from ``SKYFLEET_*`` environment variables and a pools file; fails fast naming the key.

Pools come from ``SKYFLEET_MANAGER_POOLS_FILE`` (JSON, or TOML when the name ends in ``.toml``)
and/or ``SKYFLEET_MANAGER_POOLS`` (JSON); both hold ``{"pools": [...]}`` or the bare list.
With neither, there is one local pool serving every job type. A pool, e.g.::

    {"name": "cpu", "job_types": ["sources.detect"], "backend": "ecs", "min": 0, "max": 20,
     "cluster": "skyfleet", "task_definition": "skyfleet-worker", "subnets": ["subnet-1"]}

Errors name the key as ``pools[1].max: must be ≥ min (2)``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import sys
import tomllib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobtypes import job_type_names
from settings import (
    MANAGER_LEASE_TTL_MAX_S,
    MANAGER_LEASE_TTL_MIN_S,
    WORKER_CONCURRENCY,
    ConfigError,
    ServiceAccountSettings,
    load,
    setting,
)

TICK_S = 5.0
PREFIX = "SKYFLEET_MANAGER_"
WORKER_PREFIX = "SKYFLEET_WORKER_"
#: A decision that changes nothing is recorded again after this long (so the admin status stays fresh).
DECISION_REFRESH_S = 30.0

DEFAULT_POOL_NAME = "local"
DEFAULT_LOCAL_MAX_WORKERS = 2
MIN_WORKERS = 0
MAX_WORKERS = 4
JOBS_PER_WORKER = WORKER_CONCURRENCY
SCALE_IN_WINDOW_S = 60.0
IDLE_TO_ZERO_S = 120.0
MAX_STEP = 4
START_TIMEOUT_S = 120.0  # a Fargate task can take a minute or two to pull and boot
#: A worker drained while idle exits after its current long poll (20 s by default); stop it after this.
DRAIN_GRACE_S = 45.0
#: Upper bound on any pool's max, a guard against a typo launching thousands of tasks.
MAX_WORKERS_LIMIT = 1000

#: How the local backend starts a worker unless the pool says otherwise.
WORKER_COMMAND = (sys.executable, "-m", "worker")

BACKENDS = ("local", "ecs")
POOL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
#: ``job_types: "*"`` (or an empty list): every job type in the queue.
EVERY_TYPE = "*"

_COMMON_KEYS = {"name", "job_types", "backend", "min", "max", "jobs_per_worker", "scale_in_window_s",
                "idle_to_zero_s", "max_step", "start_timeout_s", "drain_grace_s", "env"}
_LOCAL_KEYS = {"command"}
_ECS_KEYS = {"cluster", "task_definition", "subnets", "security_groups", "assign_public_ip", "container",
             "launch_type", "capacity_provider", "region"}
_LAUNCH_TYPES = ("FARGATE", "EC2", "EXTERNAL")


@dataclass(frozen=True)
class EcsSettings:
    """Where and how an ECS pool's tasks run."""

    cluster: str
    #: A family (its latest ACTIVE revision is used, resolved again on redeploy), ``family:rev`` or an ARN.
    task_definition: str
    #: The container whose environment gets the worker's pool, revision and launch id.
    container: str
    subnets: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()
    assign_public_ip: bool = False
    launch_type: str | None = "FARGATE"
    capacity_provider: str | None = None
    region: str | None = None


@dataclass(frozen=True)
class PoolConfig:
    """One worker pool: which jobs it serves, how its workers are launched, and its scaling bounds."""

    name: str
    #: Empty: every job type.
    job_types: tuple[str, ...]
    backend: str = "local"
    min: int = MIN_WORKERS
    max: int = MAX_WORKERS
    jobs_per_worker: int = JOBS_PER_WORKER
    scale_in_window_s: float = SCALE_IN_WINDOW_S
    idle_to_zero_s: float = IDLE_TO_ZERO_S
    max_step: int = MAX_STEP
    start_timeout_s: float = START_TIMEOUT_S
    drain_grace_s: float = DRAIN_GRACE_S
    #: Local backend: the worker's command line.
    command: tuple[str, ...] = WORKER_COMMAND
    #: Extra environment for the workers (local: the process; ECS: the container override).
    env: tuple[tuple[str, str], ...] = ()
    ecs: EcsSettings | None = None

    def serves(self, job_type: str) -> bool:
        """Whether jobs of ``job_type`` count as this pool's demand."""
        return not self.job_types or job_type in self.job_types

    def report(self) -> dict[str, Any]:
        """The pool as ``PUT /api/manager/pools`` takes it (backend details free-form)."""
        details: dict[str, Any] = {
            "scale_in_window_s": self.scale_in_window_s, "idle_to_zero_s": self.idle_to_zero_s,
            "max_step": self.max_step, "start_timeout_s": self.start_timeout_s,
            "every_job_type": not self.job_types,
        }
        if self.backend == "local":
            details["command"] = list(self.command)
        if self.ecs is not None:
            details |= {"cluster": self.ecs.cluster, "task_definition": self.ecs.task_definition,
                        "container": self.ecs.container, "launch_type": self.ecs.launch_type,
                        "capacity_provider": self.ecs.capacity_provider}
        # The API wants named types: an every-type pool reports the whole catalogue.
        job_types = list(self.job_types) or job_type_names()
        return {"name": self.name, "job_types": job_types, "backend": self.backend,
                "min": self.min, "max": self.max, "jobs_per_worker": self.jobs_per_worker, "details": details}


@dataclass(frozen=True, kw_only=True)
class ManagerSettings(ServiceAccountSettings):
    """Everything the manager process needs, validated."""

    pools: tuple[PoolConfig, ...]
    tick_s: float = setting(TICK_S, positive=True)
    #: Identifies this manager in the lease (one active manager at a time).
    holder: str = setting(default_factory=lambda: default_holder())
    #: How long the manager's lease on the fleet lasts (0: three ticks, within the API's bounds).
    lease_ttl_s: float = 0.0
    decision_refresh_s: float = DECISION_REFRESH_S
    #: Where boto3 sends AWS calls (moto in tests); unset: AWS itself, or boto3's AWS_ENDPOINT_URL.
    aws_endpoint_url: str | None = setting(None, env="SKYFLEET_AWS_ENDPOINT_URL")
    #: The environment local workers start from: the manager's, minus its own settings.
    worker_env: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lease_ttl_s == 0:
            ttl = min(MANAGER_LEASE_TTL_MAX_S, max(MANAGER_LEASE_TTL_MIN_S, 3 * self.tick_s))
            object.__setattr__(self, "lease_ttl_s", ttl)

    def check(self) -> None:
        """The lease must be one the API grants, and outlast a tick."""
        if not MANAGER_LEASE_TTL_MIN_S <= self.lease_ttl_s <= MANAGER_LEASE_TTL_MAX_S or self.lease_ttl_s <= self.tick_s:
            raise ConfigError(f"{PREFIX}LEASE_TTL_S must be within {MANAGER_LEASE_TTL_MIN_S:g}–"
                              f"{MANAGER_LEASE_TTL_MAX_S:g} s and longer than the tick ({self.tick_s:g} s)")


def default_holder() -> str:
    """This manager's lease holder name: host, pid and a random suffix (a restart is a new holder)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def load_manager_settings(environ: Mapping[str, str] | None = None) -> ManagerSettings:
    """Build the settings from the environment; ConfigError naming the variable or the pool key."""
    env = os.environ if environ is None else environ
    worker_env = tuple(sorted((k, v) for k, v in env.items() if not k.startswith(PREFIX)))
    pools = load_pools(env)
    settings = load(ManagerSettings, env, prefix=PREFIX, pools=pools, worker_env=worker_env)
    for i, pool in enumerate(pools):
        if pool.backend == "local":
            _check_worker_credentials(i, dict(worker_env) | dict(pool.env))
    return settings


def load_pools(env: Mapping[str, str]) -> tuple[PoolConfig, ...]:
    """The pools from the file and/or the variable (file first); the default local pool when neither."""
    raw: list[Any] = []
    path = env.get("SKYFLEET_MANAGER_POOLS_FILE")
    if path:
        raw += _pool_list(_read_pools_file(Path(path)), f"SKYFLEET_MANAGER_POOLS_FILE ({path})")
    inline = env.get("SKYFLEET_MANAGER_POOLS")
    if inline:
        try:
            document = json.loads(inline)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"SKYFLEET_MANAGER_POOLS: not valid JSON: {exc}") from None
        raw += _pool_list(document, "SKYFLEET_MANAGER_POOLS")
    if not path and not inline:
        return (PoolConfig(name=DEFAULT_POOL_NAME, job_types=(), max=DEFAULT_LOCAL_MAX_WORKERS),)
    if not raw:
        raise ConfigError("pools: at least one pool is needed")
    return parse_pools(raw)


def parse_pools(raw: list[Any]) -> tuple[PoolConfig, ...]:
    """Validate a list of pool mappings; ConfigError ``pools[i].key: …`` on the first problem."""
    pools = tuple(_parse_pool(item, f"pools[{i}]") for i, item in enumerate(raw))
    seen: set[str] = set()
    for i, pool in enumerate(pools):
        if pool.name in seen:
            raise ConfigError(f"pools[{i}].name: duplicate pool name {pool.name!r}")
        seen.add(pool.name)
    return pools


def _read_pools_file(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"SKYFLEET_MANAGER_POOLS_FILE: cannot read {path}: {exc.strerror}") from None
    try:
        return tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"SKYFLEET_MANAGER_POOLS_FILE ({path}): cannot parse: {exc}") from None


def _pool_list(document: Any, source: str) -> list[Any]:
    if isinstance(document, dict) and "pools" in document:
        document = document["pools"]
    if not isinstance(document, list):
        raise ConfigError(f"{source}: expected {{\"pools\": [...]}} or a list of pools")
    return document


def _parse_pool(item: Any, key: str) -> PoolConfig:
    if not isinstance(item, dict):
        raise ConfigError(f"{key}: a pool must be a mapping, got {type(item).__name__}")
    backend = item.get("backend", "local")
    if backend not in BACKENDS:
        raise ConfigError(f"{key}.backend: must be one of {', '.join(BACKENDS)}, got {backend!r}")
    allowed = _COMMON_KEYS | (_LOCAL_KEYS if backend == "local" else _ECS_KEYS)
    for name in item:
        if name not in allowed:
            hint = f"only for backend {'ecs' if name in _ECS_KEYS else 'local'}" \
                if name in _ECS_KEYS | _LOCAL_KEYS else "unknown setting"
            raise ConfigError(f"{key}.{name}: {hint}")
    name = item.get("name")
    if not isinstance(name, str) or not POOL_NAME.match(name):
        raise ConfigError(f"{key}.name: required; letters, digits, '_', '.', '-' (at most 63), got {name!r}")
    minimum = _int(item, key, "min", MIN_WORKERS, 0)
    maximum = _int(item, key, "max", DEFAULT_LOCAL_MAX_WORKERS if backend == "local" else MAX_WORKERS, 0)
    if maximum < minimum:
        raise ConfigError(f"{key}.max: must be ≥ min ({minimum}), got {maximum}")
    if maximum > MAX_WORKERS_LIMIT:
        raise ConfigError(f"{key}.max: at most {MAX_WORKERS_LIMIT}, got {maximum}")
    return PoolConfig(
        name=name,
        job_types=_job_types(item.get("job_types", EVERY_TYPE), f"{key}.job_types"),
        backend=backend,
        min=minimum,
        max=maximum,
        jobs_per_worker=_int(item, key, "jobs_per_worker", JOBS_PER_WORKER, 1),
        scale_in_window_s=_float(item, key, "scale_in_window_s", SCALE_IN_WINDOW_S),
        idle_to_zero_s=_float(item, key, "idle_to_zero_s", IDLE_TO_ZERO_S),
        max_step=_int(item, key, "max_step", MAX_STEP, 1),
        start_timeout_s=_float(item, key, "start_timeout_s", START_TIMEOUT_S, positive=True),
        drain_grace_s=_float(item, key, "drain_grace_s", DRAIN_GRACE_S, positive=True),
        command=_command(item, key) if backend == "local" else (),
        env=_env_table(item.get("env", {}), f"{key}.env"),
        ecs=_ecs(item, key) if backend == "ecs" else None,
    )


def _job_types(value: Any, key: str) -> tuple[str, ...]:
    if value == EVERY_TYPE:
        return ()
    if not isinstance(value, list) or not all(isinstance(t, str) and t.strip() for t in value):
        raise ConfigError(f"{key}: a list of job type names, or \"*\" for every type")
    types = tuple(dict.fromkeys(t.strip() for t in value))
    return () if EVERY_TYPE in types else types


def _int(item: dict[str, Any], key: str, name: str, default: int, minimum: int) -> int:
    value = item.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}.{name}: must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{key}.{name}: must be ≥ {minimum}, got {value}")
    return value


def _float(item: dict[str, Any], key: str, name: str, default: float, positive: bool = False) -> float:
    value = item.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}.{name}: must be a number of seconds, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ConfigError(f"{key}.{name}: must be {'positive' if positive else '≥ 0'}, got {value}")
    return float(value)


def _command(item: dict[str, Any], key: str) -> tuple[str, ...]:
    value = item.get("command")
    if value is None:
        return WORKER_COMMAND
    if isinstance(value, str):
        value = shlex.split(value)
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
        raise ConfigError(f"{key}.command: a non-empty list of arguments (or one shell-quoted string)")
    return tuple(value)


def _env_table(value: Any, key: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: a mapping of variable names to strings")
    for name, v in value.items():
        if not isinstance(v, str | int | float) or isinstance(v, bool):
            raise ConfigError(f"{key}.{name}: must be a string, got {v!r}")
    return tuple(sorted((str(k), str(v)) for k, v in value.items()))


def _strings(item: dict[str, Any], key: str, name: str) -> tuple[str, ...]:
    value = item.get(name, [])
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        raise ConfigError(f"{key}.{name}: a list of ids")
    return tuple(value)


def _ecs(item: dict[str, Any], key: str) -> EcsSettings:
    for name in ("cluster", "task_definition"):
        if not isinstance(item.get(name), str) or not item[name]:
            raise ConfigError(f"{key}.{name}: required for backend ecs")
    launch_type = item.get("launch_type")
    capacity_provider = item.get("capacity_provider")
    if launch_type is not None and capacity_provider is not None:
        raise ConfigError(f"{key}.capacity_provider: give either launch_type or capacity_provider, not both")
    if launch_type is None and capacity_provider is None:
        launch_type = "FARGATE"
    if launch_type is not None and launch_type not in _LAUNCH_TYPES:
        raise ConfigError(f"{key}.launch_type: one of {', '.join(_LAUNCH_TYPES)}, got {launch_type!r}")
    assign = item.get("assign_public_ip", False)
    if not isinstance(assign, bool):
        raise ConfigError(f"{key}.assign_public_ip: must be true or false")
    container = item.get("container", "worker")
    if not isinstance(container, str) or not container:
        raise ConfigError(f"{key}.container: the worker container's name")
    return EcsSettings(
        cluster=item["cluster"], task_definition=item["task_definition"], container=container,
        subnets=_strings(item, key, "subnets"), security_groups=_strings(item, key, "security_groups"),
        assign_public_ip=assign, launch_type=launch_type, capacity_provider=capacity_provider,
        region=item.get("region"),
    )


def _check_worker_credentials(index: int, env: Mapping[str, str]) -> None:
    """A local pool's workers must be able to log in: their account as the worker will read it."""
    try:
        load(ServiceAccountSettings, env, prefix=WORKER_PREFIX)
    except ConfigError as exc:
        raise ConfigError(f"pools[{index}].env: {exc} (local workers log in with it; set it in the "
                          "manager's environment, the settings file or the pool's env)") from None
