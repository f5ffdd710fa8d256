"""ruff and mypy stay clean, checked by `make test` so CI holds the line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["api", "worker", "manager", "jobtypes", "storage", "settings", "bench", "infra", "client/skyfleet_client"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          check=False)


def test_ruff():
    result = _run("ruff", "check", *PACKAGES, "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy():
    result = _run("mypy", *PACKAGES)
    assert result.returncode == 0, result.stdout + result.stderr
