-- The fleet over time, from the database (so it survives restarts): the console's charts.
--
-- A window is :buckets buckets of :bucket_s seconds ending with the current one. Attempts are
-- counted in the bucket they ended in (job_attempts, through ix_job_attempts_ended_at).

-- fragment: span
-- The epoch second the window's first bucket starts at.
span AS (SELECT floor(extract(epoch FROM now()) / :bucket_s) * :bucket_s - :bucket_s * (:buckets - 1) AS first)

-- fragment: bucket_of_ended
floor((extract(epoch FROM t.ended_at) - span.first) / :bucket_s)::int

-- name: history
-- Per bucket: attempts that succeeded, that failed for good (the job's last attempt, and it
-- FAILED or TIMED_OUT), that failed or expired and were retried; the pickup latency (claimed
-- minus due) p50 / p95 / p99 of the attempts that ended in it, in seconds.
WITH {{span}}, a AS (
    SELECT {{bucket_of_ended}} AS n, t.outcome, t.started_at, t.due_at,
           (t.outcome IN ('FAILED', 'EXPIRED')
            AND (j.id IS NULL OR (t.attempt = j.attempt AND j.status IN ('FAILED', 'TIMED_OUT')))) AS final
    FROM span, job_attempts t
    -- Only a failure needs its job (was it the last attempt?): most attempts skip the join.
    LEFT JOIN jobs j ON t.outcome IN ('FAILED', 'EXPIRED') AND j.id = t.job_id
    WHERE t.ended_at >= to_timestamp(span.first)
), per AS (
    SELECT n,
           count(*) FILTER (WHERE outcome = 'SUCCEEDED') AS completed,
           count(*) FILTER (WHERE final) AS failed,
           count(*) FILTER (WHERE outcome IN ('FAILED', 'EXPIRED') AND NOT final) AS retried,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - due_at))
               FILTER (WHERE due_at IS NOT NULL AND started_at IS NOT NULL) AS pickup
    FROM a GROUP BY n
)
SELECT g.n, span.first + g.n * :bucket_s AS bucket_start, coalesce(per.completed, 0) AS completed,
       coalesce(per.failed, 0) AS failed, coalesce(per.retried, 0) AS retried, per.pickup
FROM span CROSS JOIN generate_series(0, :buckets - 1) AS g(n) LEFT JOIN per ON per.n = g.n
ORDER BY g.n

-- name: history_durations
-- Per bucket and job type: the median run time (claimed to ended) of the attempts that succeeded.
WITH {{span}}
SELECT {{bucket_of_ended}} AS n, j.type,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM t.ended_at - t.started_at)) AS p50
FROM span, job_attempts t JOIN jobs j ON j.id = t.job_id
WHERE t.ended_at >= to_timestamp(span.first) AND t.outcome = 'SUCCEEDED' AND t.started_at IS NOT NULL
GROUP BY 1, 2

-- name: history_workers
-- Per bucket: the workers alive in it (registered before its end, heard from or stopped after its start).
WITH {{span}}
SELECT g.n, count(w.id) AS workers
FROM span CROSS JOIN generate_series(0, :buckets - 1) AS g(n)
LEFT JOIN workers w ON w.started_at < to_timestamp(span.first + (g.n + 1) * :bucket_s)
                   AND coalesce(w.stopped_at, w.last_heartbeat_at) >= to_timestamp(span.first + g.n * :bucket_s)
GROUP BY g.n ORDER BY g.n
