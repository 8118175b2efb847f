"""`python -m fastpex image`: a lock + sources + a base image -> an OCI image layout.

Example::

    python -m fastpex image --lock 3rdparty/python/examples.lock --target linux_x86_64-cp311 \\
        --base oci:dist/python-base:base --sources src/ --entry-point app.main:main \\
        --output dist/app-image --tag 1.0

Prints one JSON object on the last line of stdout: the output, what `index.json` names, and
each platform's manifest digest and layers. The work is `fastpex.core.image_build`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence, Tuple

from fastpex.core.cli.run import ArgumentParser, path_argument, run
from fastpex.core.errors import UsageError
from fastpex.core.fetch.downloader import DEFAULT_JOBS
from fastpex.core.fetch.progress import default_reporter
from fastpex.core.image.api import DEFAULT_TAG, PARTS, ImageConfig
from fastpex.core.image.grouping import DEFAULT_LARGE_LAYER_MB, DEFAULT_SMALL_LAYER_GROUPS
from fastpex.core.image.layers import DEFAULT_COMPRESS_LEVEL
from fastpex.core.image_build import ImageBuildRequest, build_image


def _pairs(values: Sequence[str], flag: str) -> Tuple[Tuple[str, str], ...]:
    pairs = []
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} takes KEY=VALUE, got `{value}`")
        pairs.append((key, rest))
    return tuple(pairs)


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m fastpex image",
        description="Build an OCI image layout from a fastpex lock: per-wheel installed layers on a base image.",
    )
    add = parser.add_argument
    add("--lock", required=True, metavar="LOCKFILE", type=path_argument)
    add("--target", action="append", default=[], metavar="NAME",
        help="A Linux target of the lock; repeatable (several: an image index, one manifest per platform). "
             "Default: the lock's first target.")
    add("--requirement", action="append", default=[], metavar="REQ",
        help="A requirement of the lock the image needs; repeatable. Default: all of them.")
    add("--interpreter-constraint", action="append", default=[], metavar="CONSTRAINT")
    add("--base", required=True, metavar="BASE",
        help="`oci:DIR[:TAG]` (an OCI image layout) or a registry reference `HOST[:PORT]/REPO[:TAG][@sha256:HEX]`.")
    add("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
        help="A registry that may be spoken to over plain HTTP (loopback ones always may).")
    add("--sources", metavar="DIR", type=path_argument, help="The application's sources, installed at PREFIX/src.")
    add("--entry-point", metavar="MOD[:FN]", help="What the container runs (PREFIX/entrypoint).")
    add("--script", metavar="NAME", help="A console script of the venv the container runs instead.")
    add("--env", action="append", default=[], metavar="K=V")
    add("--workdir", metavar="DIR")
    add("--user", metavar="USER")
    add("--label", action="append", default=[], metavar="K=V")
    add("--arg", action="append", default=[], metavar="ARG", help="The image's Cmd (arguments to the entry point); repeatable.")
    add("--prefix", default="/app", help="Where the venv (PREFIX/venv) and sources (PREFIX/src) go. Default: /app.")
    add("--compress-level", type=int, default=DEFAULT_COMPRESS_LEVEL, help="gzip level 0-9 of the layers.")
    add("--large-layer-mb", type=int, default=DEFAULT_LARGE_LAYER_MB,
        help=f"Wheels installing more than this get a layer each. Default: {DEFAULT_LARGE_LAYER_MB}.")
    add("--small-layer-groups", type=int, default=DEFAULT_SMALL_LAYER_GROUPS,
        help=f"How many layers the other wheels share (by a hash of the project name). Default: {DEFAULT_SMALL_LAYER_GROUPS}.")
    add("--part", choices=PARTS, default="all",
        help="`deps`: only the base's and dependency layers' blobs; `app`: the rest. They never overlap.")
    add("--tag", default=DEFAULT_TAG, help="The image's name in the layout's index.json.")
    add("--output", required=True, metavar="DIR", type=path_argument, help="The OCI image layout to write.")
    add("--cache-dir", metavar="DIR", type=path_argument)
    add("--offline", action="store_true")
    add("--fetch-jobs", type=int, default=DEFAULT_JOBS)
    add("--layer-jobs", type=int, default=None, help="Processes that build layers. Default: 2 (or the CPU count if fewer).")
    add("--index", action="append", default=[], metavar="URL")
    add("--python", action="append", default=[], metavar="PATH",
        help="Interpreters that compile byte code (and build sdists), picked by major.minor; repeatable.")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run("image", lambda: _run(argv))


def _run(argv: Optional[Sequence[str]]) -> int:
    options = _parser().parse_args(argv)
    if options.layer_jobs is not None and options.layer_jobs < 1:
        raise UsageError("--layer-jobs must be at least 1")
    config = ImageConfig(
        entry_point=options.entry_point,
        script=options.script,
        args=tuple(options.arg),
        env=_pairs(options.env, "--env"),
        workdir=options.workdir,
        user=options.user,
        labels=_pairs(options.label, "--label"),
    )
    result = build_image(
        ImageBuildRequest(
            lock_path=options.lock,
            base=options.base,
            output=options.output,
            targets=tuple(options.target),
            requirements=tuple(options.requirement),
            interpreter_constraints=tuple(options.interpreter_constraint),
            sources=options.sources,
            config=config,
            prefix=options.prefix,
            compress_level=options.compress_level,
            large_layer_mb=options.large_layer_mb,
            small_layer_groups=options.small_layer_groups,
            part=options.part,
            tag=options.tag,
            insecure_registries=tuple(options.insecure_registry),
            cache_root=options.cache_dir,
            offline=options.offline,
            fetch_jobs=options.fetch_jobs,
            indexes=tuple(options.index),
            pythons=tuple(options.python),
            layer_jobs=options.layer_jobs,
            progress=default_reporter(sys.stderr),
        )
    ).image
    summary = {
        "output": str(result.output),
        "digest": result.index.digest,
        "media_type": result.index.media_type,
        "manifests": [
            {
                "platform": str(m.platform),
                "digest": m.descriptor.digest,
                "layers": [{"name": layer.name, "digest": layer.descriptor.digest, "size": layer.descriptor.size, "built": layer.built} for layer in m.layers],
            }
            for m in result.manifests
        ],
    }
    print(json.dumps(summary, sort_keys=True))
    return 0
