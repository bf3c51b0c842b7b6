"""The messages pane: posting, delivery marks, unread counts and the bell, sanitising, scrollback,
batching, the unread marker and day separators."""

from __future__ import annotations

import re

from udproom.protocol import events as ev
from udproom.tui import model as m
from udproom.tui.widgets import ChatInput

from .conftest import T0, make_app, ready, settle, texts, type_line


async def test_startup_shows_rooms_members_and_status():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        assert app.chat.room_order() == ["lobby", "dev", "random"]
        assert app.chat.active == "lobby"
        rooms_text = app.room_list.build().plain
        assert "#lobby" in rooms_text and "#dev" in rooms_text and "#random" in rooms_text
        members = app.member_list.build().plain
        assert "● alice (you)" in members and "● bob" in members
        assert "◐ carol" in members and "○ dave" in members
        status = str(app.query_one("#status").render())
        assert "connected 12 ms" in status and "relay 127.0.0.1:6000" in status and "#lobby" in status
        assert isinstance(app.focused, ChatInput)


async def test_typed_message_is_posted_pending_then_acknowledged():
    app, backend = make_app(auto_ack=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await pilot.press(*"hello world", "enter")
        assert backend.calls[-1] == ("post", "lobby", "hello world", False)
        line = app.chat.rooms["lobby"].lines[-1]
        assert line.text == "hello world" and line.mine and line.state == m.PENDING
        assert any(t.endswith("hello world ◌") for t in texts(app))
        backend.ack(1)
        await settle(pilot, app)
        assert line.state == m.SENT
        assert sum("hello world" in t for t in texts(app)) == 1  # the relay's echo is not a second copy
        assert app.input.value == ""


async def test_failed_post_is_marked_and_ctrl_r_retries():
    app, backend = make_app(auto_ack=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await type_line(pilot, "are you there")
        backend.fail(1)
        await settle(pilot, app)
        line = next(x for x in app.chat.rooms["lobby"].lines if x.text == "are you there")
        assert line.state == m.FAILED
        assert any("✗ not delivered" in t for t in texts(app))
        assert "Ctrl+R or /retry" in app.chat.rooms["lobby"].lines[-1].text
        await pilot.press("ctrl+r")
        assert ("retry", 1) in backend.calls
        assert line.state == m.PENDING and line.local_id == 2
        backend.ack(2)
        await settle(pilot, app)
        assert line.state == m.SENT


async def test_unread_counts_mentions_and_bell():
    app, backend = make_app(bell=True)
    rings = []
    app.bell = lambda: rings.append(1)
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        backend.say("dev", "bob", "one")
        backend.say("dev", "bob", "two")
        await settle(pilot, app)
        assert app.chat.rooms["dev"].unread == 2 and not rings
        assert re.search(r"2 #dev +2\n", app.room_list.build().plain)
        backend.say("random", "carol", "hey @alice!")
        await settle(pilot, app)
        assert rings == [1]
        assert re.search(r"#random +1!", app.room_list.build().plain)
        assert "act: 2,3!" in str(app.query_one("#status").render())
        backend.say("lobby", "bob", "ALICE, in here")  # the active room: a mention but nothing unread
        await settle(pilot, app)
        assert rings == [1, 1]
        assert app.chat.rooms["lobby"].unread == 0
        assert app.chat.rooms["lobby"].lines[-1].mention


async def test_no_bell_when_disabled():
    app, backend = make_app(bell=False)
    rings = []
    app.bell = lambda: rings.append(1)
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        backend.say("dev", "bob", "alice?")
        await settle(pilot, app)
        assert app.chat.rooms["dev"].mentions == 1 and rings == []


async def test_incoming_direct_message_appears_as_a_room_with_a_mention():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        backend.inject(ev.MessageReceived("@carol", 1, "carol", "got a minute?", T0))
        await settle(pilot, app)
        room = app.chat.rooms["@carol"]
        assert room.unread == 1 and room.mentions == 1 and app.chat.active == "lobby"


async def test_sanitizes_text_from_others():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        backend.say("lobby", "ev\x1b[31mil", "\x1b]0;pwned\x07red\x1b[2J text\u202e")
        await settle(pilot, app)
        line = app.chat.rooms["lobby"].lines[-1]
        assert "\x1b" not in line.text and "\x07" not in line.text and "\u202e" not in line.text
        assert "\x1b" not in line.nick
        assert not any("\x1b" in t for t in texts(app))


async def test_scrollback_is_capped_per_room():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        for i in range(m.SCROLLBACK + 500):
            backend.say("dev", "bob", f"message {i}")
        await settle(pilot, app)
        lines = app.chat.rooms["dev"].lines
        assert len(lines) == m.SCROLLBACK
        assert lines[-1].text == f"message {m.SCROLLBACK + 499}"
        assert app.chat.rooms["dev"].unread == m.SCROLLBACK + 500


async def test_events_are_batched_into_few_screen_updates():
    app, backend = make_app(flush_interval=0.05)
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        before = app.flushes
        rebuilds = []
        original = app.messages.rebuild
        app.messages.rebuild = lambda: (rebuilds.append(1), original())[1]
        for i in range(1000):
            backend.say("lobby", "bob", f"burst {i}")
        await settle(pilot, app)
        assert app.flushes - before == 1
        assert len(rebuilds) == 1
        assert texts(app)[-1].endswith("burst 999")


async def test_unread_marker_and_day_separator():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        backend.say("dev", "bob", "seen before")
        await pilot.press("alt+2")
        await settle(pilot, app)
        await pilot.press("alt+1")
        backend.say("dev", "bob", "new one", ts=T0 + 86400)
        await settle(pilot, app)
        await pilot.press("alt+2")
        rows = texts(app)
        marker = next(i for i, t in enumerate(rows) if " new " in t and t.startswith("─"))
        assert "seen before" in rows[marker - 1]
        assert "Friday 29 May 2026" in rows[marker + 1]
        assert "new one" in rows[marker + 2]
