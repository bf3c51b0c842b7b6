"""The small interface the TUI (and the headless commands) use to talk to a room.

The app never sees the wire: it calls these methods and receives `udproom.protocol.events`
objects through the `emit` callback it passed to `run`. Implementations:
`udproom.protocol.net.runners.RelayClient` (relay mode, also used by `--host` with an embedded
relay) and `udproom.protocol.net.peer.PeerClient` (direct mode).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .events import Event


class Backend(Protocol):
    #: e.g. "relay 127.0.0.1:6000" or "direct, 4 peers"; the status line shows it.
    @property
    def mode(self) -> str: ...

    @property
    def nick(self) -> str: ...

    async def run(self, emit: Callable[[Event], None]) -> None:
        """Connect and run until `close()`; every event goes to `emit` (on the running loop)."""

    def join(self, room: str) -> None: ...

    def part(self, room: str) -> None: ...

    def post(self, room: str, text: str, action: bool = False) -> int:
        """Queue a message (or /me action) for `room` ('@nick' = a direct message).

        Returns a local id that later `PostAcknowledged` / `PostFailed` events name.
        Raises `udproom.protocol.names.InputError` (or `OutboxFull`) with a one-line reason.
        """

    def retry(self, local_id: int) -> int:
        """Send a failed post again; returns its new local id."""

    def set_nick(self, nick: str) -> None: ...

    def set_topic(self, room: str, topic: str) -> None: ...

    def set_away(self, message: str) -> None:
        """'' = back."""

    def moderate(self, op: int, room: str, text: str) -> None:
        """A moderation request (frames.MODERATION_OPS: register, kick, ban, mode...)."""

    def close(self) -> None:
        """Leave every room politely and make `run` return."""

    def page_back(self, room: str, before: int, limit: int) -> None:
        """Ask for up to `limit` events of `room` older than sequence `before`; the answer comes as
        one `HistoryPage` event (possibly empty, `complete` when nothing older exists)."""


class OutboxFull(RuntimeError):
    """Too many posts waiting for acknowledgement; str() says so in one line."""
