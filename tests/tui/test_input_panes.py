"""Issue 9, the input line, the panes and rendering: each test failed before its fix.

Keys go through the real input path where Pilot would not be faithful: the bytes a terminal
sends are decoded and parsed by Textual's own XTermParser, and the events are handed to the
driver from another thread in one burst, exactly as the Linux driver's input thread does.
"""

from __future__ import annotations

import asyncio
from codecs import getincrementaldecoder

from textual._xterm_parser import XTermParser

from udproom.protocol import events as ev

from .conftest import (
    make_app,
    paste,
    ready,
    settle,
    status,
    texts,
    type_line,
    until,
)


async def terminal(app, data: bytes) -> None:
    """Feed `data` as one read from the terminal: decode, parse, post (the driver's thread)."""
    decode = getincrementaldecoder("utf-8")().decode
    parser = XTermParser()

    def read() -> None:
        for event in parser.feed(decode(data)):
            app._driver.process_message(event)

    await asyncio.to_thread(read)


def posts(backend) -> list[str]:
    return [c[2] for c in backend.calls if c[0] == "post"]


async def test_type_ahead_keeps_line_boundaries():
    """tmux `send-keys "one" Enter "two" Enter "three" Enter`: three messages, in order, once each."""
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await terminal(app, b"one\rtwo\rthree\r")
        await until(pilot, lambda: len(posts(backend)) >= 3, "three posts")
        await settle(pilot, app)
        assert posts(backend) == ["one", "two", "three"]
        assert app.input.value == ""
        # editing keys in a burst apply where they were typed: "ab", Backspace, "c" is "ac"
        await terminal(app, b"ab\x7fc\rx\x7f\x7fyz\r")
        await until(pilot, lambda: len(posts(backend)) >= 5, "two more posts")
        await settle(pilot, app)
        assert posts(backend)[3:] == ["ac", "yz"]


async def test_typing_keeps_the_zero_width_joiner():
    """👩‍👧 typed: the terminal sends its UTF-8 bytes (woman, ZWJ, girl) as keys, not a paste."""
    family = "\U0001f469\u200d\U0001f467"
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await terminal(app, family.encode() + b"\r")
        await until(pilot, lambda: posts(backend), "a post")
        assert posts(backend) == [family]


def screen_rows(app) -> list[str]:
    """The screen as the terminal would show it, one string per row."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


LONG = "averyveryverylongnick_24"  # 24 characters, the longest nick allowed


def members_app(extra: int = 0):

    nicks = ["alice", "bob", LONG, "carol", "dave"] + [f"zed{i:02}" for i in range(extra)]
    return make_app(rooms=("lobby",), members={"lobby": [ev.Member(n) for n in nicks]}), nicks


async def test_members_pane_cuts_long_nicks_and_shows_everyone():
    (app, backend), nicks = members_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await settle(pilot, app)
        pane = app.query_one("#members-pane")
        left = pane.region.x + 1  # after the border
        rows = [
            r[left : pane.region.right].rstrip() for r in screen_rows(app)[pane.region.y : pane.region.bottom]
        ]
        listed = [r for r in rows if r[:3].strip() in ("●", "◐", "○", "?")]
        assert len(listed) == len(nicks), rows  # one row per member, nobody wrapped away
        long_row = next(r for r in listed if r[3:].startswith(LONG[:8]))
        assert long_row.endswith("…") and len(long_row) <= pane.region.width - 1
        for nick in nicks:
            if nick != LONG:
                assert any(r[3:].split(" ")[0] == nick for r in listed), nick


async def test_members_pane_scrolls_to_the_last_member_with_a_long_nick():
    (app, backend), nicks = members_app(extra=40)
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await settle(pilot, app)
        pane = app.query_one("#members-pane")
        pane.scroll_end(animate=False)
        await pilot.pause()
        left = pane.region.x + 1
        rows = [r[left : pane.region.right] for r in screen_rows(app)[pane.region.y : pane.region.bottom]]
        assert any(nicks[-1] in r for r in rows), rows


def view_rows(app) -> list[str]:
    """The message pane's rows as shown."""
    view = app.messages
    return [view.render_line(y).text.rstrip() for y in range(view.scrollable_content_region.height)]


async def test_scrolled_up_view_holds_its_place_in_a_full_room():
    """At the scrollback cap every new line trims the oldest: a reader scrolled up keeps the
    same line at the top while lines arrive below (and are counted) and old ones go."""
    from udproom.tui.model import SCROLLBACK

    app, backend = make_app(rooms=("lobby",))
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot, app, backend)
        for i in range(SCROLLBACK + 10):
            backend.say("lobby", "bob", f"message {i}")
        await until(pilot, lambda: app.chat.current.lines[-1].text == f"message {SCROLLBACK + 9}", "full")
        await settle(pilot, app)
        await pilot.press("pageup", "pageup")
        await pilot.pause()
        before = view_rows(app)
        assert before[0].endswith("message " + before[0].rsplit(" ", 1)[1]) and not app.messages.follow
        for i in range(30):
            backend.say("lobby", "carol", f"later {i}")
            await settle(pilot, app)
            assert view_rows(app) == before, i
        assert "#lobby · 30 new below, End shows them" in str(app.query_one("#status").render())
        await pilot.press("end")
        await pilot.pause()
        assert view_rows(app)[-1].endswith("later 29")


async def test_own_tabs_are_sanitised_like_everyone_elses():
    """A pasted tab in your own line reaches the screen as a space, as in others' lines."""
    app, backend = make_app(rooms=("lobby",))
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot, app, backend)
        await terminal(app, b"\x1b[200~col1\tcol2\x1b[201~\r")
        await until(pilot, lambda: posts(backend), "a post")
        backend.say("lobby", "bob", "col1\tcol2")
        await settle(pilot, app)
        rows = view_rows(app)
        assert not any("\t" in r for r in rows), rows
        mine, theirs = [r for r in rows if "col1" in r]
        assert mine.endswith("┃ col1 col2") and theirs.endswith("│ col1 col2")


async def test_lines_of_a_background_room_fit_beside_the_scrollbar():
    """Lines that arrived in a background room are wrapped for the width beside the scrollbar
    that room needs (no last character under it), with no resize in between."""
    word = "".join(chr(ord("a") + i % 26) for i in range(240))  # one long word: rows end at the edge
    app, backend = make_app(rooms=("lobby", "dev"))
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot, app, backend)
        for _ in range(12):
            backend.say("dev", "bob", word)
        await settle(pilot, app)
        assert not app.messages.show_vertical_scrollbar  # the lobby is short
        await pilot.press("alt+2")
        await settle(pilot, app)
        view = app.messages
        assert view.show_vertical_scrollbar
        region = view.content_region
        rows = screen_rows(app)[region.y : region.bottom]
        shown = [r[region.x : region.x + view.scrollable_content_region.width] for r in rows]
        text = "".join(r.split(" │ ", 1)[1].rstrip() for r in shown[-8:] if " │ " in r)
        assert word.endswith(text[-200:]) and len(text) >= 200, shown[-8:]


async def test_no_new_divider_above_your_own_lines_and_notices():
    app, backend = make_app(rooms=("lobby", "dev"))
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot, app, backend)
        await pilot.press("alt+2")
        await pilot.press("alt+1")
        await settle(pilot, app)
        await terminal(app, b"hello\r/names\r")
        # our own line moves to where the relay's copy lands (after the local /names notice)
        await until(
            pilot,
            lambda: (
                {"hello"} <= {ln.text for ln in app.chat.current.lines}
                and any("in #lobby" in ln.text for ln in app.chat.current.lines)
            ),
            "names and our own line",
        )
        await settle(pilot, app)
        assert not any("── new ──" in r for r in view_rows(app)), view_rows(app)
        # what others said while we were away is still marked, even after our own lines
        await pilot.press("alt+2")
        backend.say("lobby", "bob", "while you were away")
        await settle(pilot, app)
        await pilot.press("alt+1")
        await terminal(app, b"back\r")
        await until(pilot, lambda: app.chat.current.lines[-1].text == "back", "own line")
        await settle(pilot, app)
        rows = [r for r in view_rows(app) if r]
        assert "── new ──" in rows[-3] and rows[-2].endswith("while you were away"), rows


async def test_palette_offers_only_what_works_here():
    """F10: udproom's own commands; not Textual's Keys / Theme / Maximize / Screenshot."""
    from textual.command import CommandPalette

    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await pilot.press("f10")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette), "palette")

        def prompts() -> list[str]:
            ol = app.screen.query_one("CommandList")
            return [str(ol.get_option_at_index(i).prompt) for i in range(ol.option_count)]

        await until(pilot, lambda: any("Quit udproom" in p for p in prompts()), "udproom's commands")
        for _ in range(5):
            await pilot.pause()
        shown = " ".join(prompts())
        for textual_own in ("Keys", "Theme", "Maximize", "Screenshot"):
            assert textual_own not in shown, shown
        assert "Help" in shown and "Join a room" in shown


async def test_tab_completes_room_names_after_join_and_part():
    app, backend = make_app(rooms=("lobby", "dev", "random"))
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        for typed, completed in (
            (b"/join r\t", "/join random "),
            (b"/part d\t", "/part dev "),
            (b"/j #l\t", "/j #lobby "),
            (b"/msg b\t", "/msg bob "),  # a nick, as before
        ):
            app.input.value = ""
            await terminal(app, typed)
            await until(pilot, lambda want=completed: app.input.value == want, f"{typed!r} -> {completed!r}")


async def test_help_keeps_the_indent_of_wrapped_lines_and_mentions_the_slash_escape():
    from udproom.tui.screens import HelpScreen

    app, backend = make_app()
    async with app.run_test(size=(100, 52)) as pilot:  # (52: /whois added a row)
        await ready(pilot, app, backend)
        await pilot.press("f1")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "help")
        await pilot.pause()
        rows = screen_rows(app)
        i = next(i for i, r in enumerate(rows) if "Jump to the newest message" in r)
        column = rows[i].index("Jump to the newest message")
        continued = rows[i + 1]
        assert continued[:column].strip(" │╭╮╰╯") == "" and continued[column] != " ", rows[i : i + 2]
        app.screen.query_one("#help").scroll_end(animate=False)  # (the commands outgrew 50 rows)
        await pilot.pause()
        assert any("//text" in r for r in screen_rows(app))
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen), "help closed")
        app.input.value = "/help"
        await pilot.press("enter")
        await settle(pilot, app)
        assert any(line.text.startswith("//text") for line in app.chat.current.lines)


async def test_quick_switcher_fits_a_short_screen_and_says_why_a_name_cannot_be_joined():
    from udproom.tui.screens import QuickSwitcher

    rooms = ("lobby", "dev", "random", "ops", "qa", "design", "infra", "sales", "support", "misc")
    app, backend = make_app(rooms=rooms)
    async with app.run_test(size=(50, 14)) as pilot:
        await ready(pilot, app, backend)
        await pilot.press("ctrl+k")
        await until(pilot, lambda: isinstance(app.screen, QuickSwitcher), "switcher")
        await pilot.pause()
        box = app.screen.query_one("#switcher").region
        assert box.y >= 0 and box.bottom <= 14 and box.x >= 0 and box.right <= 50, box
        rows = screen_rows(app)
        assert rows[box.bottom - 1].strip().startswith("╰"), rows  # the frame is whole
        assert any("lobby" in r for r in rows)
        await terminal(app, b"no way\r")
        await until(pilot, lambda: app.screen.query_one("#switcher-input").value == "no way", "typed")
        await pilot.pause()
        assert isinstance(app.screen, QuickSwitcher)
        shown = " ".join(r.strip(" │") for r in screen_rows(app))
        assert "room name 'no way' may only use letters" in shown, shown
        box = app.screen.query_one("#switcher").region
        assert box.bottom <= 14 and screen_rows(app)[box.bottom - 1].strip().startswith("╰")
        await pilot.press("escape")


async def test_multi_line_paste_sends_each_line_and_asks_when_long():
    from udproom.tui.screens import ConfirmPaste

    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        app.input.value = "look: "
        app.input.cursor_position = 6
        await paste(pilot, "first\n\nsecond\n/part\n")
        await settle(pilot, app)
        posts = [c[2] for c in backend.calls if c[0] == "post"]
        assert posts == ["look: first", "second", "/part"]  # in order, a pasted /part is just text
        assert app.input.value == "" and "lobby" in app.chat.rooms
        await paste(pilot, "one line only")
        assert app.input.value == "one line only"
        app.input.value = ""
        block = "\n".join(f"line {i}" for i in range(8))
        await paste(pilot, block)
        await until(pilot, lambda: isinstance(app.screen, ConfirmPaste), "asks first")
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmPaste), "closed")
        assert len([c for c in backend.calls if c[0] == "post"]) == 3
        assert app.input.value.startswith("line 0 line 1")
        app.input.value = ""
        await paste(pilot, block)
        await until(pilot, lambda: isinstance(app.screen, ConfirmPaste), "asks again")
        await pilot.press("enter")
        await settle(pilot, app)
        assert [c[2] for c in backend.calls if c[0] == "post"][3:] == [f"line {i}" for i in range(8)]


async def test_a_paste_never_puts_escapes_or_bidi_controls_on_the_input_line():
    """Found in tmux: a pasted ESC sequence or right-to-left override showed raw on our own input
    line (what others see of it was already made safe). Whatever is pasted, the line and what is
    sent hold no control or format-override character; each one is shown as U+FFFD."""
    import unicodedata

    def unsafe(text):
        return [ch for ch in text if unicodedata.category(ch) in ("Cc", "Cf") and ch not in "\u200c\u200d"]

    nasty = ["a\x1b[2J\x1b]0;owned\x07b", "abc\u202eevil", "x\u2066y\u2069\x00z", "tab\there", "\x9bc1"]
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        for text in nasty:
            app.input.value = ""
            await paste(pilot, text)
            assert app.input.value and not unsafe(app.input.value), repr(app.input.value)
        app.input.value = ""
        await paste(pilot, "one\x1b[31m\nt\u202ewo\n")
        await settle(pilot, app)
        posts = [c[2] for c in backend.calls if c[0] == "post"]
        assert posts[-2:] == ["one\ufffd[31m", "t\ufffdwo"]


async def test_scrolling_new_below_jump_to_bottom_and_send_snaps_down():
    app, backend = make_app()
    async with app.run_test(size=(120, 20)) as pilot:
        await ready(pilot, app, backend)
        for i in range(40):
            backend.say("lobby", "bob", f"line {i}")
        await settle(pilot, app)
        await pilot.press("pageup")
        assert not app.messages.follow
        backend.say("lobby", "bob", "new one")
        backend.say("lobby", "bob", "new two")
        await settle(pilot, app)
        assert "2 new below" in status(app)
        await pilot.press("end")  # input empty: to the bottom
        assert app.messages.follow and "new below" not in status(app)
        await pilot.press("pageup")
        app.input.value = "abc"
        app.input.cursor_position = 0
        await pilot.press("end")  # input not empty: end of the line
        assert app.input.cursor_position == 3 and not app.messages.follow
        await pilot.press("ctrl+end")
        assert app.messages.follow
        await pilot.press("pageup")
        app.input.value = ""
        await type_line(pilot, "my reply")
        await settle(pilot, app)
        assert app.messages.follow and app.messages.scroll_y == app.messages.max_scroll_y
        assert texts(app)[-1].endswith("my reply")
