"""Two chat apps talking through a real relay on loopback: alice hosts (the relay runs inside her
app, `udproom --host`), bob joins her address (`udproom --join`)."""

from __future__ import annotations

import os
from datetime import UTC

from udproom.protocol.reliability import Timing
from udproom.tui.app import ChatApp
from udproom.tui.session import Spec, check


def timing() -> Timing:
    """Fast enough for a test, slack enough for a loaded 2-core machine."""
    return Timing(
        rto_initial=0.05,
        rto_min=0.02,
        rto_max=0.4,
        give_up=10.0,
        keepalive=0.2,
        timeout=1.5,
        ack_delay=0.005,
        reconnect_min=0.05,
        reconnect_max=0.4,
    )


async def until(pilots, condition, what, tries=600):
    for _ in range(tries):
        if condition():
            return
        for pilot in pilots:
            await pilot.pause(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def app_for(mode, address, nick, rooms, peers=()):
    """An app as NICK, with NICK's own identity key (in the test's data directory): two apps of
    one test are two users, as keys decide who owns, operates and receives key shares."""
    identity = os.path.join(os.environ["UDPROOM_DATA_DIR"], f"identity-{nick}")
    return ChatApp(
        check(Spec(mode, address, nick, list(rooms), list(peers), identity)),
        tz=UTC,
        save_config=False,
        bell=False,
        timing=timing(),
    )


def members(app, room):
    r = app.chat.rooms.get(room)
    return r.members if r is not None else {}


def row_of(app, needle):
    rows = app.messages.visible_text()
    return next(i for i, t in enumerate(rows) if needle in t)


async def test_two_apps_through_a_real_relay():
    alice = app_for("host", "127.0.0.1:0", "alice", ["lobby", "dev"])
    async with alice.run_test(size=(120, 30)) as pa:
        await until(
            (pa,), lambda: alice.chat.state == "connected" and "lobby" in alice.chat.rooms, "alice hosting"
        )
        status = str(alice.query_one("#status").render())
        assert "others join: 127.0.0.1:" in status and "relay 127.0.0.1:" in status
        await pa.press(*"before bob came", "enter")
        await until(
            (pa,), lambda: alice.chat.rooms["lobby"].lines[-1].state == 0, "alice's post acknowledged"
        )

        bob = app_for("join", alice.chat.share[0], "bob", ["lobby", "dev"])
        async with bob.run_test(size=(120, 30)) as pb:
            pilots = (pa, pb)
            await until(pilots, lambda: bob.chat.state == "connected", "bob connected")
            await until(
                pilots,
                lambda: "bob" in members(alice, "lobby") and "bob" in members(alice, "dev"),
                "bob in alice's rooms",
            )
            assert alice.chat.active == "lobby" and bob.chat.active == "lobby"
            # what was said before bob joined is backfill: above his "you joined" line, dim
            await until(
                pilots,
                lambda: any(x.text == "before bob came" for x in bob.chat.rooms["lobby"].lines),
                "backfill",
            )
            assert row_of(bob, "before bob came") < row_of(bob, "you joined #lobby")
            assert next(x for x in bob.chat.rooms["lobby"].lines if x.text == "before bob came").history

            # a message typed in one app appears in the other
            await pb.press(*"hi alice", "enter")
            await until(
                pilots,
                lambda: any(x.text == "hi alice" for x in alice.chat.rooms["lobby"].lines),
                "message delivered",
            )
            line = next(x for x in alice.chat.rooms["lobby"].lines if x.text == "hi alice")
            assert line.nick == "bob" and line.mention and not line.history
            assert any("bob ┃ hi alice" in row for row in alice.messages.visible_text())
            await until(
                pilots, lambda: bob.chat.rooms["lobby"].lines[-1].state == 0, "bob's post acknowledged"
            )
            assert sum(x.text == "hi alice" for x in bob.chat.rooms["lobby"].lines) == 1
            assert row_of(bob, "you joined #lobby") < row_of(bob, "hi alice")

            # switching rooms by key changes the messages and members shown
            await pb.press("alt+2")
            await pb.press(*"only in dev", "enter")
            await until(pilots, lambda: alice.chat.rooms["dev"].unread == 1, "unread in dev")
            assert "#dev" in alice.room_list.build().plain and "only in dev" not in "\n".join(
                alice.messages.visible_text()
            )
            await pa.press(*"/join ops", "enter")
            await until(pilots, lambda: alice.chat.active == "ops", "alice in ops")
            assert "bob" not in alice.member_list.build().plain
            await pa.press("alt+2")
            assert alice.chat.active == "dev"
            assert any("only in dev" in row for row in alice.messages.visible_text())
            assert "bob" in alice.member_list.build().plain
            assert alice.chat.rooms["dev"].unread == 0

            # a member whose client stops (no goodbye) is shown as timed out
            bob.backend.protocol.transport.abort()
            await until(
                pilots,
                lambda: (
                    members(alice, "dev").get("bob") is not None and members(alice, "dev")["bob"].timed_out
                ),
                "bob timed out",
                tries=2000,
            )
            await pa.pause()
            assert "○ bob" in alice.member_list.build().plain
            assert any("bob timed out" in row for row in alice.messages.visible_text())


async def test_a_member_whose_process_is_killed_shows_as_timed_out():
    import asyncio
    import sys

    alice = app_for("host", "127.0.0.1:0", "alice", ["lobby"])
    async with alice.run_test(size=(120, 30)) as pa:
        await until(
            (pa,), lambda: alice.chat.state == "connected" and "lobby" in alice.chat.rooms, "alice hosting"
        )
        # a real `udproom listen` process; it keeps alive at the pace alice's relay asks for
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "udproom",
            "listen",
            "--join",
            alice.chat.share[0],
            "--room",
            "lobby",
            "--nick",
            "carol",
            "--timeout",
            "60",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await until((pa,), lambda: "carol" in members(alice, "lobby"), "carol joined", tries=3000)
            assert not members(alice, "lobby")["carol"].timed_out
            proc.kill()  # no goodbye: the process is simply gone
            await proc.wait()
            await until(
                (pa,), lambda: members(alice, "lobby")["carol"].timed_out, "carol timed out", tries=3000
            )
            await pa.pause()
            assert "○ carol" in alice.member_list.build().plain
            assert any("carol timed out" in row for row in alice.messages.visible_text())
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
