"""Keep-alive connections per origin, and the watchdog that bounds a stuck request."""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlsplit

__all__ = ["WATCHDOG", "ConnectionPool", "Origin", "Release", "origin_of"]


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



class ConnectionPool:
    """Idle keep-alive connections per origin. A connection is owned by one request at a time."""

    def __init__(self, *, connect_timeout: float, ca_bundle: Optional[str], max_idle_per_host: int) -> None:
        self._connect_timeout = connect_timeout
        self._ca_bundle = ca_bundle  # None: the system store, honouring SSL_CERT_FILE
        self._max_idle_per_host = max_idle_per_host
        self._idle: Dict[Origin, List[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._ssl: Optional[ssl.SSLContext] = None

    def _ssl_context(self) -> ssl.SSLContext:
        with self._lock:
            if self._ssl is None:
                self._ssl = ssl.create_default_context(cafile=self._ca_bundle)
            return self._ssl

    def acquire(self, origin: Origin) -> Tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            idle = self._idle.get(origin)
            if idle:
                return idle.pop(), True
        scheme, host, port = origin
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = http.client.HTTPSConnection(
                host, port, timeout=self._connect_timeout, context=self._ssl_context()
            )
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self._connect_timeout)
        return conn, False

    def release(self, origin: Origin, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if len(idle) < self._max_idle_per_host:
                idle.append(conn)
                return
        conn.close()

    def idle_counts(self) -> Dict[Origin, int]:
        """Idle connections per origin (what keep-alive reuse and the idle bound are about)."""
        with self._lock:
            return {origin: len(conns) for origin, conns in self._idle.items() if conns}

    def close(self) -> None:
        with self._lock:
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for conn in conns:
            conn.close()



class Release:
    """Returns a connection to the pool, or closes it, exactly once."""

    def __init__(self, pool: ConnectionPool, origin: Origin, conn: http.client.HTTPConnection) -> None:
        self._pool = pool
        self._origin = origin
        self._conn: Optional[http.client.HTTPConnection] = conn

    def __call__(self, reusable: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if reusable:
            self._pool.release(self._origin, conn)
        else:
            conn.close()

