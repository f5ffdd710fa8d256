"""API settings, built once from ``SKYFLEET_*`` environment variables (and ``DATABASE_URL``).

Nothing else in ``api/`` reads ``os.environ``: components receive a :class:`Settings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

ACCESS_TOKEN_TTL_S = 900
REFRESH_TOKEN_TTL_S = 14 * 24 * 3600
LEASE_S = 8.0
HEARTBEAT_INTERVAL_S = 2.0
RESCUE_INTERVAL_S = 1.0
PRUNE_INTERVAL_S = 300.0
RETENTION_DAYS = 7.0
MAX_BODY_BYTES = 1024 * 1024
MAX_CLAIM_BATCH = 500
MAX_CLAIM_WAIT_S = 30.0
CLAIM_POLL_FALLBACK_S = 2.0
MAX_SUBMIT_BATCH = 1000
DB_POOL_SIZE = 10
LEADER_RETRY_S = 5.0


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Everything the API process can be configured with."""

    database_url: str
    jwt_secret: str = field(repr=False)
    access_token_ttl_s: int = ACCESS_TOKEN_TTL_S
    refresh_token_ttl_s: int = REFRESH_TOKEN_TTL_S
    #: How long a claimed job is leased before the rescuer may take it back.
    lease_s: float = LEASE_S
    #: The heartbeat interval the API tells workers to use (a few per lease).
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S
    rescue_interval_s: float = RESCUE_INTERVAL_S
    prune_interval_s: float = PRUNE_INTERVAL_S
    retention_days: float = RETENTION_DAYS
    max_body_bytes: int = MAX_BODY_BYTES
    max_claim_batch: int = MAX_CLAIM_BATCH
    max_claim_wait_s: float = MAX_CLAIM_WAIT_S
    claim_poll_fallback_s: float = CLAIM_POLL_FALLBACK_S
    max_submit_batch: int = MAX_SUBMIT_BATCH
    db_pool_size: int = DB_POOL_SIZE
    #: Start the LISTEN thread and maintenance services in this process.
    background: bool = True

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed (tests use this)."""
        return replace(self, **changes)


_ENV_NAMES = {
    "database_url": "DATABASE_URL",
    "jwt_secret": "SKYFLEET_JWT_SECRET",
}


def env_name(field_name: str) -> str:
    """The environment variable that sets ``field_name``."""
    return _ENV_NAMES.get(field_name, "SKYFLEET_" + field_name.upper())


def _convert(name: str, raw: str, kind: Any) -> Any:
    kind_name = kind if isinstance(kind, str) else kind.__name__
    try:
        if kind_name == "bool":
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if kind_name == "int":
            return int(raw)
        if kind_name == "float":
            return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a {kind_name}, got {raw!r}") from None
    return raw


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from the environment, failing fast with the variable's name."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        name = env_name(f.name)
        raw = env.get(name)
        if raw is None or raw == "":
            continue
        values[f.name] = _convert(name, raw, f.type)
    for required in ("database_url", "jwt_secret"):
        if required not in values:
            raise ConfigError(f"{env_name(required)} is not set")
    settings = Settings(**values)
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    positive = ("lease_s", "heartbeat_interval_s", "rescue_interval_s", "max_body_bytes",
                "max_claim_batch", "max_submit_batch", "db_pool_size", "access_token_ttl_s")
    for name in positive:
        if getattr(s, name) <= 0:
            raise ConfigError(f"{env_name(name)} must be positive")
    if s.heartbeat_interval_s >= s.lease_s:
        raise ConfigError(
            f"{env_name('heartbeat_interval_s')} ({s.heartbeat_interval_s}) must be shorter than "
            f"{env_name('lease_s')} ({s.lease_s}), or every lease lapses between heartbeats"
        )
    if len(s.jwt_secret) < 32:
        raise ConfigError(f"{env_name('jwt_secret')} must be at least 32 characters")
