"""The crafted hostile inputs under `fastpex/core/testdata/hostile/`, and the seeds they start from.

The checked-in corpus is what `build_corpus` makes (`fuzz_test.py` checks that on every run);
to regenerate it after changing this file:

    cd src/python && python -m fastpex.testing.hostile_corpus
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Dict, Optional

from fastpex.core.pack import fragment
from fastpex.testing.wheels import record_digest

CORPUS = Path(__file__).resolve().parents[1] / "core" / "testdata" / "hostile"


def _wheel(compression: int = zipfile.ZIP_DEFLATED, zip64: bool = False) -> bytes:
    members = {
        "demo/__init__.py": b"X = 1\n" * 20,
        "demo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nRequires-Dist: dep\n",
        "demo-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{n},{record_digest(d)},{len(d)}\n" for n, d in members.items()) + "demo-1.0.dist-info/RECORD,,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            if zip64:
                with zf.open(_info(name, compression), "w", force_zip64=True) as fp:
                    fp.write(data)
            else:
                zf.writestr(_info(name, compression), data)
        zf.writestr(_info("demo-1.0.dist-info/RECORD", compression), record)
    return buf.getvalue()


def _info(name: str, compression: int = zipfile.ZIP_DEFLATED) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))  # reproducible bytes
    info.compress_type = compression
    info.external_attr = 0o644 << 16
    return info


def _fragment_seed() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "f.frag")
        fragment.write_fragment(
            [fragment.SourceEntry("a/"), fragment.SourceEntry("a/b.py", data=b"x = 1\n" * 30)],
            path,
            6,
        )
        return Path(path).read_bytes()


def _json_page(files: list) -> bytes:
    return json.dumps({"meta": {"api-version": "1.1"}, "name": "demo", "files": files}).encode()


def build_corpus(dest: Path) -> Dict[str, bytes]:
    """The crafted hostile inputs kept in `testdata/hostile/` (deterministic)."""
    wheel = _wheel()
    cd = wheel.find(b"PK\x01\x02")
    eocd = wheel.rfind(b"PK\x05\x06")
    out: Dict[str, bytes] = {}

    def patched(offset: int, fmt: str, value: int, base: Optional[bytes] = None) -> bytes:
        raw = bytearray(base if base is not None else wheel)
        struct.pack_into(fmt, raw, offset, value)
        return bytes(raw)

    out["zip-eocd-only.bin"] = b"PK\x05\x06" + b"\x00" * 18
    out["zip-eocd-cd-offset-past-end.bin"] = patched(eocd + 16, "<I", 0xFFFFFFF0)
    out["zip-eocd-cd-size-huge.bin"] = patched(eocd + 12, "<I", 0xFFFFFFF0)
    out["zip-eocd-entries-lie.bin"] = patched(eocd + 10, "<H", 0xFFFF)
    out["zip-eocd-comment-len-past-end.bin"] = patched(eocd + 20, "<H", 0xFFFF)
    out["zip-cd-name-len-huge.bin"] = patched(cd + 28, "<H", 0xFFFF)
    out["zip-cd-extra-len-huge.bin"] = patched(cd + 30, "<H", 0xFFFF)
    out["zip-cd-local-offset-past-end.bin"] = patched(cd + 42, "<I", 0xFFFFFFF0)
    out["zip-cd-method-unknown.bin"] = patched(cd + 10, "<H", 99)
    out["zip-cd-usize-lies.bin"] = patched(cd + 24, "<I", 1)
    out["zip-cd-csize-lies.bin"] = patched(cd + 20, "<I", 0xFFFFFFF0)
    out["zip-cd-encrypted-flag.bin"] = patched(cd + 8, "<H", 1)
    out["zip-zip64-sentinels-without-extra.bin"] = patched(cd + 20, "<I", 0xFFFFFFFF, patched(cd + 24, "<I", 0xFFFFFFFF))
    zip64 = _wheel(zip64=True)
    loc = zip64.rfind(b"PK\x06\x07")
    out["zip-zip64-locator-points-nowhere.bin"] = patched(loc + 8, "<Q", 2**62, zip64)
    rec = zip64.rfind(b"PK\x06\x06")
    out["zip-zip64-record-cd-offset-huge.bin"] = patched(rec + 48, "<Q", 2**63, zip64)
    out["zip-zip64-truncated-extra.bin"] = zip64[: zip64.find(b"PK\x01\x02") + 60] + zip64[-98:]
    out["zip-many-eocd-signatures.bin"] = b"PK\x05\x06" * 4096
    out["zip-cd-signature-spam.bin"] = b"PK\x01\x02" * 2048 + wheel[eocd:]
    meta = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n\n" + b"x" * (4 << 20)
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr(_info("demo-1.0.dist-info/METADATA"), meta)
    out["zip-metadata-bomb-4mib.bin"] = bomb.getvalue()
    raw = bytearray(bomb.getvalue())
    bcd = raw.find(b"PK\x01\x02")
    struct.pack_into("<I", raw, bcd + 24, 100)
    struct.pack_into("<I", raw, 22, 100)
    out["zip-metadata-bomb-lying-size.bin"] = bytes(raw)
    frag = _fragment_seed()
    out["frag-truncated.bin"] = frag[:-3]
    trailer = fragment._TRAILER  # noqa: SLF001
    magic, data_size, index_size, count, _ = trailer.unpack_from(frag, len(frag) - trailer.size)
    index = bytearray(frag[data_size : data_size + index_size])
    struct.pack_into("<Q", index, 28, 2**40)  # the first entry's local header lies past the fragment
    out["frag-entry-outside-resealed.bin"] = frag[:data_size] + bytes(index) + trailer.pack(magic, data_size, len(index), count, zlib.crc32(bytes(index)))
    out["frag-count-lies-resealed.bin"] = frag[:-trailer.size] + trailer.pack(magic, data_size, index_size, 1000, zlib.crc32(frag[data_size : data_size + index_size]))
    out["page-json-traversal.json"] = _json_page(
        [{"filename": n, "url": "/f/" + n, "hashes": {"sha256": "0" * 64}} for n in ("../../evil-1.0-py3-none-any.whl", "a/b-1.0.tar.gz", "x\\y.whl", "..", "\x00.whl")]
    )
    out["page-json-wrong-types.json"] = json.dumps({"files": [{"filename": 1, "url": ["x"], "hashes": "x", "core-metadata": {"sha256": 5}, "size": -3, "yanked": {}}], "versions": "x", "meta": []}).encode()
    out["page-json-deep-nesting.json"] = b'{"files": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    out["page-html-traversal.html"] = b"".join(
        f'<a href="{h}">x</a>'.encode() for h in ("..%2F..%2Fevil-1.0-py3-none-any.whl", "/x/%2E%2E", "sub%2Fa.whl", "https://u:p@other.example/a-1.0.tar.gz")
    )
    out["page-html-unclosed.html"] = b"<a href='" + b"x" * 10000 + b"<!-- <![CDATA[ <base href=//evil/>"
    out["page-html-invalid-utf8.html"] = b"<a href=\"\xff\xfe/a-1.0.whl\">\xc3\x28</a>"
    out["meta-nul-and-folding.txt"] = b"Name: demo\x00\n Version: 1.0\nVersion:\n\t1.0\n"
    out["meta-huge-header-line.txt"] = b"Name: " + b"d" * 200000 + b"\nVersion: 1.0\n"
    out["meta-bad-utf8.txt"] = b"Name: d\xffmo\nVersion: 1.\xc3\x28\nDynamic: requires-dist\nMetadata-Version: 2.x\n"
    dest.mkdir(parents=True, exist_ok=True)
    for name, data in out.items():
        (dest / name).write_bytes(data)
    return out


def main() -> int:
    written = build_corpus(CORPUS)
    print(f"wrote {len(written)} files to {CORPUS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
