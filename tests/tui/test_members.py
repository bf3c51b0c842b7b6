"""The members pane and presence: direct conversations, timed-out members."""

from __future__ import annotations

from udproom.protocol import events as ev
from udproom.tui.screens import QuickSwitcher

from .conftest import T0, make_app, ready, settle, texts, type_line, until


async def test_direct_conversation_shows_what_we_know_of_the_other_person():

    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await type_line(pilot, "/msg nosuchnick")
        await settle(pilot, app)
        members = app.member_list.build().plain
        assert "MEMBERS 1/2" in members and "? nosuchnick" in members and "not seen in any of" in members
        await type_line(pilot, "/msg carol")
        await settle(pilot, app)
        assert "◐ carol" in app.member_list.build().plain  # away in #lobby
        await type_line(pilot, "/msg bob")
        await settle(pilot, app)
        assert "● bob" in app.member_list.build().plain and "MEMBERS 2/2" in app.member_list.build().plain
        await pilot.press("ctrl+k")
        await until(pilot, lambda: isinstance(app.screen, QuickSwitcher), "switcher")
        options = [str(o.id) for o in app.screen.matches("@ca")]
        assert "new:@carol" not in options  # already open: offered as a room
        assert "room:@carol" in options
        app.screen.nicks.append("bobby")
        options = [str(o.id) for o in app.screen.matches("@da")]
        assert options[0] == "new:@dave" and "new:@da" in options


async def test_timed_out_members_leave_completion_and_later_the_pane():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        app.input.value = "da"
        app.input.cursor_position = 2
        await pilot.press("tab")
        assert app.input.value == "da"  # dave timed out: not offered
        backend.inject(ev.MemberTimedOut("lobby", 50, "bob", T0 - 601))
        await settle(pilot, app)
        assert "○ bob" in app.member_list.build().plain
        app.tick()
        await pilot.pause()
        members = app.member_list.build().plain
        assert "bob" not in members and "○ dave" in members  # dave timed out just now (at join)
        backend.inject(ev.MemberJoined("lobby", 51, "bob", T0))
        await settle(pilot, app)
        assert "● bob" in app.member_list.build().plain


async def test_presence_changes_in_members_pane():
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        backend.inject(ev.MemberJoined("lobby", 50, "erin", T0))
        backend.inject(ev.MemberTimedOut("lobby", 51, "bob", T0))
        backend.inject(ev.MemberLeft("lobby", 52, "carol", T0, "bye"))
        backend.inject(ev.NickChanged("lobby", 53, "erin", "erin2", T0))
        await settle(pilot, app)
        members = app.member_list.build().plain
        assert "● erin2" in members and "○ bob" in members and "carol" not in members
        rows = texts(app)
        assert rows[-4].endswith("--> │ erin joined")
        assert rows[-3].endswith("--x │ bob timed out")
        assert rows[-2].endswith("<-- │ carol left (bye)")
        assert rows[-1].endswith("-- │ erin is now known as erin2")


async def test_a_members_detail_shows_their_key_fingerprint_on_hover():
    """Hovering a member's row shows their detail: presence or away message and the short
    fingerprint of their key, the one /whois shows (what the backend's `key_of` knows)."""
    from udproom.protocol.crypto import Identity

    bob = Identity.generate()
    app, backend = make_app()
    backend.key_of = lambda room, nick: bob.public if nick == "bob" else None
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        pane = app.member_list

        async def hover(nick: str):
            row = pane._keys.index(nick)
            dx, dy = pane.content_region.x - pane.region.x, pane.content_region.y - pane.region.y
            await pilot.hover(pane, offset=(dx + 3, dy + row))
            await pilot.pause()
            return pane.tooltip.plain if pane.tooltip is not None else None

        detail = await hover("bob")
        assert detail is not None and f"key {bob.fingerprint}" in detail.splitlines()
        assert detail.splitlines()[:2] == ["bob", "here"]
        detail = await hover("carol")
        assert detail.splitlines()[0] == "carol" and detail.splitlines()[1].startswith("away")
        assert "key not known" in detail.splitlines() and bob.fingerprint not in detail
        await pilot.hover(pane, offset=(1, 0))  # the heading: no member, no detail
        await pilot.pause()
        assert pane.tooltip is None
