"""Where workers run: local subprocesses (the default) or ECS tasks; both speak :class:`Backend`."""

from manager.backends.base import Backend, Gone, Instance, Observation, StartResult, revision_generation

__all__ = ["Backend", "Gone", "Instance", "Observation", "StartResult", "revision_generation"]
