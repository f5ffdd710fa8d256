"""Settings fail fast and name the variable."""

from __future__ import annotations

import pytest

from api.config import load_settings
from settings import ConfigError
from worker.config import load_worker_settings


@pytest.fixture
def base(jwt_private_key: str) -> dict[str, str]:
    return {"DATABASE_URL": "postgresql://localhost/x", "SKYFLEET_JWT_PRIVATE_KEY": jwt_private_key}


def test_defaults_and_overrides(base):
    settings = load_settings(base | {"SKYFLEET_LEASE_S": "12.5", "SKYFLEET_BACKGROUND": "off"})
    assert settings.lease_s == 12.5 and settings.background is False
    assert settings.heartbeat_interval_s == 2.0


@pytest.mark.parametrize(("env", "named"), [
    ({"DATABASE_URL": ""}, "DATABASE_URL"),
    ({"SKYFLEET_JWT_PRIVATE_KEY": "not a key"}, "SKYFLEET_JWT_PRIVATE_KEY"),
    ({"SKYFLEET_JWT_PRIVATE_KEY": ""}, "SKYFLEET_JWT_PRIVATE_KEY"),
    ({"SKYFLEET_STORAGE_BACKEND": "s3"}, "SKYFLEET_S3_BUCKET"),
    ({"SKYFLEET_REGISTRATION": "maybe"}, "SKYFLEET_REGISTRATION"),
    ({"SKYFLEET_USER_MIN_PRIORITY": "12"}, "SKYFLEET_USER_MIN_PRIORITY"),
    ({"SKYFLEET_LEASE_S": "soon"}, "SKYFLEET_LEASE_S"),
    ({"SKYFLEET_LEASE_S": "-1"}, "SKYFLEET_LEASE_S"),
    ({"SKYFLEET_BACKGROUND": "maybe"}, "SKYFLEET_BACKGROUND"),
    ({"SKYFLEET_HEARTBEAT_INTERVAL_S": "30"}, "SKYFLEET_HEARTBEAT_INTERVAL_S"),
])
def test_bad_settings_name_their_variable(base, env, named):
    with pytest.raises(ConfigError, match=named):
        load_settings(base | env)


def test_signing_key_from_a_file_and_lists(base, jwt_key_file):
    env = {k: v for k, v in base.items() if k != "SKYFLEET_JWT_PRIVATE_KEY"}
    settings = load_settings(env | {"SKYFLEET_JWT_PRIVATE_KEY_FILE": jwt_key_file,
                                    "SKYFLEET_CORS_ORIGINS": "https://a.example, https://b.example"})
    assert settings.jwt_private_key.startswith("-----BEGIN PRIVATE KEY-----")
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    with pytest.raises(ConfigError, match="SKYFLEET_JWT_PRIVATE_KEY_FILE"):
        load_settings(env | {"SKYFLEET_JWT_PRIVATE_KEY_FILE": "/nonexistent/key.pem"})


def test_worker_settings():
    env = {"SKYFLEET_API_URL": "http://api/", "SKYFLEET_WORKER_EMAIL": "w@x", "SKYFLEET_WORKER_PASSWORD": "p"}
    settings = load_worker_settings(env | {"SKYFLEET_WORKER_CONCURRENCY": "8"})
    assert settings.api_url == "http://api" and settings.concurrency == 8 and settings.claim_batch == 8
    assert set(settings.job_types) == {"noop", "sleep", "fits.inspect", "table.page", "spectrum.extract",
                                       "region.stats", "sources.detect", "image.composite", "image.mosaic",
                                       "fits.thumbnail"}
    assert settings.storage_backend == "local" and settings.memory_budget_mb == 2048 and settings.pool is None
    on_ecs = load_worker_settings(env | {
        "SKYFLEET_WORKER_POOL": "large", "SKYFLEET_WORKER_REVISION": "skyfleet-worker:7",
        "ECS_CONTAINER_METADATA_URI_V4": "http://169.254.170.2/v4/x", "SKYFLEET_STORAGE_BACKEND": "s3",
        "SKYFLEET_S3_BUCKET": "b", "SKYFLEET_ALLOWED_NETWORKS": "10.0.0.0/8, data.example.org"})
    assert (on_ecs.pool, on_ecs.revision, on_ecs.s3_bucket) == ("large", "skyfleet-worker:7", "b")
    assert on_ecs.ecs_metadata_uri == "http://169.254.170.2/v4/x"
    assert on_ecs.allowed_networks == ("10.0.0.0/8", "data.example.org")
    with pytest.raises(ConfigError, match="SKYFLEET_S3_BUCKET"):
        load_worker_settings(env | {"SKYFLEET_STORAGE_BACKEND": "s3"})
    with pytest.raises(ConfigError, match="SKYFLEET_STORAGE_BACKEND"):
        load_worker_settings(env | {"SKYFLEET_STORAGE_BACKEND": "ftp"})
    with pytest.raises(ConfigError, match="SKYFLEET_WORKER_MEMORY_MB"):
        load_worker_settings(env | {"SKYFLEET_WORKER_MEMORY_MB": "1"})
    with pytest.raises(ConfigError, match="SKYFLEET_WORKER_TYPES"):
        load_worker_settings(env | {"SKYFLEET_WORKER_TYPES": "teleport"})
    with pytest.raises(ConfigError, match="SKYFLEET_API_URL"):
        load_worker_settings({})
    with pytest.raises(ConfigError, match="SKYFLEET_WORKER_CONCURRENCY"):
        load_worker_settings(env | {"SKYFLEET_WORKER_CONCURRENCY": "many"})
