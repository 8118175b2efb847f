"""Property-based fuzzing of every parser that reads bytes a server (or a tampered cache) controls.

Each target must either succeed or raise its module's typed error, within a bounded time per
input. The inputs are random bytes, and (more usefully) valid structures with random bytes
overwritten, truncated or spliced. Every file in `testdata/hostile/` (crafted hostile inputs,
see `build_corpus`) is replayed through the same targets on every run.

CI budget: `FASTPEX_FUZZ_EXAMPLES` examples per target (default 200) with a 2 s deadline each.
For a long run: `FASTPEX_FUZZ_EXAMPLES=20000 pytest fastpex/core/fuzz_test.py`.
Regenerate the corpus: `python -m fastpex.testing.hostile_corpus` (from src/python).
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastpex.core.pack import fragment
from fastpex.core.net.index import IndexPageError, parse_project_page, unsafe_filename_problem
from fastpex.core.util.filenames import dist_name_version
from fastpex.core.pack.errors import FragmentError, LayerError
from fastpex.core.pack.wheel_checks import verify_wheel_zip
from fastpex.core.lock.fetcher import MetadataFetcher
from fastpex.core.lock.metadata import (
    MetadataError,
    SdistMetadataError,
    check_sdist_metadata,
    inflate_member,
    name_version_problem,
    select_metadata_entry,
    wheel_metadata_from_file,
)
from fastpex.core.net.index import ProjectFile
from fastpex.core.util.zipmeta import (
    ZipEntry,
    ZipFormatError,
    local_data_offset,
    locate_central_directory,
    parse_central_directory,
    parse_central_directory_suffix,
)
from fastpex.testing.hostile_corpus import CORPUS, _fragment_seed, _json_page, _wheel, build_corpus

EXAMPLES = int(os.environ.get("FASTPEX_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    derandomize=EXAMPLES <= 200,  # CI: the same examples every run; long runs explore
    database=None,
)
WHEEL_NAME = "demo-1.0-py3-none-any.whl"
URL = "https://evil.example/files/" + WHEEL_NAME


SEEDS = [_wheel(), _wheel(zipfile.ZIP_STORED), _wheel(zip64=True)]


@st.composite
def mutated(draw: st.DrawFn, seeds: List[bytes]) -> bytes:
    """A seed with a few random edits: overwrite, truncate, splice, insert."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["overwrite", "truncate", "insert", "int32", "int16"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[pos : pos + len(chunk)] = chunk
        elif kind == "truncate":
            data = data[:pos] if draw(st.booleans()) else data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:  # a plausible-but-wrong size/offset/count field
            fmt, size = ("<I", 4) if kind == "int32" else ("<H", 2)
            value = draw(st.sampled_from([0, 1, 0xFFFF, 0xFFFFFFFF, len(data), len(data) * 2, 2**31]))
            if pos + size <= len(data):
                struct.pack_into(fmt, data, pos, value & (0xFFFFFFFF if size == 4 else 0xFFFF))
    return bytes(data)


zip_inputs = st.one_of(mutated(SEEDS), st.binary(max_size=512))


# -- targets: each returns normally or raises only its typed errors -------------------------------


class _Stub:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def read(self, start: int, end: int) -> bytes:
        start, end = max(0, start), min(end, self.size)
        return self.data[start:end] if end > start else b""


def range_reader(data: bytes) -> None:
    """What the metadata range reader does with a remote wheel's bytes (no network)."""
    fetcher = MetadataFetcher(http=None, max_metadata_bytes=1 << 20)  # type: ignore[arg-type]  # no HTTP: the fuzzed reader gets an in-memory stand-in
    file = ProjectFile(filename=WHEEL_NAME, url=URL)
    tail_offset = max(0, len(data) - 256)
    try:
        fetcher._metadata_by_ranges(file, _Stub(data), data[tail_offset:], tail_offset)  # type: ignore[arg-type]  # noqa: SLF001 - an in-memory stand-in for the remote zip (same read interface)
    except (ZipFormatError, MetadataError):
        pass
    for tail in (data, data[-22:]):
        try:
            locate_central_directory(tail, len(data) - len(tail), _Stub(data).read)
        except ZipFormatError:
            pass
    try:
        parse_central_directory(data)
    except ZipFormatError:
        pass
    parse_central_directory_suffix(data)  # never raises: it looks for any parseable suffix


def local_wheel(data: bytes) -> None:
    """The full-download fallback and the layer builder's checks on a wheel file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / WHEEL_NAME
        path.write_bytes(data)
        try:
            wheel_metadata_from_file(path, WHEEL_NAME, URL, 1 << 20)
        except MetadataError:
            pass
        try:
            verify_wheel_zip(path, WHEEL_NAME)
        except LayerError:
            pass
        assert sorted(os.listdir(tmp)) == [WHEEL_NAME]  # nothing extracted, ever


def fragment_index(data: bytes) -> None:
    try:
        fragment.read_fragment_index(io.BytesIO(data))
    except FragmentError:
        pass


def project_page(data: bytes) -> None:
    for content_type in ("application/vnd.pypi.simple.v1+json", "text/html", None):
        try:
            page = parse_project_page(data, content_type, "https://u:p@evil.example/simple/demo/", "demo")
        except IndexPageError:
            continue
        for f in page.files:
            assert unsafe_filename_problem(f.filename) is None, f.filename
            assert "u:p@" not in f.url
            dist_name_version(f.filename)


def core_metadata(data: bytes) -> None:
    name_version_problem(data, WHEEL_NAME)
    try:
        check_sdist_metadata(data, URL)
    except SdistMetadataError:
        pass
    select_metadata_entry(data.decode("utf-8", "replace").split("\n"), WHEEL_NAME)


TARGETS: Dict[str, Callable[[bytes], None]] = {
    "range_reader": range_reader,
    "local_wheel": local_wheel,
    "fragment_index": fragment_index,
    "project_page": project_page,
    "core_metadata": core_metadata,
}

# -- hypothesis ----------------------------------------------------------------------------------


@FUZZ
@given(zip_inputs)
def test_fuzz_range_reader(data: bytes) -> None:
    range_reader(data)


@FUZZ
@given(mutated(SEEDS[:1]))
def test_fuzz_local_wheel(data: bytes) -> None:
    local_wheel(data)


@FUZZ
@given(
    st.integers(0, 0xFFFF),
    st.integers(0, 3),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 2**40),
    st.integers(0, 2**40),
    st.binary(max_size=256),
)
def test_fuzz_inflate_member(flags: int, method_pick: int, crc: int, csize: int, usize: int, data: bytes) -> None:
    method = (0, 8, 12, 99)[method_pick]
    entry = ZipEntry("a.dist-info/METADATA", method, flags, crc, csize, usize, 0)
    for payload in (data, zlib.compress(data)[2:-4]):
        try:
            inflate_member(entry, payload, 1 << 16, URL)
        except (ZipFormatError, MetadataError):
            pass
        try:
            local_data_offset(b"PK\x03\x04" + payload, entry)
        except ZipFormatError:
            pass


@st.composite
def fragments(draw: st.DrawFn) -> bytes:
    """Fragments whose index is mutated *and* re-sealed with a valid CRC (a tampered cache)."""
    seed = bytearray(_fragment_seed())
    trailer = fragment._TRAILER  # noqa: SLF001
    magic, data_size, index_size, count, _ = trailer.unpack_from(seed, len(seed) - trailer.size)
    index = bytearray(seed[data_size : data_size + index_size])
    index = bytearray(draw(mutated([bytes(index)]))) if draw(st.booleans()) else index
    count = draw(st.sampled_from([count, 0, count + 1, 0xFFFFFFFF & draw(st.integers(0, 2**32 - 1))]))
    body = bytes(seed[:data_size]) + bytes(index)
    return body + trailer.pack(magic, data_size, len(index), count, zlib.crc32(bytes(index)))


@FUZZ
@given(st.one_of(fragments(), st.binary(max_size=256)))
def test_fuzz_fragment_index(data: bytes) -> None:
    fragment_index(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
file_entries = st.fixed_dictionaries(
    {},
    optional={
        "filename": st.one_of(st.text(max_size=40), st.sampled_from(["../../x-1.0-py3-none-any.whl", "a/b.whl", ".."])),
        "url": st.one_of(st.text(max_size=40), st.just("https://other.example/x.whl#sha256=zz")),
        "hashes": json_values,
        "core-metadata": json_values,
        "yanked": json_values,
        "size": json_values,
        "requires-python": json_values,
    },
)
html_pages = st.lists(
    st.one_of(
        st.text(max_size=30),
        st.builds(lambda href, attr: f'<a href="{href}" {attr}>x</a>', st.text(max_size=30), st.text(max_size=30)),
        st.sampled_from(["<base href='../../'>", "<a href='%2E%2E/%2E%2E/x.whl'>", "<a href=\"#sha256=\">", "<!--", "<![CDATA["]),
    ),
    max_size=10,
).map(lambda parts: "".join(parts).encode("utf-8", "surrogatepass"))


@FUZZ
@given(st.one_of(st.lists(file_entries, max_size=6).map(_json_page), html_pages, st.binary(max_size=256)))
def test_fuzz_project_pages(data: bytes) -> None:
    project_page(data)


metadata_docs = st.lists(
    st.one_of(
        st.sampled_from(["Name: demo", "Version: 1.0", "Version: not a version", "Metadata-Version: 2.2", "Dynamic: requires-dist", "Name:", " continued", "\x00", ""]),
        st.text(max_size=40),
    ),
    max_size=12,
).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))


@FUZZ
@given(st.one_of(metadata_docs, st.binary(max_size=256)))
def test_fuzz_core_metadata(data: bytes) -> None:
    core_metadata(data)


@FUZZ
@given(st.one_of(st.text(max_size=60), st.from_regex(r"[a-z_.]{1,8}-[0-9a-z.!+_-]{1,10}(-[0-9][a-z]*)?-[a-z0-9._]+-[a-z0-9_]+-[a-z0-9_.]+\.whl", fullmatch=True)))
def test_fuzz_distribution_file_names(name: str) -> None:
    dist_name_version(name)
    unsafe_filename_problem(name)


# -- the corpus ----------------------------------------------------------------------------------


def _corpus_files() -> List[Path]:
    return sorted(p for p in CORPUS.iterdir() if p.is_file() and p.name != "README.md")


def _targets_for(path: Path) -> Sequence[Callable[[bytes], None]]:
    kind = path.name.split(".", 1)[0].split("-", 1)[0]
    return {
        "zip": [range_reader, local_wheel],
        "frag": [fragment_index],
        "page": [project_page],
        "meta": [core_metadata],
    }[kind]


def test_corpus_is_present() -> None:
    assert len(_corpus_files()) >= 20, f"the hostile corpus at {CORPUS} is missing"


@pytest.mark.parametrize("path", _corpus_files() if CORPUS.is_dir() else [], ids=lambda p: p.name)
def test_corpus_replays(path: Path) -> None:
    data = path.read_bytes()
    for target in _targets_for(path):
        target(data)


def test_corpus_matches_its_generator(tmp_path: Path) -> None:
    """The checked-in corpus is what `build_corpus` makes (so its provenance is this file)."""
    expected = build_corpus(tmp_path)
    for name, data in expected.items():
        assert (CORPUS / name).read_bytes() == data, name
