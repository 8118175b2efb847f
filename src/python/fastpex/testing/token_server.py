"""An auth front for the real registry, written for the tests: Bearer tokens or Basic.

`AuthFront(upstream, mode="bearer", users={"ci": "secret"})` listens on a free 127.0.0.1 port.
In `bearer` mode a request without a valid token gets docker's challenge
(`WWW-Authenticate: Bearer realm="http://.../token",service=...,scope=...`); `GET /token` issues
a token for the scopes asked, after checking Basic credentials (anonymous tokens, with pull
rights only, when `anonymous_pull`). In `basic` mode every request needs Basic credentials.
Authorized requests are forwarded to the registry (the `Host` header kept, so the registry's
`Location`s point back here). `corrupt_blobs=True` flips a byte in every blob body it relays:
the hostile middlebox for digest-verification tests; `truncate_blobs=True` hangs up halfway
through each; `fail_uploads=N` answers the first N blob-upload PUTs with 503;
`echo_credentials=True` puts the `Authorization` it got (and its Basic user:password) into the
reason phrase and JSON body of every error: the careless server that secret-scrubbing must
survive. Every request is recorded (with the user its valid Basic credentials name, to tell whose credentials were sent).
"""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Dict, List, Mapping, Optional, Set, Tuple, Type
from urllib.parse import parse_qs, urlsplit

__all__ = ["AuthFront", "FrontRequest"]

_SERVICE = "fastpex-test-registry"
_CHUNK = 1 << 20
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class FrontRequest:
    method: str
    path: str
    status: int
    auth_scheme: str  # "", "basic" or "bearer"
    basic_user: str = ""  # the user whose valid Basic credentials the request carried, if any


class AuthFront:
    def __init__(
        self,
        upstream: str,
        *,
        mode: str = "bearer",
        users: Optional[Mapping[str, str]] = None,
        anonymous_pull: bool = False,
        corrupt_blobs: bool = False,
        truncate_blobs: bool = False,
        fail_uploads: int = 0,
        token_key: str = "token",
        echo_credentials: bool = False,
    ) -> None:
        if mode not in ("bearer", "basic", "none"):
            raise ValueError(mode)
        self.upstream = upstream  # "127.0.0.1:PORT"
        self.mode = mode
        self.users = dict(users or {})
        self.anonymous_pull = anonymous_pull
        self.corrupt_blobs = corrupt_blobs
        self.truncate_blobs = truncate_blobs  # send half of each blob body, then hang up
        self.fail_uploads = fail_uploads  # answer the first N blob-upload PUTs with 503
        self.token_key = token_key  # "token", "access_token" or "both"
        self.echo_credentials = echo_credentials
        self.tokens: Dict[str, Set[Tuple[str, str]]] = {}  # token -> {(repository, action)}
        self.log: List[FrontRequest] = []
        self.token_requests: List[Tuple[str, ...]] = []  # the scopes of each /token request
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: Optional[threading.Thread] = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "AuthFront":
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "AuthFront":
        return self.start()

    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.stop()

    def record(self, entry: FrontRequest) -> None:
        with self._lock:
            self.log.append(entry)

    # -- auth decisions ------------------------------------------------------------------------
    def check_basic(self, header: str) -> Optional[str]:
        """The user name when `header` carries valid Basic credentials."""
        if not header.lower().startswith("basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return user if user in self.users and secrets.compare_digest(self.users[user], password) else None

    def issue(self, scopes: List[str], user: Optional[str]) -> str:
        granted: Set[Tuple[str, str]] = set()
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            repository, _, actions = rest.rpartition(":")
            if kind != "repository":
                continue
            for action in actions.split(","):
                if user is not None or (self.anonymous_pull and action == "pull"):
                    granted.add((repository, action))
        token = secrets.token_urlsafe(24)
        with self._lock:
            self.tokens[token] = granted
        return token


def _repository_and_action(method: str, path: str) -> Optional[Tuple[str, str]]:
    parts = path.split("?", 1)[0].split("/")
    if len(parts) < 4 or parts[1] != "v2":
        return None
    for marker in ("manifests", "blobs", "tags"):
        if marker in parts[2:]:
            index = parts.index(marker, 2)
            return "/".join(parts[2:index]), "push" if method in _WRITE_METHODS else "pull"
    return None


def _handler_for(front: AuthFront) -> Type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
            pass

        def _reply(self, status: int, body: bytes, headers: Mapping[str, str], scheme: str) -> None:
            if front.echo_credentials and status >= 400:
                echoed = self._echo()
                body = json.dumps({"errors": [{"code": "DENIED", "message": f"you sent {echoed}"}]}).encode()
                self.send_response(status, f"Refused {echoed}")
            else:
                self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            front.record(FrontRequest(self.command, self.path, status, scheme, self._basic_user()))

        def _echo(self) -> str:
            authorization = self.headers.get("Authorization") or ""
            decoded = ""
            if authorization.lower().startswith("basic "):
                try:
                    decoded = base64.b64decode(authorization[6:]).decode()
                except (ValueError, UnicodeDecodeError):
                    pass
            return f"{authorization or 'nothing'} ({decoded})"

        def _basic_user(self) -> str:
            return front.check_basic(self.headers.get("Authorization") or "") or ""

        def _drain(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            while length > 0:
                length -= len(self.rfile.read(min(length, _CHUNK)))

        def _unauthorized(self, scope: str, scheme: str, error: str = "") -> None:
            self._drain()
            if front.mode == "basic":
                challenge = f'Basic realm="{_SERVICE}"'
            else:
                challenge = f'Bearer realm="http://{front.address}/token",service="{_SERVICE}"'
                if scope:
                    challenge += f',scope="{scope}"'
                if error:
                    challenge += f',error="{error}"'
            body = json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}).encode()
            self._reply(401, body, {"WWW-Authenticate": challenge, "Content-Type": "application/json"}, scheme)

        def _token(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
            front.token_requests.append(tuple(scopes))
            authorization = self.headers.get("Authorization") or ""
            user = front.check_basic(authorization)
            if user is None and (authorization or not front.anonymous_pull):
                body = json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}).encode()
                self._reply(401, body, {"Content-Type": "application/json"}, "basic" if authorization else "")
                return
            token = front.issue(scopes, user)
            document: Dict[str, object] = {"expires_in": 300}
            if front.token_key in ("token", "both"):
                document["token"] = token
            if front.token_key in ("access_token", "both"):
                document["access_token"] = token
            self._reply(200, json.dumps(document).encode(), {"Content-Type": "application/json"}, "basic")

        def _handle(self) -> None:
            if self.path.split("?", 1)[0] == "/token":
                self._token()
                return
            authorization = self.headers.get("Authorization") or ""
            scheme = authorization.split(" ", 1)[0].lower() if authorization else ""
            needed = _repository_and_action(self.command, self.path)
            scope = f"repository:{needed[0]}:{needed[1]}" if needed else ""
            if front.mode == "basic" and front.check_basic(authorization) is None:
                self._unauthorized(scope, scheme)
                return
            if front.mode == "bearer":
                token = authorization[7:] if authorization.lower().startswith("bearer ") else ""
                granted = front.tokens.get(token)
                if granted is None:
                    self._unauthorized(scope, scheme)
                    return
                if needed is not None and needed not in granted:
                    self._unauthorized(scope, scheme, "insufficient_scope")
                    return
            if front.fail_uploads > 0 and self.command == "PUT" and "/blobs/uploads/" in self.path:
                with front._lock:
                    front.fail_uploads -= 1
                self._drain()
                self._reply(503, b'{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}', {}, scheme)
                return
            self._forward(scheme)

        def _forward(self, scheme: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            upstream = http.client.HTTPConnection(front.upstream, timeout=120)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("authorization", "connection")}
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for key, value in headers.items():
                upstream.putheader(key, value)
            upstream.endheaders()
            remaining = length
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, _CHUNK))
                if not chunk:
                    break
                upstream.send(chunk)
                remaining -= len(chunk)
            response = upstream.getresponse()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in ("connection", "transfer-encoding", "keep-alive"):
                    self.send_header(key, value)
            whole: Optional[bytes] = None
            if self.command != "HEAD" and response.getheader("Content-Length") is None:
                whole = response.read()  # a chunked answer: relay it with a length
                self.send_header("Content-Length", str(len(whole)))
            self.end_headers()
            blob_get = self.command == "GET" and "/blobs/sha256:" in self.path
            corrupt = front.corrupt_blobs and blob_get
            if front.truncate_blobs and blob_get and whole is None:
                half = int(response.getheader("Content-Length") or 0) // 2
                self.wfile.write(response.read(half))
                self.wfile.flush()
                self.close_connection = True
                response.close()
                upstream.close()
                front.record(FrontRequest(self.command, self.path, response.status, scheme, self._basic_user()))
                return
            if whole is not None:
                self.wfile.write(whole)
            elif self.command != "HEAD":
                first = True
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    if corrupt and first:
                        chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                    first = False
                    self.wfile.write(chunk)
            response.close()
            upstream.close()
            front.record(FrontRequest(self.command, self.path, response.status, scheme, self._basic_user()))

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    return Handler
