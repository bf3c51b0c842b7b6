"""Direct mode orders a room by Lamport stamp: a reply is shown after what it answers, on every
peer, whatever the nicks. The old "same order" tests compared sorted lists, so a Lamport clock
that never advanced passed them; here the order each peer actually shows is compared."""

from __future__ import annotations

from datetime import UTC

from udproom.protocol import events as E
from udproom.tui import model as m

from .fakenet import Impairment
from .peers import addr, build, settle_room


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
