"""The password policy: a pure function listing every problem."""

from __future__ import annotations

import pytest

from api.auth.passwords import PASSWORD_MAX_LENGTH, check_password

EMAIL = "alice.smith@example.org"


@pytest.mark.parametrize("password", [
    "correct horse battery",
    "Tr0ub4dor&3-but-longer",
    "alice and a long sentence",  # contains the local part, but it is not most of it
    "ünïcödé pässwörd ✓",
    "x" * 11 + "y",
])
def test_acceptable_passwords(password):
    assert check_password(password, EMAIL) == []


def test_too_short_names_the_minimum():
    assert check_password("short pass", EMAIL) == ["must be at least 12 characters long"]
    assert check_password("sixteen chars ok", EMAIL, min_length=20) == ["must be at least 20 characters long"]


def test_too_long_is_reported_alone():
    assert check_password("a" * (PASSWORD_MAX_LENGTH + 1), EMAIL) == [
        f"must be at most {PASSWORD_MAX_LENGTH} characters long"]
    assert check_password("a1" * (PASSWORD_MAX_LENGTH // 2), EMAIL) != []  # 256: not too long, but a pattern
    assert "characters long" not in " ".join(check_password("q7Zr" + "x9" * 126, EMAIL))


@pytest.mark.parametrize("password", ["aaaaaaaaaaaaaaaa", "............", "abcabcabcabc", "12341234123412"])
def test_repetitions(password):
    assert "must not be one character or a short pattern repeated" in check_password(password, EMAIL)


@pytest.mark.parametrize("password", [
    "alice.smith@example.org", "ALICE.SMITH@EXAMPLE.ORG!", "alice.smith2024", "alice.smithalice.smith",
])
def test_mostly_the_email(password):
    assert "must not be mostly your email address" in check_password(password, EMAIL)


@pytest.mark.parametrize("password", [
    "passwordpassword", "Password123456!", "qwertyuiop1234", "123456789012", "iloveyou2024!!", "CorrectHorseBatteryStaple",
])
def test_common_passwords(password):
    assert "is one of the most commonly used passwords" in check_password(password, EMAIL)


def test_every_problem_is_listed():
    problems = check_password("aaaa", "aaaa@example.org")
    assert problems == [
        "must be at least 12 characters long",
        "must not be one character or a short pattern repeated",
        "must not be mostly your email address",
    ]


def test_short_local_parts_do_not_count_as_the_email():
    # "al@…": a two-letter local part says nothing about the password containing it.
    assert check_password("alalalal-total-sentence", "al@example.org") == []
