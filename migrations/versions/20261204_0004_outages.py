"""outages: idempotent submissions, and no timestamp the API cannot read back

- ``idempotency_keys``: one row per ``Idempotency-Key`` a user sent with a submission, written
  in the submission's own transaction; pruned after a day.
- Jobs created before submissions were bounded could hold a ``run_after`` that PostgreSQL
  stores but Python cannot represent (year 0 or before, after 9999): such rows broke every
  listing that contained them. They are clamped into the range the API now accepts.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 19:05:00
"""
from collections.abc import Sequence

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The range api.validation accepts for any timestamp (MIN_DATETIME, MAX_DATETIME).
CLAMP_RUN_AFTER = """
UPDATE jobs SET run_after = least(greatest(run_after, TIMESTAMPTZ '1970-01-01 00:00:00+00'),
                                  TIMESTAMPTZ '2999-12-31 23:59:59+00')
WHERE run_after < TIMESTAMPTZ '1970-01-01 00:00:00+00' OR run_after > TIMESTAMPTZ '2999-12-31 23:59:59+00'
"""


def upgrade() -> None:
    op.create_table('idempotency_keys',
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('status_code', sa.SmallInteger(), nullable=False),
    sa.Column('submitted', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_idempotency_keys_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'key', name=op.f('pk_idempotency_keys'))
    )
    op.create_index(op.f('ix_idempotency_keys_created_at'), 'idempotency_keys', ['created_at'], unique=False)
    op.execute(CLAMP_RUN_AFTER)


def downgrade() -> None:
    op.drop_index(op.f('ix_idempotency_keys_created_at'), table_name='idempotency_keys')
    op.drop_table('idempotency_keys')
