"""A wheel -> the files a venv install lays down for it, as layer entries (nothing on disk).

The scheme is pip's and `pex venv`'s for a venv at `<prefix>/venv` (facts from pip's
`operations/install/wheel.py`, pex's `pep_427.py` and `entry_points_txt.py`; the code is ours):
- the wheel's root and `.data/purelib`, `.data/platlib` -> `lib/pythonX.Y/site-packages`;
- `.data/scripts` -> `bin` (a `#!python` shebang rewritten to the venv's interpreter, as pex
  does: `#!<venv>/bin/pythonX.Y -I`), executable;
- `.data/headers` -> `include/site/pythonX.Y/<project name>`; `.data/data` -> the venv root;
- `console_scripts` / `gui_scripts` -> `bin` scripts; `.pth` files stay in site-packages;
- `<dist-info>/INSTALLER` (`fastpex`) and a RECORD rewritten for the installed paths (the wheel's
  own rows for files copied as they are, fresh hashes for what was changed or generated).

Every member is checked first: nothing may land outside the venv (absolute names, `..`, links
leaving the tree), and no device nodes or setuid/setgid bits pass (a UserError naming the wheel
and the member).
"""

from __future__ import annotations

import base64
import configparser
import hashlib
import posixpath
import re
import stat
import zipfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from fastpex.core.errors import UserError

INSTALLER = b"fastpex\n"
_SCHEMES = ("purelib", "platlib", "scripts", "headers", "data")
_PYTHON_SHEBANG = re.compile(rb"^#!pythonw?(?=\s|$)")


class HostileWheelError(UserError):
    """A wheel member that would escape the install prefix or carry unsafe file types/bits."""


@dataclass(frozen=True)
class VenvScheme:
    """Where a venv at `<prefix>/venv` for Python `python_version` (X.Y) puts things."""

    prefix: str = "/app"
    python_version: str = "3.11"

    @property
    def venv(self) -> str:
        return posixpath.join(self.prefix, "venv")

    @property
    def site_packages(self) -> str:
        return posixpath.join(self.venv, "lib", f"python{self.python_version}", "site-packages")

    @property
    def bin(self) -> str:
        return posixpath.join(self.venv, "bin")

    @property
    def python(self) -> str:
        return posixpath.join(self.bin, f"python{self.python_version}")

    @property
    def shebang(self) -> bytes:
        # pex's hermetic venv scripts: `-I` keeps PYTHON* variables and the user site out.
        return f"#!{self.python} -I".encode()

    @property
    def cache_tag(self) -> str:
        return "cpython-" + self.python_version.replace(".", "")

    def headers(self, project: str) -> str:
        return posixpath.join(self.venv, "include", "site", f"python{self.python_version}", project)


@dataclass
class PlannedFile:
    """A file (or symlink) the install writes: `path` absolute in the image."""

    path: str
    mode: int
    member: Optional[str] = None  # copied from this zip member ...
    data: Optional[bytes] = None  # ... or these bytes
    size: int = 0
    record_hash: str = ""  # `sha256=<urlsafe b64>`, as RECORD writes it
    link_target: Optional[str] = None
    compile_as: Optional[str] = None  # a .py under site-packages: its pyc path


@dataclass
class InstallPlan:
    """Everything one wheel installs, before byte code."""

    wheel: str
    project: str
    dist_info: str
    files: List[PlannedFile] = field(default_factory=list)
    record_rows: List[Tuple[str, str, str]] = field(default_factory=list)


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")


def _check_member_name(wheel: str, name: str) -> List[str]:
    if "\\" in name or "\0" in name:
        raise HostileWheelError(f"The wheel `{wheel}` has a member `{name.replace(chr(0), '<NUL>')}` with a backslash or NUL in its name: refused")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise HostileWheelError(f"The wheel `{wheel}` has a member with an absolute path, `{name}`: refused (it would escape the install prefix)")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise HostileWheelError(f"The wheel `{wheel}` has a member `{name}` whose `..` would escape the install prefix: refused")
    return parts


def _check_mode(wheel: str, name: str, mode: int) -> int:
    kind = stat.S_IFMT(mode)
    if kind and kind not in (stat.S_IFREG, stat.S_IFLNK, stat.S_IFDIR):
        raise HostileWheelError(f"The wheel `{wheel}` has a member `{name}` that is a device node, FIFO or socket: refused")
    if mode & (stat.S_ISUID | stat.S_ISGID):
        raise HostileWheelError(f"The wheel `{wheel}` has a member `{name}` with the setuid or setgid bit: refused")
    return kind


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _read_wheel_metadata(zf: zipfile.ZipFile, wheel: str) -> Tuple[str, str, bool]:
    """(dist-info dir, project name, root is purelib)."""
    dist_infos = sorted({n.split("/", 1)[0] for n in zf.namelist() if n.split("/", 1)[0].endswith(".dist-info") and "/" in n})
    if len(dist_infos) != 1:
        raise UserError(f"The wheel `{wheel}` has {len(dist_infos)} `.dist-info` directories at its root; a wheel has exactly one")
    dist_info = dist_infos[0]
    try:
        wheel_text = zf.read(f"{dist_info}/WHEEL").decode("utf-8", "replace")
        metadata_text = zf.read(f"{dist_info}/METADATA").decode("utf-8", "replace")
    except KeyError as e:
        raise UserError(f"The wheel `{wheel}` lacks {e.args[0]}") from None
    fields = dict(
        (k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in wheel_text.splitlines()) if _
    )
    version = fields.get("wheel-version", "1.0")
    if not version.startswith("1."):
        raise UserError(f"The wheel `{wheel}` has Wheel-Version {version}; fastpex installs 1.x wheels")
    purelib = fields.get("root-is-purelib", "true").lower() == "true"
    project = next(
        (line.split(":", 1)[1].strip() for line in metadata_text.splitlines() if line.lower().startswith("name:")),
        dist_info.rsplit("-", 1)[0],
    )
    return dist_info, project, purelib


def _wheel_record(zf: zipfile.ZipFile, dist_info: str) -> Dict[str, Tuple[str, str]]:
    """The wheel's RECORD rows: member -> (hash, size)."""
    import csv
    import io

    try:
        text = zf.read(f"{dist_info}/RECORD").decode("utf-8", "replace")
    except KeyError:
        return {}
    rows: Dict[str, Tuple[str, str]] = {}
    for row in csv.reader(io.StringIO(text)):
        if len(row) >= 3:
            rows[row[0]] = (row[1], row[2])
    return rows


def _entry_points(zf: zipfile.ZipFile, dist_info: str, wheel: str) -> List[Tuple[str, str, str]]:
    """(group, script name, `module[:attr]`) of the wheel's console and GUI scripts."""
    try:
        text = zf.read(f"{dist_info}/entry_points.txt").decode("utf-8")
    except KeyError:
        return []
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text)
    except configparser.Error as e:
        raise UserError(f"The wheel `{wheel}` has an unreadable entry_points.txt: {e}") from None
    scripts = []
    for group in ("console_scripts", "gui_scripts"):
        if not parser.has_section(group):
            continue
        for name, value in parser.items(group):
            name = name.strip()
            if not name or "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
                raise HostileWheelError(f"The wheel `{wheel}` declares a script named `{name!r}`, which is not a plain file name: refused")
            target = re.sub(r"\[.*\]\s*$", "", value).strip()
            scripts.append((group, name, target))
    return scripts


def console_script(shebang: bytes, target: str) -> bytes:
    """A bin script that calls `module:attr` (or runs `module` as __main__)."""
    module, _, attr = target.partition(":")
    module, attr = module.strip(), attr.strip()
    if not re.match(r"^[\w.]+$", module) or (attr and not re.match(r"^[\w.]+$", attr)):
        raise UserError(f"The entry point `{target}` is not `module` or `module:attribute`")
    if not attr:
        body = f"import runpy\n\nif __name__ == \"__main__\":\n    runpy.run_module({module!r}, run_name=\"__main__\", alter_sys=True)\n"
    else:
        head, _, rest = attr.partition(".")
        call = head + ("." + rest if rest else "")
        body = (
            f"import sys\n\nfrom {module} import {head}\n\n"
            f"if __name__ == \"__main__\":\n    sys.exit({call}())\n"
        )
    return shebang + b"\n# -*- coding: utf-8 -*-\n" + body.encode("utf-8")


def plan_install(zf: zipfile.ZipFile, wheel: str, scheme: VenvScheme) -> InstallPlan:
    """Map every member of the open wheel `zf` (named `wheel`) to its installed file."""
    dist_info, project, root_is_purelib = _read_wheel_metadata(zf, wheel)
    data_dir = dist_info[: -len(".dist-info")] + ".data"
    wheel_rows = _wheel_record(zf, dist_info)
    site = scheme.site_packages
    roots = {
        "purelib": site,
        "platlib": site,
        "scripts": scheme.bin,
        "headers": scheme.headers(project),
        "data": scheme.venv,
    }
    plan = InstallPlan(wheel=wheel, project=project, dist_info=dist_info)
    seen: Dict[str, str] = {}

    def place(planned: PlannedFile, member: str) -> None:
        if not _inside(planned.path, scheme.venv):
            raise HostileWheelError(f"The wheel `{wheel}` has a member `{member}` that would install outside {scheme.venv}: refused")
        if planned.path in seen:
            raise UserError(f"The wheel `{wheel}` installs `{planned.path}` twice (members `{seen[planned.path]}` and `{member}`)")
        seen[planned.path] = member
        plan.files.append(planned)

    for info in sorted(zf.infolist(), key=lambda i: i.filename):
        name = info.filename
        parts = _check_member_name(wheel, name)
        mode = info.external_attr >> 16
        kind = _check_mode(wheel, name, mode)
        if info.is_dir() or kind == stat.S_IFDIR or not parts:
            continue
        if parts[0] == dist_info and parts[1:] in (["RECORD"], ["INSTALLER"], ["REQUESTED"]) or parts[0] == dist_info and parts[-1].startswith("RECORD.") and len(parts) == 2:
            continue
        if parts[0] == data_dir:
            if len(parts) < 3 or parts[1] not in _SCHEMES:
                raise UserError(f"The wheel `{wheel}` has a member `{name}` in an unknown `.data` scheme (known: {', '.join(_SCHEMES)})")
            dest = posixpath.join(roots[parts[1]], *parts[2:])
            scheme_name = parts[1]
        else:
            dest = posixpath.join(roots["purelib" if root_is_purelib else "platlib"], *parts)
            scheme_name = "purelib"
        hash_, size = wheel_rows.get(name, ("", ""))
        if kind == stat.S_IFLNK:
            target = zf.read(info).decode("utf-8", "replace")
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(dest), target))
            if target.startswith("/") or not _inside(resolved, scheme.venv):
                raise HostileWheelError(f"The wheel `{wheel}` has a member `{name}`, a link to `{target}`, which leaves {scheme.venv}: refused")
            place(PlannedFile(path=dest, mode=0o777, link_target=target), name)
            continue
        executable = bool(mode & 0o111)
        planned = PlannedFile(path=dest, mode=0o755 if executable else 0o644, member=name, size=info.file_size, record_hash=hash_)
        if scheme_name == "scripts":
            content = zf.read(info)
            planned.mode = 0o755
            rewritten = _PYTHON_SHEBANG.sub(scheme.shebang, content, count=1) if content.startswith(b"#!python") else content
            if rewritten != content:
                planned.member, planned.data, planned.size, planned.record_hash = None, rewritten, len(rewritten), record_hash(rewritten)
        if _inside(dest, site) and dest.endswith(".py"):
            planned.compile_as = posixpath.join(
                posixpath.dirname(dest), "__pycache__", posixpath.basename(dest)[:-3] + f".{scheme.cache_tag}.pyc"
            )
        place(planned, name)

    for group, script_name, target in _entry_points(zf, dist_info, wheel):
        content = console_script(scheme.shebang, target)
        place(
            PlannedFile(path=posixpath.join(scheme.bin, script_name), mode=0o755, data=content, size=len(content), record_hash=record_hash(content)),
            f"{dist_info}/entry_points.txt [{group}] {script_name}",
        )
    place(
        PlannedFile(path=posixpath.join(site, dist_info, "INSTALLER"), mode=0o644, data=INSTALLER, size=len(INSTALLER), record_hash=record_hash(INSTALLER)),
        f"{dist_info}/INSTALLER",
    )
    return plan


def record_file(plan: InstallPlan, scheme: VenvScheme, extra: List[PlannedFile]) -> PlannedFile:
    """RECORD for the installed files (`extra`: the byte code), paths relative to site-packages."""
    import csv
    import io

    site = scheme.site_packages
    record_path = posixpath.join(site, plan.dist_info, "RECORD")
    rows = []
    for f in [*plan.files, *extra]:
        relative = posixpath.relpath(f.path, site)
        if f.link_target is not None:
            rows.append((relative, "", ""))
        else:
            rows.append((relative, f.record_hash, str(f.size) if f.record_hash else ""))
    rows.append((posixpath.relpath(record_path, site), "", ""))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in sorted(rows):
        writer.writerow(row)
    data = out.getvalue().encode("utf-8")
    return PlannedFile(path=record_path, mode=0o644, data=data, size=len(data))
