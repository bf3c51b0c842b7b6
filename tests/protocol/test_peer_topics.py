"""Direct mode's topics are signed by their setters (docs/security.md, "Signed topics"): a hostile
member (`mallory`, a linked peer with a real link that sends any PeerJoin it likes) cannot set a
topic in another's name, nor alter or re-stamp one it relays; an honest change reaches everyone,
once, under its setter's nick."""

from __future__ import annotations

import msgspec
import pytest

from udproom.protocol import crypto as C
from udproom.protocol import events as E
from udproom.protocol import frames as F

from .fakenet import Impairment
from .peers import MALLORY, addr, build, join_late, of, send_as, settle_room, trio


def _join_of(net, node, to):
    """`node`'s own next PeerJoin in #lobby over its link to addr(to), as it would send it."""
    link = node.links[addr(to)]
    return node._join_frame(link, link.rooms["lobby"], net.now, False)


def _topics(net, i):
    return [(e.nick, e.topic) for e in of(net, i, E.TopicChanged)]


def test_a_hostile_member_cannot_set_a_topic_in_another_members_name():
    """mallory claims p1 set a topic: unsigned, signed by mallory's own key, under p1's key with
    mallory's signature, or p1's real signature of another topic. p0 shows none of them and
    counts each; p1's own topic change afterwards is shown, once, as p1's."""
    net, (p0, p1, mallory) = trio(seed=3)
    lc = mallory.lc + 5
    mallory.lc = lc
    theirs = C.signed_event("lobby", F.EV_TOPIC, lc, "p1: mallory runs this room now", by="p1")
    real_elsewhere = p1.identity.sign(C.signed_event("lobby", F.EV_TOPIC, lc, "something p1 said", by="p1"))
    forged = [
        (b"", b""),
        (mallory.identity.public, mallory.identity.sign(theirs)),
        (p1.identity.public, mallory.identity.sign(theirs)),
        (p1.identity.public, real_elsewhere),
        (p1.identity.public, b"\0" * 64),
        (b"\1" * 31, b""),
    ]
    before = p0.stats["bad_signature"]
    for key, sig in forged:
        j = _join_of(net, mallory, 0)
        j = msgspec.structs.replace(
            j,
            lc=lc,
            topic="p1: mallory runs this room now",
            topic_lc=lc,
            topic_by="p1",
            topic_key=key,
            topic_sig=sig,
        )
        send_as(net, mallory, MALLORY, 0, [j])
        net.run_until(net.now + 0.1)
    assert _topics(net, 0) == [] and p0.rooms["lobby"].topic == ""
    assert p0.stats["bad_signature"] - before >= len(forged)
    # and in mallory's own name with someone else's key, or with no signature: neither
    j = msgspec.structs.replace(
        _join_of(net, mallory, 0), topic="mine", topic_lc=lc, topic_by="mallory", topic_key=p1.identity.public
    )
    send_as(net, mallory, MALLORY, 0, [j])
    net.run_until(net.now + 0.2)
    assert _topics(net, 0) == []
    net.call(addr(1), p1.set_topic, "lobby", "the real topic")
    net.run_until(net.now + 0.5)
    assert _topics(net, 0) == [("p1", "the real topic")]


@pytest.mark.parametrize("change", ["altered", "restamped", "reattributed"])
def test_a_topic_relayed_by_a_hostile_member_cannot_be_altered_nor_restamped(change):
    """p0 sets a topic; a newcomer meets the room through mallory, which passes p0's topic on with
    p0's key and signature but another text, or with a later stamp (to bring an old topic back
    over a newer one), or as set by p1 (whom the newcomer has not met yet). The newcomer shows none
    of them; it shows p0's topic, as p0's, once it hears it from anyone (p0 itself, once linked),
    once."""
    net, (p0, _p1, mallory) = trio(seed=4)
    net.call(addr(0), p0.set_topic, "lobby", "release on friday")
    net.run_until(net.now + 0.5)
    assert mallory.rooms["lobby"].topic == "release on friday"
    room = mallory.rooms["lobby"]
    if change == "altered":
        room.topic = "p0: pay mallory"
    elif change == "restamped":
        mallory.lc = room.topic_key[0] + 10**6
        room.topic_key = (mallory.lc, room.topic_key[1])
    else:
        room.topic_key = (room.topic_key[0], "p1")
    late = join_late(net, 5, MALLORY, 4, "newbie")
    net.run_until(net.now + 0.5)
    assert len(late.members("lobby")) == 4
    assert _topics(net, 5) == [("p0", "release on friday")], change
    assert late.stats["bad_signature"] >= 1


def test_an_honest_topic_change_reaches_everyone_once():
    """Honest peers (with loss and duplicates; one joining later through one who renamed after
    setting a topic): each shows each topic change once, under the nick that set it, and keeps
    the setter's signature to pass it on."""
    net, nodes = build(3, seed=5, imp=Impairment(loss=0.1, dup=0.1, jitter=0.01))
    settle_room(net, nodes)
    net.call(addr(1), nodes[1].set_topic, "lobby", "plans")
    net.run_until(net.now + 1.0)
    net.call(addr(1), nodes[1].set_nick, "bob")  # the topic stays p1's: it was set under that nick
    net.call(addr(2), nodes[2].set_topic, "lobby", "new plans")
    net.run_until(net.now + 1.0)
    late = join_late(net, 3, 1, 4)
    net.run_until(net.now + 1.0)
    assert len(late.members("lobby")) == 4
    for i in (0, 1, 2):
        assert _topics(net, i) == [("p1", "plans"), ("p2", "new plans")], i
    assert _topics(net, 3) == [("p2", "new plans")]
    assert all(n.stats["bad_signature"] == 0 for n in [*nodes, late])
    # each keeps the setter's signature, and it is the setter's
    for n in (*nodes, late):
        key, sig = n.rooms["lobby"].topic_proof
        assert key == nodes[2].identity.public
        lc, by = n.rooms["lobby"].topic_key
        assert by == "p2"
        assert C.verify(key, C.signed_event("lobby", F.EV_TOPIC, lc, "new plans", by="p2"), sig)
