"""``python -m bench.chaos`` (``make chaos``): the fault-injection run at full size, with its figures.

Exit code 0 when no job was lost, none was completed twice and no worker exited by itself;
1 otherwise (or when the run could not be completed).
"""

from __future__ import annotations

import argparse
import signal
import sys
import warnings
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from bench.chaos.run import ChaosOptions, run_chaos
from bench.errors import BenchError
from bench.figures import say
from bench.fleet import ROOT

DEFAULT_LOG_DIR = ROOT / ".skyfleet" / "chaos" / "logs"
_HELP = {
    "jobs": "jobs submitted", "workers": "worker processes at any time", "concurrency": "jobs per worker",
    "job_s": "each sleep job's seconds", "batch_size": "jobs per submission request",
    "kill_every_s": "seconds between worker faults", "sigterm_every": "every n-th worker fault is a SIGTERM",
    "api_restarts": "API SIGKILLs", "db_restarts": "PostgreSQL crash restarts",
    "api_down_s": "seconds the API stays down", "db_down_s": "seconds PostgreSQL stays down",
    "chaos_s": "fault window in seconds (default: 70%% of the ideal run)",
    "replace_after_s": "seconds before a stopped worker is replaced", "lease_s": "SKYFLEET_LEASE_S",
    "heartbeat_interval_s": "SKYFLEET_HEARTBEAT_INTERVAL_S", "rescue_interval_s": "SKYFLEET_RESCUE_INTERVAL_S",
    "token_ttl_s": "SKYFLEET_ACCESS_TOKEN_TTL_S", "stall_s": "give up after this long without progress",
    "seed": "random seed for the choice of victims",
}


def parse_options(argv: Sequence[str] | None) -> tuple[ChaosOptions, Path]:
    """The options (every ChaosOptions field as ``--name``) and the log directory."""
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--log-dir", type=Path, default=DEFAULT_LOG_DIR,
                        help="the processes' logs (default: .skyfleet/chaos/logs)")
    defaults = ChaosOptions()
    for f in fields(ChaosOptions):
        default = getattr(defaults, f.name)
        kind = int if f.name in ("seed",) else float if f.name == "chaos_s" else type(default)
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=default,
                            help=f"{_HELP.get(f.name, '')} (default: {default})")
    args = vars(parser.parse_args(argv))
    log_dir = Path(args.pop("log_dir")).resolve()
    return ChaosOptions(**args), log_dir


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _shield() -> None:
    """Ignore further Ctrl-C/SIGTERM while the fleet is stopped (every step has a timeout)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def main(argv: Sequence[str] | None = None) -> int:
    """Run once and print the figures."""
    opts, log_dir = parse_options(argv)
    warnings.filterwarnings("ignore", category=UserWarning, module="platformdirs.*")
    # Ctrl-C and SIGTERM unwind through run_chaos's finally, which stops every process and the server.
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        report = run_chaos(opts, log_dir, before_cleanup=_shield)
    except KeyboardInterrupt:
        say("interrupted; the fleet was stopped")
        return 1
    except BenchError as exc:
        say(f"chaos run failed: {exc}")
        return 1
    say("\n== chaos ==")
    for line in report.lines():
        say(line)
    say("  verdict: " + ("OK" if report.ok else "FAILED"))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
