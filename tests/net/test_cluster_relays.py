"""Relays that share rooms through a real nats-server (issue 12, docs/cluster.md): real `udproom
relay --cluster` processes on 127.0.0.1, members spread across them."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time

from .procs import FAST, bound_port


async def _relays(procs, url: str, n: int) -> list[str]:
    addrs = []
    for i in range(n):
        _p, port = await procs.relay("127.0.0.1:0", "--cluster", url, *FAST, name=f"relay{i}")
        addrs.append(f"127.0.0.1:{port}")
    return addrs


async def _flood(procs, addrs: list[str], senders: dict[str, list[str]], listeners) -> list:
    """Each sender on relay i % n sends its lines; returns the send processes (all exited 0)."""
    sends = []
    for i, name in enumerate(senders):
        sends.append(
            await procs.send(name, addrs[i % len(addrs)], "lobby", "--timeout", "60", *FAST, stdin=True)
        )
    for k in range(max(len(v) for v in senders.values())):
        for s, lines in zip(sends, senders.values(), strict=True):
            if k < len(lines):
                await s.write(lines[k] + "\n")
    for s in sends:
        s.close_stdin()
    for s in sends:
        assert await s.wait(60) == 0, s.stderr
    return sends


def _one_order(listeners, total: int) -> None:
    """Every listener got every message once, and all in one order (the same seq, the same line)."""
    orders = []
    for lst in listeners:
        msgs = [(o["seq"], o["nick"], o["text"]) for o in lst.json if o.get("type") == "message"]
        assert len(msgs) == total, (lst, len(msgs))
        assert len({m[2] for m in msgs}) == total, "a message delivered twice"
        assert [m[0] for m in msgs] == sorted(m[0] for m in msgs)
        orders.append(msgs)
    assert all(o == orders[0] for o in orders), "relays sent different orders"
    seqs = [o["seq"] for o in listeners[0].json if "seq" in o]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a gap in the room's numbers"


async def test_two_and_three_relays_one_order_every_message_once(procs, nats_server):
    for n in (2, 3):
        addrs = await _relays(procs, nats_server.url, n)
        senders = {f"s{n}x{i}": [f"s{n}x{i} line {k}" for k in range(30)] for i in range(3)}
        total = sum(len(v) for v in senders.values())
        listeners = []
        for i in range(n + 1):  # one more listener than relays: two share one
            lst = await procs.listen(
                f"l{n}x{i}", addrs[i % n], "lobby", "--count", str(total), "--timeout", "60", *FAST
            )
            await lst.wait_json(lambda o: o["type"] == "joined", 20, "joined")
            listeners.append(lst)
        await _flood(procs, addrs, senders, listeners)
        for lst in listeners:
            assert await lst.wait(60) == 0, lst.stderr
        _one_order(listeners, total)
        for p in procs.all:
            if p.running:
                p.terminate()
        await asyncio.gather(*(p.wait(20) for p in procs.all))


async def test_sigkill_of_a_relay_mid_flood_its_members_fail_over_and_lose_nothing(procs, nats_server):
    """Three relays; a listener and a sender whose first relay is r0 (`--join r0,r1`), and the
    others on r1 and r2. r0 is SIGKILLed mid-flood: its members move to the next relay, resume the
    room from the last event they delivered (no gap, no duplicate) and their unacknowledged posts
    are sent again (deduplicated by message id); the members elsewhere never notice."""
    relays, addrs = [], []
    for i in range(3):
        p, port = await procs.relay("127.0.0.1:0", "--cluster", nats_server.url, *FAST, name=f"relay{i}")
        relays.append(p)
        addrs.append(f"127.0.0.1:{port}")
    r0, r1, r2 = addrs
    senders = {f"s{i}": [f"s{i} line {k}" for k in range(40)] for i in range(3)}
    total = sum(len(v) for v in senders.values())
    joins = {"l0": f"{r0},{r1}", "l1": r1, "l2": r2}
    listeners = {}
    for name, join in joins.items():
        lst = await procs.listen(name, join, "lobby", "--count", str(total), "--timeout", "90", *FAST)
        await lst.wait_json(lambda o: o["type"] == "joined", 20, "joined")
        listeners[name] = lst
    send_joins = [f"{r0},{r2}", r1, r2]
    sends = [
        await procs.send(name, join, "lobby", "--timeout", "80", *FAST, stdin=True)
        for name, join in zip(senders, send_joins, strict=True)
    ]
    l1 = listeners["l1"]

    async def flood() -> None:
        """One line per sender per round, keeping about 15 messages in flight (never a pause)."""
        for k in range(40):
            await l1.wait_until(lambda k=k: len(l1.of_type("message")) >= 3 * (k - 5), 60, f"round {k - 5}")
            for s, lines in zip(sends, senders.values(), strict=True):
                await s.write(lines[k] + "\n")
        for s in sends:
            s.close_stdin()

    feeder = asyncio.create_task(flood())
    await l1.wait_until(lambda: len(l1.of_type("message")) >= 45, 60, "45 messages")
    relays[0].kill()  # mid-flood
    await asyncio.wait_for(feeder, 90)
    for s in sends:
        assert await s.wait(90) == 0, s.stderr  # every message acknowledged, r0's sender's too
    for lst in listeners.values():
        assert await lst.wait(90) == 0, lst.stderr
    _one_order(list(listeners.values()), total)
    moved = listeners["l0"].stderr + sends[0].stderr
    assert any(f"failing over to {r1}" in line for line in listeners["l0"].stderr), moved
    assert any(f"failing over to {r2}" in line for line in sends[0].stderr), moved
    for name in ("l1", "l2"):  # the others never noticed
        lines = listeners[name].stderr
        assert not [line for line in lines if "failing over" in line or "missed" in line or "lost" in line], (
            lines
        )
    assert not [line for line in listeners["l0"].stderr if "missed" in line]


async def test_members_of_a_relay_that_dies_are_announced_as_timed_out(procs, nats_server):
    """Presence across relays: r0 is SIGKILLed; its member (who has no other relay to go to) is
    announced as timed out by a relay that lives, once, within about the usual timeout."""
    r0, port0 = await procs.relay("127.0.0.1:0", "--cluster", nats_server.url, *FAST, name="relay0")
    _r1, port1 = await procs.relay("127.0.0.1:0", "--cluster", nats_server.url, *FAST, name="relay1")
    await procs.relay("127.0.0.1:0", "--cluster", nats_server.url, *FAST, name="relay2")  # races r1
    watcher = await procs.listen("watcher", f"127.0.0.1:{port1}", "lobby", "--timeout", "60", *FAST)
    await watcher.wait_json(lambda o: o["type"] == "joined", 20, "joined")
    ghost = await procs.listen("ghost", f"127.0.0.1:{port0}", "lobby", "--timeout", "60", *FAST)
    await ghost.wait_json(lambda o: o["type"] == "joined", 20, "joined")
    await watcher.wait_json(lambda o: o["type"] == "join" and o["nick"] == "ghost", 20, "ghost's join")
    r0.kill()
    killed = time.monotonic()
    await watcher.wait_json(lambda o: o["type"] == "timeout" and o["nick"] == "ghost", 30, "ghost's timeout")
    took = time.monotonic() - killed
    # (FAST: a 3 s timeout; the announcement comes from the relays' refresh rounds, ttl / 3)
    assert took < 3 * 3, took
    ghost.kill()
    await ghost.wait(10)
    # said once, by one relay (a second relay would race for the reaper key and lose)
    assert len([o for o in watcher.json if o.get("type") == "timeout" and o.get("nick") == "ghost"]) == 1


async def test_workers_share_one_port_and_the_rooms(procs, nats_server):
    """`relay --workers 2`: two relay processes on one port (SO_REUSEPORT), sharing the room through
    the cluster: every member gets every message once in one order, whichever worker it is on."""
    parent = await procs.start(
        "relay", "relay", "--workers", "2", "--cluster", nats_server.url, "--bind", "127.0.0.1:0", *FAST
    )
    port = await bound_port(parent, "relay")
    await parent.wait_until(
        lambda: sum("listening on" in line for line in parent.stderr) == 2, 20, "2 workers"
    )
    addr = f"127.0.0.1:{port}"
    senders = {f"w{i}": [f"w{i} line {k}" for k in range(20)] for i in range(3)}
    total = sum(len(v) for v in senders.values())
    listeners = []
    for i in range(8):
        lst = await procs.listen(f"wl{i}", addr, "lobby", "--count", str(total), "--timeout", "60", *FAST)
        await lst.wait_json(lambda o: o["type"] == "joined", 20, "joined")
        listeners.append(lst)
    await _flood(procs, [addr], senders, listeners)
    for lst in listeners:
        assert await lst.wait(60) == 0, lst.stderr
    _one_order(listeners, total)
    pids = [int(p) for p in re.search(r"pids (\d+), (\d+)", parent.stderr[0]).groups()]
    os.kill(pids[0], signal.SIGKILL)  # a worker dies: the parent starts it again
    await parent.wait_until(
        lambda: sum("listening on" in line for line in parent.stderr) == 3, 20, "a new worker"
    )
    assert any(f"worker {pids[0]} exited with -9: starting it again" in line for line in parent.stderr)
    parent.terminate()  # passed on to the workers by PID
    assert await parent.wait(30) == 0, parent.stderr
    stopped = [line for line in parent.stderr if "stopped after" in line]
    assert len(stopped) == 2, parent.stderr


async def test_workers_need_a_cluster(procs):
    p = await procs.start("relay", "relay", "--workers", "2", "--bind", "127.0.0.1:0")
    assert await p.wait(20) == 2
    assert p.stderr == [
        "udproom relay: --workers runs relays that share rooms through a cluster: add --cluster nats://HOST:PORT"
    ]


async def test_relays_of_a_cluster_on_one_machine_share_the_port(procs, nats_server):
    """Two `relay --cluster URL` on one machine with the same --bind: nothing local collides (no data
    directory, no lock, and the port is shared, SO_REUSEPORT), and the room is one room."""
    from udproom.protocol.net.workers import pick_port

    port = pick_port("127.0.0.1", 0)
    for i in range(2):
        _p, got = await procs.relay(
            f"127.0.0.1:{port}", "--cluster", nats_server.url, *FAST, name=f"relay{i}"
        )
        assert got == port
    addr = f"127.0.0.1:{port}"
    listeners = []
    for i in range(4):
        lst = await procs.listen(f"m{i}", addr, "lobby", "--count", "20", "--timeout", "60", *FAST)
        await lst.wait_json(lambda o: o["type"] == "joined", 20, "joined")
        listeners.append(lst)
    await _flood(procs, [addr], {"one": [f"line {k}" for k in range(20)]}, listeners)
    for lst in listeners:
        assert await lst.wait(60) == 0, lst.stderr
    _one_order(listeners, 20)


async def test_cluster_errors_are_one_line(procs, silent_port):
    cases = [
        (
            ["--cluster", f"nats://127.0.0.1:{silent_port}"],
            1,
            "cannot reach the cluster at nats://127.0.0.1:",
        ),
        # (a password in the URL is never shown)
        (
            ["--cluster", f"nats://relay:s3cret@127.0.0.1:{silent_port}"],
            1,
            f"at nats://127.0.0.1:{silent_port}:",
        ),
        (["--cluster", "127.0.0.1:4222"], 2, "--cluster wants nats://HOST:PORT"),
        (["--cluster", "nats://127.0.0.1:4222", "--memory"], 2, "cannot be combined with --data, --memory"),
    ]
    for i, (extra, code, words) in enumerate(cases):
        p = await procs.start(f"relay{i}", "relay", "--bind", "127.0.0.1:0", *extra)
        assert await p.wait(30) == code, p.stderr
        assert len(p.stderr) == 1 and words in p.stderr[0] and "s3cret" not in p.stderr[0], p.stderr


async def test_a_direct_message_reaches_a_member_of_another_relay_once_and_is_acknowledged(
    procs, nats_server
):
    """alice on relay A sends bob, on relay B, a direct message: bob gets it once, signed as alice
    signed it (his client shows only what verifies against her key), and alice's post is
    acknowledged only after bob's client acknowledged it; a DM to a nick held nowhere in the
    cluster is refused with the usual line."""
    from udproom.protocol import events as E
    from udproom.protocol.net.runners import RelayClient
    from udproom.protocol.reliability import Timing

    from .test_runners import Recorder

    a, b = await _relays(procs, nats_server.url, 2)
    bob = await procs.listen("bob", b, "lobby", "--count", "2", "--timeout", "60", *FAST)
    await bob.wait_json(lambda o: o["type"] == "joined", 30, "joined")
    alice = RelayClient(a, "alice", ["lobby"], timing=Timing.fast())
    rec = Recorder()
    task = asyncio.create_task(alice.run(rec))
    try:
        await rec.wait(lambda e: isinstance(e, E.RoomJoined), 30, "alice joined")
        first = alice.post("@bob", "psst, across relays")
        await rec.wait(lambda e: isinstance(e, E.PostAcknowledged) and e.local_id == first, 30, "acked")
        await bob.wait_until(lambda: bob.of_type("message"), 30, "bob's first message")
        nobody = alice.post("@nobody", "hello?")
        await rec.wait(lambda e: isinstance(e, E.PostFailed) and e.local_id == nobody, 30, "refused")
        (failed,) = [e for e in rec.of(E.PostFailed) if e.local_id == nobody]
        assert failed.refused and "no one called nobody is here" in failed.reason
        assert not [e for e in rec.of(E.PostAcknowledged) if e.local_id == nobody]
        second = alice.post("@bob", "and a second")
        await rec.wait(lambda e: isinstance(e, E.PostAcknowledged) and e.local_id == second, 30, "acked")
        assert await bob.wait(60) == 0, bob.stderr  # --count 2: both direct messages
        msgs = bob.of_type("message")
        assert [(m["room"], m["nick"], m["text"]) for m in msgs] == [
            ("@alice", "alice", "psst, across relays"),
            ("@alice", "alice", "and a second"),
        ]
    finally:
        alice.close()
        await asyncio.wait_for(task, 30)


async def test_a_direct_message_waiting_on_a_relay_that_dies_reaches_its_recipient_after_failover(
    procs, nats_server
):
    """bob is on relay B and unreachable for a moment; alice, on relay A, sends him a DM. B keeps it
    in the cluster (bucket `udproom-dms`, keyed by bob's nick) before it answers A, and is SIGKILLed
    with the DM still in bob's inbox. bob fails over to C (`--join B,C`), presenting his old session
    token: C finds the DM, delivers it, bob gets it once, and alice hears "delivered" (her post is
    acknowledged). Before, the DM died with B's memory and alice heard "may not have been delivered"
    only after the inbox's keep time (10 minutes)."""
    import base64
    import dataclasses
    import hashlib
    import json

    import nats

    from udproom.protocol import events as E
    from udproom.protocol import frames as F
    from udproom.protocol.net.runners import RelayClient
    from udproom.protocol.reliability import Timing

    from .lossy_cli import LossyCore
    from .test_runners import Recorder

    a, b, c = await _relays(procs, nats_server.url, 3)
    relay_b = procs.all[1]
    timing = dataclasses.replace(Timing.fast(), give_up=60.0)  # (alice waits for the answer)
    alice = RelayClient(a, "alice", ["lobby"], timing=timing)
    bob = RelayClient(f"{b},{c}", "bob", ["lobby"], timing=timing)
    gate = LossyCore(bob.core)  # loss 1.0: bob hears nothing and is not heard
    bob._driven = gate
    arec, brec = Recorder(), Recorder()
    tasks = [asyncio.create_task(alice.run(arec)), asyncio.create_task(bob.run(brec))]
    nc = await nats.connect(nats_server.url)
    try:
        await arec.wait(lambda e: isinstance(e, E.RoomJoined), 30, "alice joined")
        await brec.wait(lambda e: isinstance(e, E.RoomJoined), 30, "bob joined")
        gate.loss = 1.0
        first = alice.post("@bob", "while you were out")

        async def kept() -> list[str]:
            try:
                return await (await nc.jetstream().key_value("udproom-dms")).keys()
            except Exception:  # (no bucket, or no keys yet)
                return []

        deadline = time.monotonic() + 20
        while not (keys := await kept()):  # (read once: a second read under load may fail, and say [])
            assert time.monotonic() < deadline, "relay B never kept the DM where another relay finds it"
            await asyncio.sleep(0.05)  # a bounded poll of the bucket
        (real,) = keys
        # and what a hostile writer to the bucket adds under bob's nick is checked when read back:
        # not JSON; another member's; not a DM; a DM whose signature is not its author's
        bucket = await nc.jetstream().key_value("udproom-dms")
        held = json.loads((await bucket.get(real)).value)
        assert held["member"] and held["session"]  # (kept for bob: his identity key's hash, his session)
        prefix = real.split(".")[0]
        await bucket.put(f"{prefix}.x.1", b"{not json")
        forged = {
            2: (dict(held, session="0" * 32, member="0" * 32), F.Ev(F.EV_DM, "mallory", "not yours", 1.0, 7)),
            3: (held, F.Ev(F.EV_MSG, "mallory", "not a DM", 1.0, 8)),
            4: (held, F.Ev(F.EV_DM, "mallory", "forged", 1.0, 9, sig=bytes(64), key=bytes(32))),
        }
        for dm_id, (value, ev) in forged.items():
            origin = f"forger{dm_id}"
            body = dict(value, ev=base64.b64encode(F.encode_ev(ev)).decode(), id=dm_id, to="bob")
            body["from"] = origin
            key = f"{prefix}.{hashlib.sha256(origin.encode()).hexdigest()[:16]}.{dm_id}"
            await bucket.put(key, json.dumps(body).encode())
        relay_b.kill()
        await relay_b.wait(10)
        gate.loss = 0.0
        await arec.wait(lambda e: isinstance(e, E.PostAcknowledged) and e.local_id == first, 30, "delivered")
        assert not [e for e in arec.of(E.PostFailed) if e.local_id == first]
        assert f"failed over from {b}" in bob.mode or c in bob.mode, bob.mode
        second = alice.post("@bob", "and now")  # a fence: once bob has this, the first came once
        await arec.wait(lambda e: isinstance(e, E.PostAcknowledged) and e.local_id == second, 30, "acked")
        await brec.wait(lambda e: isinstance(e, E.MessageReceived) and e.text == "and now", 30, "the fence")
        got = [(e.room, e.nick, e.text) for e in brec.of(E.MessageReceived) if e.room == "@alice"]
        assert got == [("@alice", "alice", "while you were out"), ("@alice", "alice", "and now")]
        assert real not in await kept()  # answered: no longer waiting in the cluster
        assert not [e for e in brec.of(E.MessageReceived) if e.nick == "mallory"]
    finally:
        await nc.close()
        for client in (alice, bob):
            client.close()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
