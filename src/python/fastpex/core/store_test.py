from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
from pathlib import Path
from typing import Iterator, List

import pytest

from fastpex.core.errors import HashMismatchError
from fastpex.core.model import Artifact
from fastpex.core.store import ArtifactStore, PartialInfo, StoreError
from fastpex.core.util.cache import CacheKind, cache_dir

DATA = random.Random(0).randbytes(300_000)  # the same in spawned processes
SHA = hashlib.sha256(DATA).hexdigest()
ARTIFACT = Artifact("https://files.example/x-1.0-py3-none-any.whl", "x-1.0-py3-none-any.whl", SHA, len(DATA))


def leftovers(store: ArtifactStore) -> List[str]:
    """Files in the store that are neither final entries nor lock files (temps, partials)."""
    return sorted(
        str(p.relative_to(store.dir))
        for p in store.dir.rglob("*")
        if p.is_file() and not p.name.endswith(".lck") and len(p.name) != 64
    )


def chunks(data: bytes, size: int = 65536) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_layout_is_content_addressed(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    assert store.path_for(SHA) == cache_dir(CacheKind.ARTIFACTS, tmp_path) / SHA[:2] / SHA
    assert store.path_for(SHA.upper()) == store.path_for(SHA)


def test_add_stream_and_has(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    assert not store.has(ARTIFACT)
    path = store.add_stream(ARTIFACT, chunks(DATA))
    assert path.read_bytes() == DATA
    assert store.has(ARTIFACT)
    assert store.verify(ARTIFACT, full=True)
    assert leftovers(store) == []


def test_add_file(tmp_path: Path) -> None:
    source = tmp_path / "src.whl"
    source.write_bytes(DATA)
    store = ArtifactStore(tmp_path / "cache")
    assert store.add_file(ARTIFACT, source).read_bytes() == DATA


def test_mismatch_stores_nothing(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(HashMismatchError) as info:
        store.add_stream(ARTIFACT, chunks(DATA[:-1] + bytes([DATA[-1] ^ 1])))
    assert info.value.expected == SHA and "regenerate the lock" in str(info.value)
    assert not store.path_for(SHA).exists()
    assert leftovers(store) == []
    # Right bytes, wrong size in the lock: also refused.
    wrong_size = Artifact(ARTIFACT.url, ARTIFACT.filename, SHA, len(DATA) + 1)
    with pytest.raises(HashMismatchError, match="size"):
        store.add_stream(wrong_size, chunks(DATA))
    assert leftovers(store) == []


def test_has_trusts_name_and_size_but_verify_rehashes(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    path = store.add_stream(ARTIFACT, chunks(DATA))
    corrupted = bytearray(DATA)
    corrupted[1000] ^= 0xFF
    os.chmod(path, 0o644)
    path.write_bytes(bytes(corrupted))
    assert store.has(ARTIFACT)  # same size: trusted by name (no rehash on warm fetches)
    assert store.verify(ARTIFACT, full=False)
    assert not store.verify(ARTIFACT, full=True)  # rehash catches it and evicts
    assert not path.exists() and not store.has(ARTIFACT)
    # A truncated entry fails even the cheap check.
    store.add_stream(ARTIFACT, chunks(DATA))
    path.write_bytes(DATA[:10])
    assert not store.has(ARTIFACT)
    assert not store.verify(ARTIFACT, full=False)
    assert not path.exists()


def test_invalid_sha_is_refused(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(StoreError, match="not a sha256"):
        store.path_for("../../etc/passwd")


def test_partial_commit(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    part = store.partial_path(SHA)
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(DATA)
    info = PartialInfo(url=ARTIFACT.url, etag='"abc"', last_modified="yesterday", accept_ranges=True)
    store.write_partial_info(SHA, info)
    assert store.read_partial_info(SHA) == info
    assert info.validator == '"abc"'
    assert PartialInfo(url="u", etag='W/"weak"', last_modified="lm").validator == "lm"
    path = store.commit_partial(ARTIFACT, SHA)
    assert path.read_bytes() == DATA
    assert not part.exists() and store.read_partial_info(SHA) is None
    assert part.parent == store.dir / "partial"


def test_partial_commit_mismatch_deletes_partial(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    part = store.partial_path(SHA)
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(DATA[:-5])
    with pytest.raises(HashMismatchError):
        store.commit_partial(ARTIFACT, hashlib.sha256(DATA[:-5]).hexdigest())
    assert not part.exists() and not store.path_for(SHA).exists()


def _add_in_process(root: str) -> None:
    ArtifactStore(root).add_stream(ARTIFACT, chunks(DATA, 4096))


def test_racing_processes_leave_one_intact_copy(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_add_in_process, args=(str(tmp_path),)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = ArtifactStore(tmp_path)
    assert store.verify(ARTIFACT, full=True)
    assert leftovers(store) == []
    assert [p.name for p in store.path_for(SHA).parent.iterdir() if not p.name.endswith(".lck")] == [SHA]
