"""Index client: PEP 691 JSON and PEP 503 HTML pages into the same ProjectFiles; find-links."""

from __future__ import annotations

import hashlib
import json
import socket
from datetime import datetime, timezone
from pathlib import Path

import pytest

from fastpex.core.net.http import HttpClient, HttpConfig
from fastpex.core.net.index import (
    SIMPLE_ACCEPT,
    IndexClient,
    IndexUnreachableError,
    find_links_files,
    normalize_project_name,
    parse_html_page,
    parse_json_page,
    parse_upload_time,
    project_url,
)
from fastpex.testing.index_server import Fault, IndexConfig, IndexServer
from fastpex.testing.wheels import build_sdist, build_wheel, sha256_file, wheel_metadata_bytes

FAST = HttpConfig(max_retries=1, backoff_initial=0.01, connect_timeout=1)


def test_json_and_html_pages_parse_to_the_same_files(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path, "Foo.Bar", "1.0", requires_python=">=3.8")
    sdist = build_sdist(tmp_path, "Foo.Bar", "1.0")
    yanked_wheel = build_wheel(tmp_path, "foo-bar", "0.9")
    config = IndexConfig(yanked={yanked_wheel.name: "broken"})
    with IndexServer(tmp_path, config=config) as server, HttpClient(FAST) as http:
        page = IndexClient(http).project_page(server.simple_url, "Foo_Bar")
        assert page is not None and page.project == "foo-bar" and page.api_version == "1.1"
        assert server.requests[0].accept == SIMPLE_ACCEPT
        by_name = {f.filename: f for f in page.files}
        w = by_name[wheel.name]
        assert w.url == server.file_url(wheel.name)
        assert w.sha256 == sha256_file(wheel) and w.size == wheel.stat().st_size
        assert w.requires_python == ">=3.8"
        assert w.core_metadata == {"sha256": hashlib.sha256(wheel_metadata_bytes(wheel)).hexdigest()}
        assert w.upload_datetime == datetime(2020, 1, 1, tzinfo=timezone.utc)
        assert by_name[sdist.name].core_metadata is None and by_name[sdist.name].is_sdist
        assert by_name[yanked_wheel.name].yanked and by_name[yanked_wheel.name].yanked_reason == "broken"
        assert str(w.version) == "1.0" and w.project == "foo-bar"

        html = http.get(server.project_url("foo-bar"), headers={"Accept": "text/html"})
        assert html.header("Content-Type", "").startswith("text/html")
        html_page = parse_html_page(html.read(), html.url, "foo-bar")
        for f in html_page.files:
            j = by_name[f.filename]
            assert (f.url, f.sha256, f.requires_python, f.core_metadata, f.yanked, f.yanked_reason) == (
                j.url,
                j.sha256,
                j.requires_python,
                j.core_metadata,
                j.yanked,
                j.yanked_reason,
            )


def test_html_details() -> None:
    body = b"""<!DOCTYPE html><html><head><base href="/files/"></head><body>
    <a href="a-1.0.tar.gz#sha256=ABC" data-requires-python="&gt;=3.9">a-1.0.tar.gz</a>
    <a href="https://user:pw@other.example/x/a-2.0-py3-none-any.whl" data-dist-info-metadata="sha256=def"
       data-yanked>a-2.0-py3-none-any.whl</a>
    <a href="a-3.0-py3-none-any.whl" data-core-metadata="true">a-3.0</a>
    </body></html>"""
    page = parse_html_page(body, "https://idx.example/simple/a/", "A")
    first, second, third = page.files
    assert first.url == "https://idx.example/files/a-1.0.tar.gz"
    assert first.hashes == {"sha256": "abc"} and first.requires_python == ">=3.9"
    assert second.url == "https://other.example/x/a-2.0-py3-none-any.whl"  # credentials dropped
    assert second.core_metadata == {"sha256": "def"} and second.yanked and second.yanked_reason == ""
    assert third.core_metadata is True and third.filename == "a-3.0-py3-none-any.whl"


def test_json_details() -> None:
    doc = {
        "meta": {"api-version": "1.0"},
        "name": "a",
        "files": [
            {"filename": "a-1.0-py3-none-any.whl", "url": "../../f/a-1.0-py3-none-any.whl", "hashes": {},
             "dist-info-metadata": {"sha256": "X"}, "yanked": True},
            {"filename": "a-2.0-py3-none-any.whl", "url": "/f/a-2.0-py3-none-any.whl#sha256=aa",
             "hashes": {}, "core-metadata": True, "dist-info-metadata": False},
        ],
    }
    page = parse_json_page(json.dumps(doc).encode(), "https://idx.example/simple/a/", "a")
    one, two = page.files
    assert one.url == "https://idx.example/f/a-1.0-py3-none-any.whl"
    assert one.core_metadata == {"sha256": "x"} and one.yanked and one.yanked_reason == ""
    assert two.core_metadata is True and two.sha256 == "aa" and two.url.endswith("/f/a-2.0-py3-none-any.whl")


def test_missing_project_is_none_and_errors_are_typed(tmp_path: Path) -> None:
    build_wheel(tmp_path, "demo", "1.0")
    with IndexServer(tmp_path) as server, HttpClient(FAST) as http:
        assert IndexClient(http).project_page(server.simple_url, "nope") is None
        server.update(faults=(Fault("http_500", pattern="/simple/*"),))
        with pytest.raises(IndexUnreachableError, match="HTTP 500"):
            IndexClient(http).project_page(server.simple_url, "demo")


def test_unreachable_index_error_is_redacted() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with HttpClient(FAST) as http:
        with pytest.raises(IndexUnreachableError) as info:
            IndexClient(http).project_page(f"http://me:topsecret@127.0.0.1:{port}/simple", "x")
    assert "topsecret" not in str(info.value) and f"me:***@127.0.0.1:{port}/simple/x/" in str(info.value)


def test_credentials_in_the_index_url_are_used_but_never_kept(tmp_path: Path) -> None:
    build_wheel(tmp_path, "demo", "1.0")
    with IndexServer(tmp_path, config=IndexConfig(require_auth=("u", "p@ss"))) as server:
        with HttpClient(FAST, configured_indexes=[server.auth_url()]) as http:
            page = IndexClient(http).project_page(server.auth_url(), "demo")
    assert page is not None and "p%40ss" not in page.url and "@" not in page.url
    assert all("@" not in f.url for f in page.files)


def test_find_links(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path, "Local_Pkg", "1.0")
    build_sdist(tmp_path, "other", "2.0")
    (tmp_path / "notes.txt").write_text("not a dist")
    files = find_links_files(tmp_path, "local-pkg")
    assert [f.filename for f in files] == [wheel.name]
    assert files[0].url == wheel.as_uri() and files[0].sha256 == sha256_file(wheel)
    assert len(find_links_files(tmp_path)) == 2
    with pytest.raises(IndexUnreachableError, match="does not exist"):
        find_links_files(tmp_path / "missing")


def test_helpers() -> None:
    assert normalize_project_name("Foo__Bar.baz") == "foo-bar-baz"
    assert project_url("https://x/simple", "Foo_Bar") == "https://x/simple/foo-bar/"
    assert parse_upload_time("2024-05-01T10:00:00.123Z") == datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=timezone.utc)
    assert parse_upload_time("garbage") is None
