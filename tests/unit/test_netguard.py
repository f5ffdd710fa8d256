"""The address guard: which URLs may be fetched, and the connection-time check of the session.

Only literal addresses and ``localhost`` (no external network here); the session tests use a
server on 127.0.0.1, which is the one kind of socket a unit test may open.
"""

from __future__ import annotations

import http.server
import io
import ipaddress
import threading
from collections.abc import Iterator

import pytest
import requests

from storage.netguard import (
    AddressGuard,
    FetchTooLarge,
    ForbiddenAddress,
    UnresolvableHost,
    fetch,
    forbidden_reason,
    guarded_session,
)


@pytest.mark.parametrize("url, why", [
    ("http://127.0.0.1/x", "loopback"),
    ("http://127.8.9.10:8080/x", "loopback"),
    ("http://[::1]/x", "loopback"),
    ("http://localhost:8000/x", "loopback"),
    ("http://api.localhost/x", "loopback"),
    ("http://10.1.2.3/x", "private"),
    ("http://172.16.0.1/x", "private"),
    ("http://192.168.1.1/x", "private"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://169.254.1.1/x", "link-local"),
    ("http://[fe80::1]/x", "link-local"),
    ("http://[fd00::1]/x", "private"),
    ("http://224.0.0.1/x", "multicast"),
    ("http://[ff02::1]/x", "multicast"),
    ("http://0.0.0.0/x", "unspecified"),
    ("http://240.0.0.1/x", "reserved"),
    ("http://100.64.0.1/x", "not a globally routable"),
    ("http://[::ffff:127.0.0.1]/x", "IPv6 form of 127.0.0.1, a loopback"),
    ("http://[::ffff:169.254.169.254]/x", "metadata"),
    ("http://[64:ff9b::a00:1]/x", "IPv6 form of 10.0.0.1"),
    ("http://[2002:7f00:1::]/x", "IPv6 form of 127.0.0.1"),
    ("http://2130706433/x", "loopback"),  # 127.0.0.1 as one decimal number
    ("http://0x7f.1/x", "loopback"),
])
def test_internal_addresses_are_refused_without_dns(url: str, why: str) -> None:
    guard = AddressGuard()
    for resolve in (False, True):
        with pytest.raises(ForbiddenAddress, match=why) as caught:
            guard.check_url(url, resolve=resolve)
        assert "is refused" in str(caught.value)


@pytest.mark.parametrize("url, why", [
    ("ftp://8.8.8.8/x", "scheme 'ftp'"),
    ("file:///etc/passwd", "scheme 'file'"),
    ("gopher://8.8.8.8/", "scheme"),
    ("8.8.8.8/x", "scheme"),
    ("http:///x", "no host"),
    ("http://8.8.8.8:99999/x", "invalid URL"),
])
def test_bad_schemes_and_missing_hosts_are_refused(url: str, why: str) -> None:
    with pytest.raises(ForbiddenAddress, match=why):
        AddressGuard().check_url(url, resolve=True)


def test_public_addresses_pass() -> None:
    guard = AddressGuard()
    assert guard.check_url("https://8.8.8.8/cb") == "8.8.8.8"
    assert guard.check_url("http://[2001:4860:4860::8888]:8080/cb") == "2001:4860:4860::8888"
    # Without DNS a name is left to the connection-time check.
    assert guard.check_url("https://example.org/cb") == "example.org"


def test_allow_list_by_network_and_by_host_name() -> None:
    guard = AddressGuard(["127.0.0.1/32", "10.0.0.0/8", " LocalHost. ", ""])
    guard.check_url("http://127.0.0.1:5000/cb")
    guard.check_url("http://[::ffff:127.0.0.1]/cb")  # the same address, IPv6-mapped
    guard.check_url("http://10.200.3.4/cb")
    guard.check_url("http://localhost:5000/cb", resolve=True)
    guard.check_url("http://LOCALHOST/cb")
    with pytest.raises(ForbiddenAddress, match="127.0.0.2"):
        guard.check_url("http://127.0.0.2/cb")
    with pytest.raises(ForbiddenAddress, match="metadata"):
        guard.check_url("http://169.254.169.254/")
    assert "localhost" in repr(guard) and "10.0.0.0/8" in repr(guard)


def test_localhost_resolves_to_loopback_and_is_refused_unless_allowed() -> None:
    with pytest.raises(ForbiddenAddress, match=r"resolved from 'localhost'"):
        AddressGuard().resolve("localhost", 80)
    addresses = AddressGuard(["localhost"]).resolve("localhost", 80)
    assert ipaddress.ip_address("127.0.0.1") in addresses


def test_a_name_that_does_not_resolve_is_not_a_refusal() -> None:
    with pytest.raises(UnresolvableHost, match="nonexistent.invalid"):
        AddressGuard().check_url("http://nonexistent.invalid/cb", resolve=True)
    # Without resolve (the default) nothing is asked of DNS.
    assert AddressGuard().check_url("http://nonexistent.invalid/cb") == "nonexistent.invalid"


def test_forbidden_reason_of_public_addresses_is_none() -> None:
    for address in ("8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "2002:808:808::"):
        assert forbidden_reason(ipaddress.ip_address(address)) is None


class _Handler(http.server.BaseHTTPRequestHandler):
    """/data: 1000 bytes; /chunked: 1000 bytes with no Content-Length; /to?u=: a redirect."""

    def do_GET(self) -> None:
        if self.path.startswith("/to?u="):
            self.send_response(302)
            self.send_header("Location", self.path[len("/to?u="):])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/chunked":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"y" * 1000)
        elif self.path == "/missing":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_fetch_streams_within_the_limit(server: str) -> None:
    guard = AddressGuard(["127.0.0.1/32"])
    for path in ("/data", "/chunked"):
        out = io.BytesIO()
        assert fetch(server + path, out, 1000, guard, timeout_s=5) == 1000
        assert len(out.getvalue()) == 1000


def test_fetch_refuses_past_the_limit_announced_or_not(server: str) -> None:
    guard = AddressGuard(["127.0.0.1/32"])
    with pytest.raises(FetchTooLarge, match="1000 bytes, more than the limit of 999"):
        fetch(server + "/data", io.BytesIO(), 999, guard, timeout_s=5)
    out = io.BytesIO()
    with pytest.raises(FetchTooLarge, match="larger than the limit of 999"):
        fetch(server + "/chunked", out, 999, guard, timeout_s=5)
    assert len(out.getvalue()) < 1000


def test_fetch_reports_http_errors(server: str) -> None:
    with pytest.raises(requests.HTTPError, match="404"):
        fetch(server + "/missing", io.BytesIO(), 1000, AddressGuard(["127.0.0.1/32"]), timeout_s=5)


def test_fetch_of_a_forbidden_address_never_connects(server: str) -> None:
    with pytest.raises(ForbiddenAddress, match="127.0.0.1"):
        fetch(server + "/data", io.BytesIO(), 1000, AddressGuard(), timeout_s=5)


def test_the_session_checks_the_resolved_address_of_a_name(server: str) -> None:
    # "localhost" passes a check without DNS only because the names are special-cased; the
    # session resolves it and refuses the loopback address it gets.
    port = server.rsplit(":", 1)[1]
    refused = pytest.raises(ForbiddenAddress, match=r"127.0.0.1 \(resolved from 'localhost'\)")
    with guarded_session(AddressGuard(["127.0.0.2/32"])) as session, refused:
        session.get(f"http://localhost:{port}/data", timeout=5)
    with guarded_session(AddressGuard(["localhost"])) as session:
        assert session.get(f"http://localhost:{port}/data", timeout=5).content == b"x" * 1000


def test_redirects_are_checked_at_every_hop(server: str) -> None:
    port = server.rsplit(":", 1)[1]
    guard = AddressGuard(["127.0.0.1/32"])
    with guarded_session(guard) as session:
        ok = session.get(f"{server}/to?u={server}/data", timeout=5)
        assert ok.status_code == 200 and len(ok.content) == 1000
        # The first hop is allowed; the redirect target (another loopback address) is not.
        with pytest.raises(ForbiddenAddress, match="127.0.0.2"):
            session.get(f"{server}/to?u=http://127.0.0.2:{port}/data", timeout=5)
        with pytest.raises(ForbiddenAddress, match="metadata"):
            session.get(f"{server}/to?u=http://169.254.169.254/latest/meta-data/", timeout=5)
