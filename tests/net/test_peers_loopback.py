"""Direct mode with real processes: `udproom listen|send --listen ... --peer ...`, no relay.

Three listeners are chained (C knows only B, B only A); senders join through A and through C.
Gossip must link everyone to everyone, so every message reaches every listener exactly once, in
its sender's order. The lossy variant puts a seeded impairment layer inside each peer (lossy_cli.py):
an impairment proxy would be bypassed as soon as gossip reveals the real addresses.
"""

from __future__ import annotations

import asyncio

import pytest

from .conftest import FAMILIES, hostport
from .procs import FAST, bound_port, lossy_cli


async def start_peer(
    procs,
    name: str,
    command: str,
    host: str,
    peers: list[str],
    *extra: str,
    stdin: bool = False,
    cli: list[str] | None = None,
):
    args = [command, "--listen", hostport(host, 0), "--room", "lobby", "--nick", name]
    for p in peers:
        args += ["--peer", p]
    proc = await procs.start(name, *args, *extra, stdin=stdin, cli=cli)
    return proc, hostport(host, await bound_port(proc, name))


def joined(proc, *nicks: str):
    return lambda: {o["nick"] for o in proc.of_type("join")} >= set(nicks)


@pytest.mark.parametrize("host", FAMILIES)
@pytest.mark.parametrize("lossy", [False, True], ids=["clean", "lossy"])
async def test_chained_peers_deliver_to_everyone(procs, host, lossy):
    per_sender = 6
    total = 2 * per_sender

    def cli(k: int) -> list[str] | None:
        return lossy_cli(0.2, 0.1, k) if lossy else None

    common = ["--count", str(total), "--timeout", "40", *FAST]
    a, addr_a = await start_peer(procs, "A", "listen", host, [], *common, cli=cli(1))
    b, addr_b = await start_peer(procs, "B", "listen", host, [addr_a], *common, cli=cli(2))
    c, addr_c = await start_peer(procs, "C", "listen", host, [addr_b], *common, cli=cli(3))
    # C knows only B, yet gossip links it to A (and A to C)
    await a.wait_until(joined(a, "B", "C"), 20, "B and C joining A")
    await c.wait_until(joined(c, "A", "B"), 20, "A and B joining C")

    texts = {s: [f"{s} line {k}" for k in range(per_sender)] for s in ("sa", "sc")}
    sa, _ = await start_peer(
        procs, "sa", "send", host, [addr_a], "--timeout", "30", *FAST, stdin=True, cli=cli(4)
    )
    sc, _ = await start_peer(
        procs, "sc", "send", host, [addr_c], "--timeout", "30", *FAST, stdin=True, cli=cli(5)
    )
    # The senders speak once the room knows them: a direct-mode `send` delivers to the peers it is
    # linked to when it posts (and exits when they acked), so a listener that gossip had not yet
    # linked to a sender would legitimately miss its lines (on a loaded machine it happened).
    for proc in (a, b, c):
        await proc.wait_until(joined(proc, "sa", "sc"), 30, f"sa and sc joining {proc.name}")
    for s, proc in (("sa", sa), ("sc", sc)):
        await proc.write("".join(t + "\n" for t in texts[s]))
        proc.close_stdin()
    assert await sa.wait(40) == 0, sa.stderr
    assert await sc.wait(40) == 0, sc.stderr

    for proc in (a, b, c):
        assert await proc.wait(40) == 0, proc.stderr
        got = proc.messages()
        assert len(got) == total, got
        for s in ("sa", "sc"):
            assert [t for nick, t in got if nick == s] == texts[s]
        # each sender's messages carry increasing Lamport stamps (a clock that never advanced
        # would give them all one stamp, and the room's order would be the nicks' order)
        for s in ("sa", "sc"):
            stamps = [m["seq"] for m in proc.of_type("message") if m["nick"] == s]
            assert stamps == sorted(set(stamps)), (proc.name, s, stamps)
    # the whole room's final order, (lc, nick), is the same everywhere
    orders = [sorted((m["seq"], m["nick"], m["text"]) for m in p.of_type("message")) for p in (a, b, c)]
    assert orders[0] == orders[1] == orders[2]


async def test_send_with_no_peer_answering_fails(procs, silent_port):
    # a port bound here that never answers: the send must not claim success
    peer = f"127.0.0.1:{silent_port}"
    s, _ = await start_peer(procs, "lonely", "send", "127.0.0.1", [peer], "--timeout", "2", *FAST)
    await s.wait_until(lambda: not s.running, 60, "exit")  # wakes when the process exits
    assert await s.wait(30) == 1
    assert f"no answer from peers at {peer}" in s.stderr[-1]


async def test_killed_peer_times_out_and_returns(procs):
    timing = ["--fast-timers", "--keepalive", "0.2", "--timeout-member", "1.5"]
    a, addr_a = await start_peer(procs, "A", "listen", "127.0.0.1", [], "--timeout", "30", *timing)
    b, _ = await start_peer(procs, "B", "listen", "127.0.0.1", [addr_a], "--timeout", "30", *timing)
    await a.wait_until(joined(a, "B"), 15, "B joining")
    b.kill()
    await b.wait(30)
    await a.wait_json(lambda o: o["type"] == "timeout" and o["nick"] == "B", 10, "B's timeout")
    b2, _ = await start_peer(procs, "B", "listen", "127.0.0.1", [addr_a], "--timeout", "30", *timing)
    await a.wait_until(lambda: [o["nick"] for o in a.of_type("join")].count("B") == 2, 15, "B back")
    b2.terminate()
    a.terminate()
    await asyncio.gather(a.wait(30), b2.wait(30))
