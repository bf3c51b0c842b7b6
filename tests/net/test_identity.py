"""Identity keys and the relay's key on the command line (docs/security.md, protocol 2): the relay
says its fingerprint, clients pin it on first use (known_relays.toml) or from the address
(`--join HOST:PORT#FINGERPRINT`) and refuse another key in one line; a key file that others can
read is refused in one line (exit 2) by every entry point."""

from __future__ import annotations

import os
import re
import tomllib

import pytest

from udproom.protocol import paths
from udproom.protocol.cli import main as headless
from udproom.protocol.crypto import Identity, save_identity
from udproom.tui.cli import main as app_main

from .conftest import hostport

FAST = ("--fast-timers",)
KEY_RE = re.compile(r"relay key ([a-z2-7]{4}(?:-[a-z2-7]{4}){5})")


def _fingerprint_said(relay) -> str:
    for line in relay.stderr:
        m = KEY_RE.search(line)
        if m:
            return m.group(1)
    raise AssertionError(f"no 'relay key' line: {relay.stderr}")


async def _send(procs, name, join, text, *extra):
    p = await procs.start(
        name, "send", "--join", join, "--room", "lobby", "--nick", name, *FAST, *extra, text
    )
    code = await p.wait(30)
    return code, p.stderr


async def test_a_client_pins_the_relays_key_on_first_use_and_refuses_another(procs, tmp_path):
    key_a, key_b = tmp_path / "a.key", tmp_path / "b.key"
    relay, port = await procs.relay("127.0.0.1:0", "--identity", str(key_a), *FAST)
    fp_a = _fingerprint_said(relay)
    addr = hostport("127.0.0.1", port)
    assert await _send(procs, "ann", addr, "first") == (0, [])
    known = tomllib.loads(paths.known_relays_path().read_text())
    assert known == {addr: fp_a}  # pinned on first use, under the address
    assert await _send(procs, "ann", addr, "again") == (0, [])  # the same key: fine
    relay.terminate()
    await relay.wait(30)
    # another relay (another key) on that address: refused in one line naming both keys
    relay2, port2 = await procs.relay(addr, "--identity", str(key_b), *FAST, name="relay2")
    assert port2 == port
    fp_b = _fingerprint_said(relay2)
    assert fp_b != fp_a
    code, err = await _send(procs, "ann", addr, "to an impostor")
    assert code != 0 and len(err) == 1, err
    assert f"key {fp_b} is not the pinned {fp_a}" in err[0] and str(paths.known_relays_path()) in err[0]
    # the address may pin the key itself: the right one connects, a wrong one is refused
    assert await _send(procs, "bob", f"{addr}#{fp_b.upper()}", "checked") == (0, [])
    code, err = await _send(procs, "bob", f"{addr}#{fp_a}", "wrong pin")
    assert code != 0 and len(err) == 1 and f"is not the pinned {fp_a}" in err[0]
    assert tomllib.loads(paths.known_relays_path().read_text()) == {addr: fp_a}  # never re-pinned


def test_a_bad_fingerprint_in_the_address_is_bad_usage(capsys):
    assert headless(["send", "--join", "127.0.0.1:6000#not-a-key", "--room", "x", "hi"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fingerprint" in err[0]


@pytest.fixture
def open_key(tmp_path):
    """An identity key file that group and others can read (mode 0644)."""
    path = tmp_path / "open.key"
    save_identity(Identity.generate(), path)
    os.chmod(path, 0o644)
    return str(path)


@pytest.mark.parametrize(
    "argv",
    [
        ["send", "--join", "127.0.0.1:6000", "--room", "x", "hi"],
        ["listen", "--join", "127.0.0.1:6000", "--room", "x"],
        ["history", "--join", "127.0.0.1:6000", "--room", "x"],
        ["relay", "--bind", "127.0.0.1:0", "--memory"],
    ],
    ids=["send", "listen", "history", "relay"],
)
def test_a_key_file_others_can_read_is_refused_in_one_line(capsys, open_key, argv):
    assert headless([*argv, "--identity", open_key]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"udproom {argv[0]}: identity {open_key} is readable by others (mode 0644): chmod 600 {open_key}"
    ]


def test_the_app_refuses_a_key_file_others_can_read_in_one_line(capsys, open_key):
    assert app_main(["--join", "127.0.0.1:6000", "--identity", open_key]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "readable by others (mode 0644)" in err[0] and "Traceback" not in err[0]


async def test_the_users_key_is_made_once_with_mode_600_and_kept(procs):
    _relay, port = await procs.relay("127.0.0.1:0", *FAST)
    addr = hostport("127.0.0.1", port)
    assert await _send(procs, "ann", addr, "hi") == (0, [])
    key = paths.identity_path()
    assert (key.stat().st_mode & 0o777) == 0o600
    first = key.read_bytes()
    assert await _send(procs, "ann", addr, "again") == (0, [])
    assert key.read_bytes() == first


async def test_a_sniffer_between_clients_and_the_relay_reads_no_text_nick_or_token(procs):
    """Real processes on real sockets, through a proxy that records every datagram both ways."""
    from .impair import ImpairProxy

    _relay, port = await procs.relay("127.0.0.1:0", *FAST)
    async with ImpairProxy(("127.0.0.1", port), seed=5, record=True) as proxy:
        lst = await procs.listen("quokkalistener", proxy.address, "hiddenroom", "--count", "1", *FAST)
        await lst.wait_json(lambda o: o["type"] == "joined", 20, "joined")
        nick = "zanzibarsender"
        p = await procs.start(
            nick, "send", "--join", proxy.address, "--room", "hiddenroom", "--nick", nick,
            *FAST, "the password is xylophone-42",
        )  # fmt: skip
        assert await p.wait(30) == 0, p.stderr
        assert await lst.wait(30) == 0, lst.stderr
        assert lst.messages() == [("zanzibarsender", "the password is xylophone-42")]
        heard = proxy.heard
    assert heard and {d for d, _ in heard} == {"up", "down"}
    secrets = ["xylophone", "quokkalistener", "zanzibarsender", "hiddenroom"]
    for _direction, data in heard:
        for s in secrets:
            assert s.encode() not in data, s


async def test_the_app_hosting_a_relay_uses_the_data_directorys_relay_key_and_pins_it():
    from udproom.protocol.crypto import load_identity
    from udproom.tui import session

    spec = session.check(session.Spec("host", "127.0.0.1:0", "ann", ["lobby"]))
    client, server, _share = await session.build(spec)
    try:
        key = load_identity(paths.relay_identity_path())  # made there on first use, as `relay` does
        assert server.relay.identity.public == key.public
        assert client.pin == key.fingerprint  # its own relay: checked, not trusted on first use
        assert client.core.identity.public == load_identity(paths.identity_path()).public
    finally:
        await server.stop()


def test_a_relay_client_keeps_the_members_keys_it_pins_per_relay(tmp_path):
    from udproom.protocol.names import nick_key
    from udproom.protocol.net.runners import RelayClient
    from udproom.protocol.pins import KeyPins

    path = tmp_path / "known_keys.toml"
    bob = Identity.generate()
    RelayClient("127.0.0.1:6000", "ann", known_keys=path).core._check_pin("Bob", bob.public, "lobby")
    assert KeyPins.load(path, "127.0.0.1:6000") == {nick_key("Bob"): bob.fingerprint}
    # the next run on that relay holds bob to that key; on another relay bob is unknown
    assert RelayClient("127.0.0.1:6000", "ann", known_keys=path).core.key_pins == {"bob": bob.fingerprint}
    assert RelayClient("127.0.0.1:6001", "ann", known_keys=path).core.key_pins == {}
