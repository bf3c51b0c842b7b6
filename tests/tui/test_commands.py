"""Slash commands and the command palette on screen: /nick, /away, /part, refused joins, send errors."""

from __future__ import annotations

from udproom.protocol import events as ev
from udproom.protocol.frames import MAX_TEXT
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


async def test_retry_command():
    app, backend = make_app(auto_ack=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await type_line(pilot, "one")
        backend.fail(1)
        await settle(pilot, app)
        await type_line(pilot, "/retry")
        assert ("retry", 1) in backend.calls
        await type_line(pilot, "/retry")
        assert "nothing to retry" in str(app.query_one("#status").render())


async def test_join_and_part_commands():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await type_line(pilot, "/join #Music")
        assert ("join", "music") in backend.calls
        await until(pilot, lambda: app.chat.active == "music", "switched to the new room")
        assert any("you joined #music" in t for t in texts(app))
        await type_line(pilot, "/join dev")  # already in: just switch
        assert app.chat.active == "dev" and backend.calls.count(("join", "dev")) == 0
        await type_line(pilot, "/part")
        assert ("part", "dev") in backend.calls
        assert "dev" not in app.chat.rooms
        await type_line(pilot, "/part music")
        assert "music" not in app.chat.rooms
        await type_line(pilot, "/part nowhere")
        assert "you are not in #nowhere" in last(app)


async def test_nick_command():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await type_line(pilot, "/nick alicia")
        assert ("nick", "alicia") in backend.calls
        await until(pilot, lambda: app.chat.nick == "alicia", "nick changed")
        assert "you are now known as alicia" in texts(app)[-1]
        assert "alicia ›" in str(app.query_one("#prompt").render())
        assert "alicia" in app.chat.rooms["lobby"].members
        await type_line(pilot, "/nick @bad")
        assert "nick may not start with '@' or '#'" in last(app)


async def test_me_command():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await type_line(pilot, "/me waves")
        assert ("post", "lobby", "waves", True) in backend.calls
        await settle(pilot, app)
        assert texts(app)[-1].endswith("* ┃ alice waves")
        backend.say("lobby", "bob", "waves back", action=True)
        await settle(pilot, app)
        assert texts(app)[-1].endswith("* │ bob waves back")
        await type_line(pilot, "/me")
        assert "usage: /me ACTION" in last(app)


async def test_msg_opens_a_direct_conversation():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await type_line(pilot, "/msg bob psst")
        assert app.chat.active == "@bob"
        assert ("post", "@bob", "psst", False) in backend.calls
        assert app.chat.room_order()[-1] == "@bob"
        assert "@bob" in app.room_list.build().plain
        assert "direct conversation with bob" in str(app.query_one("#topic").render())
        await type_line(pilot, "/msg")
        assert "usage: /msg NICK [TEXT]" in last(app)


async def test_topic_command_shows_and_sets():
    app, backend = make_app(topics={"lobby": "welcome all"})
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        assert "welcome all" in str(app.query_one("#topic").render())
        await type_line(pilot, "/topic")
        assert "topic of #lobby: welcome all" in last(app)
        await type_line(pilot, "/topic release on friday")
        assert ("topic", "lobby", "release on friday") in backend.calls
        await until(pilot, lambda: app.chat.rooms["lobby"].topic == "release on friday", "topic")
        assert "release on friday" in str(app.query_one("#topic").render())
        assert "alice set the topic: release on friday" in texts(app)[-1]


async def test_away_command_and_presence():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await type_line(pilot, "/away lunch")
        assert ("away", "lunch") in backend.calls
        await until(pilot, lambda: app.chat.rooms["lobby"].members["alice"].away == "lunch", "away")
        assert "◐ alice" in app.member_list.build().plain
        await type_line(pilot, "/away")
        assert ("away", "") in backend.calls
        await until(pilot, lambda: app.chat.rooms["lobby"].members["alice"].away == "", "back")
        assert "● alice" in app.member_list.build().plain


async def test_names_help_and_unknown_commands():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await type_line(pilot, "/names")
        assert "4 in #lobby: alice, bob, carol (away), dave (timed out)" in last(app)
        await type_line(pilot, "/help")
        joined = "\n".join(texts(app))
        for usage in ("/join ROOM", "/part [ROOM]", "/msg NICK [TEXT]", "/connect HOST[:PORT]", "/quit"):
            assert usage in joined
        await type_line(pilot, "/frobnicate now")
        assert "unknown command /frobnicate; /help lists them" in last(app)
        await type_line(pilot, "/join")
        assert "usage: /join ROOM" in last(app)
        await type_line(pilot, "/join bad room!")
        assert "usage: /join ROOM" in last(app)
        await type_line(pilot, "/join bad!")
        assert "may only use letters" in last(app)
        await type_line(pilot, "/names extra")
        assert "/names takes no arguments" in last(app)
        await type_line(pilot, "//not a command")
        assert ("post", "lobby", "/not a command", False) in backend.calls
        assert not any(c[0] == "post" and "frobnicate" in c[2] for c in backend.calls)


async def test_too_long_message_is_an_inline_error():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        app.input.value = "x" * 1200
        await pilot.press("enter")
        assert f"message is 1200 bytes of UTF-8; the limit is {MAX_TEXT}" in last(app)
        assert not any(c[0] == "post" for c in backend.calls)


async def test_quit_command():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await type_line(pilot, "/quit")
        await until(pilot, lambda: not app.is_running, "exit")
    assert ("close",) in backend.calls


async def test_connect_command(monkeypatch):
    from udproom.tui import session

    from . import demo

    built = []

    async def fake_build(spec, timing=None):
        built.append(spec)
        return demo.FakeBackend(spec.nick, spec.rooms, address=spec.address), None, []

    monkeypatch.setattr(session, "build", fake_build)
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await type_line(pilot, "/connect nope:99999")
        assert "port 99999 in 'nope:99999' is out of range" in last(app)
        await type_line(pilot, "/connect")
        assert "usage: /connect HOST[:PORT]" in last(app)
        await type_line(pilot, "/connect 10.1.2.3:7000")
        await until(
            pilot, lambda: app.chat.mode == "relay 10.1.2.3:7000" and len(app.chat.rooms) == 3, "reconnected"
        )
        assert built[0].address == "10.1.2.3:7000" and built[0].rooms == ["lobby", "dev", "random"]
        assert ("close",) in backend.calls  # the old session was left


async def test_request_refused_and_notice_are_shown_inline():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        backend.inject(ev.RequestRefused("nick", "", "nick bob is taken"))
        backend.inject(ev.Notice("relay restarting soon"))
        await settle(pilot, app)
        assert texts(app)[-2].endswith("!! │ nick refused: nick bob is taken")
        assert texts(app)[-1].endswith("-!- │ relay restarting soon")


async def test_whois_shows_a_members_key_fingerprint():
    from udproom.protocol.crypto import Identity

    bob = Identity.generate()
    app, backend = make_app()
    asked: list[tuple[str, str]] = []

    def key_of(room: str, nick: str):
        asked.append((room, nick))
        return bob.public if nick == "bob" else None

    backend.key_of = key_of  # (a relay client knows its rooms' members' keys)
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await type_line(pilot, "/whois @bob")
        assert f"bob: key {bob.fingerprint} (compare it with theirs out of band)" in last(app)
        assert asked[0] == ("lobby", "bob")
        await type_line(pilot, "/whois carol")
        assert "no key known for carol" in last(app)
        await type_line(pilot, "/whois")
        assert "usage: /whois NICK" in last(app)
