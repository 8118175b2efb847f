"""Which proxy a request goes through: `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`.

The same variables, with the same meaning, as `urllib.request.getproxies()` /
`proxy_bypass_environment()` and pip (requests):

- `HTTPS_PROXY` serves https URLs (a CONNECT tunnel, then TLS to the origin through it, with the
  usual certificate checks), `HTTP_PROXY` serves http URLs (absolute-form requests to a forward
  proxy); `ALL_PROXY` is the fallback for both. Lower case wins over upper case when both are set.
  `HTTP_PROXY` is ignored when `REQUEST_METHOD` is set (a CGI environment, "httpoxy").
- `NO_PROXY` is a comma-separated list: `*` (no proxy at all), a host name (`example.com` also
  matches `pkgs.example.com`; a leading dot is ignored), an IP address or a CIDR network
  (`10.0.0.0/8`), each optionally with `:port` to bypass only that port.
- A proxy URL may carry credentials (`http://user:pw@proxy:3128`; percent-encode `@` and `:`).
  They go only into the proxy's `Proxy-Authorization` header, never into a message: everything
  printed names the proxy through `urls.redact`.

Only `http://` proxies are supported (TLS to the proxy itself and SOCKS are not): another
scheme is a `UserError` that says so.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import Mapping, Optional, Tuple
from urllib.parse import urlsplit

from fastpex.core.errors import UserError
from fastpex.core.util.urls import credentials_in, redact, strip_credentials

__all__ = ["NO_PROXY_SETTINGS", "Proxy", "ProxySettings"]


@dataclass(frozen=True)
class Proxy:
    """One proxy. `url` may hold credentials: print only `display` (redacted)."""

    url: str = field(repr=False)
    host: str
    port: int
    variable: str  # the environment variable it came from, for messages

    @property
    def display(self) -> str:
        return redact(self.url)

    @property
    def authorization(self) -> Optional[str]:
        """The `Proxy-Authorization` header value, if the proxy URL carries credentials."""
        creds = credentials_in(self.url)
        return creds.header() if creds is not None else None

    def __repr__(self) -> str:  # never show credentials, even in a traceback
        return f"Proxy({self.display!r}, from {self.variable})"

    @classmethod
    def parse(cls, value: str, variable: str) -> "Proxy":
        text = value.strip()
        if "://" not in text:
            text = "http://" + text  # `proxy:3128`, as urllib and curl accept it
        parts = urlsplit(text)
        if parts.scheme.lower() != "http":
            raise UserError(
                f"`{variable}` is `{redact(text)}`, a `{parts.scheme}://` proxy; fastpex supports "
                f"only `http://` proxies (an https index is reached through one with CONNECT). "
                f"Set `{variable}` to an `http://host:port` proxy"
            )
        try:
            port = parts.port or 80
        except ValueError:
            raise UserError(f"`{variable}` is `{redact(text)}`, which has no valid port") from None
        if not parts.hostname:
            raise UserError(f"`{variable}` is `{redact(text)}`, which names no host")
        return cls(url=text, host=parts.hostname, port=port, variable=variable)


def _env(environ: Mapping[str, str], name: str) -> Tuple[Optional[str], str]:
    """The value of `name` (lower case wins over upper case) and the variable's spelling."""
    for spelled in (name.lower(), name.upper()):
        value = environ.get(spelled)
        if value and value.strip():
            return value, spelled
    return None, name.upper()


@dataclass(frozen=True)
class ProxySettings:
    """The proxies for http and https URLs and the `NO_PROXY` exceptions."""

    http: Optional[Proxy] = None
    https: Optional[Proxy] = None
    no_proxy: Tuple[str, ...] = ()

    @classmethod
    def from_environ(cls, environ: Optional[Mapping[str, str]] = None) -> "ProxySettings":
        env = os.environ if environ is None else environ
        all_value, all_name = _env(env, "all_proxy")
        http_value, http_name = _env(env, "http_proxy")
        if "REQUEST_METHOD" in env and env.get("http_proxy") is None:
            http_value = None  # urllib's httpoxy guard: a CGI request may set HTTP_PROXY
        https_value, https_name = _env(env, "https_proxy")
        no_value, _ = _env(env, "no_proxy")

        def pick(value: Optional[str], name: str) -> Optional[Proxy]:
            if value:
                return Proxy.parse(value, name)
            return Proxy.parse(all_value, all_name) if all_value else None

        entries = tuple(e.strip().lower() for e in (no_value or "").split(",") if e.strip())
        return cls(http=pick(http_value, http_name), https=pick(https_value, https_name), no_proxy=entries)

    def proxy_for(self, url: str) -> Optional[Proxy]:
        """The proxy a request for `url` goes through, or None (direct)."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        proxy = self.https if scheme == "https" else self.http if scheme == "http" else None
        if proxy is None or self.bypasses(url):
            return None
        return proxy

    def bypasses(self, url: str) -> bool:
        """True if `NO_PROXY` says `url` goes direct."""
        parts = urlsplit(strip_credentials(url))
        host = (parts.hostname or "").lower()
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        return any(_matches(entry, host, port) for entry in self.no_proxy)

    def describe(self) -> str:
        """The settings, redacted (for a debug log line)."""
        return (
            f"http: {self.http.display if self.http else 'direct'}, "
            f"https: {self.https.display if self.https else 'direct'}, "
            f"no_proxy: {','.join(self.no_proxy) or '-'}"
        )


NO_PROXY_SETTINGS = ProxySettings()


def _split_entry(entry: str) -> Tuple[str, Optional[int]]:
    """`host`, `host:port`, `[v6]:port`, `v6`, `net/len` -> (host, port or None)."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        return host, int(port) if port.isdigit() else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        if port.isdigit():
            return host, int(port)
    return entry, None


def _matches(entry: str, host: str, port: int) -> bool:
    if entry == "*":
        return True
    name, entry_port = _split_entry(entry)
    if entry_port is not None and entry_port != port:
        return False
    name = name.lstrip(".")
    if not name:
        return False
    if host == name or host.endswith("." + name):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    try:
        return address in ipaddress.ip_network(name, strict=False)
    except ValueError:
        return False
