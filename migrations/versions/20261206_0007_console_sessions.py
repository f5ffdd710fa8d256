"""console sessions: browsers signed in to the web console; attempts remember when they were due

``console_sessions``: one row per signed-in browser. The cookie carries a random id; the row
keeps only its SHA-256, the account, the CSRF token the page sends back with each
state-changing request, and when the session was last seen and ends. Signing out deletes the
row; so does deleting the account.

``job_attempts.due_at``: when the job was due for the attempt (its ``run_after`` when it was
claimed), so the console's charts can show pickup latency (``started_at - due_at``) from the
database; older attempts keep NULL. An index on ``ended_at`` serves those charts.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 01:00:00
"""
from collections.abc import Sequence

from alembic import op
import sqlalchemy as sa

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'console_sessions',
        sa.Column('id_hash', sa.String(length=64), nullable=False),
        sa.Column('user_id', sa.BigInteger(), nullable=False),
        sa.Column('csrf_token', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('last_seen_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_console_sessions_user_id_users'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id_hash', name=op.f('pk_console_sessions')),
    )
    op.create_index(op.f('ix_console_sessions_user_id'), 'console_sessions', ['user_id'], unique=False)
    op.create_index(op.f('ix_console_sessions_expires_at'), 'console_sessions', ['expires_at'], unique=False)
    op.add_column('job_attempts', sa.Column('due_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index(op.f('ix_job_attempts_ended_at'), 'job_attempts', ['ended_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_job_attempts_ended_at'), table_name='job_attempts')
    op.drop_column('job_attempts', 'due_at')
    op.drop_index(op.f('ix_console_sessions_expires_at'), table_name='console_sessions')
    op.drop_index(op.f('ix_console_sessions_user_id'), table_name='console_sessions')
    op.drop_table('console_sessions')
