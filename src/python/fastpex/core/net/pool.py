"""Keep-alive connections per route (proxy, origin), and the watchdog that bounds a stuck request.

A route through a proxy connects to the proxy: for an http origin the requests go to it in
absolute form (a forward proxy); for an https origin the connection opens a CONNECT tunnel and
then speaks TLS to the origin through it, checking the origin's certificate as a direct one would.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from fastpex.core.net.proxy import Proxy
from fastpex.core.net.addresses import AddressCache

__all__ = [
    "WATCHDOG",
    "ConnectionPool",
    "Origin",
    "ProxyUnreachable",
    "Release",
    "Route",
    "TunnelRefused",
    "origin_of",
    "lazy_tls_context",
    "tls_context",
]


class _Watchdog:
    """One thread that shuts down sockets whose deadline passed (a request stuck in a read
    that keeps receiving a byte now and then never hits the socket's own timeout)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: Dict[int, Tuple[float, socket.socket]] = {}
        self._next_id = 0
        self._thread: Optional[threading.Thread] = None
        self._wake_at = 0.0  # when the thread wakes next on its own

    def arm(self, sock: socket.socket, seconds: float) -> int:
        with self._cond:
            self._next_id += 1
            deadline = time.monotonic() + seconds
            self._armed[self._next_id] = (deadline, sock)
            if self._thread is None or not self._thread.is_alive():  # none yet, or lost in a fork
                self._thread = threading.Thread(target=self._run, name="fastpex-http-watchdog", daemon=True)
                self._thread.start()
            elif deadline < self._wake_at:
                self._cond.notify()  # only when it would otherwise sleep past this deadline
            return self._next_id

    def disarm(self, ident: int) -> bool:
        """Stop watching; False if the deadline had already passed (the socket was shut)."""
        with self._cond:
            return self._armed.pop(ident, None) is not None

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [k for k, (deadline, _) in self._armed.items() if deadline <= now]
                expired = [self._armed.pop(k)[1] for k in due]
                wait = min((d for d, _ in self._armed.values()), default=now + 60.0) - now
                if not expired:
                    self._wake_at = now + max(0.01, wait)
                    self._cond.wait(max(0.01, wait))
                    continue
            for sock in expired:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


WATCHDOG = _Watchdog()

Origin = Tuple[str, str, int]


def origin_of(url: str) -> Origin:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


_tls_contexts: Dict[Tuple[object, ...], ssl.SSLContext] = {}
_tls_lock = threading.Lock()


def tls_context(ca_bundle: Optional[str] = None) -> ssl.SSLContext:
    """The verifying client context for `ca_bundle`, else the system store (which honours
    `SSL_CERT_FILE` / `SSL_CERT_DIR`): one per process and trust store, shared by every pool.
    Loading the system store is ~26 ms of CPU, which each new client paid before its first
    connection; the key holds the store's settings and files, so a changed one gets a new context."""
    def stat(path: Optional[str]) -> object:
        if not path:
            return None
        try:
            found = os.stat(path)
        except OSError:
            return (path, None)
        return (path, found.st_mtime_ns, found.st_size)

    key = (stat(ca_bundle), stat(os.environ.get("SSL_CERT_FILE")), os.environ.get("SSL_CERT_DIR"))
    with _tls_lock:
        context = _tls_contexts.get(key)
        if context is None:
            context = _tls_contexts[key] = ssl.create_default_context(cafile=ca_bundle)
        return context


def lazy_tls_context() -> Optional[ssl.SSLContext]:
    """The system store's hashed CA directory alone (`SSL_CERT_DIR` or OpenSSL's default), as
    a verifying context like `tls_context()`'s: OpenSSL reads a CA from it when a chain needs
    one, so making it costs ~1.5 ms instead of parsing the whole bundle file (~26 ms). It trusts
    a subset of what `tls_context()` trusts (the system store is that file and this directory),
    so a pool retries a certificate it fails with `tls_context()`: what is trusted is unchanged.
    None when `SSL_CERT_FILE` names the store (that file is the point) or there is no directory."""
    if os.environ.get("SSL_CERT_FILE"):
        return None
    directory = ssl.get_default_verify_paths().capath  # None unless an existing directory
    if not directory:
        return None
    key = ("directory only", directory)
    with _tls_lock:
        context = _tls_contexts.get(key)
        if context is None:
            context = _tls_contexts[key] = ssl.create_default_context(capath=directory)
        return context


# Connections are pooled per route: the same origin through another proxy (or directly) is
# another connection, as is the same proxy with other credentials.
Route = Tuple[Optional[Proxy], Origin]


class ProxyUnreachable(OSError):
    """The TCP connection to the proxy failed (not the origin behind it)."""

    def __init__(self, proxy: Proxy, cause: OSError) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.proxy = proxy
        self.cause = cause


class TunnelRefused(OSError):
    """The proxy answered CONNECT with a status other than 2xx."""

    def __init__(self, proxy: Proxy, status: int, reason: str) -> None:
        super().__init__(f"the proxy answered CONNECT with HTTP {status} {reason}".rstrip())
        self.proxy = proxy
        self.status = status
        self.reason = reason


_MAX_TUNNEL_HEADER_LINES = 100


def open_tunnel(sock: socket.socket, host: str, port: int, proxy: Proxy) -> None:
    """Ask the proxy on `sock` for a tunnel to host:port; raise `TunnelRefused` unless it agrees."""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    auth = proxy.authorization
    if auth:
        lines.append(f"Proxy-Authorization: {auth}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    # Nothing follows the proxy's headers until the client speaks TLS, so a buffered reader
    # cannot swallow bytes of the tunnel.
    reader = sock.makefile("rb")
    try:
        status_line = reader.readline(8192).decode("latin-1").strip()
        version, _, rest = status_line.partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/") or not code.isdigit():
            raise http.client.BadStatusLine(status_line[:100])
        for _ in range(_MAX_TUNNEL_HEADER_LINES):
            line = reader.readline(8192)
            if line in (b"\r\n", b"\n", b""):
                break
        else:
            raise http.client.LineTooLong("CONNECT response headers")
    finally:
        reader.close()
    if not 200 <= int(code) < 300:
        raise TunnelRefused(proxy, int(code), reason.strip())


class _DirectConnection(http.client.HTTPConnection):
    """Plain http; the host is looked up through the pool's `AddressCache`."""

    def __init__(self, host: str, port: int, timeout: float, addresses: AddressCache) -> None:
        super().__init__(host, port, timeout=timeout)
        self._create_connection = addresses.connect  # what `connect()` opens its socket with


WholeStore = Callable[[], ssl.SSLContext]  # the context to try after `lazy_tls_context()`'s failed


class _DirectTlsConnection(http.client.HTTPSConnection):
    """https; the host is looked up through the pool's `AddressCache`."""

    def __init__(
        self, host: str, port: int, timeout: float, context: ssl.SSLContext, addresses: AddressCache,
        whole_store: Optional[WholeStore] = None,
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._create_connection = addresses.connect
        self._whole_store = whole_store

    def connect(self) -> None:
        try:
            super().connect()
        except ssl.SSLCertVerificationError:
            if self._whole_store is None:
                raise
            self.close()
            self._context = self._whole_store()
            self._whole_store = None
            super().connect()


class _ForwardProxyConnection(http.client.HTTPConnection):
    """An http origin through a forward proxy: TCP to the proxy, requests in absolute form."""

    def __init__(self, proxy: Proxy, timeout: float, addresses: AddressCache) -> None:
        super().__init__(proxy.host, proxy.port, timeout=timeout)
        self.proxy = proxy
        self._create_connection = addresses.connect

    def connect(self) -> None:
        try:
            super().connect()
        except OSError as e:
            raise ProxyUnreachable(self.proxy, e) from e


class _TunnelConnection(http.client.HTTPSConnection):
    """An https origin through a CONNECT tunnel; TLS (and its checks) is end to end."""

    def __init__(
        self, host: str, port: int, proxy: Proxy, timeout: float, context: ssl.SSLContext, addresses: AddressCache,
        whole_store: Optional[WholeStore] = None,
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self.proxy = proxy
        self._tls = context
        self._addresses = addresses
        self._whole_store = whole_store

    def connect(self) -> None:
        try:
            self._connect_once()
        except ssl.SSLCertVerificationError:
            if self._whole_store is None:
                raise
            self._tls = self._whole_store()
            self._whole_store = None
            self._connect_once()

    def _connect_once(self) -> None:
        try:
            sock = self._addresses.connect((self.proxy.host, self.proxy.port), self.timeout)
        except OSError as e:
            raise ProxyUnreachable(self.proxy, e) from e
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            open_tunnel(sock, self.host, self.port, self.proxy)
            self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


class ConnectionPool:
    """Idle keep-alive connections per route. A connection is owned by one request at a time."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        ca_bundle: Optional[str],
        max_idle_per_host: int,
        addresses: Optional[AddressCache] = None,
    ) -> None:
        self._connect_timeout = connect_timeout
        # One name lookup per host for all of this pool's connections (see resolve.py).
        self.addresses = addresses or AddressCache()
        self._ca_bundle = ca_bundle  # None: the system store, honouring SSL_CERT_FILE
        self._max_idle_per_host = max_idle_per_host
        self._idle: Dict[Route, List[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._ssl: Optional[ssl.SSLContext] = None
        self._ssl_is_lazy = False

    def _ssl_contexts(self) -> Tuple[ssl.SSLContext, Optional[WholeStore]]:
        """The context new connections verify with, and what a connection tries after a
        certificate failed with it (None: nothing else)."""
        with self._lock:
            if self._ssl is None:
                lazy = lazy_tls_context() if self._ca_bundle is None else None
                self._ssl, self._ssl_is_lazy = lazy or tls_context(self._ca_bundle), lazy is not None
            return self._ssl, (self._whole_store if self._ssl_is_lazy else None)

    def _whole_store(self) -> ssl.SSLContext:
        """After the directory alone failed a certificate: the whole store, for this pool from now on."""
        whole = tls_context(self._ca_bundle)
        with self._lock:
            self._ssl, self._ssl_is_lazy = whole, False
        return whole

    def acquire(self, route: Route) -> Tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            idle = self._idle.get(route)
            if idle:
                return idle.pop(), True
        proxy, (scheme, host, port) = route
        conn: http.client.HTTPConnection
        if proxy is not None and scheme == "https":
            conn = _TunnelConnection(host, port, proxy, self._connect_timeout, *self._tls_args())
        elif proxy is not None:
            conn = _ForwardProxyConnection(proxy, self._connect_timeout, self.addresses)
        elif scheme == "https":
            conn = _DirectTlsConnection(host, port, self._connect_timeout, *self._tls_args())
        else:
            conn = _DirectConnection(host, port, self._connect_timeout, self.addresses)
        return conn, False

    def _tls_args(self) -> Tuple[ssl.SSLContext, AddressCache, Optional[WholeStore]]:
        context, whole_store = self._ssl_contexts()
        return context, self.addresses, whole_store

    def release(self, route: Route, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(route, [])
            if len(idle) < self._max_idle_per_host:
                idle.append(conn)
                return
        conn.close()

    def idle_counts(self) -> Dict[Origin, int]:
        """Idle connections per origin, over every route (what keep-alive reuse is about)."""
        counts: Dict[Origin, int] = {}
        for (_, origin), n in self.idle_counts_by_route().items():
            counts[origin] = counts.get(origin, 0) + n
        return counts

    def idle_counts_by_route(self) -> Dict[Tuple[Optional[str], Origin], int]:
        """Idle connections per (redacted proxy URL or None, origin)."""
        with self._lock:
            return {
                (proxy.display if proxy else None, origin): len(conns)
                for (proxy, origin), conns in self._idle.items()
                if conns
            }

    def close(self) -> None:
        with self._lock:
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for conn in conns:
            conn.close()



class Release:
    """Returns a connection to the pool, or closes it, exactly once."""

    def __init__(self, pool: ConnectionPool, route: Route, conn: http.client.HTTPConnection) -> None:
        self._pool = pool
        self._route = route
        self._conn: Optional[http.client.HTTPConnection] = conn

    def __call__(self, reusable: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if reusable:
            self._pool.release(self._route, conn)
        else:
            conn.close()

