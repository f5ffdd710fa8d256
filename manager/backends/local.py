"""The local backend: worker subprocesses of the manager, on this machine.

Each worker gets ``SKYFLEET_WORKER_POOL``, ``…_REVISION``, ``…_LAUNCH_ID``, the pool's job types
and the API URL in its environment, in its own session (a Ctrl-C in the terminal reaches the
manager, which then stops its workers in order). Exited children are reaped on every
:meth:`LocalBackend.list` and reported as :class:`Gone` with their exit code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from manager.backends.base import Gone, Instance, Observation, StartResult
from manager.config import PoolConfig

log = logging.getLogger(__name__)

#: A worker asked to stop gets this long (its own stop grace is 30 s) before SIGKILL.
KILL_AFTER_S = 60.0
#: On manager shutdown: how long the workers get to finish or release their jobs.
CLOSE_TIMEOUT_S = 15.0
#: The workers' own stop grace unless the pool sets one: short enough that they release their
#: jobs before the manager's close timeout ends in SIGKILL (which would leave leases to lapse).
WORKER_STOP_GRACE_S = CLOSE_TIMEOUT_S - 5.0


@dataclass
class _Child:
    proc: subprocess.Popen[bytes]
    instance: Instance
    stop_sent_at: float | None = None


class LocalBackend:
    """Starts ``pool.command`` as child processes; stops them with SIGTERM (SIGKILL after a long grace)."""

    name = "local"

    def __init__(self, pool: PoolConfig, api_url: str, base_env: Mapping[str, str],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pool = pool
        self.api_url = api_url
        self.base_env = dict(base_env)
        self.clock = clock
        self._children: dict[str, _Child] = {}
        self._hostname = socket.gethostname()
        digest = json.dumps([list(pool.command), sorted(pool.env)], sort_keys=True).encode()
        self._command_hash = hashlib.sha256(digest).hexdigest()[:10]

    def revision(self, generation: int) -> str:
        """``g<generation>-<hash of the command and env>``."""
        return f"g{generation}-{self._command_hash}"

    def list(self) -> Observation:
        """Reap exited children, SIGKILL the ones that ignored a stop for too long; the live ones."""
        gone = []
        now = self.clock()
        for launch_id, child in list(self._children.items()):
            code = child.proc.poll()
            if code is not None:
                del self._children[launch_id]
                gone.append(Gone(child.instance, code, child.stop_sent_at is not None))
                log.info("worker process %s (pool %s, launch %s) exited with %s",
                         child.proc.pid, self.pool.name, launch_id, code)
            elif child.stop_sent_at is not None and now - child.stop_sent_at > KILL_AFTER_S:
                log.warning("worker process %s ignored SIGTERM for %.0f s; SIGKILL", child.proc.pid,
                            KILL_AFTER_S)
                child.proc.kill()
        instances = [c.instance for c in self._children.values()]
        return Observation(instances, gone, {"backend": "local", "command": list(self.pool.command),
                                             "pids": sorted(i.pid for i in instances if i.pid is not None)})

    def start(self, count: int, generation: int) -> StartResult:
        """Spawn ``count`` workers; a spawn error (e.g. a missing executable) ends the batch."""
        result = StartResult()
        revision = self.revision(generation)
        for _ in range(count):
            launch_id = uuid.uuid4().hex[:12]
            env = {"SKYFLEET_WORKER_STOP_GRACE_S": f"{WORKER_STOP_GRACE_S:g}"} | self.base_env | dict(self.pool.env) | {
                "SKYFLEET_API_URL": self.api_url,
                "SKYFLEET_WORKER_POOL": self.pool.name,
                "SKYFLEET_WORKER_REVISION": revision,
                "SKYFLEET_WORKER_LAUNCH_ID": launch_id,
                "SKYFLEET_WORKER_NAME": f"{self.pool.name}-{launch_id}",
            }
            if self.pool.job_types:
                env["SKYFLEET_WORKER_TYPES"] = ",".join(self.pool.job_types)
            try:
                proc = subprocess.Popen(list(self.pool.command), env=env, start_new_session=True)
            except OSError as exc:
                result.failures.append(f"cannot start {self.pool.command[0]!r}: {exc.strerror or exc}")
                break
            instance = Instance(id=launch_id, launched_at=self.clock(), revision=revision,
                                launch_id=launch_id, pid=proc.pid)
            self._children[launch_id] = _Child(proc, instance)
            result.started.append(instance)
            log.info("started worker process %s (pool %s, launch %s, %s)", proc.pid, self.pool.name,
                     launch_id, revision)
        return result

    def stop(self, instances: Sequence[Instance], reason: str) -> None:
        """SIGTERM each (once): the worker finishes or releases its jobs and exits 0."""
        for instance in instances:
            child = self._children.get(instance.id)
            if child is None or child.stop_sent_at is not None:
                continue
            log.info("SIGTERM worker process %s (pool %s): %s", child.proc.pid, self.pool.name, reason)
            child.proc.send_signal(signal.SIGTERM)
            child.stop_sent_at = self.clock()
            child.instance = replace(child.instance, stopping=True)

    def owns(self, instance: Instance, worker: dict[str, Any]) -> bool:
        """By launch id; by pid on this host for a worker that does not report its launch id."""
        if worker.get("launch_id"):
            return bool(worker["launch_id"] == instance.launch_id)
        return worker.get("pid") == instance.pid and worker.get("hostname") in (None, self._hostname)

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """SIGTERM every worker, wait up to ``timeout_s`` in all, then SIGKILL what is left."""
        children = list(self._children.values())
        for child in children:
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in children:
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker process %s did not stop in time; SIGKILL", child.proc.pid)
                child.proc.kill()
                child.proc.wait()
        self._children.clear()
