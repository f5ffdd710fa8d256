"""Settings fail fast and name the variable."""

from __future__ import annotations

import pytest

from api.config import ConfigError, load_settings
from worker.config import ConfigError as WorkerConfigError
from worker.config import load_worker_settings

BASE = {"DATABASE_URL": "postgresql://localhost/x", "SKYFLEET_JWT_SECRET": "s" * 40}


def test_defaults_and_overrides():
    settings = load_settings(BASE | {"SKYFLEET_LEASE_S": "12.5", "SKYFLEET_BACKGROUND": "off"})
    assert settings.lease_s == 12.5 and settings.background is False
    assert settings.heartbeat_interval_s == 2.0


@pytest.mark.parametrize(("env", "named"), [
    ({"DATABASE_URL": ""}, "DATABASE_URL"),
    ({"SKYFLEET_JWT_SECRET": "short"}, "SKYFLEET_JWT_SECRET"),
    ({"SKYFLEET_LEASE_S": "soon"}, "SKYFLEET_LEASE_S"),
    ({"SKYFLEET_LEASE_S": "-1"}, "SKYFLEET_LEASE_S"),
    ({"SKYFLEET_BACKGROUND": "maybe"}, "SKYFLEET_BACKGROUND"),
    ({"SKYFLEET_HEARTBEAT_INTERVAL_S": "30"}, "SKYFLEET_HEARTBEAT_INTERVAL_S"),
])
def test_bad_settings_name_their_variable(env, named):
    with pytest.raises(ConfigError, match=named):
        load_settings(BASE | env)


def test_worker_settings():
    env = {"SKYFLEET_API_URL": "http://api/", "SKYFLEET_WORKER_EMAIL": "w@x", "SKYFLEET_WORKER_PASSWORD": "p"}
    settings = load_worker_settings(env | {"SKYFLEET_WORKER_CONCURRENCY": "8"})
    assert settings.api_url == "http://api" and settings.concurrency == 8 and settings.claim_batch == 8
    assert set(settings.job_types) == {"noop", "sleep"}
    with pytest.raises(WorkerConfigError, match="SKYFLEET_WORKER_TYPES"):
        load_worker_settings(env | {"SKYFLEET_WORKER_TYPES": "teleport"})
    with pytest.raises(WorkerConfigError, match="SKYFLEET_API_URL"):
        load_worker_settings({})
    with pytest.raises(WorkerConfigError, match="SKYFLEET_WORKER_CONCURRENCY"):
        load_worker_settings(env | {"SKYFLEET_WORKER_CONCURRENCY": "many"})
