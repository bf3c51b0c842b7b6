"""Direct peers (protocol/peer/) on the seeded fake network: building rooms of PeerNodes, waiting
for them to settle, and a room with a hand-driven `mallory`."""

from __future__ import annotations

import random

import msgspec

from udproom.protocol import crypto as C
from udproom.protocol import events as E
from udproom.protocol import frames as F
from udproom.protocol.peer import PeerNode
from udproom.protocol.reliability import Timing

from .adversary import Watched
from .fakenet import FakeNet, Impairment


def timing() -> Timing:
    t = Timing.fast()
    t.timeout = 1.5  # 15 keepalives: a lossy link is not mistaken for a dead one
    return t


def addr(i: int) -> tuple:
    return (f"10.0.0.{i + 1}", 7000 + i)


def build(
    n: int,
    seed: int = 0,
    imp: Impairment | None = None,
    chain: bool = True,
    room: str = "lobby",
    t: Timing | None = None,
):
    """n peers in `room`; peer i knows only peer i-1 (chain) or only peer 0 (star)."""
    net = FakeNet(seed=seed, imp=imp)
    nodes = []
    for i in range(n):
        node = net.add(addr(i), PeerNode(f"p{i}", timing=t or timing()))
        nodes.append(node)
        net.call(addr(i), node.join, room)
        if i:
            net.call(addr(i), node.add_peer, addr(i - 1) if chain else addr(0))
    return net, nodes


def full(nodes, room="lobby"):
    return all(len(n.members(room)) == len(nodes) for n in nodes)


def of(net, i, kind):
    return [e for e in net.events[addr(i)] if isinstance(e, kind)]


def settle_room(net, nodes, limit=15.0):
    net.run_while(lambda: not full(nodes), net.now + limit)
    assert full(nodes), [n.members("lobby") for n in nodes]


def check_delivery(net, nodes, sent: dict[str, list[str]], room="lobby"):
    """Every peer delivered every other peer's messages exactly once, in each sender's order, and
    the final (lc, nick) order of the whole room is the same on every peer."""
    views = []
    for i, node in enumerate(nodes):
        got = [e for e in of(net, i, E.MessageReceived) if e.room == room and not e.history]
        for sender, texts in sent.items():
            if sender == node.nick:
                continue
            mine = [e.text for e in got if e.nick == sender]
            assert mine == texts, f"{node.nick} from {sender}: {len(mine)} of {len(texts)}"
        # our own posts carry their Lamport stamp in PostAcknowledged.seq
        own = {}
        for a in of(net, i, E.PostAcknowledged):
            own[a.local_id] = a.seq
        assert len(own) == len(sent.get(node.nick, [])), f"{node.nick}: not every post acknowledged"
        view = sorted(
            [(e.seq, e.nick, e.text) for e in got]
            + [
                (lc, node.nick, text)
                for lc, text in zip([own[k] for k in sorted(own)], sent.get(node.nick, []), strict=False)
            ]
        )
        views.append(view)
    for v in views[1:]:
        assert v == views[0]
    assert len(views[0]) == sum(len(v) for v in sent.values())
    # the Lamport order respects each sender's own order
    for sender, texts in sent.items():
        assert [t for _lc, nick, t in views[0] if nick == sender] == texts


def run_chat(n: int, per_peer: int, seed: int, imp: Impairment, chain: bool = True):
    net, nodes = build(n, seed, imp, chain)
    settle_room(net, nodes)
    rng = random.Random(seed)
    sent: dict[str, list[str]] = {node.nick: [] for node in nodes}
    for k in range(per_peer):
        for i, node in enumerate(nodes):
            if rng.random() < 0.8:
                text = f"{node.nick} says {k}"
                act = rng.random() < 0.1
                net.call(addr(i), lambda now, n=node, t=text, a=act: n.post("lobby", t, now, action=a))
                sent[node.nick].append(text)
        net.run_until(net.now + rng.random() * 0.02)
    net.run_while(lambda: any(nd.pending_posts for nd in nodes), net.now + 30)
    net.run_until(net.now + 1.0)  # trailing acks
    assert not any(nd.pending_posts for nd in nodes)
    return net, nodes, sent


MALLORY = 2

FORGER = ("10.66.6.6", 6666)


def trio(seed: int = 1, nicks=("p0", "p1", "mallory"), watch: bool = False, **kw):
    """p0 and p1 (honest) and mallory in #lobby, all linked. With `watch`, p0 is a `Watched`."""
    net = FakeNet(seed=seed, imp=Impairment())
    nodes = []
    for i, nick in enumerate(nicks):
        node = PeerNode(nick, timing=timing(), **(kw if i == MALLORY else {}))
        nodes.append(node)
        net.add(addr(i), Watched(node, addr(i)) if watch and i == 0 else node)
        net.call(addr(i), node.join, "lobby")
        if i:
            net.call(addr(i), node.add_peer, addr(0))
    settle_room(net, nodes)
    net.run_until(net.now + 0.3)
    return net, nodes


def join_late(net, i: int, contact: int, members: int, nick: str = "late", **kw) -> PeerNode:
    """A peer at addr(i) joins #lobby through the peer at addr(contact) and waits until it sees
    `members` members (or 5 s pass)."""
    late = net.add(addr(i), PeerNode(nick, timing=timing(), **kw))
    net.call(addr(i), late.join, "lobby")
    net.call(addr(i), late.add_peer, addr(contact))
    net.run_while(lambda: len(late.members("lobby")) < members, net.now + 5)
    return late


def send_as(net, node: PeerNode, i: int, to: int, frames: list) -> None:
    """`node` (at addr(i)) sends `frames` over its established link to addr(to)."""
    node.links[addr(to)].out.extend(frames)
    net.flush(addr(i))


def signed(node: PeerNode, m: F.PeerMsg, room: str | None = None) -> F.PeerMsg:
    """`m` signed with `node`'s identity key (for `room`, default its own), as its author would."""
    sig = C.sign_message(
        node.identity, m.room if room is None else room, m.kind, m.mid, m.ts, m.text.encode()
    )
    return msgspec.structs.replace(m, sig=sig)
