"""`udproom` command line. Imports textual only when it opens the app.

udproom                                   connect screen
udproom --host [HOST]:PORT [--nick N] [--room R ...]
udproom --join HOST:PORT   [--nick N] [--room R ...]
udproom --listen [HOST]:PORT --peer HOST:PORT ...   (direct mode, no relay)
udproom relay|send|listen|history|search|log|register ...   headless commands (udproom.protocol.cli)
"""

from __future__ import annotations

import argparse
import sys

from udproom.protocol.cli import OneLineParser, UsageError

HEADLESS = ("relay", "send", "listen", "history", "search", "log", "register")


def _parser() -> argparse.ArgumentParser:
    from udproom import __version__

    p = OneLineParser(
        hint=False,
        prog="udproom",
        description="A full-screen terminal chat room over reliable UDP.",
        epilog=(
            "headless commands: udproom relay|send|listen|history|search|log|register --help. "
            "With no address, udproom opens a connect screen."
        ),
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--host",
        metavar="[HOST]:PORT",
        help="run a relay inside the app and join it (':6000' = every interface)",
    )
    where.add_argument(
        "--join",
        metavar="HOST:PORT[,...]",
        help="join a relay (several relays of one cluster: comma-separated; HOST:PORT#FINGERPRINT also "
        "checks the relay's key)",
    )
    where.add_argument(
        "--listen", metavar="[HOST]:PORT", help="direct mode: talk to peers without a relay, listening here"
    )
    p.add_argument(
        "--peer",
        metavar="HOST:PORT",
        action="append",
        default=[],
        help="direct mode: a peer to contact (repeatable)",
    )
    p.add_argument("--nick", metavar="NICK", help="your nick (default: your login name)")
    p.add_argument(
        "--identity",
        metavar="FILE",
        help="your identity key (Ed25519; made on first use, mode 0600; default: in the user data directory)",
    )
    p.add_argument(
        "--room",
        metavar="ROOM",
        action="append",
        default=[],
        help="a room to join (repeatable; default: lobby)",
    )
    p.add_argument(
        "--theme",
        metavar="NAME",
        help="colours: any built-in Textual theme, e.g. textual-light, nord, gruvbox (remembered; "
        "default tokyo-night)",
    )
    p.add_argument("--no-bell", action="store_true", help="do not ring the terminal bell on mentions")
    p.add_argument(
        "--no-log",
        action="store_true",
        help="keep no local chat log for this run (config: log = false)",
    )
    p.add_argument("--version", action="version", version=f"udproom {__version__}")
    return p


def parse(argv: list[str]):
    """(Spec or None, args). Raises UsageError with a one-line message."""
    from .session import Spec, SpecError, check, identity

    args = _parser().parse_args(argv)
    try:  # a key file others can read (or no key) is refused before anything starts: one line
        identity(Spec("join", identity=args.identity or ""))
    except SpecError as e:
        raise UsageError(str(e)) from None
    if args.theme is not None:
        from .theme import theme_names

        if args.theme not in theme_names():
            raise UsageError(f"no theme called {args.theme!r}; one of: {', '.join(theme_names())}")
    if args.peer and args.host is None and args.join is None and args.listen is None:
        args.listen = ""
    if args.peer and (args.host is not None or args.join is not None):
        raise UsageError("--peer is for direct mode (--listen); it cannot be combined with --host or --join")
    if args.host is not None:
        mode, address = "host", args.host
    elif args.join is not None:
        mode, address = "join", args.join
    elif args.listen is not None:
        mode, address = "direct", args.listen
    else:
        mode = address = None
    if mode is None:
        if args.nick is not None or args.room:
            from udproom.protocol.names import InputError, canonical_room, check_nick

            try:
                if args.nick is not None:
                    check_nick(args.nick)
                for r in args.room:
                    canonical_room(r)
            except InputError as e:
                raise UsageError(str(e)) from None
        return None, args
    try:
        spec = check(
            Spec(mode, address, args.nick or "", args.room or ["lobby"], list(args.peer), args.identity or "")
        )
    except SpecError as e:
        raise UsageError(str(e)) from None
    return spec, args


def _have_terminal() -> bool:
    """Keys come from stdin and the screen goes to stdout: both must be a terminal (under nohup,
    cron, a service unit or a script the app would write escape codes into a pipe and spin)."""
    try:
        return sys.stdin is not None and sys.stdout is not None and sys.stdin.isatty() and sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in HEADLESS:
        from udproom.protocol.cli import main as headless_main

        return int(headless_main(argv) or 0)
    try:
        spec, args = parse(argv)
    except UsageError as e:
        print(f"udproom: error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help / --version
        return int(e.code or 0) if isinstance(e.code, int) else 0
    if not _have_terminal():
        print(
            "udproom: the chat app needs a terminal (stdin and stdout); without one use "
            "`udproom listen`, `udproom send` or `udproom relay` (each has --help)",
            file=sys.stderr,
        )
        return 2
    from .app import ChatApp
    from .config import load, save

    cfg = load()
    if args.theme and args.theme != cfg.theme:
        cfg.theme = args.theme  # remembered: the next run without --theme uses it too
        err = save(cfg)
        if err:
            print(f"udproom: {err}", file=sys.stderr)
    if spec is None and (args.nick or args.room):
        if args.nick:
            cfg.nick = args.nick
        if args.room:
            cfg.rooms = list(args.room)
    app = ChatApp(
        spec,
        bell=False if args.no_bell else None,
        config=cfg,
        log=False if args.no_log else None,
        identity=args.identity or "",
    )
    result = app.run()
    return int(result or 0)
