"""`skyfleet run` (what `make run` starts): embedded PostgreSQL, API, the manager and the workers
it starts; Ctrl-C stops all."""

from __future__ import annotations

import json
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
        # The launcher's local pool with short windows, so the test sees 0 → 2 → 0 in seconds.
        "SKYFLEET_MANAGER_TICK_S": "0.5",
        "SKYFLEET_MANAGER_POOLS": json.dumps([{"name": "local", "job_types": "*", "max": 2, "jobs_per_worker": 2,
                                               "scale_in_window_s": 1, "idle_to_zero_s": 2}]),
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
        batch = [{"type": "sleep", "input_payload": {"seconds": 0.3, "tag": str(i)}} for i in range(12)]
        jobs = requests.post(f"{url}/api/jobs/batch", json={"jobs": batch}, headers=headers, timeout=10).json()["data"]

        def status() -> dict:
            return requests.get(f"{url}/api/admin/status", headers=headers, timeout=5).json()["data"]["pools"][0]

        def done() -> bool:
            return all(requests.get(f"{url}/api/jobs/{j['id']}", headers=headers, timeout=5)
                       .json()["data"]["status"] == "SUCCEEDED" for j in jobs)

        wait_for(done, timeout=90, interval=0.5, what="the manager's workers to run every job")
        # Scaled out to the pool's maximum, then back to zero once idle: visible to admins.
        wait_for(lambda: status()["desired"] == 0 and not status()["workers"], timeout=60, interval=0.5,
                 what="the pool to scale back to zero")
        assert max(d["desired"] for d in status()["decisions"]) == 2
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(lines) + out
    assert "skyfleet stopped." in out
    # The embedded PostgreSQL was stopped, its data kept.
    assert (tmp_path / "data" / "pgdata" / "PG_VERSION").exists()
    assert not (tmp_path / "data" / "pgdata" / "postmaster.pid").exists()
