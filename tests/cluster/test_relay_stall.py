"""A relay never stalls its UDP loop on its cluster (issue 12): with NATS made slow (a TCP delay
proxy between the relay and the server), a member's join of a new room, or a Login's nick claim,
waits for its round trips while the relay goes on serving everyone else. Asserted on events (the
other member's message arrives while the join is still unanswered), never on times. Before the
relay parked what waits (roomlog.Pending), these calls blocked the loop: the other member's message
came after the join's answer."""

from __future__ import annotations

import asyncio

from udproom.protocol import events as E
from udproom.protocol.net.runners import RelayClient
from udproom.protocol.reliability import Timing

from .proxy import NatsProxy
from .relays import Client, Recorder, cluster_relay, shutdown


def got(client: Client, text: str) -> bool:
    return text in [t for _s, t in client.received()]


def joined(client: Client, room: str) -> bool:
    return room in [e.room for e in client.rec.of(E.RoomJoined)]


async def test_a_join_waiting_for_a_slow_cluster_does_not_stop_the_relay(nats_server):
    """The whole cluster slow (every round trip 2 x 0.15 s): bob's join of a new room needs the room
    followed (its stream made and read, a consumer) and its join event stored, several round trips
    in a row; alice's post in the room she is in needs one, and arrives while bob's join waits."""
    proxy = NatsProxy(nats_server.port)
    relay = await cluster_relay(proxy.url)
    alice, bob = Client(relay, "alice"), Client(relay, "bob")
    try:
        await alice.joined()
        await bob.joined()
        proxy.delay = 0.15
        bob.backend.join("slow")
        await asyncio.sleep(0)  # (bob's join goes out first)
        alice.post("while bob joins")
        await alice.rec.until(lambda: got(alice, "while bob joins"), what="alice's message")
        assert not joined(bob, "slow"), "the join was answered first: it stalled the relay"
        await bob.rec.until(lambda: joined(bob, "slow"), what="bob's join")
        assert [e.room for e in bob.rec.of(E.RoomJoined)].count("slow") == 1
    finally:
        await shutdown([alice, bob], [relay])
        proxy.close()


async def test_a_login_and_a_join_waiting_for_slow_nick_claims_do_not_stop_the_relay(nats_server):
    """The relay's nick claims and member lists on a slow connection (2 x 0.2 s a round trip), its
    room log on a fast one: carol's Login waits for her nick's claim, and dave's join of a new room
    for its member list, while alice's posts are stored and delivered."""
    proxy = NatsProxy(nats_server.port)
    relay = await cluster_relay(nats_server.url, names_url=proxy.url)
    alice = Client(relay, "alice")
    dave = Client(relay, "dave")
    carol_rec = Recorder()
    carol = RelayClient(f"127.0.0.1:{relay.port}", "carol", ["lobby"], timing=Timing.fast())
    carol_task = None
    try:
        await alice.joined()
        await dave.joined()
        proxy.delay = 0.2
        carol_task = asyncio.create_task(carol.run(carol_rec))
        await carol_rec.until(lambda: carol_rec.of(E.Connecting), what="carol connecting")
        dave.backend.join("elsewhere")
        alice.post("while carol logs in")
        await alice.rec.until(lambda: got(alice, "while carol logs in"), what="alice's message")
        assert not carol_rec.of(E.Connected), "the Login was answered first: it stalled the relay"
        assert not joined(dave, "elsewhere"), "the join was answered first: it stalled the relay"
        await carol_rec.until(lambda: carol_rec.of(E.RoomJoined), what="carol in")
        await dave.rec.until(lambda: joined(dave, "elsewhere"), what="dave's join")
        assert len(carol_rec.of(E.Connected)) == 1
    finally:
        carol.close()
        if carol_task is not None:
            await asyncio.wait_for(carol_task, 10)
        await shutdown([alice, dave], [relay])
        proxy.close()
