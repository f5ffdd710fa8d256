"""The manager lease: which manager replica is active. One row, taken or renewed atomically.

A replica asks for the lease every tick. The upsert takes it when there is no row, when the
row has expired, or when this holder already has it (a renewal); otherwise it changes nothing
and the caller learns who holds it. Concurrent askers serialise on the row, so exactly one
wins however many race.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, text

from api.errors import Conflict

#: The row's key (one lease: one active manager for the whole fleet).
LEASE_NAME = "manager"


@dataclass(frozen=True)
class Lease:
    holder: str
    acquired_at: dt.datetime
    expires_at: dt.datetime
    #: Unexpired (by the database's clock, the one the upsert uses).
    active: bool = True


class LeaseHeld(Conflict):
    """Another manager holds the lease; wait for it to expire or be released."""


_TAKE = text("""
    INSERT INTO manager_leases AS l (name, holder, acquired_at, expires_at)
    VALUES (:name, :holder, now(), now() + make_interval(secs => :ttl_s))
    ON CONFLICT (name) DO UPDATE SET
        holder = excluded.holder,
        -- A renewal keeps the time it was first taken.
        acquired_at = CASE WHEN l.holder = excluded.holder AND l.expires_at > now() THEN l.acquired_at
                           ELSE now() END,
        expires_at = excluded.expires_at
    WHERE l.expires_at <= now() OR l.holder = excluded.holder
    RETURNING holder, acquired_at, expires_at
""")

_READ = text("""
    SELECT holder, acquired_at, expires_at, expires_at > now() AS active FROM manager_leases WHERE name = :name
""")

_RELEASE = text("""
    UPDATE manager_leases SET expires_at = now()
    WHERE name = :name AND holder = :holder AND expires_at > now()
""")


def take_lease(conn: Connection, holder: str, ttl_s: float) -> Lease:
    """Take or renew the lease for ``ttl_s`` seconds; :class:`LeaseHeld` (409) if another has it."""
    row = conn.execute(_TAKE, {"name": LEASE_NAME, "holder": holder, "ttl_s": ttl_s}).one_or_none()
    if row is not None:
        return Lease(row.holder, row.acquired_at, row.expires_at)
    held = conn.execute(_READ, {"name": LEASE_NAME}).one()
    raise LeaseHeld(f"the manager lease is held by {held.holder!r} until {held.expires_at.isoformat()}",
                    {"holder": held.holder, "expires_at": held.expires_at.isoformat()})


def release_lease(conn: Connection, holder: str) -> bool:
    """Give the lease up at once if ``holder`` has it (a manager shutting down); whether it did."""
    return bool(conn.execute(_RELEASE, {"name": LEASE_NAME, "holder": holder}).rowcount)


def current_lease(conn: Connection) -> Lease | None:
    """The lease row as it stands (expired or not), or None if no manager ever took it."""
    row = conn.execute(_READ, {"name": LEASE_NAME}).one_or_none()
    return None if row is None else Lease(row.holder, row.acquired_at, row.expires_at, row.active)
