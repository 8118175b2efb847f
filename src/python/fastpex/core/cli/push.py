"""`python -m fastpex push`: push an image from an OCI layout to a registry.

Example::

    python -m fastpex push --layout dist/app-image --tag app \\
        --to registry.example.com/team/app:1.2 --docker-config ~/.docker

Only the blobs the registry lacks are uploaded. The last line of stdout is one JSON object:
`{"manifest_digest", "uploaded_blobs", "skipped_blobs", "uploaded_bytes", ...}`. Credentials come
from docker's config.json `auths` or a netrc and never appear in the output.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional, Sequence

from fastpex.core.cli.run import ArgumentParser, path_argument, run
from fastpex.core.image.registry import RegistryOptions, parse_reference, push_layout


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="fastpex push", description="Push an image from an OCI layout to a registry.")
    parser.add_argument("--layout", required=True, type=path_argument, help="The OCI image layout directory.")
    parser.add_argument(
        "--tag",
        help="The image in the layout: its index.json `org.opencontainers.image.ref.name` (default: its only image).",
    )
    parser.add_argument("--to", required=True, metavar="HOST[:PORT]/REPO[:TAG]", help="Where to push (tag `latest` if none).")
    parser.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="A registry that may be spoken to over plain HTTP (loopback registries always may).",
    )
    parser.add_argument(
        "--docker-config",
        type=path_argument,
        metavar="DIR",
        help="The directory holding docker's config.json (default: $DOCKER_CONFIG, else ~/.docker).",
    )
    parser.add_argument("--netrc", type=path_argument, metavar="FILE", help="A netrc file (default: $NETRC, else ~/.netrc).")
    parser.add_argument(
        "--mount-from",
        action="append",
        default=[],
        metavar="REPO",
        help="A repository on the same registry to mount missing blobs from instead of uploading them.",
    )
    parser.add_argument("--jobs", type=int, default=4, help="Concurrent blob uploads (default 4).")
    return parser


def _run(argv: Optional[Sequence[str]]) -> int:
    args = build_parser().parse_args(argv)
    options = RegistryOptions(
        insecure_registries=tuple(args.insecure_registry),
        docker_config=Path(args.docker_config) if args.docker_config else None,
        netrc=Path(args.netrc) if args.netrc else None,
        mount_from=tuple(args.mount_from),
        jobs=max(1, args.jobs),
    )
    reference = parse_reference(args.to)
    result = push_layout(Path(args.layout), reference, tag_in_layout=args.tag, options=options)
    print(
        f"pushed {result.reference}@{result.manifest_digest}: {result.uploaded_blobs} blobs uploaded "
        f"({result.uploaded_bytes} bytes), {result.skipped_blobs} already there"
    )
    print(json.dumps(result.summary(), sort_keys=True))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run("push", lambda: _run(argv))
