"""PEX-INFO, `__main__.py` and `__pex__/__init__.py`: the small files of a PEX, rendered exactly as
pex 2.x's `PEXBuilder` writes them (a real `pex.pex_info.PexInfo` dump, with `code_hash`,
`pex_hash` and `bootstrap_hash` computed the way `PEXBuilder` computes them; deterministic:
sorted keys, no timestamps).
"""

from __future__ import annotations

import hashlib
import os
from textwrap import dedent
from typing import TYPE_CHECKING, Dict, Optional, Sequence, Tuple

from packaging.specifiers import SpecifierSet

from fastpex.core.pack.errors import PexBuildError, ScriptNotFoundError
from fastpex.core.pack.layers import Layer
from fastpex.core.pack.options import PexOptions
from fastpex.core.pack.sources import SourceFile

if TYPE_CHECKING:
    from pex.pex_info import PexInfo

__all__ = ["admits_python_before_3_13", "render_pex_metadata"]


def _code_hash(sources: Sequence[SourceFile]) -> str:
    """`CacheHelper.pex_code_hash` of the chroot pex would have (no bytecode, no dotfiles)."""
    digest = hashlib.sha1()
    hashed = [(n, d) for n, d, _ in sources if not n.rsplit("/", 1)[-1].startswith(".")]
    digest.update("".join(n for n, _ in hashed).encode("utf-8"))
    for _, data in hashed:
        digest.update(data)
    return digest.hexdigest()


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
    sources: Sequence[SourceFile],
    bootstrap_hash: str,
    options: PexOptions,
) -> Tuple[bytes, bytes, bytes]:
    """`(PEX-INFO, __main__.py, __pex__/__init__.py)` bytes exactly as `PEXBuilder` writes them.

    `sources` are the collected files (`collect_sources`); `options.sources`, `layout`, `part`
    and `compress_level` don't enter the metadata, and `options.shebang` is used as given.
    """
    from pex.inherit_path import InheritPath
    from pex.interpreter_constraints import InterpreterConstraints
    from pex.interpreter_selection_strategy import InterpreterSelectionStrategy
    from pex.pex_info import PexInfo
    from pex.venv.bin_path import BinPath

    entry_point, script = options.entry_point, options.script
    if entry_point and script:
        raise PexBuildError("Specify at most one of an entry point and a script.")
    if script:
        entry_point, script = _resolve_script(script, layers)

    info = PexInfo.default()
    info.inject_python_args = tuple(options.inject_python_args)
    info.bind_resource_paths = {}
    info.inject_env = dict(options.inject_env)
    info.inject_args = tuple(options.inject_args)
    info.venv = bool(options.venv)
    info.venv_bin_path = BinPath.for_value(options.venv_bin_path) if options.venv else BinPath.FALSE
    info.venv_copies = False
    info.venv_site_packages_copies = False
    info.venv_system_site_packages = False
    info.venv_hermetic_scripts = True
    info.includes_tools = options.bootstrap_includes_tools
    info.pex_path = ()
    info.ignore_errors = False
    info.emit_warnings = True
    try:
        info.inherit_path = InheritPath.for_value(options.inherit_path)
    except ValueError:
        raise PexBuildError(f"inherit_path must be one of false, prefer, fallback; got {options.inherit_path!r}")
    info.strip_pex_env = options.strip_pex_env
    try:
        info.interpreter_constraints = InterpreterConstraints.parse(*options.interpreter_constraints)
    except Exception as e:
        raise PexBuildError(f"Invalid interpreter constraint: {e}")
    info.interpreter_selection_strategy = InterpreterSelectionStrategy.OLDEST
    info.deps_are_wheel_files = options.deps_install == "wheels"
    try:
        info.max_install_jobs = options.install_jobs
    except ValueError as e:
        raise PexBuildError(str(e))
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
        if layer.is_wheel_file != info.deps_are_wheel_files:
            raise PexBuildError(
                f"The layer of {layer.wheel_filename} is "
                + ("a whole wheel" if layer.is_wheel_file else "an installed chroot")
                + f", but the PEX stores its dependencies as {options.deps_install!r}; build the "
                f"layers with `pack` (which picks the kind from the options)."
            )
        seen[layer.wheel_filename] = layer
        info.add_distribution(layer.wheel_filename, layer.fingerprint)
    requirements = options.requirements
    for requirement in requirements if requirements is not None else [layer.requirement for layer in layers]:
        info.add_requirement(requirement)

    info.bootstrap_hash = bootstrap_hash
    info.code_hash = _code_hash(sources)
    # PEXBuilder._prepare_code: the hash covers PEX-INFO without pex_hash, then is recorded in it.
    info.pex_hash = hashlib.sha1(info.dump().encode("utf-8")).hexdigest()
    pex_info = info.dump().encode("utf-8")

    boot = _render_boot(info)
    main = (options.shebang + "\n" + "" + "\n" + boot).encode("utf-8")
    return pex_info, main, boot.encode("utf-8")


def _render_boot(info: "PexInfo") -> str:
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
