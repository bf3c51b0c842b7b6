"""Delivery and repair under attack: what NACKs, stale requests and history floods can make a relay or
a peer send is bounded per round trip."""

from __future__ import annotations

import msgspec

from udproom.protocol import events as E
from udproom.protocol import frames as F
from udproom.protocol.peer import state as P

from .adversary import Adversary
from .fakenet import Impairment
from .harness import (
    RELAY,
    Room,
    T,
    client_addr,
    datagram_of,
    post_reaches_everyone,
    watched_relay,
)
from .peers import MALLORY, addr, send_as, trio


def test_a_joiners_backfill_is_acked_not_sent_twice_and_its_rtt_stays_sane():
    room = Room(1, seed=35, imp=Impairment(delay=0.002))
    room.wait_joined()
    a = client_addr(0)
    for k in range(60):
        room.net.call(a, room.clients[a].post, "lobby", f"m{k}")
    room.settle(1.0)
    before = room.relay.stats["retransmitted"]
    room.add_client(1, "late")
    room.net.run_while(lambda: not room.events(client_addr(1), E.RoomJoined), room.net.now + 5)
    room.settle(2.0)
    # the backfill (61 events before the join) went once
    assert room.relay.stats["retransmitted"] - before <= 62
    session = room.relay.sessions[client_addr(1)]
    assert session.rtt.srtt is None or session.rtt.srtt < 0.1


def test_a_nack_and_stale_request_flood_buys_a_bounded_repair_per_rtt():
    room = Room(2, seed=73)
    room.wait_joined()
    a = client_addr(0)
    for k in range(150):  # a room with plenty to repair: 150 events of ~400 bytes
        room.net.call(a, room.clients[a].post, "lobby", f"{k}:" + "x" * 400)
        if k % 10 == 9:
            room.settle(0.02)
    room.wait_settled()
    evil = client_addr(5)
    room.add_client(5, "evil", join=False)
    room.net.run_while(lambda: not room.clients[evil].connected, room.net.now + 5)
    session = room.relay.sessions[evil]
    token, join_cseq = session.token, session.next_cseq
    adv = Adversary(room.net, evil)  # joins, then never acks anything: it NACKs
    w = watched_relay(room)
    adv.forge(F.encode([F.Sid(token), F.Req(join_cseq, F.OP_JOIN, "lobby")]), RELAY)
    room.settle(0.01)
    nacks = datagram_of([F.Sid(token)] + [F.Nack("lobby", [1, 10**6])] * 84)
    stale = datagram_of([F.Sid(token)] + [F.Req(join_cseq, F.OP_JOIN, "lobby")] * 84)
    rejoin = datagram_of([F.Sid(token)] + [F.Req(join_cseq - 1000, F.OP_JOIN, "lobby")] * 84)
    assert nacks and stale and rejoin and len(nacks) > 1000
    window = getattr(room.relay.config, "repair_window", 24_000)
    rtt = T.rto_min  # the repair budget's floor
    per_rtt: list[int] = []
    start = room.net.now
    for i in range(50):  # 50 round trips, a datagram every 2 ms
        before = w.bytes_out[evil]
        for j in range(10):
            adv.forge((nacks, stale, rejoin)[j % 3], RELAY, delay=0.002 * j)
        room.net.run_until(start + (i + 1) * rtt)
        per_rtt.append(w.bytes_out[evil] - before)
    assert max(per_rtt) <= 2 * window + F.MAX_DATAGRAM  # a full budget, plus one refill
    assert sum(per_rtt) <= (len(per_rtt) + 1) * window + F.MAX_DATAGRAM
    assert w.amplification(evil) < 3  # out/in: nothing like the 1,872x of before
    post_reaches_everyone(room, a, "after the flood", [a, client_addr(1)])


def test_nack_and_history_floods_get_a_bounded_answer_per_round_trip():
    net, (p0, _p1, mallory) = trio(watch=True)
    watched = net.nodes[addr(0)]

    def no_acks(link, now):  # mallory never acknowledges: everything stays repairable
        link.acks.clear()
        return []

    mallory._acks = no_acks
    for k in range(100):
        net.call(addr(0), p0.post, "lobby", f"{k:03d} " + "y" * 400)
    net.run_until(net.now + 0.05)
    link = mallory.links[addr(0)]
    lr = link.rooms["lobby"]
    ask = msgspec.structs.replace(mallory._join_frame(link, lr, net.now, True), history=True)
    start = dict(watched.bytes_out)
    flood = [F.Nack("lobby", [1, 1000])] * 20 + [ask] * 20
    for _ in range(10):
        send_as(net, mallory, MALLORY, 0, flood)
    net.run_until(net.now + 0.001)  # less than one round trip
    sent = watched.bytes_out[addr(MALLORY)] - start.get(addr(MALLORY), 0)
    assert sent <= 2 * P.REPAIR_WINDOW + F.MAX_DATAGRAM, sent
