"""Job progress as Server-Sent Events: ``GET /api/jobs/{id}/events``.

- :mod:`api.events.service`: the stream of one job (snapshot, status, progress, final
  event, keepalives, time limit) and the caps on open streams (per process, per account). No Flask.
- :mod:`api.events.routes`: the endpoint; authorisation, the caps, headers.
- The wake-ups come from :class:`api.queue.notify.JobEventHub`, fed by the process's one
  LISTEN connection with the ids the ``jobs_changed`` trigger NOTIFYs.

Why gunicorn's ``gthread`` worker class (api/gunicorn_conf.py): an open stream occupies one
thread, which sleeps on an ``Event`` and holds no database connection (the job is read in a
short transaction on each wake-up and at least every keepalive interval). With ``sync``
workers a stream would hold a whole process, so two viewers would stall the API. ``gevent``
would make a waiting stream nearly free, but it needs monkey-patching under psycopg, boto3
and numpy code paths and the LISTEN thread: a real risk for little gain at this scale
(tens of streams per process). Streams are capped per process (``SKYFLEET_MAX_EVENT_STREAMS``,
below ``SKYFLEET_WEB_THREADS`` so claims and reads always find a thread); beyond it, 503 with
``Retry-After``. For more viewers raise both, or add processes. Within a process one account
holds at most ``SKYFLEET_MAX_EVENT_STREAMS_PER_USER`` of them (beyond it, 429 ``LIMIT_EXCEEDED``
with ``Retry-After``), so one user following a job from many tabs or a loop cannot take every
slot. The count is per process, like the slots it shares out: the threads a stream occupies are
a process's, and a count shared across processes would need rows that outlive a killed one.
"""
