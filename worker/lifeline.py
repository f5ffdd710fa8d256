"""Job processes die with their worker, however the worker dies (SIGKILL, OOM kill, crash).

The worker's job processes are forked by a multiprocessing forkserver, which stays up while
any of its children lives; a child busy in a handler (maybe in C code holding the GIL) would
never notice that the worker is gone and would compute on for nobody, its job meanwhile
rescued and run elsewhere. So the kernel is asked (Linux ``prctl(PR_SET_PDEATHSIG)``) to
SIGKILL the forkserver when the worker exits, and each child when the forkserver exits.

This module is the first of the forkserver's preloads: importing it there is what arms the
forkserver, before it spends seconds importing numpy and astropy for the handlers. It acts
only in a process started with ``SKYFLEET_LIFELINE_PARENT`` set to its parent's pid (the
worker sets it just while it starts the forkserver), so importing it anywhere else does
nothing. A worker killed before the forkserver got here has left an orphan: the pids differ,
and the orphan exits at once instead of doing its start-up for nobody.

The multiprocessing resource tracker needs no lifeline of its own: it exits when the last
holder of its pipe closes it — the worker, the forkserver (whose listening socket holds the
pipes of requests not yet served) and the job processes — and it must outlive them long
enough to remove the semaphores they leaked, which a SIGKILL would prevent.
"""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1
PARENT_ENV = "SKYFLEET_LIFELINE_PARENT"

#: Set in an armed forkserver: the parent its children (forked from it) must find alive.
forkserver_pid: int | None = None


def die_with_parent(parent_pid: int) -> bool:
    """SIGKILL this process when its parent (``parent_pid``) exits; exit now if it already has.

    False where the kernel cannot do that (not Linux).
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
            return False
    except (OSError, AttributeError):  # not Linux
        return False
    # The parent may have died before the request was made: then this process was already
    # given to init or to a subreaper (so compare pids rather than look for pid 1).
    if os.getppid() != parent_pid:
        os._exit(1)
    return True


def arm_job_process() -> None:
    """In a job process: die with the forkserver that forked it."""
    if forkserver_pid is not None:
        die_with_parent(forkserver_pid)


def _arm_forkserver() -> None:
    global forkserver_pid
    parent = os.environ.pop(PARENT_ENV, None)  # popped: the job processes must not take it for theirs
    if parent is not None and parent.isdigit():
        die_with_parent(int(parent))
        forkserver_pid = os.getpid()


_arm_forkserver()
