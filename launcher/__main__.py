"""`python -m udproom` and the `udproom` console script.

Kept tiny on purpose: `udproom --help`, `relay`, `send` and `listen` never import textual.
"""

import sys


def main(argv: list[str] | None = None) -> int:
    from udproom.tui.cli import main as cli_main

    return cli_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
