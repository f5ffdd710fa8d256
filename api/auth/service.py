"""Accounts and tokens: password hashing, login, refresh-token rotation, service accounts."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, select, text, update
from sqlalchemy.exc import IntegrityError

from api.auth.models import RefreshToken, Role, User
from api.auth.sessions import close_user_sessions
from api.errors import Conflict, Unauthorized
from storage.cooperative import blocking

_hasher = PasswordHasher()
# Verified against when the account does not exist, so a login takes as long either way.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
SERVICE_EMAIL_DOMAIN = "service.skyfleet.internal"


def normalise_email(email: str) -> str:
    """Trimmed and lower-cased: emails are unique case-insensitively."""
    return email.strip().lower()


def hash_password(password: str) -> str:
    """Argon2id, memory-hard (off the event loop: storage/cooperative.py)."""
    return blocking(_hasher.hash, password)


def generate_password() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Account:
    id: int
    email: str
    name: str | None
    roles: list[str]
    is_service: bool
    created_at: dt.datetime
    disabled_at: dt.datetime | None
    #: Per-account overrides of the configured limits (None: the default applies).
    max_active_jobs: int | None = None
    min_priority: int | None = None


_USERS = User.__table__
_TOKENS = RefreshToken.__table__


def _account(user: Any) -> Account:
    return Account(user.id, user.email, user.name, list(user.roles), user.is_service,
                   user.created_at, user.disabled_at, user.max_active_jobs, user.min_priority)


def create_user(conn: Connection, email: str, password: str, roles: list[Role],
                name: str | None = None, is_service: bool = False) -> Account:
    """Create an account; 409 if the email is taken."""
    email = normalise_email(email)
    try:
        with conn.begin_nested():
            row = conn.execute(
                text("""INSERT INTO users (email, name, password_hash, roles, is_service)
                        VALUES (:email, :name, :hash, CAST(:roles AS varchar(16)[]), :service)
                        RETURNING id"""),
                {"email": email, "name": name, "hash": hash_password(password),
                 "roles": [r.value for r in roles], "service": is_service},
            ).scalar_one()
    except IntegrityError:
        raise Conflict(f"an account with email {email!r} already exists", details={"field": "email"}) from None
    return get_account(conn, row)


def get_account(conn: Connection, user_id: int) -> Account:
    return _account(conn.execute(select(_USERS).where(_USERS.c.id == user_id)).one())


@dataclass(frozen=True)
class Identity:
    """What an access token's subject may do right now (kept per process for a few seconds:
    :mod:`api.auth.identity_cache`)."""

    user_id: int
    roles: frozenset[str]


def active_identity(conn: Connection, user_id: int) -> Identity | None:
    """The account's current roles, or None when it is disabled or gone: one primary-key read."""
    row = conn.execute(
        text("SELECT roles FROM users WHERE id = :id AND disabled_at IS NULL"), {"id": user_id}
    ).one_or_none()
    return None if row is None else Identity(user_id, frozenset(row.roles))


def set_password(conn: Connection, user_id: int, password: str) -> None:
    conn.execute(update(User).where(User.id == user_id).values(password_hash=hash_password(password)))


def service_email(name: str) -> str:
    """The login of a service account named ``name``."""
    return f"{name}@{SERVICE_EMAIL_DOMAIN}"


def is_service_email(email: str) -> bool:
    """Whether ``email`` is in the domain reserved for service accounts (people cannot register there)."""
    return normalise_email(email).endswith("@" + SERVICE_EMAIL_DOMAIN)


def authenticate(conn: Connection, email: str, password: str) -> Account:
    """The account for these credentials, or 401 (the same error whatever was wrong)."""
    user = conn.execute(select(_USERS).where(_USERS.c.email == normalise_email(email))).one_or_none()
    try:
        blocking(_hasher.verify, user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        user = None
    if user is None or user.disabled_at is not None:
        raise Unauthorized("wrong email or password")
    return _account(user)


class TokenReuse(Unauthorized):
    """Refresh token reuse detected; every session of this login was revoked."""

    def __init__(self, family_id: uuid.UUID) -> None:
        super().__init__()
        #: The caller revokes this family in a transaction of its own (this one rolls back).
        self.family_id = family_id


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_refresh_token(conn: Connection, user_id: int, ttl_s: int, family_id: uuid.UUID | None = None,
                        rotated_from_id: int | None = None) -> str:
    """A new opaque refresh token; only its hash is stored."""
    token = secrets.token_urlsafe(32)
    conn.execute(
        text("""INSERT INTO refresh_tokens (user_id, token_hash, family_id, expires_at, rotated_from_id)
                VALUES (:user_id, :hash, :family, now() + make_interval(secs => :ttl), :parent)"""),
        {"user_id": user_id, "hash": _token_hash(token), "family": family_id or uuid.uuid4(),
         "ttl": ttl_s, "parent": rotated_from_id},
    )
    return token


def rotate_refresh_token(conn: Connection, token: str, ttl_s: int) -> tuple[Account, str]:
    """Exchange a refresh token for a new one (and its account).

    Presenting a token that was already rotated or revoked means it leaked: this raises
    :class:`TokenReuse`, and the caller revokes the whole family (every token descended
    from the same login) with :func:`revoke_family`.
    """
    row = conn.execute(
        select(_TOKENS).where(_TOKENS.c.token_hash == _token_hash(token)).with_for_update()
    ).one_or_none()
    if row is None or row.expires_at <= dt.datetime.now(dt.UTC):
        raise Unauthorized("invalid or expired refresh token")
    if row.revoked_at is not None:
        raise TokenReuse(row.family_id)
    account = get_account(conn, row.user_id)
    if account.disabled_at is not None:
        raise Unauthorized("account disabled")
    conn.execute(update(RefreshToken).where(RefreshToken.id == row.id).values(revoked_at=dt.datetime.now(dt.UTC)))
    return account, issue_refresh_token(conn, row.user_id, ttl_s, row.family_id, row.id)


def revoke_family(conn: Connection, family_id: uuid.UUID) -> None:
    conn.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=dt.datetime.now(dt.UTC))
    )


def revoke_user_tokens(conn: Connection, user_id: int) -> int:
    """Revoke every live refresh token of an account and end its console sessions (disable,
    password change); how many tokens."""
    close_user_sessions(conn, user_id)
    return conn.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=dt.datetime.now(dt.UTC))
    ).rowcount


def revoke_refresh_token(conn: Connection, token: str) -> None:
    """Logout: revoke the token's family (a no-op for an unknown token)."""
    family = conn.execute(
        select(RefreshToken.family_id).where(RefreshToken.token_hash == _token_hash(token))
    ).scalar_one_or_none()
    if family is not None:
        revoke_family(conn, family)


def ensure_account(conn: Connection, email: str, password: str | None, roles: list[Role],
                   name: str | None = None, is_service: bool = False) -> tuple[Account, str | None]:
    """Create the account if missing (password generated when None); reset its password if given.

    Returns the account and the password when one was generated (to show once).
    """
    email = normalise_email(email)
    existing = conn.execute(select(User.id).where(User.email == email)).scalar_one_or_none()
    if existing is not None:
        if password is not None:
            set_password(conn, existing, password)
        return get_account(conn, existing), None
    generated = password is None
    password = password or generate_password()
    return create_user(conn, email, password, roles, name, is_service), (password if generated else None)
