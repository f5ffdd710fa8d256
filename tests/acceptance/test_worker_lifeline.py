"""A worker killed while it starts leaves no process behind (worker/lifeline.py).

The worker starts its forkserver (and multiprocessing's resource tracker) first thing, and
the forkserver then spends seconds importing numpy, astropy and the handlers. Killed at that
moment, the worker must take them along: an orphan would do all that start-up for nobody.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import wait_for


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    """Children of every thread of ``pid`` (Linux /proc)."""
    found: list[int] = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found += [int(c) for c in f.read().split()]
        except FileNotFoundError:
            continue
    return found


def _tree(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        children = _children(todo.pop())
        found.update(children)
        todo += children
    return found


def _read(pid: int, name: str) -> str:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _alive(pid: int) -> bool:
    stat = _read(pid, "stat")
    return bool(stat) and stat.split(") ")[1][0] != "Z"


def _forkserver_of(pid: int) -> int | None:
    return next((c for c in _children(pid) if "multiprocessing.forkserver" in _read(c, "cmdline")), None)


def _imported_numpy(pid: int) -> bool:
    return "numpy" in _read(pid, "maps")


@pytest.mark.parametrize("moment", ["before the forkserver imports", "while the forkserver imports"])
def test_a_worker_killed_while_starting_leaves_no_process_behind(tmp_path: Path, moment: str):
    # No API to talk to: the worker starts its forkserver, then keeps trying to log in.
    env = os.environ | {
        "SKYFLEET_API_URL": f"http://127.0.0.1:{_closed_port()}",
        "SKYFLEET_WORKER_EMAIL": "worker@example.org",
        "SKYFLEET_WORKER_PASSWORD": "unused",
        "SKYFLEET_STORAGE_DIR": str(tmp_path / "storage"),
        "SKYFLEET_WORKER_WORK_DIR": str(tmp_path / "work"),
    }
    worker = subprocess.Popen([sys.executable, "-m", "worker"], env=env, stderr=subprocess.DEVNULL)
    tree: dict[int, str] = {}  # pid → command line
    try:
        found = wait_for(lambda: _forkserver_of(worker.pid), timeout=30, interval=0.001,
                         what="the worker to start its forkserver")
        assert found is not None
        forkserver = found
        if moment.startswith("before"):
            # Held before it has run any of its own code, until its worker is gone.
            os.kill(forkserver, signal.SIGSTOP)
        else:
            wait_for(lambda: _imported_numpy(forkserver), timeout=30, interval=0.01,
                     what="the forkserver to import numpy")
        tree = {pid: _read(pid, "cmdline") for pid in _tree(worker.pid)}
        assert forkserver in tree and any("resource_tracker" in cmd for cmd in tree.values())
        worker.kill()
        worker.wait(10)
        os.kill(forkserver, signal.SIGCONT)

        imported_for_nobody: set[int] = set()

        def all_gone() -> bool:
            alive = {pid for pid in tree if _alive(pid)}
            if moment.startswith("before"):
                imported_for_nobody.update(pid for pid in alive if _imported_numpy(pid))
            return not alive

        wait_for(all_gone, timeout=30, interval=0.02, what="the worker's processes to die with it")
        assert not imported_for_nobody, "an orphaned forkserver went on importing the handlers"
    finally:
        worker.kill()
        worker.wait(10)
        for pid, cmdline in tree.items():
            if _alive(pid) and _read(pid, "cmdline") == cmdline:  # still the process this test started
                os.kill(pid, signal.SIGKILL)
