"""Direct mode's durable history (issue 10): a peer answers a joiner's history, and its pages
back, from its log (the app's chat log, read through `chatlog.peer_history`) as well as from
memory; a restarted peer answers with lines from before its restart; a hostile member's answers
are bounded and cannot hide what a member says itself."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from udproom.protocol import events as E
from udproom.protocol import frames as F
from udproom.protocol.chatlog import ChatLog, line_of, peer_history
from udproom.protocol.crypto import signed_bytes, verify
from udproom.protocol.events import direct_mid
from udproom.protocol.names import MAX_TEXT_BYTES, clip_utf8
from udproom.protocol.peer import PeerNode
from udproom.protocol.peer import history as H
from udproom.protocol.peer import state as P

from .adversary import Watched, floats, ints, texts
from .fakenet import FakeNet, Impairment
from .peers import addr, of, timing

CIRCLE = "direct test"


def log_events(log: ChatLog, net: FakeNet, i: int, posted: dict[tuple[int, int], str]) -> None:
    """What the app logs for peer i (tui/history.py): the room events it got, and its own posts
    as acknowledged (stamped with their Lamport clock, with what it signed)."""
    lines = []
    nick = net.nodes[addr(i)].nick
    for e in net.events[addr(i)]:
        if isinstance(e, E.MessageReceived) and not e.room.startswith("@"):
            lines.append(line_of(e, CIRCLE, 0, direct_mid(e.room, e.nick, e.seq, e.text), direct=True))
        elif isinstance(e, E.PostAcknowledged) and (i, e.local_id) in posted:
            own = E.MessageReceived(
                e.room, e.seq, nick, posted[i, e.local_id], 1.7e9, mine=True, signed=e.signed
            )
            lines.append(line_of(own, CIRCLE, 0, direct_mid(e.room, nick, e.seq, own.text), direct=True))
    log.add(lines)


def post(net: FakeNet, i: int, text: str, posted: dict[tuple[int, int], str]) -> None:
    lid = net.call(addr(i), net.nodes[addr(i)].post, "lobby", text)
    posted[i, lid] = text
    net.run_until(net.now + 0.01)


def pair(seed: int, second: str):
    """p0 and a second peer in #lobby, linked (the second dialed p0)."""
    net = FakeNet(seed=seed, imp=Impairment())
    p0 = net.add(addr(0), PeerNode("p0", timing=timing()))
    p1 = net.add(addr(1), PeerNode(second, timing=timing()))
    for i, node in enumerate((p0, p1)):
        net.call(addr(i), node.join, "lobby")
    net.call(addr(1), p1.add_peer, addr(0))
    net.run_while(lambda: len(p0.members("lobby")) < 2, net.now + 5)
    return net, p0, p1


def chat_then_restart(tmp_path, n_old: int = 30):
    """p0 and p1 chat (n_old lines), both quit; p0 starts again on its log (and its identity key,
    as the app does). Returns the net, the new p0 and the log."""
    net, p0, p1 = pair(3, "p1")
    posted: dict[tuple[int, int], str] = {}
    for k in range(n_old):
        post(net, k % 2, f"old {k}", posted)
    net.run_while(lambda: p0.pending_posts or p1.pending_posts, net.now + 5)
    log = ChatLog(tmp_path / "chat.sqlite3")
    log_events(log, net, 0, posted)
    return net, restart_on(net, p0, log), log


def restart_on(net: FakeNet, p0: PeerNode, log: ChatLog) -> PeerNode:
    """p0 and p1 quit; p0 starts again on its log and its identity key (as the app does: its key
    file), back in #lobby. Returns the new p0."""
    net.remove(addr(0))
    net.remove(addr(1))
    net.run_until(net.now + 2 * timing().timeout)
    p0 = net.add(addr(0), PeerNode("p0", timing=timing(), identity=p0.identity))
    p0.serve_history(peer_history(log, CIRCLE))
    net.call(addr(0), p0.join, "lobby")
    return p0


def joiner(net: FakeNet, i: int, contact: int, nick: str = "late") -> PeerNode:
    node = net.add(addr(i), PeerNode(nick, timing=timing()))
    net.call(addr(i), node.join, "lobby")
    net.call(addr(i), node.add_peer, addr(contact))
    net.run_while(lambda: len(node.members("lobby")) < 2, net.now + 5)
    net.run_until(net.now + 0.5)
    return node


def texts_of(events) -> list[str]:
    return [e.text for e in events if isinstance(e, E.MessageReceived)]


def test_a_peer_restarted_on_its_log_answers_history_from_before_its_restart(tmp_path):
    net, _p0, _log = chat_then_restart(tmp_path)
    posted: dict[tuple[int, int], str] = {}
    post(net, 0, "after the restart", posted)
    joiner(net, 2, 0)
    got = of(net, 2, E.MessageReceived)
    # the newest 100 of what it logged and said since: each once, in the room's (lc, nick) order
    assert [e.text for e in got if e.history] == [f"old {k}" for k in range(30)] + ["after the restart"]
    assert [e.nick for e in got][:4] == ["p0", "p1", "p0", "p1"]
    stamps = [(e.seq, e.nick) for e in got]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    # its clock went on above what it logged: its new line comes after the old ones everywhere
    assert got[-1].seq > got[-2].seq


def test_history_from_the_log_and_the_join_window_show_each_line_once(tmp_path):
    """p1 is back in the room when the joiner arrives: its recent lines reach the joiner both
    from p0's log (history) and from p1 itself (its join window)."""
    net, p0, log = chat_then_restart(tmp_path)
    p1 = net.add(addr(1), PeerNode("p1", timing=timing()))
    net.call(addr(1), p1.join, "lobby")
    net.call(addr(1), p1.add_peer, addr(0))
    net.run_while(lambda: len(p0.members("lobby")) < 2, net.now + 5)
    posted: dict[tuple[int, int], str] = {}
    for k in range(6):
        post(net, k % 2, f"new {k}", posted)
    net.run_while(lambda: p0.pending_posts or p1.pending_posts, net.now + 5)
    log_events(log, net, 0, posted)  # the app logged what p0 saw since
    late = net.add(addr(2), PeerNode("late", timing=timing()))
    net.call(addr(2), late.join, "lobby")
    net.call(addr(2), late.add_peer, addr(0))
    net.run_while(lambda: len(late.members("lobby")) < 3, net.now + 5)
    net.run_until(net.now + 1.0)
    got = texts_of(of(net, 2, E.MessageReceived))
    want = [f"old {k}" for k in range(30)] + [f"new {k}" for k in range(6)]
    assert sorted(got) == sorted(want)  # every line, none twice


def _edited(text: str) -> str:
    return "edited: " + clip_utf8(text, MAX_TEXT_BYTES - 8)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(st.tuples(st.integers(0, 1), texts(MAX_TEXT_BYTES)), min_size=1, max_size=12), st.data())
def test_lines_served_from_a_log_verify_and_a_line_altered_on_disk_is_not_shown(said, data):
    """p0 and p1 say anything; p0's app logs it; some of the logged lines are then edited on disk;
    p0 restarts on its log (and key) and a newcomer joins through it. What the newcomer shows
    from p0's log is exactly the lines nobody edited, each as its author signed it (the signature
    the event carries verifies under that author's key, over the time it was signed with); an
    edited line is never shown, and is counted as a bad signature."""
    net, p0, p1 = pair(5, "p1")
    keys = {"p0": p0.identity.public, "p1": p1.identity.public}
    posted: dict[tuple[int, int], str] = {}
    for i, text in said:
        post(net, i, text, posted)
    net.run_while(lambda: p0.pending_posts or p1.pending_posts, net.now + 5)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chat.sqlite3"
        log = ChatLog(path)
        log_events(log, net, 0, posted)
        rows = log.stamped(CIRCLE, "lobby", 0, 1000, signed=True)
        assert sorted((x.nick, x.text) for x in rows) == sorted((f"p{i}", t) for i, t in said)
        edited = data.draw(st.sets(st.sampled_from([x.pos for x in rows])), label="edited")
        assume(all(_edited(x.text) != x.text for x in rows))
        with sqlite3.connect(path) as db:  # someone edits the file
            for x in rows:
                if x.pos in edited:
                    db.execute("UPDATE lines SET text = ? WHERE id = ?", (_edited(x.text), x.pos))
        restart_on(net, p0, log)
        late = joiner(net, 2, 0)
        log.close()
    shown = [e for e in of(net, 2, E.MessageReceived) if e.history]
    kept = [x for x in rows if x.pos not in edited]
    assert sorted((e.seq, e.nick, e.text) for e in shown) == sorted((x.lc, x.nick, x.text) for x in kept)
    for e in shown:
        s = e.signed
        assert s is not None and s.key == keys[e.nick]
        kind = F.EV_ACTION if e.action else F.EV_MSG
        assert verify(s.key, signed_bytes("lobby", kind, s.mid, s.ts, e.text.encode()), s.sig)
    assert late.stats["bad_signature"] == len(edited)


def test_paging_back_fetches_older_lines_from_the_peers_logs(tmp_path):
    net, _p0, _log = chat_then_restart(tmp_path, n_old=250)
    late = joiner(net, 2, 0)
    backfill = of(net, 2, E.MessageReceived)
    assert len(backfill) == 100
    shown = {e.text for e in backfill}
    pages = 0
    before = min(e.seq for e in backfill)
    while True:
        net.call(addr(2), late.page_back, "lobby", before, 100)
        net.run_while(lambda n=pages: not of(net, 2, E.HistoryPage)[n:], net.now + 5)
        page = of(net, 2, E.HistoryPage)[pages]
        pages += 1
        assert page.room == "lobby" and page.before == before
        assert all(e.history and 0 < e.seq < before for e in page.events)
        assert [(e.seq, e.nick) for e in page.events] == sorted((e.seq, e.nick) for e in page.events)
        assert not shown & {e.text for e in page.events}  # nothing twice
        shown |= {e.text for e in page.events}
        if page.complete:
            break
        assert len(page.events) == 100
        before = page.events[0].seq
        net.run_until(net.now + H.PAGE_EVERY)  # a member answers a page that often; a person reads a while
    assert shown == {f"old {k}" for k in range(250)}
    assert pages == 2  # 100 + 50: the second page was short, so the start of the history


def test_paging_with_no_one_to_ask_is_refused_in_one_line():
    net = FakeNet(seed=1)
    p0 = net.add(addr(0), PeerNode("p0", timing=timing()))
    net.call(addr(0), p0.join, "lobby")
    net.call(addr(0), p0.page_back, "lobby", 50, 100)
    (refused,) = of(net, 0, E.RequestRefused)
    assert refused.what == "history" and "\n" not in refused.reason


def test_a_page_that_does_not_come_ends_with_what_came():
    net = FakeNet(seed=1)
    p0 = net.add(addr(0), PeerNode("p0", timing=timing()))
    p1 = net.add(addr(1), PeerNode("p1", timing=timing()))
    for i, node in enumerate((p0, p1)):
        net.call(addr(i), node.join, "lobby")
    net.call(addr(1), p1.add_peer, addr(0))
    net.run_while(lambda: len(p1.members("lobby")) < 2, net.now + 5)
    net.dark_links[addr(0)] = [(net.now, net.now + 0.3)]  # p0 hears nothing for a while
    net.call(addr(1), p1.page_back, "lobby", 50, 100)
    net.run_while(lambda: not of(net, 1, E.HistoryPage), net.now + 5)
    (page,) = of(net, 1, E.HistoryPage)
    assert page.events == () and not page.complete  # no answer: PgUp may ask again


# ---------------------------------------------------------------------------- a hostile member

HONEST_LINES = 20


def hostile_room():
    """p0 (honest, in the room a while, with lines) and mallory; `late` joins through mallory,
    so mallory's history answer is the one it takes."""
    net, p0, mallory = pair(7, "mallory")
    posted: dict[tuple[int, int], str] = {}
    for k in range(HONEST_LINES):
        post(net, 0, f"p0 said {k}", posted)
    net.run_while(lambda: p0.pending_posts, net.now + 5)
    late = PeerNode("late", timing=timing())
    w = Watched(late, addr(2))
    net.add(addr(2), w)
    net.call(addr(2), late.join, "lobby")
    net.call(addr(2), late.add_peer, addr(1))
    net.run_while(lambda: len(late.members("lobby")) < 3, net.now + 5)
    return net, p0, mallory, late, w, set(posted.values())


NICKS = st.one_of(st.sampled_from(["p0", "P0", "mallory", "late", "p\u0430"]), texts(40))
ITEM = st.builds(
    lambda room, seq, lc, kind, nick, text, ts, mid: F.PeerMsg(room, seq, lc, kind, nick, text, ts, mid),
    st.sampled_from(["lobby", "", "other"]),
    st.one_of(st.integers(-2, 40), ints()),
    st.one_of(st.integers(-2, 200), ints()),
    st.sampled_from([F.EV_MSG, F.EV_ACTION, F.EV_DM, 99]),
    NICKS,
    st.one_of(st.sampled_from(["p0 said 3", "p0 said 19", "forged"]), texts(300)),
    floats(),
    ints(),
)
ANSWER = st.tuples(
    st.one_of(st.just(0), st.integers(-2, 300), ints()),  # before (0: the join backfill)
    st.one_of(st.just(0), st.integers(-1, 3), ints()),  # n
    st.booleans(),  # end
    st.lists(ITEM, max_size=12),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(st.tuples(st.booleans(), st.lists(ANSWER, min_size=1, max_size=8)), min_size=1, max_size=6))
def test_a_hostile_members_history_answers_are_bounded(steps):
    net, _p0, mallory, late, _w, p0_said = hostile_room()
    link = mallory.links[addr(2)]
    asked_pages = 0
    for ask_page, answers in steps:
        if ask_page:
            net.call(addr(2), late.page_back, "lobby", 10**6, 50)
            asked_pages += 1
        frames = [F.PeerHistory("lobby", items, before, n, end) for before, n, end, items in answers]
        for f in frames:
            link.out.append(f)
            try:
                net.flush(addr(1))
            except AssertionError:
                pass  # its own oversized datagram: the network carries it, late refuses it
        net.run_until(net.now + 0.05)
    net.run_until(net.now + 2 * timing().keepalive + 1.0)  # pages not answered in full time out
    got = of(net, 2, E.MessageReceived)
    history = [e for e in got if e.history]
    pages = of(net, 2, E.HistoryPage)
    # bounded: the backfill at most what it asked (late.history), each page at most its limit,
    # one page per question, every datagram it received or sent <= 1200 bytes (Watched)
    assert len(history) <= late.history + HONEST_LINES  # (+ p0's own join window, live)
    assert len(pages) <= asked_pages
    for page in pages:
        assert len(page.events) <= 50
        assert all(e.history and 0 < e.seq < page.before and e.room == "lobby" for e in page.events)
    # p0 is a member whose stream late receives live: a line attributed to it that it never
    # said is history placed before its stream (stamped no later than its clock when it
    # joined late), and everything p0 said reaches late, once, whatever mallory claimed
    p0_link = late.links.get(addr(0))
    assert p0_link is not None
    join_lc = p0_link.rooms["lobby"].join_lc
    for e in [*got, *(x for page in pages for x in page.events)]:
        if e.nick.casefold() == "p0" and e.text not in p0_said:
            assert e.history and e.seq <= join_lc
    from_p0 = [e.text for e in got if e.nick == "p0" and e.text in p0_said]
    assert sorted(from_p0) == sorted(p0_said)
    assert len(late.links) <= P.MAX_LINKS and late.stats["datagrams_in"] > 0


def test_an_honest_peer_answers_page_requests_within_its_repair_budget(tmp_path):
    """A member asking p0 for pages as fast as it can: at most one answer per PAGE_EVERY (each
    reads the log), each at most MAX_PAGE lines, in datagrams <= 1200 bytes (Watched), paid from
    the repair budget."""
    net, p0, _log = chat_then_restart(tmp_path, n_old=400)
    w = Watched(p0, addr(0))
    net.nodes[addr(0)] = w
    mallory = joiner(net, 2, 0, nick="mallory")
    link = mallory.links[addr(0)]
    answers: list[F.PeerHistory] = []
    took = mallory._on_history

    def spy(lk, h, now):
        answers.append(h)
        took(lk, h, now)

    mallory._on_history = spy
    start, out0 = net.now, w.bytes_out.get(addr(2), 0)
    for _ in range(200):
        link.out.append(F.PeerHistory("lobby", [], 10**9, 10**9))
        net.flush(addr(2))
        net.run_until(net.now + 0.005)
    net.run_until(net.now + 0.2)
    assert answers  # it does answer
    sent = w.bytes_out.get(addr(2), 0) - out0
    rtts = (net.now - start) / p0.links[addr(2)].rtt.pace + 1
    assert sent <= rtts * (P.REPAIR_WINDOW + 1200)
    assert all(len(f.items) <= H.MAX_PAGE for f in answers)
    assert sum(f.end for f in answers) <= (net.now - start) / H.PAGE_EVERY + 1
