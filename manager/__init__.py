"""The manager: scales each pool's workers to its queue depth (local processes or ECS tasks).

An HTTP client of the API with a MANAGER service account; it never touches the database.
``config`` (settings and pools), ``policy`` (the pure ``desired_workers``), ``backends``
(``local`` and ``ecs``), ``loop`` (observe → decide → act → record), ``api_client``.
"""
