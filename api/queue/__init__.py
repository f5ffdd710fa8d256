"""The queue engine: every statement that reads or changes queue state, and its driver.

The SQL lives in ``sql/*.sql`` as named statements (:data:`api.queue.sql.Q`); these modules
bind their parameters, run them and shape the rows, and the API's routes and maintenance
services call these modules rather than writing queue SQL of their own:

- :mod:`api.queue.submit`: enqueue (dedup, cache reuse), cancel, the wake-up notifications.
- :mod:`api.queue.leases`: claim, heartbeat (lease extension), report, rescue, release.
- :mod:`api.queue.workers`: registration, the worker check of every worker request, drain, lost.
- :mod:`api.queue.jobs`: jobs as their requesters see them, delete, prune, cache invalidation.
- :mod:`api.queue.views`: the read model of admins, metrics and the manager (depths, workers).
- :mod:`api.queue.notify` and :mod:`api.queue.wakeup`: the LISTEN thread and the hub that wakes
  long-polling claims.

Every transition is guarded in SQL (the job's status and its live attempt's fence token), so
a stale actor changes nothing and learns so from the rows it got back. The trigger that writes
the callback outbox and the job-event notifications is part of the schema (migrations/).
"""

NOTIFY_CHANNEL = "skyfleet_jobs"
JOB_EVENTS_CHANNEL = "skyfleet_job_events"  # ids of jobs whose status or progress changed (SSE)
