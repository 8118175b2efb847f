from __future__ import annotations

import concurrent.futures
import gzip
import hashlib
import io
import random
import tarfile

import pytest

from fastpex.core.image import tarball
from fastpex.core.image.tarball import DIRECTORY, FILE, SYMLINK, TarEntry, write_layer


def _entries(payload: bytes) -> list:
    long_name = "app/" + "x" * 150 + "/ü.py"
    return [
        TarEntry("app", DIRECTORY, 0o755),
        TarEntry("app/big.bin", FILE, 0o644, len(payload), write_data=lambda sink: sink(payload)),
        TarEntry("app/link", SYMLINK, 0o777, link_target="big.bin"),
        TarEntry("app/long-link", SYMLINK, 0o777, link_target="y" * 120),
        TarEntry(long_name, FILE, 0o755, 3, write_data=lambda sink: sink(b"abc")),
    ]


def test_layer_is_a_standard_tar_gzip_whatever_the_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    # Several pieces, some compressible, some not.
    payload = b"".join(rng.randbytes(1 << 20) if i % 3 == 0 else bytes([i]) * (1 << 20) for i in range(11))
    outputs = []
    for threads in (1, 3):
        monkeypatch.setattr(tarball, "_POOL", concurrent.futures.ThreadPoolExecutor(threads))
        out = io.BytesIO()
        digests = write_layer(_entries(payload), out, 6)
        outputs.append((out.getvalue(), digests))
    (first, d1), (second, d2) = outputs
    assert first == second and d1 == d2
    assert d1.digest == "sha256:" + hashlib.sha256(first).hexdigest() and d1.size == len(first)
    raw = gzip.decompress(first)
    assert d1.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert first[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, mtime 0, OS unknown
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [e.path for e in _entries(payload)]
        assert tar.extractfile("app/big.bin").read() == payload  # type: ignore[union-attr]
        assert members[3].linkname == "y" * 120
        for m in members:
            assert (m.uid, m.gid, m.mtime, m.uname, m.gname) == (0, 0, 0, "", "")
            assert set(m.pax_headers) <= {"path", "linkpath"}


def test_short_writes_are_refused() -> None:
    entry = TarEntry("a", FILE, 0o644, 10, write_data=lambda sink: sink(b"abc"))
    with pytest.raises(ValueError, match="wrote 3 bytes"):
        write_layer([entry], io.BytesIO(), 6)
