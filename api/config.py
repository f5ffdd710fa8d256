"""API settings, built once from ``SKYFLEET_*`` environment variables (and ``DATABASE_URL``).

Read by the one settings loader (:mod:`settings`): the environment, the settings file, the
defaults below. Nothing else in ``api/`` reads ``os.environ``: components receive a :class:`Settings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from jobtypes.catalogue import MAX_PRIORITY, MIN_PRIORITY
from settings import ConfigError, StorageSettings, load, setting, variable

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


@dataclass(frozen=True, kw_only=True)
class Settings(StorageSettings):
    """Everything the API process can be configured with (and the storage it shares with workers)."""

    database_url: str = setting(env="DATABASE_URL", secret=True)
    #: PEM of the RSA private key that signs access tokens (RS256); the public key is derived.
    jwt_private_key: str = setting(secret=True)
    access_token_ttl_s: int = setting(ACCESS_TOKEN_TTL_S, positive=True)
    refresh_token_ttl_s: int = REFRESH_TOKEN_TTL_S
    #: How long a claimed job is leased before the rescuer may take it back.
    lease_s: float = setting(LEASE_S, positive=True)
    #: The heartbeat interval the API tells workers to use (a few per lease).
    heartbeat_interval_s: float = setting(HEARTBEAT_INTERVAL_S, positive=True)
    rescue_interval_s: float = setting(RESCUE_INTERVAL_S, positive=True)
    #: After the API (re)starts or loses its database, expired leases get this long for their
    #: workers' heartbeats to come back before they are rescued (0: one lease).
    outage_grace_s: float = 0.0
    prune_interval_s: float = PRUNE_INTERVAL_S
    retention_days: float = RETENTION_DAYS
    max_body_bytes: int = setting(MAX_BODY_BYTES, positive=True)
    max_claim_batch: int = setting(MAX_CLAIM_BATCH, positive=True)
    max_claim_wait_s: float = MAX_CLAIM_WAIT_S
    claim_poll_fallback_s: float = CLAIM_POLL_FALLBACK_S
    max_submit_batch: int = setting(MAX_SUBMIT_BATCH, positive=True)
    db_pool_size: int = setting(DB_POOL_SIZE, positive=True)
    #: Start the LISTEN thread and maintenance services in this process.
    background: bool = True
    #: "open": anyone may register a USER account; "closed": only admins create accounts.
    registration: str = setting("open", choices=("open", "closed"))
    password_min_length: int = setting(PASSWORD_MIN_LENGTH, positive=True)
    #: Per-user limits (a user row may override the first two).
    max_active_jobs_per_user: int = setting(MAX_ACTIVE_JOBS_PER_USER, positive=True)
    #: The most urgent priority a USER may ask for (0 is most urgent; admins may use any).
    user_min_priority: int = setting(USER_MIN_PRIORITY, minimum=MIN_PRIORITY, maximum=MAX_PRIORITY)
    max_upload_bytes: int = setting(MAX_UPLOAD_BYTES, positive=True)
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
    download_url_ttl_s: int = setting(DOWNLOAD_URL_TTL_S, positive=True)
    callback_interval_s: float = CALLBACK_INTERVAL_S
    callback_timeout_s: float = setting(CALLBACK_TIMEOUT_S, positive=True)
    callback_max_attempts: int = setting(CALLBACK_MAX_ATTEMPTS, positive=True)
    callback_concurrency: int = setting(CALLBACK_CONCURRENCY, positive=True)
    #: Server-Sent Event streams one API process serves at once (each re-reads its job on changes).
    max_event_streams: int = setting(MAX_EVENT_STREAMS, positive=True)
    event_stream_max_s: float = EVENT_STREAM_MAX_S
    event_keepalive_s: float = EVENT_KEEPALIVE_S
    #: Of those, how many one account may hold (the rest stay free for everyone else).
    max_event_streams_per_user: int = setting(MAX_EVENT_STREAMS_PER_USER, positive=True)
    #: How long a submission's Idempotency-Key is remembered.
    idempotency_key_ttl_s: float = setting(IDEMPOTENCY_KEY_TTL_S, positive=True)
    #: The API's public base URL (``https://skyfleet.example.org``): absolute URLs it emits (signed
    #: download links) are built from it; empty: from the request (its Host header).
    public_url: str = ""

    @property
    def worker_lost_after_s(self) -> float:
        """A worker not heard from this long is lost: the one definition, used by the admin views,
        the metrics, the manager's live list and the maintenance service that marks workers
        stopped. An idle worker's only request is its claim, which may wait ``max_claim_wait_s``;
        two leases more cover the request's round trip."""
        return self.max_claim_wait_s + 2 * self.lease_s

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed (tests use this)."""
        return replace(self, **changes)

    def check(self) -> None:
        """What involves several settings, or more than a type and a bound."""
        super().check()
        if self.heartbeat_interval_s >= self.lease_s:
            raise ConfigError(
                f"{env_name('heartbeat_interval_s')} ({self.heartbeat_interval_s}) must be shorter than "
                f"{env_name('lease_s')} ({self.lease_s}), or every lease lapses between heartbeats"
            )
        _check_private_key(self.jwt_private_key)
        if self.public_url:
            _check_public_url(self.public_url)


def env_name(field_name: str) -> str:
    """The environment variable that sets ``field_name``."""
    return variable(Settings, field_name)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from the environment (and ``SKYFLEET_CONFIG_FILE``), failing fast with the variable's name."""
    return load(Settings, environ)


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
