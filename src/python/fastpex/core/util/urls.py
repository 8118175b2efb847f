"""URLs that cannot leak their credentials (after uv's `SafeUrl`-style redaction).

Index URLs may embed `user:token@`, reference an environment variable (`${TOKEN}`), or rely on
`~/.netrc`. Everything fastpex prints or writes goes through `redact`/`strip_credentials`;
credentials are re-attached only on the wire, by `authorization_for`.
"""

from __future__ import annotations

import base64
import netrc
import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Tuple
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(url: str) -> str:
    """Expand `${VAR}` references (pip's convention for credentials in index URLs)."""

    def sub(match: "re.Match[str]") -> str:
        name = match.group(1)
        if name not in os.environ:
            raise KeyError(f"the index URL references `${{{name}}}`, which is not set")
        return os.environ[name]

    return _ENV_REF.sub(sub, url)


def _split_netloc(netloc: str) -> Tuple[Optional[str], Optional[str], str]:
    if "@" not in netloc:
        return None, None, netloc
    userinfo, host = netloc.rsplit("@", 1)
    if ":" in userinfo:
        user, password = userinfo.split(":", 1)
        return user, password, host
    return userinfo, None, host


def strip_credentials(url: str) -> str:
    """The URL without any `user[:password]@` part: what goes into a lockfile."""
    parts = urlsplit(url)
    _, _, host = _split_netloc(parts.netloc)
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def redact(url: str) -> str:
    """The URL as printed in logs and errors: credentials replaced by `***`."""
    parts = urlsplit(url)
    user, password, host = _split_netloc(parts.netloc)
    if user is None:
        return url
    # A lone user part is usually a token (`https://TOKEN@host`): hide it whole.
    netloc = f"***@{host}" if password is None else f"{user}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never show secrets, even in a traceback
        return "Credentials(***)"

    def header(self) -> str:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")
        return f"Basic {token}"


def credentials_in(url: str) -> Optional[Credentials]:
    user, password, _ = _split_netloc(urlsplit(expand_env(url)).netloc)
    if user is None:
        return None
    # Userinfo is percent-encoded in URLs (RFC 3986; `@` in a token is `%40`), as pip decodes it.
    return Credentials(unquote(user), unquote(password or ""))


def default_netrc_path() -> Path:
    """Where credentials are read from when no netrc file is named: `$NETRC`, else ~/.netrc."""
    return Path(os.environ.get("NETRC") or Path.home() / ".netrc")


def _netrc_credentials(host: str, netrc_file: Optional[Path] = None) -> Optional[Credentials]:
    """`host`'s entry in `netrc_file` (the named file only), else in the default netrc."""
    path = str(netrc_file if netrc_file is not None else default_netrc_path())
    if not os.path.isfile(path):
        return None
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (netrc.NetrcParseError, OSError):
        return None
    if not entry:
        return None
    login, _, password = entry
    return Credentials(login or "", password or "")


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(parts: SplitResult) -> Optional[Tuple[str, str, int]]:
    """(scheme, host, port) with the default port filled in; None for a URL without a host."""
    try:
        port = parts.port
    except ValueError:  # a port that is not a number: matches nothing
        return None
    if not parts.hostname:
        return None
    scheme = parts.scheme.lower()
    return scheme, parts.hostname.lower(), port if port is not None else _DEFAULT_PORTS.get(scheme, -1)


def _segments(path: str) -> Tuple[str, ...]:
    """The path's segments as a server sees them: percent-decoded one by one (so `%2F` stays
    inside its segment), empty and `.` segments dropped, `..` resolved (RFC 3986 5.2.4)."""
    out: List[str] = []
    for raw in path.split("/"):
        segment = unquote(raw)
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    return tuple(out)


def _is_prefix(prefix: Tuple[str, ...], segments: Tuple[str, ...]) -> bool:
    return segments[: len(prefix)] == prefix


def _match_key(index: Tuple[str, ...], target: Tuple[str, ...]) -> Tuple[int, int]:
    """How well an index path matches a URL path on one origin, bigger is better: 2 if the
    index path contains the URL, 1 if the index's directory (its path without the last segment)
    does, else 0; then the number of leading segments they share (the longest match wins)."""
    shared = 0
    for a, b in zip(index, target):
        if a != b:
            break
        shared += 1
    if _is_prefix(index, target):
        return 2, shared
    return (1 if _is_prefix(index[:-1], target) else 0), shared


def _configured_credentials(target: SplitResult, configured_indexes: Iterable[str]) -> Optional[Credentials]:
    origin = _origin(target)
    if origin is None:
        return None
    path = _segments(target.path)
    best: Optional[Tuple[int, int]] = None
    winners: List[Credentials] = []
    for configured in configured_indexes:
        creds = credentials_in(configured)
        if creds is None:  # an index without credentials has none to give, nor to withhold
            continue
        parts = urlsplit(strip_credentials(expand_env(configured)))
        if _origin(parts) != origin:
            continue
        key = _match_key(_segments(parts.path), path)
        if best is None or key > best:
            best, winners = key, [creds]
        elif key == best:
            winners.append(creds)
    # A tie between indexes with different credentials names no single owner for the URL:
    # send none of them rather than guess (pip would take the first index listed).
    if winners and all(w == winners[0] for w in winners):
        return winners[0]
    return None


def authorization_for(
    url: str, configured_indexes: Iterable[str] = (), netrc_file: Optional[Path] = None
) -> Optional[str]:
    """The `Authorization` header for a credential-free `url`.

    The URL's own credentials come first. Then the configured indexes on the URL's origin
    (scheme, host and port, exactly, a missing port being the scheme's default: the boundary
    pip's `MultiDomainBasicAuth` draws too) decide, matched on whole path segments, never on
    characters (`/private/simple` shares nothing with `/packages/a.whl`). The best match wins:
    the index whose path contains the URL (the longest such); else the index whose directory,
    its path without the last segment, contains it (the longest such), which is where indexes
    put their files (PyPI's `/packages` beside `/simple`, devpi's `+f` beside `+simple`,
    GitLab's `files` beside `simple`); else the index sharing the most leading segments with
    it, as pip does (a devpi index links the files it inherits under `/root/pypi/+f`). So a
    file anywhere on a host with one index gets that index's credentials, as in pip. Indexes
    without credentials take no part; a tie between different credentials sends none of them
    (pip would take the first listed). Last comes the netrc entry for the host: `netrc_file` when one is
    named (and then no other), else `default_netrc_path()`.
    """
    own = credentials_in(url)
    if own is not None:
        return own.header()
    target = urlsplit(url)
    configured = _configured_credentials(target, configured_indexes)
    if configured is not None:
        return configured.header()
    if target.hostname:
        creds = _netrc_credentials(target.hostname, netrc_file)
        if creds is not None:
            return creds.header()
    return None


def filename_from_url(url: str) -> str:
    """The last path segment of `url`, percent-decoded (`.../torch-2.9.1%2Bcu128-...whl`)."""
    return unquote(posixpath.basename(urlsplit(url).path))
