"""API settings, built once from ``SKYFLEET_*`` environment variables (and ``DATABASE_URL``).

Nothing else in ``api/`` reads ``os.environ``: components receive a :class:`Settings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
MIN_RSA_KEY_BITS = 2048
PASSWORD_MIN_LENGTH = 12
MAX_ACTIVE_JOBS_PER_USER = 10_000
USER_MIN_PRIORITY = 2
MAX_UPLOAD_BYTES = 2 * 1024**3
DOWNLOAD_URL_TTL_S = 3600
RATE_LIMIT_PER_MINUTE = 600
LOGIN_LIMIT_PER_ACCOUNT = 10
LOGIN_LIMIT_PER_ADDRESS = 30
CALLBACK_INTERVAL_S = 1.0
CALLBACK_TIMEOUT_S = 10.0
CALLBACK_MAX_ATTEMPTS = 12
CALLBACK_CONCURRENCY = 8
MAX_EVENT_STREAMS = 24
EVENT_STREAM_MAX_S = 1800.0
EVENT_KEEPALIVE_S = 15.0
MAX_EVENT_STREAMS_PER_USER = 4
IDEMPOTENCY_KEY_TTL_S = 86400.0


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Everything the API process can be configured with."""

    database_url: str
    #: PEM of the RSA private key that signs access tokens (RS256); the public key is derived.
    jwt_private_key: str = field(repr=False)
    access_token_ttl_s: int = ACCESS_TOKEN_TTL_S
    refresh_token_ttl_s: int = REFRESH_TOKEN_TTL_S
    #: How long a claimed job is leased before the rescuer may take it back.
    lease_s: float = LEASE_S
    #: The heartbeat interval the API tells workers to use (a few per lease).
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S
    rescue_interval_s: float = RESCUE_INTERVAL_S
    #: After the API (re)starts or loses its database, expired leases get this long for their
    #: workers' heartbeats to come back before they are rescued (0: one lease).
    outage_grace_s: float = 0.0
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
    #: "open": anyone may register a USER account; "closed": only admins create accounts.
    registration: str = "open"
    password_min_length: int = PASSWORD_MIN_LENGTH
    #: Per-user limits (a user row may override the first two).
    max_active_jobs_per_user: int = MAX_ACTIVE_JOBS_PER_USER
    #: The most urgent priority a USER may ask for (0 is most urgent; admins may use any).
    user_min_priority: int = USER_MIN_PRIORITY
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    #: Queue a fits.thumbnail job (the console's quick-look picture) for each uploaded file.
    file_thumbnails: bool = True
    #: Requests per minute per caller (per client address when anonymous); 0 disables.
    rate_limit_per_minute: int = RATE_LIMIT_PER_MINUTE
    login_limit_per_account: int = LOGIN_LIMIT_PER_ACCOUNT
    login_limit_per_address: int = LOGIN_LIMIT_PER_ADDRESS
    #: How many reverse proxies (an ALB: 1) sit in front and append to X-Forwarded-For.
    trusted_proxy_hops: int = 0
    #: Origins allowed by CORS, comma-separated ("*" for any); empty: CORS off.
    cors_origins: tuple[str, ...] = ()
    #: Hosts or CIDR blocks that URL inputs and callbacks may reach even though private/loopback.
    allowed_networks: tuple[str, ...] = ()
    #: Storage of uploads and outputs: "local" (a directory) or "s3".
    storage_backend: str = "local"
    storage_dir: str = ".skyfleet/storage"
    s3_bucket: str = ""
    s3_prefix: str = ""
    download_url_ttl_s: int = DOWNLOAD_URL_TTL_S
    callback_interval_s: float = CALLBACK_INTERVAL_S
    callback_timeout_s: float = CALLBACK_TIMEOUT_S
    callback_max_attempts: int = CALLBACK_MAX_ATTEMPTS
    callback_concurrency: int = CALLBACK_CONCURRENCY
    #: Server-Sent Event streams one API process serves at once (each re-reads its job on changes).
    max_event_streams: int = MAX_EVENT_STREAMS
    event_stream_max_s: float = EVENT_STREAM_MAX_S
    event_keepalive_s: float = EVENT_KEEPALIVE_S
    #: Of those, how many one account may hold (the rest stay free for everyone else).
    max_event_streams_per_user: int = MAX_EVENT_STREAMS_PER_USER
    #: How long a submission's Idempotency-Key is remembered.
    idempotency_key_ttl_s: float = IDEMPOTENCY_KEY_TTL_S
    #: The API's public base URL (``https://skyfleet.example.org``): absolute URLs it emits (signed
    #: download links) are built from it; empty: from the request (its Host header).
    public_url: str = ""

    @property
    def worker_lost_after_s(self) -> float:
        """A worker not heard from this long is lost (admin views, metrics, the manager's live
        list; the rescuer then marks it stopped). An idle worker's only request is its claim,
        which may wait ``max_claim_wait_s``; two leases more cover the request's round trip."""
        return self.max_claim_wait_s + 2 * self.lease_s

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed (tests use this)."""
        return replace(self, **changes)


_ENV_NAMES = {
    "database_url": "DATABASE_URL",
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
        if kind_name.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
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
    key_file = env.get("SKYFLEET_JWT_PRIVATE_KEY_FILE")
    if "jwt_private_key" not in values and key_file:
        try:
            values["jwt_private_key"] = Path(key_file).read_text()
        except OSError as exc:
            raise ConfigError(f"SKYFLEET_JWT_PRIVATE_KEY_FILE cannot be read: {exc}") from None
    for required in ("database_url", "jwt_private_key"):
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
    _check_private_key(s.jwt_private_key)
    choices = {"registration": ("open", "closed"), "storage_backend": ("local", "s3")}
    for name, allowed in choices.items():
        if getattr(s, name) not in allowed:
            raise ConfigError(f"{env_name(name)} must be one of {', '.join(allowed)}")
    if s.storage_backend == "s3" and not s.s3_bucket:
        raise ConfigError(f"{env_name('s3_bucket')} is required when {env_name('storage_backend')}=s3")
    if not 0 <= s.user_min_priority <= 9:
        raise ConfigError(f"{env_name('user_min_priority')} must be between 0 and 9")
    non_negative = ("outage_grace_s", "rate_limit_per_minute", "login_limit_per_account", "login_limit_per_address",
                    "trusted_proxy_hops")
    for name in non_negative:
        if getattr(s, name) < 0:
            raise ConfigError(f"{env_name(name)} must not be negative")
    for name in ("max_upload_bytes", "max_active_jobs_per_user", "download_url_ttl_s", "password_min_length",
                 "callback_max_attempts", "callback_concurrency", "callback_timeout_s", "max_event_streams",
                 "max_event_streams_per_user", "idempotency_key_ttl_s"):
        if getattr(s, name) <= 0:
            raise ConfigError(f"{env_name(name)} must be positive")
    if s.public_url:
        _check_public_url(s.public_url)


def _check_public_url(url: str) -> None:
    """An http(s) base URL: scheme and host, perhaps a path prefix; no credentials, query or fragment."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password \
            or parts.query or parts.fragment:
        raise ConfigError(f"{env_name('public_url')} must be an http(s) URL such as https://skyfleet.example.org "
                          f"(a path prefix is allowed; no credentials, query or fragment), got {url!r}")


def _check_private_key(pem: str) -> None:
    """Fail at start, naming the variable, if the signing key is not an RSA private key."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"SKYFLEET_JWT_PRIVATE_KEY is not a PEM private key without a passphrase: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < MIN_RSA_KEY_BITS:
        raise ConfigError(f"SKYFLEET_JWT_PRIVATE_KEY must be an RSA key of at least {MIN_RSA_KEY_BITS} bits")


def public_key_pem(private_pem: str) -> str:
    """The PEM public key for a private key (what verifies access tokens)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(private_pem.encode(), password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def generate_private_key_pem(bits: int = 3072) -> str:
    """A fresh RSA private key in PKCS#8 PEM (what the launcher writes on first run)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
