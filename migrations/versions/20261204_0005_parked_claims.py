"""parked claims: remember when a worker's lease last lapsed

``workers.lapsed_at``: set by the rescuer when it takes a job back from the worker. A claim
the worker had parked before then (maybe a killed process's last request, still waiting in
the API) takes no job. Existing rows start with NULL (no lapse known).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 22:40:00
"""
from collections.abc import Sequence

from alembic import op
import sqlalchemy as sa

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('workers', sa.Column('lapsed_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column('workers', 'lapsed_at')
