"""``SKYFLEET_PUBLIC_URL`` and the other settings of issue 10 load from the environment and fail fast."""

from __future__ import annotations

import pytest

from api.config import load_settings
from settings import ConfigError


@pytest.fixture
def base(jwt_private_key: str) -> dict[str, str]:
    return {"DATABASE_URL": "postgresql://localhost/x", "SKYFLEET_JWT_PRIVATE_KEY": jwt_private_key}


def test_defaults(base):
    settings = load_settings(base)
    assert settings.public_url == ""
    assert settings.max_event_streams_per_user == 4
    assert settings.idempotency_key_ttl_s == 86400


@pytest.mark.parametrize("url", ["https://skyfleet.example.org", "https://skyfleet.example.org/",
                                 "http://10.0.0.5:8000/skyfleet"])
def test_public_urls_accepted(base, url):
    assert load_settings(base | {"SKYFLEET_PUBLIC_URL": url}).public_url == url


@pytest.mark.parametrize("url", ["skyfleet.example.org", "ftp://skyfleet.example.org", "https://",
                                 "https://user:pw@skyfleet.example.org", "https://skyfleet.example.org/?a=1",
                                 "https://skyfleet.example.org/#top"])
def test_bad_public_urls_name_the_variable(base, url):
    with pytest.raises(ConfigError, match="SKYFLEET_PUBLIC_URL"):
        load_settings(base | {"SKYFLEET_PUBLIC_URL": url})


@pytest.mark.parametrize(("name", "value"), [("SKYFLEET_MAX_EVENT_STREAMS_PER_USER", "0"),
                                             ("SKYFLEET_IDEMPOTENCY_KEY_TTL_S", "-1")])
def test_caps_and_ttls_must_be_positive(base, name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings(base | {name: value})
