"""Lazy JSON pages: a file becomes a `ProjectFile` only when asked for, and then exactly the one
an eager parse made; a lock's proxy makes only the files (and tokens) some target is served."""

from __future__ import annotations

import json
from pathlib import Path

from fastpex.core.lock.project_view import file_token
from fastpex.core.lock.proxy import IndexSpec, MetadataProxy, ProxyConfig
from fastpex.core.net.http import HttpClient, HttpConfig
from fastpex.core.net.index import ProjectFile
from fastpex.core.net.json_page import PageFiles, parse_json_page
from fastpex.testing.index_server import IndexServer
from fastpex.testing.wheels import build_wheel

H = "A" * 64
FAST = HttpConfig(max_retries=1, backoff_initial=0.01, connect_timeout=1)
TARGET = "linux_x86_64-cp311"
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


def _doc() -> dict:
    return {
        "meta": {"api-version": "1.1"},
        "name": "Demo",
        "files": [
            {"filename": "demo-1.0-py3-none-any.whl", "url": "https://f.example/demo-1.0-py3-none-any.whl",
             "hashes": {"sha256": H}, "requires-python": ">=3.8", "yanked": "broken", "size": 3,
             "core-metadata": {"sha256": H}, "upload-time": "2024-01-01T00:00:00Z"},
            {"filename": "demo-1.0.tar.gz", "url": "../../files/demo-1.0.tar.gz#sha256=" + "b" * 64,
             "size": -1, "dist-info-metadata": True, "yanked": True},
            {"filename": "../../evil.whl", "url": "https://f.example/evil.whl"},
            {"filename": "demo-2.0-py3-none-any.whl", "url": "https://u:secret@f.example/d.whl", "hashes": {"md5": "c" * 32}},
            "not an entry",
            {"filename": "", "url": "https://f.example/x.whl"},
        ],
        "versions": ["1.0", "2.0"],
    }


def test_files_are_made_on_first_access_and_as_an_eager_parse_made_them() -> None:
    page = parse_json_page(json.dumps(_doc()).encode(), "https://idx.example/simple/demo/", "demo")
    files = page.files
    assert isinstance(files, PageFiles) and files.materialized() == 0
    assert files.filenames == ["demo-1.0-py3-none-any.whl", "demo-1.0.tar.gz", "demo-2.0-py3-none-any.whl"]
    assert files.requires_python(0) == ">=3.8" and files.yanked(1) and not files.yanked(2)
    assert files.sha256(0) == "a" * 64 and not files.all_sized() and files.materialized() == 0
    first = files[0]
    assert files.materialized() == 1 and files[0] is first and files[-1] is files[2]
    assert list(files) == [
        ProjectFile("demo-1.0-py3-none-any.whl", "https://f.example/demo-1.0-py3-none-any.whl", {"sha256": "a" * 64},
                    ">=3.8", True, "broken", {"sha256": "a" * 64}, 3, "2024-01-01T00:00:00Z"),
        ProjectFile("demo-1.0.tar.gz", "https://idx.example/files/demo-1.0.tar.gz", {"sha256": "b" * 64},
                    None, True, "", True, None, None),
        ProjectFile("demo-2.0-py3-none-any.whl", "https://f.example/d.whl", {"md5": "c" * 32}),
    ]
    assert files == tuple(files) and PageFiles.of(tuple(files)) == files
    assert page.project == "demo" and page.versions == ("1.0", "2.0") and page.api_version == "1.1"


def test_a_proxy_makes_only_the_files_a_target_is_served(tmp_path: Path) -> None:
    dists = tmp_path / "dists"
    dists.mkdir()
    for version in ("1.0", "1.1", "1.2"):
        for tag in ("cp311-cp311-manylinux_2_17_x86_64", "cp311-cp311-macosx_11_0_arm64", "cp312-cp312-win_amd64"):
            build_wheel(dists, "demo", version, tag=tag)
    served_tags = ("cp311-cp311-manylinux_2_17_x86_64", "py3-none-any")
    with IndexServer(dists) as server:
        config = ProxyConfig(
            indexes=(IndexSpec("main", server.simple_url),), cache_root=tmp_path / "cache",
            target_tags={TARGET: served_tags}, speculate=False, prefetch_versions=0,
        )
        with MetadataProxy(config) as proxy, HttpClient(FAST) as http:
            body = http.get(f"{proxy.index_url(TARGET)}demo/", headers=JSON).read()
            listed = json.loads(body)["files"]
            view = proxy.view(TARGET, "demo")
            assert view is not None and len(view.files) == 9
            assert [f["filename"].split("-")[1] for f in listed] == ["1.0", "1.1", "1.2"]
            assert view.files.materialized() == 3  # the three served, not the nine listed
            # pip's metadata request names a served token; nothing else is made for it
            url = listed[0]["url"]
            assert proxy.upstream_file(url).filename == listed[0]["filename"]
            assert view.files.materialized() == 3 and view.tokens_made() == 3
            # a replayed pip report names files this run never served: found by their filename
            upstream = parse_json_page(http.get(f"{server.simple_url}demo/", headers=JSON).read(), server.simple_url, "demo")
            unserved = next(f for f in upstream.files if f.filename.endswith("win_amd64.whl"))
            assert proxy.upstream_file(f"{proxy.url}/{TARGET}/files/{file_token(unserved)}/{unserved.filename}") == unserved
            assert view.files.materialized() == 4 and view.tokens_made() == 4
            assert proxy.page_files(TARGET, "demo") is not None and view.files.materialized() == 9
