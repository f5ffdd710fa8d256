"""Long blocking calls off the event loop, for code the API runs under gevent.

Under gunicorn's gevent workers (api/gunicorn_conf.py) every request of a process shares one
OS thread: a 50 ms password hash, or an fsync of a large upload, would stall every parked
claim, heartbeat and health check of that process meanwhile. :func:`blocking` runs such a
call on gevent's pool of real threads (argon2 and fsync release the GIL) and waits for it
cooperatively; anywhere else (workers, tests, the CLI) it simply calls the function. It lives
in this shared package because storage code runs in both.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def _patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


def blocking(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, on a real thread when the process runs on gevent."""
    if not _patched():
        return fn(*args)
    import gevent

    result: T = gevent.get_hub().threadpool.apply(fn, args)
    return result
