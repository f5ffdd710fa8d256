"""The one settings loader: types, bounds, the settings file, secrets from files, named errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from api.config import load_settings
from manager.config import load_manager_settings
from settings import CONFIG_FILE_VAR, ConfigError, load, setting
from worker.config import load_worker_settings


@dataclass(frozen=True, kw_only=True)
class Example:
    url: str = setting(env="EXAMPLE_URL")
    count: int = setting(3, minimum=1, maximum=10)
    ratio: float = 0.5
    offset: float = setting(0.0, minimum=None)
    enabled: bool = False
    names: tuple[str, ...] = ()
    where: Path = setting(".", env="EXAMPLE_WHERE")
    mode: str = setting("fast", choices=("fast", "slow"))
    token: str | None = setting(None, secret=True)

    def check(self) -> None:
        if self.mode == "slow" and self.count > 5:
            raise ConfigError("X_COUNT must be at most 5 when X_MODE=slow")


def test_types_defaults_and_the_prefix():
    loaded = load(Example, {"EXAMPLE_URL": "http://x", "X_COUNT": "7", "X_RATIO": "2", "X_ENABLED": "yes",
                            "X_NAMES": " a, b ,,", "EXAMPLE_WHERE": "/tmp", "X_OFFSET": "-2.5"}, prefix="X_")
    assert (loaded.count, loaded.ratio, loaded.enabled, loaded.names) == (7, 2.0, True, ("a", "b"))
    assert loaded.where == Path("/tmp") and loaded.offset == -2.5 and loaded.token is None
    assert load(Example, {"EXAMPLE_URL": "http://x", "X_COUNT": ""}, prefix="X_").count == 3  # empty: unset


@pytest.mark.parametrize(("env", "message"), [
    ({}, "EXAMPLE_URL is not set"),
    ({"X_COUNT": "many"}, "X_COUNT must be an integer, got 'many'"),
    ({"X_COUNT": "2.5"}, "X_COUNT must be an integer"),
    ({"X_COUNT": "0"}, "X_COUNT must be at least 1"),
    ({"X_COUNT": "11"}, "X_COUNT must be at most 10"),
    ({"X_RATIO": "-1"}, "X_RATIO must not be negative"),
    ({"X_RATIO": "nan"}, "X_RATIO must be a finite number"),
    ({"X_ENABLED": "maybe"}, "X_ENABLED must be a bool"),
    ({"X_MODE": "medium"}, "X_MODE must be one of fast, slow"),
    ({"X_MODE": "slow", "X_COUNT": "6"}, "X_COUNT must be at most 5 when X_MODE=slow"),
])
def test_errors_name_the_variable(env, message):
    base = {} if not env else {"EXAMPLE_URL": "http://x"}
    with pytest.raises(ConfigError, match=message):
        load(Example, base | env, prefix="X_")


def test_a_settings_file_under_the_environment(tmp_path: Path):
    path = tmp_path / "skyfleet.toml"
    path.write_text('EXAMPLE_URL = "http://file"\nX_COUNT = 4\nX_NAMES = ["a", "b"]\nX_ENABLED = true\n'
                    'SOMEONE_ELSES = 1\n')
    loaded = load(Example, {CONFIG_FILE_VAR: str(path), "X_COUNT": "9"}, prefix="X_")
    assert (loaded.url, loaded.count, loaded.names, loaded.enabled) == ("http://file", 9, ("a", "b"), True)
    path.write_text("X_COUNT = 40\n")
    with pytest.raises(ConfigError, match=r"X_COUNT \(in .*skyfleet.toml\) must be at most 10"):
        load(Example, {CONFIG_FILE_VAR: str(path), "EXAMPLE_URL": "u"}, prefix="X_")
    path.write_text('X_COUNT = "4"\nX_RATIO = true\n')
    with pytest.raises(ConfigError, match="X_RATIO .* must be a number"):
        load(Example, {CONFIG_FILE_VAR: str(path), "EXAMPLE_URL": "u"}, prefix="X_")
    path.write_text("X_COUNT = [")
    with pytest.raises(ConfigError, match=f"{CONFIG_FILE_VAR} .* not valid TOML"):
        load(Example, {CONFIG_FILE_VAR: str(path), "EXAMPLE_URL": "u"}, prefix="X_")
    with pytest.raises(ConfigError, match=f"{CONFIG_FILE_VAR}: cannot read"):
        load(Example, {CONFIG_FILE_VAR: str(tmp_path / "missing.toml"), "EXAMPLE_URL": "u"}, prefix="X_")


def test_a_secret_from_a_file_and_never_in_the_repr(tmp_path: Path):
    secret = tmp_path / "token"
    secret.write_text("s3cret\n")
    loaded = load(Example, {"EXAMPLE_URL": "u", "X_TOKEN_FILE": str(secret)}, prefix="X_")
    assert loaded.token == "s3cret" and "s3cret" not in repr(loaded)
    with pytest.raises(ConfigError, match="X_TOKEN_FILE cannot be read"):
        load(Example, {"EXAMPLE_URL": "u", "X_TOKEN_FILE": str(tmp_path / "none")}, prefix="X_")


def test_every_component_reads_the_same_file(tmp_path: Path, jwt_private_key: str):
    """One file for the whole fleet: each component takes its own keys (and the shared ones)."""
    path = tmp_path / "skyfleet.toml"
    path.write_text('SKYFLEET_API_URL = "http://api:8000/"\nSKYFLEET_STORAGE_DIR = "/srv/skyfleet"\n'
                    'SKYFLEET_LEASE_S = 20.0\nSKYFLEET_WORKER_CONCURRENCY = 2\nSKYFLEET_MANAGER_TICK_S = 2\n'
                    'SKYFLEET_WORKER_EMAIL = "w@x"\nSKYFLEET_MANAGER_EMAIL = "m@x"\n')
    (tmp_path / "pw").write_text("pw")
    env = {CONFIG_FILE_VAR: str(path), "SKYFLEET_WORKER_PASSWORD_FILE": str(tmp_path / "pw"),
           "SKYFLEET_MANAGER_PASSWORD": "mp", "DATABASE_URL": "postgresql://db/x",
           "SKYFLEET_JWT_PRIVATE_KEY": jwt_private_key}
    api = load_settings(env)
    worker = load_worker_settings(env)
    manager = load_manager_settings(env)
    assert (api.lease_s, api.storage_dir) == (20.0, "/srv/skyfleet")
    assert (worker.api_url, worker.concurrency, worker.claim_batch, worker.password) == ("http://api:8000", 2, 2, "pw")
    assert worker.storage_dir == "/srv/skyfleet"
    assert (manager.api_url, manager.tick_s, manager.lease_ttl_s, manager.email) == ("http://api:8000", 2.0, 6.0, "m@x")


def test_skyfleet_run_checks_every_components_settings_first(jwt_private_key: str):
    from api.launcher import check_settings

    api_env = {"DATABASE_URL": "postgresql://db/x", "SKYFLEET_JWT_PRIVATE_KEY": jwt_private_key}
    services = {"SKYFLEET_API_URL": "http://127.0.0.1:8000", "SKYFLEET_MANAGER_EMAIL": "m@x",
                "SKYFLEET_MANAGER_PASSWORD": "m", "SKYFLEET_WORKER_EMAIL": "w@x", "SKYFLEET_WORKER_PASSWORD": "w"}
    check_settings(api_env, services)
    with pytest.raises(ConfigError, match="SKYFLEET_LEASE_S must be positive"):
        check_settings(api_env | {"SKYFLEET_LEASE_S": "0"}, None)
    with pytest.raises(ConfigError, match="SKYFLEET_WORKER_CONCURRENCY must be at least 1"):
        check_settings(api_env, services | {"SKYFLEET_WORKER_CONCURRENCY": "0"})
    with pytest.raises(ConfigError, match="SKYFLEET_MANAGER_TICK_S must be positive"):
        check_settings(api_env, services | {"SKYFLEET_MANAGER_TICK_S": "0"})
