"""Passphrase rooms through the headless commands, as real processes on 127.0.0.1 (with the
chosen Argon2id parameters: each derivation takes a third of a second): `--passphrase-file` on
listen, send and history; a wrong passphrase is one line and exit 1; the relay's data directory
never holds the room's text."""

from __future__ import annotations

from .procs import FAST


async def test_passphrase_room_through_listen_send_and_history(procs, tmp_path):
    good = tmp_path / "good"
    good.write_text("correct horse battery\n")
    bad = tmp_path / "bad"
    bad.write_text("correct horse\n")
    data = tmp_path / "relay"
    relay, port = await procs.relay("127.0.0.1:0", "--data", str(data), *FAST)
    addr = f"127.0.0.1:{port}"
    pf = ("--passphrase-file", str(good))
    listener = await procs.listen("alice", addr, "vault", *pf, "--count", "2", "--timeout", "60", *FAST)
    await listener.wait_json(lambda o: o["type"] == "joined", 40, "joined")

    bob = await procs.send("bob", addr, "vault", *pf, "--timeout", "40", *FAST, "ultramarine-4471 first")
    assert await bob.wait(60) == 0, bob.stderr
    eve = await procs.send("eve", addr, "vault", "--passphrase-file", str(bad), "--timeout", "40", *FAST, "x")
    assert await eve.wait(60) == 1
    assert eve.stderr == ["udproom send: cannot join #vault: wrong passphrase for #vault"], eve.stderr
    eve2 = await procs.listen("eve2", addr, "vault", "--passphrase-file", str(bad), "--timeout", "40", *FAST)
    assert await eve2.wait(60) == 1
    assert eve2.stderr == ["udproom listen: cannot join #vault: wrong passphrase for #vault"], eve2.stderr
    assert eve2.stdout == []
    mallory = await procs.send("mallory", addr, "vault", "--timeout", "40", *FAST, "y")
    assert await mallory.wait(60) == 1
    assert mallory.stderr == ["udproom send: #vault has a passphrase: give it with --passphrase-file FILE"]
    bob = await procs.send("bob", addr, "vault", *pf, "--timeout", "40", *FAST, "ultramarine-4471 second")
    assert await bob.wait(60) == 0, bob.stderr

    assert await listener.wait(60) == 0, listener.stderr
    assert [t for _n, t in listener.messages()] == ["ultramarine-4471 first", "ultramarine-4471 second"]

    hist = await procs.start("h1", "history", "--join", addr, "--room", "vault", *pf, *FAST)
    assert await hist.wait(60) == 0, hist.stderr
    assert [o["text"] for o in hist.json if o["type"] == "message"] == [
        "ultramarine-4471 first",
        "ultramarine-4471 second",
    ]
    nope = await procs.start("h2", "history", "--join", addr, "--room", "vault", *FAST)
    assert await nope.wait(60) == 1
    assert nope.stderr == ["udproom history: #vault has a passphrase: give it with --passphrase-file FILE"]
    assert not nope.json

    for _ in range(2):  # running (WAL and all), then stopped
        raw = b"".join(p.read_bytes() for p in data.rglob("*") if p.is_file())
        assert raw and b"ultramarine-4471" not in raw and b"correct horse" not in raw
        relay.terminate()
        await relay.wait(30)
