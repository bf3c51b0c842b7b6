"""Direct mode with a hostile participant driven by hypothesis (issue 7).

`mallory` is linked into the room as a peer and sends anything `adversary.frames()` can build over
its authenticated link (half of its messages signed with its own key), while an off-path forger
injects any datagram, clear or shaped like a sealed one, with p0's or p1's source address (or from
strangers). After every step: every datagram <= 1200 bytes (`Watched`), what the
honest peers sent to addresses that never completed a handshake is at most 3x what came from the
attacker's side, no live message is attributed to anyone but the link it came over, nothing
escapes a core, per-link buffers stay bounded; and afterwards p0 and p1 still converse, in one
order."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from udproom.protocol import events as E
from udproom.protocol import frames as F
from udproom.protocol.names import MAX_TEXT_BYTES
from udproom.protocol.peer import PeerNode
from udproom.protocol.peer import state as P

from .adversary import Adversary, Watched, datagrams, floats, frames, ints, texts
from .fakenet import FakeNet, Impairment
from .peers import addr, of, settle_room, signed, timing

HONEST = (0, 1)
MALLORY = 2
FORGER = ("10.66.6.6", 6666)
STRANGERS = [("10.77.0.1", 1), ("10.0.0.1", 9), ("127.0.0.1", 7000)]


def build():
    net = FakeNet(seed=5, imp=Impairment())
    nodes, watched = [], []
    for i, nick in enumerate(("p0", "p1", "mallory")):
        node = PeerNode(nick, timing=timing())
        w = Watched(node, addr(i))
        nodes.append(node)
        watched.append(w)
        net.add(addr(i), w)
        net.call(addr(i), node.join, "lobby")
        if i:
            net.call(addr(i), node.add_peer, addr(0))
    settle_room(net, nodes)
    net.run_until(net.now + 2 * timing().timeout)  # everyone has been in the room a while
    return net, nodes, watched


def _sid_datagrams():
    """Datagrams that start with a Sid: a guessed token (protocol 1's guard; a knock)."""
    return datagrams(prefix=st.builds(F.Sid, ints()))


def _sealed_datagrams():
    """What looks like a sealed datagram (session or room kind, any packet number): without the
    link's keys, a forger can only guess."""
    return st.builds(
        lambda kind, pn, body: bytes((0xC1, kind)) + pn.to_bytes(8, "big") + body,
        st.sampled_from([0, 1, 2, 3]),
        st.one_of(st.integers(0, 3), st.integers(0, 2**64 - 1)),
        st.binary(max_size=1190),
    )


NICKS = st.one_of(st.sampled_from(["p0", "p1", "P1", "mallory", "p\u0430"]), texts(40))
SEQ = st.one_of(st.just(0), st.integers(-2, 6), ints())  # mostly the next one they expect
HOSTS = st.one_of(
    st.sampled_from(["224.0.0.1", "255.255.255.255", "0.0.0.0", "::", "ff02::1", "127.0.0.1", "10.0.0.2"]),
    st.integers(1, 250).map(lambda k: f"192.168.7.{k}"),
    texts(70),
)
SMALL = st.one_of(st.integers(-2, 6), ints())


def _wire(n: int) -> int:
    return max(-(2**63), min(2**64 - 1, n))  # what msgpack can carry


def _msg(room_kind, off, lc, nick, text, ts, mid):
    room, kind = room_kind

    def make(p0_view):
        return F.PeerMsg(
            room=room, seq=_wire(p0_view(room) + off), lc=lc, kind=kind, nick=nick, text=text, ts=ts, mid=mid
        )

    return make


def _join(room, nick, base, top, lc, topic, tlc, tby, ask, hist, since):
    def make(p0_view, node):
        return F.PeerJoin(
            room=room,
            nick=nick,
            node=node,
            base=_wire(p0_view(room) + base),
            top=top,
            lc=lc,
            away="",
            topic=topic,
            topic_lc=tlc,
            topic_by=tby,
            ask=ask,
            history=hist,
            since=since,
        )

    return make


# frames a modified client would send: right room, its own node id, numbers near the stream's
# and anything at all in the fields that carry claims and numbers
_rooms = st.sampled_from(["lobby", ""])
hostile = st.one_of(
    st.builds(
        _msg,
        st.sampled_from([("lobby", F.EV_MSG), ("lobby", F.EV_ACTION), ("", F.EV_DM), ("lobby", F.EV_DM)]),
        SEQ,
        ints(),
        NICKS,
        texts(1000),
        floats(),
        ints(),
    ).map(lambda f: ("msg", f)),
    st.builds(
        _join,
        _rooms,
        NICKS,
        SMALL,
        SMALL,
        ints(),
        texts(300),
        ints(),
        NICKS,
        st.booleans(),
        st.booleans(),
        floats(),
    ).map(lambda f: ("join", f)),
    st.builds(
        lambda peers, ids: ("plain", F.PeerList("lobby", peers, ids)),
        st.lists(st.tuples(NICKS, HOSTS, ints()), max_size=12),
        st.lists(ints(), max_size=12),
    ),
    st.builds(lambda r: ("plain", F.Nack("lobby", r)), st.lists(ints(), max_size=16)),
    frames().map(lambda f: ("plain", f)),
)

step = st.one_of(
    # mallory, over its own link (it holds the token), sends any frames at all
    st.tuples(st.just("link"), st.sampled_from(HONEST), st.lists(hostile, min_size=1, max_size=6)),
    # the forger, with an honest peer's (or a stranger's) source address
    st.tuples(
        st.just("forge"),
        st.sampled_from(HONEST),
        st.one_of(datagrams(), _sid_datagrams(), _sealed_datagrams()),
        st.sampled_from([addr(0), addr(1), addr(MALLORY), *STRANGERS]),
    ),
    st.tuples(st.just("wait"), st.floats(0.001, 0.3)),
)


def check(net, nodes, watched, posted, forged):
    for i in HONEST:
        node, w = nodes[i], watched[i]
        # anti-amplification: bytes to addresses that never completed a handshake
        shaken = {addr(k) for k in range(3)}
        silent_out = sum(n for dst, n in w.bytes_out.items() if dst not in shaken)
        hostile_in = sum(n for src, n in w.bytes_in.items() if src not in (addr(0), addr(1)))
        # (what the forger sent under an honest peer's address counts as the attacker's too)
        assert silent_out <= 3 * (hostile_in + forged[i]), (i, silent_out, hostile_in, forged[i])
        # attribution: the honest peer's nick only on what it posted
        other = nodes[1 - i].nick
        for e in of(net, i, E.MessageReceived):
            if not e.history and e.nick.casefold() == other.casefold():
                assert e.text in posted[1 - i], e
        # bounded memory per link
        assert len(node.links) <= P.MAX_LINKS
        for link in node.links.values():
            held = sum(lr.rx.bytes for lr in link.rooms.values() if lr.rx is not None)
            assert held <= P.MAX_RX_BYTES + P.RX_ITEM_BYTES + MAX_TEXT_BYTES
            assert len(link.rooms) <= P.MAX_ROOMS + 1


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
@given(st.lists(step, min_size=1, max_size=12))
def test_a_hostile_peer_and_a_forger_cannot_break_direct_mode(steps):
    net, nodes, watched = build()
    mallory = nodes[MALLORY]
    adv = Adversary(net, FORGER)
    posted: dict[int, list[str]] = {0: [], 1: []}
    ids: dict[int, list[int]] = {0: [], 1: []}
    forged = {0: 0, 1: 0}  # bytes the forger sent each honest peer from honest addresses
    for k, s in enumerate(steps):
        if s[0] == "link":
            _, to, fs = s
            link = mallory.links.get(addr(to))
            if link is not None and link.state == P.UP:
                victim = nodes[to].links.get(addr(MALLORY))

                def p0_view(room, victim=victim):
                    lr = victim.rooms.get(room) if victim is not None else None
                    return lr.rx.next if lr is not None and lr.rx is not None else 1

                for tag, f in fs:
                    if tag == "msg":
                        f = f(p0_view)
                        if f.mid % 2 == 0:  # half of them signed with its own key (shown if valid)
                            f = signed(mallory, f)
                    elif tag == "join":
                        f = f(p0_view, mallory.node)
                    link.out.append(f)
                try:
                    net.flush(addr(MALLORY))
                except AssertionError:
                    pass  # its own oversized datagram: the network carries it, the peer refuses it
        elif s[0] == "forge":
            _, to, data, src = s
            adv.forge(data, addr(to), src=src)
            if src in (addr(0), addr(1)):
                forged[to] += len(data)
        else:
            net.run_until(net.now + s[1])
        i = k % 2
        text = f"honest {i}.{k}"
        ids[i].append(net.call(addr(i), nodes[i].post, "lobby", text))
        posted[i].append(text)
        net.run_until(net.now + 0.02)
        check(net, nodes, watched, posted, forged)
    # afterwards the honest peers still converse, in one order
    net.run_until(net.now + 2 * timing().timeout)
    for i in HONEST:
        ids[i].append(net.call(addr(i), nodes[i].post, "lobby", f"after {i}"))
        posted[i].append(f"after {i}")
    net.run_while(lambda: any(nodes[i].pending_posts for i in HONEST), net.now + 10)
    net.run_until(net.now + 0.5)
    check(net, nodes, watched, posted, forged)
    views = []
    for i in HONEST:
        got = [(e.seq, e.nick, e.text) for e in of(net, i, E.MessageReceived) if e.nick == nodes[1 - i].nick]
        assert [t for _, _, t in got if t.startswith("after")] == [f"after {1 - i}"]
        acked = {a.local_id: a.seq for a in of(net, i, E.PostAcknowledged)}
        own = [(acked[lid], nodes[i].nick, t) for lid, t in zip(ids[i], posted[i], strict=True)]
        # each sender's order, exactly once
        assert [t for _, _, t in got] == posted[1 - i]
        views.append(sorted(got + own))
    assert views[0] == views[1]
