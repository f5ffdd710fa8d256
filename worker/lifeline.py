"""Job processes die with their worker, however the worker dies (SIGKILL, OOM kill, crash).

The worker's job processes are forked by a multiprocessing forkserver, which stays up while
any of its children lives; a child busy in a handler (maybe in C code holding the GIL) would
never notice that the worker is gone and would compute on for nobody, its job meanwhile
rescued and run elsewhere. So the kernel is asked (Linux ``prctl(PR_SET_PDEATHSIG)``) to
SIGKILL the forkserver when the worker exits, and each child when the forkserver exits.

This module is in the forkserver's preload list: importing it there is what arms the
forkserver. It does so only in a process whose parent is the worker that set
``SKYFLEET_LIFELINE_PARENT`` (so importing it anywhere else does nothing).
"""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1
PARENT_ENV = "SKYFLEET_LIFELINE_PARENT"


def die_with_parent() -> bool:
    """SIGKILL this process when its parent exits; False where the kernel cannot do that."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
            return False
    except (OSError, AttributeError):  # not Linux
        return False
    if os.getppid() == 1:  # the parent died before the request was made
        os._exit(1)
    return True


if os.environ.get(PARENT_ENV) == str(os.getppid()):
    die_with_parent()
