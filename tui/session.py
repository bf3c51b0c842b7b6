"""What to connect to (`Spec`), checked up front, and building the real backends for it.

No textual here, so the command line can check flags without importing it. The network runners
are imported lazily, inside functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from udproom.protocol.cli import login_nick
from udproom.protocol.names import InputError, canonical_room, check_nick

DEFAULT_PORT = 6000


class SpecError(ValueError):
    """A bad address, nick or room; str() is one line."""


@dataclass
class Spec:
    mode: str  # "host" (embedded relay + join it), "join" (a relay), "direct" (peers)
    address: str = ""  # host: bind address; join: relay address; direct: listen address ("" = any)
    nick: str = ""
    rooms: list[str] = field(default_factory=lambda: ["lobby"])
    peers: list[str] = field(default_factory=list)  # direct mode
    identity: str = ""  # the user's identity key file ("" = the one in the user data directory)


def parse_addr(text: str, *, bind: bool = False) -> tuple[str, int]:
    """(host, port) of an address; a relay's may pin its key, `HOST:PORT#FINGERPRINT`."""
    from udproom.protocol.net.address import AddressError, parse_address
    from udproom.protocol.net.runners import pinned_address

    try:
        return parse_address(pinned_address(text)[0], DEFAULT_PORT, allow_empty_host=bind)
    except AddressError as e:
        raise SpecError(str(e)) from None


def check(spec: Spec) -> Spec:
    """Validate and normalise a spec; raises SpecError with a one-line reason."""
    if spec.mode not in ("host", "join", "direct"):
        raise SpecError(f"unknown mode {spec.mode!r}")
    try:
        nick = check_nick(spec.nick or login_nick())
        rooms = []
        for r in spec.rooms or ["lobby"]:
            c = canonical_room(r)
            if c not in rooms:
                rooms.append(c)
    except InputError as e:
        raise SpecError(str(e)) from None
    address = spec.address.strip()
    if spec.mode == "join":
        if not address:
            raise SpecError("give the relay's address, e.g. 192.168.1.5:6000")
        from udproom.protocol.net.address import AddressError, parse_addresses

        try:  # (several relays of a cluster: a:6000,b:6000)
            parse_addresses(address, DEFAULT_PORT)
        except AddressError as e:
            raise SpecError(str(e)) from None
    elif spec.mode == "host":
        address = address or f":{DEFAULT_PORT}"
        parse_addr(address, bind=True)
    else:
        if address:
            parse_addr(address, bind=True)
        for p in spec.peers:
            parse_addr(p)
    return Spec(spec.mode, address, nick, rooms, list(spec.peers), spec.identity)


def identity(spec: Spec):
    """The user's identity key for `spec` (made on first use); SpecError (one line) for a key
    file others can read or that is not a key."""
    from udproom.protocol import paths
    from udproom.protocol.crypto import IdentityFileError, load_or_create_identity

    try:
        return load_or_create_identity(spec.identity or paths.identity_path())
    except IdentityFileError as e:
        raise SpecError(str(e)) from None


def relay_identity():
    """The key of the relay the app hosts: the one `udproom relay` keeps in the same data
    directory, so its clients' pins hold whichever of the two runs it."""
    from udproom.protocol import paths
    from udproom.protocol.crypto import IdentityFileError, load_or_create_identity

    try:
        return load_or_create_identity(paths.relay_identity_path())
    except IdentityFileError as e:
        raise SpecError(str(e)) from None


def relay_client(address: str, spec: Spec, timing=None):
    from udproom.protocol import paths
    from udproom.protocol.net import runners
    from udproom.protocol.pins import KnownRelays, PinFileError

    try:
        return runners.RelayClient(
            address,
            spec.nick,
            list(spec.rooms),
            timing=timing,
            identity=identity(spec),
            known=KnownRelays(paths.known_relays_path()),
            known_keys=paths.known_keys_path(),
        )
    except PinFileError as e:
        raise SpecError(str(e)) from None


def connect_host_for(bind_host: str) -> str:
    """Where our own client reaches the relay we host."""
    if bind_host in ("", "0.0.0.0", "*"):
        return "127.0.0.1"
    if bind_host == "::":
        return "::1"
    return bind_host


async def resolvable(address: str) -> None:
    """Raise SpecError saying what happened if `address` does not resolve (nothing was contacted,
    so nothing refused anything)."""
    from udproom.protocol.net.address import AddressError, parse_addresses, resolve

    try:  # (several relays of a cluster: one that resolves is enough)
        targets = parse_addresses(address, DEFAULT_PORT)
    except AddressError as e:
        raise SpecError(str(e)) from None
    error: AddressError | None = None
    for host, port in targets:
        try:
            await resolve(host, port)
            return
        except AddressError as e:
            error = error or e
    raise SpecError(f"{error}: no relay was contacted — check the address (HOST:PORT)")


async def build(spec: Spec, timing=None):
    """Start what `spec` needs. Returns (backend, server or None, share addresses).

    `timing` (a `udproom.protocol.reliability.Timing`) tunes retransmission, keepalives and
    presence timeouts of everything started here (the embedded relay in host mode, the client,
    the peer); None keeps the shipped defaults. Tests use it to run presence in milliseconds.

    Raises OSError (port in use...) or SpecError; the caller shows it on screen.
    """
    from udproom.protocol.net import runners
    from udproom.protocol.net.address import format_address

    if spec.mode == "host":
        from udproom.protocol.relay import RelayConfig

        config = RelayConfig(timing=timing) if timing is not None else RelayConfig()
        config.identity = relay_identity()
        from udproom.protocol.roomlog import LogInUse, StoreError, open_log

        try:  # the hosted relay keeps its rooms where `udproom relay` does (the user data directory)
            room_log = open_log()
        except LogInUse as exc:  # the app has no --data: the data directory is chosen by environment
            raise SpecError(
                f"{exc}; host from another data directory: UDPROOM_DATA_DIR=DIR udproom --host …"
            ) from None
        except StoreError as exc:
            raise SpecError(str(exc)) from None
        server = runners.RelayServer(spec.address, config, log=room_log)
        try:
            bound_host, bound_port = await server.start()
        except BaseException:
            room_log.close()
            raise
        share = list(server.addresses())
        joined_at = format_address(connect_host_for(bound_host), bound_port)
        fp = config.identity.fingerprint  # our own relay: its key is known, not trusted on first use
        try:
            client = relay_client(f"{joined_at}#{fp}", spec, timing)
        except BaseException:
            await server.stop()
            raise
        return client, server, share
    if spec.mode == "join":
        await resolvable(spec.address)
        return relay_client(spec.address, spec, timing), None, []
    from udproom.protocol.net.peer import PeerClient as peer_client
    from udproom.protocol.pins import PinFileError

    try:  # the user's identity key (--identity, or its default home) and nick pins
        peer = peer_client(
            spec.address or None,
            list(spec.peers),
            spec.nick,
            list(spec.rooms),
            timing=timing,
            identity=identity(spec),
        )
    except PinFileError as exc:
        raise SpecError(str(exc)) from None
    return peer, None, []
