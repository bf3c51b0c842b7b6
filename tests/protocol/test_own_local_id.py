"""The copy of our own post that comes back from the relay names the local id `post()` returned."""

from __future__ import annotations

from udproom.protocol import events as E

from .harness import Room, client_addr


def test_the_copy_of_our_own_post_carries_its_local_id_and_others_see_none():
    room = Room(2, seed=11)
    room.wait_joined()
    a, b = client_addr(0), client_addr(1)
    ca = room.clients[a]
    ids = [ca.post("lobby", "same words", room.net.now) for _ in range(3)]
    dm = ca.post("@n1", "psst", room.net.now)
    room.net.flush(a)
    room.net.run_while(lambda: len(room.events(a, E.MessageReceived)) < 4, room.net.now + 10)
    mine = room.events(a, E.MessageReceived)
    # the same text three times: each copy still names its own post
    assert sorted(e.local_id for e in mine if e.room == "lobby") == sorted(ids)
    assert [e.local_id for e in mine if e.room == "@n1"] == [dm]
    assert all(e.mine for e in mine)
    room.net.run_while(lambda: len(room.events(b, E.MessageReceived)) < 4, room.net.now + 10)
    assert [e.local_id for e in room.events(b, E.MessageReceived)] == [0, 0, 0, 0]
