"""Two chat apps talking through a real relay on loopback (udproom.protocol.net.runners)."""

from __future__ import annotations

from datetime import timezone

from udproom.protocol.net.runners import RelayClient, RelayServer
from udproom.protocol.relay import RelayConfig
from udproom.protocol.reliability import Timing
from udproom.tui.app import ChatApp


def timing() -> Timing:
    """Fast enough for a test, slack enough for a loaded 2-core machine."""
    return Timing(rto_initial=0.05, rto_min=0.02, rto_max=0.4, give_up=10.0, keepalive=0.2, timeout=1.5,
                  ack_delay=0.005, reconnect_min=0.05, reconnect_max=0.4)


async def until(pilots, condition, what, tries=600):
    for _ in range(tries):
        if condition():
            return
        for pilot in pilots:
            await pilot.pause(0.005)
    raise AssertionError(f"timed out waiting for {what}")


async def test_two_apps_through_a_real_relay():
    server = RelayServer("127.0.0.1:0", RelayConfig(timing=timing()))
    host, port = await server.start()
    address = f"{host}:{port}"
    alice_backend = RelayClient(address, "alice", ["lobby", "dev"], timing=timing())
    bob_backend = RelayClient(address, "bob", ["lobby", "dev"], timing=timing())
    alice = ChatApp(backend=alice_backend, tz=timezone.utc, save_config=False, bell=False)
    bob = ChatApp(backend=bob_backend, tz=timezone.utc, save_config=False, bell=False)
    try:
        async with alice.run_test(size=(120, 30)) as pa, bob.run_test(size=(120, 30)) as pb:
            pilots = (pa, pb)
            await until(pilots, lambda: alice.chat.state == "connected" and bob.chat.state == "connected",
                        "both connected")
            await until(pilots, lambda: "bob" in alice.chat.rooms.get("lobby", _NoRoom).members
                        and "bob" in alice.chat.rooms.get("dev", _NoRoom).members, "bob in alice's rooms")
            assert alice.chat.active == "lobby" and bob.chat.active == "lobby"

            # a message typed in one app appears in the other
            await pb.press(*"hi alice", "enter")
            await until(pilots, lambda: any(x.text == "hi alice" for x in alice.chat.rooms["lobby"].lines),
                        "message delivered")
            line = next(x for x in alice.chat.rooms["lobby"].lines if x.text == "hi alice")
            assert line.nick == "bob" and line.mention
            assert any("bob ┃ hi alice" in row for row in alice.messages.visible_text())
            await until(pilots, lambda: bob.chat.rooms["lobby"].lines[-1].state == 0, "bob's post acknowledged")
            assert sum(x.text == "hi alice" for x in bob.chat.rooms["lobby"].lines) == 1

            # switching rooms by key changes the messages and members shown
            await pb.press("alt+2")
            await pb.press(*"only in dev", "enter")
            await until(pilots, lambda: alice.chat.rooms["dev"].unread == 1, "unread in dev")
            assert "#dev" in alice.room_list.build().plain and "only in dev" not in "\n".join(
                alice.messages.visible_text())
            await pa.press(*"/join ops", "enter")
            await until(pilots, lambda: alice.chat.active == "ops", "alice in ops")
            assert "bob" not in alice.member_list.build().plain
            await pa.press("alt+2")
            assert alice.chat.active == "dev"
            assert any("only in dev" in row for row in alice.messages.visible_text())
            assert "bob" in alice.member_list.build().plain
            assert alice.chat.rooms["dev"].unread == 0

            # a member whose client stops (no goodbye) is shown as timed out
            bob_backend.protocol.transport.abort()
            await until(pilots, lambda: alice.chat.rooms["dev"].members.get("bob") is not None
                        and alice.chat.rooms["dev"].members["bob"].timed_out, "bob timed out", tries=2000)
            await pa.pause()
            assert "○ bob" in alice.member_list.build().plain
            assert any("bob timed out" in row for row in alice.messages.visible_text())
    finally:
        await server.stop()


class _NoRoom:
    members: dict = {}


async def test_two_apps_in_direct_mode():
    from udproom.tui.session import Spec, check

    ann = ChatApp(check(Spec("direct", "127.0.0.1:0", "ann", ["lobby"])), tz=timezone.utc,
                  save_config=False, bell=False)
    async with ann.run_test(size=(120, 30)) as pa:
        await until((pa,), lambda: ann.chat.share, "ann's address")
        assert "others join: 127.0.0.1:" in str(ann.query_one("#status").render())
        ben = ChatApp(check(Spec("direct", "127.0.0.1:0", "ben", ["lobby"], [ann.chat.share[0]])),
                      tz=timezone.utc, save_config=False, bell=False)
        async with ben.run_test(size=(120, 30)) as pb:
            pilots = (pa, pb)
            await until(pilots, lambda: "ben" in ann.chat.rooms.get("lobby", _NoRoom).members, "ben seen")
            await pb.press(*"hey ann", "enter")
            await until(pilots, lambda: any(x.text == "hey ann" for x in ann.chat.rooms["lobby"].lines),
                        "direct message delivered")
            await pb.press("ctrl+q")
            await until(pilots, lambda: not ben.is_running, "ben quit")
