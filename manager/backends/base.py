"""The backend protocol (list / start / stop) and what it hands back."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

_GENERATION = re.compile(r"^g(\d+)[-:]")


@dataclass(frozen=True)
class Instance:
    """One launched worker (a process or an ECS task), whether or not its worker has registered yet."""

    #: Local: the launch id; ECS: the task ARN.
    id: str
    #: When it was launched, in seconds of the manager's monotonic clock.
    launched_at: float
    #: What it runs: ``g<redeploy generation>-<command hash>`` or ``g<generation>:<family>:<revision>``.
    revision: str | None = None
    #: SKYFLEET_WORKER_LAUNCH_ID given to it (ECS: shared by the tasks of one RunTask call).
    launch_id: str | None = None
    pid: int | None = None
    task_arn: str | None = None
    #: The backend's own status (local: RUNNING; ECS: lastStatus).
    status: str = "RUNNING"
    #: A stop (SIGTERM / StopTask) was already sent.
    stopping: bool = False


@dataclass(frozen=True)
class Gone:
    """An instance that has disappeared since the previous :meth:`Backend.list`."""

    instance: Instance
    #: The exit code when known (local processes); None for ECS tasks.
    returncode: int | None
    #: Whether the manager had asked it to stop.
    requested: bool


@dataclass
class Observation:
    """The live instances of a pool, those gone since the last look, and details for the decision record."""

    instances: list[Instance]
    gone: list[Gone] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class StartResult:
    """What a start call launched and, when it could not launch them all, why."""

    started: list[Instance] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


class Backend(Protocol):
    """Launches, lists and stops the workers of one pool."""

    name: str

    def list(self) -> Observation:
        """The live instances; raises BackendError when they cannot be listed (the tick then holds)."""
        ...

    def start(self, count: int, generation: int) -> StartResult:
        """Launch ``count`` workers of the current revision for ``generation``; failures in the result."""
        ...

    def stop(self, instances: Sequence[Instance], reason: str) -> None:
        """Ask these instances to stop (SIGTERM / StopTask); called only for idle or unregistered ones."""
        ...

    def owns(self, instance: Instance, worker: dict[str, Any]) -> bool:
        """Whether the registered ``worker`` (from /api/manager/workers) runs in ``instance``."""
        ...

    def revision(self, generation: int) -> str:
        """What a launch for ``generation`` would run (resolved again when the generation changes)."""
        ...

    def close(self) -> None:
        """Release what the backend holds (local: stop the worker processes; ECS: nothing)."""
        ...


def revision_generation(revision: str | None) -> int | None:
    """The redeploy generation a revision string was launched for (None if it is not one of ours)."""
    match = _GENERATION.match(revision or "")
    return int(match.group(1)) if match else None
