"""CPU-bound work off the event loop.

Under gunicorn's gevent workers (api/gunicorn_conf.py) every request of a process shares one
OS thread: a 50 ms password hash would stall every parked claim, heartbeat and health check
of that process for 50 ms. :func:`blocking` runs such work on gevent's pool of real threads
(argon2 releases the GIL while it hashes) and waits for it cooperatively; anywhere else
(tests, the CLI, gthread) it simply calls the function.
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
