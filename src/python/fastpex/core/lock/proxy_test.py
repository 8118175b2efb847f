"""The metadata proxy with real pip 26.3 in front of a real loopback index."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, List, Optional

import pytest

from fastpex.core.lock.metadata import SdistMetadataError
from fastpex.core.lock.metadata_store import artifact_store_path
from fastpex.core.lock.proxy import IndexSpec, MetadataProxy, ProxyConfig, ProxyConfigError, Route
from fastpex.core.net.http import HttpClient, HttpConfig
from fastpex.core.net.index import IndexUnreachableError, parse_html_page, parse_json_page
from fastpex.testing.fixtures import isolated_pip_env, run_pip
from fastpex.testing.index_server import IndexConfig, IndexServer
from fastpex.testing.pypiserver_fixture import pypiserver_available, run_pypiserver
from fastpex.testing.wheels import build_sdist, build_wheel, sha256_file

PIP_VERSION = "26.3"
TARGET = "linux_x86_64-cp311"
FAST = HttpConfig(max_retries=1, backoff_initial=0.01, connect_timeout=1)


def _python_for_pip() -> Optional[str]:
    """pip 26.3 needs Python >= 3.10 (the tests themselves may run on 3.9)."""
    candidates = [sys.executable] + [shutil.which(f"python3.{minor}") for minor in (11, 12, 13, 10)]
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info >= (3, 10))"], capture_output=True, text=True
        )
        if probe.stdout.strip() == "True":
            return candidate
    return None


@pytest.fixture(scope="module")
def pip_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An interpreter with pip 26.3: this one when it has it (the test resolve pins it), else a
    scratch venv with pip 26.3 installed once for this module, from PyPI."""
    mine = subprocess.run(
        [sys.executable, "-m", "pip", "--version"], capture_output=True, text=True, env=isolated_pip_env()
    )
    if mine.stdout.startswith(f"pip {PIP_VERSION} "):
        return sys.executable
    base = _python_for_pip()
    assert base is not None, f"pip {PIP_VERSION} needs a Python >= 3.10 and none was found"
    venv = tmp_path_factory.mktemp("pip") / "venv"
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    run_pip(["install", "-q", f"pip=={PIP_VERSION}"], python=python, timeout=300)
    version = subprocess.run([python, "-m", "pip", "--version"], capture_output=True, text=True, env=isolated_pip_env())
    assert version.stdout.startswith(f"pip {PIP_VERSION} "), version.stdout
    return python


def pip_lock(python: str, index_url: str, report: Path, *requirements: str, check: bool = True) -> "subprocess.CompletedProcess[str]":
    args = ["install", "--dry-run", "--ignore-installed", "--report", str(report), "--index-url", index_url]
    return run_pip([*args, *requirements], python=python, check=check)


def installed(report: Path) -> dict:
    doc = json.loads(report.read_text())
    return {item["metadata"]["name"]: item for item in doc["install"]}


def full_artifact_gets(server: IndexServer) -> List[str]:
    """GETs of whole artifacts (no Range, not `.metadata`): what locking must never do."""
    return [r.path for r in server.matching("/files/*", "GET") if r.range is None and not r.path.endswith(".metadata")]


@pytest.fixture
def dists(tmp_path: Path) -> Path:
    d = tmp_path / "dists"
    build_wheel(d, "app", "1.0", requires_dist=["dep>=1", "other"])
    build_wheel(d, "dep", "1.0")
    build_wheel(d, "dep", "2.0", requires_python=">=3.8", file_size_padding=2_000_000)
    build_wheel(d, "other", "1.5", file_size_padding=2_000_000)
    return d


def test_pip_dry_run_downloads_no_artifacts(pip_python: str, dists: Path, tmp_path: Path) -> None:
    config = IndexConfig(advertise_metadata=False, serve_metadata_files=False, honour_range=True)
    with IndexServer(dists, config=config) as server:
        proxy_config = ProxyConfig(indexes=(IndexSpec("main", server.simple_url),), cache_root=tmp_path / "cache")
        with MetadataProxy(proxy_config) as proxy:
            report = tmp_path / "report.json"
            pip_lock(pip_python, proxy.index_url(TARGET), report, "app")
            chosen = installed(report)
            assert {name: item["metadata"]["version"] for name, item in chosen.items()} == {
                "app": "1.0",
                "dep": "2.0",
                "other": "1.5",
            }
            assert full_artifact_gets(server) == []
            assert proxy.artifact_requests == 0 and proxy.errors == []
            # pip's report names proxy URLs; they map back to the upstream files and hashes.
            dep = proxy.upstream_file(chosen["dep"]["download_info"]["url"])
            assert dep.url == server.file_url("dep-2.0-py3-none-any.whl")
            assert chosen["dep"]["download_info"]["archive_info"]["hashes"]["sha256"] == dep.sha256
            assert dep.sha256 == sha256_file(dists / "dep-2.0-py3-none-any.whl")
            served = {f.filename: f for f in proxy.files_for("dep", TARGET)}
            assert set(served) == {"dep-1.0-py3-none-any.whl", "dep-2.0-py3-none-any.whl"}
            assert served["dep-2.0-py3-none-any.whl"].requires_python == ">=3.8"
            assert served["dep-2.0-py3-none-any.whl"].upload_time and served["dep-2.0-py3-none-any.whl"].size

        # A second lock with a warm cache touches no file on the index at all.
        server.reset_log()
        with MetadataProxy(proxy_config) as proxy:
            pip_lock(pip_python, proxy.index_url(TARGET), tmp_path / "again.json", "app")
        assert installed(tmp_path / "again.json").keys() == chosen.keys()
        assert server.matching("/files/*") == []


def test_upload_cutoff_excludes_newer_versions(pip_python: str, dists: Path, tmp_path: Path) -> None:
    times = {"dep-2.0-py3-none-any.whl": datetime(2024, 6, 1, tzinfo=timezone.utc)}
    with IndexServer(dists, config=IndexConfig(upload_times=times)) as server:
        config = ProxyConfig(
            indexes=(IndexSpec("main", server.simple_url),),
            upload_cutoff=datetime(2023, 1, 1, tzinfo=timezone.utc),
            cache_root=tmp_path / "cache",
        )
        with MetadataProxy(config) as proxy:
            report = tmp_path / "report.json"
            pip_lock(pip_python, proxy.index_url(TARGET), report, "app")
            assert installed(report)["dep"]["metadata"]["version"] == "1.0"
            assert [f.filename for f in proxy.files_for("dep")] == ["dep-1.0-py3-none-any.whl"]


def _page(proxy: MetadataProxy, target: str, project: str, accept: str = "application/vnd.pypi.simple.v1+json"):
    with HttpClient(FAST) as http:
        response = http.get(f"{proxy.index_url(target)}{project}/", headers={"Accept": accept})
        body = response.read()
        return response, body


def test_routing_and_first_index_wins(tmp_path: Path) -> None:
    public, private = tmp_path / "public", tmp_path / "private"
    build_wheel(public, "gpu-lib", "1.0")
    build_wheel(private, "gpu-lib", "1.0+cu121")
    build_wheel(public, "shared", "1.0")
    build_wheel(private, "shared", "9.0")
    build_wheel(private, "only-private", "1.0")
    with IndexServer(public) as pub, IndexServer(private) as priv:
        config = ProxyConfig(
            indexes=(IndexSpec("pypi", pub.simple_url), IndexSpec("cuda", priv.simple_url)),
            routes=(Route("GPU_lib", ("cuda",), platforms=("linux_*",)),),
            cache_root=tmp_path / "cache",
        )
        with MetadataProxy(config) as proxy:

            def hosts(target: str, project: str) -> List[str]:
                response, body = _page(proxy, target, project)
                assert response.status == 200, body
                page = parse_json_page(body, response.url, project)
                return sorted(proxy.upstream_file(f.url).url for f in page.files)

            assert hosts("linux_x86_64-cp311", "gpu-lib") == [priv.file_url("gpu_lib-1.0+cu121-py3-none-any.whl")]
            assert hosts("macosx_arm64-cp311", "gpu-lib") == [pub.file_url("gpu_lib-1.0-py3-none-any.whl")]
            # No route: the first index that has the project wins; later ones are not merged in.
            assert hosts("linux_x86_64-cp311", "shared") == [pub.file_url("shared-1.0-py3-none-any.whl")]
            assert hosts("linux_x86_64-cp311", "only-private") == [priv.file_url("only_private-1.0-py3-none-any.whl")]
            assert _page(proxy, TARGET, "nothing-anywhere")[0].status == 404
        assert priv.count("/simple/shared/") == 0

    with pytest.raises(ProxyConfigError, match="unknown index"):
        ProxyConfig(indexes=(IndexSpec("a", "http://x/simple/"),), routes=(Route("x", ("b",)),))


def test_credentials_work_and_never_leak(
    pip_python: str, dists: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cr3t-T0ken"
    monkeypatch.setenv("FASTPEX_TEST_INDEX_TOKEN", secret)
    caplog.set_level(logging.DEBUG)
    config = IndexConfig(require_auth=("alice", secret), advertise_metadata=False, serve_metadata_files=False)
    with IndexServer(dists, config=config) as server:
        url = server.simple_url.replace("http://", "http://alice:${FASTPEX_TEST_INDEX_TOKEN}@")
        proxy_config = ProxyConfig(indexes=(IndexSpec("private", url),), cache_root=tmp_path / "cache")
        assert secret not in repr(proxy_config)
        with MetadataProxy(proxy_config) as proxy:
            report = tmp_path / "report.json"
            result = pip_lock(pip_python, proxy.index_url(TARGET), report, "app")
            assert installed(report)["dep"]["metadata"]["version"] == "2.0"
            assert proxy.errors == []
            pages = [_page(proxy, TARGET, p, a)[1] for p in ("app", "dep") for a in ("text/html", "application/vnd.pypi.simple.v1+json")]
            for text in [result.stdout, result.stderr, report.read_text(), caplog.text]:
                assert secret not in text
            for page in pages:  # pages name only the proxy, never the upstream index
                assert secret not in page.decode() and "alice" not in page.decode()
                assert f"127.0.0.1:{server.port}" not in page.decode()
            assert all("alice" not in f.url for f in proxy.files_for("dep"))
        assert full_artifact_gets(server) == []
        assert server.count("/files/*", "GET") > 0  # range reads did go through, authenticated


def test_unreachable_index_is_a_502_and_a_recorded_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = ProxyConfig(
        indexes=(IndexSpec("down", f"http://bob:pa55word@127.0.0.1:{port}/simple/"),),
        cache_root=tmp_path / "cache",
        http=FAST,
    )
    with MetadataProxy(config) as proxy:
        response, body = _page(proxy, TARGET, "anything")
        assert response.status == 502 and b"pa55word" not in body
        assert len(proxy.errors) == 1 and isinstance(proxy.errors[0], IndexUnreachableError)
        assert f"bob:***@127.0.0.1:{port}" in str(proxy.errors[0]) and "pa55word" not in str(proxy.errors[0])
        with pytest.raises(IndexUnreachableError):
            proxy.raise_for_errors()


def test_sha256_is_computed_only_when_asked(dists: Path, tmp_path: Path) -> None:
    config = IndexConfig(include_hashes=False, advertise_metadata=False, serve_metadata_files=False)
    with IndexServer(dists, config=config) as server:
        proxy_config = ProxyConfig(indexes=(IndexSpec("main", server.simple_url),), cache_root=tmp_path / "cache")
        with MetadataProxy(proxy_config) as proxy:
            response, body = _page(proxy, TARGET, "dep")
            page = parse_json_page(body, response.url, "dep")
            assert all(not f.hashes and f.core_metadata is True for f in page.files)
            with HttpClient(FAST) as http:
                meta = http.get(page.files[-1].url + ".metadata")
                assert meta.status == 200 and b"Name: dep" in meta.read()
            assert full_artifact_gets(server) == []  # pages + metadata: no hashing downloads

            chosen = proxy.upstream_file(page.files[-1].url)
            (hashed,) = proxy.ensure_sha256([chosen])
            wheel = dists / chosen.filename
            assert hashed.sha256 == sha256_file(wheel)
            assert artifact_store_path(hashed.sha256, tmp_path / "cache").read_bytes() == wheel.read_bytes()
            assert full_artifact_gets(server) == [f"/files/{chosen.filename}"]
            assert {f.filename: f.sha256 for f in proxy.files_for("dep")}[chosen.filename] == hashed.sha256

        server.reset_log()
        with MetadataProxy(proxy_config) as proxy:  # a later run: validators say "same file"
            (again,) = proxy.ensure_sha256([chosen])
        assert again.sha256 == hashed.sha256
        assert [r.method for r in server.requests] == ["HEAD"]


def test_html_pages_and_artifacts_through_the_proxy(dists: Path, tmp_path: Path) -> None:
    with IndexServer(dists) as server:
        config = ProxyConfig(indexes=(IndexSpec("main", server.simple_url),), cache_root=tmp_path / "cache")
        with MetadataProxy(config) as proxy:
            response, body = _page(proxy, TARGET, "dep", accept="text/html")
            assert response.header("Content-Type") == "text/html"
            page = parse_html_page(body, response.url, "dep")
            assert {f.filename for f in page.files} == {"dep-1.0-py3-none-any.whl", "dep-2.0-py3-none-any.whl"}
            assert all(f.core_metadata is not None and f.sha256 for f in page.files)
            with HttpClient(FAST) as http:
                artifact = http.get(page.files[0].url).read()
            assert artifact == (dists / page.files[0].filename).read_bytes()
            assert proxy.artifact_requests == 1


def test_sdist_that_needs_a_build_is_a_recorded_error(tmp_path: Path) -> None:
    dists = tmp_path / "dists"
    build_sdist(dists, "legacy", "1.0")  # Metadata-Version 2.1: dependencies unknown without a build
    with IndexServer(dists) as server:
        config = ProxyConfig(indexes=(IndexSpec("main", server.simple_url),), cache_root=tmp_path / "cache")
        with MetadataProxy(config) as proxy:
            response, body = _page(proxy, TARGET, "legacy")
            (file,) = parse_json_page(body, response.url, "legacy").files
            with HttpClient(FAST) as http:
                assert http.get(file.url + ".metadata").status == 404
            assert isinstance(proxy.errors[0], SdistMetadataError)
            assert "Building sdists is not supported" in str(proxy.errors[0])


def test_known_target_tags_prefetch_the_likely_next_metadata(dists: Path, tmp_path: Path) -> None:
    build_wheel(dists, "dep", "2.0", tag="cp311-cp311-manylinux_2_17_x86_64")
    build_wheel(dists, "dep", "2.0", tag="cp311-cp311-win_amd64")
    config = IndexConfig(advertise_metadata=False, serve_metadata_files=False)
    with IndexServer(dists, config=config) as server:
        proxy_config = ProxyConfig(
            indexes=(IndexSpec("main", server.simple_url),),
            cache_root=tmp_path / "cache",
            target_tags={TARGET: ("cp311-cp311-manylinux_2_17_x86_64", "py3-none-any")},
        )
        with MetadataProxy(proxy_config) as proxy:
            assert _page(proxy, TARGET, "dep")[0].status == 200
            best = "/files/dep-2.0-cp311-cp311-manylinux_2_17_x86_64.whl"
            deadline = time.monotonic() + 10
            while not server.matching(best, "GET") and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.2)
            fetched = {r.path for r in server.matching("/files/*", "GET")}
            assert fetched == {best, best + ".metadata"}  # probe, then range reads
            assert _page(proxy, "other-target", "dep")[0].status == 200  # no tags known: no prefetch
            time.sleep(0.2)
            assert {r.path for r in server.matching("/files/*", "GET")} == fetched


def test_html_only_index_with_a_cutoff_keeps_undated_files_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """pypiserver serves PEP 503 HTML only: no upload times, relative links, `#sha256=`."""
    assert pypiserver_available(), "pypiserver is not installed (it is in the test resolve)"
    dists = tmp_path / "dists"
    wheel = build_wheel(dists, "dep", "1.0", requires_dist=["six"], file_size_padding=1_000_000)
    build_wheel(dists, "other", "1.5")
    with run_pypiserver(dists) as simple_url:
        config = ProxyConfig(
            indexes=(IndexSpec("pypiserver", simple_url),),
            upload_cutoff=datetime(2000, 1, 1, tzinfo=timezone.utc),
            cache_root=tmp_path / "cache",
        )
        with MetadataProxy(config) as proxy:
            caplog.set_level(logging.WARNING, logger="fastpex.core.lock.proxy")
            for project in ("dep", "other"):
                response, body = _page(proxy, TARGET, project)
                assert response.status == 200 and len(parse_json_page(body, response.url, project).files) == 1
            assert caplog.text.count("gives no upload time") == 1
            (dep,) = proxy.files_for("dep")
            assert dep.sha256 == sha256_file(wheel) and dep.upload_time is None
            with HttpClient(FAST) as http:
                proxied = parse_json_page(_page(proxy, TARGET, "dep")[1], proxy.url, "dep").files[0]
                assert b"Requires-Dist: six" in http.get(proxied.url + ".metadata").read()
            assert proxy.fetcher.stats.bytes_received < 200_000


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_pages_list_only_wheels_the_target_can_use_but_all_files_are_recorded(dists: Path, tmp_path: Path) -> None:
    build_wheel(dists, "dep", "2.0", tag="cp311-cp311-manylinux_2_17_x86_64")
    build_wheel(dists, "dep", "2.0", tag="cp311-cp311-win_amd64")
    build_sdist(dists, "dep", "2.0")
    with IndexServer(dists) as server:
        config = ProxyConfig(
            indexes=(IndexSpec("main", server.simple_url),),
            cache_root=tmp_path / "cache",
            target_tags={TARGET: ("cp311-cp311-manylinux_2_17_x86_64", "py3-none-any")},
            speculate=False,
        )
        with MetadataProxy(config) as proxy:
            response, body = _page(proxy, TARGET, "dep")
            listed = {f.filename for f in parse_json_page(body, response.url, "dep").files}
            assert "dep-2.0-cp311-cp311-win_amd64.whl" not in listed
            assert {"dep-2.0-cp311-cp311-manylinux_2_17_x86_64.whl", "dep-2.0.tar.gz", "dep-1.0-py3-none-any.whl"} <= listed
            recorded = {f.filename for f in proxy.files_for("dep", TARGET)}
            assert "dep-2.0-cp311-cp311-win_amd64.whl" in recorded and listed < recorded
            # A target without known tags sees everything.
            response, body = _page(proxy, "unknown-target", "dep")
            assert {f.filename for f in parse_json_page(body, response.url, "dep").files} == recorded


def test_pages_leave_off_what_the_targets_python_or_wheels_only_excludes(dists: Path, tmp_path: Path) -> None:
    build_wheel(dists, "dep", "3.0", requires_python=">=3.12")
    build_wheel(dists, "dep", "2.5", requires_python=">=3.11.10")  # the patch level counts
    build_sdist(dists, "dep", "2.0")
    with IndexServer(dists) as server:
        for wheels_only in (True, False):
            config = ProxyConfig(
                indexes=(IndexSpec("main", server.simple_url),),
                cache_root=tmp_path / "cache",
                target_tags={TARGET: ("py3-none-any",), "linux_x86_64-cp312": ("py3-none-any",)},
                target_pythons={TARGET: "3.11.9", "linux_x86_64-cp312": "3.12.3"},
                wheels_only=wheels_only,
                speculate=False,
            )
            with MetadataProxy(config) as proxy:
                response, body = _page(proxy, TARGET, "dep")
                listed = {f.filename for f in parse_json_page(body, response.url, "dep").files}
                expected = {"dep-1.0-py3-none-any.whl", "dep-2.0-py3-none-any.whl"}
                assert listed == (expected if wheels_only else expected | {"dep-2.0.tar.gz"})
                response, body = _page(proxy, "linux_x86_64-cp312", "dep")
                listed = {f.filename for f in parse_json_page(body, response.url, "dep").files}
                assert {"dep-3.0-py3-none-any.whl", "dep-2.5-py3-none-any.whl"} <= listed
                # The lock still sees every file of the project.
                assert "dep-3.0-py3-none-any.whl" in {f.filename for f in proxy.files_for("dep", TARGET)}


def test_dependencies_are_fetched_before_pip_asks(dists: Path, tmp_path: Path) -> None:
    with IndexServer(dists) as server:
        config = ProxyConfig(indexes=(IndexSpec("main", server.simple_url),), cache_root=tmp_path / "cache")
        with MetadataProxy(config) as proxy:
            proxy.warm(TARGET, ["app[extra]>=1; python_version >= '3'"])
            assert _wait_for(lambda: server.count("/simple/app/") == 1)
            response, body = _page(proxy, TARGET, "app")
            (app,) = parse_json_page(body, response.url, "app").files
            with HttpClient(FAST) as http:
                assert b"Requires-Dist: dep>=1" in http.get(app.url + ".metadata").read()
            # Serving app's metadata started on the pages of its dependencies.
            assert _wait_for(lambda: server.count("/simple/dep/") == 1 and server.count("/simple/other/") == 1)
            _page(proxy, TARGET, "dep")
            assert server.count("/simple/dep/") == 1 and server.count("/simple/app/") == 1


@pytest.mark.parametrize("validators", [("etag", "last-modified"), ()])
def test_a_second_lock_asks_conditionally_and_sees_a_changed_page(tmp_path: Path, validators: tuple) -> None:
    dists = tmp_path / "dists"
    dists.mkdir()
    build_wheel(dists, "dep", "1.0")
    build_wheel(dists, "other", "1.0")
    tags = {TARGET: ("py3-none-any",)}
    with IndexServer(dists, IndexConfig(page_validators=validators)) as server:
        config = ProxyConfig(indexes=(IndexSpec("main", server.simple_url),), cache_root=tmp_path / "cache", target_tags=tags)
        with MetadataProxy(config) as proxy:
            first = {p: [f.filename for f in proxy.page_files(TARGET, p) or []] for p in ("dep", "other")}
            digests = {p: proxy.page_digest(TARGET, p) for p in ("dep", "other")}
            assert proxy.index_client.stats.parsed == 2
        build_wheel(dists, "dep", "2.0")
        server.reset_log()
        with MetadataProxy(config) as proxy:  # the next lock: `other` unchanged, `dep` has an upload
            assert [f.filename for f in proxy.page_files(TARGET, "other") or []] == first["other"]
            assert "dep-2.0-py3-none-any.whl" in [f.filename for f in proxy.page_files(TARGET, "dep") or []]
            assert proxy.page_digest(TARGET, "other") == digests["other"] != proxy.page_digest(TARGET, "dep")
            stats = proxy.index_client.stats
            assert stats.parsed == 2  # lazily: `other` from its kept bytes after a 304, or its 200
            assert (stats.fetched, stats.not_modified) == ((1, 1) if validators else (2, 0))
            assert all(r.conditional == bool(validators) for r in server.matching("/simple/*"))
