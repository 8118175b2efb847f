"""Name lookups: one per host per client, not one per connection (the 5 s stall of back-to-back locks).

The machine's resolver is the thing that stalls (measured: ~25 lookups per 5 s, then the next
waits out resolv.conf's 5 s timeout), and a test cannot rely on this machine's resolver nor
change it: `_RateLimitedResolver` wraps the real `socket.getaddrinfo` with that behaviour,
scaled down (LIMIT lookups, then each further one waits STALL s). Servers and sockets are real.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator, List

import pytest

from fastpex.core.net.http import HttpClient, HttpConfig
from fastpex.core.net.addresses import AddressCache
from fastpex.core.net.response import Response
from fastpex.testing.index_server import IndexServer
from fastpex.testing.wheels import build_wheel

LIMIT = 25
STALL = 1.5
CONNECTIONS = 16  # what the lock's page check opens at most


class _RateLimitedResolver:
    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls = 0
        self.stalls = 0
        self._lock = threading.Lock()

    def __call__(self, host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "localhost":
            with self._lock:
                self.calls += 1
                over = self.calls > LIMIT
                self.stalls += over
            if over:
                time.sleep(STALL)
        return self.real(host, *args, **kwargs)


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[_RateLimitedResolver]:
    stub = _RateLimitedResolver(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", stub)
    yield stub


@pytest.fixture
def server(tmp_path: Path) -> Iterator[IndexServer]:
    build_wheel(tmp_path, "demo", "1.0")
    with IndexServer(tmp_path) as srv:
        yield srv


def _one_run(url: str) -> int:
    """What one lock process does to the index: CONNECTIONS requests in flight at once (each
    holds its connection until all have started), then a clean close. Returns its lookups."""
    barrier = threading.Barrier(CONNECTIONS)
    errors: List[BaseException] = []
    with HttpClient(HttpConfig(connect_timeout=5, read_timeout=5)) as client:

        def fetch() -> None:
            try:
                response: Response = client.get(url, stream=True)
                barrier.wait(timeout=10)
                assert response.status == 200
                b"".join(response.iter_chunks())
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=fetch) for _ in range(CONNECTIONS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert sum(client.idle_connections().values()) == CONNECTIONS  # really 16 connections
        return client.name_lookups()


def test_back_to_back_runs_do_not_stall_on_a_rate_limited_resolver(
    server: IndexServer, resolver: _RateLimitedResolver
) -> None:
    url = f"http://localhost:{server.port}/simple/demo/"
    lookups = [_one_run(url) for _ in range(3)]
    assert lookups == [1, 1, 1]  # concurrent first connections share one lookup
    # Was 48: one per connection, and the 26th waited STALL s. Counted, not timed: a wall-time
    # bound flakes on a loaded machine, and no lookup past LIMIT means none stalled.
    assert resolver.calls == 3 and resolver.stalls == 0


def test_a_failed_connect_forgets_the_answer(resolver: _RateLimitedResolver) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cache = AddressCache()
    with pytest.raises(ConnectionRefusedError):
        cache.connect(("localhost", port), 2.0)
    with pytest.raises(ConnectionRefusedError):
        cache.connect(("localhost", port), 2.0)
    assert cache.lookups == 2  # the host may have moved: asked again


def test_answers_expire(server: IndexServer, resolver: _RateLimitedResolver) -> None:
    cache = AddressCache(ttl=0.2)
    for _ in range(3):
        cache.connect(("localhost", server.port), 2.0).close()
    assert cache.lookups == 1
    time.sleep(0.3)
    cache.connect(("localhost", server.port), 2.0).close()
    assert cache.lookups == 2
