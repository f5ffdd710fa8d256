"""Deployment settings from CDK context, and the image's entrypoint: pure functions, no aws_cdk needed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

INFRA = Path(__file__).resolve().parents[2] / "infra"
sys.path.insert(0, str(INFRA))

from skyfleet_infra.settings import SettingsError, default_pools, load_settings


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"infra_{name}", INFRA / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_default_pools_cover_every_job_type_once():
    from jobtypes.catalogue import CATALOGUE

    pools = default_pools()
    assert [p.name for p in pools] == ["general", "large"]
    served = [t for p in pools for t in p.job_types]
    assert sorted(served) == sorted(CATALOGUE)
    large = pools[1]
    assert all(CATALOGUE[t].resource_class == "large" for t in large.job_types)
    assert large.memory_mib > pools[0].memory_mib and large.cpu > pools[0].cpu


def test_context_pools_and_values_are_parsed():
    context = {"pools": '[{"name": "gpu-free", "job_types": ["noop"], "cpu": 2048, "memory_mib": 8192, '
                        '"max": 3, "concurrency": 2, "ephemeral_storage_gib": 50}]',
               "api_count": "3", "db_multi_az": "true", "certificate_arn": "arn:aws:acm:eu-west-1:1:certificate/x"}
    settings = load_settings(context.get)
    (pool,) = settings.pools
    assert (pool.name, pool.cpu, pool.memory_mib, pool.min, pool.max, pool.concurrency) == (
        "gpu-free", 2048, 8192, 0, 3, 2)
    assert pool.ephemeral_storage_gib == 50
    assert settings.api_count == 3 and settings.db_multi_az is True and settings.db_deletion_protection is True
    assert settings.registration == "closed" and settings.certificate_arn


@pytest.mark.parametrize(("context", "names"), [
    ({"pools": '[{"name": "Big", "job_types": ["noop"]}]'}, "pools[0].name"),
    ({"pools": '[{"name": "a", "job_types": []}]'}, "pools[0].job_types"),
    ({"pools": '[{"name": "a", "job_types": ["noop"], "cpu": 1024, "memory_mib": 512}]'}, "pools[0].memory_mib"),
    ({"pools": '[{"name": "a", "job_types": ["noop"], "cpu": 300}]'}, "pools[0].cpu"),
    ({"pools": '[{"name": "a", "job_types": ["noop"], "min": 5, "max": 2}]'}, "pools[0].min"),
    ({"pools": '[{"name": "a", "job_types": ["noop"]}, {"name": "a", "job_types": ["sleep"]}]'}, "unique"),
    ({"pools": "[not json"}, "'pools' is not valid JSON"),
    ({"api_count": "two"}, "'api_count'"),
    ({"db_multi_az": "maybe"}, "'db_multi_az'"),
    ({"registration": "ajar"}, "'registration'"),
    ({"api_environment": '{"DATABASE_URL": "x"}'}, "'api_environment'"),
])
def test_bad_context_fails_naming_the_key(context, names):
    with pytest.raises(SettingsError, match=names.replace("[", r"\[").replace("]", r"\]")):
        load_settings(context.get)


def test_entrypoint_joins_database_url_with_escaped_credentials():
    entrypoint = _module("entrypoint")
    env = {"SKYFLEET_DB_HOST": "db.internal", "SKYFLEET_DB_PORT": "5433", "SKYFLEET_DB_NAME": "skyfleet",
           "SKYFLEET_DB_USER": "sky", "SKYFLEET_DB_PASSWORD": "p@ss/w:rd", "SKYFLEET_DB_SSLMODE": "require"}
    assert entrypoint.database_url(env) == "postgresql://sky:p%40ss%2Fw%3Ard@db.internal:5433/skyfleet?sslmode=require"
    del env["SKYFLEET_DB_PASSWORD"]
    assert entrypoint.database_url(env) is None
