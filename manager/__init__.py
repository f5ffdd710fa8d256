"""The manager: scales workers to match queue depth (local processes or ECS tasks).

Not built yet; it arrives with its own issue. It will be an HTTP client of the API with a
MANAGER service account, like the workers, and never touch the database.
"""
