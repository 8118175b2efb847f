"""`python -m fastpex lock|fetch|pack|build`."""

from fastpex.core.cli.main import main

if __name__ == "__main__":
    main()
