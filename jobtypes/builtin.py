"""Built-in job types for tests, benchmarks and smoke checks: ``noop`` and ``sleep``."""

from marshmallow import Schema, fields, validate

from jobtypes.catalogue import JobType, RetryPolicy, register

MAX_SLEEP_S = 3600.0


class NoopInput(Schema):
    """Does nothing; ``tag`` makes otherwise identical submissions distinct."""

    tag = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))


class NoopResult(Schema):
    ok = fields.Boolean(required=True)
    tag = fields.String(allow_none=True)


class SleepInput(Schema):
    """Sleeps, optionally failing: the knobs the queue's tests need."""

    seconds = fields.Float(load_default=0.0, validate=validate.Range(min=0.0, max=MAX_SLEEP_S))
    #: Fail this many attempts (1 = the first attempt fails, the retry succeeds).
    fail_attempts = fields.Integer(strict=True, load_default=0, validate=validate.Range(min=0, max=100))
    #: Fail with a permanent error (no retry) instead of a retryable one.
    permanent = fields.Boolean(load_default=False)
    #: "sleep"; "spin" burns the CPU (checking for cancellation); "hang" burns it holding the GIL
    #: and ignores cancellation (the worker must kill it after its grace period).
    mode = fields.String(load_default="sleep", validate=validate.OneOf(["sleep", "spin", "hang"]))
    tag = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))


class SleepResult(Schema):
    slept_s = fields.Float(required=True)
    attempt = fields.Integer(required=True)
    tag = fields.String(allow_none=True)


NOOP = register(
    JobType(
        name="noop",
        handler="worker.jobs.builtin:run_noop",
        description="Does nothing and succeeds at once (benchmarks).",
        input_schema=NoopInput,
        result_schema=NoopResult,
        timeout_s=60.0,
    )
)

SLEEP = register(
    JobType(
        name="sleep",
        handler="worker.jobs.builtin:run_sleep",
        description="Sleeps for `seconds`, optionally failing the first `fail_attempts` attempts.",
        input_schema=SleepInput,
        result_schema=SleepResult,
        timeout_s=MAX_SLEEP_S + 60.0,
        retry=RetryPolicy(max_attempts=3, backoff_base_s=1.0, backoff_cap_s=60.0),
    )
)
