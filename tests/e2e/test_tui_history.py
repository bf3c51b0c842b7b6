"""The app pages back through a real relay (issue 10): a relay hosted in the app, on a room log
that already holds 250 events of #lobby; the join brings the last 100, PgUp past the top asks the
relay for the rest (`page_back` over the wire) until the start of the room's history. Restarted
on the same data (same epoch), the app shows its logged lines and the relay's backfill merges in
without a duplicate."""

from __future__ import annotations

import time

from udproom.protocol import frames as F
from udproom.protocol.client import _signed
from udproom.protocol.crypto import Identity
from udproom.protocol.paths import relay_data_dir
from udproom.protocol.roomlog import SqliteLog

from .test_tui_e2e import app_for, until


def fill_room_log(n: int) -> None:
    log = SqliteLog(relay_data_dir())
    try:
        now, bob = time.time(), Identity.generate()
        for i in range(1, n + 1):  # as a relay stores bob's posts: signed by bob, with bob's key
            text, mid = f"old {i}", 1000 + i
            sig = bob.sign(_signed("lobby", F.EV_MSG, mid, text))
            log.append("lobby", F.Ev(F.EV_MSG, "bob", text, now - 3600 + i, mid, sig=sig, key=bob.public))
        log.commit()
    finally:
        log.close()


def olds(app) -> list[int]:
    room = app.chat.rooms.get("lobby")
    return [int(x.text.split()[1]) for x in room.lines if x.text.startswith("old ")] if room else []


async def test_paging_back_through_a_real_relay_and_a_restart_on_the_same_data():
    fill_room_log(250)
    alice = app_for("host", "127.0.0.1:0", "alice", ["lobby"])
    async with alice.run_test(size=(100, 30)) as pa:
        await until((pa,), lambda: olds(alice)[-1:] == [250], "the backfill")
        assert olds(alice) == list(range(151, 251))
        for _ in range(400):
            if "start of #lobby's history" in [x.text for x in alice.chat.rooms["lobby"].lines]:
                break
            await pa.press("pageup")
            await pa.pause(0.01)
        assert alice.chat.rooms["lobby"].lines[0].text == "start of #lobby's history"
        assert olds(alice) == list(range(1, 251))  # each once, in order
        port = alice.chat.share[0].rsplit(":", 1)[1]
        alice.history.drain()

    again = app_for("host", f"127.0.0.1:{port}", "alice", ["lobby"])  # the same data, the same circle
    async with again.run_test(size=(100, 30)) as pa:
        before = olds(again)  # from the app's log, before any network: its last 200 lines
        assert before == list(range(before[0], 251)) and before[0] <= 52  # (+ alice's own join)
        await until((pa,), lambda: again.chat.rooms["lobby"].joined, "joined again")
        await until((pa,), lambda: not again.events_waiting, "the backfill applied")
        await pa.pause(0.1)
        assert olds(again) == before  # the backfill (151..250, the same epoch) added nothing
