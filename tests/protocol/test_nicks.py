"""Nicks: unique per relay and per room (by `nick_key`), kept across reconnects, never taken over by a
peer."""

from __future__ import annotations

from udproom.protocol import events as E
from udproom.protocol.peer import PeerNode

from .harness import Room, T, client_addr
from .peers import MALLORY, addr, of, timing, trio


def test_a_nick_change_survives_a_reconnect():
    room = Room(2, seed=34)
    room.wait_joined()
    a, b = client_addr(0), client_addr(1)
    room.net.call(a, room.clients[a].set_nick, "alice")
    room.settle(0.3)
    assert room.clients[a].nick == "alice"
    t0 = room.net.now
    room.net.dark_links[a] = [(t0, t0 + 3 * T.timeout)]  # long enough to lose the session
    room.net.run_while(lambda: room.events(a, E.Connected)[-1:] == room.events(a, E.Connected)[:1], t0 + 20)
    room.settle(1.0)
    assert room.clients[a].nick == "alice"
    assert "alice" in room.clients[b].rooms["lobby"].members
    assert "n0" not in room.clients[b].rooms["lobby"].members


def test_nicks_are_unique_regardless_of_case():
    room = Room(2, seed=39)
    room.wait_joined()
    _a, b = client_addr(0), client_addr(1)
    room.net.call(b, room.clients[b].set_nick, "N0")
    room.settle(0.3)
    refused = room.events(b, E.RequestRefused)
    assert refused and refused[-1].what == "nick"
    room.add_client(5, "N1")  # n1 is on the relay already: nicks are unique per relay
    room.settle(0.5)
    (refused,) = room.events(client_addr(5), E.Refused)
    assert refused.reason == "nick N1 is in use on this relay (it looks like n1)"


def test_our_own_nick_change_is_our_nick_from_its_event_on():
    """The room's NickChanged can reach the app before the relay's Result: by then the session's
    nick must already be the new one (the app resynchronises its own nick from it)."""
    room = Room(2, seed=43)
    room.wait_joined()
    a = client_addr(0)
    ca = room.clients[a]
    ca.set_nick("zed", room.net.now)
    room.net.flush(a)
    seen_at_event = []
    orig = ca.next_event

    def spy():
        ev = orig()
        if isinstance(ev, E.NickChanged) and ev.new == "zed":
            seen_at_event.append(ca.nick)
        return ev

    ca.next_event = spy
    room.settle(0.5)
    assert seen_at_event == ["zed"]


def test_nicks_are_unique_per_relay_so_direct_messages_are_unambiguous():
    room = Room(0, seed=75)
    alice = room.add_client(0, "alice", join=False)  # in no room at all
    room.settle(0.3)
    room.add_client(1, "bob")
    room.settle(0.3)
    fake = room.add_client(2, "ALICE")  # the same nick, another case, no room shared with alice
    room.settle(0.3)
    (refused,) = room.events(client_addr(2), E.Refused)
    assert refused.reason == "nick ALICE is in use on this relay (it looks like alice)" and not fake.connected
    carol = room.add_client(3, "carol", join=False)
    room.settle(0.3)
    room.net.call(client_addr(3), carol.set_nick, "Alice")  # a /nick to it, also refused
    room.settle(0.3)
    assert (
        room.events(client_addr(3), E.RequestRefused)[-1].reason
        == "nick Alice is in use on this relay (it looks like alice)"
    )
    bob = room.clients[client_addr(1)]
    room.net.call(client_addr(1), bob.post, "@Alice", "for alice")
    room.net.run_while(lambda: not room.events(client_addr(1), E.PostAcknowledged), room.net.now + 5)
    got = [e for e in room.events(client_addr(0), E.MessageReceived) if e.text == "for alice"]
    assert len(got) == 1 and got[0].room == "@bob" and alice.nick == "alice"
    # the name is free again once its holder leaves
    room.net.call(client_addr(0), alice.close)
    room.settle(0.3)
    room.net.call(client_addr(3), carol.set_nick, "Alice")
    room.settle(0.3)
    assert carol.nick == "Alice"


def test_a_peer_cannot_rename_itself_into_someone_else():
    net, (p0, p1, mallory) = trio()
    mallory.nick = "P1"  # its PeerJoins now say so (another case of p1's nick, even)
    net.call(addr(MALLORY), mallory._refresh_all)
    net.run_until(net.now + 0.2)
    net.call(addr(MALLORY), mallory.post, "lobby", "it is me, p1")
    net.call(addr(MALLORY), mallory.post, "@p0", "psst, p1 here")
    net.run_until(net.now + 0.3)
    assert not [e for e in of(net, 0, E.MessageReceived) if e.nick.casefold() == "p1" or e.room == "@P1"]
    assert sorted(p0.members("lobby"), key=str.casefold) == ["p0", "p1"]  # one p1, the real one
    net.call(addr(1), p1.post, "@p0", "the real p1")
    net.run_until(net.now + 0.3)
    assert [(e.room, e.nick, e.text) for e in of(net, 0, E.MessageReceived)] == [("@p1", "p1", "the real p1")]


def test_a_newcomer_claiming_an_early_since_cannot_make_a_member_leave():
    net, (p0, bob, _m) = trio(nicks=("p0", "bob", "m"))
    net.remove(addr(MALLORY))
    net.run_until(net.now + 2.0)
    evil = PeerNode("bob", timing=timing())
    net.add(addr(3), evil)
    net.call(addr(3), evil.join, "lobby")
    evil.rooms["lobby"].joined_ts = -1e9  # "I have been here since 1938"
    net.call(addr(3), evil.add_peer, addr(0))
    net.run_until(net.now + 2.0)
    assert "lobby" in bob.rooms and not of(net, 1, E.RequestRefused)
    assert p0.members("lobby").count("bob") == 1


def test_a_peer_cannot_post_as_someone_else():
    net, (_p0, _p1, mallory) = trio()
    mallory.nick = "p1"  # a modified client: its frames say "p1"
    net.call(addr(MALLORY), mallory.post, "lobby", "send me your password")
    net.run_until(net.now + 0.3)
    got = [(e.nick, e.text) for e in of(net, 0, E.MessageReceived)]
    assert got == [("mallory", "send me your password")]


def test_a_client_restarted_after_a_crash_gets_its_nick_back_once_the_ghost_times_out():
    """Killed without a word and restarted at once (a new address, the same nick): the ghost session
    holds the nick until the relay times it out, so the relay's Refuse says when to try again and the
    client does, instead of giving up for good."""
    room = Room(0, seed=81)
    room.add_client(0, "zed")
    room.add_client(1, "bob")
    room.wait_joined()
    room.net.remove(client_addr(0))  # SIGKILL
    t_dead = room.net.now
    new = room.add_client(2, "zed")
    n2 = client_addr(2)
    room.net.run_while(lambda: not any(e.room == "lobby" for e in room.events(n2, E.RoomJoined)), t_dead + 10)
    lost = room.events(n2, E.ConnectionLost)
    assert lost and all(e.reason == "nick zed is in use on this relay" for e in lost)
    assert all(0 < e.retry_in <= 2 * T.timeout for e in lost)
    assert not room.events(n2, E.Refused)
    assert new.connected and new.nick == "zed" and "lobby" in new.rooms
    assert room.net.now < t_dead + 3 * T.timeout  # not a backoff of its own: when the relay said
    assert "zed" in room.clients[client_addr(1)].rooms["lobby"].members


def test_a_live_holder_of_the_nick_keeps_it_and_the_refusal_is_final():
    room = Room(0, seed=82)
    zed = room.add_client(0, "zed")
    room.wait_joined()
    other = room.add_client(1, "zed")
    n1 = client_addr(1)
    room.net.run_while(lambda: not room.events(n1, E.Refused), room.net.now + 10 * T.timeout)
    (refused,) = room.events(n1, E.Refused)
    assert refused.reason == "nick zed is in use on this relay"
    room.settle(3 * T.timeout)  # final: no more Hellos, never connected
    assert not other.connected and other.state == "closed" and len(room.events(n1, E.Refused)) == 1
    assert zed.connected and zed.nick == "zed"


def test_a_refusal_cannot_park_the_client_for_ever_nor_hammer_the_relay():
    """retry_ms comes from the network: a huge one is bounded, a tiny one waits at least the
    reconnect minimum, a negative one is final like a Refuse without it."""
    from udproom.protocol import frames as F
    from udproom.protocol.client import MAX_REFUSE_WAIT, ClientSession

    from .harness import RELAY

    for retry_ms, wait in ((2**62, MAX_REFUSE_WAIT), (1, T.reconnect_min), (-5, None)):
        c = ClientSession("zed", T)
        c.connect(RELAY, 1.0)
        c.datagrams_to_send(1.0)
        c.receive_datagram(F.encode([F.Refuse("nick zed is in use", [], c._nonce, retry_ms)]), RELAY, 1.0)
        events = []
        while (e := c.next_event()) is not None:
            events.append(e)
        if wait is None:
            assert isinstance(events[-1], E.Refused) and c.state == "closed"
        else:
            assert events[-1] == E.ConnectionLost("nick zed is in use", wait) and c.get_timer() == 1.0 + wait


def test_a_peer_cannot_rename_itself_into_a_lookalike_across_case():
    """Direct mode: "aIice" (capital I) is "alice" to a reader; mallory renaming itself so is not
    shown beside the real one, and its posts and direct messages are not shown as the real one's;
    our own nick change into a look-alike of a member's is refused (names.look_alike)."""
    net, (p0, _alice, mallory) = trio(nicks=("p0", "alice", "mallory"))
    mallory.nick = "aIice"
    net.call(addr(MALLORY), mallory._refresh_all)
    net.run_until(net.now + 0.2)
    net.call(addr(MALLORY), mallory.post, "@p0", "psst, alice here")
    net.run_until(net.now + 0.3)
    assert sorted(p0.members("lobby")) == ["alice", "p0"]
    assert not [e for e in of(net, 0, E.MessageReceived) if e.room == "@aIice"]
    net.call(addr(0), p0.set_nick, "AIice")
    assert p0.nick == "p0" and [e.reason for e in of(net, 0, E.RequestRefused)] == [
        "nick AIice is taken in #lobby"
    ]
