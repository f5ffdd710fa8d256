"""Benchmarks of a real skyfleet fleet on this machine: ``python -m bench`` (``make bench``)."""
