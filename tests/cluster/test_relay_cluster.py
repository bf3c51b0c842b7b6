"""What members of one room on different relays share (issue 12): the topic, the member list, the
history a page back reads, and nicks (unique across the cluster, free again when their session
ends)."""

from __future__ import annotations

from udproom.protocol import events as E

from .relays import Client, cluster_relay, shutdown


async def test_topic_history_and_nicks_are_the_clusters(nats_server):
    r0, r1 = await cluster_relay(nats_server.url), await cluster_relay(nats_server.url)
    clients: list[Client] = []
    try:
        alice = Client(r0, "alice")
        bob = Client(r1, "bob")
        clients += [alice, bob]
        await alice.joined()
        await bob.joined()
        ids = [alice.post(f"a{i}") for i in range(5)] + [bob.post(f"b{i}") for i in range(5)]
        await alice.rec.until(lambda: alice.settled(ids[:5]) and bob.settled(ids[5:]), what="acks")

        # the topic set through one relay is everyone's, and a joiner at the other relay gets it
        alice.backend.set_topic("lobby", "cluster talk")
        await bob.rec.until(
            lambda: any(e.topic == "cluster talk" for e in bob.rec.of(E.TopicChanged)), what="topic at bob"
        )
        carol = Client(r1, "carol")
        clients.append(carol)
        await carol.joined()
        joined = carol.rec.of(E.RoomJoined)[0]
        assert joined.topic == "cluster talk"
        # and the member list names the members on the other relay too
        assert sorted(m.nick for m in joined.members) == ["alice", "bob", "carol"]

        # the same history from either relay (once alice's relay has carol's join: pages end at the
        # last event a relay has, and the feed may bring it a moment after carol is in)
        await alice.rec.until(
            lambda: any(e.nick == "carol" for e in alice.rec.of(E.MemberJoined)), what="carol at alice"
        )
        pages = []
        for c in (alice, carol):
            c.backend.page_back("lobby", 0, 50)
            await c.rec.until(lambda c=c: c.rec.of(E.HistoryPage), what="a history page")
            page = c.rec.of(E.HistoryPage)[0]
            pages.append([(e.seq, type(e).__name__, getattr(e, "text", "")) for e in page.events])
        assert pages[0] == pages[1] and len([p for p in pages[0] if p[1] == "MessageReceived"]) == 10

        # a nick is unique across relays (as nick_key sees it), and free again once its session ends
        twin = Client(r1, "ALICE")
        clients.append(twin)
        await twin.rec.until(lambda: twin.rec.of(E.Refused), what="the twin refused")
        assert "in use on another relay" in twin.rec.of(E.Refused)[0].reason
        await alice.close()
        clients.remove(alice)
        again = Client(r1, "alice")
        clients.append(again)
        await again.joined()
    finally:
        await shutdown(clients, [r0, r1])
