from __future__ import annotations

import asyncio
from datetime import UTC

import pytest

from udproom.protocol import events as ev
from udproom.tui.app import ChatApp

from .demo import FakeBackend

T0 = 1_780_000_000.0  # Thursday 28 May 2026, 20:26:40 UTC


@pytest.fixture(autouse=True)
def _config_dir(tmp_path, monkeypatch):
    """Tests never touch the real config."""
    monkeypatch.setenv("UDPROOM_CONFIG_DIR", str(tmp_path / "config"))
    return tmp_path / "config"


def clock() -> float:
    return T0


def make_app(rooms=("lobby", "dev", "random"), nick="alice", members=None, **kwargs):
    if members is None:
        members = {
            "lobby": [
                ev.Member("alice"),
                ev.Member("bob"),
                ev.Member("carol", away="lunch"),
                ev.Member("dave", timed_out=True),
            ],
            "dev": [ev.Member("alice"), ev.Member("bob")],
        }
    backend_kwargs = {k: kwargs.pop(k) for k in ("auto_ack", "topics") if k in kwargs}
    backend = FakeBackend(nick, list(rooms), members=members, clock=clock, **backend_kwargs)
    kwargs.setdefault("bell", False)
    kwargs.setdefault("flush_interval", 0.0)
    app = ChatApp(backend=backend, tz=UTC, clock=clock, save_config=False, **kwargs)
    return app, backend


async def until(pilot, condition, what="condition", tries=200):
    """Let the app run until `condition()` holds (bounded; no sleeps)."""
    for i in range(tries):
        if condition():
            return
        await pilot.pause(0.005 if i > 20 else None)
    raise AssertionError(f"timed out waiting for {what}")


async def ready(pilot, app, backend):
    await until(
        pilot,
        lambda: len(app.chat.rooms) == len(backend.rooms) and app.chat.state == "connected",
        "rooms joined",
    )
    await until(pilot, lambda: not app.events_waiting, "flush")


async def settle(pilot, app):
    """Wait until every buffered backend event is on screen."""
    await pilot.pause()
    await until(pilot, lambda: not app.events_waiting, "flush")
    await pilot.pause()


def texts(app) -> list[str]:
    return app.messages.visible_text()


def last(app) -> str:
    """The text of the newest line in the room on screen."""
    return app.chat.current.lines[-1].text


async def type_line(pilot, text):
    pilot.app.input.value = text
    pilot.app.input.cursor_position = len(text)
    await pilot.press("enter")


def fake_build(built, cls=FakeBackend):
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


class SilentBackend(FakeBackend):
    """Nothing answers at that address: the core keeps retrying and says so."""

    async def run(self, emit):
        self.emit = emit
        self._closed = asyncio.Event()
        emit(ev.Connecting(self.address))
        emit(ev.ConnectionLost("no answer from the relay", 2.0))
        await self._closed.wait()
