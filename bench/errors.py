"""The benchmark's one exception: a scenario that could not be measured."""


class BenchError(RuntimeError):
    """A scenario could not be measured (something did not start, stalled or failed)."""
