"""Pilot tests for the findings of a hands-on review in tmux (each failed before its fix)."""

from __future__ import annotations

import asyncio
from datetime import UTC

from textual.widgets import Input

from udproom.protocol import events as ev
from udproom.tui import config, demo, session
from udproom.tui import model as m
from udproom.tui.app import ChatApp
from udproom.tui.screens import ConnectScreen

from .conftest import T0, last, make_app, ready, settle, texts, until


async def type_line(pilot, text):
    pilot.app.input.value = text
    pilot.app.input.cursor_position = len(text)
    await pilot.press("enter")


def fake_build(built, cls=demo.FakeBackend):
    async def build(spec, timing=None):
        built.append(spec)
        return cls(spec.nick, spec.rooms, address=spec.address or "x"), None, ["10.0.0.5:6000"]

    return build


async def paste(pilot, text):
    """A bracketed paste, as the terminal driver delivers it to the focused input."""
    from textual import events

    pilot.app.input.post_message(events.Paste(text))
    await pilot.pause()
    await pilot.pause()


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


class SilentBackend(demo.FakeBackend):
    """Nothing answers at that address: the core keeps retrying and says so."""

    async def run(self, emit):
        self.emit = emit
        self._closed = asyncio.Event()
        emit(ev.Connecting(self.address))
        emit(ev.ConnectionLost("no answer from the relay", 2.0))
        await self._closed.wait()


async def test_connect_keeps_the_session_on_a_typo_and_hosting_needs_a_bang(monkeypatch):
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await type_line(pilot, "/connect nonsense.invalid")
        await until(pilot, lambda: "still on the current connection" in last(app), "resolve error")
        assert "cannot resolve" in last(app) and app.input.value == "/connect nonsense.invalid"
        assert app.backend is backend and not backend.closed and app.chat.state == "connected"
        await type_line(pilot, "/connect host:99999")
        assert "out of range" in last(app) and app.backend is backend
        await type_line(pilot, "/connect")
        assert "port 6000 if none" in last(app)
    built = []
    monkeypatch.setattr(session, "build", fake_build(built))
    spec = session.check(session.Spec("host", ":6000", "zoe", ["lobby"]))
    app = ChatApp(spec, tz=UTC, save_config=False, flush_interval=0.0)
    async with app.run_test(size=(140, 30)) as pilot:
        await until(pilot, lambda: app.chat.state == "connected", "connected")
        hosting = app.backend
        await type_line(pilot, "/connect 127.0.0.1:6801")
        await settle(pilot, app)
        assert "you are hosting this room" in last(app) and app.backend is hosting and len(built) == 1
        await type_line(pilot, "/connect! 127.0.0.1:6801")
        await until(pilot, lambda: len(built) == 2, "reconnected")
        assert built[1].mode == "join" and built[1].address == "127.0.0.1:6801"


async def test_no_answer_is_shown_and_esc_goes_back_to_the_connect_screen(monkeypatch, _config_dir):
    monkeypatch.setattr(session, "build", fake_build([], SilentBackend))
    app = ChatApp(tz=UTC, flush_interval=0.0)
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ConnectScreen), "connect screen")
        app.screen.query_one("#address", Input).value = "127.0.0.1:6802"
        app.screen.query_one("#address", Input).focus()
        await pilot.press("enter")
        await until(pilot, lambda: app.chat.state == "reconnecting", "no answer")
        await settle(pilot, app)
        assert "no answer from 127.0.0.1:6802 · retrying in 2 s" in status(app)
        assert any(
            "no answer from a relay at 127.0.0.1:6802; retrying in 2.0 s — /connect another address,"
            " Esc goes back, Ctrl+Q quits" in x.text
            for x in app.chat.current.lines
        )
        assert config.load().recent == []  # never connected: not remembered
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, ConnectScreen), "back to the connect screen")
        assert app.screen.query_one("#address", Input).value == "127.0.0.1:6802"
        # a session that connects is remembered
        monkeypatch.setattr(session, "build", fake_build([]))
        app.screen.query_one("#address", Input).value = "127.0.0.1:6803"
        app.screen.query_one("#address", Input).focus()
        await pilot.press("enter")
        await until(pilot, lambda: app.chat.state == "connected", "connected")
        await settle(pilot, app)
        assert config.load().recent == ["127.0.0.1:6803"]
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, ConnectScreen)  # connected: Esc does nothing


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


async def test_direct_conversation_shows_what_we_know_of_the_other_person():
    from udproom.tui.screens import QuickSwitcher

    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await type_line(pilot, "/msg nosuchnick")
        await settle(pilot, app)
        members = app.member_list.build().plain
        assert "MEMBERS 1/2" in members and "? nosuchnick" in members and "not seen in any of" in members
        await type_line(pilot, "/msg carol")
        await settle(pilot, app)
        assert "◐ carol" in app.member_list.build().plain  # away in #lobby
        await type_line(pilot, "/msg bob")
        await settle(pilot, app)
        assert "● bob" in app.member_list.build().plain and "MEMBERS 2/2" in app.member_list.build().plain
        await pilot.press("ctrl+k")
        await until(pilot, lambda: isinstance(app.screen, QuickSwitcher), "switcher")
        options = [str(o.id) for o in app.screen.matches("@ca")]
        assert "new:@carol" not in options  # already open: offered as a room
        assert "room:@carol" in options
        app.screen.nicks.append("bobby")
        options = [str(o.id) for o in app.screen.matches("@da")]
        assert options[0] == "new:@dave" and "new:@da" in options


async def test_narrow_status_keeps_room_activity_and_help():
    from udproom.tui.app import ChatApp as _App

    backend = demo.FakeBackend(
        "alice", ["lobby", "dev"], clock=lambda: T0, address="very-long-relay-name.example.org:6000"
    )
    app = _App(backend=backend, tz=UTC, clock=lambda: T0, save_config=False, flush_interval=0.0, bell=False)
    async with app.run_test(size=(60, 20)) as pilot:
        await until(pilot, lambda: len(app.chat.rooms) == 2, "joined")
        app.chat.share = ["192.168.100.200:6000", "10.0.0.5:6000", "[fe80::1]:6000"]
        backend.say("dev", "bob", "alice: look")
        backend.say("dev", "bob", "and this")
        await settle(pilot, app)
        app.flash("no activity")
        text = status(app)
        assert len(text) == 60
        assert "#lobby" in text and "act: 2!" in text and text.rstrip().endswith("F1 help")
        assert "very-long-relay-name" not in text and " ms" not in text  # the least useful went first
    app2, backend2 = make_app()
    async with app2.run_test(size=(160, 30)) as pilot:
        await ready(pilot, app2, backend2)
        assert "connected 12 ms" in status(app2) and "relay 127.0.0.1:6000" in status(app2)


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


async def test_status_notices_clear():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        from udproom.tui import commands

        app.cmd_join(commands.Command("join", ("newroom",)))
        assert "joining #newroom…" in status(app)
        await until(pilot, lambda: "newroom" in app.chat.rooms, "joined")
        await settle(pilot, app)
        assert "joining" not in status(app)
        await type_line(pilot, "/retry")
        assert "nothing to retry" in status(app)
        await pilot.press("x")
        assert "nothing to retry" not in status(app)
        app.flash("no activity")
        app.status_line.note_until = 0  # its few seconds are over
        app._tick()
        assert "no activity" not in status(app)


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


async def test_timed_out_members_leave_completion_and_later_the_pane():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        app.input.value = "da"
        app.input.cursor_position = 2
        await pilot.press("tab")
        assert app.input.value == "da"  # dave timed out: not offered
        backend.inject(ev.MemberTimedOut("lobby", 50, "bob", T0 - 601))
        await settle(pilot, app)
        assert "○ bob" in app.member_list.build().plain
        app._tick()
        await pilot.pause()
        members = app.member_list.build().plain
        assert "bob" not in members and "○ dave" in members  # dave timed out just now (at join)
        backend.inject(ev.MemberJoined("lobby", 51, "bob", T0))
        await settle(pilot, app)
        assert "● bob" in app.member_list.build().plain


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


async def test_sighup_leaves_politely():
    import os
    import signal

    previous = signal.signal(signal.SIGHUP, lambda *a: None)  # without the app's handler: ignored
    try:
        app, backend = make_app()
        ended: list[bool] = []
        # the real app ends the process without touching the dead terminal (os._exit): here the
        # test stands in for that last step, after the goodbye
        app._exit_process = lambda: ended.append(("close",) in backend.calls) or app.exit(0)
        async with app.run_test(size=(120, 30)) as pilot:
            await ready(pilot, app, backend)
            os.kill(os.getpid(), signal.SIGHUP)
            await until(pilot, lambda: ("close",) in backend.calls, "said goodbye")
            await until(pilot, lambda: not app.is_running, "exited")
        assert ended == [True]  # the goodbye came first, then the process ended
    finally:
        signal.signal(signal.SIGHUP, previous)


async def test_connect_screen_recent_by_keyboard_and_mode_marked(monkeypatch):
    from textual.widgets import OptionList, RadioButton

    cfg = config.Config(nick="zoe", mode="host", recent=["10.0.0.1:6000", "10.0.0.2:7000"])
    built = []
    monkeypatch.setattr(session, "build", fake_build(built))
    app = ChatApp(tz=UTC, config=cfg, save_config=False, flush_interval=0.0)
    async with app.run_test(size=(100, 40)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ConnectScreen), "connect screen")
        screen = app.screen
        assert str(screen.query_one("#mode-host", RadioButton).label).startswith("✓ ")
        assert not str(screen.query_one("#mode-join", RadioButton).label).startswith("✓")
        await pilot.press("down")
        assert isinstance(app.focused, OptionList)
        await pilot.press("down", "enter")
        assert screen.query_one("#address", Input).value == "10.0.0.2:7000"
        assert str(screen.query_one("#mode-join", RadioButton).label).startswith("✓ ")
        assert not str(screen.query_one("#mode-host", RadioButton).label).startswith("✓")
        assert app.focused is screen.query_one("#address", Input)
        await pilot.press("enter")
        await until(pilot, lambda: built, "connect")
        assert built[0].address == "10.0.0.2:7000" and built[0].mode == "join"


async def test_a_quiet_relay_is_not_called_connected():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        backend.inject(ev.ConnectionStalled(7.0))
        await settle(pilot, app)
        assert "no answer from the relay for 7 s" in status(app) and "connected" not in status(app)
        backend.inject(ev.ConnectionResumed(0.02))
        await settle(pilot, app)
        assert "connected 20 ms" in status(app)
