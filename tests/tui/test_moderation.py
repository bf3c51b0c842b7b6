"""Operators in the app (issue 11): the commands become the relay's requests, the relay's events
become room lines, and the members pane marks operators (@) and voiced members (+)."""

from __future__ import annotations

import pytest

from udproom.protocol import events as ev
from udproom.protocol import frames as F
from udproom.tui import commands

from .conftest import T0, make_app, ready, settle, texts, type_line


async def test_operator_commands_events_and_the_members_pane():
    app, backend = make_app(
        members={"lobby": [ev.Member("alice", mode="@"), ev.Member("bob"), ev.Member("carol", mode="+")]}
    )
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        pane = app.member_list.build().plain
        assert "@alice" in pane and "+carol" in pane and " bob" in pane and "@bob" not in pane
        await type_line(pilot, "/kick bob flooding the room")
        await type_line(pilot, "/mode +m")
        await type_line(pilot, "/ban X4DP 3744 zxv5-sanb-3py2-l2xu")
        await type_line(pilot, "/register")
        await settle(pilot, app)
        assert [c for c in backend.calls if c[0] == "moderate"] == [
            ("moderate", F.OP_KICK, "lobby", "bob flooding the room"),
            ("moderate", F.OP_MODE, "lobby", "+m"),
            ("moderate", F.OP_BAN, "lobby", "X4DP 3744 zxv5-sanb-3py2-l2xu"),
            ("moderate", F.OP_REGISTER, "", ""),
        ]
        backend.inject(ev.RoomModerated("lobby", 60, "alice", "op", "bob", "", T0))
        backend.inject(ev.RoomModerated("lobby", 61, "alice", "devoice", "carol", "", T0))
        await settle(pilot, app)
        pane = app.member_list.build().plain
        assert "@bob" in pane and "+carol" not in pane
        shown = "\n".join(texts(app))
        assert "alice gave op to bob" in shown and "alice took voice from carol" in shown
        backend.inject(ev.RoomModerated("lobby", 62, "alice", "kick", "carol", "spam", T0))
        await settle(pilot, app)
        assert "carol" not in app.member_list.build().plain
        assert "alice kicked carol (spam)" in "\n".join(texts(app))
        backend.inject(ev.Kicked("dev", "root", "go away"))
        await settle(pilot, app)
        assert "dev" not in app.chat.rooms
        assert any("you were put out of #dev by root: go away" in t for t in texts(app))


@pytest.mark.parametrize(
    "line",
    ["/kick", "/op", "/op a b", "/mode", "/mode i", "/mode +i +t", "/ban", "/invite @", "/voice a\x07"],
)
def test_bad_operator_commands_are_one_line_usage_errors(line):
    with pytest.raises(commands.CommandError) as got:
        commands.parse(line)
    assert "\n" not in str(got.value) and str(got.value)
