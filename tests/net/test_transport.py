"""The CoreProtocol adapter, driven by small fake cores, on asyncio's loop and on uvloop."""

import asyncio
import socket
import time
from collections import deque

import pytest

from udproom.protocol.net import loop as netloop
from udproom.protocol.net.address import AddressError
from udproom.protocol.net.transport import bind_socket, client_socket, open_core

LOOPS = ["asyncio", "uvloop"]


def run_on(kind, coro_fn, timeout=60.0):
    factory = None if kind == "asyncio" else netloop.loop_factory()
    if kind == "uvloop" and factory is None:  # a dependency on this platform: its absence is a failure
        pytest.fail("uvloop is not installed (pip install -e '.[test]')")

    async def main():
        return await asyncio.wait_for(coro_fn(), timeout)

    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


class EchoCore:
    """Echoes every datagram (b'echo:' + data) and reports it as an event; counts flush calls."""

    def __init__(self):
        self.out = []
        self.events = deque()
        self.timer = None
        self.timer_calls = []
        self.flushes = 0

    def receive_datagram(self, data, addr, now):
        self.out.append((b"echo:" + data, addr))
        self.events.append(("got", data, addr))

    def datagrams_to_send(self, now):
        self.flushes += 1
        out, self.out = self.out, []
        return out

    def get_timer(self):
        return self.timer

    def handle_timer(self, now):
        self.timer_calls.append(now)
        self.timer = None

    def next_event(self):
        return self.events.popleft() if self.events else None


async def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.002)


class Collector(asyncio.DatagramProtocol):
    def __init__(self):
        self.got = []

    def datagram_received(self, data, addr):
        self.got.append((data, addr))


@pytest.mark.parametrize("kind", LOOPS)
@pytest.mark.parametrize(
    "host, peer",
    [("127.0.0.1", "127.0.0.1"), ("::1", "::1"), ("", "127.0.0.1"), ("", "::1"), ("::", "127.0.0.1")],
)
def test_echo(kind, host, peer):
    async def main():
        core = EchoCore()
        events = []
        sock = bind_socket(host, 0)
        proto = await open_core(core, sock, events.append)
        port = sock.getsockname()[1]
        loop = asyncio.get_running_loop()
        fam = socket.AF_INET6 if ":" in peer else socket.AF_INET
        tr, col = await loop.create_datagram_endpoint(Collector, local_addr=(peer, 0), family=fam)
        for i in range(50):
            tr.sendto(b"%d" % i, (peer, port))
        await wait_for(lambda: len(col.got) == 50)
        assert sorted(int(d[5:]) for d, _ in col.got) == list(range(50))
        assert all(d.startswith(b"echo:") for d, _ in col.got)
        assert len(events) == 50 and proto.stats["received"] == 50 and proto.stats["sent"] == 50
        tr.close()
        proto.close()
        await proto.wait_closed()
        assert proto.transport is None

    run_on(kind, main)


@pytest.mark.parametrize("kind", LOOPS)
def test_one_timer_rearmed(kind):
    async def main():
        core = EchoCore()
        proto = await open_core(core, bind_socket("127.0.0.1", 0))
        t0 = time.monotonic()
        # the core moves its deadline around before it fires: only the last one counts
        core.timer = t0 + 5.0
        proto.flush()
        core.timer = t0 + 0.02
        proto.flush()
        proto.flush()  # same deadline: no re-arm
        await wait_for(lambda: core.timer_calls, 30.0)
        assert len(core.timer_calls) == 1
        assert core.timer_calls[0] >= t0 + 0.02 - 1e-9  # never early, even with uvloop's ms clock
        # cleared deadline: nothing fires
        core.timer = time.monotonic() + 0.02
        proto.flush()
        core.timer = None
        proto.flush()
        await asyncio.sleep(0.05)  # nothing to wait for: proving a timer does NOT fire
        assert len(core.timer_calls) == 1
        # a series of timers
        for _ in range(5):
            core.timer = time.monotonic() + 0.005
            proto.flush()
            n = len(core.timer_calls)
            await wait_for(lambda: len(core.timer_calls) == n + 1, 30.0)  # noqa: B023 -- awaited here
        proto.close()

    run_on(kind, main)


class StubbornCore(EchoCore):
    """A buggy core that keeps asking for a timer in the past: the adapter must not spin."""

    def get_timer(self):
        return 0.0 if self.timer_calls or self.timer else None


@pytest.mark.parametrize("kind", LOOPS)
def test_past_timer_does_not_spin(kind):
    async def main():
        core = StubbornCore()
        proto = await open_core(core, bind_socket("127.0.0.1", 0))
        core.timer = 1.0
        proto.flush()
        await asyncio.sleep(0.1)
        # at most ~1 call per millisecond, not a hot loop
        assert 1 <= len(core.timer_calls) <= 150
        proto.close()

    run_on(kind, main)


class HostileCore(EchoCore):
    """Raises everywhere and asks to send to nonsense addresses."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def receive_datagram(self, data, addr, now):
        self.n += 1
        if data == b"boom":
            raise RuntimeError("core bug")
        self.out.append((b"x", ("::1", 9, 0, 0)))  # IPv6 address on an IPv4 socket
        self.out.append((b"x", ("not an address",)))
        self.out.append((b"x", ("127.0.0.1", [9])))  # unhashable
        self.out.append((b"x", ("127.0.0.1", 1)))  # nobody listens: ICMP unreachable
        self.out.append((b"ok", addr))
        self.events.append("event")


@pytest.mark.parametrize("kind", LOOPS)
def test_errors_never_crash(kind):
    async def main():
        core = HostileCore()
        seen = []

        def bad_callback(event):
            seen.append(event)
            raise ValueError("handler bug")

        sock = bind_socket("127.0.0.1", 0)
        port = sock.getsockname()[1]
        proto = await open_core(core, sock, bad_callback)
        loop = asyncio.get_running_loop()
        tr, col = await loop.create_datagram_endpoint(Collector, local_addr=("127.0.0.1", 0))
        for i in range(10):
            tr.sendto(b"boom" if i % 2 else b"hi", ("127.0.0.1", port))
        await wait_for(lambda: len(col.got) == 5 and core.n == 10)
        assert proto.stats["core_errors"] == 5
        assert proto.stats["callback_errors"] == 5
        assert proto.stats["send_errors"] >= 5
        assert proto.transport is not None  # still serving
        tr.close()
        proto.close()

    run_on(kind, main)


def test_connected_peer_refused_is_harmless():
    """A client socket that gets ICMP port unreachable keeps working."""

    async def main():
        core = EchoCore()
        dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        dead.bind(("127.0.0.1", 0))
        dead_addr = dead.getsockname()
        dead.close()
        sock = client_socket(dead_addr)
        sock.connect(dead_addr)  # connected sockets do report ICMP errors
        proto = await open_core(core, sock)
        core.out.append((b"anyone?", None))
        proto.flush()
        await wait_for(lambda: proto.stats["send_errors"] > 0, 30.0)  # the ICMP error arrived
        for _ in range(3):  # and the socket keeps working afterwards
            core.out.append((b"anyone?", None))
            proto.flush()
        assert proto.transport is not None
        assert proto.stats["sent"] >= 2
        proto.close()

    run_on("asyncio", main)


def test_bind_errors_are_one_line():
    taken = bind_socket("127.0.0.1", 0)
    port = taken.getsockname()[1]
    try:
        with pytest.raises(AddressError, match="already in use"):
            bind_socket("127.0.0.1", port)
        with pytest.raises(AddressError, match="cannot bind"):
            bind_socket("192.0.2.254", 0)  # not an address of this machine
        with pytest.raises(AddressError, match="cannot resolve"):
            bind_socket("no-such-host.invalid", 0)
    finally:
        taken.close()


def test_buffers_are_large():
    sock = bind_socket("127.0.0.1", 0)
    try:
        rcv = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert rcv >= 200_000  # at least the kernel's cap, whatever it is here
    finally:
        sock.close()


@pytest.mark.parametrize("host", ["", "::", "*"])
def test_dual_stack_bind(host):
    sock = bind_socket(host, 0)
    try:
        if sock.family == socket.AF_INET6:
            assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
    finally:
        sock.close()
    sock = bind_socket("0.0.0.0", 0)
    assert sock.family == socket.AF_INET
    sock.close()


def test_loop_helpers():
    async def main():
        return netloop.using_uvloop()

    assert netloop.run(main) is (netloop.loop_factory() is not None)
    assert netloop.run(main()) is (netloop.loop_factory() is not None)
