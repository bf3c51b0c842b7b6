"""One asyncio DatagramProtocol adapter that drives any sans-IO core.

A core has the aioquic shape (its QuicConnection): `receive_datagram(data, addr, now)`,
`datagrams_to_send(now) -> [(bytes, addr)]`, `get_timer() -> float | None`, `handle_timer(now)`
and `next_event() -> event | None`. Time is `time.monotonic()`.

After every batch of input (the datagrams the loop hands over in one iteration, a timer, or a
command such as `post`) the adapter does one *flush*: drain the core's events to the callback,
send what it wants sent, and re-arm exactly one timer from `get_timer()`. Flushes are deferred
with `call_soon`, so datagrams that arrive together are fed in before anything is sent (that is
what lets the relay coalesce its answers).

Nothing that happens on the socket may stop the loop: send errors (ICMP unreachable arrives as
ConnectionRefusedError on some platforms), bad addresses from the core and exceptions from the
core itself are logged and counted.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol

from .address import ANY_HOSTS, AddressError

log = logging.getLogger("udproom.net")

#: "Address already in use": the platform's errno (Windows sockets report their WSA code)
_ADDR_IN_USE = frozenset({errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", errno.EADDRINUSE)})

#: Socket buffer sizes to try, largest first (the kernel may clamp silently; we read it back).
BUFFER_SIZES = (8 << 20, 4 << 20, 1 << 20)


class Core(Protocol):
    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None: ...

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...

    def next_event(self) -> Any: ...


def set_buffers(sock: socket.socket, sizes: tuple[int, ...] = BUFFER_SIZES) -> tuple[int, int]:
    """Ask for large receive and send buffers; returns what the kernel granted (rcv, snd)."""
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        for size in sizes:
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, size)
                break
            except OSError:
                continue
    try:
        return (
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
        )
    except OSError:  # pragma: no cover
        return (0, 0)


def _new_socket(family: int) -> socket.socket:
    return socket.socket(family, socket.SOCK_DGRAM, socket.IPPROTO_UDP)


def bind_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A non-blocking UDP socket bound to host:port (with `reuse_port`, SO_REUSEPORT: several
    processes share the port, the kernel hashing each client to one of them: `relay --workers`).

    Every-interface hosts ('', '::', '*') get one dual-stack IPv6 socket where the platform has
    it (IPv4 clients then appear as ::ffff:a.b.c.d), else ('' and '*') IPv4 '0.0.0.0'.
    '0.0.0.0' is IPv4 only. Raises AddressError with
    a one-line reason (port in use, address not on this machine...).
    """
    candidates: list[tuple[int, tuple]] = []
    if host in ("", "::", "*"):
        if socket.has_ipv6:
            candidates.append((socket.AF_INET6, ("::", port, 0, 0)))
        if host != "::":
            candidates.append((socket.AF_INET, ("0.0.0.0", port)))
    elif host == "0.0.0.0":
        candidates.append((socket.AF_INET, ("0.0.0.0", port)))
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
        except (socket.gaierror, UnicodeError) as exc:
            raise AddressError(f"cannot resolve {host!r}: {getattr(exc, 'strerror', None) or exc}") from None
        seen = set()
        for family, _t, _p, _c, sockaddr in sorted(infos, key=lambda i: i[0] != socket.AF_INET):
            if family in (socket.AF_INET, socket.AF_INET6) and sockaddr not in seen:
                seen.add(sockaddr)
                candidates.append((family, sockaddr))
    last: OSError | None = None
    for family, sockaddr in candidates:
        try:
            sock = _new_socket(family)
        except OSError as exc:
            last = exc
            continue
        try:
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6 and sockaddr[0] == "::":
                try:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                except (OSError, AttributeError):
                    pass
            sock.bind(sockaddr)
        except OSError as exc:
            sock.close()
            last = exc
            if exc.errno in _ADDR_IN_USE:
                break
            continue
        sock.setblocking(False)
        set_buffers(sock)
        return sock
    where = f"{host or '*'}:{port}"
    if last is None:
        raise AddressError(f"cannot bind {where}: no usable address")
    if last.errno in _ADDR_IN_USE:
        raise AddressError(f"cannot bind {where}: the port is already in use")
    raise AddressError(f"cannot bind {where}: {last.strerror or last}")


def client_socket(remote: tuple) -> socket.socket:
    """A non-blocking UDP socket on an ephemeral port, of the family that reaches `remote`."""
    family = socket.AF_INET6 if len(remote) >= 4 or ":" in str(remote[0]) else socket.AF_INET
    sock = _new_socket(family)
    try:
        sock.bind(("::", 0, 0, 0) if family == socket.AF_INET6 else ("0.0.0.0", 0))
    except OSError as exc:
        sock.close()
        raise AddressError(f"cannot open a UDP socket: {exc.strerror or exc}") from None
    sock.setblocking(False)
    set_buffers(sock)
    return sock


class CoreProtocol(asyncio.DatagramProtocol):
    """Drives one sans-IO `core` from one UDP socket. `on_event(event)` gets every core event."""

    def __init__(
        self,
        core: Core,
        on_event: Callable[[Any], None] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        name: str = "udproom",
    ) -> None:
        self.core = core
        self.on_event = on_event
        self.clock = clock
        self.name = name
        self.transport: asyncio.DatagramTransport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._flush_handle: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._paused = False
        self._v6 = False
        self._ok_addrs: set[tuple] = set()  # addresses already checked
        self._closed: asyncio.Future[None] | None = None
        self.stats = {
            "received": 0,
            "sent": 0,
            "send_errors": 0,
            "dropped_paused": 0,
            "core_errors": 0,
            "callback_errors": 0,
        }

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        self._v6 = sock is not None and sock.family == socket.AF_INET6
        self.loop = asyncio.get_running_loop()
        self._closed = self.loop.create_future()
        self.flush()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.stats["received"] += 1
        try:
            self.core.receive_datagram(data, addr, self.clock())
        except Exception:
            self.stats["core_errors"] += 1
            log.exception("%s: core failed on a datagram from %s", self.name, addr)
        self.kick()

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable while the relay restarts...): the core's own timers deal
        # with silence, so this is only worth a debug line.
        self.stats["send_errors"] += 1
        log.debug("%s: socket error: %s", self.name, exc)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self.transport = None
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    # ------------------------------------------------------------------ driving the core

    def kick(self) -> None:
        """Schedule one flush for the end of this loop iteration (idempotent)."""
        if self._flush_handle is None and self.loop is not None and self.transport is not None:
            self._flush_handle = self.loop.call_soon(self._deferred_flush)

    def _deferred_flush(self) -> None:
        self._flush_handle = None
        self.flush()

    def flush(self) -> None:
        """Drain events, send datagrams, re-arm the timer. Safe to call at any time."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._drain_events()
        if self.transport is None:
            return
        now = self.clock()
        self._send_due(now)
        self._arm(now)

    def _send_due(self, now: float) -> None:
        """Send what the core has to send now; then its events (sending may produce some, e.g. a
        give-up)."""
        try:
            out = self.core.datagrams_to_send(now)
        except Exception:
            self.stats["core_errors"] += 1
            log.exception("%s: core failed in datagrams_to_send", self.name)
            out = []
        self._send(out)
        self._drain_events()

    def _drain_events(self) -> None:
        core = self.core
        on_event = self.on_event
        while True:
            try:
                event = core.next_event()
            except Exception:
                self.stats["core_errors"] += 1
                log.exception("%s: core failed in next_event", self.name)
                return
            if event is None:
                return
            if on_event is not None:
                try:
                    on_event(event)
                except Exception:
                    self.stats["callback_errors"] += 1
                    log.exception("%s: event handler failed on %r", self.name, event)

    def _valid_addr(self, addr: Any) -> bool:
        # asyncio treats anything but OSError from sendto as fatal and closes the socket:
        # check the address's shape before handing it over.
        if addr is None:
            return True
        v6 = self._v6
        return (
            type(addr) is tuple
            and (2 <= len(addr) <= 4 if v6 else len(addr) == 2)
            and type(addr[0]) is str
            and type(addr[1]) is int
            and 0 < addr[1] < 65536
            and (v6 or ":" not in addr[0])
        )

    def _send(self, out: list[tuple[bytes, Any]]) -> None:
        transport = self.transport
        if transport is None or not out:
            return
        sendto = transport.sendto
        ok = self._ok_addrs
        sent = 0
        for data, addr in out:
            if self._paused:
                self.stats["dropped_paused"] += 1  # UDP: the core's retransmits repair it
                continue
            try:
                known = addr in ok
            except TypeError:  # unhashable: certainly not an address
                known = False
                addr = ("invalid",)
            if not known:
                if not self._valid_addr(addr):
                    self.stats["send_errors"] += 1
                    log.debug("%s: not sending to invalid address %r", self.name, addr)
                    continue
                if len(ok) >= 8192:
                    ok.clear()
                if addr is not None:
                    ok.add(addr)
            try:
                sendto(data, addr)
                sent += 1
            except (OSError, ValueError, TypeError) as exc:
                self.stats["send_errors"] += 1
                log.debug("%s: sendto %s failed: %s", self.name, addr, exc)
        self.stats["sent"] += sent

    def _arm(self, now: float, *, after_timer: bool = False) -> None:
        try:
            at = self.core.get_timer()
        except Exception:
            self.stats["core_errors"] += 1
            log.exception("%s: core failed in get_timer", self.name)
            at = None
        if at is None:
            self._cancel_timer()
            return
        if at == self._timer_at and self._timer is not None:
            return
        self._cancel_timer()
        delay = at - now
        if delay <= 0 and after_timer:
            delay = 0.001  # the core still wants the timer it just handled: don't spin
        self._timer_at = at
        assert self.loop is not None
        self._timer = self.loop.call_later(max(0.0, delay), self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = None

    def _on_timer(self) -> None:
        at = self._timer_at
        self._timer = None
        self._timer_at = None
        if self.transport is None:
            return
        now = self.clock()
        if at is not None and now < at:
            # Loops with millisecond clocks (uvloop) can fire a little early: wait the rest, so
            # the core never sees its timer before its deadline.
            self._timer_at = at
            assert self.loop is not None
            self._timer = self.loop.call_later(at - now + 0.0002, self._on_timer)
            return
        try:
            self.core.handle_timer(now)
        except Exception:
            self.stats["core_errors"] += 1
            log.exception("%s: core failed in handle_timer", self.name)
        self._drain_events()
        self._send_due(now)
        self._arm(now, after_timer=True)

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Stop timers and close the socket (what was already sent is in the kernel)."""
        self._cancel_timer()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self.transport is not None:
            self.transport.close()

    async def wait_closed(self, timeout: float = 1.0) -> None:
        if self._closed is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._closed), timeout)
        except TimeoutError:
            pass


async def open_core(
    core: Core,
    sock: socket.socket,
    on_event: Callable[[Any], None] | None = None,
    *,
    name: str = "udproom",
    clock: Callable[[], float] = time.monotonic,
) -> CoreProtocol:
    """Wrap `sock` in a datagram endpoint that drives `core`."""
    loop = asyncio.get_running_loop()
    _transport, protocol = await loop.create_datagram_endpoint(
        lambda: CoreProtocol(core, on_event, clock=clock, name=name), sock=sock
    )
    return protocol


def bound_host(sock: socket.socket) -> str:
    """The host a socket is bound to, as an `address.ANY_HOSTS` member for wildcard binds."""
    host = sock.getsockname()[0]
    if host in ANY_HOSTS:
        return "::" if sock.family == socket.AF_INET6 else "0.0.0.0"
    return host
