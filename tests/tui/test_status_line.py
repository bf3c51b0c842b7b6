"""The status line: what it keeps when narrow, notices that clear, a quiet relay."""

from __future__ import annotations

from datetime import UTC

from udproom.protocol import events as ev

from .conftest import (
    T0,
    last,
    make_app,
    ready,
    settle,
    status,
    type_line,
    until,
)
from .demo import FakeBackend


async def test_narrow_status_keeps_room_activity_and_help():
    from udproom.tui.app import ChatApp as _App

    backend = FakeBackend(
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
        app.tick()
        assert "no activity" not in status(app)


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


async def test_topic_line_says_how_to_set_a_topic_where_there_is_none():
    app, backend = make_app(topics={"lobby": "be kind"})
    async with app.run_test(size=(100, 24)) as pilot:
        await ready(pilot, app, backend)
        topic = app.query_one("#topic")
        assert "be kind" in str(topic._text)
        await pilot.press("alt+2")  # #dev has no topic
        await settle(pilot, app)
        assert str(topic._text).endswith("#dev  ·  no topic (/topic TEXT sets one)")


async def test_the_status_line_shows_the_relays_key_as_it_proved_it():
    from udproom.protocol.crypto import Identity

    relay_key = Identity.generate()
    app, backend = make_app()
    async with app.run_test(size=(200, 30)) as pilot:
        await ready(pilot, app, backend)
        assert "relay key" not in status(app)  # (the fake backend proves no key)
        backend._emit(ev.Connected(backend.address, "alice", 0.012, 1, relay_key.public))
        await settle(pilot, app)
        assert f"relay key {relay_key.fingerprint}" in status(app)
    narrow, backend2 = make_app()
    async with narrow.run_test(size=(90, 30)) as pilot:
        await ready(pilot, narrow, backend2)
        backend2._emit(ev.Connected(backend2.address, "alice", 0.012, 1, relay_key.public))
        await settle(pilot, narrow)
        text = status(narrow)
        assert relay_key.fingerprint not in text and "#lobby" in text  # the detail goes first
