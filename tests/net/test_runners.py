"""RelayServer and RelayClient in one event loop (as the TUI hosts them), real sockets."""

import asyncio
import time

import pytest

from udproom.protocol import events as E
from udproom.protocol.backend import Backend
from udproom.protocol.names import TextTooLong
from udproom.protocol.net.address import AddressError
from udproom.protocol.net.runners import RelayClient, RelayServer
from udproom.protocol.relay import RelayConfig
from udproom.protocol.reliability import Timing

from .conftest import FAMILIES, hostport


class Recorder:
    def __init__(self):
        self.events = []
        self.changed = asyncio.Event()

    def __call__(self, ev):
        self.events.append(ev)
        self.changed.set()

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]

    async def wait(self, predicate, timeout=30.0, what="event"):
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events if predicate(e)]
            if found:
                return found[0]
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {what} in time; got {self.events[-10:]}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                pass


async def start_client(addr, nick, rooms):
    client = RelayClient(addr, nick, rooms, timing=Timing.fast())
    rec = Recorder()
    task = asyncio.create_task(client.run(rec))
    return client, rec, task


@pytest.mark.parametrize("host", FAMILIES)
async def test_server_and_clients_in_one_loop(host):
    server = RelayServer(hostport(host, 0), RelayConfig(timing=Timing.fast()))
    bound, port = await server.start()
    assert bound == host and port > 0
    assert server.addresses() == [hostport(host, port)]
    addr = hostport(host, port)
    alice, arec, atask = await start_client(addr, "alice", ["lobby"])
    bob, brec, btask = await start_client(addr, "bob", ["#Lobby"])
    members = [n for n in dir(Backend) if not n.startswith("_")]
    assert {"mode", "nick", "run", "post", "close"} <= set(members)
    for name in members:
        assert hasattr(alice, name), name
    assert alice.mode == f"relay {addr}" and alice.nick == "alice"
    try:
        await arec.wait(lambda e: isinstance(e, E.Connected), what="Connected")
        await arec.wait(lambda e: isinstance(e, E.RoomJoined) and e.room == "lobby")
        await brec.wait(lambda e: isinstance(e, E.RoomJoined) and e.room == "lobby")
        await arec.wait(lambda e: isinstance(e, E.MemberJoined) and e.nick == "bob")

        ids = [alice.post("lobby", f"hi {i}") for i in range(20)]
        me = alice.post("lobby", "waves", action=True)
        for i in [*ids, me]:
            await arec.wait(lambda e, i=i: isinstance(e, E.PostAcknowledged) and e.local_id == i)
        await brec.wait(lambda e: isinstance(e, E.MessageReceived) and e.text == "waves")
        got = [(e.text, e.action) for e in brec.of(E.MessageReceived)]
        assert got == [(f"hi {i}", False) for i in range(20)] + [("waves", True)]
        assert all(e.ts > 1e9 for e in brec.of(E.MessageReceived))  # wall clock, not monotonic

        with pytest.raises(TextTooLong):
            alice.post("lobby", "x" * 1001)
        alice.set_topic("lobby", "udp all the way")
        await brec.wait(lambda e: isinstance(e, E.TopicChanged) and e.topic == "udp all the way")
        alice.set_nick("alicia")
        await brec.wait(lambda e: isinstance(e, E.NickChanged) and e.new == "alicia")
        await arec.wait(lambda e: isinstance(e, E.NickChanged) and e.new == "alicia")
        alice.join("other")
        await arec.wait(lambda e: isinstance(e, E.RoomJoined) and e.room == "other")
        alice.part("other")
        await arec.wait(lambda e: isinstance(e, E.RoomLeft) and e.room == "other")
        alice.set_away("lunch")
        await brec.wait(lambda e: isinstance(e, E.AwayChanged) and e.away == "lunch")

        alice.close()
        await asyncio.wait_for(atask, 30)
        await brec.wait(lambda e: isinstance(e, E.MemberLeft) and e.nick == "alicia")
        assert server.stats["sessions_opened"] >= 2
        assert server.stats["socket_core_errors"] == 0
        await server.stop()
        # the relay said goodbye: bob notices at once (and would retry)
        lost = await brec.wait(lambda e: isinstance(e, E.ConnectionLost), 2, "goodbye")
        assert "shutting down" in lost.reason
    finally:
        alice.close()
        bob.close()
        await server.stop()
    await asyncio.wait_for(btask, 30)


@pytest.mark.ipv6
async def test_dual_stack_relay_serves_ipv4_and_ipv6():
    # the one relay bound to every interface on purpose: what `--bind :PORT` does is under test
    async with RelayServer(":0", RelayConfig(timing=Timing.fast())) as server:
        assert server.address.startswith("[::]:") or server.address.startswith("0.0.0.0:")
        port = server.port
        c4, r4, t4 = await start_client(f"127.0.0.1:{port}", "four", ["lobby"])
        c6, r6, t6 = await start_client(f"[::1]:{port}", "six", ["lobby"])
        await r4.wait(lambda e: isinstance(e, E.RoomJoined))
        await r6.wait(lambda e: isinstance(e, E.RoomJoined))
        c4.post("lobby", "from v4")
        c6.post("lobby", "from v6")
        for rec in (r4, r6):
            await rec.wait(lambda e: isinstance(e, E.MessageReceived) and e.text == "from v4")
            await rec.wait(lambda e: isinstance(e, E.MessageReceived) and e.text == "from v6")
        assert f"127.0.0.1:{port}" in server.addresses()
        c4.close()
        c6.close()
        await asyncio.wait_for(asyncio.gather(t4, t6), 30)


async def test_client_bad_address_and_unresolvable():
    with pytest.raises(AddressError):
        RelayClient("nohost:abc", "a", ["x"])
    client = RelayClient("no-such-host.invalid:6000", "a", ["x"])
    rec = Recorder()
    await asyncio.wait_for(client.run(rec), 30)
    refused = rec.of(E.Refused)
    assert refused and "no-such-host.invalid" in refused[0].reason


async def test_close_before_run_and_stop_twice():
    server = RelayServer("127.0.0.1:0")
    await server.start()
    client = RelayClient(f"127.0.0.1:{server.port}", "early", ["lobby"])
    client.close()
    await asyncio.wait_for(client.run(Recorder()), 30)
    await server.stop()
    await server.stop()


async def test_server_survives_garbage():
    import socket

    async with RelayServer("127.0.0.1:0", RelayConfig(timing=Timing.fast())) as server:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for data in (b"", b"\xff" * 50, b"\x91\x01", bytes(1500), b"\x93\x0a\x01\x02"):
                s.sendto(data, ("127.0.0.1", server.port))
        client, rec, task = await start_client(f"127.0.0.1:{server.port}", "ok", ["lobby"])
        await rec.wait(lambda e: isinstance(e, E.RoomJoined))
        assert server.stats["malformed"] >= 3
        assert server.stats["socket_core_errors"] == 0
        client.close()
        await asyncio.wait_for(task, 30)
