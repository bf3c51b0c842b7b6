"""The relay on a room log (issue 10): nothing acknowledged is lost across a crash, a restart
continues every room, a failed commit refuses and acknowledges nothing, paging back returns the
live stream's events. Relays run on the simulated network over a SqliteLog in tmp_path; a "crash"
drops the relay without shutdown (its uncommitted group dies with it) and a new one opens the
same directory."""

from __future__ import annotations

import heapq
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from udproom.protocol import events as E
from udproom.protocol import frames as F
from udproom.protocol.relay import MAX_PAGE, NOT_STORED, Relay, RelayConfig, StoreFailed, StoreRecovered
from udproom.protocol.roomlog import MemoryLog, SqliteLog

from .adversary import ints
from .fakenet import Impairment
from .harness import RELAY, HandClient, HandRelay, Room, T, client_addr, post_reaches_everyone, signed_ev

ROOM = "lobby"


def _durable(room: Room, where, **kw) -> Relay:
    relay = Relay(RelayConfig(timing=T), SqliteLog(where, **kw))
    room.net.add(RELAY, relay)
    room.relay = relay
    return relay


def _crash(room: Room, mid_group: bool = False) -> int:
    """The relay process dies: no goodbye, its pending group is gone, its lock released. With
    `mid_group`, it dies after taking in the datagrams on their way to it but before its next
    flush (so before the commit): returns how many events it had appended and not stored."""
    net = room.net
    if mid_group:
        for item in sorted(i for i in net.queue if i[4] == RELAY):
            net.queue.remove(item)
            room.relay.receive_datagram(item[2], item[3], net.now)
        heapq.heapify(net.queue)
    pending = room.relay.log.pending
    net.remove(RELAY)
    room.relay.log.close()
    return pending


def _stored(relay: Relay) -> list[tuple[int, F.Ev]]:
    log = relay.log
    return log.read(ROOM, 1, log.last_seq(ROOM))


def _delivered(room: Room, addr) -> list[tuple[int, str, str, str]]:
    return [
        (e.seq, type(e).__name__, getattr(e, "nick", getattr(e, "old", "")), getattr(e, "text", ""))
        for e in room.net.events[addr]
        if isinstance(e, E.ROOM_EVENTS) and e.room == ROOM
    ]


def _as_tuple(seq: int, ev: F.Ev) -> tuple[int, str, str, str]:
    kind = {
        F.EV_MSG: "MessageReceived",
        F.EV_ACTION: "MessageReceived",
        F.EV_JOIN: "MemberJoined",
        F.EV_LEAVE: "MemberLeft",
        F.EV_TIMEOUT: "MemberTimedOut",
        F.EV_NICK: "NickChanged",
        F.EV_TOPIC: "TopicChanged",
        F.EV_AWAY: "AwayChanged",
    }[ev.kind]
    text = ev.text if ev.kind in (F.EV_MSG, F.EV_ACTION) else ""
    return (seq, kind, ev.nick, text)


def _page_all(room: Room, addr) -> list:
    """Page back through the whole room from the newest event; the pages, newest first."""
    c = room.clients[addr]
    pages: list[E.HistoryPage] = []
    before = 0
    for _ in range(1000):
        room.net.call(addr, c.page_back, ROOM, before, MAX_PAGE)
        room.net.run_while(lambda: len(room.events(addr, E.HistoryPage)) == len(pages), room.net.now + 30)
        page = room.events(addr, E.HistoryPage)[-1]
        assert len(room.events(addr, E.HistoryPage)) == len(pages) + 1, "no page came"
        pages.append(page)
        if page.complete:
            return pages
        before = page.events[0].seq
    raise AssertionError("paging never reached the start")


def test_a_relay_killed_at_random_points_of_a_flood_loses_nothing_it_acknowledged(tmp_path):
    rng = random.Random(7)
    room = Room(3, seed=3, imp=Impairment(loss=0.02, delay=0.002, jitter=0.003))
    relay = _durable(room, tmp_path)
    epoch = relay.epoch
    room.wait_joined()
    texts: dict[tuple, dict[int, str]] = {a: {} for a in room.clients}
    in_flight: list[int] = []  # posts not yet acknowledged when the relay died
    lost_groups: list[int] = []  # events appended and not yet stored when it died
    for burst in range(5):
        for k in range(12):
            for addr, c in room.clients.items():
                text = f"{c.nick} b{burst} m{k}"
                texts[addr][room.net.call(addr, c.post, ROOM, text)] = text
        # the relay dies at a random point of the flood (mid-group, between commits, ...)
        mid_group = burst % 2 == 0  # (then it dies before the burst's datagrams reach its flush)
        room.net.run_until(room.net.now + rng.uniform(0.0005, 0.0015 if mid_group else 0.03))
        in_flight.append(sum(c.pending_posts for c in room.clients.values()))
        lost_groups.append(_crash(room, mid_group))
        room.net.run_until(room.net.now + rng.uniform(0.0, 0.5))
        relay = _durable(room, tmp_path)
        assert relay.epoch == epoch  # the same history: members resume
    total = sum(len(t) for t in texts.values())
    assert all(in_flight), in_flight  # every crash hit the flood mid-way
    assert any(lost_groups), lost_groups  # and some died with a group appended but not committed

    def unacked() -> bool:
        return sum(len(room.events(a, E.PostAcknowledged)) for a in room.clients) < total

    room.net.run_while(unacked, room.net.now + 120)
    assert not unacked()
    room.settle(1.0)
    stored = _stored(relay)
    # one order, no number reused or skipped
    assert [s for s, _ in stored] == list(range(1, len(stored) + 1))
    said = [ev.text for _s, ev in stored if ev.kind == F.EV_MSG]
    for addr in room.clients:
        assert not room.events(addr, E.PostFailed)
        for ack in room.events(addr, E.PostAcknowledged):
            text = texts[addr][ack.local_id]
            assert said.count(text) == 1, text  # every acknowledged message, exactly once...
            assert stored[ack.seq - 1][1].text == text  # ...under the number it was acknowledged with
    # members resumed without a gap or a duplicate, and saw what the log holds
    log_view = [_as_tuple(s, ev) for s, ev in stored]
    for addr in room.clients:
        got = _delivered(room, addr)
        seqs = [g[0] for g in got]
        assert seqs == list(range(seqs[0], seqs[-1] + 1)), "a gap or a duplicate"
        assert seqs[-1] == len(stored)
        assert got == log_view[seqs[0] - 1 :]
        assert not [n for n in room.events(addr, E.Notice) if "missed" in n.text]
    # paging back returns the same events as the live stream, oldest first, all marked history
    pages = _page_all(room, client_addr(0))
    paged = [e for p in reversed(pages) for e in p.events]
    assert all(e.history for e in paged)
    assert [(e.seq, type(e).__name__) for e in paged] == [g[:2] for g in log_view]
    live = {g[0]: g for g in _delivered(room, client_addr(1))}
    for e in paged:
        if e.seq in live and isinstance(e, E.MessageReceived):
            assert (e.seq, e.nick, e.text) == (live[e.seq][0], live[e.seq][2], live[e.seq][3])


def test_a_restart_continues_each_room_with_its_topic_and_dedupes_old_message_ids(tmp_path):
    room = Room(2, seed=5)
    _durable(room, tmp_path)
    room.wait_joined()
    a = client_addr(0)
    c = room.clients[a]
    room.net.call(a, c.set_topic, ROOM, "durable")
    room.net.call(a, c.post, ROOM, "before")
    room.wait_messages(1)
    room.settle(0.5)
    before = _stored(room.relay)
    mid = next(ev.mid for _s, ev in before if ev.text == "before")
    _crash(room)
    relay = _durable(room, tmp_path)
    # a resend of the old post on a new session (same message id) is not a second event
    room.net.run_while(
        lambda: ROOM not in relay.rooms or len(relay.rooms[ROOM].members) < 2, room.net.now + 30
    )
    assert relay.rooms[ROOM].topic == "durable"
    assert relay.log.seq_of_mid(ROOM, mid) == next(s for s, ev in before if ev.text == "before")
    # (sent on the client's own session: sealed under its keys, and the answer opened likewise)
    sid = next(s for s in relay.sessions.values() if s.nick == c.nick)
    relay.receive_datagram(
        c._channel.seal(F.encode([F.Req(sid.next_cseq, F.OP_POST, ROOM, "before", mid)])), a, room.net.now
    )
    answers = [
        f
        for d, dst in relay.datagrams_to_send(room.net.now)
        if dst == a and d[1] == 1
        for f in F.decode(c._channel.open(d))
        if type(f) is F.Result
    ]
    assert answers and answers[0].code == F.RES_OK and answers[0].seq == relay.log.seq_of_mid(ROOM, mid)
    after = _stored(relay)
    assert [ev.text for _s, ev in after].count("before") == 1
    assert after[: len(before)] == before  # numbers continue: nothing rewritten


def test_the_topics_signature_survives_a_restart_so_joiners_still_check_it(tmp_path):
    """A topic is signed by its setter, and a joiner checks the current topic against the setter's
    key and signature in its Joined. They are kept with the relay's data (a record), so a joiner
    after a restart still gets them: it applies the real topic, and refuses one the relay altered.
    (Before, the relay kept them in memory only and a joiner after a restart got the topic with
    no signature, shown unchecked.)"""
    room = Room(2, seed=6)
    _durable(room, tmp_path)
    room.wait_joined()
    a = client_addr(0)
    c = room.clients[a]
    room.net.call(a, c.set_topic, ROOM, "signed and kept")
    room.net.run_while(lambda: room.clients[client_addr(1)].rooms[ROOM].topic != "signed and kept", 10)
    room.settle(0.5)
    setter = room.relay.sessions[a].key
    _crash(room)
    relay = _durable(room, tmp_path)
    room.net.run_while(
        lambda: ROOM not in relay.rooms or len(relay.rooms[ROOM].members) < 2, room.net.now + 30
    )
    stream = relay.rooms[ROOM]
    assert stream.topic == "signed and kept"
    kept = relay._topic_signature(stream)
    assert kept["topic_key"] == setter and len(kept["topic_sig"]) == 64
    late = room.add_client(2, "late")
    room.net.run_while(
        lambda: ROOM not in late.rooms or late.rooms[ROOM].topic != "signed and kept", room.net.now + 10
    )
    assert late.rooms[ROOM].topic == "signed and kept" and late.stats["bad_signature"] == 0
    # the restarted relay alters the topic, its data and all, keeping the setter's signature: caught
    value = relay.log.record("topic/" + ROOM)
    relay.log.put_record("topic/" + ROOM, value[:96] + b"altered after the restart")
    stream.topic = "altered after the restart"
    relay.log.set_topic(ROOM, stream.topic)
    later = room.add_client(3, "later")
    room.net.run_while(lambda: ROOM not in later.rooms, room.net.now + 10)
    room.settle(0.5)
    assert later.rooms[ROOM].topic != "altered after the restart" and later.stats["bad_signature"] >= 1


def test_a_failed_commit_refuses_the_posts_and_acknowledges_nothing_unstored(tmp_path):
    room = Room(2, seed=11)
    relay = _durable(room, tmp_path, max_bytes=64 * 1024)  # a disk that fills up
    room.wait_joined()
    a, b = client_addr(0), client_addr(1)
    c = room.clients[a]
    ids = {}
    for k in range(200):
        ids[room.net.call(a, c.post, ROOM, f"{k:03d} " + "x" * 600)] = k
        room.settle(0.01)
        if room.events(a, E.PostFailed):
            break
    room.settle(1.0)
    refused = room.events(a, E.PostFailed)
    assert refused, "the log never filled up"
    assert all(f.refused and f.reason.startswith(NOT_STORED) and "full" in f.reason for f in refused)
    assert all("\n" not in f.reason for f in refused)
    stored_texts = {ev.text[:3] for _s, ev in _stored(relay) if ev.kind == F.EV_MSG}
    acked = room.events(a, E.PostAcknowledged)
    assert acked and all(f"{ids[x.local_id]:03d}" in stored_texts for x in acked)
    refused_texts = {f"{ids[f.local_id]:03d}" for f in refused}
    assert not refused_texts & stored_texts
    # nobody saw what was refused; what they saw has no gap
    seen = {m[2][:3] for m in room.messages(b)}
    assert not refused_texts & seen
    seqs = [g[0] for g in _delivered(room, b)]
    assert seqs == list(range(seqs[0], seqs[-1] + 1))
    # the relay keeps serving: space comes back, posts are stored and acknowledged again
    relay.log._db.execute("PRAGMA max_page_count=100000")
    n = len(acked)
    room.net.call(a, c.post, ROOM, "after the disk was freed")
    room.net.run_while(lambda: len(room.events(a, E.PostAcknowledged)) == n, room.net.now + 10)
    last = room.events(a, E.PostAcknowledged)[-1]
    assert _stored(relay)[last.seq - 1][1].text == "after the disk was freed"
    stored = _stored(relay)
    assert [s for s, _ in stored] == list(range(1, len(stored) + 1))
    # the operator is told once that storing stopped, and once that it works again
    said = [e for e in room.net.events[RELAY] if isinstance(e, (StoreFailed, StoreRecovered))]
    assert [type(e) for e in said] == [StoreFailed, StoreRecovered], said
    assert "full" in said[0].reason and said[1].refused >= 1


def test_presence_events_of_a_failed_group_are_kept_and_numbered_again():
    log = MemoryLog(keep_days=None, keep_events=None)
    room = Room(3, seed=2)
    relay = Relay(RelayConfig(timing=T), log)
    room.net.add(RELAY, relay)
    room.relay = relay
    room.wait_joined()
    a, c_addr = client_addr(0), client_addr(2)
    log.fail_commits = "the room log is full (disk full): new posts are refused"
    room.net.call(a, room.clients[a].post, ROOM, "lost")
    room.net.call(c_addr, room.clients[c_addr].set_away, "lunch")
    room.settle(0.3)
    assert room.events(a, E.PostFailed)
    log.fail_commits = None
    room.settle(1.0)
    stored = _stored(relay)
    assert [s for s, _ in stored] == list(range(1, len(stored) + 1))
    assert [ev.text for _s, ev in stored if ev.kind == F.EV_AWAY] == ["lunch"]
    assert "lost" not in [ev.text for _s, ev in stored]
    b = client_addr(1)
    assert any(isinstance(e, E.AwayChanged) and e.away == "lunch" for e in room.net.events[b])


def _session(relay: Relay, addr: tuple, nick: str, now: float = 1.0) -> HandClient:
    return HandClient(relay, addr, nick, now, nonce=5)


SRC = ("10.9.9.9", 4000)


def _filled(n: int = 300) -> Relay:
    relay = Relay(RelayConfig(timing=T), MemoryLog(keep_days=None, keep_events=None))
    for i in range(n):
        relay.log.append(ROOM, F.Ev(F.EV_MSG, "ann", f"m{i} " + "y" * (i % 900), 1.0, i + 1))
    relay.log.commit()
    return relay


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before=ints(), n=ints(), room=st.sampled_from([ROOM, "other", "LOBBY", "bad room!", ""]))
def test_a_history_request_of_any_values_is_answered_within_bounds(before, n, room):
    relay = _filled()
    hand = _session(relay, SRC, "ann")
    hand.send([F.Req(1, F.OP_HISTORY, room, "", 0, before, n)], 2.0)
    out = relay.datagrams_to_send(2.0)
    events = 0
    for data, addr in out:
        assert addr == SRC and len(data) <= F.MAX_DATAGRAM
        for f in hand.frames([(data, addr)]):
            if type(f) is F.History:
                assert f.lo <= f.seq and f.seq + len(f.events) - 1 <= f.hi < max(before, 1) + 300
                events += len(f.events)
    assert events <= MAX_PAGE
    # the bytes it cost are bounded by the session's repair budget (plus one datagram)
    assert sum(len(d) for d, _ in out) <= RelayConfig().repair_window + 2 * F.MAX_DATAGRAM


def test_history_pages_are_rate_limited_and_a_retransmission_is_served_again():
    relay = _filled()
    hand = _session(relay, SRC, "ann")
    served = set()
    now = 2.0
    for cseq in range(1, 41):  # 40 pages at once: the burst (20) is served, the rest waits
        hand.send([F.Req(cseq, F.OP_HISTORY, ROOM, "", 0, 0, 1)], now)
        served |= {f.cseq for f in hand.frames(relay.datagrams_to_send(now)) if type(f) is F.History}
    assert served == set(range(1, int(RelayConfig().page_burst) + 1))
    # the same request again, later: answered now (the request was kept as its own answer)
    hand.send([F.Req(40, F.OP_HISTORY, ROOM, "", 0, 0, 1)], now + 1.0)
    again = [f for f in hand.frames(relay.datagrams_to_send(now + 1.0)) if type(f) is F.History]
    assert again and again[0].cseq == 40 and again[0].hi == 300


def test_a_page_too_big_for_the_budget_is_cut_from_the_oldest_end():
    relay = _filled()
    hand = _session(relay, SRC, "ann")
    hand.send([F.Req(1, F.OP_HISTORY, ROOM, "", 0, 301, 100)], 2.0)
    parts = [f for f in hand.frames(relay.datagrams_to_send(2.0)) if type(f) is F.History]
    lo, hi = parts[0].lo, parts[0].hi
    assert hi == 300 and lo > 201 and not parts[0].complete  # ~1 KB events: the budget pays ~24
    got = sorted(s for p in parts for s in range(p.seq, p.seq + len(p.events)))
    assert got == list(range(lo, hi + 1))


def test_a_history_request_answered_stale_is_asked_again():
    from udproom.protocol.client import ClientSession
    from udproom.protocol.crypto import Identity

    c = ClientSession("ann", T)
    c.connect(RELAY, 0.0)
    hand = HandRelay(c, 0.1)
    c.page_back(ROOM, 50, 10, 0.2)
    sent = [f for f in hand.frames(c.datagrams_to_send(0.2)) if type(f) is F.Req]
    (req,) = [f for f in sent if f.op == F.OP_HISTORY]
    assert (req.room, req.arg, req.n) == (ROOM, 50, 10)
    c.receive_datagram(hand.seal([F.Result(req.cseq, F.RES_STALE)]), RELAY, 0.3)
    again = [f for f in hand.frames(c.datagrams_to_send(0.3)) if type(f) is F.Req]
    assert [(f.op, f.arg, f.n) for f in again] == [(F.OP_HISTORY, 50, 10)] and again[0].cseq != req.cseq
    # the answer, in two parts (one repeated): one HistoryPage, oldest first, all history
    bob = Identity.generate()
    evs = [signed_ev(bob, ROOM, "bob", f"m{s}") for s in range(40, 50)]
    for seq, part in ((45, evs[5:]), (45, evs[5:]), (40, evs[:5])):
        h = F.History(again[0].cseq, ROOM, 40, 49, seq, part, False)
        c.receive_datagram(hand.seal([h]), RELAY, 0.4)
    pages = []
    while (ev := c.next_event()) is not None:
        if isinstance(ev, E.HistoryPage):
            pages.append(ev)
    (page,) = pages
    assert page.before == 50 and not page.complete
    assert [(e.seq, e.text, e.history) for e in page.events] == [(s, f"m{s}", True) for s in range(40, 50)]
    # a part that answers something else (above what was asked) is not believed
    c.page_back(ROOM, 50, 10, 0.5)
    (r2,) = [f for f in hand.frames(c.datagrams_to_send(0.5)) if type(f) is F.Req]
    c.receive_datagram(hand.seal([F.History(r2.cseq, ROOM, 45, 60, 45, [], False)]), RELAY, 0.6)
    assert not [e for e in iter(c.next_event, None) if isinstance(e, E.HistoryPage)]


def test_the_largest_post_the_relay_accepts_can_be_paged_back():
    """The largest message (F.MAX_TEXT bytes) from the longest nick in bytes (24 four-byte characters) in
    the longest room name is acknowledged, and paging back carries it like the live stream did: a
    page never stops in front of an event it cannot carry."""
    name = "r" * 32
    room = Room(0, seed=31, room=name)
    nick = "\U0001f600" * 24  # 96 bytes of UTF-8
    sender = room.add_client(0, nick=nick)
    room.add_client(1, nick="reader")
    room.wait_joined()
    a = client_addr(0)
    for text in ("before", "x" * F.MAX_TEXT, "é" * (F.MAX_TEXT // 2), "after"):
        room.net.call(a, sender.post, name, text)
    room.settle(3.0)
    acked = room.events(a, E.PostAcknowledged)
    refused = [e.reason for e in room.events(a, E.PostFailed)]
    assert len(acked) == 4 and not refused
    b = client_addr(1)
    c = room.clients[b]
    room.net.call(b, c.page_back, name, 0, MAX_PAGE)
    room.net.run_while(lambda: not room.events(b, E.HistoryPage), room.net.now + 30)
    (page,) = room.events(b, E.HistoryPage)
    paged = [e.text for e in page.events if isinstance(e, E.MessageReceived)]
    live = [e.text for e in room.events(b, E.MessageReceived)]
    assert paged == live and "after" in paged and "before" in paged
    assert page.complete


def test_the_posts_counted_as_served_are_the_stored_ones(tmp_path):
    """The relay's goodbye line says how many messages it served (`stats["posts"]`): a post whose
    commit failed (refused, not stored) is not one of them."""
    room = Room(2, seed=12)
    relay = _durable(room, tmp_path, max_bytes=64 * 1024)  # a disk that fills up
    room.wait_joined()
    a = client_addr(0)
    c = room.clients[a]
    for k in range(200):
        room.net.call(a, c.post, ROOM, f"{k:03d} " + "x" * 600)
        room.settle(0.01)
        if room.events(a, E.PostFailed):
            break
    room.settle(1.0)
    assert room.events(a, E.PostFailed), "the log never filled up"
    stored = [ev for _s, ev in _stored(relay) if ev.kind == F.EV_MSG]
    assert len(room.events(a, E.PostAcknowledged)) == len(stored) > 0
    assert relay.stats["posts"] == len(stored)
    assert relay.stats["refused_unstored"] > 0


def test_history_stored_without_its_authors_key_is_not_shown_and_the_room_is_told(tmp_path):
    """A relay log written before every stored message carried its author's key (protocol 2's
    signature, no key) still loads; a joiner is not shown those rows (nothing says whose they are,
    and a row without a key is what an invented one looks like), counts them (`unsigned`) and says
    so in one room line; what is posted now is shown, checked. Paging back shows none of them
    either. Before, they were shown unchecked."""
    from udproom.protocol.crypto import Identity

    old = SqliteLog(tmp_path)
    author = Identity.generate()
    for i in range(3):
        ev = signed_ev(author, ROOM, "olduser", f"old {i}", mid=100 + i)
        old.append(ROOM, F.Ev(ev.kind, ev.nick, ev.text, ev.ts, ev.mid, sig=ev.sig))  # as stored then
    old.commit()
    old.close()
    room = Room(1, seed=43)
    _durable(room, tmp_path)
    room.wait_joined()
    a = client_addr(0)
    c = room.clients[a]
    post_reaches_everyone(room, a, "new", [a])
    assert [e.text for e in room.events(a, E.MessageReceived)] == ["new"]
    assert c.stats["unsigned"] == 3 and c.stats["bad_signature"] == 0
    said = [e.text for e in room.events(a, E.Notice)]
    assert said.count("3 older messages could not be checked and are not shown") == 1
    room.net.call(a, c.page_back, ROOM, 0, MAX_PAGE)
    room.net.run_while(lambda: not room.events(a, E.HistoryPage), room.net.now + 10)
    (page,) = room.events(a, E.HistoryPage)
    assert [e.text for e in page.events if isinstance(e, E.MessageReceived)] == ["new"]
    assert c.stats["unsigned"] == 6


def test_a_relay_signing_history_under_a_pinned_nick_with_endless_new_keys_costs_bounded_lines():
    """History is shown as from the key that signed it, and a key other than the nick's pin is said
    in the room. A hostile relay can make keys without end and sign pages of lines under a pinned
    nick with a new one each: the client says each changed key once, up to MAX_KEY_WARNINGS, then
    one line that the rest are not said; its memory of warned keys stays bounded."""
    from udproom.protocol import client as C
    from udproom.protocol.crypto import Identity
    from udproom.protocol.pins import KeyPins

    pins = KeyPins()
    pins.pin("bob", Identity.generate().fingerprint)
    c = C.ClientSession("ann", T, key_pins=pins)
    c.connect(RELAY, 0.0)
    hand = HandRelay(c, 0.1)
    total = C.MAX_KEY_WARNINGS + 200
    now = 0.2
    for start in range(0, total, 100):
        c.page_back(ROOM, start + 100, 100, now)
        (req,) = [f for f in hand.frames(c.datagrams_to_send(now)) if type(f) is F.Req]
        for part in range(start, start + 100, 5):  # (five lines a datagram)
            evs = [
                signed_ev(Identity.generate(), ROOM, "bob", f"m{s}", mid=s + 1) for s in range(part, part + 5)
            ]
            c.receive_datagram(
                hand.seal([F.History(req.cseq, ROOM, start, start + 99, part, evs, False)]), RELAY, now
            )
        now += 1.0
    said = [e.text for e in iter(c.next_event, None) if isinstance(e, E.Notice)]
    changed = [t for t in said if "bob's key changed" in t]
    assert len(changed) == C.MAX_KEY_WARNINGS
    assert said.count(f"more than {C.MAX_KEY_WARNINGS} changed keys seen: the rest are not said") == 1
    assert len(c._key_warned) == C.MAX_KEY_WARNINGS
