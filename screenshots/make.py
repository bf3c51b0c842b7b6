"""Make the README screenshots from a real session:

    python screenshots/make.py

A real relay (udproom.protocol.net.runners.RelayServer) on 127.0.0.1, three members talking
through it as headless RelayClients (bob, carol, dave), and alice in the chat app (Textual,
headless, 120x32) whose screen is saved as SVG: the main screen with unread counts and a
mention, another room after Alt+2, the quick switcher, the help screen, and the connect screen.
dave's client is cut off without a goodbye, so the members pane shows him timed out.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from udproom.protocol.net.runners import RelayClient, RelayServer
from udproom.protocol.relay import RelayConfig
from udproom.protocol.reliability import Timing
from udproom.tui import config
from udproom.tui.app import ChatApp
from udproom.tui.screens import ConnectScreen, HelpScreen, QuickSwitcher

OUT = Path(__file__).resolve().parent
SIZE = (120, 32)


def timing() -> Timing:
    # quick presence so the timed-out member shows within seconds; the rest as shipped
    return Timing(keepalive=0.3, timeout=2.0, reconnect_min=0.2, reconnect_max=1.0)


async def wait(pilot, condition, what: str, tries: int = 1000) -> None:
    for _ in range(tries):
        if condition():
            return
        await pilot.pause(0.01)
    raise SystemExit(f"screenshots: timed out waiting for {what}")


async def settle(pilot, seconds: float = 0.3) -> None:
    await pilot.pause(seconds)


async def main() -> None:
    os.environ.setdefault("UDPROOM_CONFIG_DIR", str(OUT / ".config-unused"))
    # UDPROOM_SHOTS_PORT pins the port (shared machines); by default any free one
    server = RelayServer(
        f"127.0.0.1:{os.environ.get('UDPROOM_SHOTS_PORT', '0')}", RelayConfig(timing=timing())
    )
    host, port = await server.start()
    address = f"{host}:{port}"
    others = {
        "bob": RelayClient(address, "bob", ["lobby", "dev"], timing=timing()),
        "carol": RelayClient(address, "carol", ["lobby", "random"], timing=timing()),
        "dave": RelayClient(address, "dave", ["lobby", "ops", "dev"], timing=timing()),
    }
    tasks = [asyncio.create_task(c.run(lambda e: None)) for c in others.values()]
    bob, carol, dave = others["bob"], others["carol"], others["dave"]
    await asyncio.sleep(0.5)
    # history alice will get as backfill
    bob.post("lobby", "morning all — relay is up on the new box")
    carol.post("lobby", "nice, 250k datagrams/s on loopback here")
    dave.post("lobby", "I'll keep an eye on ops today")
    bob.set_topic("lobby", "udproom · be kind · release 0.1 on Friday")
    bob.set_topic("dev", "wire format v1 frozen; relay perf next")
    await asyncio.sleep(0.5)

    alice = RelayClient(address, "alice", ["lobby", "dev", "random", "ops"], timing=timing())
    app = ChatApp(backend=alice, save_config=False, bell=False)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait(pilot, lambda: len(app.chat.rooms) == 4, "alice's rooms")
            await settle(pilot)
            await pilot.press(*"hi all! the TUI batches updates now, typing stays smooth in a flood", "enter")
            await settle(pilot, 0.2)
            bob.post("lobby", "alice: nice — did you try the 5,000 msg/s flood?")
            await settle(pilot, 0.2)
            await pilot.press(*"yes: p95 keypress-to-screen under 50 ms", "enter")
            carol.post("lobby", "waves at everyone", action=True)
            carol.set_away("in a meeting")
            bob.post("dev", "pushed the ack-range fix")
            dave.post("dev", "reviewing now")
            bob.post("dev", "@alice can you check the reconnect path in the TUI?")
            carol.post("random", "lunch anyone?")
            carol.post("random", "the place with the dumplings")
            dave.post("ops", "relay CPU at 3% with 40 members")
            try:
                bob.post("@alice", "got a minute after standup?")
            except Exception as e:
                print("screenshots: no direct message:", e)
            await settle(pilot, 0.5)
            # dave's process dies: no goodbye
            dave.protocol.transport.abort()
            await wait(
                pilot,
                lambda: (m := app.chat.rooms["lobby"].members.get("dave")) is not None and m.timed_out,
                "dave timed out",
                tries=1000,
            )
            await settle(pilot)
            app.input.cursor_blink = False
            app.save_screenshot("main.svg", str(OUT))
            app.theme = "textual-light"  # the same screen in a light theme (--theme textual-light)
            await settle(pilot)
            app.save_screenshot("main-light.svg", str(OUT))
            app.theme = "tokyo-night"
            await settle(pilot)

            await pilot.press("alt+2")
            await settle(pilot)
            app.save_screenshot("room-dev.svg", str(OUT))

            await pilot.press("ctrl+k")
            await wait(pilot, lambda: isinstance(app.screen, QuickSwitcher), "switcher")
            app.screen.query_one("#switcher-input").cursor_blink = False
            await pilot.press("r")
            await settle(pilot, 0.1)
            app.save_screenshot("quick-switcher.svg", str(OUT))
            await pilot.press("escape")

            await pilot.press("f1")
            await wait(pilot, lambda: isinstance(app.screen, HelpScreen), "help")
            await settle(pilot, 0.1)
            app.save_screenshot("help.svg", str(OUT))
            await pilot.press("escape")

            await pilot.resize_terminal(72, 24)
            await pilot.press("alt+1")
            await settle(pilot)
            app.save_screenshot("narrow.svg", str(OUT))
            await pilot.press("ctrl+q")
    finally:
        for c in others.values():
            c.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.stop()

    cfg = config.Config(
        nick="alice", mode="join", recent=[address, "chat.example.org:6000"], rooms=["lobby", "dev"]
    )
    connect = ChatApp(config=cfg, save_config=False)
    async with connect.run_test(size=(100, 34)) as pilot:
        await wait(pilot, lambda: isinstance(connect.screen, ConnectScreen), "connect screen")
        for inp in connect.screen.query("Input"):
            inp.cursor_blink = False
        await settle(pilot, 0.1)
        connect.save_screenshot("connect.svg", str(OUT))
    print("wrote", ", ".join(sorted(p.name for p in OUT.glob("*.svg"))), "to", OUT)


if __name__ == "__main__":
    asyncio.run(main())
