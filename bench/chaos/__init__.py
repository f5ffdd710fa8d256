"""Fault injection: a real fleet runs a queue of jobs while its parts are killed and restarted.

``python -m bench.chaos`` (``make chaos``) and ``tests/acceptance/test_chaos.py`` run the same
thing at different sizes: a fresh embedded PostgreSQL of its own (so restarting it disturbs no
other test), the API under gunicorn with short leases, and worker processes running ``sleep``
jobs. While they work, workers are SIGKILLed (and some SIGTERMed) and replaced, the API is
SIGKILLed and started again, and PostgreSQL is stopped in immediate mode (a crash) and started
again on the same data directory. At the end the database says whether any job was lost or had
its result accepted twice, and the record of the processes whether a worker quit by itself.

- ``fleet``: the processes and the server, and the faults (kill, terminate, crash, restart);
- ``run``: the options, the fault schedule and the loop that applies it and waits for the drain;
- ``tally``: the figures, read from the database, and their printout.
"""
