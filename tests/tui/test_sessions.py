"""Issue 9, sessions, connections, status and config: Pilot tests (each failed before its fix).

The end-to-end halves (a real relay on 127.0.0.1) are in tests/e2e/test_tui_sessions.py."""

from __future__ import annotations

import re
from datetime import UTC
from pathlib import Path

from textual.widgets import Input, RadioButton, RadioSet

from udproom.protocol import events as ev
from udproom.tui import commands, config, session
from udproom.tui import model as m
from udproom.tui.app import ChatApp
from udproom.tui.screens import ConnectScreen

from .conftest import (
    SilentBackend,
    fake_build,
    last,
    make_app,
    ready,
    settle,
    status,
    texts,
    type_line,
    until,
)
from .demo import FakeBackend


def lines_of(app, room) -> list[m.Line]:
    return list(app.chat.rooms[room].lines)


async def test_a_resent_post_moves_to_where_the_relay_put_it():
    """Defect 8: after an outage and Ctrl+R the sender's line goes below the reconnect notices
    and what others said meanwhile, as every other member sees it."""
    app, backend = make_app(rooms=("lobby",), auto_ack=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await type_line(pilot, "are you there?")
        await settle(pilot, app)
        (lid,) = list(backend._posts)
        backend.inject(ev.ConnectionLost("the relay stopped answering", 0.5))
        backend.fail(lid, "no connection to the relay")
        backend.inject(ev.Connected("127.0.0.1:6000", "alice", 0.01))
        backend.inject(ev.RoomJoined("lobby", "alice", (ev.Member("alice"), ev.Member("bob"))))
        backend.say("lobby", "bob", "back again")
        await settle(pilot, app)
        await pilot.press("ctrl+r")
        (new_lid,) = list(backend._posts)
        backend.ack(new_lid)  # the relay's copy of it, then the acknowledgement
        await settle(pilot, app)
        order = [x.text for x in lines_of(app, "lobby")]
        mine = order.index("are you there?")
        assert mine > order.index("back again") > next(i for i, t in enumerate(order) if "rejoined" in t)
        assert mine == len(order) - 1 and lines_of(app, "lobby")[mine].state == m.SENT
        assert texts(app)[-1].endswith("alice ┃ are you there?")


async def test_own_posts_keep_their_order_when_their_copies_come_back():
    """Defect 8: moving to the room's order never reorders our own posts among themselves."""
    app, backend = make_app(rooms=("lobby",), auto_ack=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        for text in ("one", "two", "three"):
            await type_line(pilot, text)
        backend.say("lobby", "bob", "meanwhile")  # the relay had this before our posts
        for lid in sorted(backend._posts):
            backend.ack(lid)
        await settle(pilot, app)
        order = [x.text for x in lines_of(app, "lobby") if x.kind <= m.ACTION]
        assert order[-4:] == ["meanwhile", "one", "two", "three"]


async def test_an_outage_is_one_notice_updated_in_place_and_presence_is_unknown():
    """Defect 9: one notice per outage (not one per retry), presence '?' while disconnected."""
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        before = {name: len(r.lines) for name, r in app.chat.rooms.items()}
        for i in range(6):
            backend.inject(ev.ConnectionLost("the relay stopped answering", 2.0 * (i + 1)))
            backend.inject(ev.Connecting("127.0.0.1:6000"))
            await settle(pilot, app)
            if i == 2:
                await pilot.press("alt+2")  # another room on screen: still the same one notice
        added = [x for name, r in app.chat.rooms.items() for x in list(r.lines)[before[name] :]]
        assert len(added) == 1 and added[0].kind == m.ERROR
        assert added[0].text == "connection lost: the relay stopped answering; retrying in 12 s (try 6)"
        await pilot.press("alt+1")
        await settle(pilot, app)
        pane = app.member_list.build().plain
        assert "MEMBERS ?/4" in pane and "● " not in pane and "? bob" in pane
        assert "not seen" not in pane
        backend.inject(ev.Connected("127.0.0.1:6000", "alice", 0.01))
        await settle(pilot, app)
        assert "back after" in added[0].text and "retrying" not in added[0].text
        assert "● bob" in app.member_list.build().plain
        # the next outage gets its own (single) notice; the quiet time before the loss counts
        backend.inject(ev.ConnectionStalled(5.0))
        backend.inject(ev.ConnectionLost("the relay stopped answering", 0.5))
        backend.inject(ev.ConnectionLost("no answer from the relay", 1.0))
        await settle(pilot, app)
        notices = [x for r in app.chat.rooms.values() for x in r.lines if "connection lost" in x.text]
        assert len(notices) == 2
        assert notices[1].text == "connection lost: the relay stopped answering; retrying in 1.0 s (try 2)"
        backend.inject(ev.Connected("127.0.0.1:6000", "alice", 0.01))
        await settle(pilot, app)
        back = r"connection lost: the relay stopped answering; back after 5\.\d s"
        assert re.fullmatch(back, notices[1].text), notices[1].text


async def test_status_follows_a_resize_at_once_and_refusals_fade():
    """Defect 10: right after a resize to 70 columns the status line is laid out for 70 (room
    and activity shown); a refusal goes at the next keystroke or after a few seconds."""
    app, backend = make_app()
    async with app.run_test(size=(160, 30)) as pilot:
        await ready(pilot, app, backend)
        app.chat.share = ["192.168.100.200:6000", "10.0.0.5:6000"]
        backend.say("dev", "bob", "alice: look")
        await settle(pilot, app)
        assert "others join" in status(app)
        await pilot.resize_terminal(70, 30)
        await pilot.pause()
        text = status(app)
        assert len(text) == 70, text
        assert "#lobby" in text and "act: 2!" in text and text.rstrip().endswith("F1 help"), text
        # a refusal: in the status line, then gone by itself
        backend.inject(ev.RequestRefused("nick", "", "nick ALICE is taken"))
        await settle(pilot, app)
        assert "nick ALICE is taken" in status(app)
        app.chat.sticky_at -= 60  # a minute later (the 1 s tick looks)
        app.tick()
        assert "ALICE" not in status(app)
        backend.inject(ev.RequestRefused("nick", "", "nick ALICE is taken"))
        await settle(pilot, app)
        await pilot.press("x")  # or the next keystroke
        assert "ALICE" not in status(app)


async def test_an_unresolvable_relay_says_what_happened():
    """Defect 15: nothing refused anything: the name did not resolve and nothing was contacted."""
    spec = session.check(session.Spec("join", "nonsense.invalid:6000", "zoe", ["lobby"]))
    app = ChatApp(spec, tz=UTC, save_config=False, flush_interval=0.0)
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ConnectScreen), "back on the connect screen", 2000)
        await pilot.pause()
        shown = str(app.screen.query_one("#connect-error").render())
        assert "cannot resolve 'nonsense.invalid'" in shown and "no relay was contacted" in shown
        assert "refused" not in shown
    # the same from a backend that reports it as the core's Refused
    app, backend = make_app(rooms=("lobby",))
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        backend.inject(ev.Refused("cannot resolve 'nonsense.invalid': Name or service not known"))
        await settle(pilot, app)
        assert "refused" not in last(app) and "no relay was contacted" in last(app)


async def test_connect_screen_highlight_starts_on_the_chosen_mode_and_errors_follow_the_mode():
    """Rough edge: Shift+Tab from the address then Space kept 'Join' (it switched to 'Host'),
    and a bind error about hosting went away when switching to Join."""
    cfg = config.Config(nick="alice", mode="join", recent=[], rooms=["lobby"])
    app = ChatApp(tz=UTC, config=cfg, save_config=False, connect_error="")
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ConnectScreen), "connect screen")
        screen = app.screen
        await pilot.press("shift+tab")
        assert isinstance(screen.focused, RadioSet)
        assert screen.query_one("#mode-join", RadioButton).has_class("-selected")
        await pilot.press("space")
        assert screen._mode() == "join"
    spec = session.Spec("host", ":80", "alice", ["lobby"])
    app = ChatApp(tz=UTC, config=cfg, save_config=False)
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: app.screen is not None and app.is_running, "running")
        app.show_connect("cannot listen on :80: permission denied (ports below 1024 need root)", spec)
        await until(pilot, lambda: isinstance(app.screen, ConnectScreen) and app.screen.initial, "shown")
        await pilot.pause()
        screen = app.screen
        assert "permission denied" in str(screen.query_one("#connect-error").render())
        screen.query_one("#address", Input).focus()
        await pilot.press("shift+tab", "down", "space")  # Host -> Join
        assert screen._mode() == "join"
        assert str(screen.query_one("#connect-error").render()).strip() == ""


async def test_the_saved_nick_is_the_one_in_use_and_a_flag_run_does_not_overwrite_it(monkeypatch):
    """Rough edges: a refused nick was saved instead of the one used afterwards, and one run
    with `--nick throwaway` overwrote the remembered nick and mode."""
    monkeypatch.setattr(session, "build", fake_build([]))
    config.save(config.Config(nick="alice", mode="host", recent=["10.0.0.9:6000"], rooms=["lobby"]))
    spec = session.check(session.Spec("join", "127.0.0.1:6810", "throwaway", ["lobby"]))
    app = ChatApp(spec, tz=UTC, flush_interval=0.0)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: app.chat.state == "connected" and app.chat.rooms, "connected")
        await settle(pilot, app)
    saved = config.load()
    assert (saved.nick, saved.mode) == ("alice", "host")
    assert saved.recent == ["127.0.0.1:6810", "10.0.0.9:6000"]  # where it connected is still useful
    # chosen on the connect screen: remembered; a refused nick gives way to the one accepted
    app = ChatApp(tz=UTC, flush_interval=0.0)
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ConnectScreen), "connect screen")
        app.screen.query_one("#mode-join", RadioButton).value = True
        app.screen.query_one("#address", Input).value = "127.0.0.1:6811"
        app.screen.query_one("#nick", Input).value = "Bob"
        app.screen.query_one("#address", Input).focus()
        await pilot.press("enter")
        await until(pilot, lambda: app.chat.state == "connected" and app.chat.rooms, "connected")
        await settle(pilot, app)
        assert (config.load().nick, config.load().mode) == ("Bob", "join")
        app.backend.inject(ev.RequestRefused("nick", "", "nick Bob is taken"))
        await type_line(pilot, "/nick bobby")
        await until(pilot, lambda: app.chat.nick == "bobby", "renamed")
        await settle(pilot, app)
        assert config.load().nick == "bobby"


async def test_msg_to_nobody_says_so_without_a_dead_conversation():
    """Rough edge: `/msg nobodyhere hi` opened a conversation that offered a retry."""

    class Relay(FakeBackend):
        def ack(self, local_id, seq=None):
            room, _text, _action = self._posts[local_id]
            if room == "@nobodyhere":
                self._posts.pop(local_id)
                self._emit(ev.PostFailed(local_id, room, "no one called nobodyhere is here", refused=True))
                return
            super().ack(local_id, seq)

    backend = Relay("alice", ["lobby", "dev"], clock=lambda: 1.78e9)
    app = ChatApp(backend=backend, tz=UTC, save_config=False, flush_interval=0.0, bell=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: len(app.chat.rooms) == 2, "joined")
        await pilot.press("alt+2")
        await type_line(pilot, "/msg nobodyhere hi")
        await settle(pilot, app)
        assert "@nobodyhere" not in app.chat.rooms and app.chat.active == "dev"
        assert texts(app)[-1].endswith("no one called nobodyhere is here: nothing was sent")
        assert not any("Ctrl+R" in t for t in texts(app))
        assert "no one called nobodyhere is here" in status(app)
        # a conversation that exists stays; a refusal there offers no pointless retry
        await type_line(pilot, "/msg bob hello")
        await settle(pilot, app)
        assert app.chat.active == "@bob"


def test_msg_usage_and_the_readme_agree():
    """Rough edge: the usage line said /msg NICK TEXT, the README /msg NICK [TEXT]."""
    usage = commands.COMMANDS["msg"].usage
    root = Path(__file__).resolve().parents[2]
    for readme in (root / "README.md", root / "tui" / "README.md"):
        documented = re.findall(r"`(/msg [^`]*)`", readme.read_text(encoding="utf-8"))
        assert documented and set(documented) == {usage}, readme
    app_parse = commands.parse("/msg bob")
    assert app_parse.name == "msg" and app_parse.rest == ""  # TEXT is optional indeed


async def test_quit_while_hosting_alone_does_not_ask(monkeypatch):
    """Defect 13 (the other half is e2e): nobody else connected, nothing to ask."""
    app, backend = make_app(rooms=("lobby",))
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        assert app.hosted_others() == []
        await pilot.press("ctrl+q")
        await until(pilot, lambda: not app.is_running, "quit")
    assert backend.closed


async def test_part_notice_is_not_left_in_another_rooms_history():
    """Rough edge: "you left #qa" landed in whatever room came on screen."""
    app, backend = make_app(rooms=("lobby", "qa"))
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await pilot.press("alt+2")
        await type_line(pilot, "/part")
        await settle(pilot, app)
        assert app.chat.active == "lobby" and "you left #qa" in status(app)
        assert not any("you left" in x.text for x in app.chat.rooms["lobby"].lines)


def test_snapshot_narrow_status_after_a_resize(snap_compare):
    """Snapshot: 120 columns, then resized to 70: the status line is laid out for 70 at once
    (room and activity shown, the least useful parts gone)."""
    from .test_snapshots import demo_app

    app, backend = demo_app()

    async def run_before(pilot):
        from .demo import populate

        await populate(pilot, app, backend)
        app.chat.share = ["192.168.1.5:6000", "10.0.0.5:6000"]
        app.refresh_ui(full=True)
        await pilot.resize_terminal(70, 24)
        await pilot.pause()

    assert snap_compare(app, terminal_size=(120, 32), run_before=run_before)


def test_a_rename_claiming_our_nick_or_nothing_moves_no_conversation():
    """Defect 6's rule under hostile input: only a real rename moves @old to @new."""
    chat = m.ChatModel("alice")
    chat.apply(ev.RoomJoined("lobby", "alice", (ev.Member("alice"), ev.Member("bob"), ev.Member("eve"))))
    chat.add_room("@bob")
    chat.add_room("@eve")
    chat.apply(ev.NickChanged("lobby", 5, "bob", "ALICE", 1.0))  # into our nick (another case)
    chat.apply(ev.NickChanged("lobby", 6, "eve", "", 1.0))
    assert "@bob" in chat.rooms and "@eve" in chat.rooms and "@ALICE" not in chat.rooms
    chat.apply(ev.NickChanged("lobby", 7, "BOB", "robert", 1.0))  # the same nick, other case
    assert "@robert" in chat.rooms and "@bob" not in chat.rooms
    assert chat.room_order() == ["lobby", "@robert", "@eve"]  # same place in the rooms pane


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


async def test_join_several_relays_fails_over_and_the_status_line_says_so(silent_port):
    """Issue 12: `--join A,B` where A does not answer: the app moves to B and the status line names
    the relay it is on and the one it failed over from."""
    from udproom.protocol.net.runners import RelayServer
    from udproom.protocol.relay import RelayConfig
    from udproom.protocol.reliability import Timing

    async with RelayServer("127.0.0.1:0", RelayConfig(timing=Timing.fast())) as server:
        join = f"127.0.0.1:{silent_port},127.0.0.1:{server.port}"
        assert await session.resolvable(join) is None
        spec = session.check(session.Spec("join", join, "zoe", ["lobby"]))
        app = ChatApp(spec, tz=UTC, save_config=False, flush_interval=0.0, timing=Timing.fast())
        async with app.run_test(size=(160, 30)) as pilot:
            await until(pilot, lambda: app.chat.state == "connected", "connected to the second relay", 10_000)
            await until(pilot, lambda: "failed over" in status(app), "the status line", 5_000)
            assert f"relay 127.0.0.1:{server.port} (failed over from 127.0.0.1:{silent_port})" in status(app)


async def test_a_relay_list_resolves_if_one_relay_does():
    await session.resolvable("nonsense.invalid:6000,127.0.0.1:6000")
    try:
        await session.resolvable("a.invalid:6000,b.invalid")
    except session.SpecError as exc:
        assert "cannot resolve 'a.invalid'" in str(exc) and "no relay was contacted" in str(exc)
    else:
        raise AssertionError("two unresolvable relays resolved")
