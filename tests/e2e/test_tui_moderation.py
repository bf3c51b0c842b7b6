"""Operators in two real apps through a real relay (issue 11): alice hosts, registers her nick,
makes #ops (so owns it), and kicks bob, whose app then shows he is out."""

from __future__ import annotations

from .test_tui_e2e import app_for, members, until


async def test_an_owner_kicks_a_member_through_a_real_relay():
    alice = app_for("host", "127.0.0.1:0", "alice", ["lobby"])
    async with alice.run_test(size=(120, 30)) as pa:
        await until((pa,), lambda: alice.chat.state == "connected", "alice hosting")
        await pa.press(*"/register", "enter")
        await until(
            (pa,),
            lambda: any(
                "registered to your key" in x.text for r in alice.chat.rooms.values() for x in r.lines
            ),
            "registered",
        )
        await pa.press(*"/join ops", "enter")
        await until((pa,), lambda: alice.chat.active == "ops", "alice in ops")
        assert "@alice" in alice.member_list.build().plain  # she made it with a registered nick

        bob = app_for("join", alice.chat.share[0], "bob", ["ops"])
        async with bob.run_test(size=(120, 30)) as pb:
            pilots = (pa, pb)
            await until(pilots, lambda: "bob" in members(alice, "ops"), "bob in ops")
            await until(
                pilots, lambda: "ops" in bob.chat.rooms and bob.chat.rooms["ops"].joined, "bob joined"
            )
            await pb.press(*"/kick alice", "enter")  # bob is no operator: refused, nothing changes
            await until(
                pilots,
                lambda: any("you are not an operator of #ops" in t for t in bob.messages.visible_text()),
                "refusal",
            )
            assert "alice" in members(bob, "ops")
            await pa.press(*"/kick bob off you go", "enter")
            await until(pilots, lambda: "ops" not in bob.chat.rooms, "bob out of ops")
            await pb.pause()
            assert any(
                "you were put out of #ops by alice: off you go" in t for t in bob.messages.visible_text()
            )
            await until(pilots, lambda: "bob" not in members(alice, "ops"), "bob gone from alice's pane")
            assert any("alice kicked bob (off you go)" in t for t in alice.messages.visible_text())
