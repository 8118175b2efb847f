"""Assemble a PEX from cached dependency layers, a cached bootstrap and the application sources.

What goes into the PEX is exactly what pex 2.x's `PEXBuilder` writes (see `pex/pex_builder.py`):

* `.bootstrap/` - the pex runtime (`bootstrap`), raw-copied.
* `.deps/<wheel file name>/` - one installed-wheel chroot per dependency (`layers.Layer`),
  raw-copied; or, with `deps_install="wheels"`, the file `.deps/<wheel file name>`: the wheel
  itself, STORED (`wheel_files`), which pex's runtime installs on first start.
* `PEX-INFO`, `__main__.py` and `__pex__/__init__.py` (`pex_info`), compressed per build.
* the application sources (`sources`), compressed per build.

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
leaves nothing behind; identical inputs give byte-identical files. (Unlike the cache's
`util.cache` helpers, which create an entry once, an output replaces whatever is there, file or
directory, so it has its own rename.)
"""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from fastpex.core.pack.assembler import ZipAssembler, requires_zip64
from fastpex.core.pack.bootstrap import Bootstrap, ensure_bootstrap
from fastpex.core.pack.errors import InvalidSourceError, PexBuildError, Zip64RequiredError
from fastpex.core.pack.fragment import SourceEntry, read_fragment_index, write_fragment
from fastpex.core.pack.layers import Layer, ensure_packed
from fastpex.core.pack.options import (
    BOOTSTRAP_DIR,
    DEPS_DIR,
    DEPS_INSTALLS,
    IMPORT_HOOK,
    LAYOUTS,
    MAIN,
    PARTS,
    PEX_INFO,
    PexOptions,
    normalized_shebang,
)
from fastpex.core.pack.pex_info import admits_python_before_3_13, render_pex_metadata
from fastpex.core.pack.sources import SourceFile, collect_sources

__all__ = ["PexBuildResult", "build_pex"]

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class PexBuildResult:
    """What `build_pex` wrote. `outputs` is `(output,)` or, for split, `(deps_dir, srcs_dir)`."""

    output: str
    layout: str
    outputs: Tuple[str, ...]
    pex_info: Mapping[str, object]
    zip64: bool = False


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
    sources: Sequence[SourceFile],
) -> List[SourceEntry]:
    """The per-build entries, with the parent directory entries pex writes for them."""
    entries = [
        SourceEntry(PEX_INFO, data=pex_info),
        SourceEntry(MAIN, data=main, executable=True),
        SourceEntry(IMPORT_HOOK, data=hook),
    ]
    entries.extend(SourceEntry(n, data=d, executable=x) for n, d, x in sources)
    dirs = {DEPS_DIR + "/"} if has_deps else set()
    for entry in list(entries):
        parts = entry.name.split("/")
        for i in range(1, len(parts)):
            dirs.add("/".join(parts[:i]) + "/")
    return entries + [SourceEntry(d) for d in sorted(dirs)]


def _build_zipapp(
    output: str,
    bootstrap: Bootstrap,
    layers: Sequence[Layer],
    small: List[SourceEntry],
    shebang: str,
    compress_level: int,
    interpreter_constraints: Sequence[str],
) -> bool:
    preamble = (shebang + "\n").encode("utf-8")
    app = io.BytesIO()
    app_index = write_fragment(small, app, compress_level)
    fragments = [(bootstrap.fragment_path, read_fragment_index(bootstrap.fragment_path))]
    fragments.extend(
        (layer.fragment_path, read_fragment_index(layer.fragment_path)) for layer in layers
    )
    indexes = [index for _, index in fragments] + [app_index]
    zip64 = requires_zip64(
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
        assembler = ZipAssembler(tmp, preamble=preamble, compresslevel=compress_level)
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
    sources: Sequence[SourceFile],
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
    sources: Sequence[SourceFile],
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
    options: Optional[PexOptions] = None,
    *,
    cache_root: Optional[PathLike] = None,
) -> PexBuildResult:
    """Build a PEX at `output` from dependency layers and application sources (`options`).

    With `options.part == "deps"` no sources or entry point are needed, and `pex_info` is empty.
    """
    options = options if options is not None else PexOptions()
    layout, part, compress_level = options.layout, options.part, options.compress_level
    if layout not in LAYOUTS:
        raise PexBuildError(f"Unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}.")
    if part not in PARTS:
        raise PexBuildError(f"Unknown part {part!r}; choose one of {', '.join(PARTS)}.")
    if layout == "zipapp" and part != "all":
        raise PexBuildError("A zipapp is one file: only the packed and split layouts build in parts.")
    if not 0 <= compress_level <= 9:
        raise PexBuildError(f"The compression level must be in 0..9, got {compress_level}.")
    if options.deps_install not in DEPS_INSTALLS:
        raise PexBuildError(
            f"Unknown deps_install {options.deps_install!r}; choose one of {', '.join(DEPS_INSTALLS)}."
        )
    shebang = normalized_shebang(options.shebang)
    if "\n" in shebang:
        raise PexBuildError("The shebang must be a single line.")
    options = dataclasses.replace(options, shebang=shebang)
    output = os.path.abspath(os.fspath(output))
    source_items = collect_sources(options.sources)
    if layout != "zipapp" and any(name == "pex" for name, _, _ in source_items):
        raise InvalidSourceError(
            "A top-level source named `pex` collides with the packed layout's `pex` script."
        )
    ordered_layers = sorted(layers, key=lambda layer: layer.wheel_filename)
    unique: Dict[str, Layer] = {}
    for layer in ordered_layers:
        unique.setdefault(layer.wheel_filename, layer)
    bootstrap = ensure_bootstrap(
        includes_tools=options.bootstrap_includes_tools,
        compress_level=compress_level,
        cache_root=cache_root,
    )
    if part == "deps":
        pex_info, main, hook = b"{}", b"", b""
    else:
        pex_info, main, hook = render_pex_metadata(
            layers=ordered_layers,
            sources=source_items,
            bootstrap_hash=bootstrap.bootstrap_hash,
            options=options,
        )
    deps = list(unique.values())
    zip64 = False
    if layout == "zipapp":
        small = _small_entries(bool(deps), pex_info, main, hook, source_items)
        zip64 = _build_zipapp(
            output, bootstrap, deps, small, shebang, compress_level, options.interpreter_constraints
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
