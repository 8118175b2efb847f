"""Assemble a PEX from cached dependency layers, a cached bootstrap and the application sources.

What goes into the PEX is exactly what pex 2.x's `PEXBuilder` writes (see `pex/pex_builder.py`):

* `.bootstrap/` - the pex runtime. Generated once per (pex version, tools or not) by pex's own
  `PEXBuilder.freeze()` and cached as a zip fragment (+ a standalone zip for `packed`).
* `.deps/<wheel file name>/` - one installed-wheel chroot per dependency (`layers.Layer`).
* `PEX-INFO` - a real `pex.pex_info.PexInfo` dump, with `code_hash`, `pex_hash` and
  `bootstrap_hash` computed the way `PEXBuilder` computes them; deterministic (sorted keys, no
  timestamps).
* `__main__.py` and `__pex__/__init__.py` - pex's `pex_boot.py` + boot call, same template.
* the application sources.

Only the small entries are compressed per build; the bootstrap and every dependency are raw-copied.

Layouts:

* `zipapp`: one executable file: shebang line + zip (absolute offsets, like pex).
  `zipimport` before Python 3.13 cannot read ZIP64, so if the zip needs ZIP64 and the interpreter
  constraints admit any Python < 3.13, `Zip64RequiredError` is raised (use `packed`).
* `packed`: pex's packed directory: `.bootstrap` and `.deps/<whl>` are zip files (hard-linked
  from the cache, copied across devices), `__main__.py`, `__pex__/__init__.py`, `PEX-INFO`, the
  sources as loose files and a `pex` -> `__main__.py` symlink. Run with `python <dir>`.
* `split`: the packed layout cut in two directories, `<output>/deps` (`.bootstrap` and `.deps/`,
  which only change when dependencies or pex change) and `<output>/srcs` (everything else). They
  combine by overlaying both into one directory, e.g. in a Dockerfile::

      COPY out/deps/ /app/
      COPY out/srcs/ /app/
      ENTRYPOINT ["python3", "/app"]

  so the image layer holding dependencies is unchanged by a source-only change.

Outputs are written to a temp sibling of the destination and renamed into place, so a failed build
leaves nothing behind; identical inputs give byte-identical files.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from textwrap import dedent
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from packaging.specifiers import SpecifierSet

from fastpex.core.pack import zipfrag
from fastpex.core.util.cache import CacheKind, cache_dir, file_lock
from fastpex.core.pack.layers import Layer, ensure_packed

__all__ = [
    "Bootstrap",
    "DEFAULT_SHEBANG",
    "InvalidSourceError",
    "LAYOUTS",
    "PexBuildError",
    "PexBuildResult",
    "ScriptNotFoundError",
    "Zip64RequiredError",
    "admits_python_before_3_13",
    "build_pex",
    "collect_sources",
    "ensure_bootstrap",
    "render_pex_metadata",
]

PathLike = Union[str, "os.PathLike[str]"]
Sources = Union[PathLike, Mapping[str, bytes], None]

DEFAULT_SHEBANG = "#!/usr/bin/env python3"
LAYOUTS = ("zipapp", "packed", "split")
# A directory layout can be built in two halves that never share a file: `deps` (bootstrap and
# dependency zips: a function of the lock, the same after a source change) and `app` (PEX-INFO,
# __main__.py and the sources). Two Pants processes then cache them apart, so a source-only
# rebuild neither re-runs nor re-captures gigabytes of unchanged dependencies. Merged, the two
# halves are byte for byte the `all` build.
PARTS = ("all", "deps", "app")
BOOTSTRAP_DIR = ".bootstrap"
DEPS_DIR = ".deps"
PEX_INFO = "PEX-INFO"
MAIN = "__main__.py"
IMPORT_HOOK = "__pex__/__init__.py"
# Bump when the bootstrap fragment's bytes change for the same pex version.
BOOTSTRAP_LAYOUT_VERSION = 1
_RESERVED_TOP_LEVEL = (BOOTSTRAP_DIR, DEPS_DIR, "__pex__", PEX_INFO, MAIN, "PEX-LAYOUT")


class PexBuildError(Exception):
    """A PEX cannot be built from the given inputs (a user error; the message says why)."""


class Zip64RequiredError(PexBuildError):
    """The zipapp needs ZIP64, which `zipimport` only reads from Python 3.13 on."""


class InvalidSourceError(PexBuildError):
    """A source path is unusable (escapes the PEX root or collides with PEX internals)."""


class ScriptNotFoundError(PexBuildError):
    """`script` names no console script / script of any dependency (or is ambiguous)."""


@dataclass(frozen=True)
class Bootstrap:
    """The cached `.bootstrap/` of one pex version (with or without the PEX_TOOLS commands)."""

    directory: str
    bootstrap_hash: str
    includes_tools: bool
    pex_version: str

    @property
    def fragment_path(self) -> str:
        return os.path.join(self.directory, "bootstrap.frag")

    @property
    def packed_path(self) -> str:
        return os.path.join(self.directory, "bootstrap.zip")


@dataclass(frozen=True)
class PexBuildResult:
    """What `build_pex` wrote. `outputs` is `(output,)` or, for split, `(deps_dir, srcs_dir)`."""

    output: str
    layout: str
    outputs: Tuple[str, ...]
    pex_info: Mapping[str, object]
    zip64: bool = False


# --- bootstrap ---------------------------------------------------------------------------------


class _NoInterpreter(object):
    """Stands in for `PythonInterpreter` so `PEXBuilder` does not probe (and cache into PEX_ROOT)
    the current interpreter: bootstrap generation only needs a shebang, which we discard."""

    class identity(object):  # noqa: N801 - mirrors PythonInterpreter.identity
        @staticmethod
        def hashbang() -> str:
            return DEFAULT_SHEBANG


def _pex_version() -> str:
    from pex.version import __version__

    return __version__


def _walk_entries(root: str, prefix: str, include_root_dir: bool) -> List[zipfrag.SourceEntry]:
    """Files under `root` (no bytecode) named `prefix/<rel>`, plus their parent dir entries."""
    from pex.common import is_pyc_file

    files: List[zipfrag.SourceEntry] = []
    dirs = {prefix + "/"} if include_root_dir else set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        rel_root = os.path.relpath(dirpath, root).replace(os.sep, "/")
        for filename in sorted(filenames):
            if is_pyc_file(filename):
                continue
            rel = filename if rel_root == "." else f"{rel_root}/{filename}"
            parts = rel.split("/")
            for i in range(1, len(parts)):
                dirs.add(f"{prefix}/{'/'.join(parts[:i])}/")
            path = os.path.join(dirpath, filename)
            files.append(
                zipfrag.SourceEntry(
                    name=f"{prefix}/{rel}",
                    path=path,
                    executable=bool(os.stat(path).st_mode & stat.S_IXUSR),
                )
            )
    return [zipfrag.SourceEntry(name=d) for d in sorted(dirs)] + files


def ensure_bootstrap(
    *,
    includes_tools: bool = False,
    compress_level: int = 6,
    cache_root: Optional[PathLike] = None,
) -> Bootstrap:
    """The cached bootstrap for the installed pex version, generated with pex's `PEXBuilder`."""
    from pex.pex_builder import PEXBuilder

    pex_version = _pex_version()
    material = json.dumps(
        {
            "compress_level": compress_level,
            "includes_tools": includes_tools,
            "layout_version": BOOTSTRAP_LAYOUT_VERSION,
            "pex_version": pex_version,
        },
        sort_keys=True,
    )
    key = hashlib.sha256(material.encode("utf-8")).hexdigest()
    root = cache_dir(CacheKind.BOOTSTRAP, Path(cache_root) if cache_root is not None else None)
    final = root / key
    manifest = final / "manifest.json"
    if not manifest.exists():
        with file_lock(root / f"{key}.lock"):
            if not manifest.exists():
                work = tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=root)
                try:
                    chroot = os.path.join(work, "chroot")
                    builder = PEXBuilder(path=chroot, interpreter=_NoInterpreter())
                    builder.info.includes_tools = includes_tools
                    builder.freeze(bytecode_compile=False)
                    out = os.path.join(work, "out")
                    os.mkdir(out)
                    entries = _walk_entries(
                        os.path.join(chroot, BOOTSTRAP_DIR), BOOTSTRAP_DIR, include_root_dir=True
                    )
                    frag = os.path.join(out, "bootstrap.frag")
                    zipfrag.write_fragment(entries, frag, compress_level)
                    zipfrag.fragment_to_zip(
                        frag, os.path.join(out, "bootstrap.zip"), strip_prefix=BOOTSTRAP_DIR + "/"
                    )
                    data = {
                        "bootstrap_hash": builder.info.bootstrap_hash,
                        "includes_tools": includes_tools,
                        "pex_version": pex_version,
                    }
                    with open(os.path.join(out, "manifest.json"), "w") as fp:
                        json.dump(data, fp, sort_keys=True)
                    if final.exists():
                        shutil.rmtree(final)
                    os.rename(out, final)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
    with open(manifest) as fp:
        data = json.load(fp)
    return Bootstrap(
        directory=str(final),
        bootstrap_hash=data["bootstrap_hash"],
        includes_tools=data["includes_tools"],
        pex_version=data["pex_version"],
    )


# --- sources -----------------------------------------------------------------------------------


def collect_sources(sources: Sources) -> List[Tuple[str, bytes, bool]]:
    """Normalize sources to sorted `(relpath, bytes, executable)`; validates every path.

    A directory contributes every file under it except bytecode (`__pycache__`, `*.pyc`), like
    `pex -D`. A mapping is `relpath -> bytes` (never executable).
    """
    from pex.common import is_pyc_file

    items: Dict[str, Tuple[bytes, bool]] = {}
    if sources is None:
        return []
    if isinstance(sources, Mapping):
        for name, data in sources.items():
            items[_check_source_name(name)] = (bytes(data), False)
    else:
        root = os.fspath(sources)
        if not os.path.isdir(root):
            raise InvalidSourceError(f"The sources directory {root} does not exist.")
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for filename in filenames:
                if is_pyc_file(filename):
                    continue
                path = os.path.join(dirpath, filename)
                rel = os.path.relpath(path, root).replace(os.sep, "/")
                with open(path, "rb") as fp:
                    data = fp.read()
                items[_check_source_name(rel)] = (data, bool(os.stat(path).st_mode & stat.S_IXUSR))
    return [(name, data, exe) for name, (data, exe) in sorted(items.items())]


def _check_source_name(name: str) -> str:
    normalized = name.replace("\\", "/")
    parts = normalized.split("/")
    if (
        not normalized
        or normalized.startswith("/")
        or normalized.endswith("/")
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise InvalidSourceError(f"Source path {name!r} must be a relative path inside the PEX.")
    if parts[0] in _RESERVED_TOP_LEVEL:
        raise InvalidSourceError(
            f"Source path {name!r} collides with PEX internals ({parts[0]} is reserved)."
        )
    return normalized


def _code_hash(sources: Sequence[Tuple[str, bytes, bool]]) -> str:
    """`CacheHelper.pex_code_hash` of the chroot pex would have (no bytecode, no dotfiles)."""
    digest = hashlib.sha1()
    hashed = [(n, d) for n, d, _ in sources if not n.rsplit("/", 1)[-1].startswith(".")]
    digest.update("".join(n for n, _ in hashed).encode("utf-8"))
    for _, data in hashed:
        digest.update(data)
    return digest.hexdigest()


# --- PEX-INFO and __main__.py ------------------------------------------------------------------


def admits_python_before_3_13(interpreter_constraints: Sequence[str]) -> bool:
    """Whether any CPython/PyPy version < 3.13 satisfies the constraints (none: all do)."""
    if not interpreter_constraints:
        return True
    from pex.interpreter_constraints import InterpreterConstraints

    parsed = InterpreterConstraints.parse(*interpreter_constraints)
    candidates = [f"2.7.{micro}" for micro in range(19)] + [
        f"3.{minor}.{micro}" for minor in range(13) for micro in range(40)
    ]
    for constraint in parsed:
        spec = SpecifierSet(str(constraint.specifier))
        if any(spec.contains(version) for version in candidates):
            return True
    return False


def _resolve_script(script: str, layers: Sequence[Layer]) -> Tuple[Optional[str], Optional[str]]:
    """(entry_point, script) as `PEXBuilder.set_script` would set them."""
    matches = {}
    for layer in layers:
        value = layer.console_scripts.get(script) or layer.gui_scripts.get(script)
        if value:
            matches[layer.project_name] = value
    if len(matches) > 1:
        raise ScriptNotFoundError(
            f"Script {script!r} is ambiguous; it is a console script of "
            + ", ".join(f"{p} ({v})" for p, v in sorted(matches.items()))
            + "."
        )
    if matches:
        return next(iter(matches.values())), None
    if any(script in layer.scripts for layer in layers):
        return None, script
    raise ScriptNotFoundError(
        f"Could not find script {script!r} in any distribution within the PEX: "
        + (", ".join(layer.wheel_filename for layer in layers) or "there are none")
        + "."
    )


def render_pex_metadata(
    *,
    layers: Sequence[Layer],
    sources: Sequence[Tuple[str, bytes, bool]],
    bootstrap_hash: str,
    entry_point: Optional[str] = None,
    script: Optional[str] = None,
    interpreter_constraints: Sequence[str] = (),
    inject_env: Mapping[str, str] = {},
    inject_args: Sequence[str] = (),
    inject_python_args: Sequence[str] = (),
    inherit_path: str = "false",
    venv: bool = False,
    venv_bin_path: str = "false",
    strip_pex_env: bool = True,
    include_tools: bool = False,
    requirements: Optional[Sequence[str]] = None,
    max_install_jobs: int = 1,
    shebang: str = DEFAULT_SHEBANG,
) -> Tuple[bytes, bytes, bytes]:
    """`(PEX-INFO, __main__.py, __pex__/__init__.py)` bytes exactly as `PEXBuilder` writes them."""
    from pex.inherit_path import InheritPath
    from pex.interpreter_constraints import InterpreterConstraints
    from pex.interpreter_selection_strategy import InterpreterSelectionStrategy
    from pex.pex_info import PexInfo
    from pex.venv.bin_path import BinPath

    if entry_point and script:
        raise PexBuildError("Specify at most one of an entry point and a script.")
    if script:
        entry_point, script = _resolve_script(script, layers)

    info = PexInfo.default()
    info.inject_python_args = tuple(inject_python_args)
    info.bind_resource_paths = {}
    info.inject_env = dict(inject_env)
    info.inject_args = tuple(inject_args)
    info.venv = bool(venv)
    info.venv_bin_path = BinPath.for_value(venv_bin_path) if venv else BinPath.FALSE
    info.venv_copies = False
    info.venv_site_packages_copies = False
    info.venv_system_site_packages = False
    info.venv_hermetic_scripts = True
    info.includes_tools = include_tools or venv
    info.pex_path = ()
    info.ignore_errors = False
    info.emit_warnings = True
    try:
        info.inherit_path = InheritPath.for_value(inherit_path)
    except ValueError:
        raise PexBuildError(f"inherit_path must be one of false, prefer, fallback; got {inherit_path!r}")
    info.strip_pex_env = strip_pex_env
    try:
        info.interpreter_constraints = InterpreterConstraints.parse(*interpreter_constraints)
    except Exception as e:
        raise PexBuildError(f"Invalid interpreter constraint: {e}")
    info.interpreter_selection_strategy = InterpreterSelectionStrategy.OLDEST
    info.deps_are_wheel_files = False
    info.max_install_jobs = max_install_jobs
    if entry_point:
        info.entry_point = entry_point
    if script:
        info.script = script

    seen: Dict[str, Layer] = {}
    for layer in sorted(layers, key=lambda layer: layer.wheel_filename):
        previous = seen.get(layer.wheel_filename)
        if previous is not None and previous.fingerprint != layer.fingerprint:
            raise PexBuildError(
                f"Two different wheels are named {layer.wheel_filename} "
                f"(sha256 {previous.wheel_sha256} and {layer.wheel_sha256})."
            )
        seen[layer.wheel_filename] = layer
        info.add_distribution(layer.wheel_filename, layer.fingerprint)
    for requirement in requirements if requirements is not None else [layer.requirement for layer in layers]:
        info.add_requirement(requirement)

    info.bootstrap_hash = bootstrap_hash
    info.code_hash = _code_hash(sources)
    # PEXBuilder._prepare_code: the hash covers PEX-INFO without pex_hash, then is recorded in it.
    info.pex_hash = hashlib.sha1(info.dump().encode("utf-8")).hexdigest()
    pex_info = info.dump().encode("utf-8")

    boot = _render_boot(info)
    main = (shebang + "\n" + "" + "\n" + boot).encode("utf-8")
    return pex_info, main, boot.encode("utf-8")


def _render_boot(info) -> str:  # type: ignore[no-untyped-def]
    """Mirror of the bootstrap script `PEXBuilder._prepare_code` writes (pex 2.100.x)."""
    import pex
    from pex.inherit_path import InheritPath

    with open(os.path.join(os.path.dirname(os.path.abspath(pex.__file__)), "pex_boot.py")) as fp:
        pex_boot = fp.read()
    is_venv = info.venv
    hermetic_boot = (is_venv and info.venv_hermetic_scripts) or (
        not is_venv and info.inherit_path is InheritPath.FALSE
    )
    pex_main = dedent(
        """
        result, should_exit, is_globals = boot(
            bootstrap_dir={bootstrap_dir!r},
            pex_root={pex_root!r},
            pex_hash={pex_hash!r},
            hermetic_boot={hermetic_boot!r},
            has_interpreter_constraints={has_interpreter_constraints!r},
            pex_path={pex_path!r},
            is_venv={is_venv!r},
            inject_python_args={inject_python_args!r},
        )
        if should_exit:
            sys.exit(0 if is_globals else result)
        elif is_globals:
            globals().update(result)
        """
    ).format(
        bootstrap_dir=info.bootstrap,
        pex_root=info.raw_pex_root,
        pex_hash=info.pex_hash,
        hermetic_boot=hermetic_boot,
        has_interpreter_constraints=bool(info.interpreter_constraints),
        pex_path=info.pex_path,
        is_venv=is_venv,
        inject_python_args=info.inject_python_args,
    )
    return pex_boot + "\n" + pex_main


# --- output helpers ----------------------------------------------------------------------------


def _temp_sibling(final: str, directory: bool) -> str:
    parent = os.path.dirname(os.path.abspath(final)) or "."
    os.makedirs(parent, exist_ok=True)
    prefix = f".{os.path.basename(final)}."
    if directory:
        return tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=parent)
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=parent)
    os.close(fd)
    return path


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.unlink(path)


def _install(tmp: str, final: str) -> None:
    """Move `tmp` to `final`, replacing whatever is there (a file or a directory)."""
    if os.path.isdir(final) and not os.path.islink(final):
        old = _temp_sibling(final, directory=True)
        os.rmdir(old)
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    elif os.path.isdir(tmp) and os.path.lexists(final):
        os.unlink(final)  # A directory cannot be renamed over a file.
        os.rename(tmp, final)
    else:
        os.replace(tmp, final)


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link a cached zip into the output; copy when linking is impossible (other device)."""
    try:
        os.link(src, dst)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
            raise
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o644)


def _write_file(path: str, data: bytes, executable: bool) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fp:
        fp.write(data)
    os.chmod(path, 0o755 if executable else 0o644)


# --- assembling --------------------------------------------------------------------------------


def _small_entries(
    has_deps: bool,
    pex_info: bytes,
    main: bytes,
    hook: bytes,
    sources: Sequence[Tuple[str, bytes, bool]],
) -> List[zipfrag.SourceEntry]:
    """The per-build entries, with the parent directory entries pex writes for them."""
    entries = [
        zipfrag.SourceEntry(PEX_INFO, data=pex_info),
        zipfrag.SourceEntry(MAIN, data=main, executable=True),
        zipfrag.SourceEntry(IMPORT_HOOK, data=hook),
    ]
    entries.extend(zipfrag.SourceEntry(n, data=d, executable=x) for n, d, x in sources)
    dirs = {DEPS_DIR + "/"} if has_deps else set()
    for entry in list(entries):
        parts = entry.name.split("/")
        for i in range(1, len(parts)):
            dirs.add("/".join(parts[:i]) + "/")
    return entries + [zipfrag.SourceEntry(d) for d in sorted(dirs)]


def _build_zipapp(
    output: str,
    bootstrap: Bootstrap,
    layers: Sequence[Layer],
    small: List[zipfrag.SourceEntry],
    shebang: str,
    compress_level: int,
    interpreter_constraints: Sequence[str],
) -> bool:
    preamble = (shebang + "\n").encode("utf-8")
    app = io.BytesIO()
    app_index = zipfrag.write_fragment(small, app, compress_level)
    fragments = [(bootstrap.fragment_path, zipfrag.read_fragment_index(bootstrap.fragment_path))]
    fragments.extend(
        (layer.fragment_path, zipfrag.read_fragment_index(layer.fragment_path)) for layer in layers
    )
    indexes = [index for _, index in fragments] + [app_index]
    zip64 = zipfrag.requires_zip64(
        entry_count=sum(len(index.entries) for index in indexes),
        central_directory_offset=len(preamble) + sum(index.data_size for index in indexes),
        max_entry_size=max(index.max_entry_size for index in indexes),
    )
    if zip64 and admits_python_before_3_13(interpreter_constraints):
        constraints = ", ".join(interpreter_constraints) or "none, so any Python"
        raise Zip64RequiredError(
            f"The zipapp PEX {output} needs ZIP64 extensions (more than 65534 entries or more "
            f"than 4 GiB), which Python's zipimport cannot read before Python 3.13, and the "
            f"interpreter constraints ({constraints}) admit older Pythons. Build it with "
            f'layout="packed" (--layout packed) instead, or constrain the interpreter to '
            f">=3.13."
        )
    tmp = _temp_sibling(output, directory=False)
    try:
        assembler = zipfrag.ZipAssembler(tmp, preamble=preamble, compresslevel=compress_level)
        try:
            for path, _ in fragments:
                assembler.add_fragment(path)
            app.seek(0)
            assembler.add_fragment(app, label="the PEX sources and metadata")
            assembler.close()
        except BaseException:
            assembler.abort()
            raise
        os.chmod(tmp, 0o755)
        _install(tmp, output)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return zip64


def _fill_deps_dir(root: str, bootstrap: Bootstrap, layers: Sequence[Layer]) -> None:
    _link_or_copy(bootstrap.packed_path, os.path.join(root, BOOTSTRAP_DIR))
    if layers:
        deps = os.path.join(root, DEPS_DIR)
        os.makedirs(deps, exist_ok=True)
        for layer in layers:
            _link_or_copy(ensure_packed(layer), os.path.join(deps, layer.wheel_filename))


def _fill_srcs_dir(
    root: str,
    pex_info: bytes,
    main: bytes,
    hook: bytes,
    sources: Sequence[Tuple[str, bytes, bool]],
) -> None:
    _write_file(os.path.join(root, PEX_INFO), pex_info, executable=False)
    _write_file(os.path.join(root, MAIN), main, executable=True)
    _write_file(os.path.join(root, *IMPORT_HOOK.split("/")), hook, executable=False)
    for name, data, executable in sources:
        _write_file(os.path.join(root, *name.split("/")), data, executable)
    os.symlink(MAIN, os.path.join(root, "pex"))


def _build_directory(
    output: str,
    layout: str,
    bootstrap: Bootstrap,
    layers: Sequence[Layer],
    pex_info: bytes,
    main: bytes,
    hook: bytes,
    sources: Sequence[Tuple[str, bytes, bool]],
    part: str = "all",
) -> Tuple[str, ...]:
    tmp = _temp_sibling(output, directory=True)
    deps_wanted, app_wanted = part in ("all", "deps"), part in ("all", "app")
    try:
        os.chmod(tmp, 0o755)
        if layout == "packed":
            if deps_wanted:
                _fill_deps_dir(tmp, bootstrap, layers)
            if app_wanted:
                _fill_srcs_dir(tmp, pex_info, main, hook, sources)
            outputs: Tuple[str, ...] = (output,)
        else:
            outputs = ()
            if deps_wanted:
                os.mkdir(os.path.join(tmp, "deps"))
                _fill_deps_dir(os.path.join(tmp, "deps"), bootstrap, layers)
                outputs += (os.path.join(output, "deps"),)
            if app_wanted:
                os.mkdir(os.path.join(tmp, "srcs"))
                _fill_srcs_dir(os.path.join(tmp, "srcs"), pex_info, main, hook, sources)
                outputs += (os.path.join(output, "srcs"),)
        _install(tmp, output)
    finally:
        if os.path.lexists(tmp):
            _remove(tmp)
    return outputs


def build_pex(
    layers: Sequence[Layer],
    output: PathLike,
    *,
    sources: Sources = None,
    layout: str = "zipapp",
    entry_point: Optional[str] = None,
    script: Optional[str] = None,
    interpreter_constraints: Sequence[str] = (),
    inject_env: Mapping[str, str] = {},
    inject_args: Sequence[str] = (),
    inject_python_args: Sequence[str] = (),
    inherit_path: str = "false",
    venv: bool = False,
    venv_bin_path: str = "false",
    strip_pex_env: bool = True,
    include_tools: bool = False,
    requirements: Optional[Sequence[str]] = None,
    shebang: str = DEFAULT_SHEBANG,
    compress_level: int = 6,
    cache_root: Optional[PathLike] = None,
    part: str = "all",
) -> PexBuildResult:
    """Build a PEX at `output` from dependency layers and application sources.

    `part` builds one half of a directory layout (see `PARTS`); `deps` needs no sources or
    entry point, and its `pex_info` is empty.

    `requirements` defaults to `name==version` of every layer (what `PEXBuilder.
    add_dist_location` records); the runtime activates the distributions they resolve to.
    `venv=True` makes the PEX install itself into a venv on first run (pex `--venv`) and, like
    pex, implies `include_tools`.
    """
    if layout not in LAYOUTS:
        raise PexBuildError(f"Unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}.")
    if part not in PARTS:
        raise PexBuildError(f"Unknown part {part!r}; choose one of {', '.join(PARTS)}.")
    if layout == "zipapp" and part != "all":
        raise PexBuildError("A zipapp is one file: only the packed and split layouts build in parts.")
    if not 0 <= compress_level <= 9:
        raise PexBuildError(f"The compression level must be in 0..9, got {compress_level}.")
    if not shebang.startswith("#!"):
        shebang = "#!" + shebang
    if "\n" in shebang:
        raise PexBuildError("The shebang must be a single line.")
    output = os.path.abspath(os.fspath(output))
    source_items = collect_sources(sources)
    if layout != "zipapp" and any(name == "pex" for name, _, _ in source_items):
        raise InvalidSourceError(
            "A top-level source named `pex` collides with the packed layout's `pex` script."
        )
    ordered_layers = sorted(layers, key=lambda layer: layer.wheel_filename)
    unique: Dict[str, Layer] = {}
    for layer in ordered_layers:
        unique.setdefault(layer.wheel_filename, layer)
    bootstrap = ensure_bootstrap(
        includes_tools=include_tools or venv, compress_level=compress_level, cache_root=cache_root
    )
    if part == "deps":
        pex_info, main, hook = b"{}", b"", b""
    else:
        pex_info, main, hook = render_pex_metadata(
            layers=ordered_layers,
            sources=source_items,
            bootstrap_hash=bootstrap.bootstrap_hash,
            entry_point=entry_point,
            script=script,
            interpreter_constraints=interpreter_constraints,
            inject_env=inject_env,
            inject_args=inject_args,
            inject_python_args=inject_python_args,
            inherit_path=inherit_path,
            venv=venv,
            venv_bin_path=venv_bin_path,
            strip_pex_env=strip_pex_env,
            include_tools=include_tools,
            requirements=requirements,
            shebang=shebang,
        )
    deps = list(unique.values())
    zip64 = False
    if layout == "zipapp":
        small = _small_entries(bool(deps), pex_info, main, hook, source_items)
        zip64 = _build_zipapp(
            output, bootstrap, deps, small, shebang, compress_level, interpreter_constraints
        )
        outputs: Tuple[str, ...] = (output,)
    else:
        outputs = _build_directory(output, layout, bootstrap, deps, pex_info, main, hook, source_items, part)
    return PexBuildResult(
        output=output,
        layout=layout,
        outputs=outputs,
        pex_info=json.loads(pex_info),
        zip64=zip64,
    )
