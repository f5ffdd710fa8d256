"""Jobs: submit (one or many), follow (events or polling), wait, download, cancel, delete."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from skyfleet_client.errors import JobFailed, SkyfleetError, Unavailable
from skyfleet_client.http import Session

FINISHED = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT"})
#: The events after which a job's stream ends.
FINAL_EVENTS = frozenset({"completed", "failed", "cancelled", "timed_out"})
_CHUNK = 1 << 16


class Job:
    """One job as last read (``data``), and what can be done with it."""

    def __init__(self, jobs: Jobs, data: dict[str, Any]) -> None:
        self._jobs, self.data = jobs, data

    id = property(lambda self: int(self.data["id"]))
    status = property(lambda self: str(self.data["status"]))
    finished = property(lambda self: self.status in FINISHED)

    def __repr__(self) -> str:
        return f"Job(id={self.id}, type={self.data.get('type')!r}, status={self.status!r})"

    def refresh(self) -> Job:
        self.data = self._jobs.get(self.id).data
        return self

    def wait(self, timeout: float | None = None, poll_s: float = 0.5) -> Job:
        """Until the job ends: itself when it SUCCEEDED, else :class:`JobFailed` (carrying the
        job's error code and message); ``TimeoutError`` after ``timeout`` seconds. Polls with
        ``If-None-Match``, so an unchanged job costs the API a 304."""
        deadline = None if timeout is None else time.monotonic() + timeout
        etag = None
        while True:
            response = self._jobs.session.request("GET", f"/api/jobs/{self.id}",
                                                  headers={"If-None-Match": etag} if etag else None)
            if response.status_code == 200:
                self.data, etag = response.json()["data"], response.headers.get("ETag")
            if self.finished:
                if self.status != "SUCCEEDED":
                    raise JobFailed(self.data)
                return self
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {self.id} is still {self.status} after {timeout} s")
            time.sleep(poll_s if deadline is None else max(0.0, min(poll_s, deadline - time.monotonic())))
            poll_s = min(poll_s * 1.5, 2.0)

    def events(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """The job's events as (event, data): a snapshot, status and progress changes, then
        its final event (the iterator ends there). Reconnects with ``Last-Event-ID`` when the
        server ends a stream early; when the server has no stream to spare (503), it polls."""
        last_id: str | None = None
        while True:
            try:
                headers = {"Accept": "text/event-stream"} | ({"Last-Event-ID": last_id} if last_id else {})
                with self._jobs.session.stream("GET", f"/api/jobs/{self.id}/events", headers=headers,
                                               timeout=None) as response:
                    for event_id, event, data in _parse_sse(response.iter_lines()):
                        last_id = event_id or last_id
                        if "status" in data and "id" in data:
                            self.data = data
                        yield event, data
                        if event in FINAL_EVENTS:
                            return
            except Unavailable:
                # No stream to spare: poll with If-None-Match (an unchanged job is a 304) until
                # the job changes, then try the stream again.
                previous = self.status
                if self._poll_until_changed(previous):
                    yield "status", self.data
                if self.finished:
                    yield ("completed" if self.status == "SUCCEEDED" else self.status.lower()), self.data
                    return

    def _poll_until_changed(self, status: str, poll_s: float = 2.0, rounds: int = 15) -> bool:
        """Poll the job with its ETag until its status changes (True) or ``rounds`` polls pass."""
        etag = None
        for _ in range(rounds):
            response = self._jobs.session.request("GET", f"/api/jobs/{self.id}",
                                                  headers={"If-None-Match": etag} if etag else None)
            if response.status_code == 200:
                self.data, etag = response.json()["data"], response.headers.get("ETag")
                if self.status != status:
                    return True
            time.sleep(poll_s)
        return False

    def cancel(self) -> Job:
        self.data = self._jobs.session.call("POST", f"/api/jobs/{self.id}/cancel")
        return self

    def retry(self) -> Job:
        self.data = self._jobs.session.call("POST", f"/api/jobs/{self.id}/retry")
        return self

    def result(self) -> dict[str, Any]:
        """The result payload and output files of a job that succeeded."""
        data: dict[str, Any] = self._jobs.session.call("GET", f"/api/jobs/{self.id}/result")
        return data

    def delete(self) -> int:
        """Delete the finished job's data; how many output objects went."""
        return int(self._jobs.session.call("DELETE", f"/api/jobs/{self.id}")["deleted_objects"])

    def download(self, directory: str | Path) -> list[Path]:
        """Every output file into ``directory``, each checked against its SHA-256; the paths."""
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        paths = []
        for entry in self._jobs.session.call("GET", f"/api/jobs/{self.id}/download"):
            name = Path(entry["name"]).name  # never a path out of the directory
            path = target / name
            digest = hashlib.sha256()
            partial = path.with_name(path.name + ".part")
            same_site = entry["url"].startswith("/")  # a signed link here, or a presigned URL elsewhere
            with self._jobs.session.stream("GET", entry["url"], authenticated=same_site) as response, \
                    open(partial, "wb") as out:
                for chunk in response.iter_bytes(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            if entry.get("sha256") and digest.hexdigest() != entry["sha256"]:
                partial.unlink()
                raise SkyfleetError(f"{name}: SHA-256 {digest.hexdigest()} is not the job's {entry['sha256']}",
                                    "CHECKSUM_MISMATCH")
            partial.replace(path)
            paths.append(path)
        return paths

    def download_zip(self, path: str | Path) -> Path:
        """All output files as one zip at ``path``."""
        target = Path(path)
        with self._jobs.session.stream("GET", f"/api/jobs/{self.id}/download.zip") as response, \
                open(target, "wb") as out:
            out.writelines(response.iter_bytes(_CHUNK))
        return target


def _parse_sse(lines: Iterable[str]) -> Iterator[tuple[str | None, str, dict[str, Any]]]:
    """Server-Sent Events as (id, event, data as JSON); comments and keepalives skipped."""
    event_id: str | None = None
    event, data = "message", list[str]()
    for line in lines:
        if not line:
            if data:
                yield event_id, event, json.loads("\n".join(data))
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "id":
            event_id = value
        elif field == "event":
            event = value
        elif field == "data":
            data.append(value)


def _body(job_type: str, input: dict[str, Any] | None, priority: int | None, run_after: dt.datetime | str | None,
          cache: bool | None, callback_url: str | None, callback_token: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": job_type, "input_payload": input or {}}
    for key, value in (("priority", priority), ("cache", cache), ("callback_url", callback_url),
                       ("callback_token", callback_token)):
        if value is not None:
            body[key] = value
    if run_after is not None:
        body["run_after"] = run_after.isoformat() if isinstance(run_after, dt.datetime) else run_after
    return body


class Jobs:
    """``client.jobs``."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def submit(self, job_type: str, input: dict[str, Any] | None = None, *, priority: int | None = None,
               run_after: dt.datetime | str | None = None, cache: bool | None = None,
               callback_url: str | None = None, callback_token: str | None = None,
               idempotency_key: str | None = None) -> Job:
        """Submit one job (an identical active one is joined, a cached result reused unless
        ``cache=False``). With ``idempotency_key``, sending it again is safe."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        data = self.session.call("POST", "/api/jobs", headers=headers, json=_body(
            job_type, input, priority, run_after, cache, callback_url, callback_token))
        return Job(self, data)

    def submit_many(self, specs: Iterable[dict[str, Any]], batch_size: int | None = None) -> Iterator[Job]:
        """Submit jobs in batches of up to the server's ``max_batch`` (each batch all or nothing);
        each spec is a body of ``POST /api/jobs`` (``{"type", "input_payload", …}``, or ``input``
        for ``input_payload``). Yields the jobs in order, batch by batch."""
        size = batch_size or int(self.session.call("GET", "/api/jobs/limits")["max_batch"])
        batch: list[dict[str, Any]] = []
        for spec in specs:
            body = dict(spec)
            if "input" in body:
                body["input_payload"] = body.pop("input")
            batch.append(body)
            if len(batch) == size:
                yield from self._batch(batch)
                batch = []
        if batch:
            yield from self._batch(batch)

    def _batch(self, bodies: list[dict[str, Any]]) -> list[Job]:
        return [Job(self, data) for data in self.session.call("POST", "/api/jobs/batch", json={"jobs": bodies})]

    def get(self, job_id: int) -> Job:
        return Job(self, self.session.call("GET", f"/api/jobs/{job_id}"))

    def list(self, *, status: str | None = None, type: str | None = None, q: str | None = None,
             created_after: dt.datetime | str | None = None, created_before: dt.datetime | str | None = None,
             sort: str = "-created_at", page_size: int = 100) -> Iterator[Job]:
        """Your jobs (admins: everyone's) matching the filters, every page in turn."""
        params: dict[str, Any] = {"sort": sort}
        for key, value in (("status", status), ("type", type), ("q", q), ("created_after", created_after),
                           ("created_before", created_before)):
            if value is not None:
                params[key] = value.isoformat() if isinstance(value, dt.datetime) else value
        yield from (Job(self, row) for row in self.session.pages("/api/jobs", params, page_size))

    def cancel(self, job_id: int) -> Job:
        return Job(self, self.session.call("POST", f"/api/jobs/{job_id}/cancel"))

    def retry(self, job_id: int) -> Job:
        return Job(self, self.session.call("POST", f"/api/jobs/{job_id}/retry"))

    def delete(self, job_id: int) -> int:
        return int(self.session.call("DELETE", f"/api/jobs/{job_id}")["deleted_objects"])

    def result(self, job_id: int) -> dict[str, Any]:
        data: dict[str, Any] = self.session.call("GET", f"/api/jobs/{job_id}/result")
        return data

    def bulk(self, action: str, ids: Iterable[int] | None = None, **filter: Any) -> dict[str, Any]:
        """Cancel, delete or retry the jobs ``ids``, or up to 1000 jobs a filter matches."""
        body: dict[str, Any] = {"action": action}
        if ids is not None:
            body["ids"] = list(ids)
        else:
            body["filter"] = filter
        data: dict[str, Any] = self.session.call("POST", "/api/jobs/bulk", json=body)
        return data
