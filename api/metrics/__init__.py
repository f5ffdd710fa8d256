"""Prometheus metrics: ``GET /metrics``, correct across gunicorn processes and API replicas.

Two kinds of figures, each correct by construction:

- **Queue and fleet gauges** (pending per type, due or scheduled; in progress; oldest
  pending age; live and lost workers; ``pending_tasks_total``) are read from PostgreSQL at
  scrape time by :mod:`api.metrics.collector`. They describe the shared database, so every
  process of every replica answers the same, whichever one the scrape reaches.
- **Observations this process made** (results by type and outcome, claim latency and job
  duration histograms, HTTP requests) live in :mod:`api.metrics.process`. Under gunicorn,
  ``api/gunicorn_conf.py`` sets ``PROMETHEUS_MULTIPROC_DIR`` to a fresh directory, each
  worker process writes its values to files there, and a scrape sums the files of every
  process of this server (dead ones included, so counters never go backwards when a
  worker process is replaced). Without that variable (one process, e.g. the Flask test
  client) the default registry is used. Across replicas, Prometheus sums per instance.

The endpoint needs no token: it is meant to be scraped from inside the VPC (keep it off the
public listener, or filter it at the load balancer).
"""
