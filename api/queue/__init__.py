"""The queue engine: every statement that moves a job between states lives in this package.

- :mod:`api.queue.submit`: enqueue (dedup, cache reuse), cancel.
- :mod:`api.queue.leases`: claim, heartbeat (lease extension), complete/fail, rescue.
- :mod:`api.queue.notify`: the LISTEN thread and the wake-up hub for long-polling claims.

Every transition is guarded in SQL (status and current attempt), so a stale actor changes
nothing and learns so from the rows it got back.
"""

NOTIFY_CHANNEL = "skyfleet_jobs"
JOB_EVENTS_CHANNEL = "skyfleet_job_events"  # ids of jobs whose status or progress changed (SSE)
