"""``python -m manager`` / ``skyfleet-manager``: run the manager until SIGTERM or SIGINT.

On a signal the loop stops after the current tick, the lease is released (so a standby
manager takes over at once, not after the TTL) and local workers are stopped gracefully.
Exit codes: 0 after a clean stop, 2 for a configuration error.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from manager.api_client import ManagerApi
from manager.backends.base import Backend
from manager.backends.ecs import EcsBackend, make_ecs_client
from manager.backends.local import LocalBackend
from manager.config import ManagerSettings, load_manager_settings
from manager.loop import Manager
from settings import ConfigError

log = logging.getLogger("manager")


def build_backends(settings: ManagerSettings) -> dict[str, Backend]:
    """One backend per pool, as its configuration says."""
    backends: dict[str, Backend] = {}
    for pool in settings.pools:
        if pool.backend == "ecs":
            assert pool.ecs is not None
            backends[pool.name] = EcsBackend(pool, make_ecs_client(pool.ecs, settings.aws_endpoint_url))
        else:
            backends[pool.name] = LocalBackend(pool, settings.api_url, dict(settings.worker_env))
    return backends


def main() -> int:
    """Load the settings, run the loop until a signal, clean up; the exit code."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s manager[%(process)d]: %(message)s")
    try:
        settings = load_manager_settings()
    except ConfigError as exc:
        print(f"skyfleet-manager: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping after this tick", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    api = ManagerApi(settings.api_url, settings.email, settings.password, settings.http_timeout_s)
    manager = Manager(settings, api, build_backends(settings))
    try:
        manager.run(stop)
    finally:
        manager.close()
        api.close()
        log.info("manager stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
