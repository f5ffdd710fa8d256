-- Jobs: submission (dedup, cache reuse), cancel, the jobs as their requesters see them, delete.
--
-- Duplicate active submissions of one user are stopped by the unique partial index
-- uq_jobs_active_input (user_id, type, input_hash) WHERE status is active: the insert is
-- ON CONFLICT DO NOTHING and the loser joins the winner's job. No check-then-insert.

-- fragment: job_columns
j.id, j.type, j.status, j.priority, j.run_after, j.attempt, j.max_attempts,
j.input_payload, j.progress, j.error, j.cancel_requested, j.created_at, j.updated_at,
j.started_at, j.finished_at

-- fragment: visible
-- A job is visible to an admin, or to the user who submitted it (dedup never shares a job
-- across users, so every submission of a job is its owner's).
(:is_admin OR j.user_id = :user_id)

-- name: find_cached
-- The newest job of :user_id that SUCCEEDED with each (type, input hash), whose result may
-- still be reused.
SELECT DISTINCT ON (j.type, j.input_hash) j.type, j.input_hash, j.id
FROM jobs j
JOIN job_attempts t ON t.job_id = j.id AND t.outcome = 'SUCCEEDED' AND t.cache_valid
WHERE j.status = 'SUCCEEDED' AND j.user_id = :user_id
  AND (j.type, j.input_hash) IN (SELECT * FROM unnest(CAST(:types AS text[]), CAST(:hashes AS text[])))
ORDER BY j.type, j.input_hash, j.finished_at DESC

-- name: insert_jobs
-- New jobs, each with its creating submission's id and callback; an identical active job of
-- the same user makes the insert of that one do nothing.
INSERT INTO jobs (type, input_payload, input_hash, priority, run_after, max_attempts, user_id,
                  callback_url, callback_token)
SELECT t, p, h, pr, coalesce(ra, now()), ma, :user_id, cu, ct
FROM unnest(CAST(:types AS text[]), CAST(:payloads AS jsonb[]), CAST(:hashes AS text[]),
            CAST(:priorities AS smallint[]), CAST(:run_afters AS timestamptz[]),
            CAST(:max_attempts AS int[]), CAST(:callback_urls AS text[]), CAST(:callback_tokens AS text[]))
     AS n(t, p, h, pr, ra, ma, cu, ct)
ON CONFLICT (user_id, type, input_hash) WHERE status IN ('PENDING', 'IN_PROGRESS') DO NOTHING
RETURNING type, input_hash, id, request_id, run_after <= now() AS due

-- name: find_active
-- The active jobs a submission joins. FOR SHARE: the joined job cannot finish before this
-- submission commits, so the trigger that writes callbacks when it does finish sees its row.
SELECT type, input_hash, id FROM jobs
WHERE status IN ('PENDING', 'IN_PROGRESS') AND user_id = :user_id
  AND (type, input_hash) IN (SELECT * FROM unnest(CAST(:types AS text[]), CAST(:hashes AS text[])))
FOR SHARE

-- name: insert_requests
-- Submissions that joined an active job or reused a finished one's result.
INSERT INTO job_requests (job_id, user_id, origin, callback_url, callback_token)
SELECT j, :user_id, o, cu, ct
FROM unnest(CAST(:job_ids AS bigint[]), CAST(:origins AS text[]), CAST(:callback_urls AS text[]),
            CAST(:callback_tokens AS text[])) AS r(j, o, cu, ct)
RETURNING id

-- name: callbacks_for_finished
-- A submission that reused a finished result gets its callback now (no transition will fire it).
INSERT INTO callback_deliveries (job_id, job_request_id, url, job_status)
SELECT r.job_id, r.id, r.callback_url, j.status
FROM job_requests r JOIN jobs j ON j.id = r.job_id
WHERE r.id = ANY(CAST(:request_ids AS bigint[])) AND r.callback_url IS NOT NULL
  AND j.status IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'TIMED_OUT')

-- name: notify_arrivals
-- At commit, tell the API processes how many jobs of each type became claimable.
SELECT pg_notify(:channel, t || ':' || n) FROM unnest(CAST(:types AS text[]), CAST(:counts AS int[])) AS x(t, n)

-- name: notify_workers
-- At commit, wake these workers' parked claims (they were drained).
SELECT pg_notify(:channel, 'worker:' || w) FROM unnest(CAST(:ids AS bigint[])) AS w

-- name: cancel
-- A pending job is cancelled at once; a running one is asked to stop (its worker hears it in
-- the heartbeat answer, or its lease lapses), and ends CANCELLED either way.
UPDATE jobs SET
    status = CASE WHEN status = 'PENDING' THEN 'CANCELLED' ELSE status END,
    finished_at = CASE WHEN status = 'PENDING' THEN now() ELSE finished_at END,
    cancel_requested = true,
    updated_at = now()
WHERE id = :job_id AND status IN ('PENDING', 'IN_PROGRESS')
RETURNING status

-- name: retry
-- Run a finished job that did not succeed again: PENDING now, with its type's allowance of
-- attempts on top of those made (its history stays). An identical active job of the same user
-- (uq_jobs_active_input) makes the UPDATE fail: the caller answers 409.
UPDATE jobs SET
    status = 'PENDING', run_after = now(), finished_at = NULL, error = NULL, progress = NULL,
    cancel_requested = false, max_attempts = attempt + :attempts, updated_at = now()
WHERE id = :job_id AND status IN ('FAILED', 'CANCELLED', 'TIMED_OUT')
RETURNING type

-- name: job_status
SELECT status FROM jobs WHERE id = :job_id

-- name: jobs_by_id
-- Jobs by id, without visibility checks (rendering what a caller just submitted).
SELECT {{job_columns}} FROM jobs j WHERE j.id = ANY(CAST(:ids AS bigint[]))

-- name: visible_job
SELECT {{job_columns}} FROM jobs j WHERE j.id = :job_id AND {{visible}}

-- name: result
-- The result of the attempt that succeeded (at most one: uq_job_attempts_succeeded).
SELECT job_id, result_payload, storage_uri, files, ended_at AS created_at FROM job_attempts
WHERE job_id = :job_id AND outcome = 'SUCCEEDED'

-- fragment: listed
{{visible}} AND (CAST(:status AS text) IS NULL OR j.status = :status)
AND (CAST(:type AS text) IS NULL OR j.type = :type)
AND (CAST(:created_after AS timestamptz) IS NULL OR j.created_at >= :created_after)
AND (CAST(:created_before AS timestamptz) IS NULL OR j.created_at < :created_before)
AND (CAST(:owner AS bigint) IS NULL OR j.user_id = :owner)
-- :q is a LIKE pattern (escaped by the caller): over the input (a tag, a file name) and the error.
AND (CAST(:q AS text) IS NULL OR j.input_payload::text ILIKE :q OR coalesce(j.error::text, '') ILIKE :q)

-- name: matching_job_ids
-- The ids of up to :limit jobs a list with these filters shows, oldest first.
SELECT j.id FROM jobs j WHERE {{listed}} ORDER BY j.id LIMIT :limit

-- name: count_jobs
SELECT count(*) FROM jobs j WHERE {{listed}}

-- name: list_jobs
-- One page; ORDER_BY is replaced by the caller from a closed list of sort orders.
SELECT {{job_columns}} FROM jobs j WHERE {{listed}}
ORDER BY ORDER_BY LIMIT :limit OFFSET :offset

-- name: delete_finished
-- Delete a finished job; its submissions and attempts (with results) go with it (CASCADE).
DELETE FROM jobs j
WHERE j.id = :job_id AND j.status IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'TIMED_OUT')
RETURNING j.id

-- name: prune_finished
-- Up to :limit jobs finished more than :age_s ago, oldest first; only a job that was claimed
-- (attempt > 0) can have written outputs.
DELETE FROM jobs WHERE id IN (
    SELECT id FROM jobs
    WHERE finished_at IS NOT NULL
      AND finished_at < now() - make_interval(secs => :age_s)
      AND status IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'TIMED_OUT')
    ORDER BY finished_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED)
RETURNING id, attempt > 0 AS ran

-- name: invalidate_cache
-- Stop reusing every cached result of :type.
UPDATE job_attempts t SET cache_valid = false
FROM jobs j
WHERE j.id = t.job_id AND j.type = :type AND t.outcome = 'SUCCEEDED' AND t.cache_valid

-- name: account_limits
-- An account's overrides and its active jobs (through uq_jobs_active_input), in one statement.
SELECT u.max_active_jobs, u.min_priority,
       (SELECT count(*) FROM jobs j WHERE j.user_id = u.id AND j.status IN ('PENDING', 'IN_PROGRESS')) AS active
FROM users u WHERE u.id = :user_id

-- name: lock_submissions
-- Serialise the end of one user's submissions: a transaction-level advisory lock on :lock_key,
-- held from the count of its active jobs (submission_limits, a later statement, so that its
-- snapshot includes every submission that committed while this one waited) to the commit.
SELECT pg_advisory_xact_lock(:lock_key)

-- name: submission_limits
-- An account's overrides and its active jobs, counted up to :cap: enough to tell whether a
-- limit is passed, at a cost bounded by the limit however deep the user's queue is.
SELECT u.max_active_jobs, u.min_priority,
       (SELECT count(*) FROM (SELECT FROM jobs j WHERE j.user_id = u.id AND j.status IN ('PENDING', 'IN_PROGRESS')
                              LIMIT :cap) AS a) AS active
FROM users u WHERE u.id = :user_id

-- name: own_job_ids
-- Which of :ids are jobs the caller may read the outputs of.
SELECT j.id FROM jobs j WHERE j.id = ANY(CAST(:ids AS bigint[])) AND {{visible}}

-- name: link_job_files
-- Which uploaded files each job reads (a file is not deleted under an active job).
INSERT INTO job_files (job_id, file_id)
SELECT * FROM unnest(CAST(:jobs AS bigint[]), CAST(:files AS bigint[]))
ON CONFLICT DO NOTHING

-- name: active_jobs_reading
-- The pending or running jobs that read file :file_id (up to 100), with their types.
SELECT j.id, j.type FROM job_files jf JOIN jobs j ON j.id = jf.job_id
WHERE jf.file_id = :file_id AND j.status IN ('PENDING', 'IN_PROGRESS') ORDER BY j.id LIMIT 100

-- name: attempts_of
-- A job's attempts, oldest first: the ended ones (job_attempts) and the live one (on the job row).
SELECT t.attempt, t.worker_id, w.name AS worker, t.started_at, t.heartbeat_at, t.ended_at, t.outcome,
       t.error, t.lease_expires_at
FROM job_attempts t LEFT JOIN workers w ON w.id = t.worker_id
WHERE t.job_id = :job_id
UNION ALL
SELECT j.attempt, j.worker_id, w.name, j.started_at, j.heartbeat_at, NULL, 'RUNNING', NULL, j.lease_expires_at
FROM jobs j LEFT JOIN workers w ON w.id = j.worker_id
WHERE j.id = :job_id AND j.status = 'IN_PROGRESS'
ORDER BY started_at NULLS LAST, attempt

-- name: file_thumbnails
-- The newest :type job reading each of :file_ids, with its picture's storage key once it succeeded.
SELECT DISTINCT ON (jf.file_id) jf.file_id, j.id AS job_id, j.status,
       (SELECT f ->> 'key' FROM job_attempts a, jsonb_array_elements(a.files) f
        WHERE a.job_id = j.id AND a.outcome = 'SUCCEEDED' AND f ->> 'name' = 'thumbnail.png' LIMIT 1) AS key
FROM job_files jf JOIN jobs j ON j.id = jf.job_id AND j.type = :type
WHERE jf.file_id = ANY(CAST(:file_ids AS bigint[]))
ORDER BY jf.file_id, j.id DESC
