"""The command line (``skyfleet``, on the client) against a real fleet, as a user runs it."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from astropy.io import fits

from tests.acceptance.conftest import PASSWORD, Fleet
from tests.handlers.fitsfactory import gaussian_stars, make_wcs, write_image

SKYFLEET = [sys.executable, "-m", "skyfleet_client.cli"]


def skyfleet(fleet: Fleet, home: Path, *args: str, stdin: str | None = None,
             timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"XDG_CONFIG_HOME": str(home), "SKYFLEET_URL": fleet.url, "COLUMNS": "200"}
    env.pop("SKYFLEET_TOKEN", None)
    return subprocess.run([*SKYFLEET, *args], env=env, input=stdin, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture
def home(fleet: Fleet, tmp_path: Path) -> Path:
    """A config directory with the admin signed in."""
    home = tmp_path / "config"
    done = skyfleet(fleet, home, "login", "--email", "admin@example.org", "--password", PASSWORD)
    assert done.returncode == 0, done.stderr
    return home


def test_login_saves_a_private_refresh_token(fleet: Fleet, home: Path):
    saved = home / "skyfleet" / "credentials.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text())["url"] == fleet.url
    shown = skyfleet(fleet, home, "types", "-o", "json")
    assert shown.returncode == 0 and "sources.detect" in {t["name"] for t in json.loads(shown.stdout)}
    # Each command renewed and rotated the token: the file holds the newest one.
    assert json.loads(saved.read_text())["refresh_token"]
    wrong = skyfleet(fleet, home / "other", "login", "--email", "admin@example.org", "--password", "nope")
    assert wrong.returncode == 4 and wrong.stderr.startswith("skyfleet: UNAUTHORIZED") and "Traceback" not in wrong.stderr


def test_submit_upload_wait_and_download(fleet: Fleet, home: Path, tmp_path: Path):
    fleet.start_worker()
    shape = (160, 200)
    image = write_image(tmp_path / "m13.fits", gaussian_stars(shape, [(40.3, 50.7), (120.5, 80.2)], 5000.0),
                        make_wcs(shape))
    out = tmp_path / "out"
    done = skyfleet(fleet, home, "submit", "sources.detect", "--file", str(image), "-p", "bkg_box=32",
                    "--wait", "--download", str(out), "-o", "json")
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["status"] == "SUCCEEDED"
    result = json.loads(skyfleet(fleet, home, "result", str(job["id"])).stdout)
    for entry in result["files"]:
        assert hashlib.sha256((out / entry["name"]).read_bytes()).hexdigest() == entry["sha256"]
    assert {p.name for p in out.iterdir()} == {"catalogue.ecsv", "overlay.png"}


def test_watch_exits_non_zero_when_a_job_fails(fleet: Fleet, home: Path, tmp_path: Path):
    fleet.start_worker()
    table = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column("A", "E", array=[1.0])])]
                 ).writeto(table)
    file_id = skyfleet(fleet, home, "files", "upload", str(table)).stdout.split()[0]
    ids = []
    for args in (["sleep", "-p", "seconds=0.5", "-p", "tag=a"], ["sleep", "-p", "seconds=0.2", "-p", "tag=b"],
                 ["sources.detect", "-p", f'file={{"file_id": {file_id}}}']):
        submitted = skyfleet(fleet, home, "submit", *args, "-o", "json")
        assert submitted.returncode == 0, submitted.stderr
        ids.append(str(json.loads(submitted.stdout)["id"]))
    watched = skyfleet(fleet, home, "watch", *ids)
    assert watched.returncode == 1, watched.stderr
    assert "FAILED" in watched.stderr and f"job {ids[2]}" in watched.stderr
    listed = json.loads(skyfleet(fleet, home, "list", "--status", "SUCCEEDED", "-o", "json").stdout)
    assert {str(j["id"]) for j in listed} >= set(ids[:2])


def test_bad_input_names_the_field_and_exits_2(fleet: Fleet, home: Path):
    bad = skyfleet(fleet, home, "submit", "sleep", "-p", "seconds=-1")
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "input_payload.seconds" in bad.stderr and "Traceback" not in bad.stderr
    missing = skyfleet(fleet, home, "show", "999999")
    assert missing.returncode == 3 and "NOT_FOUND" in missing.stderr
    signed_out = skyfleet(fleet, home / "nobody", "list")
    assert signed_out.returncode == 2 and "skyfleet login" in signed_out.stderr


def test_submit_many_from_a_jsonl_file(fleet: Fleet, home: Path, tmp_path: Path):
    lines = tmp_path / "jobs.jsonl"
    lines.write_text("".join(json.dumps({"type": "noop", "input_payload": {"tag": str(i)}}) + "\n"
                             for i in range(5000)))
    done = skyfleet(fleet, home, "submit-many", str(lines), "-o", "json")
    assert done.returncode == 0, done.stderr
    assert len(set(json.loads(done.stdout))) == 5000
    token = requests.post(f"{fleet.url}/api/auth/login", json={"email": "admin@example.org", "password": PASSWORD},
                          timeout=10).json()["data"]["access_token"]
    pending = requests.get(f"{fleet.url}/api/jobs", params={"type": "noop", "limit": 1},
                           headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
    assert pending["meta"]["pagination"]["total"] == 5000


def test_input_file_watch_and_admin_reads(fleet: Fleet, home: Path, tmp_path: Path):
    fleet.start_worker()
    body = tmp_path / "input.json"
    body.write_text(json.dumps({"seconds": 0.3, "tag": "from a file"}))
    watched = skyfleet(fleet, home, "submit", "sleep", "--input", str(body), "--watch", "-o", "json")
    assert watched.returncode == 0, watched.stderr
    job = json.loads(watched.stdout)
    assert job["status"] == "SUCCEEDED" and job["input_payload"]["tag"] == "from a file"
    queues = skyfleet(fleet, home, "admin", "queues")
    assert queues.returncode == 0 and {t["type"] for t in json.loads(queues.stdout)["types"]} >= {"sleep"}
    workers = skyfleet(fleet, home, "admin", "workers")
    assert workers.returncode == 0 and len(json.loads(workers.stdout)) == 1  # every page of them
    nothing = skyfleet(fleet, home, "admin", "scale", "local")
    assert nothing.returncode == 2 and "--count" in nothing.stderr
    no_pool = skyfleet(fleet, home, "admin", "scale", "nowhere", "--count", "1")
    assert no_pool.returncode == 3, no_pool.stderr
