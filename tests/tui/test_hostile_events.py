"""Whatever the network makes a core emit, the app takes it: no event, in any order and with any
values (hostile strings, NaN/inf/huge numbers, unknown rooms, rooms named like conversations), may
raise in the model or on the screen (issue 7: "no exception escapes a core or the app").

The cores already validate what they emit; this checks the app does not rely on it."""

from __future__ import annotations

import math
import random
from dataclasses import fields
from datetime import UTC

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from udproom.protocol import events as ev
from udproom.tui import model as m

from ..protocol.adversary import floats, ints, texts
from .conftest import T0, make_app, ready, settle

ROOMS = ["lobby", "dev", "@bob", "@alice", "", "#lobby", "LOBBY", "@", "\x1b[2J"]
NICKS = ["alice", "bob", "ALICE", "\u0430lice", "", "x" * 60, "bob\x9b31m", "@bob"]


def _value(name: str, tp: str) -> st.SearchStrategy:
    if name == "room":
        return st.one_of(st.sampled_from(ROOMS), texts(64))
    if name in ("nick", "old", "new"):
        return st.one_of(st.sampled_from(NICKS), texts(64))
    if tp == "str":
        return texts(1200)
    if tp == "int":
        return ints()
    if tp in ("float", "float | None"):
        return floats()
    if tp == "bool":
        return st.booleans()
    if tp == "bytes":
        return st.binary(max_size=64)
    if tp == "Signed | None":
        sizes = st.one_of(
            st.binary(max_size=80), st.binary(min_size=32, max_size=32), st.binary(min_size=64, max_size=64)
        )
        return st.one_of(st.none(), st.builds(ev.Signed, ints(), floats(), sizes, sizes))
    if tp.startswith("tuple[Member"):
        member = st.builds(ev.Member, st.one_of(st.sampled_from(NICKS), texts(40)), texts(200), st.booleans())
        return st.lists(member, max_size=8).map(tuple)
    raise TypeError(f"no strategy for {name}: {tp}")


EVENT_TYPES = [
    ev.Connecting,
    ev.Connected,
    ev.RttUpdated,
    ev.ConnectionStalled,
    ev.ConnectionResumed,
    ev.ConnectionLost,
    ev.RoomJoined,
    ev.RoomLeft,
    ev.RequestRefused,
    *ev.ROOM_EVENTS,
    ev.PostAcknowledged,
    ev.PostFailed,
    ev.Notice,
]


def events() -> st.SearchStrategy:
    return st.one_of(
        *(st.builds(t, **{f.name: _value(f.name, str(f.type)) for f in fields(t)}) for t in EVENT_TYPES)
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events(), min_size=1, max_size=40))
def test_the_model_takes_any_sequence_of_events(batch):
    chat = m.ChatModel("alice", tz=UTC, clock=lambda: T0)
    chat.apply(ev.RoomJoined("lobby", "alice", (ev.Member("alice"), ev.Member("bob"))))
    for e in batch:
        chat.apply(e)
        chat.take_changes()
    for room in chat.rooms.values():
        assert len(room.lines) <= m.SCROLLBACK
        for line in room.lines:
            assert math.isfinite(line.ts)
    chat.forget_timed_out(T0 + 10**7)


def _random_event(rng: random.Random):
    """A seeded stand-in for the hypothesis strategy, for the running app (one app, many events)."""
    t = rng.choice(EVENT_TYPES)
    kw = {}
    for f in fields(t):
        tp = str(f.type)
        if f.name == "room":
            kw[f.name] = rng.choice([*ROOMS, "music"])
        elif f.name in ("nick", "old", "new"):
            kw[f.name] = rng.choice(NICKS)
        elif tp == "str":
            kw[f.name] = rng.choice(["hi", "\x1b]0;pwned\x07", "\u202eevil", "t\tab", "é" * 600, ""])
        elif tp == "int":
            kw[f.name] = rng.choice([0, -1, 1, 2**63 - 1, -(2**63), 2**64 - 1, rng.randrange(10**6)])
        elif tp in ("float", "float | None"):
            kw[f.name] = rng.choice([math.nan, math.inf, -math.inf, 1e20, -1.0, 0.0, T0])
        elif tp == "bool":
            kw[f.name] = rng.random() < 0.5
        elif tp == "Signed | None":
            sig = rng.choice([b"", b"\0" * 64, b"\xff" * 65])
            kw[f.name] = rng.choice([None, ev.Signed(rng.choice([0, 1, 1 << 64]), math.nan, sig, b"k" * 32)])
        else:
            kw[f.name] = tuple(ev.Member(rng.choice(NICKS), rng.choice(["", "lunch"])) for _ in range(3))
    return t(**kw)


async def test_the_running_app_takes_hostile_events_and_still_works():
    app, backend = make_app()
    rng = random.Random(7)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot, app, backend)
        for _round in range(6):
            for _ in range(60):
                backend.inject(_random_event(rng))
            await settle(pilot, app)
            await pilot.press("alt+1", "alt+2", "ctrl+k", "escape", "f3", "f3")
            await settle(pilot, app)
        # still alive and usable: a line typed now is posted and shown
        await pilot.press("alt+1")
        await pilot.press(*"still here")
        await pilot.press("enter")
        await settle(pilot, app)
        assert any(line.text == "still here" for line in app.chat.current.lines)
        assert app.is_running


async def test_a_connection_lost_with_any_retry_delay_is_counted_down_without_raising():
    """`ConnectionLost.retry_in` of any number (the status line counts it down in whole seconds):
    infinite, NaN, negative or huge, the app shows the outage and keeps running."""
    app, backend = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot, app, backend)
        for delay in (math.inf, -math.inf, math.nan, 1e300, 10**30, -5.0):
            backend.inject(ev.ConnectionLost("no answer", delay))
            await settle(pilot, app)
            assert app.chat.retry_at is not None and math.isfinite(app.chat.retry_at)
            backend.inject(ev.Connected("127.0.0.1:6000", "alice"))
            await settle(pilot, app)
        assert app.is_running
