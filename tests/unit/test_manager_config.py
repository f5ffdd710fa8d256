"""Manager settings: defaults, pools from JSON/TOML, and errors that name the variable or the key."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from manager.config import DEFAULT_LOCAL_MAX_WORKERS, WORKER_COMMAND, load_manager_settings
from settings import ConfigError

BASE = {
    "SKYFLEET_API_URL": "http://127.0.0.1:8000/",
    "SKYFLEET_MANAGER_EMAIL": "manager@service.skyfleet.internal",
    "SKYFLEET_MANAGER_PASSWORD": "secret",
    "SKYFLEET_WORKER_EMAIL": "worker@service.skyfleet.internal",
    "SKYFLEET_WORKER_PASSWORD": "worker secret",
}


def load(pools: object = None, **env: str):
    environ = BASE | env
    if pools is not None:
        environ["SKYFLEET_MANAGER_POOLS"] = json.dumps(pools)
    return load_manager_settings(environ)


def error(pools: object = None, **env: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(pools, **env)
    return str(info.value)


def test_default_is_one_local_pool_for_every_job_type():
    settings = load()
    assert settings.api_url == "http://127.0.0.1:8000"
    (pool,) = settings.pools
    assert (pool.name, pool.backend, pool.min, pool.max) == ("local", "local", 0, DEFAULT_LOCAL_MAX_WORKERS)
    assert pool.job_types == () and pool.serves("sources.detect") and pool.serves("noop")
    assert pool.command == WORKER_COMMAND == (sys.executable, "-m", "worker")
    # Local workers inherit the manager's environment, but not its credentials.
    worker_env = dict(settings.worker_env)
    assert worker_env["SKYFLEET_WORKER_EMAIL"] == BASE["SKYFLEET_WORKER_EMAIL"]
    assert not any(k.startswith("SKYFLEET_MANAGER_") for k in worker_env)


@pytest.mark.parametrize("missing", ["SKYFLEET_API_URL", "SKYFLEET_MANAGER_EMAIL",
                                     "SKYFLEET_MANAGER_PASSWORD"])
def test_missing_variables_are_named(missing):
    env = dict(BASE)
    del env[missing]
    with pytest.raises(ConfigError, match=missing):
        load_manager_settings(env)


@pytest.mark.parametrize(("pools", "expected"), [
    ([{"name": "a", "min": 2, "max": 4}, {"name": "b", "min": 3, "max": 1}],
     "pools[1].max: must be ≥ min (3)"),
    ([{"name": "a", "max": "3"}], "pools[0].max: must be an integer"),
    ([{"name": "a", "min": -1}], "pools[0].min: must be ≥ 0"),
    ([{"name": "a", "jobs_per_worker": 0}], "pools[0].jobs_per_worker: must be ≥ 1"),
    ([{"name": "a", "max_step": 0}], "pools[0].max_step: must be ≥ 1"),
    ([{"name": "a", "scale_in_window_s": -5}], "pools[0].scale_in_window_s: must be ≥ 0"),
    ([{"name": "a", "start_timeout_s": 0}], "pools[0].start_timeout_s: must be positive"),
    ([{"name": "a", "backend": "k8s"}], "pools[0].backend: must be one of local, ecs"),
    ([{"max": 3}], "pools[0].name: required"),
    ([{"name": "has space"}], "pools[0].name"),
    ([{"name": "a"}, {"name": "a"}], "pools[1].name: duplicate pool name 'a'"),
    ([{"name": "a", "job_types": "noop"}], "pools[0].job_types"),
    ([{"name": "a", "colour": "red"}], "pools[0].colour: unknown setting"),
    ([{"name": "a", "cluster": "c"}], "pools[0].cluster: only for backend ecs"),
    ([{"name": "a", "backend": "ecs", "cluster": "c", "task_definition": "t", "command": ["x"]}],
     "pools[0].command: only for backend local"),
    ([{"name": "a", "backend": "ecs", "task_definition": "t"}], "pools[0].cluster: required for backend ecs"),
    ([{"name": "a", "backend": "ecs", "cluster": "c"}], "pools[0].task_definition: required for backend ecs"),
    ([{"name": "a", "backend": "ecs", "cluster": "c", "task_definition": "t", "launch_type": "FARGATE",
       "capacity_provider": "FARGATE_SPOT"}], "pools[0].capacity_provider: give either"),
    ([{"name": "a", "backend": "ecs", "cluster": "c", "task_definition": "t", "subnets": "subnet-1"}],
     "pools[0].subnets"),
    ([{"name": "a", "command": []}], "pools[0].command"),
    ([{"name": "a", "env": {"X": ["list"]}}], "pools[0].env.X: must be a string"),
    ([], "pools: at least one pool"),
    ({"pool": []}, "SKYFLEET_MANAGER_POOLS: expected"),
])
def test_pool_errors_name_the_key(pools, expected):
    assert expected in error(pools)


def test_bad_json_and_bad_numbers_name_the_variable():
    assert "SKYFLEET_MANAGER_POOLS: not valid JSON" in error(SKYFLEET_MANAGER_POOLS="{nope")
    assert "SKYFLEET_MANAGER_TICK_S" in error(SKYFLEET_MANAGER_TICK_S="soon")
    assert "SKYFLEET_MANAGER_TICK_S" in error(SKYFLEET_MANAGER_TICK_S="0")
    assert "SKYFLEET_MANAGER_LEASE_TTL_S" in error(SKYFLEET_MANAGER_LEASE_TTL_S="2")


def test_local_workers_need_credentials():
    env = {k: v for k, v in BASE.items() if not k.startswith("SKYFLEET_WORKER_")}
    with pytest.raises(ConfigError, match=r"pools\[0\]\.env: SKYFLEET_WORKER_EMAIL is not set"):
        load_manager_settings(env)
    # ... which the pool's env may give instead.
    pools = [{"name": "a", "env": {"SKYFLEET_WORKER_EMAIL": "w@x", "SKYFLEET_WORKER_PASSWORD": "p"}}]
    assert load_manager_settings(env | {"SKYFLEET_MANAGER_POOLS": json.dumps(pools)}).pools[0].env


def test_a_full_ecs_pool(tmp_path: Path):
    pools = {"pools": [{
        "name": "gpu", "job_types": ["image.mosaic", "image.composite"], "backend": "ecs",
        "min": 1, "max": 20,
        "jobs_per_worker": 2, "scale_in_window_s": 300, "idle_to_zero_s": 900, "max_step": 10,
        "start_timeout_s": 240, "cluster": "skyfleet", "task_definition": "skyfleet-worker",
        "subnets": ["subnet-1"], "security_groups": ["sg-1"], "assign_public_ip": True, "container": "worker",
        "env": {"SKYFLEET_WORKER_CONCURRENCY": 2},
    }]}
    (pool,) = load(pools).pools
    assert pool.ecs is not None
    assert pool.ecs.launch_type == "FARGATE" and pool.ecs.subnets == ("subnet-1",)
    assert pool.ecs.assign_public_ip
    assert pool.job_types == ("image.mosaic", "image.composite") and not pool.serves("noop")
    assert dict(pool.env) == {"SKYFLEET_WORKER_CONCURRENCY": "2"}
    assert pool.report()["details"]["cluster"] == "skyfleet"


def test_pools_file_toml_and_json_then_inline(tmp_path: Path):
    toml = tmp_path / "pools.toml"
    toml.write_text('[[pools]]\nname = "fast"\njob_types = ["noop"]\nmax = 3\ncommand = "python -m worker"\n')
    settings = load([{"name": "slow", "max": 1}], SKYFLEET_MANAGER_POOLS_FILE=str(toml))
    assert [p.name for p in settings.pools] == ["fast", "slow"]
    assert settings.pools[0].command == ("python", "-m", "worker")
    as_json = tmp_path / "pools.json"
    as_json.write_text(json.dumps([{"name": "j", "max": 2, "min": 3}]))
    message = error(SKYFLEET_MANAGER_POOLS_FILE=str(as_json))
    assert "pools[0].max: must be ≥ min" in message
    assert "cannot read" in error(SKYFLEET_MANAGER_POOLS_FILE=str(tmp_path / "missing.json"))
    (tmp_path / "bad.toml").write_text("[[pools]\n")
    assert "cannot parse" in error(SKYFLEET_MANAGER_POOLS_FILE=str(tmp_path / "bad.toml"))
