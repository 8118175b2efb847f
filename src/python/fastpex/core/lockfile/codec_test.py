"""The lockfile: deterministic bytes, round trip, what pex and Pants 2.17 read, PEP 751 export."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from fastpex.core.lockfile import codec as lockfile_mod
from fastpex.core.lockfile import (
    LockfileError,
    PantsHeader,
    canonical_lock,
    dumps_lock,
    export_pylock_toml,
    load_lock,
    loads_lock,
    pants_requirement,
    pylock_toml,
    strip_header,
    write_lock,
)
from fastpex.core.model import Artifact, Lock, LockedDistribution, ResolvedPackage, TargetResolve
from fastpex.core.platforms import parse_target



def pants_python() -> Path:
    """The Python of the Pants 2.17.1 venv that this repository's `./pants` launcher bootstraps
    (CI runs `./pants` before the tests, so it exists wherever the tests run)."""
    root = Path(os.environ.get("FASTPEX_BOOTSTRAP_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fastpex-bootstrap")
    venvs = sorted(root.glob("*/pants-2.17.1/.fastpex-bootstrap-complete"))
    assert venvs, f"no Pants 2.17.1 venv under {root}: run ./pants once first"
    return venvs[-1].parent / "bin" / "python"
LINUX = parse_target("linux_x86_64-cp311")
MAC = parse_target("macosx_arm64-cp311")
LINUX312 = parse_target("linux_x86_64-cp312")


def _artifact(filename: str, digest: str, **kw: object) -> Artifact:
    return Artifact(
        url=f"https://files.example/packages/{filename}",
        filename=filename,
        sha256=digest * 64,
        size=kw.get("size", 1234),  # type: ignore[arg-type]  # test overrides typed loosely on purpose
        upload_time=kw.get("upload_time", "2024-05-06T07:08:09.123456Z"),  # type: ignore[arg-type]  # test overrides typed loosely on purpose
        requires_python=kw.get("requires_python"),  # type: ignore[arg-type]  # test overrides typed loosely on purpose
    )


def _dist(name, version, artifacts, requires_dist=(), requires_python=None) -> LockedDistribution:
    return LockedDistribution(name, version, requires_python, tuple(requires_dist), tuple(artifacts))


def sample_lock() -> Lock:
    app = _dist("app", "1.0", [_artifact("app-1.0-py3-none-any.whl", "a")], ['dep>=1', 'macdep; sys_platform == "darwin"'])
    dep = _dist(
        "dep",
        "1.0",
        [
            _artifact("dep-1.0.tar.gz", "b"),
            _artifact("dep-1.0-cp311-cp311-macosx_11_0_arm64.whl", "c"),
            _artifact("dep-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "d"),
        ],
        requires_python=">=3.9",
    )
    mac = _dist("macdep", "2.0", [_artifact("macdep-2.0-py3-none-any.whl", "e")])
    pkgs = lambda *extra: (  # noqa: E731
        ResolvedPackage("app", "1.0", (), tuple(sorted(("dep",) + extra))),
        ResolvedPackage("dep", "1.0"),
    ) + tuple(ResolvedPackage(e, "2.0") for e in extra)
    return Lock(
        resolve_name="python-default",
        requirements=("app",),
        requires_python=("CPython>=3.9,<3.14",),
        distributions=(app, dep, mac),
        resolves=(TargetResolve(LINUX, pkgs()), TargetResolve(MAC, pkgs("macdep"))),
        indexes=("https://pypi.org/simple/",),
        upload_cutoff="2025-10-01T00:00:00Z",
    )


def divergent_lock() -> Lock:
    one = _dist("split", "1.0", [_artifact("split-1.0-py3-none-any.whl", "1", requires_python="<3.12")], requires_python="<3.12")
    two = _dist("split", "2.0", [_artifact("split-2.0-py3-none-any.whl", "2", requires_python=">=3.12")], requires_python=">=3.12")
    return Lock(
        resolve_name="r",
        requirements=("split",),
        requires_python=(),
        distributions=(one, two),
        resolves=(
            TargetResolve(LINUX, (ResolvedPackage("split", "1.0"),)),
            TargetResolve(LINUX312, (ResolvedPackage("split", "2.0"),)),
        ),
    )


def test_deterministic_and_round_trips(tmp_path):
    lock = sample_lock()
    text = dumps_lock(lock)
    assert text == dumps_lock(lock) and text.endswith("}\n")
    # order of inputs does not matter
    shuffled = Lock(**{**lock.__dict__, "distributions": tuple(reversed(lock.distributions))})
    assert dumps_lock(shuffled) == text
    path = write_lock(lock, tmp_path / "x.lock")
    assert path.read_text() == text
    loaded = load_lock(path)
    assert loaded == canonical_lock(lock)
    assert loaded.target_resolve(MAC.name).target.supported_tags == MAC.supported_tags
    assert dumps_lock(loaded) == text
    body = json.loads(strip_header(text))
    assert body["style"] == "universal" and body["pex_version"] == "2.100.7"
    (universal,) = body["locked_resolves"]
    assert universal["marker"] is None and universal["platform_tag"] is None
    artifact = universal["locked_requirements"][1]["artifacts"][0]
    assert artifact["url"].endswith("manylinux2014_x86_64.whl") or artifact["url"].endswith(".whl")
    assert set(artifact) >= {"url", "algorithm", "hash", "size", "upload_time"}
    assert body["fastpex"]["format_version"] == lockfile_mod.FORMAT_VERSION
    # tags are stored compactly (one line per interpreter+ABI run)
    assert len(body["fastpex"]["targets"][0]["supported_tags"]) < 40


def test_header_matches_pants_format():
    text = dumps_lock(sample_lock(), PantsHeader())
    lines = text.splitlines()
    assert lines[0] == "// This lockfile was autogenerated by Pants. To regenerate, run:"
    assert lines[2] == "//    pants generate-lockfiles --resolve=python-default"
    assert "// --- BEGIN PANTS LOCKFILE METADATA: DO NOT EDIT OR REMOVE ---" in lines
    end = lines.index("// --- END PANTS LOCKFILE METADATA ---")
    assert lines[end + 1] == "" and lines[end + 2] == "{"
    assert pants_requirement('Foo[b,a] >= 1 , <2 ; python_version>"3"') == 'Foo[a,b]<2,>=1; python_version > "3"'
    assert pants_requirement("Django @ https://x/y.whl ; os_name=='posix'") == 'Django@ https://x/y.whl ; os_name == "posix"'


def test_pants_reads_and_accepts_the_header(tmp_path):
    reqs = ['Foo[b,a]>=1,<2; python_version>"3"', "torch==2.9.1", "Django@ https://x/y.whl", "requests [socks] >= 2"]
    lock = Lock(**{**sample_lock().__dict__, "requirements": tuple(reqs)})
    header = PantsHeader(
        interpreter_constraints=(">=3.9,<3.14",), only_binary=("torch",), manylinux="manylinux2014"
    )
    path = tmp_path / "x.lock"
    write_lock(lock, path, header)
    script = r"""
import json, sys
from pants.backend.python.util_rules.lockfile_metadata import PythonLockfileMetadata
from pants.backend.python.util_rules.interpreter_constraints import InterpreterConstraints
from pants.backend.python.pip_requirement import PipRequirement
path, reqs = sys.argv[1], json.loads(sys.argv[2])
data = open(path, "rb").read()
md = PythonLockfileMetadata.from_lockfile(data, path, "python-default", delimeter="//")
ok = md.is_valid_for(
    expected_invalidation_digest=None,
    user_interpreter_constraints=InterpreterConstraints([">=3.9,<3.14"]),
    interpreter_universe=["3.9", "3.10", "3.11", "3.12", "3.13"],
    user_requirements=[PipRequirement.parse(r) for r in reqs],
    manylinux="manylinux2014", requirement_constraints=[], only_binary=["torch"], no_binary=[],
)
ours = data.split(b"\n{", 1)[0]
theirs = md.add_header_to_lockfile(b"{}", regenerate_command="pants generate-lockfiles --resolve=python-default", delimeter="//")
print(json.dumps({"failures": sorted(r.value for r in ok.failure_reasons), "same": theirs.split(b"\n{", 1)[0] == ours}))
"""
    out = subprocess.run(
        [str(pants_python()), "-c", script, str(path), json.dumps(reqs)],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        env={"PATH": os.environ["PATH"]},
    )
    assert out.returncode == 0, out.stderr
    verdict = json.loads(out.stdout.strip().splitlines()[-1])
    assert verdict == {"failures": [], "same": True}


def test_pex_json_codec_reads_it():
    from pex.resolve.lockfile import json_codec

    for lock in (sample_lock(), divergent_lock()):
        parsed = json_codec.loads(strip_header(dumps_lock(lock)))
        assert str(parsed.resolver_version) == "pip-2020-resolver"
        names = {str(r.pin.project_name) for lr in parsed.locked_resolves for r in lr.locked_requirements}
        assert names == {d.name for d in lock.distributions}
    parsed = json_codec.loads(strip_header(dumps_lock(divergent_lock())))
    markers = sorted(str(lr.marker) for lr in parsed.locked_resolves)
    assert markers == [
        'sys_platform == "linux" and platform_machine == "x86_64" and python_version == "3.11"',
        'sys_platform == "linux" and platform_machine == "x86_64" and python_version == "3.12"',
    ]
    # pex's reader ignores the fastpex section and the extra artifact keys, and loses nothing it knows
    again = json_codec.as_json_data(parsed)
    ours = json.loads(strip_header(dumps_lock(divergent_lock())))
    assert again["locked_resolves"][0]["locked_requirements"][0]["artifacts"][0]["hash"] in {
        a["hash"] for lr in ours["locked_resolves"] for r in lr["locked_requirements"] for a in r["artifacts"]
    }


def test_write_is_atomic_and_keeps_the_old_file_on_error(tmp_path, monkeypatch):
    path = tmp_path / "x.lock"
    path.write_text("old contents\n")
    broken = Lock(**{**divergent_lock().__dict__, "distributions": divergent_lock().distributions[:1]})
    with pytest.raises(LockfileError):
        write_lock(broken, path)
    assert path.read_text() == "old contents\n"

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_lock(sample_lock(), path)
    assert path.read_text() == "old contents\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.lock"]  # no temp file left behind


def test_load_errors_are_clear(tmp_path):
    p = tmp_path / "pants.lock"
    p.write_text('// header\n{"locked_resolves": []}\n')
    with pytest.raises(LockfileError, match="no `fastpex` section"):
        load_lock(p)
    p.write_text("{not json")
    with pytest.raises(LockfileError, match="not valid JSON"):
        load_lock(p)
    body = json.loads(dumps_lock(sample_lock(), None))
    body["fastpex"]["format_version"] = 99
    with pytest.raises(LockfileError, match="format version 99"):
        loads_lock(json.dumps(body))
    with pytest.raises(LockfileError, match="cannot read"):
        load_lock(tmp_path / "missing.lock")


def test_pylock_toml(tmp_path):
    try:
        import tomllib
    except ImportError:  # Python 3.10: the same parser, vendored by pip (in the test resolve)
        from pip._vendor import tomli as tomllib  # type: ignore[no-redef]  # pip vendors tomli for Python 3.10, which has no tomllib

    lock = sample_lock()
    text = pylock_toml(lock)
    assert text == pylock_toml(lock)
    data = tomllib.loads(text)
    assert data["lock-version"] == "1.0" and data["created-by"] == "fastpex"
    assert data["requires-python"] == "<3.14,>=3.9"
    by_name = {p["name"]: p for p in data["packages"]}
    assert "marker" not in by_name["app"]
    assert by_name["macdep"]["marker"] == 'sys_platform == "darwin" and platform_machine == "arm64" and python_version == "3.11"'
    dep = by_name["dep"]
    assert dep["requires-python"] == ">=3.9"
    assert dep["sdist"]["name"] == "dep-1.0.tar.gz" and dep["sdist"]["hashes"] == {"sha256": "b" * 64}
    assert [w["name"] for w in dep["wheels"]][0] == "dep-1.0-cp311-cp311-macosx_11_0_arm64.whl"
    wheel = dep["wheels"][0]
    assert wheel["size"] == 1234 and wheel["upload-time"].year == 2024
    assert by_name["app"]["dependencies"] == [{"name": "dep"}, {"name": "macdep"}]

    # pex 2.100.7's PEP 751 reader accepts it
    from pex.resolve.lockfile.pep_751 import Pylock

    path = export_pylock_toml(lock, tmp_path / "pylock.toml")
    parsed = Pylock.parse(str(path))
    assert not hasattr(parsed, "message") or isinstance(parsed, Pylock), getattr(parsed, "message", parsed)
    assert sorted(str(p.project_name) for p in parsed.packages) == ["app", "dep", "macdep"]

    divergent = tomllib.loads(pylock_toml(divergent_lock()))
    markers = {(p["name"], p["version"]): p.get("marker") for p in divergent["packages"]}
    assert markers[("split", "1.0")].endswith('python_version == "3.11"')
    assert markers[("split", "2.0")].endswith('python_version == "3.12"')


def test_new_lockfile_gets_normal_permissions_and_keeps_existing_ones(tmp_path):
    path = write_lock(sample_lock(), tmp_path / "new.lock")
    assert path.stat().st_mode & 0o777 == 0o666 & ~_current_umask()
    path.chmod(0o640)
    write_lock(sample_lock(), path)
    assert path.stat().st_mode & 0o777 == 0o640


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
