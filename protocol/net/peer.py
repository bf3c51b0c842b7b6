"""The direct-mode runner: a `Backend` (protocol/backend.py) over the sans-IO `PeerNode`.

One UDP socket, driven by the generic `CoreProtocol` adapter. `listen` is '[HOST]:PORT' (None or
'' = every interface, an ephemeral port); `peers` are 'HOST:PORT' strings to contact. Peers
revealed by gossip are reached at the address other peers see them at; `addr_map` adapts those
to this socket's family (IPv4 addresses become '::ffff:a.b.c.d' on a dual-stack IPv6 socket).

`core_wrapper` puts a layer with the core's surface between the socket and the core (the tests'
seeded impairment: a proxy would be bypassed as soon as gossip reveals real addresses).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from .. import paths
from ..crypto import Identity, load_or_create_identity
from ..events import Connected, Notice
from ..names import check_nick
from ..peer import PeerNode
from ..pins import KeyPins
from ..reliability import Timing
from .address import AddressError, format_address, local_addresses, parse_address, resolve
from .runners import CoreClient, wall_offset
from .transport import bind_socket, bound_host

log = logging.getLogger("udproom.net")


def addr_mapper(family: int) -> Callable[[str, int], tuple | None]:
    """Gossiped (host, port) -> an address a socket of `family` can send to (None if it cannot)."""

    def mapped(host: str, port: int) -> tuple | None:
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return None  # gossip carries literal addresses only
        if family == socket.AF_INET6:
            return (f"::ffff:{ip}" if ip.version == 4 else host, port)
        if ip.version == 4:
            return (host, port)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            return (str(ip.ipv4_mapped), port)
        return None

    return mapped


class PeerClient(CoreClient):
    """A `Backend` for direct mode: no relay, each pair of peers talks directly."""

    name = "peer"

    def __init__(
        self,
        listen: str | None,
        peers: list[str] | tuple[str, ...] = (),
        nick: str = "guest",
        rooms: list[str] | tuple[str, ...] = (),
        timing: Timing | None = None,
        *,
        history: int = 100,
        core_wrapper: Callable[[Any], Any] | None = None,
        identity: Identity | None = None,
        pins: KeyPins | None = None,
    ) -> None:
        """`identity`: the user's key (default: the one in `paths.identity_path()`, made on first
        use; raises crypto.IdentityFileError with a one-line reason if it cannot be used);
        `pins`: nick <-> key pins (default: `known_peers.toml` in the config directory; raises
        pins.PinFileError if it cannot be read)."""
        self.host, self.port = parse_address(listen or ":0", allow_empty_host=True)
        self._peers = [parse_address(p) for p in peers]
        self._peer_text = list(peers)
        self._rooms = list(rooms)
        if identity is None:
            identity = load_or_create_identity(paths.identity_path())
        if pins is None:
            pins = KeyPins.load(paths.known_peers_path())
        core = PeerNode(
            check_nick(nick),
            timing=timing,
            wall_offset=wall_offset(),
            history=history,
            identity=identity,
            pins=pins,
        )
        driven = core_wrapper(core) if core_wrapper is not None else core
        super().__init__(core, nick, driven)
        self._bound_host = self.host
        self._family = socket.AF_INET
        self.bound = asyncio.Event()

    def key_of(self, room: str, nick: str) -> bytes | None:
        """`nick`'s identity key as its link proved it, or None."""
        return self.core.key_of(room, nick)

    @property
    def mode(self) -> str:
        n = self.core.peer_count
        return f"direct, {n} peer{'' if n == 1 else 's'}"

    @property
    def address(self) -> str:
        """Where this peer listens, 'host:port' as bound."""
        return format_address(self._bound_host, self.port)

    def addresses(self) -> list[str]:
        """'host:port' strings others can use to peer with us."""
        return local_addresses(self._bound_host, self.port)

    async def _open(self) -> Any:
        sock = bind_socket(self.host, self.port)
        self._family = sock.family
        self.core.addr_map = addr_mapper(sock.family)
        return sock

    def _opened(self, sock: Any) -> None:
        self._bound_host = bound_host(sock)
        self.port = sock.getsockname()[1]
        self.bound.set()

    async def _astart(self) -> None:
        emit = self._on_event
        emit(Connected(self.address, self.core.nick))
        now = time.monotonic()
        for room in self._rooms:
            self.core.join(room, now)
        mapper = addr_mapper(self._family)
        for (host, port), text in zip(self._peers, self._peer_text, strict=False):
            try:
                addr = await resolve(host, port)
            except AddressError as exc:
                emit(Notice(f"peer {text}: {exc}"))
                continue
            mapped = mapper(addr[0], addr[1])
            if mapped is None:
                emit(Notice(f"peer {text}: not reachable from a socket bound to {self.address}"))
                continue
            self.core.add_peer(mapped, time.monotonic())

    def add_peer(self, address: str) -> None:
        """Contact another peer ('HOST:PORT', a literal address) while running."""
        host, port = parse_address(address)
        if self.protocol is None or self.protocol.transport is None:
            self._peers.append((host, port))
            self._peer_text.append(address)
            return
        mapped = addr_mapper(self._family)(host, port)
        if mapped is None:
            raise AddressError(f"{address} is not a literal address this socket can reach")
        self.core.add_peer(mapped, time.monotonic())
        self._kick()

    def serve_history(self, read) -> None:
        """Answer history from a durable log too (`PeerNode.serve_history`; the app passes
        `chatlog.peer_history`). The read runs on this loop: a page of at most 100 lines."""
        self.core.serve_history(read)

    # ------------------------------------------------------------------ extras for the commands

    def members(self, room: str) -> list[str]:
        return self.core.members(room)

    def ready(self, room: str) -> bool:
        """Membership has converged: the contacts we were given answered (at least one of them is
        in the room, when any were given) and no handshake or room question is outstanding."""
        if not self._running:
            return False
        if self._peers and len(self.core.members(room)) < 2:
            return False
        return self.core.settled()

    async def wait_ready(self, room: str, poll: float = 0.01) -> None:
        """Wait until `ready(room)`; the caller bounds the wait (the commands' --timeout)."""
        while not self.ready(room):
            await asyncio.sleep(poll)
