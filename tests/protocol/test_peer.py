"""Direct peers (protocol/peer.py) over the seeded fake network."""

from __future__ import annotations

import pathlib
import random
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from udproom.protocol import crypto as C
from udproom.protocol import events as E
from udproom.protocol import frames as F
from udproom.protocol.names import Refused, TextTooLong
from udproom.protocol.peer import PeerNode

from .fakenet import FakeNet, Impairment
from .peers import addr, build, check_delivery, full, join_late, of, run_chat, settle_room, timing

# --------------------------------------------------------------------------- delivery


def test_five_peers_lossy_all_sending():
    imp = Impairment(loss=0.3, dup=0.1, delay=0.002, jitter=0.02)
    net, nodes, sent = run_chat(5, 30, seed=7, imp=imp)
    check_delivery(net, nodes, sent)
    for i in range(5):
        assert not of(net, i, E.PostFailed)
        assert not of(net, i, E.MemberTimedOut)
    assert sum(n.stats["retransmits"] for n in nodes) > 0
    assert sum(n.stats["duplicates"] for n in nodes) > 0


def test_five_peers_clean_network_no_retransmits():
    net, nodes, sent = run_chat(5, 10, seed=1, imp=Impairment())
    check_delivery(net, nodes, sent)
    assert sum(n.stats["retransmits"] for n in nodes) == 0


def test_dark_window_is_repaired():
    imp = Impairment(loss=0.1, dup=0.05, jitter=0.01, dark=[(0.5, 1.1)])
    net, nodes = build(4, seed=3, imp=imp)
    settle_room(net, nodes)
    net.run_until(0.45)
    sent = {n.nick: [] for n in nodes}
    for k in range(10):
        for i, node in enumerate(nodes):
            net.call(addr(i), node.post, "lobby", f"{k}:{i}")
            sent[node.nick].append(f"{k}:{i}")
        net.run_until(net.now + 0.05)
    net.run_while(lambda: any(nd.pending_posts for nd in nodes), net.now + 30)
    net.run_until(net.now + 0.5)
    check_delivery(net, nodes, sent)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(2, 5),
    per_peer=st.integers(1, 8),
    seed=st.integers(0, 10_000),
    loss=st.floats(0.0, 0.35),
    dup=st.floats(0.0, 0.2),
    jitter=st.floats(0.0, 0.03),
    chain=st.booleans(),
)
def test_property_exactly_once_same_order(n, per_peer, seed, loss, dup, jitter, chain):
    imp = Impairment(loss=loss, dup=dup, delay=0.001, jitter=jitter)
    net, nodes, sent = run_chat(n, per_peer, seed, imp, chain)
    check_delivery(net, nodes, sent)


# --------------------------------------------------------------------------- membership


def test_join_through_any_member_reaches_everyone():
    imp = Impairment(loss=0.2, dup=0.05, jitter=0.01)
    net, nodes = build(4, seed=11, imp=imp)
    settle_room(net, nodes)
    late = net.add(addr(4), PeerNode("late", timing=timing()))
    net.call(addr(4), late.join, "lobby")
    net.call(addr(4), late.add_peer, addr(2))  # knows only p2
    everyone = [*nodes, late]
    net.run_while(lambda: not full(everyone), net.now + 10)
    assert late.members("lobby") == ["late", "p0", "p1", "p2", "p3"]
    for i in range(4):
        assert [e.nick for e in of(net, i, E.MemberJoined)].count("late") == 1
    # the late peer talks to each of them directly (gossip revealed the addresses)
    assert set(late.links) == {addr(i) for i in range(4)}
    net.call(addr(4), late.post, "lobby", "hello all")
    net.run_while(lambda: late.pending_posts, net.now + 10)
    net.run_until(net.now + 0.3)
    for i in range(4):
        assert [e.text for e in of(net, i, E.MessageReceived)] == ["hello all"]


@pytest.mark.parametrize("wait", [0.05, 0.5])
def test_late_joiner_gets_history_from_its_contact(wait):
    """Older messages come as PeerHistory from the contact, in (lc, nick) order; the last
    moments' messages come from their senders (the join window). Either way exactly once and
    flagged as history."""
    t = timing()
    net, nodes = build(3, seed=2, imp=Impairment(), t=t)
    settle_room(net, nodes)
    for k in range(5):
        net.call(addr(k % 3), nodes[k % 3].post, "lobby", f"old {k}")
        net.run_until(net.now + 0.01)
    net.run_until(net.now + wait)
    net.run_until(net.now + 0.01)
    join_late(net, 3, 1, 4)
    net.run_until(net.now + 0.5)
    got = of(net, 3, E.MessageReceived)
    assert sorted(e.text for e in got) == [f"old {k}" for k in range(5)]
    assert all(e.history for e in got)
    if wait > 2 * t.keepalive:
        assert [e.text for e in got] == [f"old {k}" for k in range(5)]


def test_dead_peer_is_announced_within_the_timeout():
    t = timing()
    net, nodes = build(4, seed=5, imp=Impairment(loss=0.2, jitter=0.01), t=t)
    settle_room(net, nodes)
    net.run_until(net.now + 0.5)
    died = net.now
    net.remove(addr(3))

    def announced():
        return all("p3" in [e.nick for e in of(net, i, E.MemberTimedOut)] for i in range(3))

    net.run_while(lambda: not announced(), died + t.timeout + t.keepalive)
    assert announced()
    assert net.now <= died + t.timeout + t.keepalive
    for n in nodes[:3]:
        assert n.members("lobby") == ["p0", "p1", "p2"]


def test_clean_leave_and_part_and_return():
    net, nodes = build(3, seed=4, imp=Impairment(loss=0.1, jitter=0.005))
    settle_room(net, nodes)
    net.call(addr(2), nodes[2].part, "lobby")
    net.run_until(net.now + 0.5)
    for i in range(2):
        left = of(net, i, E.MemberLeft)
        assert [e.nick for e in left] == ["p2"]
    assert nodes[0].members("lobby") == ["p0", "p1"]
    # p2 comes back to the room
    net.call(addr(2), nodes[2].join, "lobby")
    net.run_while(lambda: not full(nodes), net.now + 5)
    assert [e.nick for e in of(net, 0, E.MemberJoined)].count("p2") == 2
    # p1 quits the program: Bye
    net.call(addr(1), nodes[1].close)
    net.remove(addr(1))
    net.run_until(net.now + 0.3)
    assert "p1" in [e.nick for e in of(net, 0, E.MemberLeft)]
    assert not list(of(net, 0, E.MemberTimedOut))


def test_restarted_peer_is_welcomed_back():
    t = timing()
    net, nodes = build(3, seed=8, imp=Impairment(loss=0.1, jitter=0.005), t=t)
    settle_room(net, nodes)
    net.remove(addr(2))  # crash
    net.run_until(net.now + t.timeout + t.keepalive)
    assert all("p2" in [e.nick for e in of(net, i, E.MemberTimedOut)] for i in range(2))
    again = PeerNode("p2", timing=t, identity=nodes[2].identity)  # its key file survives the crash
    net.add(addr(2), again)
    net.call(addr(2), again.join, "lobby")
    net.call(addr(2), again.add_peer, addr(0))
    net.run_while(lambda: len(again.members("lobby")) < 3 or len(nodes[1].members("lobby")) < 3, net.now + 5)
    assert again.members("lobby") == ["p0", "p1", "p2"]
    assert [e.nick for e in of(net, 1, E.MemberJoined)].count("p2") == 2
    net.call(addr(2), again.post, "lobby", "back")
    net.run_while(lambda: again.pending_posts, net.now + 5)
    net.run_until(net.now + 0.2)
    assert of(net, 1, E.MessageReceived)[-1].text == "back"


def test_restart_on_same_address_before_timeout():
    """A peer restarted quickly (same address, new node id) is told apart from the old one."""
    t = timing()
    net, nodes = build(2, seed=9, imp=Impairment(), t=t)
    settle_room(net, nodes)
    net.remove(addr(1))
    again = PeerNode("p1", timing=t, identity=nodes[1].identity)
    net.add(addr(1), again)
    net.call(addr(1), again.join, "lobby")
    net.call(addr(1), again.add_peer, addr(0))
    net.run_while(lambda: len(again.members("lobby")) < 2, net.now + 3)
    net.run_until(net.now + 0.2)
    assert again.members("lobby") == ["p0", "p1"]
    assert nodes[0].members("lobby") == ["p0", "p1"]
    assert [e.nick for e in of(net, 0, E.MemberJoined)] == ["p1", "p1"]
    net.call(addr(1), again.post, "lobby", "new me")
    net.run_until(net.now + 0.5)
    assert of(net, 0, E.MessageReceived)[-1].text == "new me"


# --------------------------------------------------------------------------- commands


def test_direct_message_nick_away_topic():
    net, nodes = build(3, seed=6, imp=Impairment(loss=0.2, dup=0.1, jitter=0.01))
    settle_room(net, nodes)
    lid = net.call(addr(0), nodes[0].post, "@p2", "psst")
    net.run_while(lambda: nodes[0].pending_posts, net.now + 5)
    assert [a.local_id for a in of(net, 0, E.PostAcknowledged)] == [lid]
    dms = of(net, 2, E.MessageReceived)
    assert [(e.room, e.nick, e.text) for e in dms] == [("@p0", "p0", "psst")]
    assert not of(net, 1, E.MessageReceived)
    with pytest.raises(Refused):
        nodes[0].post("@nobody", "x", net.now)

    net.call(addr(1), nodes[1].set_nick, "bob")
    net.call(addr(1), nodes[1].set_away, "lunch")
    net.call(addr(2), nodes[2].set_topic, "lobby", "plans")
    net.run_until(net.now + 1.0)
    for i in (0, 2):
        assert [(e.old, e.new) for e in of(net, i, E.NickChanged)] == [("p1", "bob")]
        assert ("bob", "lunch") in [(e.nick, e.away) for e in of(net, i, E.AwayChanged)]
    assert [e.topic for e in of(net, 0, E.TopicChanged)] == ["plans"]
    assert nodes[0].members("lobby") == ["bob", "p0", "p2"]
    # a taken nick is refused visibly
    net.call(addr(0), nodes[0].set_nick, "bob")
    assert of(net, 0, E.RequestRefused)[-1].what == "nick"


def test_rooms_are_separate():
    net = FakeNet(seed=1)
    a = net.add(addr(0), PeerNode("a", timing=timing()))
    b = net.add(addr(1), PeerNode("b", timing=timing()))
    c = net.add(addr(2), PeerNode("c", timing=timing()))
    for i, node in enumerate((a, b, c)):
        net.call(addr(i), node.join, "one")
    net.call(addr(0), a.join, "two")
    net.call(addr(1), b.join, "two")
    net.call(addr(1), b.add_peer, addr(0))
    net.call(addr(2), c.add_peer, addr(1))
    net.run_until(2.0)
    assert a.members("two") == ["a", "b"]
    assert a.members("one") == ["a", "b", "c"]
    net.call(addr(0), a.post, "two", "only b")
    net.run_until(net.now + 0.5)
    assert [e.text for e in of(net, 1, E.MessageReceived)] == ["only b"]
    assert not of(net, 2, E.MessageReceived)
    assert not a.pending_posts


def test_post_with_nobody_else_is_acknowledged_at_once():
    node = PeerNode("solo", timing=timing())
    node.join("lobby", 0.0)
    lid = node.post("lobby", "anyone?", 0.0)
    events = [node.next_event() for _ in range(2)]
    assert isinstance(events[0], E.RoomJoined)
    ack = events[1]
    assert isinstance(ack, E.PostAcknowledged) and (ack.local_id, ack.room, ack.seq) == (lid, "lobby", 1)
    # with what we signed, for the app's log: it verifies under our key
    s = ack.signed
    assert s is not None and s.key == node.identity.public
    assert C.verify(s.key, C.signed_bytes("lobby", F.EV_MSG, s.mid, s.ts, b"anyone?"), s.sig)
    with pytest.raises(TextTooLong):
        node.post("lobby", "x" * 1001, 0.0)
    with pytest.raises(Refused):
        node.post("elsewhere", "x", 0.0)


def test_give_up_reports_failure():
    t = timing()
    t.give_up = 0.5
    t.timeout = 5.0
    net, nodes = build(2, seed=1, imp=Impairment(), t=t)
    settle_room(net, nodes)
    net.dark_links[addr(1)] = [(net.now, net.now + 2.0)]
    lid = net.call(addr(0), nodes[0].post, "lobby", "into the void")
    net.run_until(net.now + 1.0)
    assert [(e.local_id, e.room) for e in of(net, 0, E.PostFailed)] == [(lid, "lobby")]
    # still retransmitted: once the link is back, it is delivered (once) and acknowledged
    net.run_until(net.now + 3.0)
    assert [e.text for e in of(net, 1, E.MessageReceived)] == ["into the void"]
    assert [e.local_id for e in of(net, 0, E.PostAcknowledged)] == [lid]


# --------------------------------------------------------------------------- handshake and abuse


def test_cookie_before_state_and_amplification_limit():
    node = PeerNode("x", timing=timing())
    node.join("lobby", 0.0)
    src = ("10.9.9.9", 1234)

    def hello(cookie: bytes = b"") -> bytes:
        return F.encode(
            [
                F.padded_hello(
                    version=F.VERSION, nick="", cookie=cookie, nonce=42, node=43, kx=C.Initiator().msg1
                )
            ]
        )

    # an unpadded Hello earns nothing at all (its Retry would be bigger than itself)
    node.receive_datagram(
        F.encode([F.Hello(version=F.VERSION, nick="evil", cookie=b"", pad=b"", nonce=42, node=43)]), src, 0.0
    )
    assert node.datagrams_to_send(0.0) == [] and node.stats["unpadded"] == 1
    node.receive_datagram(hello(), src, 0.0)
    assert node.links == {}
    out = node.datagrams_to_send(0.0)
    assert len(out) == 1 and out[0][1] == src
    (retry,) = F.decode(out[0][0])
    assert isinstance(retry, F.Retry)
    assert len(out[0][0]) <= 3 * len(hello())
    # a forged cookie creates nothing either
    node.receive_datagram(hello(b"0" * 16), src, 0.0)
    assert node.links == {}
    # the right cookie from another address is not valid there
    node.receive_datagram(hello(retry.cookie), ("10.9.9.8", 1), 0.0)
    assert node.links == {}
    node.datagrams_to_send(0.0)
    # data from an unknown address earns a (small) Reset echoing its token, no state
    node.receive_datagram(
        F.encode([F.Sid(77), F.PeerMsg(room="lobby", seq=1, lc=1, kind=F.EV_MSG, nick="evil", text="hi")]),
        src,
        0.1,
    )
    assert node.links == {}
    (reset,) = node.datagrams_to_send(0.1)
    assert F.decode(reset[0]) == [F.Reset(77)]
    # the real cookie from the right address does create the link
    node.receive_datagram(hello(retry.cookie), src, 0.2)
    assert list(node.links) == [src]


def _mutations(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        if op < 0.4 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op < 0.6 and b:
            del b[rng.randrange(len(b))]
        elif op < 0.8:
            b.insert(rng.randrange(len(b) + 1), rng.randrange(256))
        else:
            b = b[: rng.randrange(len(b) + 1)]
    return bytes(b)


@pytest.mark.parametrize("from_link", [False, True])
def test_fuzz_peer_keeps_serving(from_link):
    """Random and mutated datagrams, from strangers or even from a linked peer's address (a
    spoofer): nothing escapes but counted malformed input, and the peer keeps serving."""
    net, nodes = build(2, seed=12, imp=Impairment())
    settle_room(net, nodes)
    victim = nodes[0]
    link_addr = addr(1)
    samples = [
        F.encode(
            [F.PeerMsg(room="lobby", seq=5, lc=9, kind=F.EV_MSG, nick="p1", text="hello", ts=1.0, mid=77)]
        ),
        F.encode(
            [F.PeerJoin(room="lobby", nick="p1", node=victim.links[link_addr].node, base=1, top=3, lc=4)]
        ),
        F.encode([F.PeerAck(room="lobby", sender="p0", cum=3, ranges=[5, 9])]),
        F.encode([F.Nack("lobby", [1, 100000])]),
        F.encode([F.PeerList("lobby", [("z", "10.1.1.1", 5)], [99])]),
        F.encode(
            [
                F.PeerHistory(
                    "lobby", [F.PeerMsg(room="lobby", seq=1, lc=1, kind=F.EV_MSG, nick="q", text="h")]
                )
            ]
        ),
        F.encode([F.PeerLeave("other", "p1")]),
        F.encode([F.Ping(3), F.Pong(4)]),
    ]
    rng = random.Random(0)
    for k in range(3000):
        if k % 3 == 0:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80)))
        else:
            data = _mutations(rng, rng.choice(samples))
        src = link_addr if from_link and k % 2 else ("10.7.7.7", 1000 + k % 50)
        victim.receive_datagram(data, src, net.now)
        victim.datagrams_to_send(net.now)
        while victim.next_event() is not None:
            pass
        victim.handle_timer(net.now)
    assert victim.stats["malformed"] > 0
    if from_link:
        # what a spoofer said on p1's behalf may have cost that link; a newcomer is still served
        late = net.add(addr(2), PeerNode("late", timing=timing()))
        net.call(addr(2), late.join, "lobby")
        net.call(addr(2), late.add_peer, addr(0))
        net.run_while(lambda: "p0" not in late.members("lobby"), net.now + 5)
        net.call(addr(2), late.post, "lobby", "still there?")
        net.run_until(net.now + 1.0)
        assert "still there?" in [e.text for e in of(net, 0, E.MessageReceived)]
        return
    # still serving: a fresh post is delivered and acknowledged
    net.run_until(net.now + 0.5)
    net.events[addr(1)].clear()
    net.call(addr(1), nodes[1].post, "lobby", "still there?")
    net.run_while(lambda: nodes[1].pending_posts, net.now + 5)
    net.run_until(net.now + 0.2)
    assert "still there?" in [e.text for e in of(net, 0, E.MessageReceived)]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=1300))
def test_random_datagrams_never_raise(data):
    node = PeerNode("x", timing=timing())
    node.join("lobby", 0.0)
    node.receive_datagram(data, ("10.0.0.9", 9), 0.0)
    node.datagrams_to_send(0.0)
    node.handle_timer(0.1)


def test_core_imports_no_io():
    code = (
        "import sys; import udproom.protocol.peer; "
        "bad = {'asyncio', 'socket', 'textual', 'selectors'} & set(sys.modules); "
        "print(','.join(sorted(bad))); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    import udproom.protocol.cookies as cookies_mod
    import udproom.protocol.peer as peer_mod

    package = pathlib.Path(peer_mod.__file__).parent
    files = [*package.glob("*.py"), pathlib.Path(cookies_mod.__file__)]
    assert len(files) >= 3  # the peer is a package of modules: every one of them is checked
    for path in files:
        src = path.read_text()
        assert "import time" not in src and "import socket" not in src and "import asyncio" not in src, path


def test_a_nick_clash_refuses_the_later_joiner_and_no_screen_shows_two():
    net = FakeNet(seed=21)
    nodes = []
    for i, nick in enumerate(["sam", "kim"]):
        node = net.add(addr(i), PeerNode(nick, timing=timing()))
        nodes.append(node)
        net.call(addr(i), node.join, "lobby")
        if i:
            net.call(addr(i), node.add_peer, addr(0))
    settle_room(net, nodes)
    net.run_until(net.now + 0.5)
    # a second sam (another case, even) arrives later, through kim
    late = net.add(addr(2), PeerNode("SAM", timing=timing()))
    net.call(addr(2), late.join, "lobby")
    net.call(addr(2), late.add_peer, addr(1))
    net.run_while(lambda: not of(net, 2, E.RequestRefused), net.now + 10)
    net.run_until(net.now + 1.0)
    (refused,) = of(net, 2, E.RequestRefused)
    assert refused.what == "join" and refused.room == "lobby" and "SAM" in refused.reason
    assert of(net, 2, E.RoomLeft) and "lobby" not in late.rooms
    # the first sam keeps the nick; nobody was ever shown a second sam
    assert nodes[0].nick == "sam"
    for i in (0, 1):
        assert sorted(nodes[i].members("lobby")) == ["kim", "sam"]
        assert not [e for e in of(net, i, E.MemberJoined) if e.nick.casefold() == "sam" and e.nick != "sam"]
        assert not of(net, i, E.NickChanged)
    # and after a /nick the latecomer gets in
    net.call(addr(2), late.set_nick, "sam2")
    net.call(addr(2), late.join, "lobby")
    net.run_while(lambda: sorted(nodes[0].members("lobby")) != ["kim", "sam", "sam2"], net.now + 10)
    assert sorted(nodes[1].members("lobby")) == ["kim", "sam", "sam2"]
