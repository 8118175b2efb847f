"""`python -m fastpex image-base`: a minimal base image (an OCI layout) from a local CPython.

    python -m fastpex image-base --python /usr/local/bin/python3.11 --output dist/python-base --tag base

For tests and the example: no Docker and no registry needed. Prints one JSON object
(output, manifest digest, interpreter path in the image) on the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
from typing import Optional, Sequence

from fastpex.core.cli.run import ArgumentParser, path_argument, run
from fastpex.core.image.host_base import build_host_base


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m fastpex image-base",
        description="Write a minimal OCI base image holding a CPython install and the shared libraries it needs.",
    )
    parser.add_argument("--python", required=True, metavar="PATH", type=path_argument,
                        help="The CPython interpreter to put in the image (at its own path).")
    parser.add_argument("--output", required=True, metavar="DIR", type=path_argument,
                        help="The OCI image layout to write (replaced).")
    parser.add_argument("--tag", default="base", help="The image's name in index.json. Default: base.")
    parser.add_argument("--compress-level", type=int, default=6, help="gzip level 0-9 of the layer.")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run("image-base", lambda: _run(argv))


def _run(argv: Optional[Sequence[str]]) -> int:
    options = _parser().parse_args(argv)
    result = build_host_base(options.python, options.output, options.tag, options.compress_level)
    print(json.dumps({"output": str(result.output), "digest": result.manifest.digest, "python": result.python,
                      "files": result.files}, sort_keys=True))
    return 0
