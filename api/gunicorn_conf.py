"""gunicorn settings for the API.

Worker class ``gthread``: a long-polling claim parks a thread (not a process, and no
database connection) while it waits, so a few processes with many threads each serve a
whole fleet of waiting workers. The app is built after fork (no ``preload_app``), so every
process has its own engine, LISTEN connection and maintenance runner; the advisory lock
keeps one runner active.
"""

import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
worker_class = "gthread"
workers = int(os.environ.get("SKYFLEET_WEB_WORKERS", "2"))
threads = int(os.environ.get("SKYFLEET_WEB_THREADS", "32"))
keepalive = 30
timeout = 60
graceful_timeout = 10
accesslog = os.environ.get("SKYFLEET_ACCESS_LOG") or None
# No control socket: several APIs (tests, benchmarks) may run side by side.
control_socket_disable = True
loglevel = os.environ.get("SKYFLEET_LOG_LEVEL", "info")
