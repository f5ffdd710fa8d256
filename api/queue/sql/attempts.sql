-- The life of an attempt: claim, heartbeat, report, rescue, release.
--
-- The live attempt is on the job row: lease_token (its fence, a random UUID drawn at each
-- claim), worker_id, lease_expires_at. Every statement acts only on a live attempt, so late
-- actors change nothing; an attempt leaves one job_attempts row when it ends.

-- fragment: live
-- The one test of a live attempt: the job row `j` is IN_PROGRESS under the token that the row
-- `mine` (what the actor says it holds) names, and belongs to the actor's worker.
j.status = 'IN_PROGRESS' AND j.lease_token = mine.token AND j.worker_id = :worker_id

-- fragment: attempt_columns
-- What an attempt's history row copies from its job row when it ends.
attempt, lease_token, worker_id, started_at, heartbeat_at, lease_expires_at

-- fragment: j_attempt_columns
j.attempt, j.lease_token, j.worker_id, j.started_at, j.heartbeat_at, j.lease_expires_at

-- fragment: history
-- due_at: the job's run_after as the attempt was claimed (read before the ending UPDATE moves it).
INSERT INTO job_attempts (job_id, {{attempt_columns}}, due_at, outcome, error, result_payload, storage_uri, files)

-- fragment: backoff
-- Delay before the next attempt: exponential in the attempt just made, capped, and with a
-- random half jittered away ("equal jitter") so a burst of failures does not retry in step.
-- `policy` is the job type's retry policy (fragment policy_join).
make_interval(secs => least(coalesce(policy.cap, :default_cap),
                            coalesce(policy.base, :default_base) * power(2, greatest(j.attempt - 1, 0)))
                      * (0.5 + random() * 0.5))

-- fragment: policy_join
LEFT JOIN unnest(CAST(:policy_types AS text[]), CAST(:policy_bases AS float8[]),
                 CAST(:policy_caps AS float8[])) AS policy(type, base, cap)
     ON policy.type = j.type

-- name: claim
-- Claim up to :limit due jobs of :types for :worker_id, each a new attempt with a fresh token
-- and lease. One ordered probe of ix_jobs_claimable per type (a plain `type = ANY(...)` makes
-- the planner sort every pending row), merged and cut to the limit; SKIP LOCKED lets
-- concurrent claimers pass each other's rows. The uploaded files each job reads come along.
WITH picked AS (
    SELECT first.id FROM unnest(CAST(:types AS text[])) AS t(type)
    CROSS JOIN LATERAL (
        SELECT id, priority, run_after FROM jobs
        WHERE status = 'PENDING' AND jobs.type = t.type AND run_after <= now()
        ORDER BY priority, run_after, id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ) AS first
    ORDER BY first.priority, first.run_after, first.id
    LIMIT :limit
), claimed AS (
    UPDATE jobs j
    SET status = 'IN_PROGRESS', attempt = j.attempt + 1, started_at = now(), updated_at = now(),
        lease_token = gen_random_uuid(), worker_id = :worker_id,
        lease_expires_at = now() + make_interval(secs => :lease_s), heartbeat_at = now()
    FROM picked WHERE j.id = picked.id
    RETURNING j.id, j.lease_token, j.type, j.attempt, j.max_attempts, j.input_payload, j.lease_expires_at,
              greatest(extract(epoch FROM now() - j.run_after), 0)::float8 AS waited_s, j.priority, j.run_after
)
SELECT c.id AS job_id, c.lease_token AS token, c.type, c.attempt, c.max_attempts, c.input_payload,
       c.lease_expires_at, c.waited_s,
       (SELECT coalesce(jsonb_agg(jsonb_build_object('file_id', f.id, 'key', f.storage_key, 'size', f.size,
                                                     'name', f.name) ORDER BY f.id), '[]'::jsonb)
        FROM job_files jf JOIN files f ON f.id = jf.file_id WHERE jf.job_id = c.id) AS input_files
FROM claimed c
ORDER BY c.priority, c.run_after, c.id

-- name: next_due
-- When the earliest pending job of :types becomes claimable: one probe of the claim index per
-- (type, priority), so it stays cheap with a deep queue.
SELECT min(first.run_after)
FROM unnest(CAST(:types AS text[])) AS t(type)
CROSS JOIN generate_series(0, 9) AS p(priority)
CROSS JOIN LATERAL (
    SELECT run_after FROM jobs
    WHERE status = 'PENDING' AND jobs.type = t.type AND jobs.priority = p.priority
    ORDER BY run_after LIMIT 1
) AS first

-- name: extend
-- A heartbeat: extend the leases of the attempts :worker_id holds and record their progress, in
-- one UPDATE; answer each live one with its cancel flag. SKIP LOCKED: a job row locked right now
-- is being reported on or rescued, so there is nothing to extend, and a heartbeat never waits
-- on (or deadlocks with) a batch report locking the same rows in another order.
WITH mine AS (
    SELECT * FROM unnest(CAST(:job_ids AS bigint[]), CAST(:tokens AS uuid[]), CAST(:progress AS jsonb[]))
        AS m(job_id, token, progress)
), live AS (
    SELECT j.id, mine.token, j.cancel_requested FROM jobs j JOIN mine ON mine.job_id = j.id
    WHERE {{live}}
), extended AS (
    UPDATE jobs j SET
        lease_expires_at = now() + make_interval(secs => :lease_s), heartbeat_at = now(),
        progress = coalesce(mine.progress, j.progress),
        updated_at = CASE WHEN mine.progress IS DISTINCT FROM j.progress AND mine.progress IS NOT NULL
                          THEN now() ELSE j.updated_at END
    FROM mine
    WHERE mine.job_id = j.id AND {{live}}
      AND j.id IN (SELECT id FROM jobs WHERE id IN (SELECT id FROM live) FOR NO KEY UPDATE SKIP LOCKED)
    RETURNING j.id, j.lease_expires_at
)
SELECT live.id, live.token::text, live.cancel_requested, extended.lease_expires_at
FROM live LEFT JOIN extended ON extended.id = live.id

-- name: report
-- Record a batch of results and failures of :worker_id's attempts. The next status is decided
-- from the row being updated, so a cancel that lands between the statement's snapshot and its
-- row lock is still honoured. No explicit row locks: the guards sit in the UPDATE's own WHERE,
-- which PostgreSQL re-checks on the newest row version if it had to wait (a rescuer or a
-- duplicate report got there first), and the history row follows only the jobs updated.
WITH reported AS (
    SELECT * FROM unnest(
        CAST(:job_ids AS bigint[]), CAST(:tokens AS uuid[]), CAST(:outcomes AS text[]),
        CAST(:payloads AS jsonb[]), CAST(:storage_uris AS text[]), CAST(:files AS jsonb[]),
        CAST(:errors AS jsonb[]), CAST(:permanent AS boolean[]))
    AS r(job_id, token, outcome, payload, storage_uri, files, error, permanent)
), current AS (
    SELECT mine.*, {{backoff}} AS delay, j.run_after AS due_at
    FROM reported mine JOIN jobs j ON j.id = mine.job_id AND {{live}}
    {{policy_join}}
), ended AS (
    UPDATE jobs j SET
        status = {{next_status}},
        run_after = CASE WHEN {{next_status}} = 'PENDING' THEN now() + mine.delay ELSE j.run_after END,
        finished_at = CASE WHEN {{next_status}} = 'PENDING' THEN NULL ELSE now() END,
        error = CASE WHEN mine.outcome = 'FAILED' THEN mine.error ELSE NULL END,
        updated_at = now()
    FROM current mine
    WHERE j.id = mine.job_id AND {{live}}
    RETURNING j.id, {{j_attempt_columns}}, j.status, j.run_after, j.type,
              extract(epoch FROM now() - j.started_at)::float8 AS duration_s
), history AS (
    {{history}}
    SELECT e.id, e.attempt, e.lease_token, e.worker_id, e.started_at, e.heartbeat_at, e.lease_expires_at,
           mine.due_at, mine.outcome, CASE WHEN mine.outcome = 'FAILED' THEN mine.error END,
           mine.payload, mine.storage_uri, mine.files
    FROM ended e JOIN current mine ON mine.job_id = e.id
)
SELECT id, lease_token::text AS token, attempt, status, run_after, type, duration_s FROM ended

-- fragment: next_status
CASE WHEN mine.outcome = 'SUCCEEDED' THEN 'SUCCEEDED'
     WHEN mine.outcome = 'CANCELLED' OR j.cancel_requested THEN 'CANCELLED'
     WHEN mine.permanent OR j.attempt >= j.max_attempts THEN 'FAILED'
     ELSE 'PENDING' END

-- name: rescue
-- Take back up to :limit attempts whose lease expired: PENDING again (in its old place in line
-- the first time, with backoff after that), TIMED_OUT when its attempts are used up, or
-- CANCELLED when a cancel was pending. SKIP LOCKED: a row a worker is reporting on right now
-- is left for the next pass rather than waited for.
WITH expired AS (
    SELECT j.id,
           CASE WHEN j.cancel_requested THEN 'CANCELLED'
                WHEN j.attempt >= j.max_attempts THEN 'TIMED_OUT'
                ELSE 'PENDING' END AS next_status,
           {{backoff}} AS delay, j.run_after AS due_at,
           NOT EXISTS (SELECT FROM job_attempts x
                       WHERE x.job_id = j.id AND x.outcome = 'EXPIRED') AS first_expiry
    FROM jobs j
    {{policy_join}}
    WHERE j.status = 'IN_PROGRESS' AND j.lease_expires_at < now()
    ORDER BY j.lease_expires_at
    LIMIT :limit
    FOR UPDATE OF j SKIP LOCKED
), rescued AS (
    UPDATE jobs j SET
        status = e.next_status,
        -- A job whose worker vanished keeps its place in line (its run_after) the first time,
        -- so it runs again at once even behind a deep backlog; a job that keeps losing its
        -- workers (maybe by killing them) backs off like a failure.
        run_after = CASE WHEN e.next_status <> 'PENDING' OR e.first_expiry THEN j.run_after
                         ELSE now() + e.delay END,
        finished_at = CASE WHEN e.next_status = 'PENDING' THEN NULL ELSE now() END,
        error = jsonb_build_object(
            'code', 'LEASE_EXPIRED',
            'message', format('attempt %s: the worker stopped heartbeating and its lease expired', j.attempt)),
        updated_at = now()
    FROM expired e WHERE j.id = e.id
    RETURNING j.id, j.type, j.status, {{j_attempt_columns}}, j.error
), history AS (
    {{history}}
    SELECT r.id, r.attempt, r.lease_token, r.worker_id, r.started_at, r.heartbeat_at, r.lease_expires_at,
           e.due_at, 'EXPIRED', r.error, NULL, NULL, NULL
    FROM rescued r JOIN expired e ON e.id = r.id
)
SELECT id, type, status FROM rescued

-- name: mark_lapsed
-- Stamp lapsed_at on the workers holding an expired lease: a claim of theirs parked before
-- now takes no job. Its own transaction, before the rescue: it waits for claims holding a
-- worker's row, while the rescue holds job rows a claim's report may wait for.
UPDATE workers w SET lapsed_at = now()
WHERE w.id IN (SELECT DISTINCT j.worker_id FROM jobs j
               WHERE j.status = 'IN_PROGRESS' AND j.lease_expires_at < now())

-- name: release
-- Hand :worker_id's attempts back to the queue at once (shutting down, or a claim whose client
-- hung up). A released attempt did not fail: it is given back so it does not count.
WITH mine AS (
    SELECT * FROM unnest(CAST(:job_ids AS bigint[]), CAST(:tokens AS uuid[])) AS m(job_id, token)
), released AS (
    UPDATE jobs j SET
        status = CASE WHEN j.cancel_requested THEN 'CANCELLED' ELSE 'PENDING' END,
        finished_at = CASE WHEN j.cancel_requested THEN now() END,
        max_attempts = j.max_attempts + 1,
        updated_at = now()
    FROM mine WHERE mine.job_id = j.id AND {{live}}
    RETURNING j.id, j.type, j.status, {{j_attempt_columns}}, j.run_after
), history AS (
    {{history}}
    SELECT id, {{attempt_columns}}, run_after, 'RELEASED', NULL, NULL, NULL, NULL FROM released
)
SELECT id, type, status FROM released
