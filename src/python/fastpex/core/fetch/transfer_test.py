"""The partial writer: every byte lands, with O_DIRECT and through the page cache. A proxy
refusing connections: one retry per downloader in all, not per artifact."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List

import pytest

from fastpex.core.fetch import transfer as transfer_module
from fastpex.core.fetch.errors import DownloadError
from fastpex.core.fetch.progress import Reporter
from fastpex.core.fetch.transfer import MAX_READ, ArtifactDownloader, Cancelled, PartialWriter
from fastpex.core.model import Artifact
from fastpex.core.net.http import HttpClient, HttpConfig
from fastpex.core.net.proxy import ProxySettings
from fastpex.core.store import ArtifactStore
from fastpex.testing.proxy_fixture import free_port


@pytest.mark.parametrize("direct", [True, False])
def test_partial_writer_keeps_every_byte(direct: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfer_module, "USE_DIRECT_IO", direct)
    data = os.urandom(3 * MAX_READ + 12345)
    part = tmp_path / "x.part"
    block = MAX_READ
    writer = PartialWriter(part, append=False)
    assert writer.direct is (direct and writer.direct)  # O_DIRECT only when enabled (and supported)
    writer.write(memoryview(data)[:block])
    writer.write(memoryview(data)[block : 2 * block])
    writer.write(memoryview(data)[2 * block : 2 * block + 777])  # short: through the page cache
    writer.close()
    # A resume from an unaligned offset appends through the page cache.
    writer = PartialWriter(part, append=True)
    assert not writer.direct
    writer.write(memoryview(data)[2 * block + 777 :])
    writer.close()
    assert part.read_bytes() == data


class _Retries(Reporter):
    def __init__(self) -> None:
        self.retried: List[str] = []

    def artifact_retrying(self, artifact: Artifact, attempt: int, reason: str, delay: float) -> None:
        self.retried.append(artifact.filename)


def test_a_refusing_proxy_gets_one_retry_for_all_artifacts(tmp_path: Path) -> None:
    """The first refusal is retried once; after that any refusal, for any artifact, is final,
    and artifacts not yet started are cancelled rather than each retrying `retries` times."""
    port = free_port()  # nothing listens there
    proxies = ProxySettings.from_environ({"HTTP_PROXY": f"http://bob:secret@127.0.0.1:{port}"})
    reporter = _Retries()
    artifacts = [Artifact(f"http://127.0.0.2:9/{n}-1.0-py3-none-any.whl", f"{n}-1.0-py3-none-any.whl", n * 64, 10) for n in "abc"]  # fmt: skip
    with HttpClient(HttpConfig(max_retries=0, proxies=proxies)) as client:
        downloader = ArtifactDownloader(ArtifactStore(tmp_path), client=client, retries=5, backoff=0.01, reporter=reporter)
        with pytest.raises(DownloadError, match=f"after 2 attempts: could not reach the proxy `http://127.0.0.1:{port}`"):
            downloader.fetch_one(artifacts[0])
        assert reporter.retried == [artifacts[0].filename]
        with pytest.raises(Cancelled):  # queued behind the failure
            downloader.fetch_one(artifacts[1])
        downloader.cancelled.clear()  # as if it had been in flight: its first refusal is final
        with pytest.raises(DownloadError) as raised:
            downloader.fetch_one(artifacts[2])
    assert reporter.retried == [artifacts[0].filename]
    assert raised.value.attempts == 1 and "secret" not in str(raised.value)
    assert f"could not reach the proxy `http://127.0.0.1:{port}` (from `HTTP_PROXY`)" in str(raised.value)
