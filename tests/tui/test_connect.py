"""The connect screen, host/join start-up errors and the config file."""

from __future__ import annotations

import socket
from datetime import UTC

from textual.widgets import Input, OptionList, Static

from udproom.tui import config, session
from udproom.tui.app import ChatApp
from udproom.tui.screens import ConnectScreen

from .conftest import (
    fake_build,
    until,
)


async def test_connect_screen_joins_and_remembers(monkeypatch, _config_dir):
    built = []
    monkeypatch.setattr(session, "build", fake_build(built))
    app = ChatApp(tz=UTC, flush_interval=0.0)
    async with app.run_test(size=(100, 34)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ConnectScreen), "connect screen")
        screen = app.screen
        assert screen.query_one("#mode-join").value  # join is the default mode
        screen.query_one("#address", Input).value = "192.168.1.5:6000"
        screen.query_one("#nick", Input).value = "zoe"
        screen.query_one("#rooms", Input).value = "lobby, #Dev"
        await pilot.click("#connect")
        await until(pilot, lambda: len(app.chat.rooms) == 2, "joined")
        assert built[0].mode == "join" and built[0].address == "192.168.1.5:6000"
        assert built[0].nick == "zoe" and built[0].rooms == ["lobby", "dev"]
        assert app.chat.nick == "zoe" and app.chat.active == "lobby"
    saved = config.load()
    assert saved.nick == "zoe" and saved.recent == ["192.168.1.5:6000"] and saved.rooms == ["lobby", "dev"]
    assert (_config_dir / "config.toml").exists()


async def test_connect_screen_shows_bad_input_inline():
    app = ChatApp(tz=UTC, config=config.Config(nick="zoe"), save_config=False)
    async with app.run_test(size=(100, 34)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ConnectScreen), "connect screen")
        screen = app.screen
        screen.query_one("#address", Input).value = "example.org:70000"
        screen.query_one("#address", Input).focus()
        await pilot.press("enter")
        error = str(screen.query_one("#connect-error", Static).render())
        assert "port 70000 in 'example.org:70000' is out of range (1-65535)" in error
        screen.query_one("#address", Input).value = ""
        await pilot.press("enter")
        assert "give the relay's address" in str(screen.query_one("#connect-error", Static).render())
        screen.query_one("#address", Input).value = "h:1"
        screen.query_one("#nick", Input).value = "#x"
        await pilot.press("enter")
        assert "nick may not start" in str(screen.query_one("#connect-error", Static).render())
        assert isinstance(app.screen, ConnectScreen)


async def test_connect_screen_recent_addresses_and_modes(monkeypatch):
    built = []
    monkeypatch.setattr(session, "build", fake_build(built))
    cfg = config.Config(nick="zoe", mode="host", recent=["10.0.0.1:6000", "10.0.0.2:7000"])
    app = ChatApp(tz=UTC, config=cfg, save_config=False, flush_interval=0.0)
    async with app.run_test(size=(100, 40)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ConnectScreen), "connect screen")
        screen = app.screen
        assert screen.query_one("#mode-host").value
        assert not screen.query_one("#peers").display
        await pilot.click("#mode-direct")
        await pilot.pause()
        assert screen.query_one("#peers").display
        recent = screen.query_one("#recent", OptionList)
        assert recent.option_count == 2
        recent.highlighted = 1
        recent.action_select()
        await pilot.pause()
        assert screen.query_one("#address", Input).value == "10.0.0.2:7000"
        assert screen.query_one("#mode-join").value
        await pilot.press("enter")
        await until(pilot, lambda: built, "connect")
        assert built[0].address == "10.0.0.2:7000" and built[0].mode == "join"


async def test_host_mode_port_in_use_is_a_clear_message():
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    port = busy.getsockname()[1]
    try:
        spec = session.check(session.Spec("host", f"127.0.0.1:{port}", "zoe", ["lobby"]))
        app = ChatApp(spec, tz=UTC, save_config=False)
        async with app.run_test(size=(100, 34)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, ConnectScreen), "back to the connect screen")
            error = str(app.screen.query_one("#connect-error", Static).render())
            assert f"127.0.0.1:{port}" in error and "already in use" in error and "\n" not in error
            assert app.screen.query_one("#address", Input).value == f"127.0.0.1:{port}"
            assert app.screen.query_one("#mode-host").value
    finally:
        busy.close()


async def test_host_mode_shows_addresses_to_share(monkeypatch):
    built = []
    monkeypatch.setattr(session, "build", fake_build(built))
    spec = session.check(session.Spec("host", ":6000", "zoe", ["lobby"]))
    app = ChatApp(spec, tz=UTC, save_config=False, flush_interval=0.0)
    async with app.run_test(size=(140, 30)) as pilot:
        await until(pilot, lambda: app.chat.state == "connected", "connected")
        await pilot.pause()
        assert "others join: 10.0.0.5:6000" in str(app.query_one("#status").render())


def test_config_roundtrip_and_broken_file(_config_dir):
    assert config.config_path() == _config_dir / "config.toml"
    cfg = config.load()
    assert cfg.nick == "" and cfg.recent == [] and cfg.bell
    for i in range(12):
        cfg.remember("join", f"h{i}:6000", "zoe", ["lobby"])
    cfg.remember("join", "h5:6000", "zoe", ["lobby"])
    cfg.bell = False
    assert config.save(cfg) is None
    again = config.load()
    assert again.recent[0] == "h5:6000" and len(again.recent) == config.MAX_RECENT
    assert again.recent.count("h5:6000") == 1 and not again.bell
    config.config_path().write_text("nick = [broken", encoding="utf-8")
    assert config.load() == config.Config()


def test_config_save_error_is_one_line(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv(config.ENV, str(blocker / "sub"))
    err = config.save(config.Config())
    assert err and err.startswith("could not save") and "\n" not in err


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
