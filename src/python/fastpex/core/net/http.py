"""A small, thread-safe HTTP/1.1 client for index pages, metadata and artifacts.

Why not urllib: it opens a new TCP+TLS connection per request, which dominates the cost of the
thousands of tiny requests locking makes (pages, `.metadata` files, zip range reads). This
client keeps idle connections per route (proxy, scheme, host, port), honours `HTTPS_PROXY`,
`HTTP_PROXY` and `NO_PROXY` (see `proxy.py`: CONNECT tunnels for https, a forward proxy for
http, proxy credentials only in `Proxy-Authorization`), bounds everything a server controls
(redirects, retries, document sizes, timeouts), never sends credentials to a host they were not
configured for, and counts every body byte received so benchmarks and tests can assert on it.

It is shared by LOCK (pages, metadata) and FETCH (artifacts): `get(..., stream=True)` hands out
the body in chunks and leaves resuming to the caller.
"""

from __future__ import annotations
import builtins
import http.client
import logging
import ssl
import time
import zlib
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Dict, Iterable, Iterator, Mapping, Optional, Tuple, Union
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from fastpex.core.net.errors import (
    HttpConnectionError,
    ProxyError,
    ResponseTooLargeError,
    TooManyRedirectsError,
)
from fastpex.core.net.pool import WATCHDOG, ConnectionPool, ProxyUnreachable, Release, Route, TunnelRefused, origin_of
from fastpex.core.net.proxy import ProxySettings
from fastpex.core.net.response import (
    DEFAULT_MAX_DOCUMENT_BYTES,
    GLOBAL_COUNTER,
    ByteCounter,
    RangeSpec,
    Response,
    range_header,
)
from fastpex.core.net.retry import RETRY_STATUSES, Backoff, parse_retry_after
from fastpex.core.util.urls import authorization_for, redact, strip_credentials

logger = logging.getLogger(__name__)

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_ERROR_BODY_CAP = 64 * 1024
_UPLOAD_CHUNK = 1024 * 1024

# A request body: bytes, or a file streamed from disk (re-read from the start on each retry).
RequestBody = Union[bytes, Path]


@dataclass(frozen=True)
class HttpConfig:
    """Every knob a server could otherwise push to the limit."""

    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_redirects: int = 10
    max_retries: int = 3  # extra attempts after the first, for 5xx/429 and connection errors
    backoff_initial: float = 0.25  # seconds; doubles each attempt, with +-50% jitter
    backoff_max: float = 8.0
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES
    max_idle_per_host: int = 16
    chunk_size: int = 1024 * 1024
    user_agent: str = "fastpex"
    # The trust store for https (direct or through a proxy's tunnel). Default: the system
    # store, which honours `SSL_CERT_FILE` / `SSL_CERT_DIR` (how a private CA is trusted).
    ca_bundle: Optional[str] = None
    # None: read `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`/`NO_PROXY` when the client is made;
    # `proxy.NO_PROXY_SETTINGS` connects directly whatever the environment says.
    proxies: Optional[ProxySettings] = None
    # `read_timeout` bounds one silence; these bound a server that trickles bytes forever. The
    # status line + headers, and a whole document body, must arrive within `total_timeout`; a
    # streamed body may take longer only while it averages at least `min_stream_rate` bytes/s.
    total_timeout: float = 300.0
    min_stream_rate: int = 16 * 1024



class HttpClient:
    """Keep-alive HTTP(S) client; share one per process (it is thread-safe).

    `configured_indexes` are the index URLs the user configured, possibly with credentials or
    `${ENV}` references: a request to the same scheme+host+port gets their `Authorization`
    (via `urls.authorization_for`), and no other host ever sees them. `netrc_file` is the one
    netrc read for other hosts (a `--netrc FILE`); None reads `$NETRC`, else ~/.netrc.
    `implicit_credentials=False` adds none of these (nor a URL's own): for callers that choose
    every request's `Authorization` themselves (the registry client: docker's config.json first).
    """

    def __init__(
        self,
        config: Optional[HttpConfig] = None,
        *,
        configured_indexes: Iterable[str] = (),
        counter: Optional[ByteCounter] = None,
        netrc_file: Optional[Path] = None,
        implicit_credentials: bool = True,
    ) -> None:
        self.config = config or HttpConfig()
        self.configured_indexes = tuple(configured_indexes)
        self.netrc_file = netrc_file
        self.implicit_credentials = implicit_credentials
        self.counter = counter or ByteCounter()
        self.proxies = self.config.proxies if self.config.proxies is not None else ProxySettings.from_environ()
        if self.proxies.http or self.proxies.https:
            logger.debug("proxies: %s", self.proxies.describe())
        self._pool = ConnectionPool(
            connect_timeout=self.config.connect_timeout,
            ca_bundle=self.config.ca_bundle,
            max_idle_per_host=self.config.max_idle_per_host,
        )

    def idle_connections(self) -> Dict[Tuple[str, str, int], int]:
        """Idle keep-alive connections per (scheme, host, port), over every route."""
        return self._pool.idle_counts()

    def idle_connections_by_route(self) -> Dict[Tuple[Optional[str], Tuple[str, str, int]], int]:
        """Idle keep-alive connections per (redacted proxy URL or None, origin)."""
        return self._pool.idle_counts_by_route()

    def name_lookups(self) -> int:
        """Host name lookups made so far: one per host per minute, not one per connection."""
        return self._pool.addresses.lookups

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> "HttpClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public API --------------------------------------------------------------------------
    def get(
        self,
        url: str,
        headers: Optional[Mapping[str, str]] = None,
        range: Optional[RangeSpec] = None,  # noqa: A002 - the HTTP name
        stream: bool = False,
        max_bytes: Optional[int] = None,
    ) -> Response:
        """GET `url` (http, https or file; credentials in it are sent only to its origin).

        Redirects are followed; 5xx/429 and connection failures are retried with backoff. Any
        final status is returned, not raised (see `Response.raise_for_status`); only an
        unreachable server raises (`HttpConnectionError`). With `stream=False` the body is read
        now, capped at `max_bytes` (default `HttpConfig.max_document_bytes`), and gzip is
        accepted; with `stream=True` read it with `iter_chunks()` (a broken body raises there,
        and is not retried: callers that can resume do so with `range=`)."""
        return self.request("GET", url, headers=headers, range=range, stream=stream, max_bytes=max_bytes)

    def head(self, url: str, headers: Optional[Mapping[str, str]] = None) -> Response:
        return self.request("HEAD", url, headers=headers)

    def request(
        self,
        method: str,
        url: str,
        headers: Optional[Mapping[str, str]] = None,
        range: Optional[RangeSpec] = None,  # noqa: A002
        stream: bool = False,
        max_bytes: Optional[int] = None,
        body: Optional[RequestBody] = None,
        retries: Optional[int] = None,
    ) -> Response:
        """Any method. `body` (bytes, or a file `Path` streamed in 1 MiB chunks) is sent with
        its Content-Length; a request with a body does not follow redirects (the 3xx response
        is returned). `retries` overrides `HttpConfig.max_retries` for this request (0 for a
        request the caller must not repeat by itself, such as a blob upload's PUT)."""
        if urlsplit(url).scheme == "file":
            return self._file_response(method, url, range)
        whole_document = method == "GET" and range is None and not stream
        request_headers = {
            "User-Agent": self.config.user_agent,
            "Accept-Encoding": "gzip" if whole_document else "identity",
        }
        explicit_auth: Optional[str] = None
        for key, value in (headers or {}).items():
            if key.lower() == "authorization":
                explicit_auth = value
            else:
                request_headers[key] = value
        if range is not None:
            request_headers["Range"] = range_header(range)

        original_origin = origin_of(url)
        current = url  # may carry credentials while it stays on the original origin
        for _hop in builtins.range(self.config.max_redirects + 1):
            same_origin = origin_of(current) == original_origin
            # Never forward the caller's or the first URL's credentials to another origin; that
            # origin only gets credentials configured for it (an index URL or the netrc).
            auth = explicit_auth if same_origin else None
            if auth is None and self.implicit_credentials:
                auth = authorization_for(current, self.configured_indexes, self.netrc_file)
            hop_headers = dict(request_headers)
            if auth:
                hop_headers["Authorization"] = auth
            response = self._send_with_retries(
                method, strip_credentials(current), hop_headers, stream, max_bytes, body, retries
            )
            location = response.header("Location")
            if response.status in REDIRECT_STATUSES and location and body is None:
                response.close()
                target = urljoin(strip_credentials(current), location)
                if origin_of(target) == original_origin and strip_credentials(target) == target:
                    target = _with_userinfo(target, url)
                current = target
                continue
            return response
        raise TooManyRedirectsError(url, self.config.max_redirects)

    # -- internals ---------------------------------------------------------------------------
    def _backoff(self, attempt: int, retry_after: Optional[str] = None) -> float:
        policy = Backoff(initial=self.config.backoff_initial, maximum=self.config.backoff_max)
        return policy.delay(attempt, parse_retry_after(retry_after))

    def _send_with_retries(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        stream: bool,
        max_bytes: Optional[int],
        body: Optional[RequestBody] = None,
        retries: Optional[int] = None,
    ) -> Response:
        max_retries = self.config.max_retries if retries is None else retries
        attempt = 0
        last_error: Optional[BaseException] = None
        while True:
            try:
                response = self._send_once(method, url, headers, stream, max_bytes, body)
            except (HttpConnectionError, ResponseTooLargeError):
                raise
            except _RetryableFailure as failure:
                last_error = failure.cause
                if attempt >= max_retries:
                    raise _connection_error(url, last_error) from last_error
                delay = self._backoff(attempt)
                logger.debug("retrying %s %s in %.2fs after %r", method, redact(url), delay, last_error)
                time.sleep(delay)
                attempt += 1
                continue
            if response.status in RETRY_STATUSES and attempt < max_retries:
                retry_after = response.header("Retry-After")
                response.close()
                delay = self._backoff(attempt, retry_after)
                logger.debug("retrying %s %s in %.2fs after HTTP %d", method, redact(url), delay, response.status)
                time.sleep(delay)
                attempt += 1
                continue
            return response

    def _send_once(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        stream: bool,
        max_bytes: Optional[int],
        body: Optional[RequestBody] = None,
    ) -> Response:
        origin = origin_of(url)
        if origin[0] not in ("http", "https"):
            raise HttpConnectionError(url, f"unsupported URL scheme `{origin[0]}`")
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        proxy = self.proxies.proxy_for(url)
        route: Route = (proxy, origin)
        send_headers = dict(headers)
        if body is not None:
            send_headers["Content-Length"] = str(len(body) if isinstance(body, bytes) else body.stat().st_size)
        if proxy is not None and origin[0] == "http":
            # A forward proxy gets the absolute URL (`url` is credential-free here); only the
            # proxy's own credentials go into Proxy-Authorization (it does not pass them on).
            target = urlunsplit((parts.scheme, parts.netloc, parts.path or "/", parts.query, ""))
            proxy_auth = proxy.authorization
            if proxy_auth:
                send_headers["Proxy-Authorization"] = proxy_auth
        # A reused keep-alive connection may have been closed by the server meanwhile: that
        # failure says nothing about the server, so retry it once on a fresh connection.
        for fresh_attempt in (False, True):
            conn, reused = self._pool.acquire(route)
            try:
                if conn.sock is None:
                    conn.connect()
                    assert conn.sock is not None
                conn.sock.settimeout(self.config.read_timeout)
                conn.request(method, target, body=_body_chunks(body), headers=send_headers)
                self.counter.add_request()
                GLOBAL_COUNTER.add_request()
                guard = WATCHDOG.arm(conn.sock, self.config.total_timeout)
                try:
                    raw = conn.getresponse()
                finally:
                    in_time = WATCHDOG.disarm(guard)
                if not in_time:
                    raise _TooSlow()
            except _TooSlow:
                conn.close()
                raise HttpConnectionError(
                    url, f"the server did not send its response headers within {self.config.total_timeout:.0f} s"
                )
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                if reused and not fresh_attempt:
                    continue
                if isinstance(e, TunnelRefused) and 400 <= e.status < 500 or isinstance(e, ssl.SSLCertVerificationError):
                    raise _connection_error(url, e) from e  # 407, 403, a bad certificate: retrying changes nothing
                raise _RetryableFailure(e) from e
            break
        done = Release(self._pool, route, conn)
        response = Response(
            url=url,
            status=raw.status,
            reason=raw.reason,
            headers=raw.msg,
            raw=raw,
            on_done=done,
            counters=(self.counter, GLOBAL_COUNTER),
            chunk_size=self.config.chunk_size,
            max_document_bytes=self.config.max_document_bytes,
            total_timeout=self.config.total_timeout,
            min_stream_rate=self.config.min_stream_rate,
        )
        if method == "HEAD":
            raw.read()  # no body; marks the response complete so the connection is reusable
            response.buffer_body(b"")
            return response
        wants_body_now = not stream or not response.ok or response.status in REDIRECT_STATUSES
        if not wants_body_now:
            return response
        limit = self.config.max_document_bytes if max_bytes is None else max_bytes
        if not response.ok:
            limit = _ERROR_BODY_CAP
        try:
            body = response.read(limit)
        except ResponseTooLargeError:
            if not response.ok:
                body = b""
            else:
                raise
        except HttpConnectionError as e:
            if response.status in RETRY_STATUSES or not response.ok:
                body = b""
            else:
                raise _RetryableFailure(e) from e
        if response.header("Content-Encoding", "").lower() == "gzip":
            body = gunzip_document(body, limit, url)
        response.buffer_body(body)
        return response

    def _file_response(self, method: str, url: str, range_spec: Optional[RangeSpec]) -> Response:
        """file:// URLs (find-links, local mirrors) behave like a range-capable server."""
        path = Path(unquote(urlsplit(url).path))
        headers = Message()
        if not path.is_file():
            return Response(url=url, status=404, reason="Not Found", headers=headers, body=b"")
        size = path.stat().st_size
        headers["Content-Length"] = str(size)
        headers["Accept-Ranges"] = "bytes"
        start, end, status = 0, size - 1, 200
        if range_spec is not None:
            parsed = _parse_range_request(range_header(range_spec), size)
            if parsed is None:
                headers.replace_header("Content-Length", "0")
                headers["Content-Range"] = f"bytes */{size}"
                return Response(url=url, status=416, reason="Range Not Satisfiable", headers=headers, body=b"")
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            headers.replace_header("Content-Length", str(end - start + 1))
        length = end - start + 1 if size else 0
        if method == "HEAD":
            return Response(url=url, status=status, reason="OK", headers=headers, body=b"")
        return Response(
            url=url,
            status=status,
            reason="OK",
            headers=headers,
            local_file=(path, start, length),
            chunk_size=self.config.chunk_size,
            max_document_bytes=self.config.max_document_bytes,
        )


def _body_chunks(body: Optional[RequestBody]) -> Optional[Union[bytes, Iterator[bytes]]]:
    """What `http.client` sends: bytes as they are, a file in 1 MiB chunks (its own file
    reading uses 8 KiB blocks, a syscall per 8 KiB)."""
    if body is None or isinstance(body, bytes):
        return body

    def chunks(path: Path) -> Iterator[bytes]:
        with open(path, "rb") as fp:
            while True:
                chunk = fp.read(_UPLOAD_CHUNK)
                if not chunk:
                    return
                yield chunk

    return chunks(body)


def _connection_error(url: str, error: BaseException) -> HttpConnectionError:
    """The error for a request that could not be sent: naming the proxy when it was at fault."""
    if isinstance(error, (ProxyUnreachable, TunnelRefused)):
        proxy = error.proxy
        creds = urlsplit(proxy.url).password or ""
        return ProxyError(
            url,
            proxy.url,
            proxy.variable,
            str(error),
            unreachable=isinstance(error, ProxyUnreachable),
            status=error.status if isinstance(error, TunnelRefused) else 0,
            secrets=(creds,),
        )
    return HttpConnectionError(url, f"{type(error).__name__}: {error}")


def _with_userinfo(url: str, credentialed: str) -> str:
    """`url` with the userinfo of `credentialed` (same origin), so redirects keep auth."""
    source = urlsplit(credentialed)
    if "@" not in source.netloc:
        return url
    userinfo = source.netloc.rsplit("@", 1)[0]
    parts = urlsplit(url)
    return parts._replace(netloc=f"{userinfo}@{parts.netloc}").geturl()


def _parse_range_request(value: str, size: int) -> Optional[Tuple[int, int]]:
    spec = value.strip()
    if not spec.startswith("bytes=") or size == 0:
        return None
    first, _, last = spec[len("bytes=") :].partition("-")
    if not first:
        n = int(last)
        return (max(0, size - n), size - 1) if n > 0 else None
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    return (start, end) if start < size and start <= end else None


def gunzip_document(data: "bytes | bytearray", limit: int, url: str) -> bytes:
    """A gzip body decoded, at most `limit` bytes of it (else `ResponseTooLargeError`)."""
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = decoder.decompress(data, limit + 1)
    if len(out) > limit or decoder.unconsumed_tail:
        raise ResponseTooLargeError(url, limit)
    return out


class _TooSlow(Exception):
    pass


class _RetryableFailure(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


__all__ = ["HttpClient", "HttpConfig", "RequestBody", "gunzip_document"]
