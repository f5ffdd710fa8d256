"""The password policy: a pure function, applied at registration and whenever an admin sets a password.

It follows NIST SP 800-63B rather than composition rules: long enough, not a known-common
password, not derived from the account's own email, not one character or a short pattern
repeated. Every problem is reported at once, so a client can show them all.
"""

from __future__ import annotations

from api.config import PASSWORD_MIN_LENGTH
from api.errors import ValidationFailed

#: Longer passwords only cost argon2 time; nobody needs more.
PASSWORD_MAX_LENGTH = 256

#: A short list of the passwords attackers try first (the top of public breach lists, and the
#: phrases people pick to satisfy a length rule). Compared after lower-casing and dropping
#: trailing digits and symbols, so "Password123!" counts as "password".
COMMON_PASSWORDS: frozenset[str] = frozenset({
    "password", "passw0rd", "p@ssw0rd", "p@ssword", "pass", "passwort", "motdepasse", "contrasena",
    "qwerty", "qwertyuiop", "qwertyuiopasdf", "qwertz", "azerty", "asdfghjkl", "asdfgh", "zxcvbnm",
    "qazwsx", "qazwsxedc", "1qaz2wsx", "1q2w3e4r", "1q2w3e4r5t", "1q2w3e4r5t6y", "q1w2e3r4t5y6",
    "abc", "abcdef", "abcdefgh", "abcdefghijkl", "abcd1234", "iloveyou", "letmein", "welcome",
    "welcometo", "admin", "administrator", "root", "changeme", "changeit", "default", "secret",
    "trustno1", "monkey", "dragon", "master", "sunshine", "princess", "football", "baseball",
    "superman", "batman", "starwars", "shadow", "whatever", "freedom", "computer", "internet",
    "login", "hello", "helloworld", "correcthorsebatterystaple", "correct horse battery staple",
    "mypassword", "yourpassword", "thisismypassword", "newpassword", "temppassword", "skyfleet",
    "iloveyouforever", "letmeinplease", "passwordpassword",
})

_DIGITS_AND_SYMBOLS = "0123456789!@#$%^&*()-_=+[]{};:'\",.<>/?\\|`~ "


def _is_common(password: str) -> bool:
    lowered = password.lower()
    if lowered in COMMON_PASSWORDS or lowered.strip(_DIGITS_AND_SYMBOLS) in COMMON_PASSWORDS:
        return True
    # All digits: dates, phone numbers and "123456789012" fall to a dictionary at once.
    return lowered.isdigit()


def _is_repetition(password: str) -> bool:
    """One character repeated, or a unit repeated at least three times, the last copy possibly
    cut short ("aaaa…", "abcabcabc…", "12341234123412")."""
    n = len(password)
    if n < 2:
        return False
    # A string has period p when it equals itself shifted by p characters.
    return any(password[p:] == password[:-p] for p in range(1, max(1, n // 3) + 1))


def _is_mostly_email(password: str, email: str) -> bool:
    """More than half of the password is the email address or its local part."""
    lowered = password.lower()
    email = email.strip().lower()
    local = email.split("@", 1)[0]
    rest = lowered
    # The whole address first, so its local part does not leave "@example.org" behind.
    for part in (email, local):
        if len(part) >= 3:
            rest = rest.replace(part, "")
    return len(rest) * 2 < len(lowered)


def check_password(password: str, email: str, min_length: int = PASSWORD_MIN_LENGTH) -> list[str]:
    """Every way ``password`` breaks the policy for the account ``email`` (empty: acceptable)."""
    problems: list[str] = []
    if len(password) < min_length:
        problems.append(f"must be at least {min_length} characters long")
    if len(password) > PASSWORD_MAX_LENGTH:
        # Nothing else is worth checking (or spending time on) in a megabyte of "password".
        return [f"must be at most {PASSWORD_MAX_LENGTH} characters long"]
    if _is_repetition(password):
        problems.append("must not be one character or a short pattern repeated")
    if _is_mostly_email(password, email):
        problems.append("must not be mostly your email address")
    if _is_common(password):
        problems.append("is one of the most commonly used passwords")
    return problems


def require_acceptable_password(password: str, email: str, min_length: int = PASSWORD_MIN_LENGTH) -> None:
    """422 naming the ``password`` field and listing every problem, unless the policy is met."""
    problems = check_password(password, email, min_length)
    if problems:
        raise ValidationFailed(f"Validation failed: password: {'; '.join(problems)}",
                               details={"location": "json", "fields": {"password": problems}})
