"""The benchmark's own clients: a psycopg connection, logged-in HTTP sessions, parallel posting."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import psycopg
import requests

from api.database import libpq_url
from bench.errors import BenchError

RUN_ID = uuid.uuid4().hex[:8]
HTTP_TIMEOUT_S = 60.0

T = TypeVar("T")


class Db:
    """One autocommit psycopg connection for the benchmark's own reads and set-up."""

    def __init__(self, database_url: str) -> None:
        self.conn = psycopg.connect(libpq_url(database_url), autocommit=True)

    def rows(self, query: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Every row of the query's answer."""
        return self.conn.execute(query, params).fetchall()

    def one(self, query: str, params: Sequence[Any] | None = None) -> tuple[Any, ...] | None:
        """The first row, or None."""
        return self.conn.execute(query, params).fetchone()

    def value(self, query: str, params: Sequence[Any] | None = None) -> Any:
        """The first column of the first row, or None."""
        row = self.one(query, params)
        return None if row is None else row[0]

    def execute(self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> None:
        """Run a statement (autocommit)."""
        self.conn.execute(query, params)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


class Api:
    """A logged-in HTTP client; one per thread (a requests session is not shared between threads)."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.token = token
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def clone(self) -> Api:
        """Another client with the same token and its own keep-alive connection."""
        return Api(self.base_url, self.token)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST and return the envelope's ``data``; BenchError on an error status."""
        response = self.session.post(f"{self.base_url}{path}", json=body, timeout=HTTP_TIMEOUT_S)
        if response.status_code >= 400:
            raise BenchError(f"POST {path}: HTTP {response.status_code}: {response.text[:300]}")
        return response.json()["data"]

    def close(self) -> None:
        """Close the keep-alive connection."""
        self.session.close()


def login(base_url: str, email: str, password: str) -> str:
    """An access token for the account."""
    response = requests.post(f"{base_url}/api/auth/login", json={"email": email, "password": password},
                             timeout=HTTP_TIMEOUT_S)
    if response.status_code != 200:
        raise BenchError(f"login as {email} failed: HTTP {response.status_code}: {response.text[:300]}")
    return str(response.json()["data"]["access_token"])


def noop_jobs(prefix: str, count: int) -> list[dict[str, Any]]:
    """``count`` distinct noop submissions (a unique tag each, or they would be deduplicated)."""
    return [{"type": "noop", "input_payload": {"tag": f"{RUN_ID}-{prefix}-{i}"}} for i in range(count)]


def in_batches(items: list[T], size: int) -> list[list[T]]:
    """``items`` cut into consecutive lists of at most ``size``."""
    return [items[i:i + size] for i in range(0, len(items), size)]


def post_parallel(api: Api, path: str, bodies: list[dict[str, Any]],
                  clients: int) -> tuple[float, list[float]]:
    """POST every body to ``path`` from ``clients`` threads; (wall seconds, per-request seconds)."""
    lock = threading.Lock()
    todo = iter(bodies)
    latencies: list[float] = []
    errors: list[BaseException] = []

    def client() -> None:
        mine = api.clone()
        try:
            while not errors:
                with lock:
                    body = next(todo, None)
                if body is None:
                    return
                started = time.perf_counter()
                mine.post(path, body)
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
        except Exception as exc:  # noqa: BLE001 — raised again in the calling thread
            errors.append(exc)
        finally:
            mine.close()

    threads = [threading.Thread(target=client, name=f"bench-client-{i}", daemon=True) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if errors:
        raise BenchError(f"a client failed: {errors[0]}") from errors[0]
    return wall, latencies


def submit_batches(api: Api, jobs: list[dict[str, Any]], batch_size: int, clients: int) -> float:
    """Submit jobs through ``POST /api/jobs/batch``; the wall seconds it took."""
    bodies = [{"jobs": chunk} for chunk in in_batches(jobs, batch_size)]
    wall, _ = post_parallel(api, "/api/jobs/batch", bodies, clients)
    return wall
