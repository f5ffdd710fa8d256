"""Job progress as Server-Sent Events: ``GET /api/jobs/{id}/events``.

- :mod:`api.events.service`: the stream of one job (snapshot, status, progress, final
  event, keepalives, time limit) and the caps on open streams (per process, per account). No Flask.
- :mod:`api.events.routes`: the endpoint; authorisation, the caps, headers.
- The wake-ups come from :class:`api.queue.notify.JobEventHub`, fed by the process's one
  LISTEN connection with the ids the ``jobs_changed`` trigger NOTIFYs.

An open stream is a gevent greenlet (api/gunicorn_conf.py) sleeping on an ``Event``: it holds
no OS thread and no database connection (the job is read in a short transaction on each
wake-up and at least every keepalive interval). Streams are still capped per process
(``SKYFLEET_MAX_EVENT_STREAMS``): each re-reads its job on every change and keepalive; beyond
the cap, 503 with ``Retry-After``. For more viewers raise it, or add processes. Within a process one account
holds at most ``SKYFLEET_MAX_EVENT_STREAMS_PER_USER`` of them (beyond it, 429 ``LIMIT_EXCEEDED``
with ``Retry-After``), so one user following a job from many tabs or a loop cannot take every
slot. The count is per process, like the slots it shares out: a stream is served by one
process, and a count shared across processes would need rows that outlive a killed one.
"""
