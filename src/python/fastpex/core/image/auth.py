"""Registry credentials and the distribution spec's two auth schemes, Basic and Bearer tokens.

Credentials come from docker's `config.json` `auths` (base64 `auth`, or `username`/`password`)
or from a `.netrc`, looked up by registry host, in that order (`find_credentials`) for every
request: the registry's HTTP client adds none of its own. Credential helpers (`credsStore`,
`credHelpers`) are out of scope and named in the error when they are all a host has.

Bearer follows docker's token protocol (distribution's docs/spec/auth/token.md): a 401 carries
`WWW-Authenticate: Bearer realm=...,service=...,scope=...`; the client asks the realm for a token
(with Basic credentials when it has them), then retries with `Authorization: Bearer <token>`.
Tokens are cached per scope set. No secret (password, token) ever reaches an error, a log line
or a repr: `Credentials` hides itself and `scrub` blanks known secrets out of any message.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import netrc
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Set, Tuple
from urllib.parse import urlencode, urlsplit

from fastpex.core.errors import OperationalError, UserError
from fastpex.core.net.http import HttpClient
from fastpex.core.util.urls import Credentials, default_netrc_path

__all__ = [
    "Authenticator",
    "Challenge",
    "CredentialLookup",
    "RegistryAuthError",
    "find_credentials",
    "parse_challenges",
    "scrub",
    "secrets_of",
]

logger = logging.getLogger(__name__)

_HUB_KEYS = ("docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")
_TOKEN_BODY_CAP = 1 << 20


class RegistryAuthError(UserError):
    """The registry wants credentials we don't have, or refused the ones we sent."""


@dataclass(frozen=True)
class CredentialLookup:
    """What was found for one registry: credentials (or None), where from (a file name, never
    the secret), and a credential helper the config names for it (unsupported). `shadowed` are
    credentials a later source has for the same registry: never sent, but scrubbed all the same."""

    credentials: Optional[Credentials] = None
    source: str = ""
    helper: Optional[str] = None
    shadowed: Tuple[Credentials, ...] = ()

    def __repr__(self) -> str:
        return f"CredentialLookup(found={self.credentials is not None}, source={self.source!r}, helper={self.helper!r})"


def _registry_key(key: str) -> str:
    """`https://host:port/v1/` -> `host:port`: how docker normalises `auths` keys."""
    key = key.strip()
    if "://" in key:
        key = urlsplit(key).netloc
    return key.split("/", 1)[0].lower()


def _docker_config_path(docker_config: Optional[Path]) -> Path:
    if docker_config is not None:
        return docker_config / "config.json" if docker_config.is_dir() or docker_config.suffix != ".json" else docker_config
    env = os.environ.get("DOCKER_CONFIG")
    if env:
        return Path(env) / "config.json"
    return Path.home() / ".docker" / "config.json"


def _matches(key: str, registry: str) -> bool:
    normal = _registry_key(key)
    if registry.lower() in _HUB_KEYS:
        return normal in _HUB_KEYS
    return normal == registry.lower()


def _from_docker_config(path: Path, registry: str) -> CredentialLookup:
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return CredentialLookup()
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read docker's config `{path}`: {type(e).__name__}") from None
    if not isinstance(document, dict):
        raise UserError(f"docker's config `{path}` is not a JSON object")
    auths = document.get("auths") or {}
    if isinstance(auths, dict):
        for key, entry in auths.items():
            if not isinstance(entry, dict) or not _matches(str(key), registry):
                continue
            found = _entry_credentials(entry, path, str(key))
            if found is not None:
                return CredentialLookup(found, f"{path} (auths `{key}`)")
    helpers = document.get("credHelpers") or {}
    if isinstance(helpers, dict):
        for key, helper in helpers.items():
            if _matches(str(key), registry):
                return CredentialLookup(source=str(path), helper=f"credHelpers `{key}`: `docker-credential-{helper}`")
    store = document.get("credsStore")
    if isinstance(store, str) and store:
        return CredentialLookup(source=str(path), helper=f"credsStore: `docker-credential-{store}`")
    return CredentialLookup()


def _entry_credentials(entry: Mapping[str, object], path: Path, key: str) -> Optional[Credentials]:
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            decoded = base64.b64decode(encoded, validate=False).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise UserError(f"docker's config `{path}`: the `auth` of `{key}` is not base64 of `user:password`") from None
        user, sep, password = decoded.partition(":")
        if not sep:
            raise UserError(f"docker's config `{path}`: the `auth` of `{key}` is not base64 of `user:password`")
        return Credentials(user, password)
    username, secret = entry.get("username"), entry.get("password")
    if isinstance(username, str) and isinstance(secret, str) and username:
        return Credentials(username, secret)
    return None


def _from_netrc(path: Path, host: str) -> CredentialLookup:
    if not path.is_file():
        return CredentialLookup()
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except netrc.NetrcParseError as e:
        raise UserError(f"cannot parse the netrc file `{path}` (line {e.lineno})") from None
    except OSError as e:
        raise UserError(f"cannot read the netrc file `{path}`: {e.strerror}") from None
    if not entry:
        return CredentialLookup()
    login, _account, password = entry
    return CredentialLookup(Credentials(login or "", password or ""), f"{path} (machine `{host}`)")


def find_credentials(
    registry: str, *, docker_config: Optional[Path] = None, netrc_file: Optional[Path] = None
) -> CredentialLookup:
    """Credentials for `registry` (`host[:port]`): docker's config first (`docker_config` a
    directory or a config.json; else `$DOCKER_CONFIG/config.json`; else ~/.docker/config.json),
    then the netrc (`netrc_file`; else `$NETRC`; else ~/.netrc) for the bare host."""
    found = _from_docker_config(_docker_config_path(docker_config), registry)
    netrc_path = netrc_file if netrc_file is not None else default_netrc_path()
    host = registry[1 : registry.index("]")] if registry.startswith("[") else registry.rsplit(":", 1)[0]
    try:
        from_netrc = _from_netrc(netrc_path, host)
    except UserError:
        if found.credentials is None:
            raise
        from_netrc = CredentialLookup()  # config.json's entry wins; a broken netrc does not matter
    if found.credentials is not None:
        shadowed = (from_netrc.credentials,) if from_netrc.credentials is not None else ()
        return CredentialLookup(found.credentials, found.source, shadowed=shadowed)
    if from_netrc.credentials is not None:
        return from_netrc
    return found  # None, perhaps naming a helper


def secrets_of(credentials: Credentials) -> Tuple[str, ...]:
    """What of `credentials` may appear in a message: the password and the Basic token."""
    return credentials.password, credentials.header().split(" ", 1)[1]


# -- challenges ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case: "basic" or "bearer"
    params: Mapping[str, str] = field(default_factory=dict)


_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


def parse_challenges(header: Optional[str]) -> List[Challenge]:
    """`WWW-Authenticate` -> challenges (RFC 7235 auth-params; quoted values may hold commas,
    as Bearer `scope="repository:a:pull,push"` does)."""
    if not header:
        return []
    challenges: List[Challenge] = []
    position = 0
    text = header.strip()
    while position < len(text):
        match = re.compile(r"\s*,?\s*([A-Za-z][A-Za-z0-9_-]*)").match(text, position)
        if match is None:
            break
        scheme = match.group(1).lower()
        position = match.end()
        params: Dict[str, str] = {}
        while True:
            param = _PARAM.match(text, position)
            if param is None:
                break
            # A bare word followed by another word starts the next challenge, not a param.
            params[param.group(1).lower()] = (
                param.group(2).replace('\\"', '"') if param.group(2) is not None else param.group(3)
            )
            position = param.end()
        challenges.append(Challenge(scheme, params))
    return challenges


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with each secret (at least 4 characters, to spare common words) replaced."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


# -- the authenticator ---------------------------------------------------------------------------
TokenUrlCheck = Callable[[str], None]


class Authenticator:
    """The `Authorization` for one registry, learnt from its challenges.

    `authorization(scopes)` is what to send now (None: try anonymously first);
    `handle_challenge(header, scopes)` is called with a 401's `WWW-Authenticate` and returns True
    when a retry may succeed (a new token, or Basic credentials we had not sent yet).
    `check_realm` refuses a token realm that may not be used (plain HTTP to a remote host).
    """

    def __init__(
        self,
        registry: str,
        http: HttpClient,
        lookup: Callable[[], CredentialLookup],
        check_realm: TokenUrlCheck,
    ) -> None:
        self.registry = registry
        self._http = http
        self._lookup_fn = lookup
        self._lookup: Optional[CredentialLookup] = None
        self._check_realm = check_realm
        self._lock = threading.Lock()
        self._basic = False
        self._tokens: Dict[Tuple[str, ...], Tuple[str, float]] = {}
        self._refreshed: Set[Tuple[str, ...]] = set()
        self._secrets: List[str] = []

    def __repr__(self) -> str:
        return f"Authenticator({self.registry!r})"

    @property
    def secrets(self) -> Tuple[str, ...]:
        """Every secret known for this registry (for `scrub`): the credentials it may send, those
        they shadow, and the tokens it got. Looks the credentials up if nothing did yet."""
        try:
            self._credentials()
        except UserError:  # an unreadable config: nothing was sent from it
            pass
        return tuple(self._secrets)

    def _credentials(self) -> CredentialLookup:
        if self._lookup is None:
            lookup = self._lookup_fn()
            for creds in (*((lookup.credentials,) if lookup.credentials is not None else ()), *lookup.shadowed):
                self._secrets.extend(secrets_of(creds))
            self._lookup = lookup
        return self._lookup

    def authorization(self, scopes: Tuple[str, ...]) -> Optional[str]:
        with self._lock:
            cached = self._tokens.get(scopes)
            if cached is not None and cached[1] > time.monotonic():
                return f"Bearer {cached[0]}"
            if self._basic:
                creds = self._credentials().credentials
                return creds.header() if creds is not None else None
            return None

    def _missing_credentials(self, why: str) -> RegistryAuthError:
        found = self._credentials()
        if found.helper:
            return RegistryAuthError(
                f"`{self.registry}` {why}, and docker's config `{found.source}` names only a credential "
                f"helper for it ({found.helper}); credential helpers are not supported: add an `auths` "
                f"entry for `{self.registry}` (`docker login` with no helper configured writes one) or a "
                f"`.netrc` machine entry"
            )
        return RegistryAuthError(
            f"`{self.registry}` {why}: give credentials in docker's config.json `auths` (`--docker-config`, "
            f"`$DOCKER_CONFIG`, ~/.docker/config.json) or a netrc (`--netrc`, ~/.netrc) for this host"
        )

    def handle_challenge(self, header: Optional[str], scopes: Tuple[str, ...], sent: Optional[str]) -> bool:
        """React to a 401 for a request sent with `sent` as its Authorization; raises
        `RegistryAuthError` when no retry can help."""
        challenges = parse_challenges(header)
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        with self._lock:
            if bearer is not None:
                if sent is not None and sent.startswith("Bearer "):
                    cached = self._tokens.get(scopes)
                    if cached is not None and f"Bearer {cached[0]}" != sent:
                        return True  # another thread fetched a newer token meanwhile
                    if scopes in self._refreshed:  # a fresh token was refused too: no access
                        if self._credentials().credentials is None:
                            raise self._missing_credentials("refused the anonymous token (it needs credentials)")
                        raise self._refused(" for " + " ".join(scopes))
                    self._refreshed.add(scopes)  # perhaps it expired: one more fetch
                else:
                    cached = self._tokens.get(scopes)
                    if cached is not None and cached[1] > time.monotonic():
                        return True  # sent anonymously while another thread got the token
                self._tokens.pop(scopes, None)
                self._fetch_token(bearer, scopes)
                return True
            if basic is not None or not challenges:
                creds = self._credentials().credentials
                if creds is None:
                    raise self._missing_credentials("asks for credentials (HTTP 401)")
                if sent is not None and sent.startswith("Basic "):
                    raise self._refused()
                self._basic = True
                return True
        raise RegistryAuthError(
            f"`{self.registry}` asks for an unsupported authentication scheme "
            f"({', '.join(c.scheme for c in challenges)}); Basic and Bearer are supported"
        )

    def _refused(self, what: str = "") -> RegistryAuthError:
        found = self._credentials()
        return RegistryAuthError(
            f"`{self.registry}` refused the credentials from {found.source or 'the configuration'}{what} "
            f"(HTTP 401): check the user name and password (or token) for this host and its access rights"
        )

    def _fetch_token(self, challenge: Challenge, scopes: Tuple[str, ...]) -> Tuple[str, float]:
        realm = challenge.params.get("realm")
        if not realm:
            raise RegistryAuthError(f"`{self.registry}` sent a Bearer challenge without a realm")
        self._check_realm(realm)
        query: List[Tuple[str, str]] = []
        if challenge.params.get("service"):
            query.append(("service", challenge.params["service"]))
        wanted = list(scopes) or [s for s in challenge.params.get("scope", "").split(" ") if s]
        query.extend(("scope", s) for s in wanted)
        url = realm + ("&" if "?" in realm else "?") + urlencode(query) if query else realm
        creds = self._credentials().credentials
        headers = {"Accept": "application/json"}
        if creds is not None:
            headers["Authorization"] = creds.header()
        response = self._http.get(url, headers=headers, max_bytes=_TOKEN_BODY_CAP)
        if response.status in (401, 403):
            if creds is None:
                raise self._missing_credentials(f"'s token service refused an anonymous token (HTTP {response.status})")
            raise RegistryAuthError(
                f"the token service of `{self.registry}` refused the credentials from {self._credentials().source} "
                f"(HTTP {response.status}): check the user name and password for this host"
            )
        if not response.ok:
            raise OperationalError(
                f"the token service of `{self.registry}` answered HTTP {response.status} "
                f"{scrub(response.reason, self._secrets)}".rstrip()
            )
        try:
            document = json.loads(response.read())
        except ValueError:
            raise OperationalError(f"the token service of `{self.registry}` did not answer JSON") from None
        token = document.get("token") or document.get("access_token") if isinstance(document, dict) else None
        if not isinstance(token, str) or not token:
            raise OperationalError(f"the token service of `{self.registry}` answered without a `token`")
        expires_in = document.get("expires_in", 60)
        lifetime = float(expires_in) if isinstance(expires_in, (int, float)) and expires_in > 0 else 60.0
        expires = time.monotonic() + max(lifetime - 10.0, lifetime / 2)
        self._secrets.append(token)
        self._tokens[scopes] = (token, expires)
        logger.debug("got a registry token for %s scopes %s", self.registry, " ".join(scopes))
        return token, expires
