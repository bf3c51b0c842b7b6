"""The impairment proxy itself: it must do what the loopback tests rely on."""

import asyncio
import time

import pytest

from .conftest import FAMILIES
from .impair import ImpairProxy


class Sink(asyncio.DatagramProtocol):
    def __init__(self, echo=False):
        self.got = []
        self.echo = echo
        self.transport = None
        self.changed = asyncio.Event()

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.got.append((data, addr))
        self.changed.set()
        if self.echo:
            self.transport.sendto(b"re:" + data, addr)


async def settle(sink, n, timeout=30.0):
    """Wait until `sink` has n datagrams (or the deadline passes, for 'nothing more comes')."""
    deadline = time.monotonic() + timeout
    while len(sink.got) < n and time.monotonic() < deadline:
        sink.changed.clear()
        try:
            await asyncio.wait_for(sink.changed.wait(), deadline - time.monotonic())
        except TimeoutError:
            break


async def setup(host, **impair):
    loop = asyncio.get_running_loop()
    server_t, server = await loop.create_datagram_endpoint(lambda: Sink(echo=True), local_addr=(host, 0))
    port = server_t.get_extra_info("sockname")[1]
    proxy = ImpairProxy((host, port), host=host, **impair)
    await proxy.start()
    client_t, client = await loop.create_datagram_endpoint(Sink, local_addr=(host, 0))
    return proxy, server, client, (host, proxy.port), [server_t, client_t]


@pytest.mark.parametrize("host", FAMILIES)
async def test_clean_path_and_distinct_upstreams(host):
    proxy, server, client, to, ts = await setup(host)
    loop = asyncio.get_running_loop()
    other_t, other = await loop.create_datagram_endpoint(Sink, local_addr=(host, 0))
    for i in range(20):
        client.transport.sendto(b"%d" % i, to)
    other.transport.sendto(b"x", to)
    await settle(client, 20)
    await settle(other, 1)
    assert sorted(d for d, _ in client.got) == sorted(b"re:%d" % i for i in range(20))
    assert other.got[0][0] == b"re:x"
    assert len({a for _, a in server.got}) == 2  # one upstream address per client
    await proxy.close()
    for t in [*ts, other_t]:
        t.close()


async def test_loss_duplication_dark():
    proxy, server, client, to, ts = await setup("127.0.0.1", seed=1, loss=0.5)
    for i in range(200):
        client.transport.sendto(b"%d" % i, to)
    await settle(server, 200, timeout=0.3)  # some never come: bounded wait
    assert 40 < len(server.got) < 160
    assert proxy.stats.dropped > 0
    server.got.clear()
    client.got.clear()

    proxy.set(loss=0.0, dup=1.0)
    client.transport.sendto(b"twice", to)
    await settle(server, 2)
    assert [d for d, _ in server.got] == [b"twice", b"twice"]

    proxy.set(dup=0.0, jitter=0.05)
    server.got.clear()
    for i in range(50):
        client.transport.sendto(b"%d" % i, to)
    await settle(server, 50)
    order = [int(d) for d, _ in server.got]
    assert sorted(order) == list(range(50)) and order != list(range(50))  # reordered

    proxy.set(jitter=0.0)
    server.got.clear()
    proxy.go_dark(0.2)
    client.transport.sendto(b"lost", to)
    await settle(server, 1, timeout=0.1)
    assert server.got == []
    await asyncio.sleep(0.25)  # let the dark period pass (a fixed-length condition, not a race)
    client.transport.sendto(b"back", to)
    await settle(server, 1)
    assert server.got[0][0] == b"back"
    await proxy.close()
    for t in ts:
        t.close()
