"""Figure records: one measured number with its unit, its target and its verdict; formatting."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Target:
    """A goal for a figure: ``value >= bound`` or ``value <= bound``."""

    op: str
    bound: float

    def met(self, value: float) -> bool:
        """Whether ``value`` reaches the target."""
        return value >= self.bound if self.op == ">=" else value <= self.bound

    def __str__(self) -> str:
        """``≥ 800`` or ``≤ 5``."""
        return f"{'≥' if self.op == '>=' else '≤'} {_fmt(self.bound)}"


@dataclass
class Figure:
    """One measured number, with its unit and, when there is one, its target."""

    scenario: str
    name: str
    value: float | None
    unit: str
    target: str | None = None
    passed: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def figure(scenario: str, name: str, value: float, unit: str, target: Target | None = None,
           **extra: Any) -> Figure:
    """A figure, judged against its target."""
    return Figure(scenario, name, value, unit, None if target is None else f"{target} {unit}",
                  None if target is None else target.met(value), extra)


@dataclass
class ScenarioResult:
    """What one scenario produced: figures, lines to print under them, and raw data for the JSON."""

    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


def _fmt(value: float) -> str:
    """A number with as many decimals as its size warrants (none for a count)."""
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_figure(fig: Figure) -> str:
    """One aligned line: name, value, unit, target and verdict."""
    value = "—" if fig.value is None else _fmt(fig.value)
    line = f"  {fig.name:<46} {value:>10} {fig.unit:<7}"
    if fig.target is not None:
        verdict = "PASS" if fig.passed else "MISS"
        line += f"  target {fig.target:<14} {verdict}"
    return line.rstrip()


def say(message: str = "") -> None:
    """Print a progress or result line at once."""
    print(message, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
