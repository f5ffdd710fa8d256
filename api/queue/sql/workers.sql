-- Workers: registration, the check every worker request starts with, drain, lost.

-- fragment: running_jobs
-- The jobs running now, each with its worker (j.worker_id), through ix_jobs_running_worker.
FROM jobs j WHERE j.status = 'IN_PROGRESS'

-- name: register_worker
INSERT INTO workers (name, user_id, hostname, pid, ecs_task_arn, ecs_cluster_arn, job_types, concurrency,
                     attributes)
VALUES (:name, :user_id, :hostname, :pid, :ecs_task_arn, :ecs_cluster_arn, CAST(:job_types AS varchar(64)[]),
        :concurrency, :attributes)
RETURNING id, name, job_types, concurrency

-- fragment: worker_row
-- The first statement of a worker request's transaction; it also says how that transaction
-- commits: asynchronously where a lost commit merely makes a job run again (a claim, a
-- heartbeat), so the request does not wait for the WAL to reach the disk.
SELECT id, job_types, draining, stopped_at, lapsed_at, now() AS read_at,
       extract(epoch FROM now() - last_heartbeat_at)::float8 AS silent_s,
       CASE WHEN :durable THEN NULL ELSE set_config('synchronous_commit', 'off', true) END AS commit_mode
FROM workers WHERE id = :worker_id AND user_id = :user_id

-- name: worker
{{worker_row}}

-- name: worker_for_share
-- A claim holds a lock on its worker's row until it commits, and a drain takes the row's
-- update lock before it looks for running jobs: so either the claim sees `draining` and takes
-- nothing, or the drain waits for the claim and sees its jobs.
{{worker_row}} FOR SHARE

-- name: worker_for_update
-- A claim that may record the worker as seen takes the row's update lock from the start: a
-- share lock upgraded later deadlocks with a heartbeat queued for the row in between.
{{worker_row}} FOR NO KEY UPDATE

-- name: worker_seen
UPDATE workers SET last_heartbeat_at = now() WHERE id = :worker_id

-- name: stop_worker
UPDATE workers SET stopped_at = coalesce(stopped_at, now()) WHERE id = :worker_id AND user_id = :user_id

-- name: live_workers
-- Workers not stopped and heard from within :live_after_s, with their running job count.
SELECT w.id, w.name, w.attributes ->> 'pool' AS pool, w.attributes ->> 'revision' AS revision,
       w.attributes ->> 'launch_id' AS launch_id, w.ecs_task_arn, w.pid, w.hostname, w.job_types,
       w.concurrency, coalesce(r.running, 0) AS running_jobs, w.draining, w.started_at, w.last_heartbeat_at
FROM workers w
LEFT JOIN (SELECT j.worker_id, count(*) AS running {{running_jobs}} GROUP BY j.worker_id) r ON r.worker_id = w.id
WHERE w.stopped_at IS NULL AND w.last_heartbeat_at > now() - make_interval(secs => :live_after_s)
ORDER BY w.id

-- name: lock_workers
SELECT id FROM workers WHERE id = ANY(CAST(:ids AS bigint[])) ORDER BY id FOR UPDATE

-- name: drain
-- The idle test sits in the UPDATE's WHERE: a worker whose claim committed first keeps its job
-- and is not drained. (A claim still in flight can land after this; that worker then drains
-- busy, which loses nothing: it finishes its job and exits.)
UPDATE workers w SET draining = true
WHERE w.id = ANY(CAST(:ids AS bigint[])) AND w.stopped_at IS NULL
  AND (NOT :only_idle OR NOT EXISTS (SELECT 1 {{running_jobs}} AND j.worker_id = w.id))
RETURNING w.id

-- name: mark_lost
-- Workers silent for :after_s are stopped: they must register again to claim.
UPDATE workers SET stopped_at = now()
WHERE stopped_at IS NULL AND last_heartbeat_at < now() - make_interval(secs => :after_s)
