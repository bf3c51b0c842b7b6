"""Presence: away messages and who is here."""

from __future__ import annotations

from udproom.protocol import events as E

from .harness import Room, client_addr


def test_saying_away_twice_tells_the_room_once():
    room = Room(2, seed=40)
    room.wait_joined()
    a, b = client_addr(0), client_addr(1)
    for _ in range(2):
        room.net.call(a, room.clients[a].set_away, "lunch")
    room.net.call(a, room.clients[a].set_away, "")
    room.net.call(a, room.clients[a].set_away, "")  # "back" when already back: nothing to say
    room.settle(0.5)
    assert [e.away for e in room.events(b, E.AwayChanged)] == ["lunch", ""]
