"""Maintenance services: small units with a repeatable ``run_once()``, one active copy at a time.

Every API process starts a :class:`~api.maintenance.runner.MaintenanceRunner`; the one that
holds the PostgreSQL advisory lock runs the services, the others wait to take over.
"""
