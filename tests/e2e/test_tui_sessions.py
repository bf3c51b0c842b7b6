"""Issue 9, sessions and connections, through a real relay on 127.0.0.1 (each failed before its fix)."""

from __future__ import annotations

import socket
from contextlib import asynccontextmanager

from udproom.protocol.net import runners
from udproom.tui import model as m
from udproom.tui import screens

from .test_tui_e2e import app_for, members, until


def lines(app, room):
    return list(app.chat.rooms[room].lines)


@asynccontextmanager
async def alice_hosting_with_bob():
    """alice hosts #lobby in her app, bob's app joins it: (alice, bob, alice's pilot, bob's)."""
    alice = app_for("host", "127.0.0.1:0", "alice", ["lobby"])
    async with alice.run_test(size=(120, 30)) as pa:
        await until((pa,), lambda: "lobby" in alice.chat.rooms, "alice hosting")
        bob = app_for("join", alice.chat.share[0], "bob", ["lobby"])
        async with bob.run_test(size=(120, 30)) as pb:
            await until((pa, pb), lambda: "bob" in members(alice, "lobby"), "bob joined")
            yield alice, bob, pa, pb


async def test_a_direct_conversation_follows_a_nick_change():
    """Defect 6: after bob's /nick robert, alice's @bob becomes @robert (same history, a
    "bob is now known as robert" line) and writing there reaches him."""
    async with alice_hosting_with_bob() as (alice, bob, pa, pb):
        pilots = (pa, pb)
        await pa.press(*"/msg bob hi bob", "enter")
        await until(pilots, lambda: "@alice" in bob.chat.rooms, "bob got the message")
        await pb.press(*"/nick robert", "enter")
        await until(pilots, lambda: "robert" in members(alice, "lobby"), "renamed")
        await pb.press("alt+2")
        assert bob.chat.active == "@alice"
        await pb.press(*"hello again", "enter")
        await until(
            pilots,
            lambda: any(x.text == "hello again" for r in alice.chat.rooms.values() for x in r.lines),
            "the reply",
        )
        assert "@bob" not in alice.chat.rooms
        assert [r for r in alice.chat.rooms if r.startswith("@")] == ["@robert"]
        texts = [(x.kind, x.nick, x.text) for x in lines(alice, "@robert")]
        hi = texts.index((m.MSG, "alice", "hi bob"))
        renamed = texts.index((m.NICK, "bob", "robert"))
        assert hi < renamed < texts.index((m.MSG, "robert", "hello again"))
        assert alice.chat.active == "@robert"
        assert "? robert" not in alice.member_list.build().plain  # present: seen in #lobby
        await pa.press(*"got it", "enter")
        await until(pilots, lambda: any(x.text == "got it" for x in lines(bob, "@alice")), "alice's answer")
        await until(pilots, lambda: lines(alice, "@robert")[-1].state == m.SENT, "acknowledged")
        assert not any("not delivered" in x.text for x in lines(alice, "@robert"))


async def test_connect_keeps_the_session_until_the_new_relay_answers_and_takes_every_room():
    """Defect 7: /connect to a dead address keeps the working session; to a live one, every open
    room comes along."""
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))  # nothing answers here (and nothing else can take the port)
    other = runners.RelayServer("127.0.0.1:0")
    await other.start()
    try:
        alice = app_for("host", "127.0.0.1:0", "alice", ["lobby", "dev"])
        async with alice.run_test(size=(120, 30)) as pa:
            await until((pa,), lambda: "dev" in alice.chat.rooms, "alice hosting")
            await pa.press(*"/join qa", "enter")
            await until((pa,), lambda: alice.chat.active == "qa", "in #qa")
            await pa.press("alt+2")
            working = alice.backend
            await pa.press(*f"/connect! 127.0.0.1:{dead.getsockname()[1]}", "enter")
            await until(
                (pa,),
                lambda: any("no answer from a relay at" in x.text for x in alice.chat.current.lines),
                "the dead address reported",
                tries=3000,
            )
            assert alice.backend is working and alice.chat.state == "connected"
            assert list(alice.chat.rooms) == ["lobby", "dev", "qa"] and alice.chat.active == "dev"
            assert "still on the current connection" in alice.chat.current.lines[-1].text
            await pa.press(*"still here", "enter")
            await until((pa,), lambda: lines(alice, "dev")[-1].state == m.SENT, "the old session works")

            await pa.press(*f"/connect! 127.0.0.1:{other.port}", "enter")
            await until(
                (pa,),
                lambda: alice.backend is not working and {"lobby", "dev", "qa"} <= set(alice.chat.rooms),
                "every room on the new relay",
                tries=3000,
            )
            await until((pa,), lambda: alice.chat.active == "dev", "back in the room on screen")
            assert alice.chat.mode == f"relay 127.0.0.1:{other.port}"
            assert set(other.relay.sessions) and all(
                {"lobby", "dev", "qa"} <= set(s.rooms) for s in other.relay.sessions.values()
            )
    finally:
        dead.close()
        await other.stop()


async def test_quit_while_hosting_asks_and_says_who_is_cut_off():
    """Defect 13: Ctrl+Q or /quit on the host asks first and names who will be disconnected."""
    async with alice_hosting_with_bob() as (alice, bob, pa, pb):
        pilots = (pa, pb)
        await pa.press("ctrl+q")
        await until(pilots, lambda: isinstance(alice.screen, screens.ConfirmQuit), "asked")
        said = " ".join(str(w.render()) for w in alice.screen.query("Static"))
        assert "disconnects 1 person (bob)" in said
        await pa.press("escape")
        await until(pilots, lambda: not isinstance(alice.screen, screens.ConfirmQuit), "stayed")
        assert alice.is_running and bob.chat.state == "connected"
        await pa.press(*"/quit", "enter")
        await until(pilots, lambda: isinstance(alice.screen, screens.ConfirmQuit), "asked again")
        await pa.press("enter")
        await until(pilots, lambda: not alice.is_running, "alice quit")
        await until(pilots, lambda: bob.chat.state != "connected", "bob cut off", tries=3000)


async def test_msg_to_a_nick_nobody_has_says_so_at_once():
    """Rough edge: the relay answers "no one called nobodyhere is here": say it, open nothing,
    offer no retry."""
    alice = app_for("host", "127.0.0.1:0", "alice", ["lobby"])
    async with alice.run_test(size=(120, 30)) as pa:
        await until((pa,), lambda: "lobby" in alice.chat.rooms, "alice hosting")
        await pa.press(*"/msg nobodyhere hi", "enter")
        await until(
            (pa,),
            lambda: any("no one called nobodyhere is here" in x.text for x in lines(alice, "lobby")),
            "the relay's answer",
        )
        assert "@nobodyhere" not in alice.chat.rooms and alice.chat.active == "lobby"
        assert lines(alice, "lobby")[-1].text == "no one called nobodyhere is here: nothing was sent"
        assert not alice.chat.pending


async def test_a_dying_relay_is_one_notice_and_presence_unknown_until_it_is_back():
    """Defect 9: the relay dies; bob keeps retrying: one notice that updates, '?' for everyone;
    a relay on that address again (the same relay: its key) the notice says it is back, presence
    is real again."""
    from udproom.protocol.crypto import Identity
    from udproom.protocol.relay import RelayConfig

    key = Identity.generate()
    relay = runners.RelayServer("127.0.0.1:0", RelayConfig(identity=key))
    await relay.start()
    port = relay.port
    bob = app_for("join", f"127.0.0.1:{port}", "bob", ["lobby", "dev"])
    try:
        async with bob.run_test(size=(120, 30)) as pb:
            await until((pb,), lambda: "dev" in bob.chat.rooms and bob.chat.state == "connected", "bob in")
            before = sum(len(r.lines) for r in bob.chat.rooms.values())
            relay.protocol.transport.abort()  # killed: no goodbye
            relay.protocol = None
            await until((pb,), lambda: bob.backend.core._reconnects >= 3, "several retries", tries=6000)
            await pb.pause()
            added = [x for r in bob.chat.rooms.values() for x in list(r.lines)]
            assert sum(len(r.lines) for r in bob.chat.rooms.values()) == before + 1
            notice = next(x for x in added if "connection lost" in x.text)
            assert "retrying in" in notice.text
            assert "MEMBERS ?/1" in bob.member_list.build().plain
            relay = runners.RelayServer(f"127.0.0.1:{port}", RelayConfig(identity=key))
            await relay.start()
            await until((pb,), lambda: bob.chat.state == "connected", "back", tries=6000)
            await until((pb,), lambda: "back after" in notice.text, "the notice says so")
            await until((pb,), lambda: "● bob" in bob.member_list.build().plain, "presence known again")
    finally:
        await relay.stop()
