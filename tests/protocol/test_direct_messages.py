"""Direct messages through a relay: kept for someone who drops and comes back, reported failed for
someone who does not."""

from __future__ import annotations

from udproom.protocol import events as E
from udproom.protocol.relay import RelayConfig

from .harness import Room, T, client_addr


def _dark(room: Room, addr: tuple, seconds: float) -> None:
    room.net.dark_links[addr] = [(room.net.now, room.net.now + seconds)]


def test_a_direct_message_to_someone_who_drops_arrives_once_when_they_come_back():
    room = Room(2, seed=76)
    room.wait_joined()
    a, b = client_addr(0), client_addr(1)
    _dark(room, b, 1.5)  # past the 0.6 s timeout: the relay ends b's session
    room.settle(0.05)
    room.net.call(a, room.clients[a].post, "@n1", "while you were away")
    room.settle(1.0)
    assert b not in room.relay.sessions or room.relay.sessions[b].token != room.clients[b]._token
    assert not room.events(a, E.PostAcknowledged)  # not delivered: not acknowledged
    room.net.run_while(lambda: not room.events(a, E.PostAcknowledged), room.net.now + 10)
    got = [e for e in room.events(b, E.MessageReceived) if e.text == "while you were away"]
    assert len(got) == 1 and got[0].room == "@n0"
    room.settle(2.0)  # nothing arrives twice later either
    assert len([e for e in room.events(b, E.MessageReceived) if e.text == "while you were away"]) == 1
    assert not room.events(a, E.PostFailed)


def test_a_direct_message_to_someone_who_never_comes_back_is_reported_failed():
    room = Room(2, seed=77)
    room.relay.config = RelayConfig(timing=T, inbox_keep=2.0)  # < the client's 5 s give-up
    room.wait_joined()
    a, b = client_addr(0), client_addr(1)
    room.net.remove(b)  # its process dies without a word
    room.net.call(a, room.clients[a].post, "@n1", "into the void")
    room.net.run_while(lambda: not room.events(a, E.PostFailed), room.net.now + 10)
    (failed,) = room.events(a, E.PostFailed)
    assert failed.reason == "n1 did not come back to receive it"
    assert not room.events(a, E.PostAcknowledged)
