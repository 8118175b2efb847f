from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastpex.core.errors import HashMismatchError, UserError
from fastpex.core.image.oci import (
    MEDIA_TYPE_MANIFEST,
    REF_NAME_ANNOTATION,
    Descriptor,
    OciLayout,
    Platform,
    canonical_json,
    sha256_digest,
)


def test_layout_round_trip(tmp_path: Path) -> None:
    layout = OciLayout(tmp_path / "out")
    digest, size = layout.add_blob_bytes(b"hello")
    assert digest == sha256_digest(b"hello") and size == 5
    assert layout.blob_path(digest).read_bytes() == b"hello"
    source = tmp_path / "big"
    source.write_bytes(b"x" * 3_000_000)
    big_digest, big_size = layout.add_blob_from_file(source)
    assert big_size == 3_000_000 and layout.read_blob(big_digest) == source.read_bytes()
    entry = Descriptor(MEDIA_TYPE_MANIFEST, digest, size, {REF_NAME_ANNOTATION: "v1"}, Platform("linux", "amd64"))
    data = layout.write_index([entry])
    assert data == canonical_json(json.loads(data))
    assert json.loads((layout.path / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert layout.read_index() == [entry]
    assert layout.find("v1") == entry and layout.find() == entry
    with pytest.raises(UserError, match="no image tagged `v2`"):
        layout.find("v2")


def test_blobs_are_verified(tmp_path: Path) -> None:
    layout = OciLayout(tmp_path / "out")
    with pytest.raises(HashMismatchError):
        layout.add_blob_bytes(b"hello", expected_digest=sha256_digest(b"other"))
    source = tmp_path / "f"
    source.write_bytes(b"abc")
    with pytest.raises(HashMismatchError):
        layout.add_blob_from_file(source, expected_digest=sha256_digest(b"abd"))
    assert not any(layout.blobs_dir.iterdir())
    # A blob tampered with after writing is refused when read.
    digest, _ = layout.add_blob_bytes(b"abc")
    layout.blob_path(digest).write_bytes(b"abd")
    with pytest.raises(HashMismatchError):
        layout.read_blob(digest)
    with pytest.raises(UserError, match="malformed digest"):
        layout.blob_path("sha256:../../etc")


def test_canonical_json_is_sorted_and_compact() -> None:
    assert canonical_json({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == b'{"a":[1,{"c":3,"d":2}],"b":1}'
