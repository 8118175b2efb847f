"""What every subcommand shares: an argparse whose mistakes are `UsageError`s, and the one place
that turns an error into a message and an exit status.

Every error prints as `fastpex <command>: error: <one paragraph>` on stderr (quoted tool output,
such as pip's, stays indented below it), with the status its kind carries: 2 for a `UserError`,
1 for an `OperationalError` (and an `OSError`: an unwritable output, a full disk), 130 for Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import textwrap
from typing import Callable, NoReturn, Optional, TextIO

from fastpex.core.errors import FastpexError, OperationalError, UsageError, exit_code_of

EXIT_INTERRUPTED = 130


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises `UsageError` (reported like every other error) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def path_argument(value: str) -> str:
    """A path argument, absolute: `~` expanded, relative to the working directory. Every
    subcommand's path options take it as their argparse `type`, so the stages below the CLI
    only ever see absolute paths (however the working directory changes later)."""
    return os.path.abspath(os.path.expanduser(value))


def path_or_url_argument(value: str) -> str:
    """`path_argument` for a path, a URL (`file:///wheels`, `https://...`) unchanged."""
    return value if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", value) else path_argument(value)


def paragraph(message: str) -> str:
    """The first line as one paragraph (unwrapped: the terminal wraps it, and it stays one line for
    `grep`); anything after it (pip's words) indented below."""
    head, _, rest = message.partition("\n")
    text = head
    if rest.strip():
        text += "\n" + textwrap.indent(rest.strip("\n"), "    ")
    return text


def run(
    command: str,
    body: Callable[[], int],
    *,
    interrupted: str = "interrupted",
    stderr: Optional[TextIO] = None,
) -> int:
    """`body()`'s exit status, with every fastpex error reported the one way."""
    err = stderr if stderr is not None else sys.stderr
    try:
        return body()
    except SystemExit as e:  # --help, --version
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    except FastpexError as e:
        print(f"fastpex {command}: error: {paragraph(str(e))}", file=err)
        return exit_code_of(e)
    except OSError as e:  # an output not writable, a full disk: the world, not the input
        detail = f"{e.strerror or e}: {e.filename or ''}".rstrip(": ")
        print(f"fastpex {command}: error: {detail}", file=err)
        return OperationalError.exit_code
    except KeyboardInterrupt:
        print(f"fastpex {command}: {interrupted}", file=err)
        return EXIT_INTERRUPTED
