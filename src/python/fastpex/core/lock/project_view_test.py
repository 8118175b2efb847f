"""ProjectView: the once-per-lock index of a page gives what the per-file code gave."""

from __future__ import annotations

from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion

from fastpex.core.lock.project_view import ProjectView
from fastpex.core.lock.proxy_http import PEP691_JSON, page_body, python_admitted, usable_files
from fastpex.core.net.index import ProjectFile
from fastpex.core.util.filenames import wheel_info

H = "a" * 64


def _files() -> list:
    def f(name: str, **kw: object) -> ProjectFile:
        return ProjectFile(filename=name, url=f"https://files.example/p/{name}", **kw)  # type: ignore[arg-type]

    return [
        f("demo-2.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", hashes={"sha256": H}, size=10,
          upload_time="2024-01-01T00:00:00Z", requires_python=">=3.10"),
        f("demo-2.0-cp312-cp312-macosx_11_0_arm64.whl", hashes={"sha256": H}, size=11),
        f("demo-2.0-py3-none-any.whl", hashes={"sha256": H}, size=12, yanked=True, yanked_reason="bad \"quote\""),
        f("demo-2.0.tar.gz", hashes={"sha256": H}, size=13, core_metadata={"sha256": H}),
        f("demo-1.0.tar.gz", size=14, core_metadata=True),
        f("demo-1.0-1build-py2.py3-none-any.whl", hashes={"sha256": H}, size=15, requires_python="<3"),
        f("demo-bad-wheel.whl", size=16),
        f("démo-3.0-py3-none-any.whl", size=17),
    ]


def test_json_page_is_byte_for_byte_page_body() -> None:
    files = _files()
    view = ProjectView("demo", files)
    base = "http://127.0.0.1:1/linux+x/files"
    tags = frozenset({"cp311-cp311-manylinux_2_17_x86_64", "py3-none-any", "py2-none-any"})
    for wheels_only in (True, False):
        for tag_set in (tags, None):
            usable = view.usable(tag_set, "3.11.4", wheels_only, python_admitted)
            expected_files = usable_files(files, tag_set, "3.11.4", wheels_only)
            assert [view.files[i] for i in usable] == expected_files
            body = page_body("demo", files, expected_files, view.token_by_url, base, PEP691_JSON)
            assert view.json_page(usable, base) == body


def test_versions_tokens_and_best_wheels() -> None:
    files = _files()
    view = ProjectView("demo", files)
    assert [len(view.tokens_of_version(v)) for v in ("2.0", "1.0", "3.0")] == [4, 2, 1]
    assert view.tokens_of_version("9.9") == ()
    priority = {"cp312-cp312-macosx_11_0_arm64": 0, "py3-none-any": 1}
    # 3.0 first (newest), then 2.0's mac wheel (its py3 wheel is yanked)
    assert [f.filename for f in view.best_wheels(priority, 2)] == [
        "démo-3.0-py3-none-any.whl",
        "demo-2.0-cp312-cp312-macosx_11_0_arm64.whl",
    ]


def test_wheel_info_decides_as_packaging() -> None:
    names = [f.filename for f in _files()] + [
        "a-1-py3-none-any.whl", "a__b-1-py3-none-any.whl", "a-1-x-py3-none-any.whl", "a-1.0.dev0+local-py3-none-any.whl",
        "a-not.a.version-py3-none-any.whl", "a-1-py3-none.whl", "a-1-py3.-none-any.whl", "A_B-1-CP311-NONE-ANY.whl",
        "a-1-3py-none-any.whl", "a-1-py3-none-any.zip",
    ]
    for name in names:
        try:
            parsed = parse_wheel_filename(name)
            expected = (parsed[0], parsed[1], frozenset(str(t) for t in parsed[3]))
        except (InvalidWheelFilename, InvalidVersion):
            expected = None
        assert wheel_info(name) == expected, name


def test_equal_versions_keep_their_own_text() -> None:
    """3.2 == 3.2.0 as versions, but the lock groups files by the text pip reports."""
    first = ProjectView("a", [ProjectFile("a-3.20.0-py3-none-any.whl", "https://x/a-3.20.0-py3-none-any.whl")])
    second = ProjectView("b", [ProjectFile("b-3.20-py3-none-any.whl", "https://x/b-3.20-py3-none-any.whl")])
    assert len(first.tokens_of_version("3.20.0")) == 1 and len(second.tokens_of_version("3.20")) == 1


def test_files_of_one_version_are_those_of_the_whole_index() -> None:
    # `indexes_of_version` makes one version's entry alone; it must be `_versions_index`'s:
    # unique by URL (a later file with the same URL wins, even of another version), URL order.
    def f(name: str, url: str) -> ProjectFile:
        return ProjectFile(filename=name, url=f"https://files.example/{url}", hashes={"sha256": H})

    files = [
        f("demo-2.0-py3-none-any.whl", "z/demo-2.0-py3-none-any.whl"),
        f("demo-2.0.tar.gz", "a/demo-2.0.tar.gz"),
        f("demo-1.0.tar.gz", "m/shared"),
        f("demo-2.0-cp311-cp311-win_amd64.whl", "m/shared"),  # the same URL: this one wins
        f("demo-1.0-py3-none-any.whl", "b/demo-1.0-py3-none-any.whl"),
        f("demo-2.0-py3-none-any.whl", "z/demo-2.0-py3-none-any.whl"),  # a duplicate: the later index
        f("demo-bad-wheel.whl", "c/bad"),
    ]
    whole = ProjectView("demo", files)._versions_index()
    assert whole["2.0"] == [1, 3, 5] and whole["1.0"] == [4]
    for version in ("2.0", "1.0", None, "9.9"):
        view = ProjectView("demo", files)
        assert list(view.indexes_of_version(version)) == whole.get(version, []), version
        assert list(view.indexes_of_version(version)) == whole.get(version, [])  # memoized alike
