"""Slash commands and the command palette on screen: /nick, /away, /part, refused joins, send errors."""

from __future__ import annotations

from udproom.protocol import events as ev
from udproom.tui import model as m

from .conftest import (
    last,
    make_app,
    ready,
    settle,
    status,
    texts,
    type_line,
    until,
)


async def test_nick_change_is_ours_in_every_room_and_everywhere_on_screen():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await type_line(pilot, "/msg bob hi")
        await settle(pilot, app)
        await pilot.press("alt+1")
        await type_line(pilot, "/nick carlos")
        await until(
            pilot,
            lambda: all(
                r.lines and r.lines[-1].kind == m.NICK for n, r in app.chat.rooms.items() if not r.direct
            ),
            "renamed",
        )
        await settle(pilot, app)
        for name in ("lobby", "dev", "random"):
            line = app.chat.rooms[name].lines[-1]
            assert line.mine, name  # "you are now known as carlos" in every room, not third person
        assert "you are now known as carlos" in texts(app)[-1]
        assert "carlos ›" in str(app.query_one("#prompt").render())
        assert "carlos (you)" in app.member_list.build().plain
        assert "carlos" in app.chat.rooms["@bob"].members and "alice" not in app.chat.rooms["@bob"].members
        # the next rename is ours too
        await type_line(pilot, "/nick dan")
        await until(pilot, lambda: app.chat.rooms["dev"].lines[-1].text == "dan", "renamed again")
        await settle(pilot, app)
        assert all(app.chat.rooms[n].lines[-1].mine for n in ("lobby", "dev", "random"))
        assert "dan (you)" in app.member_list.build().plain
        # own lines, mentions and Tab completion follow the new nick
        await type_line(pilot, "still me")
        await settle(pilot, app)
        own = next(x for x in reversed(app.chat.rooms["lobby"].lines) if x.text == "still me")
        assert own.nick == "dan" and own.mine
        backend.say("dev", "bob", "dan: ping")
        backend.say("dev", "bob", "alice: old name")
        await settle(pilot, app)
        assert app.chat.rooms["dev"].mentions == 1
        app.input.value = "da"
        app.input.cursor_position = 2
        await pilot.press("tab", "tab")
        assert "dan" not in app.input.value  # we do not complete to ourselves


async def test_send_error_keeps_the_text_in_the_input():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        big = "x" * 5000
        await type_line(pilot, big)
        assert "bytes" in last(app)
        assert app.input.value == big
        await type_line(pilot, "/frobnicate now")
        assert "unknown command" in last(app) and app.input.value == "/frobnicate now"
        await type_line(pilot, "fine")
        assert app.input.value == ""


async def test_away_is_said_once_and_shown_in_the_status():
    app, backend = make_app(rooms=("lobby",))
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        n = len(app.chat.rooms["lobby"].lines)
        await type_line(pilot, "/away lunch")
        await settle(pilot, app)
        new = [x.text for x in list(app.chat.rooms["lobby"].lines)[n:]]
        assert new == ["lunch"] and "you are marked away: lunch" in texts(app)[-1]
        assert "away: lunch" in status(app)
        await type_line(pilot, "/away")
        await settle(pilot, app)
        assert "you are back" in texts(app)[-1] and "away" not in status(app)


async def test_refused_join_stays_visible():
    app, backend = make_app(rooms=("lobby",))
    backend.rooms = []  # no room opens at start
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: app.chat.state == "connected", "connected")
        # the first room is refused (nick taken there), the second one joins
        backend.inject(ev.RequestRefused("join", "lobby", "nick alice is taken in #lobby"))
        await settle(pilot, app)
        assert "join #lobby refused: nick alice is taken in #lobby" in status(app)
        backend.join("dev")
        await until(pilot, lambda: app.chat.active == "dev", "dev opened")
        await settle(pilot, app)
        assert any("join #lobby refused" in t for t in texts(app))  # came along into #dev
        assert "join #lobby refused" in status(app)
        await pilot.press("x")
        assert "refused" not in status(app)
        backend.inject(ev.RequestRefused("join", "ops", "nick alice is taken in #ops"))
        await settle(pilot, app)
        assert "join #ops refused" in texts(app)[-1]  # in the room on screen


async def test_part_says_so_and_the_empty_screen_has_a_hint():
    app, backend = make_app(rooms=("lobby", "dev"))
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await type_line(pilot, "/part")
        await settle(pilot, app)
        assert app.chat.active == "dev" and "you left #lobby" in status(app)
        assert not any("you left" in t for t in texts(app))  # not a line in #dev's history
        await type_line(pilot, "/part")
        await settle(pilot, app)
        assert not app.chat.rooms
        assert any("you left #dev; no room open — /join ROOM or Ctrl+K" in t for t in texts(app))
        assert "no room open" in str(app.query_one("#topic").render())


async def test_command_palette_has_udproom_commands_and_a_polite_quit():
    from textual.command import CommandPalette

    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await pilot.press("f10")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette), "palette")
        await pilot.press(*"join ops")
        await until(
            pilot,
            lambda: (
                app.screen.query("CommandList")
                and "Join #ops" in str(app.screen.query_one("CommandList").get_option_at_index(0).prompt)
                if app.screen.query_one("CommandList").option_count
                else False
            ),
            "join hit",
        )
        await pilot.press("enter")
        await until(pilot, lambda: app.chat.active == "ops", "joined ops")
        await pilot.press("f10")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette), "palette for nick")
        await pilot.press(*"nick")
        await until(pilot, lambda: app.screen.query_one("CommandList").option_count > 0, "nick hit")
        await pilot.press("enter")
        await until(pilot, lambda: app.input.value == "/nick ", "prefilled /nick")
        app.input.value = ""
        await pilot.press("f10")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette), "palette again")
        await pilot.press(*"quit")
        await until(pilot, lambda: app.screen.query_one("CommandList").option_count > 0, "quit hits")
        options = [
            str(app.screen.query_one("CommandList").get_option_at_index(i).prompt)
            for i in range(app.screen.query_one("CommandList").option_count)
        ]
        assert any("Quit udproom" in o for o in options)
        assert not any(o.startswith("Quit\n") or o == "Quit" for o in options)  # Textual's abrupt one
        await pilot.press("enter")
        await until(pilot, lambda: ("close",) in backend.calls, "said goodbye")
        await until(pilot, lambda: not app.is_running, "exited")
