"""Relays of a cluster when NATS goes away (issue 12): relays and clients in one event loop, a real
nats-server. Restarted mid-conversation: the relays reconnect and serve again, and while it is
gone posts are refused with a clear reason, never acknowledged. A relay cut off from NATS (a TCP
black hole between it and the server) stops acknowledging; the other relay never notices."""

from __future__ import annotations

from udproom.protocol import events as E

from .proxy import NatsProxy
from .relays import Client, cluster_relay, everyone_has, one_order, post_until_served, shutdown


async def test_nats_restarted_mid_conversation_refuses_then_serves_never_acks_unstored(nats_server):
    r0, r1 = await cluster_relay(nats_server.url), await cluster_relay(nats_server.url)
    alice, bob = Client(r0, "alice"), Client(r1, "bob")
    try:
        await alice.joined()
        await bob.joined()
        before = [alice.post(f"a{i}") for i in range(10)] + [bob.post(f"b{i}") for i in range(10)]
        await alice.rec.until(lambda: alice.settled(before[:10]) and bob.settled(before[10:]), what="acks")
        assert len(alice.acked()) + len(bob.acked()) == 20

        nats_server.kill()  # mid-conversation
        during = [alice.post(f"a-out{i}") for i in range(10)]
        await alice.rec.until(lambda: alice.settled(during), what="answers during the outage")
        # refused with the cluster's reason, or (the server's loss not noticed yet) never answered:
        # what is acknowledged must be stored, which _one_order checks below
        failed = [e.reason for e in alice.rec.of(E.PostFailed) if e.local_id in during]
        assert len(failed) == len(during), "acknowledged while no server was there to store it"
        assert all("cluster" in r or "did not acknowledge" in r for r in failed), failed

        nats_server.start()
        await post_until_served(alice, "a-back", 0.5)  # the relays reconnect: posts are acknowledged again
        last = [alice.post(f"a-last{i}") for i in range(5)] + [bob.post(f"b-last{i}") for i in range(5)]
        await alice.rec.until(lambda: alice.settled(last[:5]) and bob.settled(last[5:]), what="acks after")
        assert {e.local_id for e in alice.rec.of(E.PostAcknowledged)} >= set(last[:5])
        acked = alice.acked() | bob.acked()
        await everyone_has([alice, bob], acked)
        one_order([alice, bob], acked)
    finally:
        await shutdown([alice, bob], [r0, r1])


async def test_a_relay_cut_off_from_nats_stops_acknowledging_the_other_never_notices(nats_server):
    hole = NatsProxy(nats_server.port)
    r0 = await cluster_relay(nats_server.url)
    r1 = await cluster_relay(f"nats://127.0.0.1:{hole.port}", commit_timeout=1.0)
    alice, bob = Client(r0, "alice"), Client(r1, "bob")
    try:
        await alice.joined()
        await bob.joined()
        hole.open = False  # r1 is cut off; its connection looks alive
        cut = [bob.post(f"b-cut{i}") for i in range(5)]
        fine = [alice.post(f"a{i}") for i in range(20)]
        await alice.rec.until(lambda: alice.settled(fine), what="alice's acks")
        assert len(alice.acked()) == 20, alice.rec.of(E.PostFailed)[:3]  # the other relay never noticed
        await bob.rec.until(lambda: bob.settled(cut), what="bob's answers")
        assert not bob.acked(), "a relay cut off from NATS acknowledged"
        assert all("cluster" in e.reason for e in bob.rec.of(E.PostFailed)), bob.rec.of(E.PostFailed)
        bob.backend.join("dev")  # a join is refused too, in one line, and nothing is in the room
        await bob.rec.until(lambda: bob.rec.of(E.RequestRefused), what="the join refused")
        refused = bob.rec.of(E.RequestRefused)[0]
        assert (
            refused.what == "join" and "could not store it" in refused.reason and "cluster" in refused.reason
        )
        await everyone_has([alice], alice.acked())
        hole.heal()  # the partition ends: r1 reconnects and serves again
        await post_until_served(bob, "b-again", 1.0)
        acked = alice.acked() | bob.acked()
        await everyone_has([alice, bob], acked)
        one_order([alice, bob], acked)
    finally:
        await shutdown([alice, bob], [r0, r1])
        hole.close()
