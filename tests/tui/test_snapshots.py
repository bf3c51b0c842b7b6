"""pytest-textual-snapshot: the main screen, the connect screen, the quick switcher, help.

Deterministic: fixed clock and timestamps (UTC), fixed terminal size, no cursor blink.
Update with `pytest tests/tui/test_snapshots.py --snapshot-update` after a deliberate change.
"""

from __future__ import annotations

from datetime import UTC

from udproom.tui import config
from udproom.tui.app import ChatApp
from udproom.tui.screens import ConnectScreen, HelpScreen, QuickSwitcher

from .demo import DEMO_T0, demo_backend, populate

SIZE = (120, 32)


def demo_app(theme: str | None = None):
    backend = demo_backend()
    # the app joins just before the scripted session starts (DEMO_T0), as a real one would
    app = ChatApp(
        backend=backend,
        tz=UTC,
        clock=lambda: DEMO_T0 - 60,
        save_config=False,
        bell=False,
        flush_interval=0.0,
        theme=theme,
    )
    return app, backend


def test_main_screen(snap_compare):
    app, backend = demo_app()

    async def run_before(pilot):
        await populate(pilot, app, backend)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_main_screen_in_a_light_theme(snap_compare):
    app, backend = demo_app("textual-light")

    async def run_before(pilot):
        await populate(pilot, app, backend)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_main_screen_in_another_dark_theme(snap_compare):
    app, backend = demo_app("nord")

    async def run_before(pilot):
        await populate(pilot, app, backend)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_main_screen_narrow(snap_compare):
    app, backend = demo_app()

    async def run_before(pilot):
        await populate(pilot, app, backend)
        await pilot.press("alt+2")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(72, 24), run_before=run_before)


def test_connect_screen(snap_compare):
    cfg = config.Config(
        nick="alice",
        mode="join",
        recent=["192.168.1.5:6000", "chat.example.org:6000"],
        rooms=["lobby", "dev"],
    )
    app = ChatApp(tz=UTC, config=cfg, save_config=False)

    async def run_before(pilot):
        for _ in range(50):
            if isinstance(app.screen, ConnectScreen):
                break
            await pilot.pause()
        for inp in app.screen.query("Input"):
            inp.cursor_blink = False
        await pilot.pause()

    assert snap_compare(app, terminal_size=(100, 34), run_before=run_before)


def test_quick_switcher(snap_compare):
    app, backend = demo_app()

    async def run_before(pilot):
        await populate(pilot, app, backend)
        await pilot.press("ctrl+k")
        for _ in range(50):
            if isinstance(app.screen, QuickSwitcher):
                break
            await pilot.pause()
        app.screen.query_one("#switcher-input").cursor_blink = False
        await pilot.press("d")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_help_screen(snap_compare):
    app, backend = demo_app()

    async def run_before(pilot):
        await populate(pilot, app, backend)
        await pilot.press("f1")
        for _ in range(50):
            if isinstance(app.screen, HelpScreen):
                break
            await pilot.pause()
        await pilot.pause()

    assert snap_compare(app, terminal_size=(120, 40), run_before=run_before)


def test_members_pane_with_a_long_nick(snap_compare):
    """A 24-character nick among five members: cut with …, one row each, nobody hidden."""
    from udproom.protocol import events as ev

    from .conftest import make_app, ready, settle

    long = "averyveryverylongnick_24"
    nicks = ["alice", "bob", long, "carol", "dave"]
    app, backend = make_app(rooms=("lobby", "dev"), members={"lobby": [ev.Member(n) for n in nicks]})

    async def run_before(pilot):
        await ready(pilot, app, backend)
        backend.say("lobby", long, "hello from the longest nick there is")
        backend.say("lobby", "carol", f"{long}: welcome")
        await settle(pilot, app)
        app.input.cursor_blink = False

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_scrolled_up_busy_room(snap_compare):
    """A room at its scrollback cap, read two pages up while 30 more lines arrive: the same
    lines stay in view and the status line counts what is new below."""
    from udproom.tui.model import SCROLLBACK

    from .conftest import make_app, ready, settle

    app, backend = make_app(rooms=("lobby", "dev"))

    async def run_before(pilot):
        await ready(pilot, app, backend)
        for i in range(SCROLLBACK + 10):
            backend.say("lobby", ("bob", "carol", "erin")[i % 3], f"message {i}")
        await settle(pilot, app)
        await pilot.press("pageup", "pageup")
        for i in range(30):
            backend.say("lobby", "dave", f"later {i}")
        await settle(pilot, app)
        app.input.cursor_blink = False

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
