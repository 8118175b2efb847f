"""`python -m fastpex build`: lock -> fetch -> layers -> PEX, the whole of `pants package`.

Example::

    python -m fastpex build --lock 3rdparty/python/examples.lock --target linux_x86_64-cp311 \\
        --requirement 'scikit-learn>=1.3' --sources src/ --entry-point app.main:main \\
        --output dist/app.pex

The PEX holds exactly what the given requirements need on the given targets (all of the
lock's requirements when none are given). User errors exit 2 with one paragraph on stderr;
nothing is written to `--output` unless the build succeeds. The work is `fastpex.core.build`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from fastpex.core.build import BuildRequest, build
from fastpex.core.cli.pack import add_pex_options, pex_options_from
from fastpex.core.cli.run import ArgumentParser, path_argument, run
from fastpex.core.fetch.downloader import DEFAULT_JOBS
from fastpex.core.fetch.progress import default_reporter



def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m fastpex build",
        description="Build a PEX from a fastpex lock: select, fetch, layer and assemble.",
    )
    parser.add_argument("--lock", required=True, metavar="LOCKFILE", type=path_argument)
    parser.add_argument("--target", action="append", default=[], metavar="NAME",
                        help="A target of the lock to build for; repeatable (multi-platform PEX). "
                             "Default: the lock's first target.")
    parser.add_argument("--requirement", action="append", default=[], metavar="REQ",
                        help="A requirement of the lock the PEX needs; repeatable. "
                             "Default: all of the lock's requirements.")
    parser.add_argument("--fetch-jobs", type=int, default=DEFAULT_JOBS,
                        help="Parallel downloads.")
    parser.add_argument("--offline", action="store_true",
                        help="Use only the artifact store; fail if anything is missing.")
    parser.add_argument("--index", action="append", default=[], metavar="URL",
                        help="Index URLs whose credentials apply to artifact downloads.")
    parser.add_argument("--python", action="append", default=[], metavar="PATH",
                        help="A Python interpreter that builds the lock's sdists for targets of its "
                             "major.minor version; repeatable. Default: `pythonX.Y` on PATH.")
    add_pex_options(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run("build", lambda: _run(argv))


def _run(argv: Optional[Sequence[str]]) -> int:
    options = _parser().parse_args(argv)
    request = BuildRequest(
        lock_path=options.lock,
        output=options.output,
        options=pex_options_from(options),
        targets=tuple(options.target),
        requirements=tuple(options.requirement),
        cache_root=options.cache_dir,
        fetch_jobs=options.fetch_jobs,
        offline=options.offline,
        indexes=tuple(options.index),
        layer_jobs=options.layer_jobs,
        pythons=tuple(options.python),
        progress=default_reporter(sys.stderr),
    )
    for output in build(request).outputs:
        print(output)
    return 0