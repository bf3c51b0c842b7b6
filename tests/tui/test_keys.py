"""Keys: room jumps (Alt+N from real terminal bytes), the quick switcher, Tab, history, scrolling,
F1, panes, clicks, Ctrl+Q."""

from __future__ import annotations

import io

from rich.console import Console

from udproom.protocol import events as ev
from udproom.tui.screens import HelpScreen, QuickSwitcher
from udproom.tui.widgets import ChatInput

from .conftest import make_app, ready, settle, type_line, until


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
