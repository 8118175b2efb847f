"""PEP 751 `pylock.toml` from a lock, written by hand (the standard library has no TOML writer)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from packaging.utils import canonicalize_name
from packaging.version import Version

from fastpex.core.lockfile.codec import group_marker, version_sort_key
from fastpex.core.util.filenames import SDIST_SUFFIXES
from fastpex.core.model import Artifact, Lock, Target
from fastpex.core.platforms import target_marker
from fastpex.core.util.cache import write_text_atomically

def _toml_str(value: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes. For a str, `json.dumps(value,
    # ensure_ascii=False)` is `encode_basestring(value)`, without a new encoder per call (a
    # quarter of a 200-distribution pylock's time went to making them).
    if type(value) is str:
        return _encode_basestring(value)
    return json.dumps(value, ensure_ascii=False)


_encode_basestring = json.encoder.encode_basestring


def _toml_datetime(value: str) -> Optional[str]:
    """An index's ISO 8601 upload time as a TOML offset date-time (UTC), or None if unparseable."""
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    when = when.astimezone(timezone.utc)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S")
    if when.microsecond:
        stamp += f".{when.microsecond:06d}"
    return stamp + "Z"


def _toml_inline(items: Sequence[Tuple[str, str]]) -> str:
    return "{" + ", ".join(f"{k} = {v}" for k, v in items) + "}"


def _file_table(a: Artifact) -> str:
    items = [("name", _toml_str(a.filename))]
    if a.upload_time:
        stamp = _toml_datetime(a.upload_time)
        if stamp:
            items.append(("upload-time", stamp))
    items.append(("url", _toml_str(a.url)))
    if a.size is not None:
        items.append(("size", str(int(a.size))))
    items.append(("hashes", _toml_inline([("sha256", _toml_str(a.sha256))])))
    return _toml_inline(items)


def _pylock_requires_python(lock: Lock) -> Optional[str]:
    if len(lock.requires_python) == 1:
        text = lock.requires_python[0].strip()
        for prefix in ("CPython", "cpython", "Python", "python"):
            if text.startswith(prefix):
                text = text[len(prefix) :].strip()
        return ",".join(sorted(s.strip() for s in text.split(",") if s.strip())) or None
    versions = sorted({Version(r.target.python_version) for r in lock.resolves})
    if not versions:
        return None
    top = versions[-1]
    return f">={versions[0]},<{top.major}.{top.minor + 1}"


def pylock_toml(lock: Lock) -> str:
    """The lock as PEP 751 `pylock.toml` text (deterministic)."""
    all_targets = [r.target for r in lock.resolves]
    users: Dict[Tuple[str, str], List[Target]] = {}
    deps: Dict[Tuple[str, str], set] = {}
    for resolve in lock.resolves:
        for p in resolve.packages:
            key = (canonicalize_name(p.name), p.version)
            users.setdefault(key, []).append(resolve.target)
            deps.setdefault(key, set()).update(p.dependencies)
    out = ['lock-version = "1.0"']
    environments = sorted({target_marker(t) for t in all_targets})
    if environments:
        out.append("environments = [")
        out.extend(f"  {_toml_str(m)}," for m in environments)
        out.append("]")
    requires_python = _pylock_requires_python(lock)
    if requires_python:
        out.append(f"requires-python = {_toml_str(requires_python)}")
    out += ["extras = []", "dependency-groups = []", "default-groups = []", 'created-by = "fastpex"']
    for dist in sorted(lock.distributions, key=lambda d: (d.name, version_sort_key(d.version))):
        targets = users.get(dist.key, [])
        if not targets:
            continue
        out.append("")
        out.append("[[packages]]")
        out.append(f"name = {_toml_str(dist.name)}")
        out.append(f"version = {_toml_str(dist.version)}")
        if {t.name for t in targets} != {t.name for t in all_targets}:
            out.append(f"marker = {_toml_str(group_marker(targets))}")
        if dist.requires_python:
            out.append(f"requires-python = {_toml_str(dist.requires_python)}")
        names = sorted(deps.get(dist.key, ()))
        if names:
            out.append("dependencies = [" + ", ".join(_toml_inline([("name", _toml_str(n))]) for n in names) + "]")
        wheels = sorted((a for a in dist.artifacts if a.is_wheel), key=lambda a: (a.filename, a.url))
        sdists = sorted(
            (a for a in dist.artifacts if not a.is_wheel and a.filename.endswith(SDIST_SUFFIXES)),
            key=lambda a: (not a.filename.endswith(".tar.gz"), a.filename, a.url),
        )
        if sdists:
            out.append(f"sdist = {_file_table(sdists[0])}")
        if wheels:
            out.append("wheels = [")
            out.extend(f"  {_file_table(a)}," for a in wheels)
            out.append("]")
    return "\n".join(out) + "\n"


def export_pylock_toml(lock: Lock, path: Union[str, Path]) -> Path:
    """Write `pylock_toml(lock)` to `path` atomically."""
    return write_text_atomically(path, pylock_toml(lock))
