"""Real processes over real loopback sockets (IPv4 and IPv6), through the impairment proxy.

`udproom relay` + several `udproom listen` + concurrent `udproom send`s: every message is
delivered exactly once, in the same order on every listener, each sender's messages in its own
order; the relay restarted mid-conversation and the clients resume; a killed member is announced
as timed out.
"""

import signal

import pytest

from .conftest import FAMILIES, hostport
from .impair import ImpairProxy
from .procs import FAST


def check_delivery(listeners, expected_by_sender):
    """Exactly once, same order everywhere, each sender's order kept."""
    total = sum(len(v) for v in expected_by_sender.values())
    logs = []
    for lst in listeners:
        msgs = list(lst.of_type("message"))
        seqs = [m["seq"] for m in msgs]
        assert seqs == sorted(set(seqs)), f"{lst.name}: seqs not increasing: {seqs}"
        pairs = [(m["nick"], m["text"]) for m in msgs]
        assert len(pairs) == len(set(pairs)) == total, f"{lst.name}: {len(pairs)} messages, want {total}"
        for sender, texts in expected_by_sender.items():
            assert [t for n, t in pairs if n == sender] == texts, f"{lst.name}: {sender} out of order"
        logs.append([(m["seq"], m["nick"], m["text"]) for m in msgs])
    for other in logs[1:]:
        assert other == logs[0], "listeners disagree on the order"


@pytest.mark.parametrize("host", FAMILIES)
async def test_relay_listen_send_through_lossy_proxy(procs, host):
    relay, port = await procs.relay(hostport(host, 0), *FAST)
    async with ImpairProxy((host, port), host=host, seed=7, loss=0.2, dup=0.1, jitter=0.02) as proxy:
        via = proxy.address
        senders = {f"s{i}": [f"s{i} line {k}" for k in range(12)] for i in range(3)}
        total = sum(len(v) for v in senders.values())
        listeners = [
            await procs.listen(f"l{i}", via, "#Lobby", "--count", str(total), "--timeout", "40", *FAST)
            for i in range(3)
        ]
        for lst in listeners:
            joined = await lst.wait_json(lambda o: o["type"] == "joined", 20, "joined")
            assert joined["room"] == "lobby"
            assert lst.name in joined["members"]
        sends = []
        for name, lines in senders.items():
            s = await procs.send(name, via, "lobby", "--timeout", "30", *FAST, stdin=True)
            await s.write("".join(line + "\n" for line in lines))
            s.close_stdin()
            sends.append(s)
        for s in sends:
            assert await s.wait(40) == 0, s.stderr
        for lst in listeners:
            assert await lst.wait(40) == 0, lst.stderr
        check_delivery(listeners, senders)
        # the proxy really did impair the traffic
        assert proxy.stats.dropped > 0 and proxy.stats.duplicated > 0
    relay.terminate()
    assert await relay.wait(30) == 0


@pytest.mark.parametrize("host", FAMILIES)
async def test_relay_restart_mid_conversation(procs, host):
    relay, port = await procs.relay(hostport(host, 0), *FAST)
    addr = hostport(host, port)
    listeners = [
        await procs.listen(f"l{i}", addr, "lobby", "--count", "10", "--timeout", "40", *FAST)
        for i in range(2)
    ]
    for lst in listeners:
        await lst.wait_json(lambda o: o["type"] == "joined", 20, "joined")
    # one long-lived sender that keeps its session across the restart
    sender = await procs.send("alice", addr, "lobby", "--timeout", "40", *FAST, stdin=True)
    await sender.write("".join(f"before {k}\n" for k in range(5)))
    for lst in listeners:
        await lst.wait_until(lambda lst=lst: len(lst.of_type("message")) == 5, 20, "5 messages")

    relay.kill()
    assert await relay.wait(30) == -signal.SIGKILL
    # posted while the relay is down: queued, resent after the reconnect
    await sender.write("".join(f"during {k}\n" for k in range(2)))
    relay2, port2 = await procs.relay(addr, *FAST, name="relay2")
    assert port2 == port
    await sender.write("".join(f"after {k}\n" for k in range(3)))
    sender.close_stdin()
    assert await sender.wait(40) == 0, sender.stderr
    for lst in listeners:
        assert await lst.wait(40) == 0, lst.stderr
    texts = [f"before {k}" for k in range(5)] + [f"during {k}" for k in range(2)]
    texts += [f"after {k}" for k in range(3)]
    for lst in listeners:
        assert [t for _n, t in lst.messages()] == texts, lst.name
    relay2.terminate()
    assert await relay2.wait(30) == 0


@pytest.mark.parametrize("host", FAMILIES)
async def test_killed_member_times_out(procs, host):
    member_timeout = 1.0
    timing = ["--fast-timers", "--keepalive", "0.2", "--timeout-member", str(member_timeout)]
    relay, port = await procs.relay(hostport(host, 0), *timing)
    addr = hostport(host, port)
    watcher = await procs.listen("watcher", addr, "lobby", "--timeout", "30", *timing)
    await watcher.wait_json(lambda o: o["type"] == "joined", 20, "joined")
    victim = await procs.listen("victim", addr, "lobby", "--timeout", "30", *timing)
    await watcher.wait_json(lambda o: o["type"] == "join" and o["nick"] == "victim", 20, "victim's join")
    victim.kill()
    # a killed process says no goodbye: the room learns of it by the member timeout (no wall-clock
    # window is asserted: a loaded machine may be slow, the event must simply come)
    event = await watcher.wait_json(
        lambda o: o["nick"] == "victim" and o["type"] in ("timeout", "leave"), 60, "timeout"
    )
    assert event["type"] == "timeout"
    assert event["room"] == "lobby" and event["ts"] > 0
    watcher.terminate()
    assert await watcher.wait(30) == 0
    relay.signal(signal.SIGINT)
    assert await relay.wait(30) == 0


async def test_relay_says_goodbye_and_exits(procs):
    relay, port = await procs.relay("127.0.0.1:0", "--log-level", "info", *FAST)
    addr = hostport("127.0.0.1", port)
    lst = await procs.listen("bob", addr, "lobby", "--timeout", "30", "--log-level", "info", *FAST)
    await lst.wait_json(lambda o: o["type"] == "joined", 20, "joined")
    relay.terminate()
    assert await relay.wait(30) == 0
    assert any("stopped" in line for line in relay.stderr)
    assert any("SessionOpened" in line and "bob" in line for line in relay.stderr)  # --log-level
    # the listener heard the goodbye (it says so on stderr) and keeps trying
    await lst.wait_until(lambda: any("retrying" in line for line in lst.stderr), 60, "goodbye")
    assert lst.running
    lst.signal(signal.SIGINT)
    assert await lst.wait(30) == 0


async def test_dark_link_longer_than_member_timeout(procs):
    """A listener's link goes dark past the member timeout: the room is told it timed out, it
    reconnects when the link returns, and it still gets every message exactly once."""
    timing = ["--fast-timers", "--keepalive", "0.1", "--timeout-member", "0.8", "--give-up", "30"]
    relay, port = await procs.relay("127.0.0.1:0", *timing)
    addr = hostport("127.0.0.1", port)
    async with ImpairProxy(("127.0.0.1", port), seed=3) as proxy:
        lst = await procs.listen("far", proxy.address, "lobby", "--count", "8", "--timeout", "40", *timing)
        await lst.wait_json(lambda o: o["type"] == "joined", 20, "joined")
        watcher = await procs.listen("near", addr, "lobby", "--timeout", "40", *timing)
        await watcher.wait_json(lambda o: o["type"] == "joined", 20, "joined")
        s1 = await procs.send("alice", addr, "lobby", *timing, stdin=True)
        await s1.write("".join(f"m{k}\n" for k in range(4)))
        await lst.wait_until(lambda: len(lst.of_type("message")) == 4, 20, "4 messages")
        proxy.go_dark(2.0)
        await watcher.wait_json(lambda o: o["type"] == "timeout" and o["nick"] == "far", 60, "far's timeout")
        await s1.write("".join(f"m{k}\n" for k in range(4, 8)))  # while 'far' is away
        s1.close_stdin()
        assert await s1.wait(30) == 0, s1.stderr
        assert await lst.wait(40) == 0, lst.stderr
        assert [t for _n, t in lst.messages()] == [f"m{k}" for k in range(8)]
    watcher.terminate()
    relay.terminate()
    assert await relay.wait(30) == 0


async def test_oversize_stdin_line_with_relay(procs):
    relay, port = await procs.relay("127.0.0.1:0", *FAST)
    s = await procs.send("alice", hostport("127.0.0.1", port), "lobby", *FAST, stdin=True)
    await s.write("fine\n" + "x" * 1001 + "\n")
    s.close_stdin()
    assert await s.wait(20) == 1
    assert len(s.stderr) == 1 and "1001 bytes" in s.stderr[0] and "line 2" in s.stderr[0], s.stderr
    relay.terminate()
    assert await relay.wait(30) == 0


async def test_history_and_nick_clash(procs):
    relay, port = await procs.relay("127.0.0.1:0", *FAST)  # loopback only ('localhost' finds it)
    v4 = hostport("127.0.0.1", port)
    for k in range(3):
        s = await procs.send("alice", v4, "lobby", *FAST, f"old {k}")
        assert await s.wait(20) == 0, s.stderr
    with_history = await procs.listen("h", v4, "lobby", "--history", "--count", "4", "--timeout", "30", *FAST)
    without = await procs.listen("n", f"localhost:{port}", "lobby", "--count", "1", "--timeout", "30", *FAST)
    for lst in (with_history, without):
        await lst.wait_json(lambda o: o["type"] == "joined", 20, "joined")
    await with_history.wait_until(lambda: len(with_history.of_type("message")) == 3, 20, "history")
    old = with_history.of_type("message")
    assert [m["text"] for m in old] == ["old 0", "old 1", "old 2"]
    assert all(m.get("history") for m in old)
    assert not any(o.get("history") for o in without.json)
    # a nick in use on the relay is refused visibly: its live holder may first be given the time to
    # show it lives (a warning that it retries), then the refusal is final, in one line
    clash = await procs.send("h", v4, "lobby", *FAST, "me too")
    assert await clash.wait(20) == 1
    *before, last = clash.stderr
    assert last == "udproom send: refused: nick h is in use on this relay", clash.stderr
    assert all("WARNING" in line and "in use" in line and "retrying" in line for line in before), clash.stderr
    s = await procs.send("bob", v4, "lobby", *FAST, "new")
    assert await s.wait(20) == 0, s.stderr
    for lst in (with_history, without):
        assert await lst.wait(20) == 0, lst.stderr
    new = with_history.of_type("message")[-1]
    assert new["text"] == "new" and "history" not in new
    assert without.messages() == [("bob", "new")]
    relay.terminate()
    assert await relay.wait(30) == 0
