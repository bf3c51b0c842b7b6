"""A hostile relay against the client: frames that carry the session's own token (so they pass the
door a forger cannot), with any values the wire format allows. Since the relay's `Sid` became the
session token, the decoder fuzz in test_fuzz.py stops at that door; this drives what is behind it:
every frame handler, and the paging answers (`History`) to a `page_back` in flight.

Invariants after every datagram: nothing escapes the client; every datagram it sends is at most
1200 bytes; a `HistoryPage` holds at most what was asked, only sequence numbers below `before`,
oldest first, each once, all marked history; the client's buffers stay bounded."""

from __future__ import annotations

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace as msgspec_replace

from udproom.protocol import events as E
from udproom.protocol import frames as F
from udproom.protocol.client import ClientSession, _signed
from udproom.protocol.crypto import SESSION_OVERHEAD, Identity, verify

from .adversary import floats, frames, ints, structs, texts
from .harness import RELAY, HandRelay, T, signed_ev

ROOM = "lobby"
TOKEN = 77
BEFORE, LIMIT = 50, 10


def connected() -> tuple[ClientSession, HandRelay, int]:
    """A client on a session (token TOKEN) in ROOM, with a page_back(ROOM, BEFORE, LIMIT) in flight;
    returns it, the relay it talks to (holding the session's keys) and the request's cseq."""
    c = ClientSession("ann", T)
    c.connect(RELAY, 0.0)
    relay = HandRelay(c, 0.1, token=TOKEN)
    c.join(ROOM, 0.1)
    c.page_back(ROOM, BEFORE, LIMIT, 0.1)
    reqs = [f for f in relay.frames(c.datagrams_to_send(0.1)) if type(f) is F.Req]
    join = next(r for r in reqs if r.op == F.OP_JOIN)
    page = next(r for r in reqs if r.op == F.OP_HISTORY)
    joined = F.Joined(join.cseq, ROOM, "ann", 1, 1, "", [F.MemberInfo("ann")], 0, 1)
    c.receive_datagram(relay.seal([joined]), RELAY, 0.2)
    return c, relay, page.cseq


def history_parts(cseq: int) -> st.SearchStrategy[F.Frame]:
    """History parts that answer the request in flight (right cseq and room) with hostile numbers
    and events, and some that answer nothing."""
    near = st.integers(min_value=-5, max_value=BEFORE + 5)
    return st.builds(
        F.History,
        cseq=st.one_of(st.just(cseq), ints()),
        room=st.sampled_from([ROOM, "", "other"]),
        lo=st.one_of(near, ints()),
        hi=st.one_of(near, ints()),
        seq=st.one_of(near, ints()),
        events=st.lists(structs(F.Ev), max_size=30),
        complete=st.booleans(),
    )


#: events of room kinds (so they reach the page) with hostile strings and numbers
ROOM_EVS = st.builds(
    F.Ev,
    kind=st.sampled_from([F.EV_MSG, F.EV_ACTION, F.EV_JOIN, F.EV_LEAVE, F.EV_NICK, F.EV_TOPIC, F.EV_AWAY]),
    nick=st.one_of(st.just("bob"), texts(64)),
    text=st.one_of(st.text(max_size=12), st.sampled_from(["\x1b[2J", "\u202eevil", "é" * 40])),
    ts=floats(),
    mid=ints(),
)


def whole_pages(cseq: int) -> st.SearchStrategy[F.Frame]:
    """Well-formed single-part answers (lo..hi all present) whose events carry hostile values."""

    def part(lo_n):
        lo, n = lo_n
        return st.lists(ROOM_EVS, min_size=n, max_size=n).map(
            lambda evs: F.History(cseq, ROOM, lo, lo + n - 1, lo, evs, lo == 1)
        )

    return st.tuples(st.integers(1, BEFORE - 1), st.integers(0, LIMIT + 3)).flatmap(part)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_hostile_relay_cannot_make_the_client_raise_or_break_a_page(data):
    c, relay, cseq = connected()
    anything = st.one_of(whole_pages(cseq), history_parts(cseq), frames())
    now = 0.3
    pages: list[E.HistoryPage] = []
    for _ in range(data.draw(st.integers(min_value=1, max_value=12), label="datagrams")):
        body = data.draw(st.lists(anything, min_size=1, max_size=4), label="frames")
        raw = F.encode(body)
        if len(raw) > F.MAX_DATAGRAM - SESSION_OVERHEAD:
            continue
        c.receive_datagram(relay.seal(body), RELAY, now)  # must not raise
        now += 0.05
        if (t := c.get_timer()) is not None and t <= now:
            c.handle_timer(now)
        for d, _ in c.datagrams_to_send(now):
            assert len(d) <= F.MAX_DATAGRAM
        while (ev := c.next_event()) is not None:
            if isinstance(ev, E.HistoryPage):
                pages.append(ev)
    event("a page was answered" if pages else "no page")
    assert len(pages) <= 1  # one answer to one request
    for page in pages:
        assert page.room == ROOM and page.before == BEFORE
        seqs = [e.seq for e in page.events]
        assert len(seqs) <= LIMIT
        assert seqs == sorted(set(seqs)) and all(0 < s < BEFORE for s in seqs)
        assert all(e.history for e in page.events)
    # bounded: whatever it was sent, the room's receive buffer holds at most its bound
    assert c.rooms[ROOM].rx is None or len(c.rooms[ROOM].rx.buffer) <= c.rooms[ROOM].rx.max_buffer


AUTHORS = [Identity.generate() for _ in range(3)]
SIGNED_KINDS = (F.EV_MSG, F.EV_ACTION, F.EV_TOPIC)
TAMPER = ("none", "text", "mid", "kind", "room", "other key", "no key", "no signature", "nick", "short key")


@st.composite
def signed_events(draw) -> tuple[F.Ev, bool]:
    """A room message as some author signed it (or a topic), then perhaps changed by the relay:
    (the event, whether it is still what its key signed)."""
    author = draw(st.integers(0, len(AUTHORS) - 1))
    kind = draw(st.sampled_from(SIGNED_KINDS))
    mid = draw(st.integers(0, 2**63 - 1))
    text = draw(st.text(max_size=20))
    nick = draw(st.sampled_from(["bob", "carol", "ann"]))
    me = AUTHORS[author]
    ev = signed_ev(me, ROOM, nick, text, kind, mid)
    how = draw(st.sampled_from(TAMPER))
    if how == "text":
        ev = msgspec_replace(ev, text=text + "!")
    elif how == "mid":
        ev = msgspec_replace(ev, mid=mid ^ 1)
    elif how == "kind":
        ev = msgspec_replace(ev, kind=F.EV_ACTION if kind == F.EV_MSG else F.EV_MSG)
    elif how == "room":
        ev = msgspec_replace(ev, sig=me.sign(_signed("other", kind, mid, text)))
    elif how == "other key":
        ev = msgspec_replace(ev, key=AUTHORS[(author + 1) % len(AUTHORS)].public)
    elif how == "no key":
        ev = msgspec_replace(ev, key=b"")
    elif how == "no signature":
        ev = msgspec_replace(ev, sig=b"")
    elif how == "short key":
        ev = msgspec_replace(ev, key=ev.key[:31])
    elif how == "nick":  # (the signature does not name the author: shown as from the key that signed)
        ev = msgspec_replace(ev, nick="dave")
    event(f"tampered: {how}")
    return ev, verify(ev.key, _signed(ROOM, ev.kind, ev.mid, ev.text), ev.sig) if len(ev.key) == 32 else False


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(live=st.lists(signed_events(), max_size=12), paged=st.lists(signed_events(), max_size=LIMIT))
def test_nothing_is_shown_that_its_key_did_not_sign(live, paged):
    """A hostile relay sends messages and topics (live, and as a history page) that their authors
    signed, or that it changed: text, message id, kind, room, key, signature, author. Whatever it
    sends, every line shown is one its key signed, and every other one is counted
    (`bad_signature`, or `unsigned` without a key) and not shown; a page shows all that its keys
    signed (from authors not in the room: their history), each post once. Before every stored message
    carried its author's key, lines from authors not in the room passed unchecked."""
    c, relay, cseq = connected()
    sent = {(False, 2 + i): ok for i, (_ev, ok) in enumerate(live)}
    batch = F.Batch(ROOM, 1, [F.Ev(F.EV_JOIN, "ann")] + [ev for ev, _ok in live])
    lo = BEFORE - len(paged)
    sent.update({(True, lo + i): ok for i, (_ev, ok) in enumerate(paged)})
    page = F.History(cseq, ROOM, lo, BEFORE - 1, lo, [ev for ev, _ok in paged], False)
    fits = {
        hist: len(F.encode([f])) <= F.MAX_DATAGRAM - SESSION_OVERHEAD
        for hist, f in ((False, batch), (True, page))
    }
    for hist, frame in ((False, batch), (True, page)):
        if fits[hist]:
            c.receive_datagram(relay.seal([frame]), RELAY, 0.3)
    assert c.stats["malformed"] == 0
    shown = []
    while (ev := c.next_event()) is not None:
        if isinstance(ev, E.HistoryPage):
            shown += [(True, e.seq) for e in ev.events if isinstance(e, (E.MessageReceived, E.TopicChanged))]
        elif isinstance(ev, (E.MessageReceived, E.TopicChanged)):
            shown.append((False, ev.seq))
    assert all(sent[s] for s in shown), "a line shown that its key did not sign"
    once, mids = set(), set()  # a page: all it signed, a post (its message id) once
    for i, (ev, ok) in enumerate(paged):
        if ok and fits[True] and not (ev.kind != F.EV_TOPIC and ev.mid and ev.mid in mids):
            once.add((True, lo + i))
            mids.add(ev.mid if ev.kind != F.EV_TOPIC else 0)
    assert once == {s for s in shown if s[0]}
    failed = sum(1 for (hist, _seq), ok in sent.items() if not ok and fits[hist])
    assert c.stats["bad_signature"] + c.stats["unsigned"] == failed


def test_a_page_shows_a_message_once_though_the_relay_repeats_it():
    """A relay repeating a member's signed message under other numbers of a page (its signature
    still holds: the numbers are not signed) shows it once, as live; the repeats are counted.
    Found in review: live and backfill dropped a repeated message id, a page did not."""
    c, relay, cseq = connected()
    bob = AUTHORS[0]
    said = signed_ev(bob, ROOM, "bob", "pay me", mid=1234)
    other = signed_ev(bob, ROOM, "bob", "hello", mid=99)
    evs = [said, other, said, said]
    lo = BEFORE - len(evs)
    c.receive_datagram(relay.seal([F.History(cseq, ROOM, lo, BEFORE - 1, lo, evs, False)]), RELAY, 0.3)
    pages = []
    while (ev := c.next_event()) is not None:
        if isinstance(ev, E.HistoryPage):
            pages.append(ev)
    (page,) = pages
    assert [e.text for e in page.events if isinstance(e, E.MessageReceived)] == ["pay me", "hello"]
    assert c.stats["duplicates"] == 2
