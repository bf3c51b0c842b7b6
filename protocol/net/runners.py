"""Thin runners over the sans-IO cores: a relay server and a relay client (a `Backend`).

`CoreClient` holds what any `Backend` over one core and one socket needs (run loop, command
forwarding, polite close); `RelayClient` adds resolving the relay and connect + join. A
direct-mode client is the same shape: subclass `CoreClient` with its own `_open` (bind the
listening socket) and `_start` (add the seed peers, join).

Both run inside whatever asyncio loop is current (the TUI hosts a relay in Textual's own loop),
and use one `CoreProtocol` each. Time given to the cores is `time.monotonic()`; wall-clock stamps
come from `wall_offset = time.time() - time.monotonic()`, fixed at start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from ..addr import format_sockaddr
from ..events import Connected, Event, HistoryPage, KeyPinned, Refused, RequestRefused
from ..pins import KeyPins
from ..reliability import Timing
from .address import (
    AddressError,
    format_address,
    local_addresses,
    parse_address,
    parse_addresses,
    resolve_all,
)
from .transport import CoreProtocol, bind_socket, bound_host, client_socket, open_core

log = logging.getLogger("udproom.net")


def wall_offset() -> float:
    return time.time() - time.monotonic()


def pinned_address(text: str) -> tuple[str, str | None]:
    """`HOST:PORT#FINGERPRINT` -> ("HOST:PORT", the fingerprint); without `#`: (text, None).
    A fingerprint that is not one raises AddressError (one line)."""
    from ..crypto import CryptoError, split_pinned_address

    try:
        return split_pinned_address(text)
    except CryptoError as exc:
        raise AddressError(f"{text!r}: the relay's key after '#': {exc}") from None


class RelayServer:
    """A relay on a UDP socket. `bind` is '[HOST]:PORT' (':6000' = every interface, port 0 = any)."""

    def __init__(
        self,
        bind: str = ":6000",
        config: Any = None,
        *,
        on_event: Callable[[Any], None] | None = None,
        log: Any = None,
        names: Any = None,
        reuse_port: bool = False,
    ) -> None:
        self.bind = bind
        self.reuse_port = reuse_port  # SO_REUSEPORT: one of `relay --workers`
        #: nick claims across a cluster's relays (jetstream.ClusterNicks), with a cluster's log
        self.names = names
        self.config = config
        self.on_event = on_event
        #: the room log (protocol/roomlog.py) the relay keeps rooms in; None: in memory. The
        #: server owns it: `stop` closes it.
        self.log = log
        self.host, self.port = parse_address(bind, allow_empty_host=True)
        self.relay: Any = None
        self.protocol: CoreProtocol | None = None
        self._bound_host = self.host

    async def start(self) -> tuple[str, int]:
        """Bind and start serving; returns the bound (host, port). Raises AddressError."""
        from ..relay import Relay, RelayConfig

        config = self.config if self.config is not None else RelayConfig()
        if getattr(config, "wall_offset", None) == 0.0:
            config = dataclasses.replace(config, wall_offset=wall_offset())
        self.relay = Relay(config, self.log, self.names)
        sock = bind_socket(self.host, self.port, self.reuse_port)
        try:
            self.protocol = proto = await open_core(self.relay, sock, self._event, name="relay")
        except BaseException:
            sock.close()
            raise
        loop = asyncio.get_running_loop()

        def wakeup() -> None:  # from the NATS thread: a commit completed, the feed has events
            try:
                loop.call_soon_threadsafe(proto.kick)
            except RuntimeError:  # (the loop is closed: we are stopping)
                pass

        self.relay.set_wakeup(wakeup)
        name = sock.getsockname()
        self._bound_host = bound_host(sock)
        self.port = name[1]
        log.info("relay listening on udp://%s", format_address(self._bound_host, self.port))
        return self._bound_host, self.port

    @property
    def address(self) -> str:
        """'host:port' as bound ('[::]:6000' for a dual-stack every-interface bind)."""
        return format_address(self._bound_host, self.port)

    def addresses(self) -> list[str]:
        """'host:port' strings others can use to reach this relay (see `local_addresses`)."""
        return local_addresses(self._bound_host, self.port)

    @property
    def stats(self) -> dict[str, int]:
        out = dict(self.relay.stats) if self.relay is not None else {}
        if self.protocol is not None:
            out.update({f"socket_{k}": v for k, v in self.protocol.stats.items()})
        return out

    def _event(self, event: Any) -> None:
        log.info("relay: %s", event)
        if self.on_event is not None:
            self.on_event(event)

    async def stop(self) -> None:
        """Say goodbye to every session, send it, close the socket."""
        proto, self.protocol = self.protocol, None
        if proto is None:
            if self.log is not None:
                self.log.close()
            return
        if proto.transport is not None:
            try:
                self.relay.shutdown(time.monotonic())
            except Exception:
                log.exception("relay: shutdown failed")
            proto.flush()
        proto.close()
        await proto.wait_closed(1.0)
        if self.log is not None:
            self.log.close()

    async def __aenter__(self) -> RelayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class CoreClient:
    """`Backend` plumbing shared by clients that drive one sans-IO core over one socket.

    Subclasses provide `mode`, `_open()` (resolve, make the socket: raise AddressError on
    failure, which `run` emits as `Refused`) and `_start(now)` (first commands to the core, e.g.
    connect and join). Commands go straight to the core with `time.monotonic()` and schedule one
    flush; the core's errors (InputError, OutboxFull) reach the caller unchanged.
    """

    name = "client"

    def __init__(self, core: Any, nick: str, driven: Any = None) -> None:
        self.core = core
        #: what the transport drives: the core itself, or a wrapper around it (tests' impairment)
        self._driven = core if driven is None else driven
        self._nick = nick
        self.protocol: CoreProtocol | None = None
        self._emit: Callable[[Event], None] | None = None
        self._stop = asyncio.Event()
        self._running = False

    @property
    def mode(self) -> str:  # pragma: no cover - subclasses say
        raise NotImplementedError

    async def _open(self) -> Any:  # pragma: no cover - subclasses say
        raise NotImplementedError

    def _start(self, now: float) -> None:  # pragma: no cover - subclasses say
        raise NotImplementedError

    def _opened(self, sock: Any) -> None:
        """Called once the socket is open and driven (subclasses record where it is bound)."""

    async def _astart(self) -> None:
        """First commands; a subclass that must await (resolving peers) overrides this."""
        self._start(time.monotonic())

    # ------------------------------------------------------------------ Backend

    @property
    def nick(self) -> str:
        return getattr(self.core, "nick", None) or self._nick

    async def run(self, emit: Callable[[Event], None]) -> None:
        self._emit = emit
        try:
            sock = await self._open()
        except AddressError as exc:
            emit(Refused(str(exc)))
            return
        try:
            self.protocol = proto = await open_core(self._driven, sock, self._on_event, name=self.name)
        except BaseException:
            sock.close()
            raise
        self._opened(sock)
        self._running = True
        try:
            await self._astart()
            proto.flush()
            await self._stop.wait()
        finally:
            self._running = False
            if proto.transport is not None:
                try:
                    self.core.close(time.monotonic())
                except Exception:
                    log.exception("%s: close failed", self.name)
                proto.flush()
            proto.close()
            try:
                await proto.wait_closed(0.5)
            except asyncio.CancelledError:
                pass

    def _on_event(self, event: Event) -> None:
        if self._emit is not None:
            self._emit(event)

    def _kick(self) -> None:
        if self.protocol is not None:
            self.protocol.kick()

    def join(self, room: str) -> None:
        self.core.join(room, time.monotonic())
        self._kick()

    def part(self, room: str) -> None:
        self.core.part(room, time.monotonic())
        self._kick()

    def post(self, room: str, text: str, action: bool = False) -> int:
        local_id = self.core.post(room, text, time.monotonic(), action=action)
        self._kick()
        return local_id

    def retry(self, local_id: int) -> int:
        new_id = self.core.retry(local_id, time.monotonic())
        self._kick()
        return new_id

    def set_nick(self, nick: str) -> None:
        self.core.set_nick(nick, time.monotonic())
        self._kick()

    def set_topic(self, room: str, topic: str) -> None:
        self.core.set_topic(room, topic, time.monotonic())
        self._kick()

    def set_away(self, message: str) -> None:
        self.core.set_away(message, time.monotonic())
        self._kick()

    def moderate(self, op: int, room: str, text: str) -> None:
        """A moderation request (`ClientSession.moderate`); a core without a relay to enforce it
        (direct mode) refuses it at once."""
        moderate = getattr(self.core, "moderate", None)
        if moderate is None:
            from ..frames import MODERATION_OPS

            self._on_event(
                RequestRefused(MODERATION_OPS.get(op, "request"), room, "direct mode has no operators")
            )
            return
        moderate(op, room, text, time.monotonic())
        self._kick()

    def page_back(self, room: str, before: int, limit: int) -> None:
        """The core pages back (a relay client asks the relay); a core that keeps no history to
        page through (direct mode today) answers at once with an empty, complete page."""
        page = getattr(self.core, "page_back", None)
        if page is None:
            self._on_event(HistoryPage(room, before, (), True))
            return
        page(room, before, limit, time.monotonic())
        self._kick()

    def close(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------ extras for the commands

    @property
    def pending_posts(self) -> int:
        return self.core.pending_posts

    @property
    def running(self) -> bool:
        return self._running


class RelayClient(CoreClient):
    """A `Backend` (see protocol/backend.py) for relay mode: one session with one relay.

    Reconnection with backoff, rejoining rooms and resending unacknowledged posts are the core's
    (ClientSession) job; this only feeds it datagrams and timers. `address` is parsed at once
    (AddressError); resolving happens in `run`, and a failure there is emitted as `Refused`.

    `address` may name several relays of one cluster (`a:6000,b:6000`), and a name may have
    several addresses: the core fails over to the next when its relay stops answering (those of
    the first address's family: one socket).
    """

    name = "client"

    def __init__(
        self,
        address: str,
        nick: str,
        rooms: list[str] | tuple[str, ...] = (),
        timing: Timing | None = None,
        *,
        identity: Any = None,
        known: Any = None,
        known_keys: str | os.PathLike | None = None,
        passphrases: dict[str, str] | None = None,
    ) -> None:
        """`passphrases`: room -> passphrase, for passphrase rooms (docs/security.md): each of
        `rooms` named here is made with it if new, else joined with it; a room asking for one
        later (`PassphraseNeeded`) is answered with it, or the event goes to the caller.

        `address` may pin the relay's key: `HOST:PORT#FINGERPRINT`. `identity`: the user's
        `crypto.Identity` (None: one made for this session). `known`: a `pins.KnownRelays`
        store (trust on first use): its pin for the address is insisted on, and a first
        connection pins the key the relay proved. None: no store (the address's pin only).
        `known_keys`: the file of members' keys pinned per relay (`paths.known_keys_path()`; this
        relay's are `pins.KeyPins` scoped to its address; raises pins.PinFileError if it cannot be
        read). None: kept for this run only."""
        from ..client import ClientSession
        from ..names import canonical_room

        address, pin = pinned_address(address)
        self.targets = parse_addresses(address)
        self.host, self.port = self.targets[0]
        self._relays: list[tuple] = []
        self.known = known
        self.pin = pin or (known.get(self.address) if known is not None else None)
        self._rooms = list(rooms)
        self._addr: tuple | None = None
        self.passphrases = {canonical_room(r): p for r, p in (passphrases or {}).items()}
        pins = KeyPins.load(known_keys, self.address) if known_keys is not None else None
        core = ClientSession(
            nick, timing=timing, wall_offset=wall_offset(), identity=identity, pinned=self.pin, key_pins=pins
        )
        super().__init__(core, nick)

    @property
    def address(self) -> str:
        """The relay's address, as keys are pinned under it."""
        return format_address(self.host, self.port)

    def key_of(self, room: str, nick: str) -> bytes | None:
        """`nick`'s identity key as the relay announced it (in `room`, or any room: ""), or None."""
        return self.core.key_of(room, nick)

    def _on_event(self, event: Event) -> None:
        from ..events import PassphraseNeeded, RoomJoined

        if isinstance(event, PassphraseNeeded) and event.room in self.passphrases:
            self.unlock(event.room, self.passphrases[event.room], event.salt, event.ops, event.mem)
            return
        if isinstance(event, (RequestRefused, RoomJoined, HistoryPage)):
            # refused: a wrong one is not tried again; taken: the core keeps the verifier, and
            # the passphrase itself is not kept a moment longer than needed
            self.passphrases.pop(event.room, None)
        if isinstance(event, KeyPinned):  # (the core's pins wrote it through)
            if self.core.key_pins.write_error:
                log.warning("a member's key kept in memory only: %s", self.core.key_pins.write_error)
            return
        if isinstance(event, Connected) and event.relay_key and self.known is not None and self.pin is None:
            from ..crypto import fingerprint

            self.pin = fingerprint(event.relay_key)
            self.core.pinned = self.pin  # a reconnect insists on it too
            try:
                self.known.remember(self.address, self.pin)
            except Exception as exc:  # (PinFileError) not pinned, but the session is fine
                log.warning("relay key not remembered: %s", exc)
        elif isinstance(event, Refused) and self.core.pin_refused and self.known is not None:
            event = Refused(
                f"{event.reason}; if its key really changed, delete {self.address} from {self.known.path}"
            )
        super()._on_event(event)

    @property
    def mode(self) -> str:
        """'relay HOST:PORT', the one it is on when there are several, and whether it failed over."""
        where = format_address(self.host, self.port)
        if len(self._relays) > 1 and self.core.addr is not None:
            where = format_sockaddr(self.core.addr)
        failed = self.core.failed_from
        return f"relay {where}" + (f" (failed over from {failed})" if failed else "")

    async def _open(self) -> Any:
        found: list[tuple] = []
        error: AddressError | None = None
        for host, port in self.targets:  # a name that does not resolve is skipped, unless all fail
            try:
                found += [a for a in await resolve_all(host, port) if a not in found]
            except AddressError as exc:
                error = error or exc
        if not found:
            raise error or AddressError("no relay address")
        self._addr = found[0]
        self._relays = [a for a in found if len(a) == len(found[0])]  # one socket: one family
        return client_socket(self._addr)

    def _start(self, now: float) -> None:
        from ..names import canonical_room

        self.core.relays = self._relays
        self.core.connect(self._addr, now)
        for room in self._rooms:
            if canonical_room(room) in self.passphrases:
                self.join_private(room, self.passphrases[canonical_room(room)])
            else:
                self.core.join(room, now)

    # ------------------------------------------------------------------ passphrase rooms
    # Argon2id takes a third of a second and 128 MiB: it runs in a worker thread, never on the
    # loop; its result goes to the core on the loop (protocol/vault.py).

    def _derive_then(
        self, room: str, what: str, work: Callable[[], Any], then: Callable[[Any], None]
    ) -> None:
        from ..crypto import CryptoError
        from ..events import RequestRefused

        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, work)

        def done(f: asyncio.Future) -> None:
            try:
                result = f.result()
            except CryptoError as exc:
                self._on_event(RequestRefused(what, room, str(exc)))
                return
            if self._running:
                then(result)
                self._kick()

        future.add_done_callback(done)

    def join_private(self, room: str, passphrase: str) -> None:
        """Join `room` with a passphrase: made a passphrase room if it is new."""
        from .. import vault
        from ..crypto import ARGON_MEM, ARGON_OPS
        from ..names import canonical_room

        name = canonical_room(room)
        self.passphrases[name] = passphrase
        self._derive_then(
            name,
            "join",
            lambda: vault.create(passphrase, ARGON_OPS, ARGON_MEM),
            lambda got: self.core.create_private(name, got[0], got[1], time.monotonic()),
        )

    def unlock(self, room: str, passphrase: str, salt: bytes, ops: int, mem: int) -> None:
        """The answer to a `PassphraseNeeded(room, salt, ops, mem)`."""
        from .. import vault

        self.passphrases[room] = passphrase
        check = self.core.kdf_check
        self._derive_then(
            room,
            "join",
            lambda: vault.derive(passphrase, salt, ops, mem, check),
            lambda keys: self.core.unlock(room, keys, time.monotonic()),
        )

    def change_passphrase(self, room: str, passphrase: str) -> None:
        """Re-key passphrase room `room` (its creator): members in it keep reading."""
        from .. import vault
        from ..crypto import ARGON_MEM, ARGON_OPS

        self._derive_then(
            room,
            "passphrase",
            lambda: vault.create(passphrase, ARGON_OPS, ARGON_MEM),
            lambda got: self.core.change_passphrase(room, got[0], got[1], time.monotonic()),
        )
