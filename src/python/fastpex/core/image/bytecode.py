"""Byte code for installed wheels: unchecked-hash `.pyc` files (PEP 552) made by the target's
Python, so a first start compiles nothing and the bytes never depend on a file's mtime.

Fresh child processes compile a wheel's modules in sorted order, in fixed shards of 500, with
a fixed hash seed: marshal's output can depend on the process's state (object reference
counts, set order), so the same wheel gives the same bytes only when it is compiled the same
way every time.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from fastpex.core.errors import OperationalError, UserError
from fastpex.core.pack.sdist import Interpreter, SdistBuildError, inspect_interpreter

SHARD = 500  # modules per compiling process

# Reads {"wheel", "out", "items": [[member, dfile], ...]} (`wheel` null: members are file paths);
# writes out/<i>.pyc for each item that compiles (a file that doesn't, e.g. a Python 2 leftover,
# is skipped as pip's compileall does).
_COMPILER = r"""
import importlib._bootstrap_external as be, importlib.util, json, os, sys, warnings, zipfile
warnings.simplefilter("ignore")
request = json.load(sys.stdin)
zf = zipfile.ZipFile(request["wheel"]) if request["wheel"] else None
if True:
    for i, (member, dfile) in enumerate(request["items"]):
        if zf is not None:
            source = zf.read(member)
        else:
            with open(member, "rb") as fp:
                source = fp.read()
        try:
            code = compile(source, dfile, "exec", dont_inherit=True, optimize=0)
        except (SyntaxError, ValueError):
            continue
        data = be._code_to_hash_pyc(code, importlib.util.source_hash(source), False)
        with open(os.path.join(request["out"], "%d.pyc" % i), "wb") as fp:
            fp.write(data)
"""


@dataclass(frozen=True)
class Compiler:
    """The CPython that compiles byte code for one target Python (X.Y)."""

    interpreter: Interpreter

    @property
    def version(self) -> str:
        return self.interpreter.version

    def compile_members(self, wheel: Optional[str], items: Sequence[Tuple[str, str]]) -> Dict[int, bytes]:
        """Compile wheel members (member, dfile: the path tracebacks show), or files when
        `wheel` is None; index -> pyc bytes.

        Items are cut into fixed shards of `SHARD` (by position, so the cut never depends on
        the machine), each compiled by a fresh process; shards run in parallel."""
        if not items:
            return {}
        shards = [(start, list(items[start:start + SHARD])) for start in range(0, len(items), SHARD)]
        results: Dict[int, bytes] = {}
        workers = max(1, min(len(shards), os.cpu_count() or 1, 4))
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            for start, compiled in pool.map(lambda shard: (shard[0], self._compile_shard(wheel, shard[1])), shards):
                results.update({start + i: data for i, data in compiled.items()})
        return results

    def _compile_shard(self, wheel: Optional[str], items: Sequence[Tuple[str, str]]) -> Dict[int, bytes]:
        out = Path(tempfile.mkdtemp(prefix="fastpex-pyc-"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["PYTHONHASHSEED"] = "0"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        try:
            request = json.dumps({"wheel": os.path.abspath(wheel) if wheel else None, "out": str(out), "items": [list(i) for i in items]})
            proc = subprocess.run(
                [self.interpreter.path, "-s", "-S", "-B", "-c", _COMPILER],
                input=request.encode("utf-8"),
                capture_output=True,
                env=env,
                timeout=3600,
            )
            if proc.returncode != 0:
                raise OperationalError(
                    f"Compiling the byte code of `{os.path.basename(wheel) if wheel else 'the sources'}` with `{self.interpreter.path}` failed "
                    f"(exit {proc.returncode}): {proc.stderr.decode('utf-8', 'replace')[-2000:]}"
                )
            results: Dict[int, bytes] = {}
            for path in out.iterdir():
                results[int(path.stem)] = path.read_bytes()
            return results
        finally:
            shutil.rmtree(out, ignore_errors=True)


class NoCompilerError(UserError):
    """No interpreter given can compile byte code for the target's Python."""


def find_compiler(pythons: Sequence[str], python_version: str, *, what: str = "the image's byte code") -> Compiler:
    """The CPython of `python_version` (X.Y) among `pythons`, else `pythonX.Y` on PATH."""
    inspected: List[Interpreter] = []
    for path in pythons:
        resolved = os.path.abspath(path) if os.sep in path else (shutil.which(path) or path)
        try:
            interpreter = inspect_interpreter(resolved)
        except SdistBuildError as e:
            raise UserError(f"Cannot run the interpreter `{path}` given with `--python`: {e}") from None
        inspected.append(interpreter)
        if interpreter.python_version == python_version and interpreter.implementation == "cpython":
            return Compiler(interpreter)
    fallback: Optional[str] = None if pythons else shutil.which(f"python{python_version}")
    if fallback:
        interpreter = inspect_interpreter(fallback)
        if interpreter.python_version == python_version and interpreter.implementation == "cpython":
            return Compiler(interpreter)
    given = ", ".join(f"`{i.path}` (Python {i.version})" for i in inspected) or "none"
    raise NoCompilerError(
        f"Compiling {what} needs a CPython {python_version} interpreter (the target's Python), and there is "
        f"none: the interpreters given are {given}"
        + ("" if pythons else f", and `python{python_version}` is not on PATH")
        + f". Pass one with `--python PATH/TO/python{python_version}`"
    )
