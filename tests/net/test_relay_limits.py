"""The relay's per-address limits as real processes (issue 11): `relay --max-sessions-per-address`."""

from __future__ import annotations

import signal

from .procs import FAST


async def test_a_session_beyond_the_cap_of_its_address_exits_with_one_line(procs):
    """`relay --max-sessions-per-address 1`: while one client from 127.0.0.1 is in, a second one
    is refused with one line and exits non-zero; once the first leaves, its slot admits again."""
    relay, port = await procs.relay(
        "127.0.0.1:0", "--max-sessions-per-address", "1", "--log-level", "info", *FAST
    )
    addr = f"127.0.0.1:{port}"
    lst = await procs.listen("ann", addr, "lobby", *FAST)
    await lst.wait_json(lambda o: o["type"] == "joined", 30, "joined")
    bob = await procs.send("bob", addr, "lobby", "--timeout", "20", *FAST, "hi")
    assert await bob.wait(30) == 1, bob.stderr
    assert [line for line in bob.stderr if line.strip()] == [
        "udproom send: refused: too many sessions from your address on this relay (at most 1)"
    ], bob.stderr
    lst.signal(signal.SIGINT)  # ann says goodbye (or times out): the slot is free
    assert await lst.wait(20) == 0, lst.stderr
    await relay.wait_until(
        lambda: any("SessionClosed" in line and "ann" in line for line in relay.stderr), 30, "ann gone"
    )
    again = await procs.send("bob2", addr, "lobby", "--timeout", "20", *FAST, "hi")
    assert await again.wait(30) == 0, again.stderr
