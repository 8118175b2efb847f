"""fastpex's command line: one subcommand per stage.

`lock` resolves and writes a lockfile, `fetch` downloads one target's artifacts into the store,
`pack` assembles a PEX from wheels, `build` runs fetch + layers + pack from a lock.
"""

from __future__ import annotations

import gc
import importlib
import sys
from typing import Callable, Dict, List, Optional, Sequence

SUBCOMMANDS: Dict[str, str] = {
    "lock": "fastpex.core.cli.lock",
    "fetch": "fastpex.core.cli.fetch",
    "pack": "fastpex.core.cli.pack",
    "build": "fastpex.core.cli.build",
    "push": "fastpex.core.cli.push",
    "image": "fastpex.core.cli.image",
    "image-base": "fastpex.core.cli.image_base",
}

USAGE = "usage: python -m fastpex {" + ",".join(SUBCOMMANDS) + "} [options]  (--help on each)"


def main(argv: Optional[Sequence[str]] = None) -> None:
    args: List[str] = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        sys.exit(0 if args else 2)
    command, rest = args[0], args[1:]
    module_name = SUBCOMMANDS.get(command)
    if module_name is None:
        print(f"fastpex: unknown command `{command}`\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    entry: Callable[[List[str]], Optional[int]] = importlib.import_module(module_name).main
    code = entry(rest)
    if argv is None:
        # The process ends here (`python -m fastpex`, the Pants tool's entry point): what is
        # still alive dies with it. A lock leaves ~300k objects of its pages in reference
        # cycles, and the interpreter's final collection freed them in ~0.15 s of wall time
        # after the lock was written; frozen, they are left to the exit. Files are closed by
        # then (cache writes are atomic, logging flushes at exit), so nothing is lost.
        gc.freeze()
    sys.exit(code or 0)
