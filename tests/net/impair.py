"""A user-space UDP impairment proxy for the loopback tests (this kernel has no netem).

Clients talk to the proxy's port; for each client source address the proxy opens its own
upstream socket, so the relay sees one distinct address per client, as it would without the
proxy. Every datagram in either direction can be dropped (`loss`), duplicated (`dup`) and delayed
by `delay` + uniform(0, `jitter`) seconds (jitter reorders). `go_dark(seconds)` drops everything
for a while (a link that goes dark). `record=True` keeps every datagram seen
(`heard`). Decisions come from one seeded `random.Random`.
"""

from __future__ import annotations

import asyncio
import random
import socket
from dataclasses import dataclass, field


@dataclass
class ImpairStats:
    forwarded: int = 0
    dropped: int = 0
    duplicated: int = 0
    dark_dropped: int = 0
    clients: int = 0
    delayed: int = 0
    by_direction: dict = field(default_factory=lambda: {"up": 0, "down": 0})


class _Listen(asyncio.DatagramProtocol):
    def __init__(self, proxy: ImpairProxy) -> None:
        self.proxy = proxy

    def datagram_received(self, data: bytes, addr) -> None:
        self.proxy._from_client(data, addr)

    def error_received(self, exc: Exception) -> None:
        pass


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, proxy: ImpairProxy, client) -> None:
        self.proxy = proxy
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.backlog: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport
        backlog, self.backlog = self.backlog, []
        for data in backlog:
            self.proxy._impair(data, self._send_up, "up")

    def _send_up(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, self.proxy.upstream)

    def datagram_received(self, data: bytes, addr) -> None:
        self.proxy._impair(data, self._send_down, "down")

    def _send_down(self, data: bytes) -> None:
        listen = self.proxy._listen
        if listen is not None and not listen.is_closing():
            listen.sendto(data, self.client)

    def error_received(self, exc: Exception) -> None:
        pass  # the relay is down (ICMP unreachable): that is what the test wants to see


class ImpairProxy:
    def __init__(
        self,
        upstream: tuple,
        *,
        host: str = "127.0.0.1",
        seed: int = 0,
        loss: float = 0.0,
        dup: float = 0.0,
        delay: float = 0.0,
        jitter: float = 0.0,
        record: bool = False,
    ) -> None:
        self.upstream = upstream
        #: with `record`: every datagram that reached the proxy, either way, as (direction, bytes)
        #: (an on-path eavesdropper's view)
        self.heard: list[tuple[str, bytes]] | None = [] if record else None
        self.host = host
        self.rng = random.Random(seed)
        self.loss = loss
        self.dup = dup
        self.delay = delay
        self.jitter = jitter
        self.stats = ImpairStats()
        self._listen: asyncio.DatagramTransport | None = None
        self._clients: dict = {}
        self._dark_until = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self.port = 0

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    async def start(self) -> tuple[str, int]:
        self._loop = asyncio.get_running_loop()
        self._listen, _ = await self._loop.create_datagram_endpoint(
            lambda: _Listen(self), local_addr=(self.host, 0), family=self.family
        )
        self.port = self._listen.get_extra_info("sockname")[1]
        return self.host, self.port

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def go_dark(self, seconds: float) -> None:
        """Drop everything, both ways, for `seconds`."""
        assert self._loop is not None
        self._dark_until = self._loop.time() + seconds

    def set(self, **impairments: float) -> None:
        for key, value in impairments.items():
            if key not in ("loss", "dup", "delay", "jitter"):
                raise TypeError(key)
            setattr(self, key, value)

    def _from_client(self, data: bytes, addr) -> None:
        up = self._clients.get(addr)
        if up is None:
            up = _Upstream(self, addr)
            self._clients[addr] = up
            self.stats.clients += 1
            up.backlog.append(data)
            up_family = socket.AF_INET6 if ":" in str(self.upstream[0]) else socket.AF_INET
            local = "::1" if up_family == socket.AF_INET6 else "127.0.0.1"
            assert self._loop is not None
            self._loop.create_task(
                self._loop.create_datagram_endpoint(lambda: up, local_addr=(local, 0), family=up_family)
            )
            return
        if up.transport is None:
            up.backlog.append(data)
            return
        self._impair(data, up._send_up, "up")

    def _impair(self, data: bytes, send, direction: str) -> None:
        loop = self._loop
        assert loop is not None
        if self.heard is not None:
            self.heard.append((direction, data))
        if loop.time() < self._dark_until:
            self.stats.dark_dropped += 1
            return
        rng = self.rng
        if self.loss and rng.random() < self.loss:
            self.stats.dropped += 1
            return
        copies = 1
        if self.dup and rng.random() < self.dup:
            copies = 2
            self.stats.duplicated += 1
        for _ in range(copies):
            wait = self.delay + (rng.uniform(0, self.jitter) if self.jitter else 0.0)
            self.stats.forwarded += 1
            self.stats.by_direction[direction] += 1
            if wait <= 0:
                send(data)
            else:
                self.stats.delayed += 1
                handle: asyncio.TimerHandle

                def fire(data=data) -> None:
                    self._timers.discard(handle)  # noqa: B023 -- the handle of this very call
                    send(data)

                handle = loop.call_later(wait, fire)
                self._timers.add(handle)

    async def close(self) -> None:
        for handle in list(self._timers):
            handle.cancel()
        self._timers.clear()
        for up in self._clients.values():
            if up.transport is not None:
                up.transport.close()
        self._clients.clear()
        if self._listen is not None:
            self._listen.close()
            self._listen = None

    async def __aenter__(self) -> ImpairProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
