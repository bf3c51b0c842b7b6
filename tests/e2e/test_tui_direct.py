"""Two chat apps in direct mode (no relay): `udproom --listen ... [--peer ...]` on loopback."""

from __future__ import annotations

import os
from pathlib import Path

from udproom.tui.app import ChatApp

from .test_tui_e2e import app_for, members, until


def status(app: ChatApp) -> str:
    return str(app.query_one("#status").render())


def order(app: ChatApp, room: str = "lobby") -> list[tuple[str, str]]:
    return [(x.nick, x.text) for x in app.chat.rooms[room].lines if x.kind <= 1]


async def linked(pilots, a: ChatApp, b: ChatApp) -> None:
    """Until each is in the other's member list of #lobby."""
    await until(
        pilots,
        lambda: b.chat.nick in members(a, "lobby") and a.chat.nick in members(b, "lobby"),
        "each in the other's member list",
    )


async def both_talk(pilots, ann: ChatApp, ben: ChatApp, n: int, before: int = 0, tries: int = 600) -> None:
    """Each posts n lines at once (before seeing the other's); wait until both apps show all of them
    (and the `before` lines they had) and everything is acknowledged."""
    for i in range(n):
        ann.send(f"ann {i}")
        ben.send(f"ben {i}")
    total = before + 2 * n
    await until(
        pilots,
        lambda: (
            len(order(ann)) == total
            and len(order(ben)) == total
            and not ann.chat.pending
            and not ben.chat.pending
        ),
        "all delivered and acknowledged",
        tries,
    )


async def test_two_apps_in_direct_mode():
    ann = app_for("direct", "127.0.0.1:0", "ann", ["lobby"])
    async with ann.run_test(size=(140, 30)) as pa:
        await until((pa,), lambda: ann.chat.share, "ann's address")
        assert "direct, 0 peers" in status(ann) and "others peer with: 127.0.0.1:" in status(ann)
        ben = app_for("direct", "127.0.0.1:0", "ben", ["lobby"], peers=[ann.chat.share[0]])
        async with ben.run_test(size=(140, 30)) as pb:
            pilots = (pa, pb)
            await linked(pilots, ann, ben)
            # the status line follows the peer count
            await until(
                pilots,
                lambda: "direct, 1 peer" in status(ann) and "direct, 1 peer" in status(ben),
                "status: 1 peer",
            )

            await pb.press(*"hi ann", "enter")
            await until(
                pilots,
                lambda: any(x.text == "hi ann" for x in ann.chat.rooms["lobby"].lines),
                "message delivered",
            )
            line = next(x for x in ann.chat.rooms["lobby"].lines if x.text == "hi ann")
            assert line.nick == "ben"
            await until(
                pilots, lambda: ben.chat.rooms["lobby"].lines[-1].state == 0, "ben's post acknowledged"
            )
            assert sum(x.text == "hi ann" for x in ben.chat.rooms["lobby"].lines) == 1

            # both talk at once (each posts before seeing the other's lines): each app first shows
            # its own lines where they were typed and the other's as they arrive; once everything
            # is acknowledged both show the same (Lamport stamp, nick) order
            await both_talk(pilots, ann, ben, 4, before=1)
            assert order(ann) == order(ben)
            assert [t for n, t in order(ann) if n == "ann"] == [f"ann {i}" for i in range(4)]

            # /msg goes straight to that peer
            await pa.press(*"/msg ben psst", "enter")
            await until(
                pilots,
                lambda: any(x.text == "psst" for r in ben.chat.rooms.values() if r.direct for x in r.lines),
                "direct message",
            )

            # a peer that quits is shown leaving, and the peer count drops
            await pb.press("ctrl+q")
            await until(pilots, lambda: not ben.is_running, "ben quit")
        await until(
            (pa,),
            lambda: "ben" not in members(ann, "lobby") or members(ann, "lobby")["ben"].presence != "here",
            "ben gone",
        )
        await until((pa,), lambda: "direct, 0 peers" in status(ann), "status: 0 peers")


async def test_a_known_nick_with_another_key_gets_a_room_line(monkeypatch, tmp_path):
    """Each app proves the identity key in its own data directory. ann meets ben; ben quits;
    someone else (another key file) comes as ben: ann's #lobby says ben's key changed, naming
    both fingerprints; the first ben's key stays pinned in ann's known_peers.toml."""
    from udproom.protocol import crypto, paths
    from udproom.protocol.pins import KeyPins

    def home(name: str) -> None:  # read when the app starts its direct-mode peer
        monkeypatch.setenv("UDPROOM_DATA_DIR", str(tmp_path / name / "data"))
        monkeypatch.setenv("UDPROOM_CONFIG_DIR", str(tmp_path / name / "config"))

    home("ann")
    ann = app_for("direct", "127.0.0.1:0", "ann", ["lobby"])
    async with ann.run_test(size=(140, 30)) as pa:
        await until((pa,), lambda: ann.chat.share, "ann's address")
        keys = []
        for who in ("ben-1", "ben-2"):
            home(who)
            ben = app_for("direct", "127.0.0.1:0", "ben", ["lobby"], peers=[ann.chat.share[0]])
            async with ben.run_test(size=(140, 30)) as pb:
                await until(
                    (pa, pb),
                    lambda: (
                        "ben" in members(ann, "lobby") and members(ann, "lobby")["ben"].presence == "here"
                    ),
                    f"{who} in ann's room",
                )
                keys.append(
                    crypto.load_identity(Path(os.environ["UDPROOM_DATA_DIR"]) / "identity-ben")
                )  # (app_for)
                await pb.press("ctrl+q")
                await until((pa, pb), lambda b=ben: not b.is_running, f"{who} quit")
            await until(
                (pa,),
                lambda: "ben" not in members(ann, "lobby") or members(ann, "lobby")["ben"].presence != "here",
                f"{who} gone",
            )
        said = [x.text for x in ann.chat.rooms["lobby"].lines if "key changed" in x.text]
        assert keys[0].public != keys[1].public
        assert len(said) == 1 and keys[0].fingerprint in said[0] and keys[1].fingerprint in said[0]
        pins = KeyPins.load(tmp_path / "ann" / "config" / paths.KNOWN_PEERS_FILE)
        assert pins.get("ben") == keys[0].fingerprint


async def test_a_direct_peer_restarted_on_its_log_gives_a_new_joiner_the_history(monkeypatch, tmp_path):
    """Issue 10, direct mode: ann and ben chat, both quit; ann starts again on her log (her own
    data directory) and cat, new, joins through her: cat shows the lines from before ann's
    restart once, in the room's order, then ann's new line after them."""
    monkeypatch.setenv("UDPROOM_DATA_DIR", str(tmp_path / "ann"))
    ann = app_for("direct", "127.0.0.1:0", "ann", ["lobby"])
    async with ann.run_test(size=(140, 30)) as pa:
        await until((pa,), lambda: ann.chat.share, "ann's address")
        monkeypatch.setenv("UDPROOM_DATA_DIR", str(tmp_path / "ben"))
        ben = app_for("direct", "127.0.0.1:0", "ben", ["lobby"], peers=[ann.chat.share[0]])
        async with ben.run_test(size=(140, 30)) as pb:
            pilots = (pa, pb)
            await linked(pilots, ann, ben)
            await both_talk(pilots, ann, ben, 3, tries=3000)
            before = order(ann)
            await pb.press("ctrl+q")
            await until(pilots, lambda: not ben.is_running, "ben quit")
        await pa.press("ctrl+q")
        await until((pa,), lambda: not ann.is_running, "ann quit")

    monkeypatch.setenv("UDPROOM_DATA_DIR", str(tmp_path / "ann"))
    ann = app_for("direct", "127.0.0.1:0", "ann", ["lobby"])
    async with ann.run_test(size=(140, 30)) as pa:
        await until((pa,), lambda: ann.chat.share, "ann's address")
        assert order(ann) == before  # her log, at once
        monkeypatch.setenv("UDPROOM_DATA_DIR", str(tmp_path / "cat"))
        cat = app_for("direct", "127.0.0.1:0", "cat", ["lobby"], peers=[ann.chat.share[0]])
        async with cat.run_test(size=(140, 30)) as pc:
            pilots = (pa, pc)
            await linked(pilots, ann, cat)
            await until(pilots, lambda: len(order(cat)) == 6, "cat got the history", tries=3000)
            assert order(cat) == before
            assert all(x.history for x in cat.chat.rooms["lobby"].lines if x.kind <= 1)
            ann.send("after the restart")
            await until(pilots, lambda: len(order(cat)) == 7, "ann's new line", tries=3000)
            assert order(cat) == [*before, ("ann", "after the restart")]
            assert order(ann) == order(cat)
