"""A fault-injecting HTTP proxy: put it between workers and the API to stage outages and bad answers.

It forwards every request to the API unless a fault matches: then it answers with the fault's
status (503, 500, …) in the API's error envelope, or drops the connection unanswered. Every
exchange is recorded, so a test can wait for what the worker tried (say, to report a job).
"""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

#: Which requests a fault applies to: (path, JSON body or None) → bool.
Match = Callable[[str, Any], bool]
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "proxy-connection"}
CODES = {401: "UNAUTHORIZED", 429: "RATE_LIMIT_EXCEEDED", 500: "INTERNAL_ERROR", 502: "BAD_GATEWAY",
         503: "SERVICE_UNAVAILABLE", 504: "GATEWAY_TIMEOUT"}


@dataclass
class Fault:
    #: The status to answer; None drops the connection without an answer.
    status: int | None
    when: Match
    retry_after: str | None = None
    #: Answer 401 to an expired bearer token, as the API does even while its database is down
    #: (it checks tokens without it); the login, and everything else, gets ``status``.
    expired_tokens_401: bool = False
    #: How many requests it applies to (None: until healed).
    times: int | None = None
    hits: int = 0


@dataclass(frozen=True)
class Exchange:
    method: str
    path: str
    body: Any
    #: What the worker got: the API's status, the fault's, or None (dropped).
    status: int | None


def reports_in(body: Any) -> list[dict[str, Any]]:
    """The reports a claim or results body carries."""
    results = body.get("results") if isinstance(body, dict) else None
    return [r for r in results if isinstance(r, dict)] if isinstance(results, list) else []


def _expired(authorization: str | None) -> bool:
    if not authorization or not authorization.startswith("Bearer "):
        return False
    try:
        payload = authorization.split()[1].split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"]) <= time.time()
    except (IndexError, KeyError, TypeError, ValueError):
        return False


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        self.upstream_host, self.upstream_port = target.hostname or "127.0.0.1", target.port or 80
        self.faults: list[Fault] = []
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True).start()

    def fail(self, status: int = 503, when: Match | None = None, retry_after: str | None = None,
             times: int | None = None) -> Fault:
        """Answer ``status`` to the requests ``when`` matches (all, by default)."""
        return self._add(Fault(status, when or (lambda path, body: True), retry_after, times=times))

    def drop(self, when: Match | None = None, times: int | None = None) -> Fault:
        """Close the connection of the matching requests without answering."""
        return self._add(Fault(None, when or (lambda path, body: True), times=times))

    def outage(self) -> Fault:
        """Answer as the API does while its database is down: 503, or 401 for an expired token."""
        return self._add(Fault(503, lambda path, body: True, expired_tokens_401=True))

    def heal(self) -> None:
        with self._lock:
            self.faults.clear()

    def seen(self, path: str = "", status: int | None = -1, where: Match | None = None) -> list[Exchange]:
        """Exchanges whose path contains ``path``, answered ``status`` (-1: any), matching ``where``."""
        with self._lock:
            return [e for e in self.exchanges if path in e.path and (status == -1 or e.status == status)
                    and (where is None or where(e.path, e.body))]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def _fault_for(self, path: str, body: Any) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if (fault.times is None or fault.hits < fault.times) and fault.when(path, body):
                    fault.hits += 1
                    return fault
        return None

    def _record(self, exchange: Exchange) -> None:
        with self._lock:
            self.exchanges.append(exchange)

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the worker's session expects

            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def _serve(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                fault = proxy._fault_for(self.path, body)
                if fault is None:
                    status = self._forward(raw)
                elif fault.status is None:
                    self.close_connection = True
                    status = None
                elif fault.expired_tokens_401 and _expired(self.headers.get("Authorization")):
                    status = self._answer(401, "access token expired; refresh it")
                else:
                    status = self._answer(fault.status, "injected fault", fault.retry_after)
                proxy._record(Exchange(self.command, self.path, body, status))

            def _answer(self, status: int, message: str, retry_after: str | None = None) -> int:
                envelope = {"success": False, "error": {"code": CODES.get(status, "ERROR"), "message": message}}
                payload = json.dumps(envelope).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                if retry_after is not None:
                    self.send_header("Retry-After", retry_after)
                self.end_headers()
                self.wfile.write(payload)
                return status

            def _forward(self, raw: bytes) -> int:
                upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                    upstream.request(self.command, self.path, body=raw or None, headers=headers)
                    response = upstream.getresponse()
                    payload = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    return self._answer(502, f"the API is unreachable: {exc}")
                finally:
                    upstream.close()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in HOP_BY_HOP | {"server", "date"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return response.status

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@contextmanager
def fault_proxy(upstream: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream)
    try:
        yield proxy
    finally:
        proxy.close()
