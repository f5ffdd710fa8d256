"""lease on the job row: four row writes per job, a fence token never handed out twice

- ``jobs`` carries its live attempt: ``lease_token`` (a random UUID drawn at each claim: the
  fence), ``worker_id``, ``lease_expires_at``, ``heartbeat_at``; and the creating
  submission: ``request_id`` (from the ``job_requests`` sequence), ``callback_url``,
  ``callback_token``.
- ``job_attempts`` replaces ``job_assignments`` and ``job_results``: one row per attempt,
  written when it ends, carrying its outcome, error and result.
- ``job_requests`` keeps only the submissions that joined an active job or reused a result;
  a creating submission's row moves onto its job (a creator's callback delivery then has no
  ``job_request_id``).
- the ``jobs_changed`` trigger also writes the creator's callback from the job row.

Existing data moves over: every finished attempt becomes a ``job_attempts`` row with its
result; a live lease moves onto its job with a fresh token. A worker still running an attempt
across the upgrade holds no token: its heartbeats learn the attempt is lost, and the job runs
again once the lease lapses (at least once, as for any lost worker).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 21:50:00
"""
from collections.abc import Sequence

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOB_EVENTS_CHANNEL = "skyfleet_job_events"
FINISHED = "('SUCCEEDED', 'FAILED', 'CANCELLED', 'TIMED_OUT')"

# Unchanged from 0002: the ids of jobs whose status or progress changed, for the event streams.
NOTIFY_CHANGED = f"""    FOR ids IN
        SELECT string_agg(c.id::text, ',')
        FROM (SELECT n.id, (row_number() OVER () - 1) / 400 AS chunk
              FROM new_rows n JOIN old_rows o ON o.id = n.id
              WHERE o.status IS DISTINCT FROM n.status OR o.progress IS DISTINCT FROM n.progress) c
        GROUP BY c.chunk
    LOOP
        PERFORM pg_notify('{JOB_EVENTS_CHANNEL}', ids);
    END LOOP;
"""

TRIGGER_FUNCTION = f"""
CREATE OR REPLACE FUNCTION skyfleet_jobs_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids text;
BEGIN
    -- One delivery per submission that asked for a callback: the creator's (on the job row)
    -- and each joined or cached one's (job_requests).
    WITH ended AS (
        SELECT n.id, n.status, n.callback_url
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE n.status IN {FINISHED} AND o.status IS DISTINCT FROM n.status
    )
    INSERT INTO callback_deliveries (job_id, job_request_id, url, job_status)
    SELECT e.id, NULL, e.callback_url, e.status FROM ended e WHERE e.callback_url IS NOT NULL
    UNION ALL
    SELECT e.id, r.id, r.callback_url, e.status
    FROM ended e JOIN job_requests r ON r.job_id = e.id AND r.callback_url IS NOT NULL;

{NOTIFY_CHANGED}    RETURN NULL;
END
$$;
"""

OLD_TRIGGER_FUNCTION = f"""
CREATE OR REPLACE FUNCTION skyfleet_jobs_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids text;
BEGIN
    INSERT INTO callback_deliveries (job_id, job_request_id, url, job_status)
    SELECT n.id, r.id, r.callback_url, n.status
    FROM new_rows n
    JOIN old_rows o ON o.id = n.id
    JOIN job_requests r ON r.job_id = n.id AND r.callback_url IS NOT NULL
    WHERE n.status IN {FINISHED}
      AND o.status IS DISTINCT FROM n.status;

{NOTIFY_CHANGED}    RETURN NULL;
END
$$;
"""

QUEUE_TABLE_STORAGE = {'fillfactor': '80', 'autovacuum_vacuum_scale_factor': '0.02',
                       'autovacuum_analyze_scale_factor': '0.02', 'autovacuum_vacuum_insert_scale_factor': '0.02'}

MOVE_UP = [
    # Finished attempts, with the result of the one that succeeded.
    """INSERT INTO job_attempts (id, job_id, attempt, lease_token, worker_id, started_at, heartbeat_at,
                                 lease_expires_at, ended_at, outcome, error, result_payload, storage_uri, files,
                                 cache_valid)
       SELECT a.id, a.job_id, a.attempt, NULL, a.worker_id, a.created_at, a.heartbeat_at, a.expires_at,
              a.completed_at,
              a.outcome,
              CASE WHEN a.outcome IN ('FAILED', 'EXPIRED') AND a.attempt = j.attempt THEN j.error END,
              r.result_payload, coalesce(r.storage_uri, a.storage_uri), r.files, coalesce(r.cache_valid, true)
       FROM job_assignments a JOIN jobs j ON j.id = a.job_id
       LEFT JOIN job_results r ON r.assignment_id = a.id
       WHERE a.completed_at IS NOT NULL
       ORDER BY a.id""",
    "SELECT setval('job_attempts_id_seq', greatest((SELECT max(id) FROM job_attempts), 1))",
    # Live leases onto their jobs, each with a token of its own.
    """UPDATE jobs j SET lease_token = gen_random_uuid(), worker_id = a.worker_id,
                         lease_expires_at = a.expires_at, heartbeat_at = a.heartbeat_at
       FROM job_assignments a
       WHERE a.job_id = j.id AND a.attempt = j.attempt AND a.completed_at IS NULL AND j.status = 'IN_PROGRESS'""",
    # A running job without a live lease (none should exist) is rescued on the next pass.
    """UPDATE jobs SET lease_token = gen_random_uuid(), lease_expires_at = now()
       WHERE status = 'IN_PROGRESS' AND lease_token IS NULL""",
    # The creating submission onto its job.
    """UPDATE jobs j SET request_id = r.id, callback_url = r.callback_url, callback_token = r.callback_token
       FROM job_requests r WHERE r.job_id = j.id AND r.origin = 'created'""",
    # Every submission's id stays unique: the sequence goes on past every id given so far.
    """SELECT setval('job_requests_id_seq', greatest((SELECT max(id) FROM job_requests),
                                                    (SELECT max(request_id) FROM jobs), 1))""",
    "UPDATE jobs SET request_id = nextval('job_requests_id_seq') WHERE request_id IS NULL",
    """UPDATE callback_deliveries d SET job_request_id = NULL
       FROM job_requests r WHERE r.id = d.job_request_id AND r.origin = 'created'""",
    "DELETE FROM job_requests WHERE origin = 'created'",
]

MOVE_DOWN = [
    """INSERT INTO job_requests (id, job_id, user_id, origin, callback_url, callback_token, created_at)
       SELECT request_id, id, user_id, 'created', callback_url, callback_token, created_at FROM jobs""",
    """UPDATE callback_deliveries d SET job_request_id = j.request_id
       FROM jobs j WHERE j.id = d.job_id AND d.job_request_id IS NULL""",
    # Attempts without a worker cannot be kept (assignments need one).
    """INSERT INTO job_assignments (id, job_id, worker_id, attempt, created_at, expires_at, heartbeat_at,
                                    storage_uri, completed_at, outcome)
       SELECT id, job_id, worker_id, attempt, coalesce(started_at, ended_at), coalesce(lease_expires_at, ended_at),
              coalesce(heartbeat_at, ended_at), storage_uri, ended_at, outcome
       FROM job_attempts WHERE worker_id IN (SELECT id FROM workers)
       ORDER BY id
       ON CONFLICT DO NOTHING""",
    """INSERT INTO job_results (job_id, assignment_id, result_payload, storage_uri, files, cache_valid, created_at)
       SELECT t.job_id, t.id, t.result_payload, t.storage_uri, t.files, t.cache_valid, t.ended_at
       FROM job_attempts t JOIN job_assignments a ON a.id = t.id
       WHERE t.outcome = 'SUCCEEDED'""",
    """INSERT INTO job_assignments (job_id, worker_id, attempt, created_at, expires_at, heartbeat_at)
       SELECT id, worker_id, attempt, coalesce(started_at, now()), coalesce(lease_expires_at, now()),
              coalesce(heartbeat_at, now())
       FROM jobs WHERE status = 'IN_PROGRESS' AND worker_id IN (SELECT id FROM workers)
       ON CONFLICT DO NOTHING""",
    "SELECT setval('job_assignments_id_seq', greatest((SELECT max(id) FROM job_assignments), 1))",
]


def upgrade() -> None:
    op.add_column('jobs', sa.Column('lease_token', sa.Uuid(), nullable=True))
    op.add_column('jobs', sa.Column('worker_id', sa.BigInteger(), nullable=True))
    op.add_column('jobs', sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('jobs', sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('jobs', sa.Column('request_id', sa.BigInteger(), nullable=True))
    op.add_column('jobs', sa.Column('callback_url', sa.Text(), nullable=True))
    op.add_column('jobs', sa.Column('callback_token', sa.Text(), nullable=True))
    op.create_index('ix_jobs_running_worker', 'jobs', ['worker_id'], unique=False,
                    postgresql_where=sa.text("status = 'IN_PROGRESS'"))
    op.create_table('job_attempts',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('job_id', sa.BigInteger(), nullable=False),
    sa.Column('attempt', sa.BigInteger(), nullable=False),
    sa.Column('lease_token', sa.Uuid(), nullable=True),
    sa.Column('worker_id', sa.BigInteger(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('error', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('result_payload', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('storage_uri', sa.Text(), nullable=True),
    sa.Column('files', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('cache_valid', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_job_attempts_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_attempts'))
    )
    op.create_index(op.f('ix_job_attempts_job_id_attempt'), 'job_attempts', ['job_id', 'attempt'], unique=False)
    op.create_index('uq_job_attempts_succeeded', 'job_attempts', ['job_id'], unique=True,
                    postgresql_where=sa.text("outcome = 'SUCCEEDED'"))
    op.alter_column('callback_deliveries', 'job_request_id', existing_type=sa.BigInteger(), nullable=True)
    for statement in MOVE_UP:
        op.execute(statement)
    op.alter_column('jobs', 'request_id', nullable=False, server_default=sa.text("nextval('job_requests_id_seq')"))
    op.drop_index(op.f('ix_job_results_job_id'), table_name='job_results')
    op.drop_table('job_results')
    op.drop_index('ix_job_assignments_live_worker', table_name='job_assignments',
                  postgresql_where=sa.text('completed_at IS NULL'))
    op.drop_index(op.f('ix_job_assignments_job_id_attempt'), table_name='job_assignments')
    op.drop_table('job_assignments')
    op.execute(TRIGGER_FUNCTION)


def downgrade() -> None:
    op.execute(OLD_TRIGGER_FUNCTION)
    op.create_table('job_assignments',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('job_id', sa.BigInteger(), nullable=False),
    sa.Column('worker_id', sa.BigInteger(), nullable=False),
    sa.Column('attempt', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('storage_uri', sa.Text(), nullable=True),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_job_assignments_job_id_jobs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['worker_id'], ['workers.id'], name=op.f('fk_job_assignments_worker_id_workers'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_assignments')),
    postgresql_with=QUEUE_TABLE_STORAGE
    )
    op.create_index(op.f('ix_job_assignments_job_id_attempt'), 'job_assignments', ['job_id', 'attempt'], unique=True)
    op.create_index('ix_job_assignments_live_worker', 'job_assignments', ['worker_id'], unique=False,
                    postgresql_where=sa.text('completed_at IS NULL'))
    op.create_table('job_results',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('job_id', sa.BigInteger(), nullable=False),
    sa.Column('assignment_id', sa.BigInteger(), nullable=False),
    sa.Column('result_payload', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('storage_uri', sa.Text(), nullable=True),
    sa.Column('files', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('cache_valid', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['assignment_id'], ['job_assignments.id'],
                            name=op.f('fk_job_results_assignment_id_job_assignments'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_job_results_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_results')),
    sa.UniqueConstraint('assignment_id', name=op.f('uq_job_results_assignment_id'))
    )
    op.create_index(op.f('ix_job_results_job_id'), 'job_results', ['job_id'], unique=False)
    for statement in MOVE_DOWN:
        op.execute(statement)
    op.alter_column('callback_deliveries', 'job_request_id', existing_type=sa.BigInteger(), nullable=False)
    op.drop_index('uq_job_attempts_succeeded', table_name='job_attempts',
                  postgresql_where=sa.text("outcome = 'SUCCEEDED'"))
    op.drop_index(op.f('ix_job_attempts_job_id_attempt'), table_name='job_attempts')
    op.drop_table('job_attempts')
    op.drop_index('ix_jobs_running_worker', table_name='jobs', postgresql_where=sa.text("status = 'IN_PROGRESS'"))
    for column in ('callback_token', 'callback_url', 'request_id', 'heartbeat_at', 'lease_expires_at',
                   'worker_id', 'lease_token'):
        op.drop_column('jobs', column)
