"""Registered nicks and room moderation (issue 11; protocol/relay/moderation.py): decided by the
identity keys sessions prove, enforced by the relay, kept in the room log's records across a
restart. Clients are real ClientSessions on the simulated network; hostile requests come from a
hand-made session (HandClient)."""

from __future__ import annotations

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from udproom.protocol import events as E
from udproom.protocol import frames as F
from udproom.protocol.client import ClientSession
from udproom.protocol.crypto import SESSION_OVERHEAD, Identity
from udproom.protocol.names import nick_key
from udproom.protocol.relay import Relay, RelayConfig
from udproom.protocol.roomlog import MemoryLog, SqliteLog, StoreError

from .adversary import ints, texts
from .fakenet import FakeNet
from .harness import RELAY, HandClient, T, client_addr

ROOM = "lobby"


class Net:
    """One relay (on `log`) and the clients a test adds, each with the identity it is given."""

    def __init__(self, log=None, **cfg) -> None:
        self.net = FakeNet(0)
        self.log = log if log is not None else MemoryLog(keep_days=None)
        self.relay = self.net.add(RELAY, Relay(RelayConfig(timing=T, **cfg), self.log))
        self.n = 0

    def restart(self, open_log) -> None:
        """The relay process ends and a new one opens the same data (`open_log()`)."""
        self.relay.shutdown(self.net.now)
        self.log.close()
        self.log = open_log()
        self.relay = self.net.add(RELAY, Relay(RelayConfig(timing=T), self.log))

    def client(self, nick: str, identity: Identity | None = None, rooms=(ROOM,)) -> tuple:
        self.n += 1
        addr = client_addr(self.n)
        c = self.net.add(addr, ClientSession(nick, T, identity=identity or Identity.generate()))
        self.net.call(addr, c.connect, RELAY)
        for r in rooms:
            self.net.call(addr, c.join, r)
        return addr, c

    def wait(self, addr: tuple, kind, pred=lambda e: True, limit: float = 15.0):
        def found():
            return next((e for e in self.net.events[addr] if isinstance(e, kind) and pred(e)), None)

        self.net.run_while(lambda: found() is None, self.net.now + limit)
        got = found()
        assert got is not None, (kind.__name__, self.net.events[addr][-8:])
        return got

    def joined(self, addr: tuple, room: str = ROOM, nth: int = 1) -> E.RoomJoined:
        """The `nth` RoomJoined of `room` this client had (waiting for it)."""
        seen = []
        return self.wait(
            addr, E.RoomJoined, lambda e: e.room == room and (seen.append(e) or len(seen) >= nth)
        )

    def do(self, addr: tuple, op: int, text: str = "", room: str = ROOM) -> None:
        c = self.net.nodes[addr]
        self.net.call(addr, c.moderate, op, room, text)

    def refused(self, addr: tuple, what: str) -> str:
        return self.wait(addr, E.RequestRefused, lambda e: e.what == what).reason

    def settle(self, seconds: float = 2.0) -> None:
        self.net.run_until(self.net.now + seconds)

    def register(self, addr: tuple) -> None:
        self.do(addr, F.OP_REGISTER)
        self.wait(addr, E.Registered)

    def said(self, addr: tuple, room: str = ROOM) -> list[str]:
        return [e.text for e in self.net.events[addr] if isinstance(e, E.MessageReceived) and e.room == room]

    def members(self, room: str = ROOM) -> set[str]:
        r = self.relay.rooms.get(room)
        return {m.session.nick for m in r.members.values()} if r else set()


def _owned_room(**cfg) -> tuple[Net, tuple, Identity]:
    """A relay where "boss" registered its nick and then made #lobby (so owns it)."""
    n = Net(**cfg)
    me = Identity.generate()
    boss, _ = n.client("boss", me, rooms=())
    n.register(boss)
    n.net.call(boss, n.net.nodes[boss].join, ROOM)
    n.joined(boss)
    return n, boss, me


# ----------------------------------------------------------------------------- registered nicks


def test_a_registered_nick_cannot_be_taken_by_another_key_and_its_owner_takes_it_back():
    n = Net()
    mine = Identity.generate()
    a, _ca = n.client("alice", mine, rooms=())
    n.register(a)
    assert n.log.records("nick/") == {"nick/" + nick_key("alice"): mine.public}
    # the owner's client dies without a word: its session is a ghost holding the nick
    n.net.remove(a)
    # someone else, with another key, is refused with one line, for good (no retry)
    b, _ = n.client("ALICE", rooms=())
    assert n.wait(b, E.Refused).reason == "nick ALICE is registered on this relay"
    # the owner comes back with its key: the ghost is ended at once, the nick is the owner's
    c, _cc = n.client("alice", mine)
    joined = n.joined(c, ROOM)
    assert joined.nick == "alice"
    assert [s.addr for s in n.relay.sessions.values() if s.nick == "alice"] == [c]
    # and no one takes it by a nick change either
    d, cd = n.client("dave")
    n.joined(d)
    n.net.call(d, cd.set_nick, "Alice")
    assert n.refused(d, "nick") == "nick Alice is registered on this relay"
    assert cd.nick == "dave"


def test_a_live_owner_logging_in_again_ends_its_old_session_which_stops_there():
    n = Net()
    mine = Identity.generate()
    a, _ca = n.client("alice", mine)
    n.joined(a)
    n.register(a)
    b, _cb = n.client("alice", mine)
    n.joined(b)
    assert n.wait(a, E.Refused).reason == F.TAKEN_OVER
    n.settle(5)  # the old client does not come back to take it again
    assert [s.addr for s in n.relay.sessions.values()] == [b]


def test_registering_is_stored_or_refused_never_claimed():
    n = Net()
    a, _ = n.client("alice", rooms=())
    n.wait(a, E.Connected)

    def full(key, value):
        raise StoreError("the disk is full")

    n.log.put_record = full
    n.do(a, F.OP_REGISTER)
    assert n.refused(a, "register") == "the disk is full"
    assert not [e for e in n.net.events[a] if isinstance(e, E.Registered)]
    assert n.log.records("nick/") == {}


# ----------------------------------------------------------------------------- operators


def test_the_first_registered_member_to_make_a_room_owns_it_and_the_members_pane_knows():
    n, _boss, _ = _owned_room()
    b, _ = n.client("bob")
    joined = n.joined(b)
    assert {m.nick: m.mode for m in joined.members} == {"boss": "@", "bob": ""}
    # someone unregistered making a room owns nothing
    n.net.call(b, n.net.nodes[b].join, "other")
    n.joined(b, "other")
    n.do(b, F.OP_MODE, "+i", room="other")
    assert n.refused(b, "mode") == "you are not an operator of #other"


def test_an_op_command_from_a_non_operator_is_refused_and_changes_nothing():
    n, _boss, _ = _owned_room()
    b, _ = n.client("bob")
    c, _ = n.client("carol")
    n.joined(b)
    n.joined(c)
    seq = n.relay.rooms[ROOM].seq
    rules = n.relay.rules[ROOM]
    for op, text, what in [
        (F.OP_KICK, "carol", "kick"),
        (F.OP_BAN, "carol", "ban"),
        (F.OP_OP, "bob", "op"),
        (F.OP_DEOP, "boss", "deop"),
        (F.OP_MODE, "+m", "mode"),
        (F.OP_INVITE, "carol", "invite"),
        (F.OP_VOICE, "bob", "voice"),
        (F.OP_UNBAN, "carol", "unban"),
    ]:
        n.do(b, op, text)
        assert n.refused(b, what) == f"you are not an operator of #{ROOM}"
    n.settle(1)
    assert n.relay.rules[ROOM] == rules
    assert n.relay.rooms[ROOM].seq == seq
    assert n.members() == {"boss", "bob", "carol"}


def test_a_kicked_member_is_out_gets_no_more_batches_and_can_come_back():
    n, boss, _ = _owned_room()
    b, cb = n.client("bob")
    n.joined(b)
    kid = n.relay.rooms[ROOM].key.kid
    n.do(boss, F.OP_KICK, "bob spamming the room")
    kicked = n.wait(b, E.Kicked)
    assert (kicked.room, kicked.by, kicked.reason) == (ROOM, "boss", "spamming the room")
    seen = n.wait(boss, E.RoomModerated, lambda e: e.action == "kick")
    assert (seen.by, seen.target, seen.text) == ("boss", "bob", "spamming the room")
    assert n.members() == {"boss"}
    assert ROOM not in cb.rooms
    assert n.relay.rooms[ROOM].key.kid != kid  # the room's key changed at once
    n.net.call(boss, n.net.nodes[boss].post, ROOM, "after the kick")
    n.wait(boss, E.MessageReceived, lambda e: e.text == "after the kick")
    n.settle(2)
    assert "after the kick" not in n.said(b)
    # not banned, the room not invite only: it may join again
    n.net.call(b, cb.join, ROOM)
    n.joined(b, nth=2)
    assert n.members() == {"boss", "bob"}


def test_a_banned_key_cannot_return_under_a_new_nick():
    n, boss, _ = _owned_room()
    theirs = Identity.generate()
    b, cb = n.client("bob", theirs)
    n.joined(b)
    n.do(boss, F.OP_BAN, "bob")
    n.wait(b, E.Kicked)
    assert n.members() == {"boss"}
    n.net.call(b, cb.join, ROOM)
    assert n.refused(b, "join") == f"you are banned from #{ROOM}"
    # a new nick, a new session: the same key
    c, _ = n.client("totally-not-bob", theirs)
    assert n.refused(c, "join") == f"you are banned from #{ROOM}"
    assert n.members() == {"boss"}
    # unbanned by fingerprint, it may come back
    n.do(boss, F.OP_UNBAN, theirs.fingerprint.upper().replace("-", " "))  # (as read aloud)
    n.wait(boss, E.RoomModerated, lambda e: e.action == "unban")
    n.net.call(c, n.net.nodes[c].join, ROOM)
    n.joined(c)


def test_a_ban_by_fingerprint_needs_no_one_here():
    n, boss, _ = _owned_room()
    theirs = Identity.generate()
    n.do(boss, F.OP_BAN, theirs.fingerprint)
    n.wait(boss, E.RoomModerated, lambda e: e.action == "ban")
    c, _ = n.client("new", theirs)
    assert n.refused(c, "join") == f"you are banned from #{ROOM}"


def test_invite_only_topic_by_operators_and_moderated_are_enforced():
    n, boss, _ = _owned_room()
    b, cb = n.client("bob")
    n.joined(b)
    # +t: only operators set the topic
    n.do(boss, F.OP_MODE, "+t")
    n.wait(b, E.RoomModerated, lambda e: e.action == "mode" and e.target == "+t")
    n.net.call(b, cb.set_topic, ROOM, "mine now")
    assert n.refused(b, "topic") == f"only operators set the topic of #{ROOM} (+t)"
    # +m: only voiced members and operators speak
    n.do(boss, F.OP_MODE, "+m")
    n.wait(b, E.RoomModerated, lambda e: e.target == "+m")
    n.net.call(b, cb.post, ROOM, "can I speak?")
    failed = n.wait(b, E.PostFailed)
    assert failed.refused and failed.reason == f"#{ROOM} is moderated (+m): only voiced members speak"
    n.do(boss, F.OP_VOICE, "bob")
    n.wait(b, E.RoomModerated, lambda e: e.action == "voice")
    assert cb.rooms[ROOM].members["bob"].mode == "+"
    n.net.call(b, cb.post, ROOM, "voiced now")
    n.wait(boss, E.MessageReceived, lambda e: e.text == "voiced now")
    # +i: only invited members (and operators) join
    n.do(boss, F.OP_MODE, "+i")
    n.wait(boss, E.RoomModerated, lambda e: e.target == "+i")
    c, cc = n.client("carol")
    assert n.refused(c, "join") == f"#{ROOM} is invite only (+i)"
    n.do(boss, F.OP_INVITE, "carol")
    n.wait(boss, E.RoomModerated, lambda e: e.action == "invite")
    n.net.call(c, cc.join, ROOM)
    n.joined(c)
    # an operator made by the owner may do what operators do; the owner cannot be deopped
    n.do(boss, F.OP_OP, "carol")
    n.wait(b, E.RoomModerated, lambda e: e.action == "op" and e.target == "carol")
    assert cb.rooms[ROOM].members["carol"].mode == "@"
    n.do(c, F.OP_DEOP, "boss")
    assert n.refused(c, "deop") == "boss outranks you in #lobby"
    n.do(c, F.OP_MODE, "-imt")
    n.wait(b, E.RoomModerated, lambda e: e.by == "carol" and e.target == "-imt")
    assert n.relay.rules[ROOM].modes == ""


def test_everything_survives_a_relay_restart_on_the_same_data(tmp_path):
    where = tmp_path / "relay"
    n = Net(log=SqliteLog(where))
    me, theirs, voiced, op = (Identity.generate() for _ in range(4))
    boss, _ = n.client("boss", me, rooms=())
    n.register(boss)
    n.net.call(boss, n.net.nodes[boss].join, ROOM)
    n.joined(boss)
    v, _ = n.client("vic", voiced)
    o, _ = n.client("otto", op)
    n.joined(v)
    n.joined(o)
    for action, text in [
        (F.OP_BAN, theirs.fingerprint),
        (F.OP_VOICE, "vic"),
        (F.OP_OP, "otto"),
        (F.OP_MODE, "+mt"),
    ]:
        n.do(boss, action, text)
        n.wait(boss, E.RoomModerated, lambda e, t=text: e.target == t)
    before = n.relay.rules[ROOM]
    for addr in (boss, v, o):
        n.net.remove(addr)
    n.restart(lambda: SqliteLog(where))
    assert n.relay.rules[ROOM] == before
    # the registration holds
    x, _ = n.client("boss", rooms=())
    assert n.wait(x, E.Refused).reason == "nick boss is registered on this relay"
    # the ban holds
    y, _ = n.client("anyone", theirs)
    assert n.refused(y, "join") == f"you are banned from #{ROOM}"
    # the owner, operator and voice hold, and +m
    b2, _ = n.client("boss", me)
    joined = n.joined(b2)
    assert {m.nick: m.mode for m in joined.members}["boss"] == "@"
    o2, _co = n.client("otto", op)
    assert {m.nick: m.mode for m in n.joined(o2).members}["otto"] == "@"
    z, cz = n.client("zed")
    n.joined(z)
    n.net.call(z, cz.post, ROOM, "hello?")
    assert n.wait(z, E.PostFailed).refused


def test_relay_operators_act_in_every_room_and_rooms_per_key_are_bounded():
    admin = Identity.generate()
    n = Net(admin_keys=frozenset({admin.fingerprint}), max_rooms_per_key=2)
    b, _cb = n.client("bob", rooms=("one", "two", "three"))
    n.joined(b, "one")
    n.joined(b, "two")
    assert n.refused(b, "join") == "you have made 2 rooms on this relay, the most one key may"
    assert "three" not in n.relay.rooms
    a, _ca = n.client("root", admin, rooms=("one",))
    joined = n.joined(a, "one")
    assert {m.nick: m.mode for m in joined.members}["root"] == "@"
    n.do(a, F.OP_KICK, "bob", room="one")
    n.wait(b, E.Kicked)
    assert n.members("one") == {"root"}


# ----------------------------------------------------------------------------- hostile input


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    op=st.sampled_from(sorted(F.MODERATION_OPS)) | ints(),
    room=st.sampled_from([ROOM, "", "nowhere", "#lobby"]) | texts(),
    text=texts() | st.sampled_from(["+x", "+", "-", "+imtz", "bob", "zzzz-zzzz", "a" * 5000, "boss"]),
    arg=ints(),
)
def test_hostile_moderation_requests_get_one_line_refusals_and_change_nothing(op, room, text, arg):
    relay = Relay(RelayConfig(timing=T))
    owner = HandClient(relay, client_addr(1), "boss", now=1.0)
    owner.send([F.Req(cseq=1, op=F.OP_REGISTER)], 1.0)
    owner.send([F.Req(cseq=2, op=F.OP_JOIN, room=ROOM)], 1.0)
    relay.datagrams_to_send(1.0)
    evil = HandClient(relay, client_addr(2), "evil", now=1.0)
    evil.send([F.Req(cseq=1, op=F.OP_JOIN, room=ROOM)], 1.0)
    relay.datagrams_to_send(1.0)
    rules, seq = relay.rules[ROOM], relay.rooms[ROOM].seq
    malformed = relay.stats["malformed"]
    req = F.Req(cseq=2, op=op, room=room, text=text, arg=arg)
    assume(F.size_of((req,)) <= F.MAX_DATAGRAM - SESSION_OVERHEAD)  # what a datagram can carry
    evil.send([req], 2.0)
    got = [f for f in evil.frames(relay.datagrams_to_send(2.0)) if isinstance(f, F.Result)]
    assert relay.stats["malformed"] == malformed
    if op in F.MODERATION_OPS and op != F.OP_REGISTER:
        (res,) = got
        assert res.code == F.RES_REFUSED and res.reason and "\n" not in res.reason
    if op in F.MODERATION_OPS or not 1 <= op <= F.OP_HISTORY:  # (not a request members make)
        assert relay.rules[ROOM] == rules
        assert relay.rooms[ROOM].seq == seq
    # the owner's odd requests: refused with one line, or done; never an exception
    owner.send([F.Req(cseq=3, op=op, room=room, text=text, arg=arg)], 3.0)  # (as small)
    for res in [f for f in owner.frames(relay.datagrams_to_send(3.0)) if isinstance(f, F.Result)]:
        assert res.code == F.RES_OK or (res.reason and "\n" not in res.reason)
    assert relay.stats["malformed"] == malformed


def test_a_damaged_rules_record_stops_the_relay_with_one_line_rather_than_forget_a_ban():
    log = MemoryLog(keep_days=None)
    log.put_record("room/lobby", b"\xff not json")
    try:
        Relay(RelayConfig(timing=T), log)
    except StoreError as exc:
        assert str(exc) == "the relay's record 'room/lobby' is damaged"
    else:
        raise AssertionError("a relay started on a damaged record")


def test_a_banned_key_cannot_page_back_through_the_room_either():
    n, boss, _ = _owned_room()
    theirs = Identity.generate()
    n.net.call(boss, n.net.nodes[boss].post, ROOM, "for members only")
    n.wait(boss, E.MessageReceived, lambda e: e.text == "for members only")
    n.do(boss, F.OP_BAN, theirs.fingerprint)
    n.wait(boss, E.RoomModerated, lambda e: e.action == "ban")
    x, cx = n.client("reader", theirs, rooms=())
    n.wait(x, E.Connected)
    n.net.call(x, cx.page_back, ROOM, 0, 50)
    assert n.refused(x, "history") == f"you are banned from #{ROOM}"
    assert not [e for e in n.net.events[x] if isinstance(e, E.HistoryPage) and e.events]


def test_one_key_registers_a_bounded_number_of_nicks():
    n = Net(max_nicks_per_key=2)
    mine = Identity.generate()
    a, ca = n.client("n0", mine, rooms=())
    n.register(a)
    n.net.call(a, ca.set_nick, "n1")
    n.do(a, F.OP_REGISTER)
    n.net.call(a, ca.set_nick, "n2")
    n.do(a, F.OP_REGISTER)
    assert n.refused(a, "register") == "your key has registered 2 nicks on this relay, the most one key may"
    assert len(n.log.records("nick/")) == 2


def test_a_relay_operator_can_ban_an_owner_who_then_owns_nothing_and_stays_out():
    admin = Identity.generate()
    n, boss, me = _owned_room(admin_keys=frozenset({admin.fingerprint}))
    a, _ = n.client("root", admin)
    n.joined(a)
    n.do(a, F.OP_BAN, "boss")
    n.wait(boss, E.Kicked)
    assert n.relay.rules[ROOM].owner == ""
    b2, _ = n.client("boss2", me)
    assert n.refused(b2, "join") == f"you are banned from #{ROOM}"
    n.do(b2, F.OP_UNBAN, "boss2")  # (it is no operator any more)
    assert n.refused(b2, "unban") == f"you are not an operator of #{ROOM}"


def test_an_action_that_changes_nothing_says_nothing():
    n, boss, _ = _owned_room()
    b, _ = n.client("bob")
    n.joined(b)
    n.do(boss, F.OP_VOICE, "bob")
    n.wait(b, E.RoomModerated, lambda e: e.action == "voice")
    seq = n.relay.rooms[ROOM].seq
    n.do(boss, F.OP_VOICE, "bob")
    n.do(boss, F.OP_MODE, "-m")
    n.settle(1)
    assert n.relay.rooms[ROOM].seq == seq
    assert sum(isinstance(e, E.RoomModerated) for e in n.net.events[b]) == 1
