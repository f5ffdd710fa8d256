"""The image's requirement list (infra/requirements.py): everything the code imports, and never a
distribution of this repository, which pip would otherwise look for on PyPI."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "infra" / "requirements.py"


def _listed() -> list[str]:
    run = subprocess.run([sys.executable, str(SCRIPT), str(ROOT)], check=True, capture_output=True, text=True)
    return run.stdout.split()


def test_the_client_is_installed_from_the_copy_never_fetched():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    assert "skyfleet-client" in config["options"]["install_requires"]  # the worker and manager import it
    listed = _listed()
    assert not [r for r in listed if r.lower().replace("_", "-").startswith("skyfleet")], listed
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    assert dockerfile.index("pip install --no-deps ./client") < dockerfile.index("pip install --no-deps -e .")


def test_the_clients_dependencies_come_with_the_main_ones():
    listed = _listed()
    assert "httpx>=0.27" in listed and "flask>=3.1" in listed and "numpy>=2.0" in listed
    assert len(listed) == len(set(listed))
