"""fetch(): selection, parallelism, resume (Range, If-Range), faults, credentials, the store as a
cache, file:// and progress, against the loopback index. The CLI is in downloader_cli_test.py,
the worker processes in workers_test.py, the partial writer in transfer_test.py."""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

from fastpex.core.errors import HashMismatchError
from fastpex.core.fetch import transfer as transfer_module
from fastpex.core.fetch.downloader import DEFAULT_JOBS, default_jobs, fetch
from fastpex.core.fetch.errors import DownloadError, OfflineError
from fastpex.core.fetch.progress import QuietReporter, Reporter, TTYReporter, default_reporter
from fastpex.core.model import Artifact
from fastpex.core.fetch.selection import select_artifacts, target_for
from fastpex.core.fetch.selection_test import dist, linux_target, mac_target, make_lock
from fastpex.core.store import ArtifactStore, PartialInfo
from fastpex.testing.index_server import Fault, IndexConfig, IndexServer
from fastpex.testing.wheels import build_wheel, sha256_file

FAST: Dict[str, Any] = dict(backoff=0.01, timeout=5.0)  # keep retries quick in tests


def artifact_for(server: IndexServer, path: Path, *, sha256: Optional[str] = None) -> Artifact:
    return Artifact(
        server.file_url(path.name), path.name, sha256 or sha256_file(path), path.stat().st_size
    )


def wheel(dists: Path, name: str, padding: int = 0, **kwargs: object) -> Path:
    return build_wheel(dists, name, "1.0", file_size_padding=padding, **kwargs)  # type: ignore[arg-type]  # build_wheel's keywords are typed, ours pass through


def assert_store_clean(store: ArtifactStore, *, allow_partials: bool = False) -> None:
    """Every final name holds exactly its content; no temp files; partials only if allowed."""
    for path in store.dir.rglob("*"):
        if not path.is_file() or path.name.endswith(".lck"):
            continue
        if path.parent == store.partial_dir:
            assert allow_partials, f"partial download left behind: {path.name}"
            continue
        assert len(path.name) == 64, f"temp file left in the store: {path}"
        assert path.parent.name == path.name[:2]
        assert sha256_file(path) == path.name, f"corrupt entry under a final name: {path}"


def file_requests(server: IndexServer, artifact: Optional[Artifact] = None) -> List[str]:
    glob = f"/files/{artifact.filename}" if artifact else "/files/*"
    return [r.path for r in server.matching(glob, "GET")]


# -- selection + fetch: only the target's artifacts -------------------------------------------------


def test_linux_fetch_never_requests_mac_artifacts(server: IndexServer, dists: Path, store: ArtifactStore) -> None:
    linux_whl = wheel(dists, "torchish", tag="cp311-cp311-manylinux_2_17_x86_64")
    mac_whl = wheel(dists, "torchish", tag="cp311-cp311-macosx_11_0_arm64")
    pure = wheel(dists, "pure")
    maconly = wheel(dists, "maconly")
    a = {p.name: artifact_for(server, p) for p in (linux_whl, mac_whl, pure, maconly)}
    lock = make_lock(
        ["torchish"],
        [
            dist("torchish", "1.0", [a[linux_whl.name], a[mac_whl.name]], ["pure", 'maconly; sys_platform == "darwin"']),
            dist("pure", "1.0", [a[pure.name]]),
            dist("maconly", "1.0", [a[maconly.name]]),
        ],
        {linux_target(): ["torchish", "pure"], mac_target(): ["torchish", "pure", "maconly"]},
    )
    selection = select_artifacts(lock, [target_for(lock, "linux_x86_64-cp311")])
    fetched = fetch(selection.artifacts, store, **FAST)
    assert sorted(file_requests(server)) == sorted(f"/files/{p.name}" for p in (linux_whl, pure))
    assert [Path(f.path).read_bytes() for f in fetched] == [
        Path(dists / f.artifact.filename).read_bytes() for f in fetched
    ]
    assert all(f.path == str(store.path_for(f.artifact.sha256)) for f in fetched)
    assert_store_clean(store)


# -- parallelism ---------------------------------------------------------------------------------


def test_parallelism_is_bounded_by_jobs(server: IndexServer, dists: Path, store: ArtifactStore) -> None:
    artifacts = [artifact_for(server, wheel(dists, f"pkg{i}")) for i in range(7)]
    server.update(faults=(Fault("slow", delay=0.25),))
    fetched = fetch(artifacts, store, jobs=3, **FAST)
    assert server.max_concurrent_file_requests == 3
    assert [f.artifact for f in fetched] == artifacts
    assert_store_clean(store)


def test_default_jobs_is_two_per_core_within_4_and_16(monkeypatch: pytest.MonkeyPatch) -> None:
    import inspect

    assert inspect.signature(fetch).parameters["jobs"].default == DEFAULT_JOBS
    for cores, jobs in ((None, 4), (1, 4), (2, 4), (3, 6), (8, 16), (64, 16)):
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        assert default_jobs() == jobs


# -- resume --------------------------------------------------------------------------------------

BIG = 1_500_000


@pytest.mark.parametrize("kind", ["truncate_body", "reset_mid_body"])
def test_interrupted_download_resumes_with_range(
    kind: str, server: IndexServer, dists: Path, store: ArtifactStore
) -> None:
    artifact = artifact_for(server, wheel(dists, "big", BIG))
    # A little pacing lets the client drain its socket before the fault: a TCP reset discards
    # whatever the client had not read yet, so an unpaced reset may leave nothing to resume.
    pacing = Fault("slow", count=1, chunk_delay=0.003)
    server.update(faults=(Fault(kind, count=1, fraction=0.5), pacing))
    fetch([artifact], store, **FAST)
    requests = server.matching(f"/files/{artifact.filename}", "GET")
    assert len(requests) == 2
    assert requests[0].range is None
    assert requests[1].range is not None and requests[1].range.startswith("bytes=")
    assert requests[1].status == 206
    size = artifact.size or 0
    resumed_at = int(requests[1].range[len("bytes=") : -1])
    assert 0 < resumed_at <= size * 0.5 + 1
    total = sum(r.bytes_sent for r in requests)
    assert total == size + (requests[0].bytes_sent - resumed_at)  # only the lost tail twice
    assert total < size * 1.6  # resumed, not downloaded twice
    assert store.verify(artifact, full=True)
    assert_store_clean(store)


def test_without_range_support_it_restarts_from_zero(
    dists: Path, store: ArtifactStore
) -> None:
    with IndexServer(dists, IndexConfig(honour_range=False)) as server:
        artifact = artifact_for(server, wheel(dists, "big", BIG))
        server.update(faults=(Fault("truncate_body", count=1),))
        fetch([artifact], store, **FAST)
        requests = server.matching(f"/files/{artifact.filename}", "GET")
        assert [r.range for r in requests] == [None, None]  # never asked for a range
        assert [r.status for r in requests] == [200, 200]
        assert store.verify(artifact, full=True)
        assert_store_clean(store)


def test_a_200_answer_to_range_restarts_from_zero(dists: Path, store: ArtifactStore) -> None:
    with IndexServer(dists, IndexConfig(honour_range=False)) as server:
        path = wheel(dists, "big", BIG)
        artifact = artifact_for(server, path)
        # A partial from an earlier run, from a server that then said it served ranges.
        part = store.partial_path(artifact.sha256)
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_bytes(path.read_bytes()[:1000])
        store.write_partial_info(artifact.sha256, PartialInfo(artifact.url, accept_ranges=True))
        fetch([artifact], store, **FAST)
        (request,) = server.matching(f"/files/{artifact.filename}", "GET")
        assert request.range == "bytes=1000-" and request.status == 200
        assert request.bytes_sent == artifact.size
        assert store.verify(artifact, full=True)
        assert_store_clean(store)


def test_stale_partial_that_fails_verification_restarts_once(
    server: IndexServer, dists: Path, store: ArtifactStore
) -> None:
    path = wheel(dists, "big", BIG)
    artifact = artifact_for(server, path)
    part = store.partial_path(artifact.sha256)
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(b"\0" * 1000)  # garbage prefix: the resumed whole won't verify
    store.write_partial_info(artifact.sha256, PartialInfo(artifact.url, accept_ranges=True))
    fetch([artifact], store, **FAST)
    ranges = [r.range for r in server.matching(f"/files/{artifact.filename}", "GET")]
    assert ranges == ["bytes=1000-", None]
    assert store.verify(artifact, full=True)
    assert_store_clean(store)


# -- faults: survived ----------------------------------------------------------------------------

SURVIVABLE: Dict[str, Tuple[Fault, Dict[str, Any]]] = {
    "http_500 x2": (Fault("http_500", count=2), {}),
    "http_503 x2": (Fault("http_500", count=2, status=503), {}),
    "reset_mid_body": (Fault("reset_mid_body", count=1), {}),
    "truncate_body": (Fault("truncate_body", count=1), {}),
    "content_length too big": (Fault("wrong_content_length", count=1, length_delta=1024), {}),
    "content_length too small": (Fault("wrong_content_length", count=1, length_delta=-1024), {}),
    "slow to answer": (Fault("slow", count=1, delay=1.0), {"timeout": 0.3}),
    "stalls mid-body": (Fault("slow", count=1, chunk_delay=1.0), {"timeout": 0.3}),
}


@pytest.mark.parametrize("name", sorted(SURVIVABLE))
def test_transient_faults_are_survived(name: str, server: IndexServer, dists: Path, store: ArtifactStore) -> None:
    fault, options = SURVIVABLE[name]
    artifact = artifact_for(server, wheel(dists, "big", 300_000))
    other = artifact_for(server, wheel(dists, "small"))
    server.update(faults=(Fault(fault.kind, pattern="big-*", count=fault.count, status=fault.status,
                                delay=fault.delay, chunk_delay=fault.chunk_delay,
                                length_delta=fault.length_delta),))
    fetched = fetch([artifact, other], store, **{**FAST, **options})
    assert server.fired_count() >= 1
    assert [f.artifact for f in fetched] == [artifact, other]
    assert store.verify(artifact, full=True) and store.verify(other, full=True)
    assert_store_clean(store)


# -- faults: reported ----------------------------------------------------------------------------

PERSISTENT: Dict[str, Tuple[Fault, Dict[str, Any]]] = {
    "http_500": (Fault("http_500"), {}),
    "reset_mid_body": (Fault("reset_mid_body"), {}),
    "truncate_body": (Fault("truncate_body"), {}),
    "wrong_content_length": (Fault("wrong_content_length"), {}),
    "slow": (Fault("slow", delay=1.0), {"timeout": 0.2}),
}


@pytest.mark.parametrize("name", sorted(PERSISTENT))
def test_persistent_faults_fail_cleanly(name: str, server: IndexServer, dists: Path, store: ArtifactStore) -> None:
    fault, options = PERSISTENT[name]
    artifact = artifact_for(server, wheel(dists, "big", 300_000))
    server.update(faults=(fault,))
    with pytest.raises(DownloadError) as info:
        fetch([artifact], store, retries=2, **{**FAST, **options})
    assert info.value.attempts == 3
    assert len(file_requests(server, artifact)) == 3
    assert artifact.filename in str(info.value) and artifact.url in str(info.value)
    assert not store.has(artifact)
    assert_store_clean(store, allow_partials=True)  # a resumable partial may stay, apart


def test_hash_mismatch_is_reported_not_retried(server: IndexServer, dists: Path, store: ArtifactStore) -> None:
    path = wheel(dists, "big", 300_000)
    wrong = hashlib.sha256(b"something else").hexdigest()
    artifact = artifact_for(server, path, sha256=wrong)
    with pytest.raises(HashMismatchError) as info:
        fetch([artifact], store, **FAST)
    assert info.value.expected == wrong and info.value.actual == sha256_file(path)
    assert wrong in str(info.value) and sha256_file(path) in str(info.value)
    assert len(file_requests(server, artifact)) == 1
    assert not store.partial_path(wrong).exists()
    assert not store.path_for(wrong).exists()
    assert_store_clean(store)


def test_failure_stops_other_downloads_cleanly(server: IndexServer, dists: Path, store: ArtifactStore) -> None:
    bad = artifact_for(server, wheel(dists, "bad", 10_000), sha256="0" * 64)  # 2nd biggest
    slow = artifact_for(server, wheel(dists, "slow", 1_000_000))
    queued = [artifact_for(server, wheel(dists, f"queued{i}")) for i in range(3)]
    server.update(
        faults=(
            Fault("slow", pattern="slow-*", chunk_delay=0.02),  # ~0.3 s for the whole file
            Fault("slow", pattern="bad-*", delay=0.15),  # fails when `slow` is half done
        )
    )
    with pytest.raises(HashMismatchError):
        fetch([bad, slow, *queued], store, jobs=2, **FAST)
    # The slow one stopped at a chunk boundary: resumable partial, nothing under a final name.
    assert not store.has(slow)
    assert_store_clean(store, allow_partials=True)
    # The queued ones never started.
    assert all(not file_requests(server, q) for q in queued)
    # The next run resumes the slow download.
    server.update(faults=())
    have = store.partial_path(slow.sha256).stat().st_size
    assert 0 < have < slow.size  # type: ignore[operator]  # artifact_for always sets the size
    fetch([slow], store, **FAST)
    assert server.matching(f"/files/{slow.filename}", "GET")[-1].range == f"bytes={have}-"
    assert store.verify(slow, full=True)


def test_http_404_is_permanent(server: IndexServer, store: ArtifactStore) -> None:
    artifact = Artifact(server.file_url("gone-1.0-py3-none-any.whl"), "gone-1.0-py3-none-any.whl", "1" * 64, 10)
    with pytest.raises(DownloadError, match="HTTP 404") as info:
        fetch([artifact], store, **FAST)
    assert info.value.attempts == 1


# -- credentials ---------------------------------------------------------------------------------


def test_credentials_come_from_configured_indexes_and_never_leak(
    server: IndexServer, dists: Path, store: ArtifactStore
) -> None:
    artifact = artifact_for(server, wheel(dists, "private"))
    server.update(require_auth=("alice", "s3cret"))
    with pytest.raises(DownloadError, match="HTTP 401") as info:
        fetch([artifact], store, **FAST)
    assert "credentials" in str(info.value)
    fetch([artifact], store, configured_indexes=[server.auth_url()], **FAST)
    assert store.verify(artifact)
    # A URL that carries credentials itself is redacted in every message.
    leaky = Artifact(
        server.url.replace("http://", "http://alice:wrong@") + "/files/none.whl", "none.whl", "2" * 64, 5
    )
    with pytest.raises(DownloadError) as info:
        fetch([leaky], store, **FAST)
    assert "wrong" not in str(info.value) and "alice:***@" in str(info.value)
    assert_store_clean(store)


# -- concurrency across processes ----------------------------------------------------------------


def _fetch_in_process(root: str, url: str, filename: str, sha: str, size: int) -> None:
    fetch([Artifact(url, filename, sha, size)], ArtifactStore(root), backoff=0.01)


def test_two_processes_fetching_one_artifact_leave_one_copy(
    server: IndexServer, dists: Path, tmp_path: Path
) -> None:
    artifact = artifact_for(server, wheel(dists, "shared", 1_000_000))
    server.update(faults=(Fault("slow", chunk_delay=0.02),))
    root = str(tmp_path / "shared-cache")
    ctx = multiprocessing.get_context("spawn")
    args = (root, artifact.url, artifact.filename, artifact.sha256, artifact.size)
    procs = [ctx.Process(target=_fetch_in_process, args=args) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    store = ArtifactStore(root)
    assert store.verify(artifact, full=True)
    assert len(file_requests(server, artifact)) == 1  # the second waited, then found it
    assert_store_clean(store)


# -- the store as a cache ------------------------------------------------------------------------


def test_warm_store_makes_no_requests_and_no_rehash(
    server: IndexServer, dists: Path, store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    artifacts = [artifact_for(server, wheel(dists, f"pkg{i}")) for i in range(3)]
    first = fetch(artifacts, store, **FAST)
    server.reset_log()

    def no_hashing(*args: object, **kwargs: object) -> None:
        raise AssertionError("a warm fetch must not rehash")

    monkeypatch.setattr(transfer_module, "hash_file", no_hashing)
    monkeypatch.setattr(hashlib, "sha256", no_hashing)
    second = fetch(artifacts, store, **FAST)
    monkeypatch.undo()
    assert server.requests == []
    assert second == first


def test_corrupt_entry_is_detected_and_fetched_again(
    server: IndexServer, dists: Path, store: ArtifactStore
) -> None:
    artifact = artifact_for(server, wheel(dists, "pkg", 100_000))
    (fetched,) = fetch([artifact], store, **FAST)
    data = bytearray(Path(fetched.path).read_bytes())
    data[5000] ^= 0xFF  # same size: only a rehash notices
    os.chmod(fetched.path, 0o644)
    Path(fetched.path).write_bytes(bytes(data))
    assert store.has(artifact)
    assert not store.verify(artifact, full=True)
    server.reset_log()
    fetch([artifact], store, **FAST)
    assert len(file_requests(server, artifact)) == 1
    assert store.verify(artifact, full=True)


def test_offline_works_from_a_warm_store(dists: Path, store: ArtifactStore) -> None:
    with IndexServer(dists) as server:
        artifacts = [artifact_for(server, wheel(dists, f"pkg{i}")) for i in range(2)]
        fetch(artifacts, store, **FAST)
    # The server is gone: any connection attempt would fail.
    fetched = fetch(artifacts, store, offline=True, **FAST)
    assert [f.artifact for f in fetched] == artifacts


def test_offline_fails_clearly_from_a_cold_store(
    server: IndexServer, dists: Path, store: ArtifactStore
) -> None:
    artifacts = [artifact_for(server, wheel(dists, f"pkg{i}")) for i in range(2)]
    fetch(artifacts[:1], store, **FAST)
    server.reset_log()
    with pytest.raises(OfflineError) as info:
        fetch(artifacts, store, offline=True, **FAST)
    assert info.value.missing == (artifacts[1],)
    assert artifacts[1].filename in str(info.value) and artifacts[0].filename not in str(info.value)
    assert "--offline" in str(info.value)
    assert server.requests == []


# -- file:// ---------------------------------------------------------------------------------------


def test_file_urls_are_copied_and_verified(dists: Path, store: ArtifactStore) -> None:
    path = wheel(dists, "local")
    artifact = Artifact(path.as_uri(), path.name, sha256_file(path), path.stat().st_size)
    (fetched,) = fetch([artifact], store, offline=True, **FAST)  # local files need no network
    assert Path(fetched.path).read_bytes() == path.read_bytes()
    bad = Artifact(path.as_uri(), path.name, "3" * 64, path.stat().st_size)
    with pytest.raises(HashMismatchError):
        fetch([bad], store, **FAST)
    missing = Artifact((dists / "nope.whl").as_uri(), "nope.whl", "4" * 64, 1)
    with pytest.raises(DownloadError, match="does not exist"):
        fetch([missing], store, **FAST)
    assert_store_clean(store)


# -- progress ------------------------------------------------------------------------------------


class _FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_reporters(server: IndexServer, dists: Path, tmp_path: Path) -> None:
    artifacts = [artifact_for(server, wheel(dists, f"pkg{i}", 50_000)) for i in range(3)]
    quiet_out = io.StringIO()
    quiet = default_reporter(quiet_out)
    assert isinstance(quiet, QuietReporter)
    fetch(artifacts[:2], ArtifactStore(tmp_path / "a"), progress=quiet, **FAST)
    lines = quiet_out.getvalue().splitlines()
    assert len(lines) == 1 and "2/2 artifacts" in lines[0] and "2 downloaded" in lines[0]

    tty_out = _FakeTTY()
    tty = default_reporter(tty_out)
    assert isinstance(tty, TTYReporter)
    tty.interval = 0.0
    store = ArtifactStore(tmp_path / "b")
    fetch(artifacts[:1], store, **FAST)
    fetch(artifacts, store, progress=tty, **FAST)
    text = tty_out.getvalue()
    assert "\r" in text and "Fetching" in text and "/3 files" in text
    assert text.endswith("\n") and "1 from the store, 2 downloaded" in text
    assert tty.received == artifacts[1].size + artifacts[2].size  # type: ignore[operator]  # sizes are set


def test_reporter_base_is_a_no_op(capsys: pytest.CaptureFixture[str]) -> None:
    reporter = Reporter()
    artifact = Artifact("https://example.org/x-1.0-py3-none-any.whl", "x-1.0-py3-none-any.whl", "a" * 64, 10)
    before = dict(reporter.__dict__)
    reporter.start(total_files=1, total_bytes=10, cached_files=0, cached_bytes=0)
    reporter.artifact_started(artifact)
    reporter.bytes_received(artifact, 10)
    reporter.artifact_retrying(artifact, 2, "HTTP 503", 0.5)
    reporter.artifact_finished(artifact, cached=False)
    reporter.finish(ok=True)
    assert reporter.__dict__ == before  # keeps no state
    assert capsys.readouterr() == ("", "")  # and prints nothing


# -- If-Range with a server that sends validators (IndexServer sends none) ----------------------


class _ETagServer:
    """Serves one file with an ETag; the first GET is cut mid-body. Records request headers."""

    def __init__(self, content: bytes, etag: str) -> None:
        import http.server
        import threading

        self.content, self.etag = content, etag
        self.headers: List[dict] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.headers.append(dict(self.headers))
                data, first = outer.content, len(outer.headers) == 1
                rng, if_range = self.headers.get("Range"), self.headers.get("If-Range")
                start = 0
                if rng and (if_range is None or if_range == outer.etag):
                    start = int(rng[len("bytes="):-1])
                self.send_response(206 if start else 200)
                self.send_header("ETag", outer.etag)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                if first:
                    self.send_header("Connection", "close")
                self.end_headers()
                body = data[start:]
                self.wfile.write(body[: len(body) // 2] if first else body)
                self.wfile.flush()
                if first:
                    self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "_ETagServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/x-1.0-py3-none-any.whl"


def test_resume_sends_if_range_with_the_etag(store: ArtifactStore) -> None:
    content = bytes(range(256)) * 2000
    with _ETagServer(content, '"v1"') as srv:
        artifact = Artifact(srv.url, "x-1.0-py3-none-any.whl", hashlib.sha256(content).hexdigest(), len(content))
        fetch([artifact], store, **FAST)
        assert len(srv.headers) == 2
        assert "Range" not in srv.headers[0]
        assert srv.headers[1]["Range"] == f"bytes={len(content) // 2}-"
        assert srv.headers[1]["If-Range"] == '"v1"'
    assert store.verify(artifact, full=True)
    assert_store_clean(store)


def test_if_range_mismatch_restarts_from_zero(store: ArtifactStore) -> None:
    content = bytes(range(256)) * 2000
    with _ETagServer(content, '"v2"') as srv:
        artifact = Artifact(srv.url, "x-1.0-py3-none-any.whl", hashlib.sha256(content).hexdigest(), len(content))
        part = store.partial_path(artifact.sha256)
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_bytes(b"old" * 100)  # from an earlier version of the file
        store.write_partial_info(artifact.sha256, PartialInfo(srv.url, etag='"v1"', accept_ranges=True))
        srv.headers.append({})  # skip the cut-short first response
        fetch([artifact], store, **FAST)
        assert srv.headers[1]["If-Range"] == '"v1"' and srv.headers[1]["Range"] == "bytes=300-"
        assert len(srv.headers) == 2  # the 200 carried the whole new file: no second request
    assert store.verify(artifact, full=True)
