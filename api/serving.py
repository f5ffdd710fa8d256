"""A quick, clean stop for the API's gevent workers (installed from ``api/gunicorn_conf.py``).

On SIGTERM gunicorn's gevent worker stops accepting and waits, up to ``graceful_timeout``,
until no connection is open. Two kinds of connection would make every stop last that long:
long polls (a parked claim waits up to ``max_claim_wait_s``) and idle keep-alive connections
(a worker's, between two heartbeats; they stay open for ``keepalive`` seconds, longer than a
load balancer's idle timeout). So on SIGTERM the app is quiesced (:func:`api.app.quiesce`:
parked claims answered, maintenance stopped) and the idle keep-alive connections are shut;
requests in flight run to their end, and their responses close their connections.
"""

from __future__ import annotations

import _socket
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Connections:
    """The worker's client connections, and which of them are inside a request right now."""

    def __init__(self) -> None:
        self.busy: dict[socket.socket, bool] = {}

    def shut_idle(self) -> int:
        """Shut the connections waiting for their next request; how many."""
        idle = [conn for conn, busy in list(self.busy.items()) if not busy]
        for conn in idle:
            shut(conn)
        return len(idle)


@contextmanager
def _descriptor(conn: socket.socket) -> Iterator[_socket.socket | None]:
    """The connection's descriptor as a plain socket (None: already closed), bypassing the
    server's socket object: under gevent that one would wait where these calls answer at once,
    or interrupt the greenlet reading it with an error."""
    try:
        raw = _socket.socket(fileno=conn.fileno())
    except OSError:
        yield None
        return
    try:
        yield raw
    finally:
        raw.detach()


def shut(conn: socket.socket) -> None:
    """Shut a connection down at the kernel: the greenlet reading it sees the end of the stream
    and its handler returns quietly."""
    with _descriptor(conn) as raw:
        if raw is not None:
            try:
                raw.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def hung_up(conn: socket.socket) -> bool:
    """Whether the client closed this connection (a killed worker: its kernel closed the
    socket). Behind a proxy that keeps its own connection open (an ALB) this sees nothing."""
    with _descriptor(conn) as raw:
        if raw is None:
            return True
        try:
            return raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True


def install(worker: Any, quiesce: Any) -> Connections:
    """Track ``worker``'s connections and make its SIGTERM quiesce ``worker.wsgi`` first."""
    import gevent

    connections = Connections()
    handle, handle_request = worker.handle, worker.handle_request

    def tracked_handle(listener: Any, client: socket.socket, addr: Any) -> None:
        connections.busy[client] = False
        try:
            handle(listener, client, addr)
        finally:
            connections.busy.pop(client, None)

    def tracked_request(listener_name: Any, req: Any, sock: socket.socket, addr: Any) -> Any:
        connections.busy[sock] = True
        try:
            return handle_request(listener_name, req, sock, addr)
        finally:
            if sock in connections.busy:
                connections.busy[sock] = False
                if not worker.alive:  # stopping: this connection has served its last request
                    shut(sock)

    worker.handle, worker.handle_request = tracked_handle, tracked_request
    stop_serving = worker.handle_exit

    def stop() -> None:
        quiesce(worker.wsgi)
        shut = connections.shut_idle()
        worker.log.info("stopping: parked claims answered, %d idle connection(s) closed", shut)

    def on_term(signum: int, frame: Any) -> None:
        stop_serving(signum, frame)
        gevent.spawn(stop)  # out of the signal handler: quiescing takes locks

    signal.signal(signal.SIGTERM, on_term)
    return connections
