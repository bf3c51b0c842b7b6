"""Where lines go: backfilled history above "you joined", resyncs, direct mode's Lamport order,
and the direct-mode status line."""

from __future__ import annotations

import random
from datetime import UTC

from udproom.protocol import events as ev
from udproom.tui import model as m

from .conftest import T0, make_app, ready, settle, texts


def row_index(rows, needle):
    hits = [i for i, t in enumerate(rows) if needle in t]
    assert len(hits) == 1, (needle, hits, rows)
    return hits[0]


async def test_history_is_drawn_above_you_joined_and_live_events_below():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        # what the core emits on a join: RoomJoined, the backfill (history), then live events
        backend.inject(ev.RoomJoined("music", "alice", (ev.Member("alice"), ev.Member("bob"))))
        backend.inject(ev.MessageReceived("music", 7, "bob", "old news", T0 - 600, history=True))
        backend.inject(ev.MemberJoined("music", 8, "carol", T0 - 500, history=True))
        backend.inject(ev.MessageReceived("music", 9, "carol", "older than you", T0 - 400, history=True))
        backend.inject(ev.MessageReceived("music", 11, "bob", "live one", T0))
        await settle(pilot, app)
        await pilot.press("alt+4")
        assert app.chat.active == "music"
        rows = texts(app)
        joined = row_index(rows, "you joined #music · 2 here")
        assert (
            row_index(rows, "old news") < row_index(rows, "carol joined") < row_index(rows, "older than you")
        )
        assert row_index(rows, "older than you") < joined < row_index(rows, "live one")
        # history is drawn dim, live messages are not
        lines = {x.text: x for x in app.chat.rooms["music"].lines}
        assert lines["old news"].history and not lines["live one"].history
        assert app.chat.rooms["music"].unread == 0  # history is not news

        # a second batch of backfill (the core may split it) still goes above the marker
        backend.inject(ev.MessageReceived("music", 10, "bob", "late backfill", T0 - 300, history=True))
        backend.inject(ev.MessageReceived("music", 12, "bob", "live two", T0 + 1))
        await settle(pilot, app)
        rows = texts(app)
        joined = row_index(rows, "you joined #music")
        assert row_index(rows, "older than you") < row_index(rows, "late backfill") < joined
        assert joined < row_index(rows, "live one") < row_index(rows, "live two")


async def test_history_from_another_day_gets_its_own_day_separator():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        backend.inject(ev.RoomJoined("music", "alice", (ev.Member("alice"),)))
        backend.inject(ev.MessageReceived("music", 1, "bob", "yesterday's news", T0 - 86400, history=True))
        await settle(pilot, app)
        await pilot.press("alt+4")
        rows = texts(app)
        assert "Wednesday 27 May 2026" in rows[0]
        assert "yesterday's news" in rows[1]
        assert "Thursday 28 May 2026" in rows[2]
        assert "you joined #music" in rows[3]


async def test_second_room_joined_is_a_resync_not_a_second_join():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        assert "bob" in app.chat.rooms["lobby"].members
        # after a reconnect the core rejoins and reports the room again, with who is there now
        backend.inject(ev.ConnectionLost("no answer", 1.0))
        backend.inject(ev.Connected("127.0.0.1:6000", "alice", 0.01))
        backend.inject(ev.RoomJoined("lobby", "alice", (ev.Member("alice"), ev.Member("erin"))))
        await settle(pilot, app)
        rows = texts(app)
        assert sum("you joined #lobby" in t for t in rows) == 1
        assert sum("rejoined #lobby · 2 here" in t for t in rows) == 1
        assert set(app.chat.rooms["lobby"].members) == {"alice", "erin"}
        assert "erin" in app.member_list.build().plain and "bob" not in app.member_list.build().plain


def stamped(seq, nick, text=None):
    return ev.MessageReceived("lobby", seq, nick, text or f"{nick}@{seq}", T0)


def message_order(model, room="lobby"):
    return [(x.seq, x.nick) for x in model.rooms[room].lines if x.kind <= m.ACTION]


def test_direct_mode_every_arrival_order_gives_the_same_final_order():
    msgs = [
        stamped(s, n)
        for s, n in [
            (1, "erin"),
            (2, "bob"),
            (3, "dave"),
            (4, "bob"),
            (4, "carol"),
            (5, "bob"),
            (7, "carol"),
            (9, "dave"),
        ]
    ]
    want = sorted((e.seq, e.nick) for e in msgs)
    rng = random.Random(7)
    orders = [msgs, msgs[::-1], *(rng.sample(msgs, len(msgs)) for _ in range(30))]
    for order in orders:
        chat = m.ChatModel("alice", tz=UTC, clock=lambda: T0)
        chat.stamp_order = True
        chat.apply(ev.RoomJoined("lobby", "alice", (ev.Member("alice"),)))
        for e in order:
            chat.apply(e)
        assert message_order(chat) == want
        assert "you joined" in chat.rooms["lobby"].lines[0].text


def test_relay_mode_keeps_arrival_order():
    chat = m.ChatModel("alice", tz=UTC, clock=lambda: T0)
    chat.apply(ev.RoomJoined("lobby", "alice", (ev.Member("alice"),)))
    for e in (stamped(3, "bob"), stamped(1, "carol"), stamped(2, "dave")):
        chat.apply(e)
    assert message_order(chat) == [(3, "bob"), (1, "carol"), (2, "dave")]


def test_direct_mode_history_is_ordered_above_the_marker_and_live_below():
    chat = m.ChatModel("alice", tz=UTC, clock=lambda: T0)
    chat.stamp_order = True
    chat.apply(ev.RoomJoined("lobby", "alice", (ev.Member("alice"),)))
    chat.apply(stamped(10, "bob", "live"))
    chat.apply(ev.MessageReceived("lobby", 2, "bob", "h2", T0 - 60, history=True))
    chat.apply(ev.MessageReceived("lobby", 1, "carol", "h1", T0 - 90, history=True))
    chat.apply(stamped(8, "carol", "live earlier"))
    assert [x.text for x in chat.rooms["lobby"].lines] == [
        "h1",
        "h2",
        "you joined #lobby · 1 here",
        "live earlier",
        "live",
    ]


async def test_direct_mode_lines_take_their_lamport_place_and_own_posts_move_when_stamped():
    app, backend = make_app(rooms=("lobby",), auto_ack=False)
    backend.direct = True
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        assert app.chat.stamp_order
        # out of Lamport order, in separate batches and in one
        backend.inject(stamped(4, "carol", "four-carol"))
        await settle(pilot, app)
        backend.inject(stamped(2, "bob", "two-bob"))
        await settle(pilot, app)
        backend.inject(stamped(6, "bob", "six-bob"))
        backend.inject(stamped(4, "bob", "four-bob"))
        await settle(pilot, app)
        await pilot.press(*"mine", "enter")  # pending: no stamp yet, shown at the bottom
        backend.inject(stamped(1, "erin", "one-erin"))
        await settle(pilot, app)
        lines = [x.text for x in app.chat.rooms["lobby"].lines if x.kind <= m.ACTION]
        assert lines == ["one-erin", "two-bob", "four-bob", "four-carol", "six-bob", "mine"]
        backend.ack(1, seq=3)  # acknowledged by every peer, stamped 3: it moves to its place
        await settle(pilot, app)
        lines = [x.text for x in app.chat.rooms["lobby"].lines if x.kind <= m.ACTION]
        assert lines == ["one-erin", "two-bob", "mine", "four-bob", "four-carol", "six-bob"]
        rows = [t for t in texts(app) if "┃" in t or "│" in t]
        assert [r.split("┃" if "┃" in r else "│")[1].strip() for r in rows[1:]] == lines


async def test_direct_mode_status_line_follows_the_peer_count_and_shows_addresses():
    app, backend = make_app(rooms=("lobby",))
    backend.direct = True
    backend.address = "192.0.2.7:6001"
    async with app.run_test(size=(160, 30)) as pilot:
        await ready(pilot, app, backend)
        status = lambda: str(app.query_one("#status").render())  # noqa: E731
        assert "direct, 0 peers" in status() and "others peer with: 192.0.2.7:6001" in status()
        for n, event in enumerate(
            [
                ev.MemberJoined("lobby", 2, "bob", T0),
                ev.MemberJoined("lobby", 3, "carol", T0),
                ev.MemberTimedOut("lobby", 4, "bob", T0),
                ev.MemberLeft("lobby", 5, "carol", T0),
            ]
        ):
            backend.peers = [1, 2, 1, 0][n]
            backend.inject(event)
            await settle(pilot, app)
            want = ["direct, 1 peer", "direct, 2 peers", "direct, 1 peer", "direct, 0 peers"][n]
            assert want in status(), (n, status())
        # peers can also come and go with no room event: the status tick picks that up
        backend.peers = 4
        app.tick()
        assert "direct, 4 peers" in status()
