"""Maintenance services: one concern each, one shape, one active copy at a time.

Each service has a config dataclass with named defaults and a ``from_settings`` classmethod,
and a ``run_once()`` that does one bounded, repeatable pass and returns what it did:

- :class:`~api.maintenance.rescuer.LeaseRescuer` takes back attempts whose lease expired;
- :class:`~api.maintenance.reaper.WorkerReaper` marks the workers not heard from for
  ``worker_lost_after_s`` stopped;
- :class:`~api.maintenance.pruner.JobPruner` deletes old finished jobs and their outputs;
- the :mod:`~api.maintenance.records` pruners delete the records that only need keeping for
  a while (rate-limit windows, scaling decisions, idempotency keys, console sessions);
- :class:`~api.maintenance.callbacks.CallbackDispatcher` POSTs the callback outbox.

:func:`~api.maintenance.services.build_services` builds them from the API settings. Every API
process starts a :class:`~api.maintenance.runner.MaintenanceRunner`; the one that holds the
PostgreSQL advisory lock runs each service on its own interval, the others wait to take over.
"""
