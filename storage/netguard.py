"""The address guard: outbound HTTP (callbacks, URL inputs) never reaches internal addresses.

A URL supplied by a user is an invitation to server-side request forgery: ``http://127.0.0.1``,
the cloud metadata service at ``169.254.169.254``, a database on ``10.0.0.5``, or a public name
whose DNS answer points at any of those. :class:`AddressGuard` refuses every address that is
not globally routable unless the operator allow-listed its host name or network.

Checking a URL once is not enough: DNS can answer differently when the connection is made
(rebinding), and a redirect can point anywhere. :func:`guarded_session` therefore resolves and
checks the host itself for *every* connection it opens, and connects to exactly the address it
checked. Shared by the API (callbacks) and the worker (URL inputs); no Flask, no ``api`` imports.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from collections.abc import Sequence
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection as urllib3_connection

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWED_SCHEMES = ("http", "https")
METADATA_ADDRESS = ipaddress.ip_address("169.254.169.254")
#: NAT64's well-known prefix (RFC 6052): 64:ff9b::a.b.c.d reaches IPv4 address a.b.c.d.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
MAX_REDIRECTS = 5
FETCH_CHUNK_BYTES = 64 * 1024
_LEGACY_IPV4 = re.compile(r"[0-9a-fx.]+")


class ForbiddenAddress(ValueError):
    """The URL may not be fetched: bad scheme, no host, or a private/internal address."""


class UnresolvableHost(OSError):
    """The host name does not resolve (a network condition, possibly transient; not a refusal)."""


class FetchTooLarge(ValueError):
    """The response is larger than the size limit; what was written so far is incomplete."""


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64, Teredo), if any."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be contacted, or None if it is a public unicast address."""
    if ip == METADATA_ADDRESS:
        return "the link-local cloud metadata service"
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        inner = forbidden_reason(embedded)
        if inner is not None:
            return f"an IPv6 form of {embedded}, {inner}"
    checks = (
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_reserved, "a reserved address"),
        (ip.is_private, "a private address"),
        # Shared address space (100.64/10), documentation ranges, ...: not on the internet.
        (not ip.is_global, "not a globally routable address"),
    )
    for hit, reason in checks:
        if hit:
            return reason
    return None


def _normalise_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


class AddressGuard:
    """Refuses URLs whose host is not public, unless allow-listed.

    ``allowed`` holds host names (matched exactly, case-insensitively: ``"localhost"``) and
    CIDR blocks or single addresses (``"10.0.0.0/8"``, ``"127.0.0.1/32"``, ``"::1"``). An
    allow-listed host name is trusted whatever it resolves to; an allow-listed network admits
    its addresses whatever name led there.
    """

    def __init__(self, allowed: Sequence[str] = ()) -> None:
        self.networks: list[IPNetwork] = []
        self.hosts: set[str] = set()
        for entry in allowed:
            entry = entry.strip()
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.hosts.add(_normalise_host(entry))

    def __repr__(self) -> str:
        allowed = sorted(self.hosts) + [str(n) for n in self.networks]
        return f"AddressGuard(allowed={allowed!r})"

    def host_allowed(self, host: str) -> bool:
        """Whether the host name itself is allow-listed."""
        return _normalise_host(host) in self.hosts

    def address_allowed(self, ip: IPAddress) -> bool:
        """Whether the address (or the IPv4 address it embeds) is in an allow-listed network."""
        candidates = [ip]
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            candidates.append(embedded)
        return any(c in net for c in candidates for net in self.networks if c.version == net.version)

    def check_address(self, ip: IPAddress, host: str) -> None:
        """Raise :class:`ForbiddenAddress` if ``ip`` (reached through ``host``) may not be contacted."""
        if self.address_allowed(ip):
            return
        reason = forbidden_reason(ip)
        if reason is not None:
            via = "" if host == str(ip) else f" (resolved from {host!r})"
            raise ForbiddenAddress(
                f"host {host!r} is refused: {ip}{via} is {reason}; "
                "an operator may allow it with SKYFLEET_ALLOWED_NETWORKS")

    def resolve(self, host: str, port: int | None) -> list[IPAddress]:
        """All addresses of ``host``, each checked; raises :class:`ForbiddenAddress` if any is refused.

        One forbidden answer refuses the host: a name that mixes public and internal
        addresses is exactly what a rebinding attack looks like.
        """
        host = _normalise_host(host)
        literal = _ip_literal(host)
        if literal is not None:
            self.check_address(literal, host)
            return [literal]
        try:
            infos = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise UnresolvableHost(f"cannot resolve host {host!r}: {exc}") from exc
        addresses: list[IPAddress] = []
        for _family, _type, _proto, _canon, sockaddr in infos:
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if ip not in addresses:
                addresses.append(ip)
        if not self.host_allowed(host):
            for ip in addresses:
                self.check_address(ip, host)
        return addresses

    def check_url(self, url: str, resolve: bool = False) -> str:
        """Check a URL before using it; return its host. Raises :class:`ForbiddenAddress`.

        By default no DNS query is made, so a request handler never waits on DNS (nor fails
        on a name it cannot resolve): the scheme, the presence of a host, literal addresses
        and the ``localhost`` names are checked. What a name resolves to is checked when a
        connection is made (:func:`guarded_session`, :func:`fetch`), which is the check that
        counts anyway, since DNS may answer differently by then. With ``resolve=True`` the
        name is resolved and every address checked now; a name that does not resolve raises
        :class:`UnresolvableHost`.
        """
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ForbiddenAddress(f"invalid URL {url!r}: {exc}") from None
        if parts.scheme.lower() not in ALLOWED_SCHEMES:
            raise ForbiddenAddress(f"URL scheme {parts.scheme or '(none)'!r} is refused: use http or https")
        host = _normalise_host(parts.hostname or "")
        if not host:
            raise ForbiddenAddress(f"URL {url!r} has no host")
        if self.host_allowed(host):
            return host
        if host == "localhost" or host.endswith(".localhost"):
            # RFC 6761: these names always mean the loopback interface, whatever DNS says.
            raise ForbiddenAddress(f"host {host!r} is refused: it is the loopback interface; "
                                   "an operator may allow it with SKYFLEET_ALLOWED_NETWORKS")
        if resolve:
            self.resolve(host, port)
        else:
            literal = _ip_literal(host)
            if literal is not None:
                self.check_address(literal, host)
        return host


def _ip_literal(host: str) -> IPAddress | None:
    """The address a host string denotes by itself, including legacy IPv4 forms (``127.1``,
    ``2130706433``, ``0x7f.0.0.1``) that resolvers accept; None for a host name."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if _LEGACY_IPV4.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _open_checked_socket(guard: AddressGuard, conn: HTTPConnection) -> socket.socket:
    """What urllib3's ``HTTPConnection._new_conn`` does, but resolving and checking the host
    ourselves and connecting to exactly the checked address (no second DNS answer to trust).
    urllib3's own exceptions are raised, so requests reports timeouts and refusals as usual;
    :class:`ForbiddenAddress` is a ValueError, which neither urllib3 nor requests retries.
    """
    try:
        addresses = guard.resolve(conn._dns_host, conn.port)
    except UnresolvableHost as exc:
        gaierror = exc.__cause__ if isinstance(exc.__cause__, socket.gaierror) else socket.gaierror(str(exc))
        raise NameResolutionError(conn.host, conn, gaierror) from exc
    last_error: OSError | None = None
    for ip in addresses:
        try:
            return urllib3_connection.create_connection(
                (str(ip), conn.port), conn.timeout,
                source_address=conn.source_address, socket_options=conn.socket_options)
        except TimeoutError as exc:
            raise ConnectTimeoutError(
                conn, f"Connection to {conn.host} timed out. (connect timeout={conn.timeout})") from exc
        except OSError as exc:
            last_error = exc
    raise NewConnectionError(conn, f"Failed to establish a new connection: {last_error}")


def _pool_classes(guard: AddressGuard) -> dict[str, type[HTTPConnectionPool]]:
    """Connection pools whose connections go through ``guard`` (classes bound to this guard)."""

    class GuardedHTTPConnection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return _open_checked_socket(guard, self)

    class GuardedHTTPSConnection(HTTPSConnection):
        # TLS still verifies the certificate against the host name: only the TCP
        # connection is made to the checked address.
        def _new_conn(self) -> socket.socket:
            return _open_checked_socket(guard, self)

    class GuardedHTTPConnectionPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

    class GuardedHTTPSConnectionPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

    return {"http": GuardedHTTPConnectionPool, "https": GuardedHTTPSConnectionPool}


class GuardedAdapter(HTTPAdapter):
    """A requests adapter whose every new connection (redirects included) is checked by the guard."""

    def __init__(self, guard: AddressGuard, **kwargs: Any) -> None:
        self.guard = guard
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self.guard)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        # Through a proxy we would check the proxy's address, not the target's.
        raise ForbiddenAddress("proxies are not supported by the guarded session")


def guarded_session(guard: AddressGuard) -> requests.Session:
    """A requests session that refuses to connect to any address ``guard`` forbids.

    Proxies from the environment are ignored (``trust_env``) and redirects are limited.
    Callers pass a ``timeout`` on every request, as always with requests.
    """
    session = requests.Session()
    session.trust_env = False
    session.max_redirects = MAX_REDIRECTS
    adapter = GuardedAdapter(guard)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def fetch(url: str, dest: BinaryIO, max_bytes: int, guard: AddressGuard, timeout_s: float) -> int:
    """Stream ``url`` into ``dest``; return the number of bytes written.

    Raises :class:`ForbiddenAddress` for a refused URL (or redirect), :class:`FetchTooLarge`
    past ``max_bytes`` (announced or actual), ``requests.HTTPError`` for a non-2xx answer and
    ``requests.RequestException`` for network failures. ``timeout_s`` bounds the connection
    and each read, and the whole transfer may take at most ten times as long.
    """
    guard.check_url(url, resolve=False)
    deadline = time.monotonic() + 10 * timeout_s
    with guarded_session(guard) as session, session.get(url, stream=True, timeout=timeout_s) as response:
        response.raise_for_status()
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise FetchTooLarge(f"{url} is {int(declared)} bytes, more than the limit of {max_bytes} bytes")
        written = 0
        # iter_content decodes gzip/deflate, so the limit applies to what we store.
        for chunk in response.iter_content(FETCH_CHUNK_BYTES):
            written += len(chunk)
            if written > max_bytes:
                raise FetchTooLarge(f"{url} is larger than the limit of {max_bytes} bytes")
            if time.monotonic() > deadline:
                raise requests.Timeout(f"{url}: the download took longer than {10 * timeout_s:.0f} s")
            dest.write(chunk)
    return written
