-- What admins, the metrics and the manager read: queue depth per type, workers by state.

-- fragment: state
-- A worker is "lost" once silent for :lost_after_s (Settings.worker_lost_after_s): by then every
-- lease it held has lapsed and the rescuer has taken its jobs back; the rescuer later marks it
-- stopped.
CASE WHEN w.stopped_at IS NOT NULL THEN 'stopped'
     WHEN w.last_heartbeat_at < now() - make_interval(secs => :lost_after_s) THEN 'lost'
     ELSE 'live' END

-- name: worker_counts
SELECT {{state}} AS state, count(*) FROM workers w WHERE w.stopped_at IS NULL GROUP BY 1

-- fragment: listed_workers
SELECT w.id, w.name, w.hostname, w.pid, w.job_types, w.concurrency, w.ecs_task_arn, w.ecs_cluster_arn,
       w.started_at, w.last_heartbeat_at, w.draining, w.stopped_at, {{state}} AS state
FROM workers w

-- name: list_workers
-- One page of workers, newest first, with the number of jobs each runs.
WITH listed AS ({{listed_workers}})
SELECT l.*, count(*) OVER () AS total,
       (SELECT count(*) {{running_jobs}} AND j.worker_id = l.id) AS running_jobs
FROM listed l
WHERE CAST(:state AS text) IS NULL OR l.state = :state
ORDER BY l.id DESC
LIMIT :limit OFFSET :offset

-- name: count_workers
WITH listed AS ({{listed_workers}})
SELECT count(*) FROM listed l WHERE CAST(:state AS text) IS NULL OR l.state = :state

-- name: queue_stats
-- Per job type (every one of :types, even with no jobs, and any other type with rows): pending
-- through ix_jobs_claimable, running through ix_jobs_running_worker, recently finished through
-- ix_jobs_finished_at; none touches finished history.
WITH pending AS (
    SELECT type,
           count(*) FILTER (WHERE run_after <= now()) AS pending,
           count(*) FILTER (WHERE run_after > now()) AS scheduled,
           min(run_after) FILTER (WHERE run_after <= now()) AS oldest_due
    FROM jobs WHERE status = 'PENDING'
    GROUP BY type
), running AS (
    SELECT j.type, count(*) AS in_progress {{running_jobs}} GROUP BY j.type
), recent AS (
    SELECT type,
           count(*) FILTER (WHERE status = 'SUCCEEDED') AS completed,
           count(*) FILTER (WHERE status IN ('FAILED', 'TIMED_OUT')) AS failed
    FROM jobs WHERE finished_at IS NOT NULL AND finished_at > now() - interval '1 minute'
    GROUP BY type
), types AS (
    SELECT type FROM unnest(CAST(:types AS text[])) AS t(type)
    UNION SELECT type FROM pending UNION SELECT type FROM running UNION SELECT type FROM recent
)
SELECT t.type,
       coalesce(p.pending, 0) AS pending,
       coalesce(p.scheduled, 0) AS scheduled,
       coalesce(r.in_progress, 0) AS in_progress,
       coalesce(greatest(extract(epoch FROM now() - p.oldest_due), 0), 0)::float8 AS oldest_pending_age_s,
       coalesce(f.completed, 0) AS completed_last_minute,
       coalesce(f.failed, 0) AS failed_last_minute
FROM types t
LEFT JOIN pending p ON p.type = t.type
LEFT JOIN running r ON r.type = t.type
LEFT JOIN recent f ON f.type = t.type
ORDER BY t.type
