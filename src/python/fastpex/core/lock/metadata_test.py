"""MetadataFetcher against a real loopback index, one test per strategy step and failure mode."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterator, List, Mapping

import pytest

from fastpex.core.lock.fetcher import MetadataFetcher
from fastpex.core.lock.metadata import (
    ArtifactHashMismatchError,
    InvalidDistributionError,
    MetadataInconsistentError,
    MetadataMismatchError,
    MetadataSource,
    MetadataTooLargeError,
    SdistMetadataError,
    inflate_member,
)
from fastpex.core.lock.metadata_store import artifact_store_path
from fastpex.core.net.http import HttpClient, HttpConfig
from fastpex.core.net.index import IndexClient, ProjectFile
from fastpex.core.util.cache import CacheKind, cache_dir
from fastpex.core.util.zipmeta import ZipEntry, ZipFormatError
from fastpex.testing.index_server import Fault, IndexConfig, IndexServer
from fastpex.testing.wheels import build_sdist, build_wheel, sha256_file, wheel_metadata_bytes

MB = 1024 * 1024


@pytest.fixture
def cache_root(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def http() -> Iterator[HttpClient]:
    with HttpClient(HttpConfig(backoff_initial=0.01, backoff_max=0.05)) as client:
        yield client


def serve(dists: Path, **config: Any) -> IndexServer:
    return IndexServer(dists, config=IndexConfig(**config))


def page_file(http: HttpClient, server: IndexServer, project: str, filename: str) -> ProjectFile:
    page = IndexClient(http).project_page(server.simple_url, project)
    assert page is not None
    return next(f for f in page.files if f.filename == filename)


def artifact_gets(server: IndexServer, glob: str = "/files/*.whl") -> List[str]:
    """Artifact requests (not `.metadata`), as `range-or-FULL` strings."""
    return [r.range or "FULL" for r in server.matching(glob) if not r.path.endswith(".metadata")]


def test_advertised_metadata_downloads_no_artifact_bytes(dists: Path, cache_root: Path, http: HttpClient) -> None:
    wheel = build_wheel(dists, "demo", "1.0", requires_dist=["dep>=2"], file_size_padding=MB)
    with serve(dists, advertise_metadata=True) as server:
        file = page_file(http, server, "demo", wheel.name)
        assert isinstance(file.core_metadata, dict)
        server.reset_log()
        with MetadataFetcher(http, cache_root) as fetcher:
            result = fetcher.fetch(file)
        assert result.source is MetadataSource.ADVERTISED
        assert result.data == wheel_metadata_bytes(wheel)
        assert b"Requires-Dist: dep>=2" in result.data
        assert server.bytes_sent_for("/files/*.whl") == 0
        assert server.count("/files/*.whl.metadata") == 1
        assert fetcher.stats.requests("advertised") == 1 and fetcher.stats.requests("range") == 0


def test_probe_when_metadata_is_served_but_not_advertised(dists: Path, cache_root: Path, http: HttpClient) -> None:
    wheel = build_wheel(dists, "demo", "1.0", file_size_padding=MB)
    with serve(dists, advertise_metadata=False, serve_metadata_files=True) as server:
        file = page_file(http, server, "demo", wheel.name)
        assert file.core_metadata is None
        result = MetadataFetcher(http, cache_root).fetch(file)
        assert result.source is MetadataSource.PROBE
        assert result.data == wheel_metadata_bytes(wheel)
        assert artifact_gets(server) == []


def test_range_reads_only_the_zip_directory(dists: Path, cache_root: Path, http: HttpClient) -> None:
    wheel = build_wheel(dists, "big", "3.1", requires_dist=["numpy"], file_size_padding=5 * MB)
    assert wheel.stat().st_size > 5 * MB
    with serve(dists, advertise_metadata=False, serve_metadata_files=False, honour_range=True) as server:
        file = page_file(http, server, "big", wheel.name)
        server.reset_log()
        fetcher = MetadataFetcher(http, cache_root)
        result = fetcher.fetch(file)
        assert result.source is MetadataSource.RANGE
        assert result.data == wheel_metadata_bytes(wheel)
        gets = artifact_gets(server)
        assert gets and all(g != "FULL" for g in gets), gets
        assert gets[0] == "bytes=-65536"
        assert len(gets) <= 2  # tail (+ at most the member's bytes)
        sent = server.bytes_sent_for("/files/big-*")
        assert sent < 100 * 1024 < wheel.stat().st_size // 50
        assert fetcher.stats.bytes_received == sent


def test_range_reads_a_zip64_central_directory(dists: Path, cache_root: Path, http: HttpClient) -> None:
    """> 65535 entries force ZIP64 end records; the directory (~4 MB) is mostly not read."""
    name = "many_files-1.0-py3-none-any.whl"
    metadata = b"Metadata-Version: 2.1\nName: many-files\nVersion: 1.0\nRequires-Dist: six\n"
    with zipfile.ZipFile(dists / name, "w") as zf:
        for i in range(70000):
            zf.writestr(f"many_files/m{i}.py", b"")
        zf.writestr("many_files-1.0.dist-info/METADATA", metadata, compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("many_files-1.0.dist-info/RECORD", b"")
    raw = (dists / name).read_bytes()
    assert raw.rfind(b"PK\x06\x06") > 0 and raw.rfind(b"PK\x06\x07") > 0  # really ZIP64
    with serve(dists, advertise_metadata=False, serve_metadata_files=False) as server:
        file = page_file(http, server, "many-files", name)
        server.reset_log()
        result = MetadataFetcher(http, cache_root).fetch(file)
        assert result.source is MetadataSource.RANGE and result.data == metadata
        assert server.bytes_sent_for("/files/*.whl") < 128 * 1024


def test_full_download_when_range_is_ignored_lands_in_the_artifact_store(
    dists: Path, cache_root: Path, http: HttpClient
) -> None:
    wheel = build_wheel(dists, "norange", "1.0", file_size_padding=MB)
    sha = sha256_file(wheel)
    with serve(dists, advertise_metadata=False, serve_metadata_files=False, honour_range=False) as server:
        file = page_file(http, server, "norange", wheel.name)
        server.reset_log()
        result = MetadataFetcher(http, cache_root).fetch(file)
        assert result.source is MetadataSource.FULL
        assert result.data == wheel_metadata_bytes(wheel)
        stored = cache_dir(CacheKind.ARTIFACTS, cache_root) / sha[:2] / sha
        assert stored == artifact_store_path(sha, cache_root)
        assert stored.read_bytes() == wheel.read_bytes()
        # The 200 answer to the range request *was* the download: one artifact request.
        assert len(artifact_gets(server)) == 1
        assert not [p for p in stored.parent.parent.iterdir() if p.name.startswith(".download-")]

        server.reset_log()
        again = MetadataFetcher(http, cache_root).fetch(file)  # cache hit: nothing at all
        assert again.source is MetadataSource.CACHE and server.requests == []

        for entry in cache_dir(CacheKind.METADATA, cache_root).rglob("*"):
            if entry.is_file():
                entry.unlink()
        from_store = MetadataFetcher(http, cache_root).fetch(file)  # metadata cache gone, store not
        assert from_store.source is MetadataSource.STORE and server.requests == []


def test_full_download_with_a_wrong_hash_keeps_nothing(dists: Path, cache_root: Path, http: HttpClient) -> None:
    wheel = build_wheel(dists, "bad", "1.0")
    with serve(dists, advertise_metadata=False, serve_metadata_files=False, honour_range=False) as server:
        good = page_file(http, server, "bad", wheel.name)
        file = good.with_sha256("0" * 64)
        with pytest.raises(ArtifactHashMismatchError) as info:
            MetadataFetcher(http, cache_root).fetch(file)
        assert server.file_url(wheel.name) in str(info.value) and "0" * 64 in str(info.value)
        store = cache_dir(CacheKind.ARTIFACTS, cache_root)
        assert [p for p in store.rglob("*") if p.is_file() and not p.name.endswith(".lck")] == []


def test_advertised_metadata_with_a_wrong_hash_is_an_error(dists: Path, cache_root: Path, http: HttpClient) -> None:
    wheel = build_wheel(dists, "demo", "1.0")
    faults = (Fault("wrong_metadata", pattern=wheel.name),)
    with serve(dists, advertise_metadata=True, faults=faults) as server:
        file = page_file(http, server, "demo", wheel.name)
        assert isinstance(file.core_metadata, Mapping)
        expected = file.core_metadata["sha256"]
        with pytest.raises(MetadataMismatchError) as info:
            MetadataFetcher(http, cache_root).fetch(file)
        message = str(info.value)
        assert f"{server.file_url(wheel.name)}.metadata" in message
        assert expected in message and info.value.actual in message and info.value.actual != expected
        assert [p for p in cache_dir(CacheKind.METADATA, cache_root).rglob("*") if p.is_file()] == []


def test_hashless_index_is_cached_by_url_and_validators(dists: Path, cache_root: Path, http: HttpClient) -> None:
    wheel = build_wheel(dists, "nohash", "1.0", file_size_padding=MB)
    with serve(dists, advertise_metadata=False, serve_metadata_files=False, include_hashes=False) as server:
        file = page_file(http, server, "nohash", wheel.name)
        assert file.sha256 is None
        server.reset_log()
        first = MetadataFetcher(http, cache_root).fetch(file)
        assert first.source is MetadataSource.RANGE and first.data == wheel_metadata_bytes(wheel)
        server.reset_log()
        second = MetadataFetcher(http, cache_root).fetch(file)
        assert second.source is MetadataSource.CACHE
        # Revalidation is one HEAD (no body); nothing else.
        assert [(r.method, r.bytes_sent) for r in server.requests] == [("HEAD", 0)]

        # A changed artifact (new size -> new validators) is never served stale metadata.
        wheel.unlink()
        build_wheel(dists, "nohash", "1.0", requires_dist=["newdep"], file_size_padding=MB + 1)
        third = MetadataFetcher(http, cache_root).fetch(file)
        assert third.source is MetadataSource.RANGE and b"newdep" in third.data


def test_cache_hit_makes_zero_requests(dists: Path, cache_root: Path, http: HttpClient) -> None:
    wheels = [build_wheel(dists, "demo", v, file_size_padding=100_000) for v in ("1.0", "1.1", "2.0")]
    with serve(dists, advertise_metadata=False, serve_metadata_files=False) as server:
        page = IndexClient(http).project_page(server.simple_url, "demo")
        assert page is not None
        with MetadataFetcher(http, cache_root, workers=4) as fetcher:
            results = [f.result() for f in fetcher.prefetch(page.files)]
        assert sorted(r.data for r in results) == sorted(wheel_metadata_bytes(w) for w in wheels)
        server.reset_log()
        with MetadataFetcher(http, cache_root) as fetcher:
            assert {fetcher.fetch(f).source for f in page.files} == {MetadataSource.CACHE}
        assert server.requests == []


def test_a_cached_entry_that_does_not_match_is_evicted(dists: Path, cache_root: Path, http: HttpClient) -> None:
    wheel = build_wheel(dists, "demo", "1.0")
    with serve(dists, advertise_metadata=False, serve_metadata_files=False) as server:
        file = page_file(http, server, "demo", wheel.name)
        assert file.sha256 is not None
        entry = cache_dir(CacheKind.METADATA, cache_root) / "sha256" / file.sha256[:2] / file.sha256
        entry.parent.mkdir(parents=True)
        entry.write_bytes(b"Metadata-Version: 2.1\nName: other\nVersion: 9\n")
        result = MetadataFetcher(http, cache_root).fetch(file)
        assert result.source is MetadataSource.RANGE
        assert entry.read_bytes() == wheel_metadata_bytes(wheel)


def test_concurrent_requests_for_one_file_share_one_fetch(dists: Path, cache_root: Path, http: HttpClient) -> None:
    wheel = build_wheel(dists, "demo", "1.0")
    with serve(dists, advertise_metadata=False, serve_metadata_files=False) as server:
        file = page_file(http, server, "demo", wheel.name)
        server.reset_log()
        with MetadataFetcher(http, cache_root, workers=8) as fetcher:
            futures = fetcher.prefetch([file] * 8)
            assert {f.result().data for f in futures} == {wheel_metadata_bytes(wheel)}
            assert fetcher.get(file) == wheel_metadata_bytes(wheel)
        assert len(artifact_gets(server)) == 1


def _bomb_wheel(dists: Path) -> Path:
    """A wheel whose METADATA inflates to 20 MiB (from a ~20 KB member)."""
    name = "bomb-1.0-py3-none-any.whl"
    body = b"Metadata-Version: 2.1\nName: bomb\nVersion: 1.0\nDescription: " + b" " * (20 * MB)
    with zipfile.ZipFile(dists / name, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb/__init__.py", b"")
        zf.writestr("bomb-1.0.dist-info/METADATA", body)
        zf.writestr("bomb-1.0.dist-info/RECORD", b"")
    assert (dists / name).stat().st_size < 100 * 1024
    return dists / name


def test_decompression_bomb_is_refused(dists: Path, cache_root: Path, http: HttpClient) -> None:
    wheel = _bomb_wheel(dists)
    with serve(dists, advertise_metadata=False, serve_metadata_files=False) as server:
        file = page_file(http, server, "bomb", wheel.name)
        with pytest.raises(MetadataTooLargeError) as info:
            MetadataFetcher(http, cache_root).fetch(file)
        assert "METADATA" in str(info.value) and server.file_url(wheel.name) in str(info.value)
    # The full-download path applies the same cap.
    with serve(dists, advertise_metadata=False, serve_metadata_files=False, honour_range=False) as server:
        file = page_file(http, server, "bomb", wheel.name)
        with pytest.raises(MetadataTooLargeError):
            MetadataFetcher(http, cache_root / "other").fetch(file)


def test_inflate_caps_output_even_when_the_declared_size_lies() -> None:
    data = b"x" * (2 * MB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    compressed = compressor.compress(data) + compressor.flush()
    liar = ZipEntry("a.dist-info/METADATA", zipfile.ZIP_DEFLATED, 0, zlib.crc32(data), len(compressed), 100, 0)
    with pytest.raises(MetadataTooLargeError):
        inflate_member(liar, compressed, MB, "https://example.invalid/a.whl")
    wrong_crc = ZipEntry("a.dist-info/METADATA", zipfile.ZIP_DEFLATED, 0, 1234, len(compressed), len(data), 0)
    with pytest.raises(ZipFormatError, match="CRC"):
        inflate_member(wrong_crc, compressed, 4 * MB, "https://example.invalid/a.whl")


def _sdist_with_pkg_info(dists: Path, name: str, pkg_info: bytes) -> Path:
    root = f"{name}-1.0"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        info = tarfile.TarInfo(f"{root}/PKG-INFO")
        info.size = len(pkg_info)
        tf.addfile(info, io.BytesIO(pkg_info))
    path = dists / f"{name}-1.0.tar.gz"
    path.write_bytes(gzip.compress(raw.getvalue(), mtime=0))
    return path


def test_sdist_metadata_only_when_pkg_info_is_reliable(dists: Path, cache_root: Path, http: HttpClient) -> None:
    good = _sdist_with_pkg_info(
        dists, "static", b"Metadata-Version: 2.2\nName: static\nVersion: 1.0\nRequires-Dist: six\nDynamic: License\n"
    )
    _sdist_with_pkg_info(
        dists, "dynamic", b"Metadata-Version: 2.2\nName: dynamic\nVersion: 1.0\nDynamic: Requires-Dist\n"
    )
    old = build_sdist(dists, "legacy", "1.0", requires_dist=["six"])  # Metadata-Version 2.1
    with serve(dists, advertise_metadata=False) as server:
        fetcher = MetadataFetcher(http, cache_root)
        result = fetcher.fetch(page_file(http, server, "static", good.name))
        assert result.source is MetadataSource.FULL and b"Requires-Dist: six" in result.data
        with pytest.raises(SdistMetadataError, match="requires-dist.*Building sdists is not supported"):
            fetcher.fetch(page_file(http, server, "dynamic", "dynamic-1.0.tar.gz"))
        with pytest.raises(SdistMetadataError, match=r"Metadata-Version `2.1` \(< 2.2\)"):
            fetcher.fetch(page_file(http, server, "legacy", old.name))
        # Never range-read an sdist.
        assert all(r.range is None for r in server.matching("/files/*.tar.gz"))


def test_metadata_for_another_project_is_an_error(dists: Path, cache_root: Path, http: HttpClient) -> None:
    wheel = build_wheel(dists, "demo", "1.0")
    renamed = dists / "impostor-1.0-py3-none-any.whl"
    os.replace(wheel, renamed)
    with serve(dists, advertise_metadata=False, serve_metadata_files=False, honour_range=False) as server:
        file = page_file(http, server, "impostor", renamed.name)
        with pytest.raises(InvalidDistributionError) as info:
            MetadataFetcher(http, cache_root).fetch(file)
        # The wheel's dist-info dir is `demo-1.0.dist-info`: no METADATA for `impostor`.
        assert renamed.name in str(info.value)


def test_local_find_links_wheel(tmp_path: Path, cache_root: Path, http: HttpClient) -> None:
    wheel = build_wheel(tmp_path / "links", "local", "2.0")
    file = ProjectFile(wheel.name, wheel.as_uri(), {"sha256": sha256_file(wheel)})
    result = MetadataFetcher(http, cache_root).fetch(file)
    assert result.source is MetadataSource.LOCAL and result.data == wheel_metadata_bytes(wheel)


def test_inconsistent_metadata_names_the_url(dists: Path, cache_root: Path, http: HttpClient) -> None:
    wheel = build_wheel(dists, "demo", "1.0")
    bogus = dists / "demo-2.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(bogus, "w") as dst:
        for item in src.infolist():
            dst.writestr(item.filename.replace("demo-1.0.dist-info", "demo-2.0.dist-info"), src.read(item))
    with serve(dists, advertise_metadata=False, serve_metadata_files=False) as server:
        file = page_file(http, server, "demo", bogus.name)
        with pytest.raises(MetadataInconsistentError, match="version `1.0`, not `2.0`"):
            MetadataFetcher(http, cache_root).fetch(file)


NETWORK = os.environ.get("FASTPEX_NETWORK_TESTS") == "1"


@pytest.mark.skipif(not NETWORK, reason="talks to pypi.org; set FASTPEX_NETWORK_TESTS=1 to run")
def test_real_pypi_metadata_without_downloading(tmp_path: Path) -> None:
    with HttpClient() as http:
        client = IndexClient(http)
        six = client.project_page("https://pypi.org/simple/", "six")
        torch = client.project_page("https://pypi.org/simple/", "torch")
        assert six is not None and torch is not None
        wanted = [f for f in six.files if f.filename == "six-1.17.0-py2.py3-none-any.whl"]
        wanted += [
            f
            for f in torch.files
            if f.filename
            in (
                "torch-2.9.1-cp311-cp311-manylinux_2_28_x86_64.whl",  # PyPI serves its .metadata
                "torch-2.9.1-cp311-cp311-manylinux_2_28_aarch64.whl",  # only range reads help
            )
        ]
        assert len(wanted) == 3
        with MetadataFetcher(http, tmp_path) as fetcher:
            results = [f.result() for f in fetcher.prefetch(wanted)]
            assert fetcher.stats.bytes_received < 1 * MB
        assert all(r.source in (MetadataSource.PROBE, MetadataSource.RANGE) for r in results)
        assert b"Name: six" in results[0].data
        assert all(b"Name: torch" in r.data and b"Version: 2.9.1" in r.data for r in results[1:])
        assert hashlib.sha256(results[1].data).hexdigest() == results[1].sha256
