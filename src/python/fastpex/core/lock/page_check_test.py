"""The early page check (`lock.page_check`): the CLI fetches the last lock's pages before the
replay key is known; the lookup takes them over. A head start only: a changed page, or a
pointer naming other pages, must never replay a stale lock."""

from __future__ import annotations

import json
import logging
import ssl
from pathlib import Path
from typing import List

import pytest

from fastpex.core.cli.lock import main
from fastpex.core.lock import page_check
from fastpex.core.lockfile import load_lock
from fastpex.core.net.pool import tls_context
from fastpex.testing.index_server import IndexServer
from fastpex.testing.wheels import WheelFactory

REQUIREMENTS = ["--requirement", "app"]


@pytest.fixture
def factory(tmp_path: Path) -> WheelFactory:
    f = WheelFactory(tmp_path / "dists")
    f.wheel("app", "1.0", requires_dist=["dep>=1"])
    f.wheel("dep", "1.0")
    f.wheel("other", "1.0")
    return f


def _lock(index: IndexServer, tmp_path: Path, *extra: str) -> int:
    return main(
        [
            "--resolve", "python-default", "--index", index.simple_url, *REQUIREMENTS,
            "--target", "linux_x86_64-cp311", "--output", str(tmp_path / "out.lock"),
            "--cache-dir", str(tmp_path / "cache"), *extra,
        ]
    )


def _hint_file(tmp_path: Path) -> Path:
    (found,) = (tmp_path / "cache").glob("locks/v*/hints/*.json")
    return found


def _page_requests(index: IndexServer) -> List[str]:
    return sorted(r.path for r in index.requests if r.path.startswith("/simple/"))


def _early_log(caplog: pytest.LogCaptureFixture) -> List[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("page check:")]


def test_the_early_check_is_taken_over_and_asks_each_page_once(
    index: IndexServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert _lock(index, tmp_path) == 0
    hinted = json.loads(_hint_file(tmp_path).read_text())["pages"]
    assert ["default", "app"] in hinted and ["default", "dep"] in hinted
    first = (tmp_path / "out.lock").read_bytes()

    index.reset_log()
    caplog.set_level(logging.DEBUG, logger="fastpex")
    assert _lock(index, tmp_path) == 0
    assert "without resolving" in caplog.text
    assert (tmp_path / "out.lock").read_bytes() == first
    (line,) = _early_log(caplog)
    assert line == f"page check: {len(hinted)} of {len(hinted)} pages from the early check (which asked for {len(hinted)})"
    requests = _page_requests(index)
    assert requests == sorted(set(requests)) and len(requests) == len(hinted)  # each page once, by the early check
    assert not page_check._started  # taken over, nothing left running


def test_the_early_check_does_not_depend_on_where_the_lock_goes(
    index: IndexServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Pants runs each lock in a new sandbox: the same resolve, another output path.
    assert _lock(index, tmp_path) == 0
    n = len(json.loads(_hint_file(tmp_path).read_text())["pages"])
    caplog.set_level(logging.DEBUG, logger="fastpex")
    elsewhere = tmp_path / "sandbox-2" / "out.lock"
    assert _lock(index, tmp_path, "--output", str(elsewhere)) == 0
    assert "without resolving" in caplog.text and elsewhere.read_bytes() == (tmp_path / "out.lock").read_bytes()
    assert _early_log(caplog) == [f"page check: {n} of {n} pages from the early check (which asked for {n})"]


def test_a_page_changed_since_the_last_lock_is_seen_by_the_early_check(
    factory: WheelFactory, index: IndexServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert _lock(index, tmp_path) == 0
    assert _lock(index, tmp_path) == 0  # the hint now points at exactly the entry's pages
    n = len(json.loads(_hint_file(tmp_path).read_text())["pages"])
    factory.wheel("dep", "2.0")
    caplog.set_level(logging.DEBUG, logger="fastpex")
    assert _lock(index, tmp_path) == 0
    assert "without resolving" not in caplog.text and "default:dep" in caplog.text
    assert _early_log(caplog)[0] == f"page check: {n} of {n} pages from the early check (which asked for {n})"
    assert {d.name: d.version for d in load_lock(tmp_path / "out.lock").distributions}["dep"] == "2.0"


@pytest.mark.parametrize("changed", [False, True])
def test_a_hint_naming_other_pages_costs_requests_never_a_stale_lock(
    factory: WheelFactory, index: IndexServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, changed: bool
) -> None:
    assert _lock(index, tmp_path) == 0
    entry_pages = sorted(json.loads(_hint_file(tmp_path).read_text())["pages"])
    assert ["default", "dep"] in entry_pages and ["default", "other"] not in entry_pages
    # The pointer names one of the entry's pages, and one it never read: the rest are fetched late.
    _hint_file(tmp_path).write_text(json.dumps({"pages": [["default", "app"], ["default", "other"]], "validators": True}))
    if changed:
        factory.wheel("dep", "2.0")
    caplog.set_level(logging.DEBUG, logger="fastpex")
    assert _lock(index, tmp_path) == 0
    assert _early_log(caplog) == [f"page check: 1 of {len(entry_pages)} pages from the early check (which asked for 2)"]
    assert ("without resolving" in caplog.text) is not changed
    assert {d.name: d.version for d in load_lock(tmp_path / "out.lock").distributions}["dep"] == ("2.0" if changed else "1.0")
    if not changed:  # the pointer is corrected for the next run
        assert sorted(json.loads(_hint_file(tmp_path).read_text())["pages"]) == entry_pages


def test_pages_with_validators_are_asked_conditionally_and_without_none_are_not(
    index: IndexServer, tmp_path: Path
) -> None:
    assert _lock(index, tmp_path) == 0  # the server sends ETag and Last-Modified
    index.reset_log()
    assert _lock(index, tmp_path) == 0
    pages = [r for r in index.requests if r.path.startswith("/simple/")]
    assert pages and all(r.conditional and r.status == 304 for r in pages)
    assert json.loads(_hint_file(tmp_path).read_text())["validators"] is True

    index.update(page_validators=())
    assert _lock(index, tmp_path) == 0  # 200s without validators: the hint says so
    assert json.loads(_hint_file(tmp_path).read_text())["validators"] is False
    index.reset_log()
    assert _lock(index, tmp_path) == 0
    pages = [r for r in index.requests if r.path.startswith("/simple/")]
    assert pages and not any(r.conditional for r in pages) and all(r.status == 200 for r in pages)

    index.update(page_validators=("etag",))  # validators again: seen, kept, and used next time
    assert _lock(index, tmp_path) == 0
    assert json.loads(_hint_file(tmp_path).read_text())["validators"] is True
    index.reset_log()
    assert _lock(index, tmp_path) == 0
    assert all(r.conditional for r in index.requests if r.path.startswith("/simple/"))


def test_a_request_that_fails_leaves_no_early_check_running(index: IndexServer, tmp_path: Path) -> None:
    assert _lock(index, tmp_path) == 0
    assert _lock(index, tmp_path, "--target", "no_such_platform-cp311") == 2
    assert not page_check._started


def test_one_tls_context_per_trust_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    system = tls_context()
    assert tls_context() is system and system.verify_mode == ssl.CERT_REQUIRED and system.check_hostname
    system_file = Path(ssl.get_default_verify_paths().openssl_cafile)
    certificates = system_file.read_text() if system_file.is_file() else ""
    bundle = tmp_path / "ca.pem"
    bundle.write_text(certificates)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    own = tls_context()
    assert own is not system and tls_context() is own
    bundle.write_text(certificates + "\n")  # a rewritten store is another store
    assert tls_context() is not own
    monkeypatch.delenv("SSL_CERT_FILE")
    assert tls_context() is system
