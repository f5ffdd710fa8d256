"""Deployment settings from CDK context (``cdk.json`` or ``cdk deploy -c key=value``).

Every value has a named default; a malformed one fails the synth with a message that names the
context key. Worker pools default to one per resource class of the job-type catalogue, so a new
job type lands in a pool without anyone editing the infrastructure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

API_COUNT = 2
API_CPU = 1024
API_MEMORY_MIB = 2048
MANAGER_COUNT = 1
NAT_GATEWAYS = 1
MAX_AZS = 2
DB_INSTANCE_CLASS = "t4g.small"
DB_ALLOCATED_STORAGE_GIB = 20
DB_MAX_ALLOCATED_STORAGE_GIB = 200
DB_BACKUP_RETENTION_DAYS = 7
#: Outputs under ``jobs/`` older than this are expired by the bucket's lifecycle rule.
JOB_OUTPUT_EXPIRY_DAYS = 30
ADMIN_EMAIL = "admin@skyfleet.local"
#: Production default: only admins create accounts (the API's own default is "open").
REGISTRATION = "closed"

#: Fargate CPU units → the memory (MiB) range a task of that size may have.
FARGATE_MEMORY_MIB = {256: (512, 2048), 512: (1024, 4096), 1024: (2048, 8192), 2048: (4096, 16384),
                      4096: (8192, 30720), 8192: (16384, 61440), 16384: (32768, 122880)}
POOL_NAME = re.compile(r"^[a-z][a-z0-9-]{0,23}$")


class SettingsError(ValueError):
    """A context value is missing or malformed; the message names the key."""


@dataclass(frozen=True)
class PoolSpec:
    """One worker pool: the job types it serves, its task size and its scaling bounds."""

    name: str
    job_types: tuple[str, ...]
    cpu: int
    memory_mib: int
    min: int = 0
    max: int = 10
    #: Jobs one worker runs at once; also the manager's jobs_per_worker.
    concurrency: int = 4
    #: Fargate task disk (21–200 GiB); None keeps Fargate's 20 GiB.
    ephemeral_storage_gib: int | None = None


@dataclass(frozen=True)
class InfraSettings:
    """Everything the stack can be configured with."""

    pools: tuple[PoolSpec, ...]
    api_count: int = API_COUNT
    api_cpu: int = API_CPU
    api_memory_mib: int = API_MEMORY_MIB
    manager_count: int = MANAGER_COUNT
    nat_gateways: int = NAT_GATEWAYS
    max_azs: int = MAX_AZS
    db_instance_class: str = DB_INSTANCE_CLASS
    db_allocated_storage_gib: int = DB_ALLOCATED_STORAGE_GIB
    db_max_allocated_storage_gib: int = DB_MAX_ALLOCATED_STORAGE_GIB
    db_multi_az: bool = False
    db_deletion_protection: bool = True
    job_output_expiry_days: int = JOB_OUTPUT_EXPIRY_DAYS
    admin_email: str = ADMIN_EMAIL
    registration: str = REGISTRATION
    #: ACM certificate for an HTTPS listener; without one the ALB serves plain HTTP.
    certificate_arn: str | None = None
    #: An operator-managed secret holding the JWT signing key (PEM); None: the stack makes one.
    jwt_secret_arn: str | None = None
    #: A prebuilt image (e.g. pushed by CI); None: built from infra/Dockerfile at deploy time.
    image_uri: str | None = None
    #: Extra SKYFLEET_* settings for the API container.
    api_environment: Mapping[str, str] = field(default_factory=dict)


def default_pools() -> tuple[PoolSpec, ...]:
    """"general" for small and medium job types, "large" for the memory-hungry ones (catalogue order)."""
    from jobtypes.catalogue import CATALOGUE

    large = tuple(sorted(n for n, t in CATALOGUE.items() if t.resource_class == "large"))
    general = tuple(sorted(n for n in CATALOGUE if n not in large))
    pools = [PoolSpec("general", general, cpu=1024, memory_mib=4096, min=0, max=10, concurrency=4)]
    if large:
        pools.append(PoolSpec("large", large, cpu=4096, memory_mib=16384, min=0, max=4, concurrency=2,
                              ephemeral_storage_gib=60))
    return tuple(pools)


def _parsed(key: str, raw: Any) -> Any:
    """``-c key=[...]`` arrives as a string; cdk.json values arrive already parsed."""
    if isinstance(raw, str) and raw[:1] in "[{":
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise SettingsError(f"context {key!r} is not valid JSON: {exc}") from None
    return raw


def _int(key: str, raw: Any, minimum: int = 0) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise SettingsError(f"context {key!r} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"context {key!r} must be at least {minimum}, got {value}")
    return value


def _bool(key: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    lowered = str(raw).strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"context {key!r} must be true or false, got {raw!r}")


def parse_pool(index: int, raw: Any) -> PoolSpec:
    """One entry of the ``pools`` context list, checked against what Fargate and the manager accept."""
    where = f"pools[{index}]"
    if not isinstance(raw, Mapping):
        raise SettingsError(f"context {where} must be an object")
    name = str(raw.get("name", ""))
    if not POOL_NAME.match(name):
        raise SettingsError(f"context {where}.name must match {POOL_NAME.pattern}, got {name!r}")
    types = raw.get("job_types")
    if not isinstance(types, list) or not types or not all(isinstance(t, str) and t for t in types):
        raise SettingsError(f"context {where}.job_types must be a non-empty list of job type names")
    cpu = _int(f"{where}.cpu", raw.get("cpu", 1024))
    if cpu not in FARGATE_MEMORY_MIB:
        raise SettingsError(f"context {where}.cpu must be one of {sorted(FARGATE_MEMORY_MIB)}, got {cpu}")
    memory = _int(f"{where}.memory_mib", raw.get("memory_mib", FARGATE_MEMORY_MIB[cpu][0]))
    low, high = FARGATE_MEMORY_MIB[cpu]
    if not low <= memory <= high:
        raise SettingsError(f"context {where}.memory_mib must be {low}–{high} for cpu {cpu}, got {memory}")
    minimum = _int(f"{where}.min", raw.get("min", 0))
    maximum = _int(f"{where}.max", raw.get("max", 10))
    if minimum > maximum:
        raise SettingsError(f"context {where}.min ({minimum}) must not exceed max ({maximum})")
    disk = raw.get("ephemeral_storage_gib")
    disk_gib = None if disk is None else _int(f"{where}.ephemeral_storage_gib", disk, 21)
    if disk_gib is not None and disk_gib > 200:
        raise SettingsError(f"context {where}.ephemeral_storage_gib must be 21–200, got {disk_gib}")
    return PoolSpec(name, tuple(types), cpu, memory, minimum, maximum,
                    _int(f"{where}.concurrency", raw.get("concurrency", 4), 1), disk_gib)


def load_settings(get: Callable[[str], Any]) -> InfraSettings:
    """Build the settings from a context getter (``node.try_get_context``)."""
    raw_pools = _parsed("pools", get("pools"))
    if raw_pools is None:
        pools = default_pools()
    elif isinstance(raw_pools, list) and raw_pools:
        pools = tuple(parse_pool(i, p) for i, p in enumerate(raw_pools))
    else:
        raise SettingsError("context 'pools' must be a non-empty list of pool objects")
    names = [p.name for p in pools]
    if len(set(names)) != len(names):
        raise SettingsError(f"context 'pools' names must be unique, got {names}")
    registration = str(get("registration") or REGISTRATION)
    if registration not in ("open", "closed"):
        raise SettingsError(f"context 'registration' must be open or closed, got {registration!r}")
    api_env = _parsed("api_environment", get("api_environment")) or {}
    if not isinstance(api_env, Mapping) or not all(str(k).startswith("SKYFLEET_") for k in api_env):
        raise SettingsError("context 'api_environment' must be an object of SKYFLEET_* variables")

    def number(key: str, default: int, minimum: int = 0) -> int:
        value = get(key)
        return default if value is None else _int(key, value, minimum)

    def flag(key: str, default: bool) -> bool:
        value = get(key)
        return default if value is None else _bool(key, value)

    return InfraSettings(
        pools=pools,
        api_count=number("api_count", API_COUNT),
        api_cpu=number("api_cpu", API_CPU, 256),
        api_memory_mib=number("api_memory_mib", API_MEMORY_MIB, 512),
        manager_count=number("manager_count", MANAGER_COUNT),
        nat_gateways=number("nat_gateways", NAT_GATEWAYS, 1),
        max_azs=number("max_azs", MAX_AZS, 2),
        db_instance_class=str(get("db_instance_class") or DB_INSTANCE_CLASS),
        db_allocated_storage_gib=number("db_allocated_storage_gib", DB_ALLOCATED_STORAGE_GIB, 20),
        db_max_allocated_storage_gib=number("db_max_allocated_storage_gib", DB_MAX_ALLOCATED_STORAGE_GIB, 20),
        db_multi_az=flag("db_multi_az", False),
        db_deletion_protection=flag("db_deletion_protection", True),
        job_output_expiry_days=number("job_output_expiry_days", JOB_OUTPUT_EXPIRY_DAYS, 1),
        admin_email=str(get("admin_email") or ADMIN_EMAIL),
        registration=registration,
        certificate_arn=get("certificate_arn") or None,
        jwt_secret_arn=get("jwt_secret_arn") or None,
        image_uri=get("image_uri") or None,
        api_environment={str(k): str(v) for k, v in api_env.items()},
    )
