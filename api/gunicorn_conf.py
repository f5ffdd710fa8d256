"""gunicorn settings for the API.

Worker class ``gevent``: each request is a greenlet, so a long-polling claim or an event
stream that waits costs a few kilobytes of memory and no OS thread, and parked claims can
never starve heartbeats, health checks or reads (with ``gthread``, each waiting worker held
one of a fixed number of threads: past a few dozen idle workers everything else queued
behind them). ``worker_connections`` bounds the requests one process holds at once; the
database stays bounded by the engine's pool (``SKYFLEET_DB_POOL_SIZE``), since a parked claim
holds no connection. gunicorn patches the standard library before it loads the app, and
psycopg then waits on its sockets cooperatively (``post_worker_init`` checks it did).

The app is built after fork (no ``preload_app``), so every process has its own engine,
LISTEN connection and maintenance runner; the advisory lock keeps one runner active.

Metrics: each worker process writes its counters and histograms to files in
``PROMETHEUS_MULTIPROC_DIR`` and a scrape of ``/metrics`` sums them (api/metrics). The master
sets that directory up before the first fork: the operator's, emptied, or a fresh temporary
one. prometheus_client must not be imported here at module level: it picks its storage when
first imported, and workers forked from a master that had imported it without the variable
would keep their values in private memory.
"""

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from settings import load, setting


@dataclass(frozen=True, kw_only=True)
class WebSettings:
    """How gunicorn serves the API (read like every component's settings)."""

    host: str = setting("127.0.0.1", env="HOST")
    port: int = setting(8000, env="PORT", minimum=1, maximum=65535)
    #: Processes, each serving ``web_connections`` requests at once as greenlets.
    web_workers: int = setting(2, positive=True)
    web_connections: int = setting(2000, positive=True)
    #: Where the access log goes ("-": standard output); empty: none.
    access_log: str = ""
    log_level: str = "info"


web = load(WebSettings)
bind = f"{web.host}:{web.port}"
worker_class = "gevent"
workers = web.web_workers
worker_connections = web.web_connections
# Longer than the ALB's idle timeout (120 s in infra/, 60 s by AWS's default): the balancer, not
# the API, closes idle keep-alive connections, so it never sends a request on a connection the
# API has just closed (a 502). On SIGTERM idle connections are closed at once (api/serving.py).
keepalive = 130
timeout = 60
graceful_timeout = 10
accesslog = web.access_log or None
# No control socket: several APIs (tests, benchmarks) may run side by side.
control_socket_disable = True
loglevel = web.log_level

METRICS_DIR_VAR = "PROMETHEUS_MULTIPROC_DIR"


def on_starting(server: Any) -> None:
    """Before the first worker: a metrics directory with no files left from an earlier run."""
    given = os.environ.get(METRICS_DIR_VAR)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        # Only prometheus_client's own files: the operator may have pointed us at a shared place.
        for stale in directory.glob("*.db"):
            stale.unlink()
    else:
        # Set in the master's environment, so every worker forked from now on inherits it.
        os.environ[METRICS_DIR_VAR] = server.skyfleet_metrics_tmp = tempfile.mkdtemp(prefix="skyfleet-metrics-")
    server.log.info("metrics directory: %s", os.environ[METRICS_DIR_VAR])


def post_worker_init(worker: Any) -> None:
    """Refuse to serve if psycopg would block the whole process on every query; on SIGTERM,
    quiesce the app at once (parked claims answered, maintenance stopped) while gunicorn
    finishes the requests in flight."""
    import psycopg.waiting

    if psycopg.waiting.wait is psycopg.waiting.wait_c:
        worker.log.error("psycopg was imported before gevent patched the standard library: "
                         "every query would stall every request of this process")
        raise SystemExit(3)

    from api.app import quiesce
    from api.serving import install

    install(worker, quiesce)


def child_exit(server: Any, worker: Any) -> None:
    """A worker process ended: drop its live-gauge files (its counters keep counting in the sum)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """Remove the temporary metrics directory this master created."""
    created = getattr(server, "skyfleet_metrics_tmp", None)
    if created:
        shutil.rmtree(created, ignore_errors=True)
