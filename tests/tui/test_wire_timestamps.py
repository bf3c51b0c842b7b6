"""Timestamps are numbers from the network: NaN, infinities, 1e20 or negative ones must never
raise in the model or the app (issue 7, item 8: `day_of` raised in `_flush` and ended the app)."""

from __future__ import annotations

import math
from datetime import UTC

from udproom.protocol import events as ev
from udproom.tui import model as m

from .conftest import T0, make_app, ready, settle, texts

BAD = [math.nan, math.inf, -math.inf, 1e20, -1e20, -1.0, 1e308]


def test_the_model_takes_any_timestamp():
    chat = m.ChatModel("alice", tz=UTC, clock=lambda: T0)
    chat.apply(ev.RoomJoined("lobby", "alice", (ev.Member("alice"), ev.Member("bob"))))
    for k, ts in enumerate(BAD):
        chat.apply(ev.MessageReceived("lobby", k, "bob", f"m{k}", ts))
        chat.apply(ev.MessageReceived("lobby", k, "bob", f"h{k}", ts, history=True))
        chat.apply(ev.MemberTimedOut("lobby", k, "bob", ts))
        chat.apply(ev.MemberJoined("lobby", k, "carol", ts))
    lines = chat.rooms["lobby"].lines
    assert {x.text for x in lines} >= {f"m{k}" for k in range(len(BAD))}
    for x in lines:
        assert math.isfinite(x.ts) and math.isfinite(x.day)
    chat.forget_timed_out(T0 + 10**6)  # a NaN time-out time would never be forgotten
    assert "bob" not in chat.rooms["lobby"].members


async def test_the_app_survives_any_timestamp():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        backend.inject(ev.RoomJoined("music", "alice", (ev.Member("alice"), ev.Member("bob"))))
        for k, ts in enumerate(BAD):
            backend.inject(ev.MessageReceived("music", k, "bob", f"odd time {k}", ts))
        await settle(pilot, app)
        await pilot.press("alt+4")
        await settle(pilot, app)
        assert app.chat.active == "music"
        rows = "\n".join(texts(app))
        assert all(f"odd time {k}" in rows for k in range(len(BAD)))


def test_a_live_stamp_from_the_network_cannot_move_a_line_far_up():
    """Direct mode places lines by their Lamport stamp: a stamp of 0 on a live message must not
    send it to the top of a full scrollback (issue 7, item 8)."""
    chat = m.ChatModel("alice", tz=UTC, clock=lambda: T0)
    chat.stamp_order = True
    chat.apply(ev.RoomJoined("lobby", "alice", (ev.Member("alice"),)))
    for k in range(m.SCROLLBACK):
        chat.apply(ev.MessageReceived("lobby", 1000 + k, "bob", f"m{k}", T0))
    chat.apply(ev.MessageReceived("lobby", 0, "mallory", "first!", T0))
    lines = list(chat.rooms["lobby"].lines)
    (at,) = [i for i, x in enumerate(lines) if x.text == "first!"]
    assert len(lines) - 1 - at <= m.LIVE_REORDER
