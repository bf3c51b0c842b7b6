"""Pilot tests: the main screen, every key, every command."""

from __future__ import annotations

import io
import re

from rich.console import Console

from udproom.protocol import events as ev
from udproom.tui import model as m
from udproom.tui.screens import HelpScreen, QuickSwitcher
from udproom.tui.widgets import ChatInput

from .conftest import T0, last, make_app, ready, settle, texts, until


async def type_line(pilot, text):
    """Put a line in the input and press Enter (typing keys one by one is tested elsewhere)."""
    pilot.app.input.value = text
    pilot.app.input.cursor_position = len(text)
    await pilot.press("enter")


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


def terminal_keys(data):
    """Raw terminal input through Textual's own parser, as the app's driver sees it."""
    from textual import events
    from textual._xterm_parser import XTermParser

    from udproom.tui import app as _app  # noqa: F401 - importing the app installs the remap

    parser = XTermParser()
    return [e for e in [*parser.feed(data), *parser.feed("")] if isinstance(e, events.Key)]


async def send_terminal(pilot, data):
    """Deliver raw terminal input to a running app (Pilot's own `press` drops the character of
    keys such as `pound_sign`, so this goes through the parser and the driver instead)."""
    for key in terminal_keys(data):
        key.set_sender(pilot.app)
        pilot.app._driver.send_message(key)
        await pilot.pause()


def test_terminal_alt_digits_parse_as_alt_keys():
    """What a real terminal sends for Alt+N (ESC N) reaches the app as `alt+N`, not as the macOS
    Option character Textual's own table has (ESC 3 -> "£"); a typed "£" stays a "£"."""

    def keys(data):
        return [(e.key, e.character) for e in terminal_keys(data)]

    for d in "123456789":
        assert keys("\x1b" + d) == [(f"alt+{d}", None)], d
    assert keys("£") == [("pound_sign", "£")]
    assert keys("§") == [("section_sign", "§")]
    assert keys("\x1b[1;3A") == [("alt+up", None)]  # other Alt keys untouched


async def test_alt_digits_jump_to_rooms():
    rooms = [f"r{i}" for i in range(1, 10)]
    app, backend = make_app(rooms=rooms, members={})
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        for n in (9, 3, 1, 5, 2, 8, 4, 7, 6):
            await pilot.press(f"alt+{n}")
            assert app.chat.active == f"r{n}"
            assert app.input.value == ""
        await pilot.press("alt+1")
        assert app.chat.active == "r1"
        assert "#r1" in str(app.query_one("#topic").render())


async def test_option_characters_are_typed_not_room_keys():
    """£ § ¢ … are ordinary characters on UK/European keyboards: typing them must not switch rooms."""
    rooms = [f"r{i}" for i in range(1, 10)]
    app, backend = make_app(rooms=rooms, members={})
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await pilot.press("alt+1")
        typed = "£5 § ¢ ∞ ¶ • ª ¡ ™"
        await send_terminal(pilot, typed)
        assert app.input.value == typed
        assert app.chat.active == "r1"
        await pilot.press("enter")
        assert backend.calls[-1] == ("post", "r1", typed, False)
        await send_terminal(pilot, "\x1b3")  # Alt+3 as a terminal sends it
        assert app.chat.active == "r3" and app.input.value == ""
        await pilot.press("alt+2")
        assert app.chat.active == "r2"


async def test_alt_digit_past_last_room_says_so():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await pilot.press("alt+7")
        assert app.chat.active == "lobby"
        assert "no room 7" in str(app.query_one("#status").render())


async def test_next_and_previous_room_keys():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        seen = []
        for key in ("ctrl+n", "ctrl+n", "ctrl+n", "ctrl+p", "alt+down", "alt+up", "alt+up"):
            await pilot.press(key)
            seen.append(app.chat.active)
        assert seen == ["dev", "random", "lobby", "random", "lobby", "random", "dev"]


async def test_command_palette_moved_off_ctrl_p():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await pilot.press("ctrl+p")
        assert app.screen is app.screen_stack[0]
        await pilot.press("f10")
        await pilot.pause()
        assert type(app.screen).__name__ == "CommandPalette"


async def test_alt_a_goes_to_mentions_first_then_unread():
    app, backend = make_app(rooms=("lobby", "dev", "random", "ops"))
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        backend.say("dev", "bob", "plain message")
        backend.say("ops", "bob", "alice: look at this")
        await settle(pilot, app)
        assert app.chat.rooms["ops"].mentions == 1 and app.chat.rooms["dev"].unread == 1
        await pilot.press("alt+a")
        assert app.chat.active == "ops"
        await pilot.press("alt+a")
        assert app.chat.active == "dev"
        await pilot.press("alt+a")
        assert app.chat.active == "dev"
        assert "no activity" in str(app.query_one("#status").render())


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


async def test_quick_switcher_filters_and_switches():
    app, backend = make_app(rooms=("lobby", "dev", "random", "design"))
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await pilot.press("ctrl+k")
        await until(pilot, lambda: isinstance(app.screen, QuickSwitcher), "switcher")
        ol = app.screen.query_one("#switcher-list")
        assert ol.option_count == 4
        await pilot.press("d", "e")
        await pilot.pause()
        ids = [ol.get_option_at_index(i).id for i in range(ol.option_count)]
        assert ids == ["room:dev", "room:design", "new:de"]
        await pilot.press("s")
        await pilot.pause()
        assert ol.get_option_at_index(0).id == "room:design"
        await pilot.press("enter")
        await until(pilot, lambda: app.screen is app.screen_stack[0], "switcher closed")
        assert app.chat.active == "design"


async def test_quick_switcher_arrow_keys_and_escape():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await pilot.press("ctrl+k")
        await until(pilot, lambda: isinstance(app.screen, QuickSwitcher), "switcher")
        await pilot.press("down", "down", "enter")
        await until(pilot, lambda: app.screen is app.screen_stack[0], "closed")
        assert app.chat.active == "random"
        await pilot.press("ctrl+k")
        await until(pilot, lambda: isinstance(app.screen, QuickSwitcher), "switcher")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.screen_stack[0], "closed")
        assert app.chat.active == "random"


async def test_quick_switcher_joins_a_new_room():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await pilot.press("ctrl+k")
        await until(pilot, lambda: isinstance(app.screen, QuickSwitcher), "switcher")
        await pilot.press(*"#Music", "enter")
        await until(pilot, lambda: app.chat.active == "music", "joined music")
        assert ("join", "music") in backend.calls


async def test_tab_completes_nicks_and_commands():
    app, backend = make_app(
        members={"lobby": [ev.Member("alice"), ev.Member("bob"), ev.Member("bobby"), ev.Member("carol")]}
    )
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await pilot.press("c", "tab")
        assert app.input.value == "carol: "
        app.input.value = ""
        await pilot.press("b", "o", "tab")
        assert app.input.value == "bob: "
        await pilot.press("tab")
        assert app.input.value == "bobby: "
        await pilot.press("tab")
        assert app.input.value == "bob: "
        app.input.value = ""
        await pilot.press(*"hi ca", "tab")
        assert app.input.value == "hi carol "
        app.input.value = ""
        await pilot.press("/", "t", "o", "tab")
        assert app.input.value == "/topic "
        app.input.value = ""
        await pilot.press("/", "n", "tab")
        assert app.input.value == "/nick "
        await pilot.press("tab")
        assert app.input.value == "/names "
        assert isinstance(app.focused, ChatInput)  # Tab did not move the focus


async def test_up_down_walk_input_history():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        for text in ("first", "second", "third"):
            await type_line(pilot, text)
        await pilot.press(*"draft")
        await pilot.press("up")
        assert app.input.value == "third"
        await pilot.press("up", "up")
        assert app.input.value == "first"
        await pilot.press("up")
        assert app.input.value == "first"
        await pilot.press("down")
        assert app.input.value == "second"
        await pilot.press("down", "down")
        assert app.input.value == "draft"


async def test_pageup_pagedown_scroll_messages():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        for i in range(100):
            backend.say("lobby", "bob", f"line {i}")
        await settle(pilot, app)
        view = app.messages
        bottom = view.scroll_y
        assert bottom == view.max_scroll_y > 0
        await pilot.press("pageup")
        assert view.scroll_y < bottom and not view.follow
        assert "· scrolled up, End returns" in str(app.query_one("#status").render())
        backend.say("lobby", "bob", "while scrolled")
        await settle(pilot, app)
        assert view.scroll_y < view.max_scroll_y  # new lines do not yank the view down
        for _ in range(10):
            await pilot.press("pagedown")
        assert view.scroll_y == view.max_scroll_y and view.follow


async def test_f1_help_lists_every_binding():
    app, backend = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot, app, backend)
        await pilot.press("f1")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "help")
        console = Console(width=300, record=True, file=io.StringIO())
        for w in app.screen.query("Static"):
            console.print(w.content)
        text = console.export_text()
        for binding in [*app.BINDINGS, *ChatInput.BINDINGS]:
            if not binding.action.startswith("goto_room"):
                assert binding.description in text, binding
        assert "Alt+1…9" in text and "Ctrl+K" in text and "/connect HOST[:PORT]" in text
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.screen_stack[0], "help closed")


async def test_side_panes_collapse_when_narrow_and_toggle():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        rooms, members = app.query_one("#rooms-pane"), app.query_one("#members-pane")
        assert rooms.display and members.display
        await pilot.press("f2")
        assert not rooms.display
        await pilot.press("f3")
        assert not members.display
        await pilot.press("f2", "f3")
        assert rooms.display and members.display
        await pilot.resize_terminal(70, 30)
        await pilot.pause()
        assert not rooms.display and not members.display
        await pilot.press("f2")
        assert rooms.display and not members.display
        await pilot.press("f3")
        assert members.display
        await pilot.resize_terminal(120, 30)
        await pilot.pause()
        assert rooms.display and members.display


async def test_clicks_on_rooms_and_members():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await pilot.click("#rooms", offset=(3, 2))  # row 0 is the heading, row 2 is room 2
        assert app.chat.active == "dev"
        await pilot.click("#rooms", offset=(3, 1))
        assert app.chat.active == "lobby"
        names = app.member_list._keys
        row = names.index("bob")
        await pilot.click("#members", offset=(4, row))
        assert app.chat.active == "@bob"
        assert "@bob" in app.room_list.build().plain


async def test_ctrl_q_leaves_cleanly_and_quits():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await pilot.press("ctrl+q")
        await until(pilot, lambda: not app.is_running, "exit")
    assert ("close",) in backend.calls and not backend.running
    assert app.return_value == 0


# ---------------------------------------------------------------------------- commands


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


async def test_incoming_direct_message_appears_as_a_room_with_a_mention():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        backend.inject(ev.MessageReceived("@carol", 1, "carol", "got a minute?", T0))
        await settle(pilot, app)
        room = app.chat.rooms["@carol"]
        assert room.unread == 1 and room.mentions == 1 and app.chat.active == "lobby"


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
        assert "message is 1200 bytes of UTF-8; the limit is 1000" in last(app)
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


async def test_presence_changes_in_members_pane():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        backend.inject(ev.MemberJoined("lobby", 50, "erin", T0))
        backend.inject(ev.MemberTimedOut("lobby", 51, "bob", T0))
        backend.inject(ev.MemberLeft("lobby", 52, "carol", T0, "bye"))
        backend.inject(ev.NickChanged("lobby", 53, "erin", "erin2", T0))
        await settle(pilot, app)
        members = app.member_list.build().plain
        assert "● erin2" in members and "○ bob" in members and "carol" not in members
        rows = texts(app)
        assert rows[-4].endswith("--> │ erin joined")
        assert rows[-3].endswith("--x │ bob timed out")
        assert rows[-2].endswith("<-- │ carol left (bye)")
        assert rows[-1].endswith("-- │ erin is now known as erin2")


async def test_connection_state_in_status_line():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        backend.inject(ev.RttUpdated(0.0345))
        await settle(pilot, app)
        assert "connected 34 ms" in str(app.query_one("#status").render())
        backend.inject(ev.RttUpdated(0.0002))  # loopback
        await settle(pilot, app)
        assert "connected <1 ms" in str(app.query_one("#status").render())
        backend.inject(ev.ConnectionLost("relay stopped answering", 5.0))
        await settle(pilot, app)
        status = str(app.query_one("#status").render())
        assert "reconnecting in 5 s" in status or "reconnecting in 4 s" in status
        assert "connection lost: relay stopped answering" in last(app)
        backend.inject(ev.Connecting("127.0.0.1:6000"))
        await settle(pilot, app)
        assert "connecting to 127.0.0.1:6000" in str(app.query_one("#status").render())
        backend.inject(ev.Refused("server full"))
        await settle(pilot, app)
        assert "refused: server full" in str(app.query_one("#status").render())


async def test_request_refused_and_notice_are_shown_inline():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        backend.inject(ev.RequestRefused("nick", "", "nick bob is taken"))
        backend.inject(ev.Notice("relay restarting soon"))
        await settle(pilot, app)
        assert texts(app)[-2].endswith("!! │ nick refused: nick bob is taken")
        assert texts(app)[-1].endswith("-!- │ relay restarting soon")
