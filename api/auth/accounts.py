"""Account administration: list, change, disable and enable accounts; rotate service passwords.

People hold the roles ADMIN and USER; service accounts (one per worker or manager deployment)
hold WORKER and MANAGER. Disabling an account revokes its refresh tokens, and its access
tokens stop working within seconds (the role check reads the account, cached per process for
5 s: api/auth/identity_cache.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text, update

from api.auth.models import Role, User
from api.auth.service import Account, generate_password, hash_password, revoke_user_tokens
from api.database import contains_pattern
from api.errors import Conflict, NotFound, ValidationFailed
from api.pagination import offset

SORTABLE = ("created_at", "email")
PERSON_ROLES = frozenset({Role.ADMIN.value, Role.USER.value, Role.VIEWER.value})
SERVICE_ROLES = frozenset({Role.WORKER.value, Role.MANAGER.value})

_COLUMNS = "id, email, name, roles, is_service, created_at, disabled_at, max_active_jobs, min_priority"


@dataclass(frozen=True)
class AccountFilter:
    """Which accounts a listing shows (None: any)."""

    role: str | None = None
    is_service: bool | None = None
    disabled: bool | None = None
    #: A substring of the email, case-insensitive.
    q: str | None = None


def _row_account(row: Any) -> Account:
    return Account(row.id, row.email, row.name, list(row.roles), row.is_service, row.created_at,
                   row.disabled_at, row.max_active_jobs, row.min_priority)


def list_accounts(conn: Connection, where: AccountFilter, page: int, limit: int,
                  sort: str) -> tuple[list[Account], int]:
    """One page of accounts matching ``where``, and how many match in all."""
    column = sort.lstrip("-")
    if column not in SORTABLE:
        raise ValueError(f"cannot sort by {sort!r}")
    direction = "DESC" if sort.startswith("-") else "ASC"
    # `column` and `direction` come from the closed list above, never from raw input.
    condition = """(CAST(:role AS varchar) IS NULL OR CAST(:role AS varchar) = ANY(roles))
        AND (CAST(:is_service AS boolean) IS NULL OR is_service = :is_service)
        AND (CAST(:disabled AS boolean) IS NULL OR (disabled_at IS NOT NULL) = :disabled)
        AND (CAST(:q AS text) IS NULL OR email LIKE :q ESCAPE '\\')"""
    params = {"role": where.role, "is_service": where.is_service, "disabled": where.disabled,
              "q": contains_pattern(where.q.lower() if where.q else None)}
    total = conn.execute(text(f"SELECT count(*) FROM users WHERE {condition}"), params).scalar_one()
    rows = conn.execute(
        text(f"""SELECT {_COLUMNS} FROM users WHERE {condition}
                 ORDER BY {column} {direction}, id {direction} LIMIT :limit OFFSET :offset"""),
        params | {"limit": limit, "offset": offset(page, limit)},
    ).all()
    return [_row_account(row) for row in rows], int(total)


def find_account(conn: Connection, user_id: int) -> Account:
    """The account, or 404."""
    row = conn.execute(text(f"SELECT {_COLUMNS} FROM users WHERE id = :id"), {"id": user_id}).one_or_none()
    if row is None:
        raise NotFound(f"account {user_id} not found")
    return _row_account(row)


def _check_roles(account: Account, roles: list[str], acting_user_id: int) -> None:
    allowed = SERVICE_ROLES if account.is_service else PERSON_ROLES
    if not set(roles) <= allowed:
        kind = "a service account" if account.is_service else "a person's account"
        raise ValidationFailed(
            f"Validation failed: roles: {kind} may only hold {', '.join(sorted(allowed))}",
            details={"location": "json", "fields": {"roles": [f"{kind} may only hold {sorted(allowed)}"]}},
        )
    if account.id == acting_user_id and Role.ADMIN.value not in roles:
        # Otherwise the last admin could lock everyone out of administration.
        raise Conflict("you cannot remove ADMIN from your own account")


def update_account(conn: Connection, user_id: int, changes: dict[str, Any], acting_user_id: int) -> Account:
    """Change name, roles, limits (None: back to the default) or password; 404, 409 or 422.

    A new password (checked against the policy by the caller) revokes every refresh token.
    """
    account = find_account(conn, user_id)
    values: dict[str, Any] = {k: changes[k] for k in ("name", "max_active_jobs", "min_priority") if k in changes}
    if "roles" in changes:
        roles = sorted({str(role) for role in changes["roles"]})
        _check_roles(account, roles, acting_user_id)
        values["roles"] = roles
    if changes.get("password") is not None:
        values["password_hash"] = hash_password(changes["password"])
    if values:
        conn.execute(update(User).where(User.id == user_id).values(**values))
    if "password_hash" in values:
        revoke_user_tokens(conn, user_id)
    return find_account(conn, user_id)


def disable_account(conn: Connection, user_id: int, acting_user_id: int) -> Account:
    """Disable the account (kept, with its jobs) and revoke its refresh tokens; 409 for yourself."""
    if user_id == acting_user_id:
        raise Conflict("you cannot disable your own account")
    changed = conn.execute(
        text("UPDATE users SET disabled_at = coalesce(disabled_at, now()) WHERE id = :id"), {"id": user_id}
    ).rowcount
    if not changed:
        raise NotFound(f"account {user_id} not found")
    revoke_user_tokens(conn, user_id)
    return find_account(conn, user_id)


def enable_account(conn: Connection, user_id: int) -> Account:
    """Enable a disabled account (it logs in again; old refresh tokens stay revoked)."""
    changed = conn.execute(text("UPDATE users SET disabled_at = NULL WHERE id = :id"), {"id": user_id}).rowcount
    if not changed:
        raise NotFound(f"account {user_id} not found")
    return find_account(conn, user_id)


def rotate_service_password(conn: Connection, user_id: int) -> tuple[Account, str]:
    """A new generated password for a service account (to show once); its refresh tokens are revoked.

    Access tokens already issued live out their short lifetime; disable the account to cut
    them off at once.
    """
    account = find_account(conn, user_id)
    if not account.is_service:
        raise NotFound(f"service account {user_id} not found")
    password = generate_password()
    conn.execute(update(User).where(User.id == user_id).values(password_hash=hash_password(password)))
    revoke_user_tokens(conn, user_id)
    return find_account(conn, user_id), password
