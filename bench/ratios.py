"""skyfleet / peer: each ``peers`` figure over the skyfleet figure it stands against, from one run.

A ``peers`` figure names what it compares with in ``extra["compare"]``; the skyfleet figure is
found by its scenario and name (the names ``enqueue``, ``throughput`` and ``latency`` give
them). A ratio is made only when both were measured in the same invocation, so both come
from the same server on the same machine at about the same time. For jobs/s a ratio below 1
means skyfleet is slower; for latencies, above 1 means it is slower.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.figures import Figure, figure, say


@dataclass(frozen=True)
class Comparison:
    """How to find the skyfleet figure a peer figure compares with."""

    label: str
    scenario: str
    matches: Callable[[str], bool]
    better: str  # "higher" (jobs/s) or "lower" (ms)


COMPARISONS = {
    "enqueue_single": Comparison("enqueue, one job per call", "enqueue",
                                 lambda name: name.startswith("single requests"), "higher"),
    "enqueue_bulk": Comparison("enqueue, batches", "enqueue", lambda name: name.startswith("batches of"), "higher"),
    "e2e_one": Comparison("end to end, one at a time", "throughput",
                          lambda name: name.startswith("end to end, claim batch 1,"), "higher"),
    "e2e_batched": Comparison("end to end, batched", "throughput",
                              lambda name: name.startswith("end to end, claim batch")
                              and not name.startswith("end to end, claim batch 1,"), "higher"),
    "pickup_p50": Comparison("pickup p50", "latency", lambda name: name == "pickup p50", "lower"),
    "pickup_p99": Comparison("pickup p99", "latency", lambda name: name == "pickup p99", "lower"),
}


def skyfleet_figure(figures: list[Figure], comparison: Comparison) -> Figure | None:
    """The skyfleet figure of ``comparison`` measured in this run, if any."""
    for fig in figures:
        if fig.scenario == comparison.scenario and comparison.matches(fig.name) and fig.value:
            return fig
    return None


def peer_ratios(figures: list[Figure]) -> list[Figure]:
    """A ``ratios`` figure (skyfleet / peer, unit ×) for each peer figure whose skyfleet figure ran too."""
    ratios = []
    for peer_fig in figures:
        key = peer_fig.extra.get("compare")
        if peer_fig.scenario != "peers" or key not in COMPARISONS or not peer_fig.value:
            continue
        comparison = COMPARISONS[key]
        ours = skyfleet_figure(figures, comparison)
        if ours is None or ours.value is None:
            continue
        peer = peer_fig.extra.get("peer", "peer")
        ratios.append(figure("ratios", f"{comparison.label}: skyfleet / {peer}", ours.value / peer_fig.value,
                             "×", skyfleet=ours.value, peer=peer_fig.value, of_unit=ours.unit,
                             better=comparison.better, skyfleet_figure=ours.name, peer_figure=peer_fig.name))
    return ratios


def print_ratios(ratios: list[Figure], peers_ran: bool) -> None:
    """The ratios, each with both figures, or why there are none."""
    if not ratios:
        if peers_ran:
            say("\n(no skyfleet / peer ratios: run enqueue, throughput and latency in the same invocation)")
        return
    say("\n== skyfleet / peers (same run, same server) ==")
    for fig in ratios:
        x = fig.extra
        direction = "below 1: skyfleet slower" if x["better"] == "higher" else "above 1: skyfleet slower"
        say(f"  {fig.name:<46} {fig.value:>9.2f} ×   ({x['skyfleet']:,.2f} vs {x['peer']:,.2f} {x['of_unit']}; "
            f"{direction})")
