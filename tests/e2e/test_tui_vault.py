"""Passphrase rooms in two apps through a real relay (alice hosts it, with the chosen Argon2id
parameters): `/join #vault --passphrase` opens a masked prompt and makes the room; bob's plain
`/join #vault` is asked for the passphrase, a wrong one is one line, the right one reads alice."""

from __future__ import annotations

from textual.widgets import Input

from udproom.tui.screens import PassphraseScreen

from .test_tui_e2e import app_for, until


async def type_passphrase(pilot, app, text: str) -> None:
    await until((pilot,), lambda: isinstance(app.screen, PassphraseScreen), "the passphrase prompt")
    field = app.screen.query_one(Input)
    assert field.password  # masked
    await pilot.press(*text, "enter")


async def test_a_passphrase_room_between_two_apps():
    alice = app_for("host", "127.0.0.1:0", "alice", ["lobby"])
    async with alice.run_test(size=(120, 30)) as pa:
        await until((pa,), lambda: alice.chat.state == "connected", "alice hosting")
        await pa.press(*"/join #vault --passphrase", "enter")
        await type_passphrase(pa, alice, "sesame")
        await until((pa,), lambda: "vault" in alice.chat.rooms, "alice in #vault", tries=2000)
        assert alice.chat.active == "vault"

        bob = app_for("join", alice.chat.share[0], "bob", ["lobby"])
        async with bob.run_test(size=(120, 30)) as pb:
            pilots = (pa, pb)
            await until(pilots, lambda: bob.chat.state == "connected", "bob connected")
            await pb.press(*"/join #vault", "enter")
            await type_passphrase(pb, bob, "open")
            refused = "join #vault refused: wrong passphrase for #vault"
            await until(pilots, lambda: refused in bob.messages.visible_text()[-1], "refused", tries=2000)
            assert "vault" not in bob.chat.rooms
            await pb.press(*"/join #vault", "enter")
            await type_passphrase(pb, bob, "sesame")
            await until(pilots, lambda: "vault" in bob.chat.rooms, "bob in #vault", tries=2000)
            await pa.press(*"under the mat", "enter")
            await until(
                pilots,
                lambda: any("under the mat" in line.text for line in bob.chat.rooms["vault"].lines),
                "bob reads alice",
                tries=2000,
            )
            # /passphrase re-keys: bob stays and keeps reading, without typing anything
            await pa.press(*"/passphrase", "enter")
            await type_passphrase(pa, alice, "new sesame")

            def bob_sees(text: str) -> bool:
                return any(text in line.text for line in bob.chat.rooms["vault"].lines)

            await until(pilots, lambda: bob_sees("changed the passphrase"), "bob told", tries=2000)
            await pa.press(*"after the change", "enter")
            await until(pilots, lambda: bob_sees("after the change"), "bob reads the new key", tries=2000)
            relay = alice._server.relay
            assert all("mat" not in e.text and "change" not in e.text for e in relay.rooms["vault"].events())


def test_join_parses_the_passphrase_flag_and_nothing_else():
    import pytest

    from udproom.tui.commands import Command, CommandError, parse

    assert parse("/join #vault --passphrase") == Command("join", ("vault",), rest="--passphrase")
    assert parse("/join --passphrase vault") == Command("join", ("vault",), rest="--passphrase")
    assert parse("/join vault") == Command("join", ("vault",))
    assert parse("/passphrase") == Command("passphrase")
    for bad in ("/join --passphrase", "/join a b", "/join @bob --passphrase", "/passphrase x"):
        with pytest.raises(CommandError):
            parse(bad)
