"""`skyfleet run` (what `make run` starts): embedded PostgreSQL, API, a worker; Ctrl-C stops all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import requests

from tests.acceptance.conftest import _free_port
from tests.helpers import wait_for


def test_skyfleet_run_serves_jobs_and_stops_cleanly(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {
        "SKYFLEET_DATA_DIR": str(tmp_path / "data"),
        "PORT": str(port),
    }
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "run"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    lines: list[str] = []
    try:
        # The first run prints the generated admin password once.
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if "admin login:" in line:
                break
        login_line = next(line for line in lines if "admin login:" in line)
        email, password = login_line.split("admin login:")[1].split("(")[0].split(" / ")
        token = requests.post(f"{url}/api/auth/login", json={"email": email.strip(), "password": password.strip()},
                              timeout=10).json()["data"]["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        job = requests.post(f"{url}/api/jobs", json={"type": "sleep", "input_payload": {"seconds": 0.1}},
                            headers=headers, timeout=10).json()["data"]
        wait_for(lambda: requests.get(f"{url}/api/jobs/{job['id']}", headers=headers, timeout=5)
                 .json()["data"]["status"] == "SUCCEEDED", timeout=30, what="the local worker to run the job")
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(lines) + out
    assert "skyfleet stopped." in out
    # The embedded PostgreSQL was stopped, its data kept.
    assert (tmp_path / "data" / "pgdata" / "PG_VERSION").exists()
    assert not (tmp_path / "data" / "pgdata" / "postmaster.pid").exists()
