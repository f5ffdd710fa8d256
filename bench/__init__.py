"""Benchmarks of a real skyfleet fleet on this machine: ``python -m bench`` (``make bench``).

What each scenario measures, and how, is described in ``bench/__main__.py``. The modules:

- ``__main__``: the command line and the scenario loop;
- ``options``: the size options with their full and ``--quick`` defaults;
- ``fleet``: the embedded PostgreSQL, the API under gunicorn and worker processes, and stopping them;
- ``clients``: the benchmark's own database connection and HTTP clients;
- ``waiting``: polling for a condition, and for the workers to drain the queue;
- ``figures``: figure records, targets and their formatting; ``report``: summary and results.json;
- ``cpu``: CPU accounting per role from /proc; ``cputree``: the same, counting processes that exited;
- ``children``: child processes of the peers and scale scenarios;
- ``errors``: :class:`~bench.errors.BenchError`;
- one module per scenario: ``enqueue``, ``throughput`` (run through ``writes``, which adds the rows
  and CPU per job), ``latency``, ``peers`` (with ``bare`` and ``pgq``, the two peers, and ``ratios``,
  skyfleet / peer), ``rescue``, ``claim``, ``manager``, ``jobtypes`` (with ``astro_inputs``, its
  inputs, and ``direct``, the direct run), ``scale`` (with ``swarm``, the simulated workers).
"""
