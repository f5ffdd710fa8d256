"""Storage keys are safe relative paths; content types follow the extension."""

from __future__ import annotations

import pytest

from storage import MAX_KEY_LENGTH, InvalidKey, guess_content_type, validate_key


@pytest.mark.parametrize("key", [
    "uploads/42/0b5e6c1a-93f2-4a0e-bb1f-0d7a1c2e3f40/image.fits",
    "jobs/7/attempt-1/catalogue.ecsv",
    "a",
    "x/y=1,z+2@host_name.v1",
    "a" * MAX_KEY_LENGTH,
])
def test_valid_keys_pass_through(key):
    assert validate_key(key) == key


@pytest.mark.parametrize("key", [
    "",                               # empty
    "../secret",                      # traversal
    "jobs/../../etc/passwd",
    "jobs/./x",
    "..",
    "/etc/passwd",                    # absolute
    "jobs//x",                        # empty part
    "jobs/x/",                        # trailing slash
    "a" * (MAX_KEY_LENGTH + 1),       # too long
    "jobs/x y",                       # odd characters
    "jobs\\x",
    "jobs/x~1",
    "jobs/ré.fits",
    "jobs/x\n",
    "jobs/x\x00",
    "jobs/x?y",
    "jobs/%2e%2e",
])
def test_unsafe_keys_are_refused(key):
    with pytest.raises(InvalidKey):
        validate_key(key)


@pytest.mark.parametrize(("key", "expected"), [
    ("uploads/1/image.fits", "application/fits"),
    ("uploads/1/IMAGE.FIT", "application/fits"),
    ("uploads/1/image.fits.gz", "application/gzip"),
    ("jobs/1/result.json", "application/json"),
    ("jobs/1/catalogue.ecsv", "text/plain"),
    ("jobs/1/preview.png", "image/png"),
    ("jobs/1/blob", "application/octet-stream"),
    ("jobs/1/blob.unknownext", "application/octet-stream"),
])
def test_content_type_follows_the_extension(key, expected):
    assert guess_content_type(key) == expected
