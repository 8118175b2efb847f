"""Exit statuses: a wrapper decides, unless what it wraps is a failure no wrapper may blame on the
input (an unreachable proxy)."""

from __future__ import annotations

from fastpex.core.errors import FastpexError, OperationalError, UserError, exit_code_of
from fastpex.core.net.errors import ProxyError
from fastpex.core.net.index import IndexUnreachableError


def _wrapped(cause: BaseException) -> FastpexError:
    """`cause` as the lock reports it: an unusable index, inside a failed resolve (a UserError)."""
    try:
        try:
            raise cause
        except Exception as e:
            raise IndexUnreachableError("http://i.example/simple/a/", str(e)) from e
    except IndexUnreachableError as e:
        try:
            raise UserError(f"Resolving failed: {e}") from e
        except UserError as outer:
            return outer


def test_an_unreachable_proxy_is_operational_however_deep_it_is_wrapped() -> None:
    down = ProxyError("http://i.example/simple/a/", "http://127.0.0.1:9", "HTTPS_PROXY", "refused", unreachable=True)
    assert exit_code_of(down) == 1
    assert exit_code_of(_wrapped(down)) == 1


def test_other_wrapped_failures_keep_the_wrappers_exit_status() -> None:
    refused = ProxyError("http://i.example/simple/a/", "http://p:1", "HTTPS_PROXY", "407", unreachable=False, status=407)
    assert exit_code_of(_wrapped(refused)) == 2
    assert exit_code_of(_wrapped(OperationalError("HTTP 500"))) == 2
    assert exit_code_of(UserError("bad flag")) == 2
    assert exit_code_of(OperationalError("disk full")) == 1
