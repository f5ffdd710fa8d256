"""What more than one component must agree on, defined once.

The settings both the API and the worker read (where outputs are stored, which private
networks URL inputs may reach) are one group of fields both settings classes inherit, and
the bounds the API enforces on what the manager and the worker send are the constants here.
"""

from __future__ import annotations

from dataclasses import dataclass

from settings.loader import ConfigError, setting, variable

#: A manager's lease on the fleet lasts 5 s to 5 min (the API refuses other TTLs).
MANAGER_LEASE_TTL_MIN_S = 5.0
MANAGER_LEASE_TTL_MAX_S = 300.0
#: The longest scaling-decision reason the API stores (the manager cuts its reasons to it).
DECISION_REASON_CHARS = 2000
#: Jobs one worker runs at once unless told otherwise (and so what a manager's pool expects).
WORKER_CONCURRENCY = 4
STORAGE_DIR = ".skyfleet/storage"
#: How long a service's request to the API may take (a worker's claim adds its long-poll wait).
HTTP_TIMEOUT_S = 10.0


@dataclass(frozen=True, kw_only=True)
class StorageSettings:
    """Where uploads and outputs live (the API and the workers must agree) and what URL inputs may reach.

    Each field names its variable, so a component's prefix (``SKYFLEET_WORKER_``) does not change it.
    """

    #: "local" (a directory) or "s3".
    storage_backend: str = setting("local", env="SKYFLEET_STORAGE_BACKEND", choices=("local", "s3"))
    storage_dir: str = setting(STORAGE_DIR, env="SKYFLEET_STORAGE_DIR")
    s3_bucket: str = setting("", env="SKYFLEET_S3_BUCKET")
    s3_prefix: str = setting("", env="SKYFLEET_S3_PREFIX")
    #: Hosts or CIDR blocks that URL inputs and callbacks may reach even though private or loopback.
    allowed_networks: tuple[str, ...] = setting((), env="SKYFLEET_ALLOWED_NETWORKS")

    def check(self) -> None:
        """The bucket is required for S3 storage."""
        if self.storage_backend == "s3" and not self.s3_bucket:
            raise ConfigError(f"{variable(StorageSettings, 's3_bucket')} is required when "
                              f"{variable(StorageSettings, 'storage_backend')}=s3")


@dataclass(frozen=True, kw_only=True)
class ServiceAccountSettings:
    """How a service (a worker, the manager) reaches the API: its URL and its service account.

    The account's variables carry the component's prefix (``SKYFLEET_WORKER_EMAIL``,
    ``SKYFLEET_MANAGER_PASSWORD``, ``SKYFLEET_MANAGER_PASSWORD_FILE``); the URL is shared.
    """

    api_url: str = setting(env="SKYFLEET_API_URL")
    email: str = setting()
    password: str = setting(secret=True)
    http_timeout_s: float = setting(HTTP_TIMEOUT_S, positive=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "api_url", self.api_url.rstrip("/"))
