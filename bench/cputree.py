"""CPU seconds of a whole process tree, counting descendants that have exited meanwhile.

``bench/cpu.py`` sums the processes alive at each sample, so a process that exits between two
samples (a PostgreSQL backend whose connection closed, a worker that drained the queue and
left) takes its CPU with it. Here each process counts its own time plus the time of the
children it has reaped (``cutime`` + ``cstime`` in ``/proc/<pid>/stat``): a backend's CPU moves
into the postmaster's when it exits, so the difference of two readings is what the tree used
in between, whoever exited. Linux only; None elsewhere. :func:`cpu_mark` and :func:`cpu_since`
wrap ``bench/cpu.py``'s accounting per role with it.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

from bench.cpu import CpuSample, cpu_sample, cpu_used


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, own + reaped children's CPU seconds) of ``pid``, or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return int(fields[1]), ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(root: int) -> float | None:
    """CPU seconds used so far by ``root`` and all its descendants, the exited ones included."""
    if not Path("/proc/stat").exists():
        return None
    stats = {int(e): s for e in os.listdir("/proc") if e.isdigit() and (s := _stat(int(e))) is not None}
    if root not in stats:
        return None
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, seen = 0.0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in stats and pid not in seen:
            seen.add(pid)
            total += stats[pid][1]
            todo += children.get(pid, [])
    return total



@dataclass(frozen=True)
class CpuMark:
    """Where the CPU counters stood at the start of a span."""

    sample: CpuSample | None
    postgres_s: float | None
    children_s: float


def cpu_mark(roles: dict[str, list[int]]) -> CpuMark:
    """Read every counter :func:`cpu_since` needs."""
    return CpuMark(cpu_sample(roles), _root_cpu_s(roles, "postgres"), children_cpu_s())


def cpu_since(mark: CpuMark, roles: dict[str, list[int]], exited_children: str | None = None) -> dict[str, float]:
    """CPU seconds per role since ``mark`` (as :func:`bench.cpu.cpu_used`), with PostgreSQL's
    exited backends counted; with ``exited_children``, that role is the CPU of this process's
    children that exited and were waited for meanwhile (worker processes stopped in the span)."""
    used = cpu_used(mark.sample, cpu_sample(roles))
    postgres_s = _root_cpu_s(roles, "postgres")
    if postgres_s is not None and mark.postgres_s is not None:
        _account(used, "postgres", postgres_s - mark.postgres_s)
    if exited_children:
        _account(used, exited_children, children_cpu_s() - mark.children_s)
    return used


def _root_cpu_s(roles: dict[str, list[int]], role: str) -> float | None:
    """:func:`tree_cpu_s` of the (first) root of ``role``, e.g. the postmaster."""
    return tree_cpu_s(roles[role][0]) if roles.get(role) else None


def children_cpu_s() -> float:
    """CPU seconds of this process's exited and waited-for children so far (rusage)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _account(used: dict[str, float], role: str, seconds: float) -> None:
    """Set ``used[role]`` to ``seconds``, keeping ``other`` the rest of the machine's busy time."""
    if not used:
        return
    used["other"] = max(0.0, used["other"] + used.get(role, 0.0) - seconds)
    used[role] = seconds
