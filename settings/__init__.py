"""Settings of every component, read one way (:mod:`settings.loader`), and what they share.

The API (``api/config.py``), the worker (``worker/config.py``), the manager
(``manager/config.py``) and the launcher (``api/launcher.py``) each declare a frozen dataclass
and build it once with :func:`load`; nothing else reads the environment.
"""

from settings.loader import CONFIG_FILE_VAR, ConfigError, convert, load, setting, variable
from settings.shared import (
    DECISION_REASON_CHARS,
    MANAGER_LEASE_TTL_MAX_S,
    MANAGER_LEASE_TTL_MIN_S,
    WORKER_CONCURRENCY,
    ServiceAccountSettings,
    StorageSettings,
)

__all__ = [
    "CONFIG_FILE_VAR",
    "DECISION_REASON_CHARS",
    "MANAGER_LEASE_TTL_MAX_S",
    "MANAGER_LEASE_TTL_MIN_S",
    "WORKER_CONCURRENCY",
    "ConfigError",
    "ServiceAccountSettings",
    "StorageSettings",
    "convert",
    "load",
    "setting",
    "variable",
]
