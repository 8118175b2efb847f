"""Name lookups per host, made once and kept for a minute, shared by a pool's connections.

Why: `socket.create_connection` resolves the host on every new connection. On this project's
machines the resolver answers ~25 lookups per 5 s and holds the next one for its 5 s retry
timeout (measured 2026-12-01, docs/benchmarks.md "Back-to-back locks: the 5 s stall"), so three
back-to-back locks of 16 connections each stalled 5 s in `getaddrinfo`, before any TCP. Like
curl's DNS cache (CURLOPT_DNS_CACHE_TIMEOUT, 60 s by default), one lookup serves every
connection to that host for `ttl` seconds; concurrent first connections wait for one lookup
instead of each making their own; a failed connect forgets the answer so the retry asks again.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["AddressCache", "DEFAULT_TTL"]

DEFAULT_TTL = 60.0

_AddrInfo = Tuple[int, int, int, str, Any]  # family, type, proto, canonname, sockaddr
_Key = Tuple[str, int]


class AddressCache:
    """`getaddrinfo` answers per (host, port) for `ttl` seconds; thread-safe."""

    def __init__(self, ttl: float = DEFAULT_TTL) -> None:
        self._ttl = ttl
        self._lock = threading.Lock()
        self._entries: Dict[_Key, Tuple[float, List[_AddrInfo]]] = {}
        self._key_locks: Dict[_Key, threading.Lock] = {}
        self.lookups = 0  # calls to getaddrinfo made (what the cache saves is visible in tests)

    def addresses(self, host: str, port: int) -> List[_AddrInfo]:
        key = (host, port)
        with self._lock:
            fresh = self._fresh(key)
            if fresh is not None:
                return fresh
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # one lookup per host at a time: the others wait for its answer
            with self._lock:
                fresh = self._fresh(key)
                if fresh is not None:
                    return fresh
                self.lookups += 1
            infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
            with self._lock:
                self._entries[key] = (time.monotonic() + self._ttl, list(infos))
            return list(infos)

    def forget(self, host: str, port: int) -> None:
        with self._lock:
            self._entries.pop((host, port), None)

    def _fresh(self, key: _Key) -> Optional[List[_AddrInfo]]:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= time.monotonic():
            return None
        return entry[1]

    def connect(
        self, address: Tuple[str, int], timeout: object = None, source_address: Optional[Tuple[str, int]] = None
    ) -> socket.socket:
        """`socket.create_connection` with the cached lookup: each address in turn, the last
        error if none answers (and then the answer is forgotten: the host may have moved)."""
        host, port = address
        last_error: Optional[OSError] = None
        for family, type_, proto, _, sockaddr in self.addresses(host, port):
            sock = socket.socket(family, type_, proto)
            try:
                if isinstance(timeout, (int, float)):
                    sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)
                return sock
            except OSError as e:
                sock.close()
                last_error = e
        self.forget(host, port)
        raise last_error if last_error is not None else OSError(f"getaddrinfo returned no address for {host}")
