"""A relay on disk, as real processes (issue 10): SIGKILLed at random points of a flood from three
senders and started again on the same data, it loses nothing it acknowledged, numbers nothing
twice, and its members resume without a gap; `udproom history` pages back through the same
events; the errors of `udproom relay --data` are one line."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile

from .procs import CLI, FAST


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


async def _history(procs, addr: str, *extra: str) -> list[dict]:
    """Every event of the room, paging back with `udproom history` until the first one."""
    events: list[dict] = []
    before: list[str] = []
    for i in range(50):
        p = await procs.start(f"history{i}", "history", "--join", addr, "--room", "lobby", *before, *FAST)
        assert await p.wait(30) == 0, p.stderr
        page = p.json
        assert [e["seq"] for e in page] == sorted(e["seq"] for e in page)
        assert all(e.get("history") for e in page)
        events = page + events
        if not page or page[0]["seq"] == 1:
            return events
        before = ["--before", str(page[0]["seq"])]
    raise AssertionError("history never reached the first event")


async def test_sigkill_during_a_flood_loses_nothing_acknowledged_and_members_resume(procs, tmp_path):
    rng = random.Random(1)
    data = str(tmp_path / "relay")
    relay, port = await procs.relay("127.0.0.1:0", "--data", data, *FAST)
    addr = f"127.0.0.1:{port}"
    senders = {f"s{i}": [f"s{i} line {k}" for k in range(40)] for i in range(3)}
    total = sum(len(v) for v in senders.values())
    listener = await procs.listen("l0", addr, "lobby", "--count", str(total), "--timeout", "90", *FAST)
    await listener.wait_json(lambda o: o["type"] == "joined", 20, "joined")
    sends = [await procs.send(name, addr, "lobby", "--timeout", "80", *FAST, stdin=True) for name in senders]

    async def flood() -> None:
        """One line per sender per round, keeping about 15 messages in flight (never a pause)."""
        for k in range(40):
            await listener.wait_until(
                lambda k=k: len(listener.of_type("message")) >= 3 * (k - 5), 60, f"round {k - 5}"
            )
            for s, lines in zip(sends, senders.values(), strict=True):
                await s.write(lines[k] + "\n")
        for s in sends:
            s.close_stdin()

    feeder = asyncio.create_task(flood())
    for kill in range(2):  # SIGKILL at a random point of the flood, twice
        at = rng.randrange(20 + 45 * kill, 50 + 45 * kill)
        await listener.wait_until(lambda at=at: len(listener.of_type("message")) >= at, 60, f"{at} messages")
        relay.kill()
        assert await relay.wait(30) == -signal.SIGKILL
        relay, again = await procs.relay(addr, "--data", data, *FAST, name=f"relay{kill + 2}")
        assert again == port
    await asyncio.wait_for(feeder, 90)
    for s in sends:
        assert await s.wait(90) == 0, s.stderr  # every message acknowledged
    # the kills hit senders mid-flood: they lost their sessions and resent what was unanswered
    assert any("forgot this session" in line for s in sends for line in s.stderr), [s.stderr for s in sends]
    assert await listener.wait(90) == 0, listener.stderr
    # the listener resumed across both restarts: no gap, no duplicate, no "missed" warning
    seen = [o for o in listener.json if "seq" in o]
    seqs = [o["seq"] for o in seen]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    assert not [line for line in listener.stderr if "missed" in line]
    # every acknowledged message is stored exactly once, in one order, each sender's in its order
    stored = await _history(procs, addr)
    assert [e["seq"] for e in stored] == list(range(1, len(stored) + 1))
    said = [(e["nick"], e["text"]) for e in stored if e["type"] == "message"]
    assert len(said) == len(set(said)) == total
    for name, lines in senders.items():
        assert [t for n, t in said if n == name] == lines
    # paging back returns what the live stream delivered
    live = {o["seq"]: (o["type"], o.get("nick"), o.get("text")) for o in seen}
    paged = {e["seq"]: (e["type"], e.get("nick"), e.get("text")) for e in stored}
    assert all(paged[s] == v for s, v in live.items())
    relay.terminate()
    assert await relay.wait(30) == 0


def _one_line_error(r: subprocess.CompletedProcess, *words: str) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, (r.returncode, r.stderr)
    assert all(w in lines[0] for w in words), lines[0]
    assert "Traceback" not in r.stderr
    return lines[0]


async def test_a_second_relay_on_the_same_data_is_refused_in_one_line(procs, tmp_path):
    data = str(tmp_path / "relay")
    first, _port = await procs.relay("127.0.0.1:0", "--data", data, *FAST)
    line = _one_line_error(run_cli("relay", "--bind", "127.0.0.1:0", "--data", data), "another relay")
    assert f"pid {first.pid}" in line and "give this one --data DIR" in line
    first.terminate()
    assert await first.wait(30) == 0
    # once it is gone, the data is free again (and the history is there)
    again, _port = await procs.relay("127.0.0.1:0", "--data", data, *FAST)
    again.terminate()
    assert await again.wait(30) == 0


def test_a_damaged_room_log_is_a_one_line_error_at_start(tmp_path):
    data = tmp_path / "relay"
    data.mkdir()
    (data / "relay.sqlite3").write_bytes(b"this is not a database, " * 100)
    _one_line_error(run_cli("relay", "--bind", "127.0.0.1:0", "--data", str(data)), "damaged")


READ_ONLY = """
import os, sys
from udproom.protocol import cli, relay, roomlog  # imported (and the flags parsed) while still root
import sqlite3, fcntl, platformdirs
args = cli.build_parser().parse_args(["relay", "--bind", "127.0.0.1:0", "--data", sys.argv[1]])
os.setgid(65534); os.setuid(65534)
try:
    cli._open_room_log(args)
except cli.Failure as exc:
    sys.stderr.write(f"udproom relay: {exc}\\n")
    sys.exit(1)
sys.exit(3)
"""


def test_a_read_only_data_directory_is_a_one_line_error_at_start():
    top = tempfile.mkdtemp(prefix="udproom-ro-")
    try:
        os.chmod(top, 0o755)
        where = os.path.join(top, "data")
        os.mkdir(where, 0o555)
        if os.geteuid() == 0:  # root writes anywhere: open the relay's log as nobody
            cmd = [sys.executable, "-c", READ_ONLY, where]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        else:
            r = run_cli("relay", "--bind", "127.0.0.1:0", "--data", where)
        _one_line_error(r, "cannot write", where)
    finally:
        os.chmod(os.path.join(top, "data"), 0o755)
        subprocess.run(["rm", "-rf", top], check=False)


def test_memory_and_data_together_are_bad_usage(tmp_path):
    r = run_cli("relay", "--memory", "--data", str(tmp_path))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--memory" in r.stderr


def test_history_errors_are_one_line(silent_port):
    r = run_cli("history", "--join", f"127.0.0.1:{silent_port}", "--room", "lobby", "--timeout", "0.5")
    _one_line_error(r, "timed out", "127.0.0.1")
    r = run_cli("history", "--join", "127.0.0.1:6000", "--room", "not a room!")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


async def test_history_runs_while_you_chat_under_your_default_nick(procs):
    """Nicks are unique per relay and `history` joins no room: its default nick is its own, so it is
    not refused while you are in the app under your login name."""
    from udproom.protocol.cli import login_nick

    relay, port = await procs.relay("127.0.0.1:0", *FAST)
    addr = f"127.0.0.1:{port}"
    me = await procs.start("me", "listen", "--join", addr, "--room", "lobby", "--nick", login_nick(), *FAST)
    await me.wait_json(lambda o: o["type"] == "joined", 20, "joined")
    p = await procs.start("history", "history", "--join", addr, "--room", "lobby", *FAST)
    assert await p.wait(30) == 0, p.stderr
    assert any(e["type"] == "join" and e["nick"] == login_nick() for e in p.json), p.json
    # --nick still overrides: your own nick, while you hold it, is refused
    p = await procs.start(
        "history2", "history", "--join", addr, "--room", "lobby", "--nick", login_nick(), *FAST
    )
    assert await p.wait(30) == 1 and "in use" in "".join(p.stderr), p.stderr
    relay.terminate()
    assert await relay.wait(30) == 0


def test_the_default_history_nick_is_valid_random_and_not_the_login_nick():
    from udproom.protocol.cli import history_nick, login_nick
    from udproom.protocol.names import check_nick, nick_key

    nicks = {history_nick() for _ in range(20)}
    assert len(nicks) > 1 and all(check_nick(n) == n for n in nicks)
    assert nick_key(login_nick()) not in {nick_key(n) for n in nicks}
