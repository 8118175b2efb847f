"""The smallest fastpex app: one dependency, one line of output."""

from __future__ import annotations

import humanize


def main() -> None:
    print(f"hello from a PEX: {humanize.naturalsize(3_400_000_000)} of wheels, packed fast")


if __name__ == "__main__":
    main()
