"""Registered nicks as real processes (issue 11): `udproom register` binds a nick to an identity
key on a relay; `send` under that nick with another key exits non-zero with one line, also after
the relay restarts on the same data; the relay's `--admin-key` file is checked at start."""

from __future__ import annotations

import signal
import subprocess

from udproom.protocol.crypto import Identity

from .procs import CLI, FAST


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


async def test_a_registered_nick_is_refused_to_another_key_across_a_restart(procs, tmp_path):
    data = str(tmp_path / "relay")
    admins = tmp_path / "admins"
    admins.write_text(f"# the relay's operators\n{Identity.generate().fingerprint}\n")
    extra = ("--data", data, "--admin-key", str(admins), "--max-rooms-per-key", "5", *FAST)
    relay, port = await procs.relay("127.0.0.1:0", *extra)
    addr = f"127.0.0.1:{port}"
    key = str(tmp_path / "alice.key")

    reg = await procs.start("reg", "register", "--join", addr, "--nick", "alice", "--identity", key, *FAST)
    assert await reg.wait(30) == 0, reg.stderr
    assert any("nick alice is registered to your key" in line for line in reg.stderr), reg.stderr

    async def refused_send(name: str) -> None:
        p = await procs.send("alice", addr, "lobby", "--timeout", "20", *FAST)
        p.name = name
        assert await p.wait(30) == 1, p.stderr
        assert [line for line in p.stderr if line.strip()] == [
            "udproom send: refused: nick alice is registered on this relay"
        ], p.stderr

    await refused_send("send1")
    relay.signal(signal.SIGTERM)
    assert await relay.wait(20) == 0, relay.stderr
    relay, port = await procs.relay(f"127.0.0.1:{port}", *extra, name="relay2")
    await refused_send("send2")
    # the owner, with its key, registers again (already its own): fine
    again = await procs.start("reg2", "register", "--join", addr, "--nick", "alice", "--identity", key, *FAST)
    assert await again.wait(30) == 0, again.stderr


def test_a_bad_admin_key_file_is_one_line(tmp_path):
    bad = tmp_path / "admins"
    bad.write_text("not-a-fingerprint\n")
    got = run_cli("relay", "--bind", "127.0.0.1:0", "--memory", "--admin-key", str(bad))
    assert got.returncode == 2
    assert got.stderr.strip().splitlines() == [
        f"udproom relay: --admin-key {bad} line 1: a fingerprint has 24 characters, not 15"
    ]


def test_a_command_put_out_of_its_room_ends_with_one_line():
    from udproom.protocol import cli
    from udproom.protocol import events as E

    said: list = []
    cli._report(E.Kicked("lobby", "boss", "spam"), "listen", said.append)
    assert said == ["put out of #lobby by boss: spam"]
