"""Direct-mode links: a link is its handshake and its token; forged handshake frames and forged
datagrams from a member's address change nothing."""

from __future__ import annotations

import msgspec

from udproom.protocol import events as E
from udproom.protocol import frames as F
from udproom.protocol.peer import PeerNode
from udproom.protocol.peer import state as P

from .adversary import Adversary
from .fakenet import FakeNet
from .peers import FORGER, addr, of, timing, trio


def test_forged_handshake_frames_from_a_members_address_change_nothing():
    net, (p0, p1, _mallory) = trio()
    adv = Adversary(net, FORGER)
    link = p0.links[addr(1)]
    node, nick = link.node, link.nick
    forged = [
        F.Welcome(version=F.VERSION, nick="evil", epoch=12345, keepalive_ms=100, timeout_ms=600),
        F.Welcome(
            version=F.VERSION, nick="evil", epoch=12345, keepalive_ms=100, timeout_ms=600, token=777, nonce=42
        ),
        F.Bye("forged"),
        F.Reset(),
        F.Reset(0x1234),
        F.Refuse("go away"),
        F.Hello(version=F.VERSION, nick="evil", cookie=b"x" * 16, pad=bytes(1100), nonce=999),
    ]
    for _k in range(3):
        for frame in forged:
            adv.forge(F.encode([frame]), addr(0), src=addr(1))
            adv.forge(F.encode([frame]), addr(1), src=addr(0))
        net.run_until(net.now + 0.1)
    net.run_until(net.now + 0.5)
    assert p0.links[addr(1)] is link and link.state == P.UP and (link.node, link.nick) == (node, nick)
    for i in (0, 1):
        assert not of(net, i, E.MemberLeft) and not of(net, i, E.MemberTimedOut)
        assert [e.nick for e in of(net, i, E.MemberJoined)].count("p1" if i == 0 else "p0") <= 1
    net.call(addr(1), p1.post, "lobby", "still me")
    net.run_until(net.now + 0.3)
    assert [(e.nick, e.text) for e in of(net, 0, E.MessageReceived)] == [("p1", "still me")]


def test_a_forged_datagram_cannot_speak_for_a_member():
    """Data frames forged with a member's source address (an off-path forger knows addresses from
    gossip, not the link's token) are dropped: no message, no leave, no nick change."""
    net, (p0, _p1, _mallory) = trio()
    adv = Adversary(net, FORGER)
    frames = [
        F.PeerMsg(room="lobby", seq=1, lc=10**6, kind=F.EV_MSG, nick="p1", text="forged", ts=1.0, mid=5),
        F.PeerLeave("lobby", "p1", "forged"),
        F.PeerJoin(
            room="lobby", nick="bob", node=p0.links[addr(1)].node, base=1, top=0, lc=0, away="forged away"
        ),
    ]
    for seq in range(1, 5):
        frames[0] = msgspec.structs.replace(frames[0], seq=seq)
        for f in frames:
            adv.forge(F.encode([f]), addr(0), src=addr(1))
    net.run_until(net.now + 0.5)
    assert not of(net, 0, E.MessageReceived) and not of(net, 0, E.MemberLeft)
    assert not of(net, 0, E.NickChanged) and not of(net, 0, E.AwayChanged)


def test_a_newcomer_reusing_a_node_id_cannot_lock_its_owner_out():
    net = FakeNet(seed=3)
    p0 = net.add(addr(0), PeerNode("p0", timing=timing()))
    net.call(addr(0), p0.join, "lobby")
    stolen = 0x5EED
    evil = net.add(addr(3), PeerNode("evil", timing=timing(), node=stolen))
    net.call(addr(3), evil.join, "lobby")
    net.call(addr(3), evil.add_peer, addr(0))
    net.run_until(net.now + 0.5)
    bob = net.add(addr(1), PeerNode("bob", timing=timing(), node=stolen))
    net.call(addr(1), bob.join, "lobby")
    net.call(addr(1), bob.add_peer, addr(0))
    net.run_while(lambda: "bob" not in p0.members("lobby") or "p0" not in bob.members("lobby"), net.now + 3.0)
    assert "bob" in p0.members("lobby") and "p0" in bob.members("lobby")


def test_forged_answers_to_a_hello_in_flight_are_not_believed():
    """While p0's handshake with p1 is under way, a forger who knows p1's address (and node id)
    answers for it: a Welcome with a fake identity, a Refuse, a Retry. None is tied to p0's nonce:
    the link neither adopts the fake identity nor gives up, and completes with the real p1."""
    net = FakeNet(seed=8)
    p0 = net.add(addr(0), PeerNode("p0", timing=timing()))
    p1 = net.add(addr(1), PeerNode("p1", timing=timing()))
    for i, node in enumerate((p0, p1)):
        net.call(addr(i), node.join, "lobby")
    adv = Adversary(net, FORGER)
    net.dark_links[addr(1)] = [(0.0, 0.3)]  # p1 hears nothing yet
    net.call(addr(0), p0.add_peer, addr(1))
    for k in range(5):
        for f in (
            F.Welcome(
                version=F.VERSION,
                nick="impostor",
                epoch=4242,
                keepalive_ms=100,
                timeout_ms=600,
                token=77,
                nonce=k,
            ),
            F.Refuse("go away", [1], k),
            F.Retry(b"z" * 16),
        ):
            adv.forge(F.encode([f]), addr(0), src=addr(1))
        net.run_until(net.now + 0.05)
    link = p0.links.get(addr(1))
    assert link is not None and link.node in (0, p1.node)
    assert not [e for e in of(net, 0, E.Notice) if "refused" in e.text]
    net.run_while(lambda: "p1" not in p0.members("lobby"), net.now + 3.0)
    assert p0.links[addr(1)].node == p1.node and p0.members("lobby") == ["p0", "p1"]


def test_a_peers_key_is_the_one_its_link_proved():
    """What /whois and the members pane show in direct mode: `key_of` gives a linked nick's key as
    its handshake proved it (any spelling of the nick), ours for our own nick, None for a stranger."""
    _net, (p0, p1, mallory) = trio()
    assert p0.key_of("lobby", "p1") == p1.identity.public
    assert p0.key_of("", "P1") == p1.identity.public and p0.key_of("", "mallory") == mallory.identity.public
    assert p0.key_of("lobby", "p0") == p0.identity.public
    assert p0.key_of("lobby", "nobody") is None
