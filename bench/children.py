"""Child processes of the ``peers`` and ``scale`` scenarios: started, logged, waited for and stopped."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from api.launcher import stop_processes
from bench.errors import BenchError
from bench.fleet import ROOT


class Children:
    """``python -m <module>`` processes, each in its own session with its output in ``log_dir``.

    A context manager: on exit every child still running is stopped (SIGTERM, then SIGKILL)
    and the log files are closed.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []

    def spawn(self, module_args: list[str], log_name: str,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``python -m <module_args…>``, its output appended to ``log_dir/log_name``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / log_name, "ab")  # noqa: SIM115 — closed in __exit__
        self._logs.append(log)
        # Own session, as the fleet's children: a Ctrl-C reaches only the benchmark, which stops them.
        proc = subprocess.Popen([sys.executable, "-m", *module_args], env=os.environ | (env or {}), cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self, procs: list[subprocess.Popen[bytes]], timeout_s: float = 10.0) -> None:
        """SIGTERM ``procs``, wait up to ``timeout_s`` in all, SIGKILL what is left."""
        stop_processes(procs, timeout_s)

    def wait_exited(self, procs: list[subprocess.Popen[bytes]], timeout_s: float, what: str) -> None:
        """Wait until every one of ``procs`` has exited with code 0; BenchError otherwise."""
        deadline = time.monotonic() + timeout_s
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline:
                self.stop(procs)
                raise BenchError(f"{what}: still running after {timeout_s:.0f} s; see {self.log_dir}")
            time.sleep(0.05)
        failed = [p.returncode for p in procs if p.returncode != 0]
        if failed:
            raise BenchError(f"{what}: exited with code {failed[0]}; see {self.log_dir}")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop(self.procs)
        for log in self._logs:
            log.close()
        self._logs = []
