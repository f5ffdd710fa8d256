"""Signed links for local downloads: valid until they expire, and only for the key they name."""

from __future__ import annotations

import pytest

from storage.signing import sign, verify

SECRET = b"0123456789abcdef0123456789abcdef"
KEY = "jobs/7/attempt-1/catalogue.ecsv"
NOW = 1_800_000_000
EXPIRES = NOW + 300


def test_a_fresh_link_verifies():
    signature = sign(KEY, EXPIRES, SECRET)
    assert verify(KEY, EXPIRES, signature, SECRET, now=NOW)
    assert verify(KEY, EXPIRES, signature, SECRET, now=EXPIRES - 1)


def test_signature_is_url_safe_and_unpadded():
    signature = sign(KEY, EXPIRES, SECRET)
    assert len(signature) == 43  # 32 bytes of HMAC-SHA256, base64 without "="
    assert set(signature) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_an_expired_link_fails():
    signature = sign(KEY, EXPIRES, SECRET)
    assert not verify(KEY, EXPIRES, signature, SECRET, now=EXPIRES)
    assert not verify(KEY, EXPIRES, signature, SECRET, now=EXPIRES + 3600)


def test_without_now_the_clock_decides():
    past, future = 1_000_000_000, 4_000_000_000  # 2001 and 2096
    assert not verify(KEY, past, sign(KEY, past, SECRET), SECRET)
    assert verify(KEY, future, sign(KEY, future, SECRET), SECRET)


@pytest.mark.parametrize("signature", [
    "",
    "x",
    "A" * 43,
    "ré-not-ascii",
])
def test_a_forged_signature_fails(signature):
    assert not verify(KEY, EXPIRES, signature, SECRET, now=NOW)


def test_a_tampered_signature_fails():
    signature = sign(KEY, EXPIRES, SECRET)
    flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
    assert not verify(KEY, EXPIRES, flipped, SECRET, now=NOW)
    assert not verify(KEY, EXPIRES, signature + "=", SECRET, now=NOW)


def test_a_link_does_not_serve_another_key_or_a_later_expiry():
    signature = sign(KEY, EXPIRES, SECRET)
    assert not verify("jobs/7/attempt-1/other.ecsv", EXPIRES, signature, SECRET, now=NOW)
    assert not verify(KEY, EXPIRES + 86400, signature, SECRET, now=NOW)


def test_another_secret_fails():
    signature = sign(KEY, EXPIRES, SECRET)
    assert not verify(KEY, EXPIRES, signature, b"another secret", now=NOW)


def test_an_empty_secret_is_refused():
    with pytest.raises(ValueError, match="secret"):
        sign(KEY, EXPIRES, b"")
