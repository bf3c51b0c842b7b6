"""Two chat apps in direct mode (no relay): PeerClient backends on loopback."""

from __future__ import annotations

from datetime import timezone

from udproom.protocol.net.peer import PeerClient
from udproom.protocol.reliability import Timing
from udproom.tui.app import ChatApp


async def until(pilots, condition, what, tries=1000):
    for _ in range(tries):
        if condition():
            return
        for pilot in pilots:
            await pilot.pause(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def _timing() -> Timing:
    t = Timing.fast()
    t.timeout = 3.0
    return t


def members(app, room):
    r = app.chat.rooms.get(room)
    return r.members if r is not None else {}


async def test_two_apps_in_direct_mode():
    alice_backend = PeerClient("127.0.0.1:0", [], "alice", ["lobby"], timing=_timing())
    bob_backend = PeerClient("127.0.0.1:0", [], "bob", ["lobby"], timing=_timing())
    alice = ChatApp(backend=alice_backend, tz=timezone.utc, save_config=False, bell=False)
    bob = ChatApp(backend=bob_backend, tz=timezone.utc, save_config=False, bell=False)
    async with alice.run_test(size=(120, 30)) as pa, bob.run_test(size=(120, 30)) as pb:
        pilots = (pa, pb)
        await until(pilots, lambda: alice_backend.running and bob_backend.running, "both bound")
        bob_backend.add_peer(alice_backend.address)
        await until(pilots, lambda: "bob" in members(alice, "lobby") and "alice" in members(bob, "lobby"),
                    "each in the other's member list")
        assert alice_backend.mode == "direct, 1 peer"

        await pb.press(*"hi alice", "enter")
        await until(pilots, lambda: any(x.text == "hi alice" for x in alice.chat.rooms["lobby"].lines),
                    "message delivered")
        line = next(x for x in alice.chat.rooms["lobby"].lines if x.text == "hi alice")
        assert line.nick == "bob"
        await until(pilots, lambda: bob.chat.rooms["lobby"].lines[-1].state == 0, "bob's post acknowledged")
        assert sum(x.text == "hi alice" for x in bob.chat.rooms["lobby"].lines) == 1

        # /msg goes straight to that peer
        await pa.press(*"/msg bob psst", "enter")
        await until(pilots, lambda: any(x.text == "psst" for r in bob.chat.rooms.values() if r.direct
                                        for x in r.lines), "direct message")

        # a peer that quits is shown leaving
        bob_backend.close()
        await until(pilots, lambda: "bob" not in members(alice, "lobby")
                    or members(alice, "lobby")["bob"].presence != "here", "bob gone")
