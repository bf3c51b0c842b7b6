"""Relays of a cluster when NATS goes away (issue 12): relays and clients in one event loop, a real
nats-server. Restarted mid-conversation: the relays reconnect and serve again, and while it is
gone posts are refused with a clear reason, never acknowledged. A relay cut off from NATS (a TCP
black hole between it and the server) stops acknowledging; the other relay never notices."""

from __future__ import annotations

import asyncio

from udproom.protocol import events as E

from .proxy import NatsProxy
from .relays import Client, cluster_relay, everyone_has, one_order, post_until_served, shutdown


async def until(predicate, limit: float = 30.0) -> None:
    """Wait (bounded) for a relay's state to say something (it sends no event for it)."""
    for _ in range(int(limit / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not in time")


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

        def failed() -> list[str]:
            return [e.reason for e in alice.rec.of(E.PostFailed) if e.local_id in during]

        # refused at once with the cluster's reason (the relay knew the server gone: never sent),
        # or, sent before it noticed, neither acknowledged nor refused: sent again until the server
        # is back (it may have stored them). Never acknowledged while it is gone.
        await until(lambda: len(failed()) + len(r0.relay._unsure) >= len(during))
        assert not {e.local_id for e in alice.rec.of(E.PostAcknowledged)} & set(during)
        assert all("cluster" in r for r in failed()), failed()

        nats_server.start()
        await post_until_served(alice, "a-back", 0.5)  # the relays reconnect: posts are acknowledged again
        await alice.rec.until(lambda: alice.settled(during), what="the posts sent again answered")
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
        # bob's posts went into the partition: no answer, so neither acknowledged nor refused (they
        # might have been stored); r1 sends them again (and keeps them while it knows NATS gone)
        await until(lambda: r1.relay.stats["posts_sent_again"] >= len(cut))
        assert not bob.acked(), "a relay cut off from NATS acknowledged"
        assert not bob.rec.of(E.PostFailed), "refused, though it may have been stored"
        bob.backend.join("dev")  # a join is refused too, in one line, and nothing is in the room
        await bob.rec.until(lambda: bob.rec.of(E.RequestRefused), what="the join refused")
        refused = bob.rec.of(E.RequestRefused)[0]
        assert (
            refused.what == "join" and "could not store it" in refused.reason and "cluster" in refused.reason
        )
        await everyone_has([alice], alice.acked())
        hole.heal()  # the partition ends: r1 reconnects and serves again
        await post_until_served(bob, "b-again", 1.0)
        await bob.rec.until(lambda: bob.settled(cut), what="bob's posts sent again")
        assert {f"b-cut{i}" for i in range(5)} <= set(bob.acked()), bob.rec.of(E.PostFailed)
        acked = alice.acked() | bob.acked()
        await everyone_has([alice, bob], acked)
        one_order([alice, bob], acked)
    finally:
        await shutdown([alice, bob], [r0, r1])
        hole.close()


async def test_a_post_whose_ack_comes_late_is_never_refused_and_is_acknowledged_once_stored(nats_server):
    """Refused but stored: a post published to JetStream whose ack comes after the commit timeout
    may be stored (here it is: the ack is only slow). It is not refused; the relay sends it again
    with its message id until an answer comes (the duplicate window answers with the number it
    has), then acknowledges it under that number, and the room has it once. Before, it was refused
    ("did not acknowledge in time") and then delivered all the same."""
    proxy = NatsProxy(nats_server.port)
    relay = await cluster_relay(proxy.url, commit_timeout=0.5)
    alice = Client(relay, "alice")
    try:
        await alice.joined()
        failures = relay.relay.stats["commit_failures"]
        proxy.delay = 0.4  # a round trip takes 0.8 s: longer than the commit timeout
        late = alice.post("late")
        await until(lambda: relay.relay.stats["commit_failures"] > failures)  # (its commit timed out)
        proxy.delay = 0.0
        await alice.rec.until(lambda: alice.settled([late]), what="its answer")
        assert not alice.rec.of(E.PostFailed), "refused, though it was stored"
        await everyone_has([alice], ["late"])
        assert [t for _s, t in alice.received()].count("late") == 1
        assert alice.acked()["late"] == next(s for s, t in alice.received() if t == "late")
    finally:
        await shutdown([alice], [relay])
        proxy.close()
