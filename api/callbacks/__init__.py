"""Callbacks: an outbox of HTTP POSTs announcing that a job ended, delivered at least once."""
