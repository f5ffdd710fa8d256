"""The worker protocol's messages, typed once for the API, the worker and the benchmarks.

Every body of ``/api/workers/...`` (register, claim, heartbeat, results, release) and every
answer is a :class:`msgspec.Struct` here: the API decodes requests with :func:`load` (one
pass, in C, with the bounds of the columns the values end up in) and encodes answers from
them; the worker builds its requests from them and reads the answers into them. The storage
layout of an attempt's outputs (:func:`output_prefix`) is defined here too, since the worker
writes there and the API checks that reports point nowhere else.

Text and number hygiene common to every API body (no NUL, no unpaired surrogates, integers
within 64 bits, finite numbers) is checked before decoding, on the parsed JSON
(``api/validation.py``); what is particular to a field (ranges, lengths, enums) is here.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Annotated, Any, Literal, TypeVar

import msgspec

#: Items in one claim's reports, one heartbeat, one results or release batch.
MAX_BATCH = 1000
#: Bounds of a failure report's error code and message (a worker cuts to them).
ERROR_CODE_CHARS = 100
ERROR_MESSAGE_CHARS = 10_000
INT32_MAX = 2**31 - 1

Attempt = Annotated[int, msgspec.Meta(ge=1, le=INT32_MAX, description="The attempt number (the fence).")]
JobId = Annotated[int, msgspec.Meta(ge=1)]
Token = Annotated[uuid.UUID, msgspec.Meta(description="The attempt's fence token, from its claim.")]
JobTypeName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class Message(msgspec.Struct, kw_only=True):
    """Base of every message."""


class Request(Message, forbid_unknown_fields=True):
    """What a worker sends: the API refuses unknown fields (a typo must not pass silently)."""


class Answer(Message):
    """What the API answers: a worker ignores fields it does not know (a newer API may add some)."""


#: The prefix of an attempt's files (``output_prefix``); keys stored before attempts carried a
#: token have none: ``jobs/<id>/attempt-<n>/``.
ATTEMPT_PREFIX = re.compile(r"^jobs/\d+/attempt-\d+(?:-[0-9a-f]{16})?/")


def output_prefix(job_id: int, attempt: int | None = None, token: uuid.UUID | None = None) -> str:
    """Where a job's outputs live in storage: ``jobs/<id>``, and an attempt's files under
    ``jobs/<id>/attempt-<n>-<token>/<name>`` (16 hex digits of its token: an attempt number comes
    round again after a claim a crash rolled back, and two runs must not share a folder)."""
    if attempt is None:
        return f"jobs/{job_id}"
    if token is None:
        raise ValueError("an attempt's prefix needs its token")
    return f"jobs/{job_id}/attempt-{attempt}-{token.hex[:16]}"


# --- register -----------------------------------------------------------------------------------

class Register(Request):
    """``POST /api/workers``: a worker process introduces itself."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    job_types: Annotated[list[JobTypeName], msgspec.Meta(min_length=1, max_length=100)]
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1
    hostname: Annotated[str, msgspec.Meta(max_length=255)] | None = None
    pid: Annotated[int, msgspec.Meta(ge=0, le=INT32_MAX)] | None = None
    ecs_task_arn: Annotated[str, msgspec.Meta(max_length=2048)] | None = None
    ecs_cluster_arn: Annotated[str, msgspec.Meta(max_length=2048)] | None = None
    attributes: dict[str, Any] | None = None


class Registered(Answer):
    """The registration's answer: the worker's id and the settings it must follow."""

    id: int
    name: str
    job_types: list[str]
    concurrency: int
    lease_s: Annotated[float, msgspec.Meta(description="How long a claimed job's lease lasts.")]
    heartbeat_interval_s: Annotated[float, msgspec.Meta(description="Heartbeat this often while holding jobs.")]
    max_claim_batch: int
    max_claim_wait_s: float


# --- reports --------------------------------------------------------------------------------------

class ReportError(Request):
    message: Annotated[str, msgspec.Meta(max_length=ERROR_MESSAGE_CHARS)]
    code: Annotated[str, msgspec.Meta(max_length=ERROR_CODE_CHARS)] = "HANDLER_ERROR"
    permanent: Annotated[bool, msgspec.Meta(description="Do not retry (bad input).")] = False


class ReportedFile(Request):
    """One output file, already written to storage under the attempt's prefix."""

    key: Annotated[str, msgspec.Meta(min_length=1, max_length=1024,
                                     description="Under jobs/<job_id>/attempt-<attempt>-<token>/.")]
    size: Annotated[int, msgspec.Meta(ge=0)]
    name: Annotated[str, msgspec.Meta(max_length=255)] | None = None
    sha256: str | None = None
    content_type: str | None = None


class Report(Request):
    """How one attempt ended. A FAILED report carries an ``error``."""

    job_id: JobId
    attempt: Attempt
    token: Token
    status: Literal["SUCCEEDED", "FAILED", "CANCELLED"]
    result_payload: dict[str, Any] | None = None
    storage_uri: str | None = None
    files: list[ReportedFile] | None = None
    error: ReportError | None = None


class Outcome(Answer, omit_defaults=True):
    """What the API made of one report (``error`` only when it was not accepted)."""

    job_id: int
    attempt: int
    token: uuid.UUID
    accepted: bool
    status: Annotated[str | None, msgspec.Meta(description="The job's status after the report.")] = None
    error: Annotated[dict[str, Any] | None, msgspec.Meta(description="Why it was not accepted.")] = None


class Results(Request):
    """``POST /api/workers/{id}/results``."""

    results: Annotated[list[Report], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class ResultsAnswer(Answer):
    results: list[Outcome]


# --- claim ----------------------------------------------------------------------------------------

class Claim(Request):
    """``POST /api/workers/{id}/claim``: reports first (optional), then up to ``max_jobs`` jobs."""

    max_jobs: Annotated[int, msgspec.Meta(ge=1, le=MAX_BATCH, description="How many free slots the worker has.")] = 1
    wait_s: Annotated[float, msgspec.Meta(ge=0.0, le=60.0, description="Long poll: wait up to this long.")] = 0.0
    job_types: Annotated[list[JobTypeName] | None,
                         msgspec.Meta(description="A subset of the registered types (default: all).")] = None
    results: Annotated[list[Report], msgspec.Meta(max_length=MAX_BATCH,
                                                  description="Finished attempts to report first.")] = []


class InputFile(Answer):
    """An uploaded file the job reads, and where it is stored."""

    file_id: int
    key: str
    size: int
    name: str


class ClaimedJob(Answer):
    """A job a claim took: what the queue engine returns and the worker runs."""

    job_id: int
    token: Annotated[uuid.UUID, msgspec.Meta(description="The attempt's fence: send it with every heartbeat, "
                                                         "report and release of this attempt.")]
    type: str
    attempt: int
    max_attempts: int
    input_payload: dict[str, Any]
    lease_expires_at: dt.datetime
    timeout_s: Annotated[float, msgspec.Meta(description="Stop the job after this long (0: no limit).")]
    input_files: list[InputFile]
    waited_s: Annotated[float, msgspec.Meta(description="Seconds from due to claimed.")] = 0.0


class ClaimAnswer(Answer):
    jobs: list[ClaimedJob]
    drain: Annotated[bool, msgspec.Meta(description="Stop claiming and exit when idle.")]
    results: Annotated[list[Outcome], msgspec.Meta(description="Outcomes of the reports sent with the claim.")]


# --- heartbeat and release ------------------------------------------------------------------------

class Progress(Request, omit_defaults=True):
    percent: float | None = None
    stage: str | None = None
    message: str | None = None


class RunningJob(Request):
    job_id: JobId
    attempt: Attempt
    token: Token
    progress: Progress | None = None


class Heartbeat(Request):
    """``POST /api/workers/{id}/heartbeat``: the attempts the worker holds, with their progress."""

    jobs: Annotated[list[RunningJob], msgspec.Meta(max_length=MAX_BATCH)] = []


class Stop(Answer):
    job_id: int
    attempt: int
    token: uuid.UUID
    reason: Annotated[str, msgspec.Meta(description="cancelled, or lost (no longer yours).")]


class HeartbeatAnswer(Answer):
    stop: list[Stop]
    drain: bool
    lease_expires_at: dt.datetime | None = None


class Release(Request):
    """``POST /api/workers/{id}/release``: running attempts handed back (shutting down)."""

    jobs: Annotated[list[RunningJob], msgspec.Meta(max_length=MAX_BATCH)]


class Released(Answer):
    released: list[int]


#: Every message, for the OpenAPI document.
MESSAGES: tuple[type[Message], ...] = (
    Register, Registered, Claim, ClaimAnswer, Heartbeat, HeartbeatAnswer, Results, ResultsAnswer, Release, Released,
)

M = TypeVar("M", bound=Message)


class ProtocolError(ValueError):
    """A body that is not the message it should be: ``fields`` maps a dotted path to reasons."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{path}: {' '.join(why)}" for path, why in fields.items()))
        self.fields = fields


_AT = re.compile(r"^(?P<why>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>[^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]*)`$")


def _dotted(path: str) -> str:
    """``.results[0].attempt`` → ``results.0.attempt``."""
    return re.sub(r"\[(\d+)\]", r".\1", path).strip(".")


def problem(exc: msgspec.ValidationError) -> dict[str, list[str]]:
    """msgspec's message as ``{field path: [reason]}`` (``_body`` for the body as a whole)."""
    match = _AT.match(str(exc))
    why, path = (match["why"], _dotted(match["path"] or "")) if match else (str(exc), "")
    for pattern, reason in ((_UNKNOWN, "unknown field"), (_MISSING, "missing required field")):
        named = pattern.match(why)
        if named:
            path, why = ".".join(p for p in (path, named["name"]) if p), reason
    return {path or "_body": [why]}


def load(kind: type[M], body: Any) -> M:
    """``body`` (parsed JSON) as a ``kind``; :class:`ProtocolError` naming the field if it is not."""
    if body is None:
        body = {}
    try:
        message = msgspec.convert(body, kind)
    except msgspec.ValidationError as exc:
        raise ProtocolError(problem(exc)) from None
    check = _CHECKS.get(kind)
    if check is not None:
        check(message)
    return message


def read(kind: type[M], body: Any) -> M:
    """An answer of the API (parsed JSON) as a ``kind``, for a worker; :class:`ProtocolError` if
    it is not one."""
    try:
        return msgspec.convert(body, kind)
    except msgspec.ValidationError as exc:
        raise ProtocolError(problem(exc)) from None


def dump(message: Message) -> Any:
    """A message as plain JSON-able Python (datetimes as ISO 8601 strings)."""
    return msgspec.to_builtins(message)


def _check_reports(reports: list[Report], field: str) -> None:
    """A FAILED report says why; an attempt publishes files only under its own prefix."""
    problems: dict[str, list[str]] = {}
    for i, report in enumerate(reports):
        if report.status == "FAILED" and report.error is None:
            problems[f"{field}.{i}.error"] = ["a FAILED report needs an error"]
        prefix = output_prefix(report.job_id, report.attempt, report.token) + "/"
        for j, entry in enumerate(report.files or ()):
            why = _key_problem(entry.key) or (None if entry.key.startswith(prefix) else f"must be under {prefix}")
            if why:
                problems[f"{field}.{i}.files.{j}.key"] = [why]
    if problems:
        raise ProtocolError(problems)


def _key_problem(key: str) -> str | None:
    from storage import InvalidKey, validate_key

    try:
        validate_key(key)
    except InvalidKey as exc:
        return str(exc)
    return None


def _check_job_types(names: list[str] | None, field: str) -> None:
    from jobtypes.catalogue import get_job_type, job_type_names

    problems = {f"{field}.{i}": [f"unknown job type {name!r}; known types: {', '.join(job_type_names())}"]
                for i, name in enumerate(names or ()) if get_job_type(name) is None}
    if problems:
        raise ProtocolError(problems)


def _check_claim(claim: Claim) -> None:
    _check_job_types(claim.job_types, "job_types")
    _check_reports(claim.results, "results")


_CHECKS: dict[type[Message], Any] = {
    Register: lambda m: _check_job_types(m.job_types, "job_types"),
    Claim: _check_claim,
    Results: lambda m: _check_reports(m.results, "results"),
}
