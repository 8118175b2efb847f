"""util/hashing.py: a file's sha256, whole or of its first `limit` bytes (a resumed download
goes on hashing where its partial file ends)."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Optional

from hypothesis import given, settings
from hypothesis import strategies as st

from fastpex.core.util import hashing
from fastpex.core.util.hashing import hash_file, sha256_file


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=5000), st.one_of(st.none(), st.integers(min_value=0, max_value=6000)), st.integers(1, 700))
def test_hash_of_a_prefix_equals_hashlib(data: bytes, limit: Optional[int], chunk: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "f"
        path.write_bytes(data)
        saved, hashing._CHUNK = hashing._CHUNK, chunk  # small chunks: the loop's edges, not one read
        try:
            got = hash_file(path, limit=limit)
        finally:
            hashing._CHUNK = saved
        expected = data if limit is None else data[:limit]
        assert got.hexdigest() == hashlib.sha256(expected).hexdigest()
        # The object goes on hashing: what follows the prefix completes the whole file's hash.
        got.update(data[len(expected) :])
        assert got.hexdigest() == sha256_file(path) == hashlib.sha256(data).hexdigest()
