"""``python -m worker`` / ``skyfleet-worker``: run one worker process."""

from __future__ import annotations

import logging
import sys

from settings import ConfigError
from worker.config import load_worker_settings
from worker.runtime import main_loop


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s worker[%(process)d]: %(message)s")
    try:
        settings = load_worker_settings()
    except ConfigError as exc:
        print(f"skyfleet-worker: {exc}", file=sys.stderr)
        return 2
    return main_loop(settings)


if __name__ == "__main__":
    sys.exit(main())
