"""The headless commands: `udproom relay`, `listen`, `send` and `history`, and `search` and `log`
(the local log).

These never import textual (nor udproom.tui): scripts and tests start them often, and
`udproom relay` runs on servers. Exit codes: 0 done, 1 failed (no relay answering, refused,
timed out, oversize text...), 2 bad usage (flags, addresses, room or nick names). Errors are one
line on stderr, never a traceback.

One module for the five commands because they share the parser, the client setup, the signal
handling and the JSON output; `build_parser` is long because it is the flags' one declaration, and
`_run_send` is the send command's one sequence (connect, wait until ready, post each line, wait
for every acknowledgement, report) kept together so its exit codes are decided in one place.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, NoReturn

from . import events as E
from .names import InputError, canonical_room, check_nick, check_text, default_nick, sanitize
from .net.address import AddressError, format_address, parse_address, parse_addresses
from .reliability import Timing

COMMANDS = ("relay", "listen", "send", "history", "search", "log", "register")
log = logging.getLogger("udproom")


class UsageError(Exception):
    """Bad flags or values: exit 2 with a one-line message."""


class Failure(Exception):
    """The command could not do its job: exit 1 with a one-line message."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (a UsageError: the caller exits 2), never a usage dump;
    with `hint`, the line says where the help is. The app's command line uses it too."""

    def __init__(self, *args: Any, hint: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hint = hint

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')" if self.hint else message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise SystemExit(status)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def _whole(text: str, least: int, must: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{text!r} must be {must}")
    return value


def _count(text: str) -> int:
    return _whole(text, 1, "at least 1")


def _at_least_zero(text: str) -> int:
    return _whole(text, 0, "0 (off) or more")


def _rate(text: str) -> tuple[float, float]:
    """RATE[/BURST]: a rate a second (0: no limit) and its burst (default 10x the rate)."""
    rate_text, _, burst_text = text.partition("/")
    try:
        rate = float(rate_text)
        burst = float(burst_text) if burst_text else rate * 10
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not RATE or RATE/BURST (numbers)") from None
    if not (0 <= rate <= 1e6 and (rate == 0 or 1 <= burst <= 1e7)):
        raise argparse.ArgumentTypeError(f"{text!r}: RATE from 0 (no limit) to 1000000, BURST from 1")
    return rate, burst


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--log-level",
        default="warning",
        type=str.lower,
        choices=["debug", "info", "warning", "error"],
        help="diagnostics on stderr (default: warning)",
    )
    # Hidden, for tests: shrink the protocol's intervals.
    hidden = argparse.SUPPRESS
    p.add_argument("--fast-timers", action="store_true", help=hidden)
    p.add_argument("--keepalive", type=_positive, help=hidden)
    p.add_argument("--timeout-member", type=_positive, help=hidden)
    p.add_argument("--give-up", type=_positive, help=hidden)
    p.add_argument("--reconnect-max", type=_positive, help=hidden)


def _add_direct(p: argparse.ArgumentParser) -> None:
    """Direct mode (no relay): the alternative to --join."""
    p.add_argument(
        "--listen",
        metavar="[HOST]:PORT",
        help="direct mode: talk to peers without a relay, listening here "
        "(':6001' = every interface; port 0 = any free port)",
    )
    p.add_argument(
        "--peer",
        metavar="HOST:PORT",
        action="append",
        default=[],
        help="direct mode: a peer to contact (repeatable; one member reveals the rest)",
    )


def _add_identity(p: argparse.ArgumentParser, whose: str, default: str, *aliases: str) -> None:
    p.add_argument(
        "--identity",
        *aliases,
        dest="identity",
        metavar="FILE",
        help=f"{whose} identity key (Ed25519; made on first use, mode 0600; default: {default})",
    )


def _identity(args: argparse.Namespace) -> Any:
    """The user's identity key (--identity FILE, or the one in the data directory, made on first
    use). A file that others can read, or that is not a key, is bad usage: one line, exit 2."""
    from . import paths
    from .crypto import IdentityFileError, load_or_create_identity

    try:
        return load_or_create_identity(args.identity or paths.identity_path())
    except IdentityFileError as exc:
        raise UsageError(str(exc)) from None


def _known() -> tuple[Any, Any]:
    """The relays' keys pinned so far (trust on first use) and the file of the members' keys,
    checked readable up front."""
    from . import paths
    from .pins import KeyPins, KnownRelays, PinFileError

    known, keys = KnownRelays(paths.known_relays_path()), paths.known_keys_path()
    try:
        known.get("")
        KeyPins.load(keys, "")
    except PinFileError as exc:
        raise Failure(str(exc)) from None
    return known, keys


def relay_client(args: argparse.Namespace, nick: str, rooms: list[str], room: str = "") -> Any:
    """A client of the relay at --join (`HOST:PORT[#FINGERPRINT]`) as this user (--identity),
    pinning the relay's key on first use; with --passphrase-file, `room` is a passphrase room."""
    from .net.runners import RelayClient

    known, keys = _known()
    passphrase = getattr(args, "passphrase", None)
    return RelayClient(
        args.join,
        nick,
        rooms,
        timing=_timing(args),
        identity=args.identity_key,
        known=known,
        known_keys=keys,
        passphrases={room: passphrase} if passphrase is not None and room else None,
    )


def _relay_address(text: str) -> None:
    """Check `HOST:PORT[#FINGERPRINT]` (AddressError, one line)."""
    from .net.runners import pinned_address

    parse_addresses(pinned_address(text)[0])


def _client(args: argparse.Namespace, nick: str, room: str) -> Any:
    """A relay client (--join) or a direct peer (--listen/--peer)."""
    if args.join is not None:
        return relay_client(args, nick, [room], room)
    from .net.peer import PeerClient
    from .pins import PinFileError

    try:  # the user's identity key (--identity) and nick pins, from their default homes
        return PeerClient(
            args.listen, list(args.peer), nick, [room], timing=_timing(args), identity=args.identity_key
        )
    except PinFileError as exc:
        raise Failure(str(exc)) from None


def _where(args: argparse.Namespace) -> str:
    if args.join is not None:
        return f"a relay at {args.join}"
    return "peers at " + ", ".join(args.peer) if args.peer else "any peer"


def _add_room_args(parser: argparse.ArgumentParser) -> None:
    """Where the room is (a relay, or direct peers), which room, and as whom: listen and send."""
    parser.add_argument(
        "--join",
        metavar="HOST:PORT[,HOST:PORT...]",
        help="the relay, HOST:PORT ('[::1]:6000' for IPv6; port defaults to 6000); several relays of "
        "one cluster, comma-separated: the next when one stops answering; HOST:PORT#FINGERPRINT also "
        "checks the relay's key (as `udproom relay` prints it)",
    )
    _add_direct(parser)
    _add_identity(parser, "your", "in the user data directory")
    parser.add_argument("--room", required=True, help="room name, e.g. lobby or '#lobby'")
    parser.add_argument("--nick", help="nick to use (default: your login name)")
    _add_passphrase(parser)


def _add_passphrase(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help="the room's passphrase is FILE's first line: a passphrase room (end to end; made if new)",
    )


def _read_passphrase(args: argparse.Namespace) -> None:
    """args.passphrase from --passphrase-file (its first line), or None; bad ones are bad usage."""
    args.passphrase = None
    name = getattr(args, "passphrase_file", None)
    if name is None:
        return
    if getattr(args, "join", None) is None:
        raise UsageError("--passphrase-file needs a relay (--join): direct mode has no passphrase rooms")
    try:
        with open(name, encoding="utf-8") as f:
            line = f.readline(4096).rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"cannot read the passphrase file {name}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    if not line:
        raise UsageError(f"the passphrase file {name} has an empty first line")
    args.passphrase = line


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="udproom",
        description="Headless udproom commands: run a relay, listen to a room, send to a room, "
        "search the local log, print a room's transcript.",
    )
    sub = parser.add_subparsers(
        dest="command", metavar="{relay,listen,send,history,search,log,register}", parser_class=OneLineParser
    )
    sub.required = True

    relay = sub.add_parser(
        "relay",
        help="run a relay that rooms live on",
        description="Run a relay. Prints 'udp://HOST:PORT' on stderr once it is listening. "
        "Rooms are kept in SQLite under the user data directory (or --data DIR, or "
        "$UDPROOM_DATA_DIR/relay): a restarted relay continues them. "
        "Ctrl+C or SIGTERM says goodbye to every client and exits.",
    )
    relay.add_argument(
        "--bind",
        default=":6000",
        metavar="[HOST]:PORT",
        help="where to listen (default ':6000' = every interface, IPv4 and IPv6; port 0 = any free port)",
    )
    relay.add_argument("--data", metavar="DIR", help="keep the rooms' history in DIR (SQLite, WAL)")
    _add_identity(  # (--key: the relays of a cluster present one key, given to each this way)
        relay,
        "the relay's",
        "'identity' in its data directory; with --memory one made for the run. The relays of a "
        "cluster share one: give each the same FILE",
        "--key",
    )
    relay.add_argument(
        "--cluster",
        metavar="nats://HOST:PORT[,...]",
        help="share rooms with other relays through NATS JetStream at these servers (nothing is kept "
        "locally; needs the 'cluster' extra: pip install 'udproom[cluster]')",
    )
    relay.add_argument(
        "--workers",
        type=_workers,
        metavar="N|auto",
        help="with --cluster: run N relay processes on the one port (SO_REUSEPORT), sharing rooms "
        "through the cluster; 'auto' = one per core",
    )
    relay.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # (a worker)
    relay.add_argument(
        "--replicas",
        type=int,
        choices=(1, 3, 5),
        default=1,
        metavar="N",
        help="with --cluster: copies of each room's stream on the NATS servers (1, 3 or 5; default 1)",
    )
    relay.add_argument(
        "--memory", action="store_true", help="keep history in memory only: a restart forgets every room"
    )
    relay.add_argument(
        "--fsync",
        action="store_true",
        help="wait for the disk on every commit (synchronous=FULL): a power loss loses nothing acknowledged",
    )
    relay.add_argument(
        "--keep-days",
        type=_at_least_zero,
        default=30,
        metavar="N",
        help="delete events older than N days (default 30; 0 = keep them)",
    )
    relay.add_argument(
        "--keep-events",
        type=_at_least_zero,
        metavar="N",
        help="keep at most N events per room (default 100000, with --memory 4096; 0 = no cap)",
    )
    relay.add_argument(
        "--admin-key",
        metavar="FILE",
        action="append",
        default=[],
        help="FILE lists the fingerprints (one a line, '#' comments) of relay operators: "
        "operators in every room (repeatable)",
    )
    relay.add_argument(
        "--max-rooms-per-key",
        type=_at_least_zero,
        default=0,
        metavar="N",
        help="one identity key may make at most N rooms on this relay (default 0 = no limit)",
    )
    relay.add_argument(
        "--posts-per-key",
        type=_rate,
        default=(100.0, 1000.0),
        metavar="RATE[/BURST]",
        help="messages a second one identity key may post, whatever its sessions, addresses or "
        "nicks, in bursts of BURST (default 100/1000; 0 = no limit); beyond it a post is refused",
    )
    relay.add_argument(
        "--max-sessions-per-address",
        type=_at_least_zero,
        default=64,
        metavar="N",
        help="at most N sessions at once from one address (IPv4 address, IPv6 /64); a login beyond "
        "it is refused (default 64, since a NAT puts many users behind one address; 0 = no limit)",
    )
    relay.add_argument(
        "--handshakes-per-address",
        type=_rate,
        default=(50.0, 200.0),
        metavar="RATE[/BURST]",
        help="handshake datagrams (Hellos) a second from one address, in bursts of BURST (default "
        "50/200; 0 = no limit, for a test bed whose clients all share one address); beyond it a Hello "
        "is dropped (its client sends it again)",
    )
    relay.add_argument(
        "--max-handshakes-per-address",
        type=_at_least_zero,
        default=32,
        metavar="N",
        help="at most N handshakes waiting for their login at once from one address; a Hello beyond "
        "it is dropped (its client sends it again), so half-open handshakes cannot fill the relay "
        "(default 32; 0 = no limit)",
    )
    relay.add_argument(
        "--requests-per-address",
        type=_rate,
        default=(10_000.0, 20_000.0),
        metavar="RATE[/BURST]",
        help="requests a second from one address, all its sessions together, in bursts of BURST "
        "(default 10000/20000; 0 = no limit); beyond it a request is dropped (its client sends it again)",
    )
    relay.add_argument(
        "--posts-per-address",
        type=_rate,
        default=(200.0, 2000.0),
        metavar="RATE[/BURST]",
        help="messages a second from one address, whatever its keys, sessions or nicks, in bursts "
        "of BURST (default 200/2000; 0 = no limit); beyond it a post is refused",
    )
    _add_common(relay)

    register = sub.add_parser(
        "register",
        help="register a nick on a relay: only your identity key may use it there",
        description="Bind NICK to your identity key on the relay at --join: afterwards anyone "
        "else using NICK there is refused, and you always get it back. Exits 0 once the relay "
        "has stored it.",
    )
    register.add_argument("--join", required=True, metavar="HOST:PORT", help="the relay")
    register.add_argument("--nick", required=True, help="the nick to register")
    _add_identity(register, "your", "in the user data directory")
    register.add_argument(
        "--timeout", type=_positive, default=10.0, metavar="SECONDS", help="give up after (default 10)"
    )
    _add_common(register)

    listen = sub.add_parser(
        "listen",
        help="join a room and print its events as JSON lines",
        description="Join ROOM and print one JSON object per line: first {'type': 'joined', ...}, "
        "then one per room event (message, join, leave, timeout, nick, topic, away).",
    )
    _add_room_args(listen)
    listen.add_argument("--count", type=_count, metavar="N", help="exit 0 once N message lines were printed")
    listen.add_argument(
        "--timeout",
        type=_positive,
        metavar="SECONDS",
        help="stop after SECONDS (an error with --count, a normal end without)",
    )
    listen.add_argument("--history", action="store_true", help="also print the room's recent history first")
    _add_common(listen)

    send = sub.add_parser(
        "send",
        help="send messages to a room",
        description="Send TEXT as one message, or with no TEXT each non-empty line of stdin as "
        "a message, in order. Exits 0 once the relay has acknowledged every message.",
    )
    _add_room_args(send)
    send.add_argument(
        "--timeout",
        type=_positive,
        default=10.0,
        metavar="SECONDS",
        help="give up if not everything is acknowledged by then (default 10)",
    )
    send.add_argument("text", nargs="*", metavar="TEXT", help="the message (default: stdin lines)")
    _add_common(send)

    history = sub.add_parser(
        "history",
        help="print a room's older events from the relay as JSON lines",
        description="Ask the relay for ROOM's events before sequence SEQ (default: the newest), at "
        "most N, and print them oldest first as JSON lines (the objects `listen` prints). "
        "Does not join the room.",
    )
    history.add_argument(
        "--join",
        required=True,
        metavar="HOST:PORT[,HOST:PORT...]",
        help="the relay ('[::1]:6000' for IPv6; several relays of one cluster, comma-separated; "
        "HOST:PORT#FINGERPRINT also checks its key)",
    )
    _add_identity(history, "your", "in the user data directory")
    history.add_argument("--room", required=True, help="room name, e.g. lobby or '#lobby'")
    history.add_argument(
        "--nick", help="nick to use (default: history-XXXXXX, random: not the nick you chat with)"
    )
    _add_passphrase(history)
    history.add_argument(
        "--before", type=_count, metavar="SEQ", help="events with sequence numbers below SEQ (default: all)"
    )
    history.add_argument(
        "--limit", type=_count, default=100, metavar="N", help="at most N events (default and most: 100)"
    )
    history.add_argument(
        "--timeout",
        type=_positive,
        default=10.0,
        metavar="SECONDS",
        help="give up after SECONDS (default 10)",
    )
    _add_common(history)

    search = sub.add_parser(
        "search",
        help="search the local chat log",
        description="Search the app's local log (in the user data directory, or $UDPROOM_DATA_DIR). "
        "WORDS match whole words, 'dep*' a prefix (the last word is always a prefix); 'nick:bob' and "
        "'room:#dev' filter. Most recently logged first.",
    )
    search.add_argument("words", nargs="+", metavar="WORDS", help="what to look for")
    search.add_argument("--room", help="only this room ('#dev', or '@nick' for a direct conversation)")
    search.add_argument(
        "--json", action="store_true", help="JSON lines: room, nick, ts, text (and kind, circle)"
    )
    search.add_argument(
        "--limit", type=_count, default=50, metavar="N", help="at most N results (default 50)"
    )
    _add_common(search)

    logcmd = sub.add_parser(
        "log",
        help="print a room's transcript from the local chat log",
        description="Print ROOM's lines from the app's local log as a plain-text transcript, oldest first.",
    )
    logcmd.add_argument(
        "--room", required=True, help="the room ('#dev', or '@nick' for a direct conversation)"
    )
    logcmd.add_argument(
        "--since",
        type=_since,
        metavar="DATE",
        help="only lines from then on: 2026-12-01, '2026-12-01 14:00', or 90m / 12h / 7d ago",
    )
    _add_common(logcmd)
    return parser


def _since(text: str) -> float:
    """A --since value as UNIX time: an ISO date or date-time (local time), or 90m / 12h / 7d ago."""
    import datetime

    units = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    raw = text.strip()
    if raw[-1:].lower() in units and raw[:-1].isdigit():
        return time.time() - int(raw[:-1]) * units[raw[-1:].lower()]
    try:
        when = datetime.datetime.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (2026-12-01, '2026-12-01 14:00') or an age (90m, 12h, 7d)"
        ) from None
    try:
        return when.timestamp()
    except (OverflowError, OSError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is out of range") from None


def _log_room(name: str) -> str:
    """A room as the log keys it: canonical name, or '@nick' for a direct conversation."""
    if name.startswith("@"):
        return "@" + check_nick(name[1:])
    return canonical_room(name)


def _timing(args: argparse.Namespace) -> Timing | None:
    if not (args.fast_timers or args.keepalive or args.timeout_member or args.give_up or args.reconnect_max):
        return None
    t = Timing.fast() if args.fast_timers else Timing()
    if args.keepalive:
        t.keepalive = args.keepalive
    if args.timeout_member:
        t.timeout = args.timeout_member
    if args.give_up:
        t.give_up = args.give_up
    if args.reconnect_max:
        t.reconnect_max = args.reconnect_max
        t.reconnect_min = min(t.reconnect_min, args.reconnect_max)
    return t


class _SafeFormatter(logging.Formatter):
    """Log lines carry strings from the network (notices, reasons): sanitized like the screen."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return sanitize(super().formatMessage(record))  # one line: a newline cannot forge another

    def formatException(self, ei) -> str:  # a traceback keeps its lines
        return "\n".join(sanitize(line) for line in super().formatException(ei).split("\n"))


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])


def _say(command: str, text: str) -> None:
    """One line on stderr. `text` may quote the network (refusal reasons): sanitized."""
    try:
        sys.stderr.write(f"udproom {command}: {sanitize(text)}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def login_nick() -> str:
    """The default nick: made from the login name (the app's and the headless commands')."""
    try:
        login = getpass.getuser()
    except Exception:
        login = os.environ.get("USER", "")
    return default_nick(login)


def _on_signals(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, callback)
        except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover (Windows)
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(callback))


# ----------------------------------------------------------------------------- relay


def _workers(text: str) -> int:
    from .net.workers import worker_count

    try:
        return worker_count(text.strip().lower())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"a number of workers or 'auto' ({exc})") from None


async def _run_workers(args: argparse.Namespace) -> int:
    from .net.workers import run_workers

    if not args.cluster:
        raise UsageError(
            "--workers runs relays that share rooms through a cluster: add --cluster nats://HOST:PORT"
        )
    host, port = parse_address(args.bind, allow_empty_host=True)
    stop = asyncio.Event()
    _on_signals(asyncio.get_running_loop(), stop.set)
    try:
        return await run_workers(args.workers, args.argv, host, port, lambda text: _say("relay", text), stop)
    except AddressError as exc:
        raise Failure(str(exc)) from None


async def _run_relay(args: argparse.Namespace) -> int:
    from .net.runners import RelayServer
    from .relay import RelayConfig, StoreFailed, StoreRecovered

    if args.workers is not None:
        return await _run_workers(args)

    timing = _timing(args)
    config = RelayConfig(timing=timing) if timing is not None else RelayConfig()
    config.admin_keys = frozenset(fp for name in args.admin_key for fp in _admin_keys(name))
    config.max_rooms_per_key = args.max_rooms_per_key
    config.posts_per_key, config.posts_per_key_burst = args.posts_per_key
    config.max_sessions_per_address = args.max_sessions_per_address
    config.max_handshakes_per_address = args.max_handshakes_per_address
    config.hello_rate, config.hello_burst = args.handshakes_per_address
    if config.hello_rate <= 0:  # no limit (a token bucket cannot be endless: one no one reaches)
        config.hello_rate = config.hello_burst = 1e9
    config.requests_per_address, config.requests_per_address_burst = args.requests_per_address
    config.posts_per_address, config.posts_per_address_burst = args.posts_per_address
    config.identity = args.identity_key
    names = None
    if args.cluster:
        room_log, names = _open_cluster(args, config.timing.timeout)
    else:
        room_log = _open_room_log(args)

    def on_event(ev: Any) -> None:  # what an operator must see: the log stopped storing, and again
        if isinstance(ev, StoreFailed):
            _say("relay", f"cannot store posts, refusing them until it can: {ev.reason}")
        elif isinstance(ev, StoreRecovered):
            _say("relay", f"storing again ({_plural(ev.refused, 'commit')} refused meanwhile)")

    # relays of a cluster share a port on one machine (SO_REUSEPORT): a second `relay --cluster`
    # there just works, as --workers do; the kernel keeps each client on one of them
    reuse = args.reuse_port or bool(args.cluster)
    server = RelayServer(args.bind, config, log=room_log, on_event=on_event, names=names, reuse_port=reuse)
    try:
        host, port = await server.start()
    except AddressError as exc:
        room_log.close()
        _close_link(room_log)
        raise Failure(str(exc)) from None
    where = getattr(room_log, "path", None)
    if args.cluster:
        from .jetstream import redact

        where = ",".join(redact(u) for u in args.cluster.split(","))
        _say("relay", f"rooms kept in the cluster at {where} ({_plural(args.replicas, 'replica')})")
    else:
        _say("relay", f"rooms kept in {where}" if where else "rooms kept in memory only (--memory)")
    _say("relay", f"relay key {config.identity.fingerprint} (clients can check it: --join HOST:PORT#KEY)")
    if args.identity is None and args.memory:
        _say("relay", "that key is made for this run only (--memory): give --identity FILE to keep it")
    stop = asyncio.Event()
    _on_signals(asyncio.get_running_loop(), stop.set)
    others = ", ".join(server.addresses())
    _say("relay", f"listening on udp://{format_address(host, port)} (join it at {others})")
    await stop.wait()
    stats = server.stats
    await server.stop()
    if names is not None:
        names.close()
    _close_link(room_log)
    _say(
        "relay",
        f"stopped after {_plural(stats.get('sessions_opened', 0), 'session')},"
        f" {_plural(stats.get('posts', 0), 'message')};"
        f" dropped {stats.get('malformed', 0)} malformed and"
        f" {sum(stats.get(k, 0) for k in ('unauthenticated', 'unknown_source', 'sealed_dropped'))}"
        " unauthenticated datagrams",
    )
    return 0


def _relay_identity(args: argparse.Namespace) -> Any:
    """The relay's long-term key: --identity FILE, else `identity` in its data directory (made on
    first use); with --memory and no --identity, one made for this run only (said on stderr:
    clients that pinned it will refuse the next run's). The relays of a cluster present one key,
    so that a client's pin holds when it fails over: relays on one machine share the default file;
    on several machines, give each the same --identity FILE."""
    from . import paths
    from .crypto import Identity, IdentityFileError, load_or_create_identity

    if args.identity is None and args.memory:
        return Identity.generate()  # (said once the relay runs: `_run_relay`)
    try:
        return load_or_create_identity(args.identity or paths.relay_identity_path(args.data))
    except IdentityFileError as exc:
        raise UsageError(str(exc)) from None


def _open_cluster(args: argparse.Namespace, timeout: float) -> tuple[Any, Any]:
    """--cluster: the room log on JetStream and the nick claims, on one NATS connection; a one-line
    Failure when no server answers (or nats-py is missing)."""
    import os

    from .roomlog import KEEP_EVENTS, StoreError

    if args.data is not None or args.memory or args.fsync:
        raise UsageError(
            "--cluster keeps rooms in NATS JetStream: it cannot be combined with --data, --memory or --fsync"
        )
    urls = [u.strip() for u in args.cluster.split(",") if u.strip()]
    try:
        from .jetstream import ClusterNicks, JetStreamLog, NatsLink, redact
    except ImportError:
        raise Failure("--cluster needs nats-py: pip install 'udproom[cluster]'") from None
    if not urls or not all(u.startswith(("nats://", "tls://")) for u in urls):
        shown = ",".join(redact(u) for u in urls)
        raise UsageError(f"--cluster wants nats://HOST:PORT[,nats://HOST:PORT...], not {shown!r}")
    keep_events = KEEP_EVENTS if args.keep_events is None else args.keep_events
    try:
        link = NatsLink(urls)
    except StoreError as exc:
        raise Failure(str(exc)) from None
    try:
        log = JetStreamLog(
            link, keep_days=args.keep_days or None, keep_events=keep_events or None, replicas=args.replicas
        )
        names = ClusterNicks(link, os.urandom(8).hex(), ttl=timeout, replicas=args.replicas)
    except StoreError as exc:
        link.close()
        raise Failure(str(exc)) from None
    return log, names


def _close_link(room_log: Any) -> None:
    link = getattr(room_log, "link", None)
    if link is not None:
        link.close()


def _open_room_log(args: argparse.Namespace) -> Any:
    """The relay's room log from --data / --memory / --fsync / --keep-*: a one-line Failure when
    it cannot be opened (another relay holds it, damaged, read-only)."""
    from .relay import RelayConfig
    from .roomlog import KEEP_EVENTS, LogInUse, StoreError, open_log

    if args.memory and (args.data is not None or args.fsync):
        raise UsageError("--memory keeps nothing on disk: it cannot be combined with --data or --fsync")
    keep_events = args.keep_events
    if keep_events is None:  # in memory: the ring the relay kept before it had a log
        keep_events = RelayConfig().ring if args.memory else KEEP_EVENTS
    try:
        return open_log(
            args.data,
            memory=args.memory,
            fsync=args.fsync,
            keep_days=args.keep_days or None,
            keep_events=keep_events or None,
        )
    except LogInUse as exc:
        raise Failure(f"{exc}; give this one --data DIR") from None
    except StoreError as exc:
        raise Failure(str(exc)) from None


# ----------------------------------------------------------------------------- listen


def _event_json(ev: Any) -> dict | None:
    """A room event as the JSON object `listen` prints (None for events it does not print)."""
    base = {"room": ev.room, "seq": ev.seq, "ts": ev.ts}
    if isinstance(ev, E.MessageReceived):
        out = {"type": "message", "nick": ev.nick, "text": ev.text, **base}
        if ev.action:
            out["action"] = True
        if ev.mine:
            out["mine"] = True
    elif isinstance(ev, E.MemberJoined):
        out = {"type": "join", "nick": ev.nick, **base}
    elif isinstance(ev, E.MemberLeft):
        out = {"type": "leave", "nick": ev.nick, "reason": ev.reason, **base}
    elif isinstance(ev, E.MemberTimedOut):
        out = {"type": "timeout", "nick": ev.nick, **base}
    elif isinstance(ev, E.NickChanged):
        out = {"type": "nick", "nick": ev.new, "old": ev.old, **base}
    elif isinstance(ev, E.TopicChanged):
        out = {"type": "topic", "nick": ev.nick, "text": ev.topic, **base}
    elif isinstance(ev, E.AwayChanged):
        out = {"type": "away", "nick": ev.nick, "text": ev.away, **base}
    elif isinstance(ev, E.RoomModerated):  # kick, ban, op, mode ...: nick is the operator
        out = {"type": ev.action, "nick": ev.by, "target": ev.target, "text": ev.text, **base}
    else:
        return None
    if ev.history:
        out["history"] = True
    return out


def _sanitized(obj: Any) -> Any:
    """Every string in a JSON-able object through `sanitize`: JSON escapes C0 controls but writes
    C1 controls (U+009B is a terminal's CSI) and bidi overrides raw."""
    if isinstance(obj, str):
        return sanitize(obj)
    if isinstance(obj, dict):
        return {k: _sanitized(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_sanitized(v) for v in obj]
    return obj


class _Output:
    """JSON lines on stdout, every string from the network sanitized like the screen; a closed
    pipe (`listen | head -1`) ends the command quietly."""

    def __init__(self, on_closed: Callable[[], None]) -> None:
        self.closed = False
        self.on_closed = on_closed

    def write(self, obj: dict) -> None:
        self.write_text(json.dumps(_sanitized(obj), ensure_ascii=False))

    def write_text(self, line: str) -> None:
        if self.closed:
            return
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError, OSError):
            self.closed = True
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except OSError:
                pass
            self.on_closed()


def history_nick() -> str:
    """`history`'s default nick: it joins no room, and nicks are unique per relay, so a random one
    that cannot collide with yours while you chat under it (nor with another `history`)."""
    return f"history-{os.urandom(3).hex()}"


def _room_and_nick(args: argparse.Namespace, default: Callable[[], str] = login_nick) -> tuple[str, str]:
    """--room and --nick (default: `default()`, from the login name), checked: a bad one is bad usage."""
    try:
        room = canonical_room(args.room)
        nick = check_nick(args.nick) if args.nick is not None else default()
    except InputError as exc:
        raise UsageError(str(exc)) from None
    return room, nick


def _finisher(state: dict, done: asyncio.Event) -> Callable[..., None]:
    """`finish(error=None)`: the command ends, with the first error it met (if any)."""

    def finish(error: str | None = None) -> None:
        if error and state["error"] is None:
            state["error"] = error
        done.set()

    return finish


async def _run_listen(args: argparse.Namespace, room: str, nick: str) -> int:
    client = _client(args, nick, room)
    done = asyncio.Event()
    state = {"joined": False, "messages": 0, "error": None, "interrupted": False}

    finish = _finisher(state, done)

    out = _Output(lambda: finish())

    def emit(ev: Any) -> None:
        if done.is_set():
            return
        if isinstance(ev, E.RoomJoined):
            if ev.room != room:
                return
            if not state["joined"]:
                state["joined"] = True
                out.write(
                    {
                        "type": "joined",
                        "room": ev.room,
                        "nick": ev.nick,
                        "members": [m.nick for m in ev.members],
                        "topic": ev.topic,
                        "ts": time.time(),
                    }
                )
            else:
                log.info("rejoined #%s", ev.room)
            return
        if isinstance(ev, (*E.ROOM_EVENTS, E.RoomModerated)):
            # the room's events, and direct messages to us (their room is '@sender')
            dm = isinstance(ev, E.MessageReceived) and ev.room.startswith("@")
            if (ev.room != room and not dm) or (ev.history and not args.history):
                return
            obj = _event_json(ev)
            if obj is None:
                return
            out.write(obj)
            if obj["type"] == "message":
                state["messages"] += 1
                if args.count and state["messages"] >= args.count:
                    finish()
            return
        if isinstance(ev, E.Connected) and args.join is None:
            _say("listen", f"direct mode, listening on udp://{ev.address}")
            return
        _report(ev, "listen", finish)

    return await _drive(client, emit, done, state, args, "listen", _listen_timeout_error)


def _listen_timeout_error(args: argparse.Namespace, state: dict) -> str | None:
    if not args.count:
        return None
    if not state["joined"]:
        return f"timed out after {args.timeout:g}s without joining (is {_where(args)} up?)"
    return f"timed out after {args.timeout:g}s with {state['messages']} of {args.count} messages"


def _report(ev: Any, command: str, finish: Callable[[str | None], None]) -> None:
    """Events common to both clients: failures end the command, the rest is diagnostics."""
    if isinstance(ev, E.Refused):
        finish(f"refused: {ev.reason}")
    elif isinstance(ev, E.Kicked):
        finish(f"put out of #{ev.room} by {ev.by}" + (f": {ev.reason}" if ev.reason else ""))
    elif isinstance(ev, E.PassphraseNeeded):  # (a RelayClient answers it when it has one)
        finish(f"#{ev.room} has a passphrase: give it with --passphrase-file FILE")
    elif isinstance(ev, E.RequestRefused):
        if ev.what == "join":
            finish(f"cannot join #{ev.room}: {ev.reason}")
        else:
            _say(command, f"{ev.what} refused: {ev.reason}")
    elif isinstance(ev, E.ConnectionLost):
        # An unanswered handshake is retried quietly: the command's own timeout speaks for it.
        level = logging.INFO if ev.reason.startswith("no answer") else logging.WARNING
        log.log(level, "%s; retrying in %.1fs", ev.reason, ev.retry_in)
    elif isinstance(ev, E.Notice):
        log.warning("%s%s", f"#{ev.room}: " if ev.room else "", ev.text)
    else:
        log.debug("%s", ev)


async def _drive(
    client: Any,
    emit: Callable[[Any], None],
    done: asyncio.Event,
    state: dict,
    args: argparse.Namespace,
    command: str,
    timeout_error: Callable[[argparse.Namespace, dict], str | None],
    body: Callable[[], Any] | None = None,
) -> int:
    """Run `client` until `done` (or timeout / signal); close politely; map the outcome to a code."""
    loop = asyncio.get_running_loop()

    def interrupted() -> None:
        state["interrupted"] = True
        done.set()

    _on_signals(loop, interrupted)
    runner = asyncio.create_task(client.run(emit))
    runner.add_done_callback(lambda _t: done.set())
    extra = None
    if body is not None:

        async def guarded() -> None:
            try:
                await body()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # e.g. InputError from a post: one line, then stop
                if state["error"] is None:
                    state["error"] = str(exc) or exc.__class__.__name__
                done.set()

        extra = asyncio.create_task(guarded())
    try:
        await asyncio.wait_for(done.wait(), args.timeout)
    except TimeoutError:
        if state["error"] is None:
            state["error"] = timeout_error(args, state)
    finally:
        if extra is not None:
            extra.cancel()
        client.close()
        try:
            await asyncio.wait_for(runner, 1.0)
        except (TimeoutError, asyncio.CancelledError):
            pass
        except Exception as exc:  # never a traceback for the user
            log.debug("client ended with %r", exc)
            if state["error"] is None:
                state["error"] = f"{exc.__class__.__name__}: {exc}"
    if state["error"]:
        _say(command, state["error"])
        return 1
    return 0


# ----------------------------------------------------------------------------- history


async def _run_history(args: argparse.Namespace, room: str, nick: str) -> int:
    """Connect (no join), ask for one page, print it oldest first, exit."""
    client = relay_client(args, nick, [], room)
    done = asyncio.Event()
    state: dict = {"error": None, "interrupted": False, "asked": False, "connected": False}

    finish = _finisher(state, done)

    out = _Output(lambda: finish())

    def emit(ev: Any) -> None:
        if done.is_set():
            return
        if isinstance(ev, E.Connected):
            state["connected"] = True
            if not state["asked"]:
                state["asked"] = True
                client.page_back(room, args.before or 0, args.limit)
            return
        if isinstance(ev, E.HistoryPage):
            if ev.room != room:
                return
            for e in ev.events:
                obj = _event_json(e)
                if obj is not None:
                    out.write(obj)
            finish()
            return
        if isinstance(ev, E.RequestRefused) and ev.what in ("history", "join"):
            finish(f"history refused: {ev.reason}")
            return
        if isinstance(ev, E.PassphraseNeeded):
            finish(f"#{ev.room} has a passphrase: give it with --passphrase-file FILE")
            return
        _report(ev, "history", finish)

    def timeout_error(_args: argparse.Namespace, st: dict) -> str:
        if not st["connected"]:
            return f"timed out after {args.timeout:g}s without an answer from {_where(args)}"
        return f"timed out after {args.timeout:g}s waiting for the history of #{room}"

    return await _drive(client, emit, done, state, args, "history", timeout_error)


def _admin_keys(name: str) -> list[str]:
    """The fingerprints in an --admin-key file: one a line, blank lines and '#' comments skipped."""
    from .crypto import CryptoError, parse_fingerprint

    try:
        with open(name, encoding="utf-8") as f:
            lines = f.read(1 << 20).splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--admin-key {name}: {getattr(exc, 'strerror', None) or exc}") from None
    out = []
    for i, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if text:
            try:
                out.append(parse_fingerprint(text))
            except CryptoError as exc:
                raise UsageError(f"--admin-key {name} line {i}: {exc}") from None
    if not out:
        raise UsageError(f"--admin-key {name} lists no fingerprint")
    return out


# ----------------------------------------------------------------------------- register


async def _run_register(args: argparse.Namespace, nick: str) -> int:
    from .frames import OP_REGISTER

    identity = args.identity_key
    client = relay_client(args, nick, [])
    done = asyncio.Event()
    state: dict = {"error": None, "interrupted": False, "connected": False}
    finish = _finisher(state, done)

    def emit(ev: Any) -> None:
        if isinstance(ev, E.Connected):
            if not state["connected"]:
                state["connected"] = True
                client.moderate(OP_REGISTER, "", "")
        elif isinstance(ev, E.Registered):
            _say(
                "register", f"nick {ev.nick} is registered to your key {identity.fingerprint} on {args.join}"
            )
            finish()
        elif isinstance(ev, E.RequestRefused) and ev.what == "register":
            finish(f"register refused: {ev.reason}")
        else:
            _report(ev, "register", finish)

    def timeout_error(_args: argparse.Namespace, st: dict) -> str:
        if not st["connected"]:
            return f"no answer from {_where(args)} within {args.timeout:g}s"
        return f"timed out after {args.timeout:g}s waiting for the relay to register {nick}"

    return await _drive(client, emit, done, state, args, "register", timeout_error)


# ----------------------------------------------------------------------------- send


def _stdin_lines(loop: asyncio.AbstractEventLoop) -> asyncio.Queue:
    """Lines of stdin, read by a daemon thread (works for ttys, pipes and files; never blocks
    exit). None marks the end."""
    queue: asyncio.Queue = asyncio.Queue()

    def reader() -> None:
        # os.read on the raw descriptor, not sys.stdin: a daemon thread blocked inside a buffered
        # reader holds its lock, and interpreter shutdown then aborts the process.
        pending = b""
        try:
            fd = sys.stdin.fileno()
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:  # inherited a non-blocking descriptor
                    select.select([fd], [], [])
                    continue
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", "replace").rstrip("\r")
                    loop.call_soon_threadsafe(queue.put_nowait, line)
            if pending:
                line = pending.decode("utf-8", "replace").rstrip("\r")
                loop.call_soon_threadsafe(queue.put_nowait, line)
        except (OSError, ValueError, AttributeError, RuntimeError):
            pass
        finally:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, None)
            except RuntimeError:  # loop already closed
                pass

    threading.Thread(target=reader, name="udproom-stdin", daemon=True).start()
    return queue


async def _run_send(args: argparse.Namespace, room: str, nick: str, text: str | None) -> int:
    from .backend import OutboxFull

    client = _client(args, nick, room)
    done = asyncio.Event()
    joined = asyncio.Event()
    progress = asyncio.Event()  # an ack arrived
    state: dict = {
        "error": None,
        "interrupted": False,
        "posted": 0,
        "acked": 0,
        "all_posted": False,
        "joined": False,
    }
    pending: set[int] = set()
    line_no: dict[int, int] = {}  # local id -> which line (1-based) it carries

    finish = _finisher(state, done)

    def check_done() -> None:
        if state["all_posted"] and not pending:
            done.set()

    def not_delivered(local_id: int, reason: str) -> str:
        """Which line failed, and what a script needs to know about the others: how many were
        acknowledged (stored), and how many were sent but are not acknowledged yet (they may or may
        not be stored: `udproom history` tells)."""
        others = len(pending) - 1
        tail = f"; {others} more sent, not acknowledged" if others > 0 else ""
        which = line_no.get(local_id, "?")
        return f"line {which} was not delivered: {reason} ({state['acked']} acknowledged{tail})"

    def emit(ev: Any) -> None:
        if isinstance(ev, E.RoomJoined):
            if ev.room == room:
                state["joined"] = True
                joined.set()
        elif isinstance(ev, E.PostAcknowledged):
            if ev.local_id in pending:
                pending.discard(ev.local_id)
                state["acked"] += 1
                progress.set()
                check_done()
        elif isinstance(ev, E.PostFailed):
            if ev.local_id in pending:
                finish(not_delivered(ev.local_id, ev.reason))
        elif isinstance(ev, E.ROOM_EVENTS):
            pass
        elif isinstance(ev, E.Connected) and args.join is None:
            _say("send", f"direct mode, listening on udp://{ev.address}")
        else:
            _report(ev, "send", finish)

    async def body() -> None:
        await joined.wait()
        if args.join is None:
            # direct mode: first learn who is in the room (the peers we were given and everyone
            # they know), so every message goes to, and is acknowledged by, all of them
            state["joined"] = False
            await client.wait_ready(room)
            state["joined"] = True
        queue = None
        if text is None:
            queue = _stdin_lines(asyncio.get_running_loop())

        async def post(line: str) -> None:
            while True:
                if len(pending) < 1000:
                    try:
                        local_id = client.post(room, line)
                        break
                    except OutboxFull:
                        pass
                progress.clear()
                await progress.wait()
            pending.add(local_id)
            state["posted"] += 1
            line_no[local_id] = state["posted"]

        if queue is None:
            assert text is not None
            await post(text)
        else:
            while True:
                line = await queue.get()
                if line is None:
                    break
                if not line.strip():
                    continue
                try:
                    check_text(line)
                except InputError as exc:
                    finish(f"line {state['posted'] + 1}: {exc}")
                    return
                await post(line)
        state["all_posted"] = True
        check_done()

    def timeout_error(_args: argparse.Namespace, st: dict) -> str:
        if not st["joined"]:
            return f"no answer from {_where(args)} within {args.timeout:g}s"
        unacked = len(pending)
        if not st["all_posted"]:
            return f"timed out after {args.timeout:g}s while sending ({st['acked']} acknowledged)"
        return f"timed out after {args.timeout:g}s: {unacked} message(s) not acknowledged"

    code = await _drive(client, emit, done, state, args, "send", timeout_error, body)
    if code == 0 and state["interrupted"] and pending:
        _say("send", f"interrupted: {len(pending)} message(s) not acknowledged")
        return 1
    return code


# ----------------------------------------------------------------------------- search, log


def _open_chatlog() -> Any:
    from .chatlog import ChatLog
    from .paths import chatlog_path
    from .roomlog import StoreError

    try:
        return ChatLog.open_read_only(chatlog_path())
    except StoreError as exc:
        raise Failure(str(exc)) from None


def _run_search(args: argparse.Namespace, room: str | None) -> int:
    from .chatlog import format_line, search_dicts
    from .roomlog import StoreError

    with _open_chatlog() as chat:
        try:
            hits = chat.search(" ".join(args.words), limit=args.limit, room=room)
        except StoreError as exc:
            raise Failure(str(exc)) from None
    out = _Output(lambda: None)
    if args.json:
        for obj in search_dicts(hits):
            out.write(obj)
    else:
        for line in hits:
            out.write_text(format_line(line, room=True))
    if not hits:
        _say("search", "nothing matches")
    return 0


def _run_log(args: argparse.Namespace, room: str) -> int:
    from .roomlog import StoreError

    out = _Output(lambda: None)
    wrote = False
    with _open_chatlog() as chat:
        try:
            for text in chat.transcript(room, args.since):
                out.write_text(text)
                wrote = True
                if out.closed:
                    break
        except StoreError as exc:
            raise Failure(str(exc)) from None
    if not wrote:
        _say("log", f"the local log has no lines of {room if room.startswith('@') else '#' + room}")
    return 0


# ----------------------------------------------------------------------------- main


def _run(coro_fn: Callable[[], Any]) -> int:
    from .net.loop import run

    return run(coro_fn)


def main(argv: list[str] | None = None) -> int:
    """`udproom relay|listen|send ...`; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    command = argv[0] if argv and argv[0] in COMMANDS else None
    if command is not None:  # errors then point at 'udproom relay --help', not 'udproom --help'
        parser.prog = f"udproom {command}"
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help
            return int(exc.code or 0) if not isinstance(exc.code, str) else 2
        command = args.command
        _setup_logging(args.log_level)
        if command == "relay":
            parse_address(args.bind, allow_empty_host=True)
            args.identity_key = _relay_identity(args)
            args.argv = argv[argv.index("relay") + 1 :]  # (--workers: this command again, per worker)
            return _run(lambda: _run_relay(args))
        _read_passphrase(args)
        if command == "history":
            _relay_address(args.join)
            room, nick = _room_and_nick(args, history_nick)
            args.identity_key = _identity(args)
            return _run(lambda: _run_history(args, room, nick))
        if command == "register":
            _relay_address(args.join)
            try:
                nick = check_nick(args.nick)
            except InputError as exc:
                raise UsageError(str(exc)) from None
            args.identity_key = _identity(args)
            return _run(lambda: _run_register(args, nick))
        if command in ("search", "log"):
            try:
                room = _log_room(args.room) if args.room is not None else None
            except InputError as exc:
                raise UsageError(str(exc)) from None
            return _run_search(args, room) if command == "search" else _run_log(args, room or "")
        if args.join is not None:
            if args.listen is not None or args.peer:
                raise UsageError("--join (a relay) cannot be combined with --listen/--peer (direct mode)")
            _relay_address(args.join)
        elif args.listen is None and not args.peer:
            raise UsageError("say where the room is: --join HOST:PORT (a relay) or --listen/--peer (direct)")
        else:
            if args.listen is not None:
                parse_address(args.listen, allow_empty_host=True)
            for peer in args.peer:
                parse_address(peer)
        room, nick = _room_and_nick(args)
        args.identity_key = _identity(args)
        if command == "listen":
            return _run(lambda: _run_listen(args, room, nick))
        text = None
        if args.text:
            text = " ".join(args.text)
            try:
                check_text(text)
            except InputError as exc:
                raise Failure(str(exc)) from None
            if not text.strip():
                raise UsageError("the message is empty")
        return _run(lambda: _run_send(args, room, nick, text))
    except UsageError as exc:
        _say(command or "", str(exc)) if command else sys.stderr.write(f"udproom: {exc}\n")
        return 2
    except AddressError as exc:
        _say(command or "", str(exc))
        return 2
    except Failure as exc:
        _say(command or "", str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # last resort: one line, never a traceback
        logging.getLogger("udproom").debug("unexpected error", exc_info=True)
        _say(command or "", f"unexpected error: {exc.__class__.__name__}: {exc}")
        return 1


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


if __name__ == "__main__":
    sys.exit(main())
