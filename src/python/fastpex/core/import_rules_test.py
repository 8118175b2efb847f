"""The core's layers import in one direction; the Pants backend never imports the core.

Every import counts: module level, inside functions, `importlib.import_module(...)`, and any
string that names a fastpex module (the CLI imports its subcommands by name). Test modules are
exempt: they may use helpers from anywhere.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, FrozenSet, Iterator, List, Optional, Tuple

import pytest

import fastpex

FASTPEX_ROOT = Path(fastpex.__file__).resolve().parent

# Layer -> the core layers it may import (itself always allowed). A layer is the first name
# under `fastpex.core`: a package (`lock`) or a top-level module (`model`).
_BASE = frozenset({"model", "errors", "util"})
ALLOWED: Dict[str, FrozenSet[str]] = {
    "model": frozenset(),
    "errors": frozenset(),
    "util": frozenset(),
    "platforms": _BASE,
    "store": _BASE,
    "net": _BASE | {"platforms", "store"},
    "lockfile": _BASE | {"platforms"},
    "lock": _BASE | {"platforms", "store", "net", "lockfile"},
    "fetch": _BASE | {"platforms", "store", "net", "lockfile"},
    "pack": _BASE | {"platforms", "store", "lockfile"},
    # Container images: installed-wheel layers, OCI layouts, the registry client; never the resolver.
    "image": _BASE | {"platforms", "store", "net", "lockfile", "pack"},
    "build": _BASE | {"platforms", "store", "net", "lockfile", "fetch", "pack"},
    # lock file -> fetched wheels (build's preparation) -> image: the image stage's orchestration.
    "image_build": _BASE | {"platforms", "store", "net", "lockfile", "fetch", "pack", "image", "build"},
    "cli": _BASE
    | {"platforms", "store", "net", "lockfile", "lock", "fetch", "pack", "image", "build", "image_build"},
}
# Outside the core: what each part of the fastpex package may import of fastpex.
OUTSIDE: Dict[str, Tuple[str, ...]] = {
    "versions": (),  # a leaf both sides share
    "pants": ("fastpex.pants", "fastpex.versions"),
    "testing": ("fastpex.testing", "fastpex.core"),
    "__main__": ("fastpex.core.cli",),
    "__init__": (),
}

# In the core a string naming a core module counts as an import: the CLI imports its
# subcommands by name. (The backend names the core's entry point as a string on purpose: it
# runs the core in a process and never imports it, so only real imports count there.)
_CORE_MODULE_STRING = re.compile(r"^fastpex\.core(\.[A-Za-z_][A-Za-z0-9_]*)+$")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(
    source: str, module: str, is_package: bool = False, strings: bool = True
) -> Iterator[Tuple[int, str]]:
    """(line, absolute module name) for every import, `importlib.import_module`/`__import__` of a
    literal and (with `strings`) every string naming a core module in `source`."""
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            yield node.lineno, base
            for alias in node.names:  # `from fastpex.core import lock` imports a submodule
                yield node.lineno, f"{base}.{alias.name}"
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                yield node.lineno, node.args[0].value
        elif strings and isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _CORE_MODULE_STRING.match(node.value):
                yield node.lineno, node.value


def core_layer(module: str) -> Optional[str]:
    parts = module.split(".")
    if parts[:2] != ["fastpex", "core"] or len(parts) < 3:
        return None
    return parts[2]


def violations(root: Path) -> List[str]:
    """Every import in the non-test modules under `root` (a `fastpex` package) that breaks a rule."""
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.name.endswith("_test.py") or path.name == "conftest.py":
            continue
        module = _module_name(path, root)
        parts = module.split(".")
        try:
            text = path.read_text(encoding="utf-8")
            imports = list(imported_modules(text, module, path.name == "__init__.py", strings=parts[:2] == ["fastpex", "core"]))
        except SyntaxError as e:
            found.append(f"{path}: cannot parse: {e}")
            continue
        where = path.relative_to(root.parent)
        if parts[:2] == ["fastpex", "core"]:
            own = core_layer(module)
            if own is None:  # fastpex/core/__init__.py
                continue
            if own not in ALLOWED:
                found.append(f"{where}: `{own}` is not a known core layer; add it to ALLOWED with its rules")
                continue
            for line, name in imports:
                if not name.startswith("fastpex"):
                    continue
                target = core_layer(name)
                if target is None:
                    if name.startswith(("fastpex.core", "fastpex.versions")) or name == "fastpex":
                        continue
                    found.append(f"{where}:{line}: the core imports `{name}` (only fastpex.versions is allowed)")
                elif target != own and target not in ALLOWED[own]:
                    found.append(f"{where}:{line}: `{own}` must not import `{target}` (`{name}`)")
        else:
            part = parts[1] if len(parts) > 1 else "__init__"
            if path.name == "__main__.py":
                part = "__main__"
            allowed = OUTSIDE.get(part)
            if allowed is None:
                found.append(f"{where}: `fastpex.{part}` has no import rule; add it to OUTSIDE")
                continue
            for line, name in imports:
                if name.startswith("fastpex") and name != "fastpex" and not name.startswith(allowed or ("\0",)):
                    found.append(f"{where}:{line}: `fastpex.{part}` must not import `{name}`")
    return found


def test_the_repository_follows_the_import_rules():
    # Under Pants the sandbox holds the sources through the `all_sources` files target; make
    # sure the scan really sees both sides, so the rule can't pass by reading nothing.
    for must_exist in ("core/cli/main.py", "core/lock", "core/pack", "pants/register.py", "versions.py"):
        assert (FASTPEX_ROOT / must_exist).exists(), must_exist
    assert violations(FASTPEX_ROOT) == []


def _package(tmp_path: Path, files: Dict[str, str]) -> Path:
    root = tmp_path / "fastpex"
    for relpath, text in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize(
    "relpath, text, expected",
    [
        ("core/pack/zip.py", "def f():\n    from fastpex.core.lock import resolve\n", "`pack` must not import `lock`"),
        ("core/pack/zip.py", "from fastpex.core import net\n", "`pack` must not import `net`"),
        ("core/fetch/x.py", "import importlib\nimportlib.import_module('fastpex.core.lock.api')\n", "`fetch` must not import `lock`"),
        ("core/util/x.py", "from ..model import Lock\n", "`util` must not import `model`"),
        ("core/model.py", "import fastpex.core.store\n", "`model` must not import `store`"),
        ("core/image/x.py", "from fastpex.core.lock import api\n", "`image` must not import `lock`"),
        ("core/lock/x.py", "from fastpex.core.cli import lock\n", "`lock` must not import `cli`"),
        ("core/lock/x.py", "from fastpex.pants import tool\n", "the core imports `fastpex.pants"),
        ("pants/goals/x.py", "def f():\n    import fastpex.core.lockfile\n", "`fastpex.pants` must not import `fastpex.core.lockfile`"),
        ("pants/goals/x.py", "__import__('fastpex.core.lock')\n", "`fastpex.pants` must not import `fastpex.core.lock`"),
        ("versions.py", "from fastpex.core import errors\n", "`fastpex.versions` must not import"),
        ("core/newstage/x.py", "X = 1\n", "`newstage` is not a known core layer"),
    ],
)
def test_a_violation_is_reported(tmp_path, relpath, text, expected):
    root = _package(tmp_path, {"__init__.py": "", relpath: text})
    found = violations(root)
    assert any(expected in v for v in found), found


def test_allowed_imports_pass(tmp_path):
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "core/pack/zip.py": "from fastpex.core.util import cache\nfrom fastpex.core.errors import UserError\nfrom . import other\n",
            "core/lock/api.py": "def f():\n    from fastpex.core.net import http\n    from fastpex.core.lockfile import codec\n",
            "core/cli/main.py": "M = {'lock': 'fastpex.core.cli.lock', 'b': 'fastpex.core.build'}\n",
            "core/pack/zip_test.py": "from fastpex.core.lock import resolve\n",  # tests are exempt
            "pants/x.py": "from fastpex.versions import PEX_VERSION\n",
        },
    )
    assert violations(root) == []
