"""Issue 10, the app's part: its own chat log (tui/history.py), restart, merging, paging back,
/search and its results view, --no-log, a log that cannot be written.

Every test runs with UDPROOM_DATA_DIR in a tmp directory (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC

from udproom.protocol import events as ev
from udproom.protocol import paths
from udproom.protocol.chatlog import ChatLog, Line
from udproom.tui import model as m
from udproom.tui.app import ChatApp
from udproom.tui.search import SearchScreen

from .conftest import T0, clock, settle, status, until
from .demo import FakeBackend

CIRCLE = "127.0.0.1:6000"  # FakeBackend's address: the circle of a backend started without a spec


class LoggedBackend(FakeBackend):
    """FakeBackend with a relay epoch, room sequences that go on from `first_seq`, a backfill on
    join, and `page_back` answered from `store` (or held until `answer()` when `hold`)."""

    def __init__(self, *a, epoch=7, first_seq=0, backfill=(), store=(), hold=False, connect=True, **kw):
        super().__init__(*a, clock=clock, **kw)
        self.epoch = epoch
        self.backfill = list(backfill)
        self.store = list(store)  # every event of the room the "relay" keeps, oldest first
        self.hold = hold
        self.connect = connect
        self.asked: list[tuple[str, int, int]] = []
        for room in self.rooms:
            self._seq[room] = first_seq

    async def run(self, emit):
        def with_epoch(event):
            if type(event) is ev.Connected:
                event = ev.Connected(event.address, event.nick, event.rtt, self.epoch)
            emit(event)

        if self.connect:
            return await super().run(with_epoch)
        self.emit = emit
        emit(ev.Connecting(self.address))
        emit(ev.ConnectionLost("no answer from the relay", 5.0))
        await asyncio.Event().wait()  # a relay that never answers

    def _emit(self, event):
        super()._emit(event)
        if type(event) is ev.RoomJoined:
            for e in self.backfill:
                if e.room == event.room:
                    super()._emit(e)

    def page_back(self, room: str, before: int, limit: int) -> None:
        self.asked.append((room, before, limit))
        if not self.hold:
            self._later(self.answer)

    def answer(self) -> None:
        room, before, limit = self.asked[-1]
        older = [e for e in self.store if e.room == room and e.seq < before][-limit:]
        complete = not older or older[0].seq <= 1
        super()._emit(ev.HistoryPage(room, before, tuple(older), complete))


def msg(seq, text=None, room="lobby", nick="bob", history=True, ts=None):
    return ev.MessageReceived(
        room, seq, nick, text or f"m{seq}", T0 - 10_000 + seq if ts is None else ts, False, history
    )


def app_for(backend, **kw):
    kw.setdefault("bell", False)
    return ChatApp(backend=backend, tz=UTC, clock=clock, save_config=False, flush_interval=0.0, **kw)


def shown(app, room="lobby") -> list[str]:
    return [x.text for x in app.chat.rooms[room].lines]


def log_lines(room="lobby") -> list[Line]:
    with ChatLog.open_read_only(paths.chatlog_path()) as log:
        return log.recent(CIRCLE, room, 100_000)


def seed_log(n: int, room="lobby", epoch=7, word="filler") -> None:
    """A log with n lines of `room` (seq 1..n, epoch 7), as an earlier run would have left it."""
    with ChatLog(paths.chatlog_path()) as log:
        log.add(
            Line(CIRCLE, room, "message", "bob", f"{word} {i}", T0 - 100_000 + i, i, 0, epoch)
            for i in range(1, n + 1)
        )


def app_on_a_log(n: int):
    """An app on #lobby whose log already has n lines (seq 1..n); the relay goes on from n."""
    seed_log(n)
    backend = LoggedBackend("alice", ["lobby"], first_seq=n)
    return app_for(backend), backend


async def live(pilot, app):
    await until(pilot, lambda: app.chat.state == "connected" and "lobby" in app.chat.rooms, "connected")
    await settle(pilot, app)


# ---------------------------------------------------------------------------- restart, merge


async def test_a_restarted_app_shows_the_previous_lines_before_any_network():
    backend = LoggedBackend("alice", ["lobby"])
    app = app_for(backend)
    async with app.run_test() as pilot:
        await live(pilot, app)
        for word in ("first", "second", "third"):
            backend.say("lobby", "bob", word)
        await settle(pilot, app)
    assert [x.text for x in log_lines()] == ["first", "second", "third"]

    silent = LoggedBackend("alice", ["lobby"], connect=False)  # the relay is gone
    app = app_for(silent)
    async with app.run_test() as pilot:
        await settle(pilot, app)
        assert app.chat.state == "reconnecting" and not app.chat.connected_once
        lines = app.chat.rooms["lobby"].lines
        assert [x.text for x in lines if x.kind == m.MSG] == ["first", "second", "third"]
        assert all(x.history for x in lines if x.kind == m.MSG)  # dim history
        assert any("third" in row for row in app.messages.visible_text())


async def test_log_backfill_and_live_merge_once_in_order():
    """The log has 1..5; the relay's backfill brings 1..8 (again), then 9 and 10 arrive live:
    each line once, in the room's order, history above "you joined"; the log holds 1..10 once."""
    seed_log(5, word="m")
    backend = LoggedBackend("alice", ["lobby"], first_seq=8, backfill=[msg(i, f"m {i}") for i in range(1, 9)])
    app = app_for(backend)
    async with app.run_test() as pilot:
        await live(pilot, app)
        backend.say("lobby", "bob", "m 9")
        backend.say("lobby", "carol", "m 10")
        await settle(pilot, app)
        texts = [t for t in shown(app) if t.startswith("m ")]
        assert texts == [f"m {i}" for i in range(1, 11)]
        joined = next(i for i, t in enumerate(shown(app)) if t.startswith("you joined"))
        assert shown(app)[joined - 1] == "m 8" and shown(app)[joined + 1] == "m 9"
        app.history.drain()
    assert [(x.seq, x.text) for x in log_lines()] == [(i, f"m {i}") for i in range(1, 11)]


async def test_a_backfill_older_than_the_logged_lines_goes_above_them():
    """The log only has 9..10 (joined late last time); the backfill brings 1..10: 1..8 go above."""
    with ChatLog(paths.chatlog_path()) as log:
        log.add(Line(CIRCLE, "lobby", "message", "bob", f"m {i}", T0 - 10_000 + i, i, 0, 7) for i in (9, 10))
    backend = LoggedBackend(
        "alice", ["lobby"], first_seq=10, backfill=[msg(i, f"m {i}") for i in range(1, 11)]
    )
    app = app_for(backend)
    async with app.run_test() as pilot:
        await live(pilot, app)
        assert [t for t in shown(app) if t.startswith("m ")] == [f"m {i}" for i in range(1, 11)]


async def test_a_new_epoch_is_not_mistaken_for_the_logged_history():
    """Sequences of another epoch (a relay that started afresh) are not duplicates of logged ones."""
    seed_log(3, word="old")
    backend = LoggedBackend("alice", ["lobby"], epoch=8, first_seq=1, backfill=[msg(1, "new 1")])
    app = app_for(backend)
    async with app.run_test() as pilot:
        await live(pilot, app)
        assert [t for t in shown(app) if t.startswith(("old", "new"))] == ["old 1", "old 2", "old 3", "new 1"]


# ---------------------------------------------------------------------------- paging back


async def test_pgup_past_the_top_pages_back_through_the_log_to_the_start():
    app, backend = app_on_a_log(450)
    async with app.run_test(size=(100, 30)) as pilot:
        await live(pilot, app)
        assert [t for t in shown(app) if t.startswith("filler")] == [f"filler {i}" for i in range(251, 451)]
        for _ in range(200):
            if "start of #lobby's history" in shown(app):
                break
            await pilot.press("pageup")
        await settle(pilot, app)
        assert shown(app)[0] == "start of #lobby's history"
        assert [t for t in shown(app) if t.startswith("filler")] == [f"filler {i}" for i in range(1, 451)]
        assert backend.asked == [], "the log had every line: nothing asked of the relay"


async def test_paging_goes_on_at_the_relay_when_the_log_has_nothing_older():
    store = [msg(i, f"r {i}") for i in range(1, 301)]
    backend = LoggedBackend("alice", ["lobby"], first_seq=300, backfill=store[-100:], store=store, hold=True)
    app = app_for(backend)
    async with app.run_test(size=(100, 30)) as pilot:
        await live(pilot, app)
        assert [t for t in shown(app) if t.startswith("r ")] == [f"r {i}" for i in range(201, 301)]
        for _ in range(100):
            if backend.asked:
                break
            await pilot.press("pageup")
        assert backend.asked == [("lobby", 201, 100)]  # (100: the relay's page bound)
        await settle(pilot, app)
        assert shown(app)[0] == "loading older messages…"
        assert any(row.endswith("loading older messages…") for row in app.messages.visible_text())
        await pilot.press("pageup")  # asked once while it comes
        assert len(backend.asked) == 1
        backend.answer()
        await settle(pilot, app)
        assert "loading older messages…" not in shown(app)
        assert [t for t in shown(app) if t.startswith("r ")] == [f"r {i}" for i in range(101, 301)]
        assert "start of #lobby's history" not in shown(app)  # 101..200 was not the start
        app.history.older("lobby")
        assert backend.asked[-1] == ("lobby", 101, 100)
        backend.answer()
        await settle(pilot, app)
        assert [t for t in shown(app) if t.startswith("r ")] == [f"r {i}" for i in range(1, 301)]
        assert shown(app)[0] == "start of #lobby's history"  # seq 1 is the start
        app.history.drain()
    logged = [x.text for x in log_lines()]
    assert logged == [f"r {i}" for i in range(1, 301)]  # the pages went into the log too


async def test_a_page_nobody_asked_for_or_with_hostile_events_changes_nothing():
    backend = LoggedBackend(
        "alice", ["lobby"], first_seq=50, backfill=[msg(i) for i in range(41, 51)], hold=True
    )
    app = app_for(backend)
    async with app.run_test() as pilot:
        await live(pilot, app)
        before = shown(app)
        backend.inject(ev.HistoryPage("lobby", 41, (msg(3),), True))  # unsolicited
        await settle(pilot, app)
        assert shown(app) == before
        app.history.older("lobby")
        hostile = (msg(99), msg(40, room="dev"), msg(-1), msg(39), msg(39), msg(38, history=False))
        backend.inject(ev.HistoryPage("lobby", 41, hostile, False))
        await settle(pilot, app)
        assert [t for t in shown(app) if t.startswith("m")] == ["m38", "m39"] + [
            f"m{i}" for i in range(41, 51)
        ]


async def test_a_room_past_the_scrollback_while_scrolled_up_is_trimmed_at_the_bottom():
    app, _backend = app_on_a_log(m.SCROLLBACK + 300)
    async with app.run_test(size=(100, 30)) as pilot:
        await live(pilot, app)
        lines = app.chat.rooms["lobby"]
        for _ in range(20):
            app.history.older("lobby")
        app.refresh_ui()
        app.messages.scroll_to(y=0, animate=False)
        await settle(pilot, app)
        assert len(lines.lines) > m.SCROLLBACK  # the loaded pages stay while scrolled up
        await pilot.press("ctrl+end")
        await settle(pilot, app)
        room = app.chat.rooms["lobby"]
        assert len(room.lines) <= m.SCROLLBACK
        fillers = [int(t.split()[1]) for t in shown(app) if t.startswith("filler")]
        assert fillers == list(range(fillers[0], m.SCROLLBACK + 301))  # the newest lines stay
        await pilot.press("pageup")  # paging works again from the new top
        app.history.older("lobby")
        await settle(pilot, app)
        fillers = [int(t.split()[1]) for t in shown(app) if t.startswith("filler")]
        assert fillers == list(range(fillers[0], m.SCROLLBACK + 301))


# ---------------------------------------------------------------------------- /search


async def test_search_lists_results_newest_first_and_enter_jumps_to_the_line():
    seed_log(900)
    with ChatLog(paths.chatlog_path()) as log:
        log.add([Line(CIRCLE, "dev", "message", "carol", "deploy friday", T0 - 50_000, 1, 0, 7)])
    backend = LoggedBackend("alice", ["lobby", "dev"], first_seq=900)
    app = app_for(backend)
    async with app.run_test(size=(100, 30)) as pilot:
        await live(pilot, app)
        await pilot.press(*"/search filler 12", "enter")
        await until(pilot, lambda: isinstance(app.screen, SearchScreen), "the results view")
        results = app.screen.results
        assert [x.text for x in results][:3] == ["filler 129", "filler 128", "filler 127"]
        assert all("12" in x.text for x in results)
        await pilot.press("down", "down", "enter")  # filler 127: far above the 200 lines shown
        await until(pilot, lambda: not isinstance(app.screen, SearchScreen), "back to the room")
        await settle(pilot, app)
        assert app.chat.active == "lobby"
        visible = app.messages.visible_text()
        top = int(app.messages.scroll_y)
        on_screen = visible[top : top + app.messages.scrollable_content_region.height]
        assert any(row.endswith("filler 127") for row in on_screen)
        assert any(row.endswith("filler 126") for row in on_screen)  # context around it
        assert "found: " in status(app) and "<bob> filler 127" in status(app)
        texts = [t for t in shown(app) if t.startswith("filler")]
        assert texts == sorted(set(texts), key=lambda t: int(t.split()[1]))  # once each, in order

        await pilot.press(*"/search nick:carol deploy", "enter")
        await until(pilot, lambda: isinstance(app.screen, SearchScreen), "the results view")
        assert [(x.room, x.text) for x in app.screen.results] == [("dev", "deploy friday")]
        await pilot.press("enter")
        await until(pilot, lambda: not isinstance(app.screen, SearchScreen), "back to the room")
        assert app.chat.active == "dev"
        assert "deploy friday" in shown(app, "dev")

        await pilot.press(*"/search nothingmatchesthis", "enter")
        await until(pilot, lambda: isinstance(app.screen, SearchScreen), "the results view")
        assert app.screen.results == []
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, SearchScreen), "Esc returns")
        assert app.chat.active == "dev"


async def test_search_without_words_is_a_usage_error():
    backend = LoggedBackend("alice", ["lobby"])
    app = app_for(backend)
    async with app.run_test() as pilot:
        await live(pilot, app)
        await pilot.press(*"/search", "enter")
        await settle(pilot, app)
        assert app.chat.current.lines[-1].text.startswith("usage: /search WORDS")
        assert app.input.value == "/search"


def test_search_results_view_snapshot(snap_compare):
    with ChatLog(paths.chatlog_path()) as log:
        log.add(
            [
                Line(CIRCLE, "lobby", "message", "bob", "the deploy is on friday", T0 - 7200, 1, 0, 7),
                Line(CIRCLE, "dev", "action", "erin", "deploys the relay to staging", T0 - 3600, 2, 0, 7),
                Line(CIRCLE, "dev", "message", "carol", "deploy notes are in the wiki", T0 - 60, 3, 0, 7),
            ]
        )
    backend = LoggedBackend("alice", ["lobby", "dev"])
    app = app_for(backend)

    async def run_before(pilot):
        await live(pilot, app)
        await pilot.press(*"/search deploy", "enter")
        await until(pilot, lambda: isinstance(app.screen, SearchScreen), "the results view")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(100, 24), run_before=run_before)


# ---------------------------------------------------------------------------- no log, bad disks


async def test_no_log_writes_nothing(tmp_path):
    backend = LoggedBackend("alice", ["lobby"])
    app = app_for(backend, log=False)
    async with app.run_test() as pilot:
        await live(pilot, app)
        backend.say("lobby", "bob", "not kept")
        await settle(pilot, app)
        assert "not kept" in shown(app)
    assert not paths.chatlog_path().exists()
    assert not any(paths.data_dir().iterdir())


def test_no_log_flag_and_config():
    from udproom.tui import cli, config

    _spec, args = cli.parse(["--join", "127.0.0.1:6000", "--no-log"])
    assert args.no_log is True
    config.save(config.Config(log=False))
    assert config.load().log is False
    assert ChatApp(save_config=False).history.log is None  # the config's choice
    assert ChatApp(save_config=False, config=config.Config()).history.log is not None


async def test_a_full_disk_is_one_notice_and_the_app_keeps_working():
    log = ChatLog(paths.chatlog_path())
    pages = log._db.execute("PRAGMA page_count").fetchone()[0]
    log._db.execute(f"PRAGMA max_page_count = {pages + 2}")
    backend = LoggedBackend("alice", ["lobby"])
    app = app_for(backend, log=log)
    async with app.run_test() as pilot:
        await live(pilot, app)
        for i in range(300):
            backend.say("lobby", "bob", f"line {i} " + "x" * 400)
            if i % 50 == 0:
                await settle(pilot, app)
                app.history.drain()
        await settle(pilot, app)
        app.history.drain()
        await until(pilot, lambda: any("is full" in x.text for x in app.chat.rooms["lobby"].lines), "notice")
        backend.say("lobby", "bob", "still here")
        await settle(pilot, app)
        app.history.drain()
        app.tick()
        notices = [x for x in app.chat.rooms["lobby"].lines if "chat log" in x.text]
        assert len(notices) == 1 and notices[0].kind == m.ERROR
        assert "is full" in notices[0].text and "keeps running without the chat log" in notices[0].text
        assert "still here" in shown(app)
        await pilot.press(*"hello", "enter")
        await settle(pilot, app)
        assert "hello" in shown(app)  # posting works too


async def test_a_data_directory_that_cannot_be_written_is_one_notice(monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("UDPROOM_DATA_DIR", str(blocker / "udproom"))  # mkdir fails, even as root
    backend = LoggedBackend("alice", ["lobby"])
    app = app_for(backend)
    async with app.run_test() as pilot:
        await live(pilot, app)
        backend.say("lobby", "bob", "shown anyway")
        await settle(pilot, app)
        notices = [x.text for x in app.chat.rooms["lobby"].lines if "chat log" in x.text]
        assert len(notices) == 1 and notices[0].startswith("cannot create")
        assert "shown anyway" in shown(app)


def test_the_log_file_is_sqlite_with_the_lines():
    """(what `udproom search` and `udproom log` read: the same file)"""
    seed_log(3)
    db = sqlite3.connect(paths.chatlog_path())
    assert db.execute("SELECT count(*) FROM lines").fetchone()[0] == 3
    db.close()


def test_circles_name_the_relay_as_joined_and_the_direct_circle():
    from udproom.tui.history import circle_of
    from udproom.tui.session import Spec

    assert circle_of(Spec("join", "chat.example.org:6000"), None) == "chat.example.org:6000"
    assert circle_of(Spec("host", ":6000"), None) == "127.0.0.1:6000"  # = --join 127.0.0.1:6000
    assert circle_of(Spec("host", "[::]:6001"), None) == "[::1]:6001"
    assert circle_of(Spec("direct", ":7000", peers=["b:1", "a:1"]), None) == "direct :7000"
    assert circle_of(Spec("direct", "", peers=["b:1", "a:1"]), None) == "direct a:1,b:1"


async def test_a_room_joined_later_shows_its_logged_lines_above_its_backfill():
    seed_log(5, room="dev", word="d")
    backfill = [msg(i, f"d {i}", room="dev") for i in range(3, 8)]
    backend = LoggedBackend("alice", ["lobby"], backfill=backfill)
    app = app_for(backend)
    async with app.run_test() as pilot:
        await live(pilot, app)
        await pilot.press(*"/join dev", "enter")
        await until(pilot, lambda: "dev" in app.chat.rooms and app.chat.rooms["dev"].joined, "joined #dev")
        await settle(pilot, app)
        texts = shown(app, "dev")
        assert [t for t in texts if t.startswith("d ")] == [f"d {i}" for i in range(1, 8)]
        assert texts.index("d 7") < next(i for i, t in enumerate(texts) if t.startswith("you joined"))


async def test_one_line_the_log_cannot_store_is_skipped_and_the_log_stays_on():
    backend = LoggedBackend("alice", ["lobby"])
    app = app_for(backend)
    async with app.run_test() as pilot:
        await live(pilot, app)
        backend.say("lobby", "bob", "before")
        backend.say("lobby", "mallory", "bad \ud800 text")  # a lone surrogate: not storable
        backend.say("lobby", "bob", "after")
        await settle(pilot, app)
        app.history.drain()
        backend.say("lobby", "bob", "later")
        await settle(pilot, app)
        app.history.drain()
        assert app.history.enabled
        assert not [x for x in app.chat.rooms["lobby"].lines if "chat log" in x.text]
    assert [x.text for x in log_lines()] == ["before", "after", "later"]


async def test_scrolling_to_the_top_with_the_wheel_loads_the_previous_page():
    app, _backend = app_on_a_log(450)
    async with app.run_test(size=(100, 30)) as pilot:
        await live(pilot, app)
        assert "filler 250" not in shown(app)
        app.messages.scroll_to(y=0, animate=False)  # as the wheel does: the offset reaches 0
        await until(pilot, lambda: "filler 250" in shown(app), "the previous page")
        await pilot.pause()
        assert not app.messages.follow  # the view stays where it was: the page is above it
        fillers = [int(t.split()[1]) for t in shown(app) if t.startswith("filler")]
        assert fillers == list(range(51, 451))


async def test_search_is_in_help_and_the_palette():
    from udproom.tui.commands import help_lines
    from udproom.tui.palette import UdproomCommands

    assert any(line.startswith("/search WORDS") for line in help_lines())
    backend = LoggedBackend("alice", ["lobby"])
    app = app_for(backend)
    async with app.run_test() as pilot:
        await live(pilot, app)
        provider = UdproomCommands(app.screen)
        names = [name for name, _help, _cb in provider._commands()]
        assert "Search the log…" in names
        {n: cb for n, _h, cb in provider._commands()}["Search the log…"]()
        assert app.input.value == "/search "


async def test_a_refused_or_lost_page_request_can_be_asked_again():
    store = [msg(i, f"r {i}") for i in range(1, 201)]
    backend = LoggedBackend("alice", ["lobby"], first_seq=200, backfill=store[-100:], store=store, hold=True)
    app = app_for(backend)
    async with app.run_test() as pilot:
        await live(pilot, app)
        assert app.history.older("lobby") == "relay"
        backend.inject(ev.RequestRefused("history", "lobby", "slow down"))
        await settle(pilot, app)
        texts = shown(app)
        assert "loading older messages…" not in texts and "start of #lobby's history" not in texts
        assert any("refused: slow down" in t for t in texts)
        assert app.history.older("lobby") == "relay"  # asked again
        backend.inject(ev.ConnectionLost("no answer from the relay", 1.0))
        await settle(pilot, app)
        assert "loading older messages…" not in shown(app)
        assert len(backend.asked) == 2


async def test_a_relay_hosted_on_port_0_is_logged_under_the_port_it_got():
    from udproom.tui.session import Spec

    app = app_for(LoggedBackend("alice", ["lobby"], address="127.0.0.1:45678"))
    app.history.begin(Spec("host", "127.0.0.1:0"), None, [])
    assert app.history.circle == "127.0.0.1:0"
    app.history.ingest([ev.Connected("127.0.0.1:45678", "alice", None, 3)])
    assert app.history.circle == "127.0.0.1:45678"


async def test_search_finds_what_was_just_shown_even_when_the_disk_is_slow(monkeypatch):
    """/search right after a line arrived finds it: the search waits for the log's writer (found
    trying it in tmux: a message from a moment ago was not there yet)."""
    import time as _time

    from udproom.tui import history as h

    real_add = h._Writer._add

    def slow_add(self, lines):
        _time.sleep(1.5)  # a slow disk, on the writer's own thread
        real_add(self, lines)

    monkeypatch.setattr(h._Writer, "_add", slow_add)
    backend = LoggedBackend("alice", ["lobby"])
    app = app_for(backend)
    async with app.run_test(size=(100, 30)) as pilot:
        await live(pilot, app)
        backend.say("lobby", "bob", "deploy is green")
        await settle(pilot, app)
        assert "deploy is green" in shown(app)
        await pilot.press(*"/search deploy", "enter")
        await until(pilot, lambda: isinstance(app.screen, SearchScreen), "the results view")
        assert [x.text for x in app.screen.results] == ["deploy is green"]


# ---------------------------------------------------------------------------- direct mode


class DirectBackend(FakeBackend):
    """A direct-mode session (like PeerClient): Lamport stamps as `seq`, own posts not echoed;
    `serve_history` keeps the read function the app gives it, `page_back` is held until `answer`."""

    def __init__(self, *a, store=(), **kw):
        super().__init__(*a, clock=clock, direct=True, **kw)
        self.read = None
        self.store = list(store)  # what the peers would answer pages from, in stamp order
        self.asked: list[tuple[str, int, int]] = []

    def serve_history(self, read) -> None:
        self.read = read

    def page_back(self, room: str, before: int, limit: int) -> None:
        self.asked.append((room, before, limit))

    def answer(self, complete: bool) -> None:
        room, before, limit = self.asked[-1]
        older = [e for e in self.store if e.room == room and e.seq < before][-limit:]
        self._emit(ev.HistoryPage(room, before, tuple(older), complete))


SIGNER = FakeBackend(direct=True)


def stamped(lc, text, nick="bob", room="lobby"):
    ts = T0 - 10_000 + lc
    return ev.MessageReceived(
        room, lc, nick, text, ts, False, True, signed=SIGNER.signed_by(nick, room, lc, text, ts)
    )


async def test_direct_mode_logs_own_posts_with_their_stamps_and_serves_the_log_to_its_peer():
    """Nobody echoes our own post in direct mode: it is logged when acknowledged, with its
    Lamport stamp and what we signed (the time as signed, not as shown), and the session's peer
    answers history from the log (chatlog.peer_history), each line as its author signed it."""
    backend = DirectBackend("alice", ["lobby"])
    app = app_for(backend)
    async with app.run_test() as pilot:
        await live(pilot, app)
        backend.say("lobby", "bob", "hi alice")  # stamp 1
        await settle(pilot, app)
        await pilot.press(*"hello bob", "enter")  # acknowledged with stamp 2
        await settle(pilot, app)
        backend.say("lobby", "bob", "how are you")  # stamp 3
        await settle(pilot, app)
        app.history.drain()
        assert backend.read is not None, "the peer was not given the log"
        sign = backend.signed_by
        assert backend.read("lobby", 0, 100) == [
            (1, "bob", "hi alice", False, sign("bob", "lobby", 1, "hi alice", T0)),
            (2, "alice", "hello bob", False, sign("alice", "lobby", 2, "hello bob")),
            (3, "bob", "how are you", False, sign("bob", "lobby", 3, "how are you", T0)),
        ]
        assert sign("alice", "lobby", 2, "hello bob").ts != T0  # (signed at another time than shown)
        assert [r[2] for r in backend.read("lobby", 3, 1)] == ["hello bob"]  # a page below stamp 3


async def test_a_restarted_direct_app_merges_its_log_with_peer_history_once_in_stamp_order():
    with ChatLog(paths.chatlog_path()) as log:
        log.add(
            Line(
                CIRCLE,
                "lobby",
                "message",
                "bob",
                f"s {lc}",
                T0 - 10_000 + lc,
                0,
                ev.direct_mid("lobby", "bob", lc, f"s {lc}"),
                lc=lc,
            )
            for lc in (2, 4, 6)
        )
    backend = DirectBackend("alice", ["lobby"])
    app = app_for(backend)
    async with app.run_test() as pilot:
        await live(pilot, app)
        for lc in (1, 2, 3, 4, 5, 6, 7):  # the contact's history: the logged lines again, and more
            backend.inject(stamped(lc, f"s {lc}"))
        await settle(pilot, app)
        assert [t for t in shown(app) if t.startswith("s ")] == [f"s {lc}" for lc in range(1, 8)]


async def test_pgup_in_a_direct_room_asks_the_peers_below_the_oldest_stamp_once_the_log_runs_out():
    store = [stamped(lc, f"p {lc}", nick=("bob", "carol")[lc % 2]) for lc in range(1, 151)]
    backend = DirectBackend("alice", ["lobby"], store=store)
    app = app_for(backend)
    async with app.run_test(size=(100, 30)) as pilot:
        await live(pilot, app)
        for e in store[-50:]:  # the join backfill: stamps 101..150
            backend.inject(e)
        await settle(pilot, app)
        for _ in range(100):
            if backend.asked:
                break
            await pilot.press("pageup")
        assert backend.asked == [("lobby", 101, 100)]
        await settle(pilot, app)
        assert shown(app)[0] == "loading older messages…"
        backend.answer(complete=True)
        await settle(pilot, app)
        assert [t for t in shown(app) if t.startswith("p ")] == [f"p {lc}" for lc in range(1, 151)]
        assert shown(app)[0] == "start of #lobby's history"
        app.history.drain()
        # the page went into the log as direct-mode lines, with their stamps
        assert [r[0] for r in backend.read("lobby", 0, 1000)] == list(range(1, 151))


def test_the_writer_gathers_flushes_into_one_transaction_and_a_waiter_ends_the_gathering(tmp_path):
    """A flood's flushes go to the log in one transaction per take (the cost of a commit and of an
    FTS5 segment is per transaction); whoever waits for the writer (/search, quitting) does not
    wait for the gathering to end."""
    import threading

    from udproom.tui.history import _Writer

    log = ChatLog(tmp_path / "chat.sqlite3")
    calls = []
    add = log.add

    def counting(lines, count=None):
        calls.append(count)
        return add(lines, count)

    log.add = counting
    writer = _Writer(log, threading.Lock(), gather=600.0)  # gathers "for ever" unless someone waits
    try:
        for k in range(3):
            writer.put(CIRCLE, 7, False, [msg(10 * k + i, f"flush {k} line {i}") for i in range(1, 4)])
        assert writer.drain(60.0)
        assert calls == [9]  # one transaction for the three flushes
        assert [x.text for x in log.recent(CIRCLE, "lobby", 100)] == [
            f"flush {k} line {i}" for k in range(3) for i in range(1, 4)
        ]
    finally:
        writer.stop()
        log.close()


async def test_direct_history_with_other_words_under_a_lines_name_does_not_hide_the_line():
    """A hostile contact relays "bob said X" under the name (room, bob, stamp 5) of a line bob
    says otherwise: bob's own line (his join window) is still shown and logged."""
    backend = DirectBackend("alice", ["lobby"])
    app = app_for(backend)
    async with app.run_test() as pilot:
        await live(pilot, app)
        backend.inject(stamped(5, "forged by the contact"))
        backend.inject(stamped(5, "what bob said"))
        backend.inject(stamped(5, "what bob said"))  # and again: once
        await settle(pilot, app)
        assert [t for t in shown(app) if "bob said" in t or "forged" in t] == [
            "forged by the contact",
            "what bob said",
        ]
        app.history.drain()
        assert sorted(r[2] for r in backend.read("lobby", 0, 100)) == [
            "forged by the contact",
            "what bob said",
        ]


async def test_a_direct_page_no_peer_answered_in_time_lets_pgup_ask_again():
    backend = DirectBackend("alice", ["lobby"])
    app = app_for(backend)
    async with app.run_test(size=(100, 30)) as pilot:
        await live(pilot, app)
        for lc in range(101, 151):
            backend.inject(stamped(lc, f"p {lc}"))
        await settle(pilot, app)
        assert app.history.older("lobby") == "relay"
        backend.answer(complete=False)  # the peers' page came back empty, not complete
        await settle(pilot, app)
        assert "start of #lobby's history" not in shown(app)
        assert "loading older messages…" not in shown(app)
        assert app.history.older("lobby") == "relay"  # asked again
        assert backend.asked == [("lobby", 101, 100)] * 2
