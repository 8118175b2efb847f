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
from typing import Iterable, Optional, Tuple
from urllib.parse import unquote, urlsplit, urlunsplit

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


def authorization_for(
    url: str, configured_indexes: Iterable[str] = (), netrc_file: Optional[Path] = None
) -> Optional[str]:
    """The `Authorization` header for a credential-free `url`.

    Credentials come from the configured index URL with the longest matching scheme+host+path
    prefix, else from the URL itself, else from the netrc for its host: `netrc_file` when one is
    named (and then no other), else `default_netrc_path()`.
    """
    own = credentials_in(url)
    if own is not None:
        return own.header()
    target = urlsplit(url)
    best: Optional[Tuple[int, Credentials]] = None
    for configured in configured_indexes:
        creds = credentials_in(configured)
        if creds is None:
            continue
        parts = urlsplit(strip_credentials(expand_env(configured)))
        if (parts.scheme, parts.hostname, parts.port) != (
            target.scheme,
            target.hostname,
            target.port,
        ):
            continue
        # Files are often served from a different path than the index pages (PyPI's
        # /simple vs /packages), so a same-host match is enough; a longer path prefix wins.
        score = len(os.path.commonprefix([parts.path, target.path]))
        if best is None or score > best[0]:
            best = (score, creds)
    if best is not None:
        return best[1].header()
    if target.hostname:
        creds = _netrc_credentials(target.hostname, netrc_file)
        if creds is not None:
            return creds.header()
    return None


def filename_from_url(url: str) -> str:
    """The last path segment of `url`, percent-decoded (`.../torch-2.9.1%2Bcu128-...whl`)."""
    return unquote(posixpath.basename(urlsplit(url).path))
