"""CPU accounting per role (API, PostgreSQL, workers, client) from Linux /proc; empty elsewhere."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid → (parent pid, CPU seconds used so far) for every process we may read."""
    table: dict[int, tuple[int, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # exited meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()
        table[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return table


def _machine_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy (all cores) since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _tree(table: dict[int, tuple[int, float]], roots: list[int]) -> set[int]:
    """The pids of ``roots`` and all their descendants found in ``table``."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in table and pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return found


@dataclass
class CpuSample:
    """Per-process CPU seconds by role, and the machine's busy seconds, at one moment."""

    by_role: dict[str, dict[int, float]]
    machine_s: float
    at: float


def cpu_sample(roles: dict[str, list[int]]) -> CpuSample | None:
    """CPU used so far by each role's process trees (the client: this process only)."""
    if not Path("/proc/stat").exists():
        return None
    table = _proc_table()
    by_role = {}
    for role, roots in roles.items():
        pids = set(roots) if role == "client" else _tree(table, roots)
        by_role[role] = {pid: table[pid][1] for pid in pids if pid in table}
    return CpuSample(by_role, _machine_cpu_s(), time.monotonic())


def cpu_used(before: CpuSample | None, after: CpuSample | None) -> dict[str, float]:
    """CPU seconds per role between two samples, plus ``other`` (the rest of the machine) and ``wall``."""
    if before is None or after is None:
        return {}
    used = {role: sum(cpu - before.by_role.get(role, {}).get(pid, 0.0) for pid, cpu in pids.items())
            for role, pids in after.by_role.items()}
    used["other"] = max(0.0, after.machine_s - before.machine_s - sum(used.values()))
    used["wall"] = after.at - before.at
    return used


def cpu_note(label: str, used: dict[str, float]) -> str:
    """One line: each role's share of the machine's cores during a run."""
    if not used:
        return f"{label}: (no CPU accounting on this platform)"
    cores = os.cpu_count() or 1
    parts = [f"{role} {used[role] / used['wall']:.2f}" for role in used if role != "wall"]
    return (f"{label}: cores busy on average over {used['wall']:.1f} s ({cores} in all): " + ", ".join(parts))
