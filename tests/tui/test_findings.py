"""Pilot tests for the findings of a hands-on review in tmux (each failed before its fix)."""

from __future__ import annotations

from udproom.protocol import events as ev
from udproom.tui import model as m

from .conftest import T0, last, make_app, ready, settle, texts, until


async def type_line(pilot, text):
    pilot.app.input.value = text
    pilot.app.input.cursor_position = len(text)
    await pilot.press("enter")


def status(app) -> str:
    return str(app.query_one("#status").render())


async def test_nick_change_is_ours_in_every_room_and_everywhere_on_screen():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await type_line(pilot, "/msg bob hi")
        await settle(pilot, app)
        await pilot.press("alt+1")
        await type_line(pilot, "/nick carlos")
        await until(pilot, lambda: all(r.lines and r.lines[-1].kind == m.NICK
                                       for n, r in app.chat.rooms.items() if not r.direct), "renamed")
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
