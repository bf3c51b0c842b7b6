"""Direct mode orders a room by Lamport stamp: a reply is shown after what it answers, on every
peer, whatever the nicks. The old "same order" tests compared sorted lists, so a Lamport clock
that never advanced passed them; here the order each peer actually shows is compared."""

from __future__ import annotations

import math
from datetime import UTC

import msgspec

from udproom.protocol import events as E
from udproom.tui import model as m

from .fakenet import Impairment
from .peers import MALLORY, addr, build, of, send_as, settle_room, trio


class Screen:
    """A peer's ChatModel in direct mode, fed exactly as the app feeds it."""

    def __init__(self, net, i: int, nick: str) -> None:
        self.net, self.i, self.seen = net, i, 0
        self.chat = m.ChatModel(nick, tz=UTC, clock=lambda: 1_780_000_000.0)
        self.chat.stamp_order = True

    def drain(self) -> None:
        events = self.net.events[addr(self.i)]
        for e in events[self.seen :]:
            self.chat.apply(e)
        self.seen = len(events)

    def shown(self, room: str = "lobby") -> list[tuple[str, str]]:
        self.drain()
        return [(x.nick, x.text) for x in self.chat.rooms[room].lines if x.kind <= m.ACTION]


def delivered(net, i: int, text: str) -> bool:
    return any(isinstance(e, E.MessageReceived) and e.text == text for e in net.events[addr(i)])


def test_replies_are_shown_after_what_they_answer_on_every_peer():
    net, nodes = build(3, seed=11, imp=Impairment(loss=0.1, dup=0.05, jitter=0.01))
    settle_room(net, nodes)
    screens = [Screen(net, i, node.nick) for i, node in enumerate(nodes)]
    for s in screens:
        s.drain()
    # the speakers in an order that sorts against causality by nick: p2, p1, p0, p2, ...
    conversation: list[tuple[str, str]] = []
    for k in range(9):
        i = 2 - k % 3
        text = f"turn {k} by p{i}"
        if conversation:  # each speaker has seen the previous turn before it answers
            previous = conversation[-1][1]
            net.run_while(lambda i=i, p=previous: not delivered(net, i, p), net.now + 20)
            assert delivered(net, i, previous)
        screens[i].drain()
        local_id = net.call(addr(i), lambda now, n=nodes[i], t=text: n.post("lobby", t, now))
        screens[i].chat.add_own_post("lobby", text, False, local_id)
        conversation.append((f"p{i}", text))

    def everyone_has_everything() -> bool:
        for s in screens:
            s.drain()
        others = all(delivered(net, j, t) for j in range(3) for nick, t in conversation if nick != f"p{j}")
        return others and not any(s.chat.pending for s in screens)  # our own posts acknowledged

    net.run_while(lambda: not everyone_has_everything(), net.now + 30)
    for s in screens:
        assert s.shown() == conversation, s.chat.nick
    # the stamps themselves: strictly increasing along the conversation, seen alike by everyone
    stamps = {}
    for j in range(3):
        for e in net.events[addr(j)]:
            if isinstance(e, E.MessageReceived):
                assert stamps.setdefault(e.text, e.seq) == e.seq
    assert [stamps[t] for _n, t in conversation] == sorted({stamps[t] for _n, t in conversation})


def test_timestamps_from_the_wire_are_finite_and_plausible():
    net, (_p0, _p1, mallory) = trio()
    for bad in (math.nan, math.inf, -math.inf, 1e20, -1e20):
        mallory.wall_offset = bad
        net.call(addr(MALLORY), mallory.post, "lobby", f"ts {bad}")
        net.run_until(net.now + 0.1)
    got = list(of(net, 0, E.MessageReceived))
    assert len(got) == 5
    for e in got:
        assert math.isfinite(e.ts) and abs(e.ts - net.now) < 60, e


def test_lamport_stamps_from_the_wire_are_bounded():
    net, (p0, p1, mallory) = trio()
    for k in range(150):
        net.call(addr(1), p1.post, "lobby", f"m{k}")
    net.run_until(net.now + 0.3)
    top = max(e.seq for e in of(net, 0, E.MessageReceived))
    mallory.lc = -1  # its next message is stamped 0: it would go to the top of the scrollback
    net.call(addr(MALLORY), mallory.post, "lobby", "first!")
    net.run_until(net.now + 0.2)
    (early,) = [e for e in of(net, 0, E.MessageReceived) if e.text == "first!"]
    assert early.seq > top  # sent after it had seen them all (its own PeerJoin said so)
    # a stamp far in the future would pin its message below everything said later
    mallory.lc = 2**63 - 2
    net.call(addr(MALLORY), mallory.post, "lobby", "last forever")
    net.run_until(net.now + 0.2)
    assert p0.lc < 1 << 34 and p1.lc < 1 << 34  # a bounded step past what it said before
    net.call(addr(1), p1.post, "lobby", "later")
    net.run_until(net.now + 0.2)
    evs = {e.text: e.seq for e in of(net, 0, E.MessageReceived)}
    assert evs["later"] > evs["last forever"]


def test_a_topic_stamped_at_the_end_of_time_does_not_pin_the_topic():
    net, (p0, p1, mallory) = trio()
    j = mallory._join_frame(mallory.links[addr(0)], mallory.links[addr(0)].rooms["lobby"], net.now, False)
    pinned = msgspec.structs.replace(j, topic="pwned", topic_lc=2**64 - 1, topic_by="p1")
    send_as(net, mallory, MALLORY, 0, [pinned])
    net.run_until(net.now + 0.2)
    net.call(addr(1), p1.set_topic, "lobby", "the real topic")
    net.run_until(net.now + 0.5)
    assert p0.rooms["lobby"].topic == "the real topic"
    assert of(net, 0, E.TopicChanged)[-1].topic == "the real topic"


def test_a_slow_clock_does_not_turn_live_posts_into_history():
    net, (_p0, _p1, slow) = trio(wall_offset=-600.0)
    net.call(addr(MALLORY), slow.post, "lobby", "hello from the past")
    net.run_until(net.now + 0.3)
    (e,) = of(net, 0, E.MessageReceived)
    assert not e.history
