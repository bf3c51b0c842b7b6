"""The one pin store (protocol/pins.py): nick -> key pins per relay and in direct mode, relay keys
per address; the files of earlier versions; bad files; two processes of one user pinning at once."""

from __future__ import annotations

import multiprocessing
import tomllib

import pytest

from udproom.protocol import crypto as C
from udproom.protocol.names import nick_key
from udproom.protocol.pins import DIRECT, KeyPins, KnownRelays, PinFileError

A, B, D = (C.Identity.generate() for _ in range(3))
RELAY = "127.0.0.1:6000"


def test_pins_are_kept_in_a_file_and_read_back(tmp_path):
    path = tmp_path / "conf" / "known_peers.toml"
    pins = KeyPins.load(path)  # no file yet: empty
    assert len(pins) == 0 and not path.exists()
    assert pins.pin("Alice", A.public) and not pins.pin("alice", B.public)  # one nick by nick_key
    assert pins.pin('we"ird\\nick', B.fingerprint)  # a key or its fingerprint
    assert not pins.pin("carl", b"short")  # not a key: nothing pinned
    again = KeyPins.load(path)
    assert again.get("ALICE") == A.fingerprint and again.get('we"ird\\nick') == B.fingerprint
    assert len(again) == 2 and "alice" in again and "carl" not in again
    # each scope is its own: a relay's pins do not leak into direct mode's, nor into another relay's
    relay = KeyPins.load(path, RELAY)
    assert len(relay) == 0 and relay.pin("alice", B.public)
    assert KeyPins.load(path).get("alice") == A.fingerprint
    assert KeyPins.load(path, RELAY) == {"alice": B.fingerprint}
    assert KeyPins.load(path, "127.0.0.1:6001") == {}


def test_a_store_in_memory_only(tmp_path):
    pins = KeyPins()
    assert pins.pin("bob", A.public) and pins.get("BOB") == A.fingerprint and pins.path is None
    pins[nick_key("Eve")] = B.fingerprint  # (ClientSession._check_pin's way)
    assert pins == {"eve": B.fingerprint, "bob": A.fingerprint}
    assert list(tmp_path.iterdir()) == []


def test_files_of_earlier_versions_are_read_and_kept(tmp_path):
    """Existing users' files: known_peers.toml's [nicks] of hex keys (direct mode),
    known_keys.toml's table per relay and known_relays.toml's address = fingerprint. Each is read
    as it is; the next pin keeps every old one."""
    peers = tmp_path / "known_peers.toml"
    peers.write_text(
        "# udproom direct mode: the identity key first seen for each nick (trust on first use)\n"
        f'[nicks]\nAlice = "{A.public.hex()}"\n"we\\"ird" = "{B.public.hex()}"\n',
        encoding="utf-8",
    )
    keys = tmp_path / "known_keys.toml"
    keys.write_text(
        "# udproom: members' keys per relay, pinned on first sight (trust on first use).\n\n"
        f'["{RELAY}"]\n"alice" = "{A.fingerprint}"\n\n["[::1]:6000"]\n"bob" = "{B.fingerprint}"\n',
        encoding="utf-8",
    )
    relays = tmp_path / "known_relays.toml"
    relays.write_text(
        "# udproom: relay keys pinned on first connection (trust on first use).\n"
        "# Delete a line only when you know that relay's key changed.\n\n"
        f'"{RELAY}" = "{A.fingerprint}"\n"[::1]:6000" = "{B.fingerprint.upper()}"\n',
        encoding="utf-8",
    )
    direct = KeyPins.load(peers)
    assert direct.get("alice") == A.fingerprint and direct.get('WE"IRD') == B.fingerprint
    assert KeyPins.load(keys, RELAY) == {"alice": A.fingerprint}
    assert KeyPins.load(keys, "[::1]:6000") == {"bob": B.fingerprint}
    known = KnownRelays(relays)
    assert known.get(RELAY) == A.fingerprint and known.get("[::1]:6000") == B.fingerprint
    # a new pin in each: the old ones are all still there, read back
    assert direct.pin("dora", D.public) and KeyPins.load(keys, RELAY).pin("dora", D.public)
    known.remember("10.0.0.1:6000", D.fingerprint)
    assert KeyPins.load(peers) == {"alice": A.fingerprint, 'we"ird': B.fingerprint, "dora": D.fingerprint}
    assert '"Alice" = ' in peers.read_text(encoding="utf-8")  # (the nick as first seen, not its key)
    assert KeyPins.load(keys, RELAY) == {"alice": A.fingerprint, "dora": D.fingerprint}
    assert KeyPins.load(keys, "[::1]:6000") == {"bob": B.fingerprint}
    assert tomllib.loads(relays.read_text(encoding="utf-8")) == {
        RELAY: A.fingerprint,
        "[::1]:6000": B.fingerprint,
        "10.0.0.1:6000": D.fingerprint,
    }


@pytest.mark.parametrize(
    "text",
    [
        b"not toml [",
        b"[nicks]\nalice = 'not a key'\n",
        f"[direct]\nalice = '{A.public.hex()[:-2]}'\n".encode(),
        f"alice = '{A.fingerprint}'\n".encode(),  # (a nick outside any table)
        b'[direct]\n"two\\nlines" = "x"\n',  # (the name is quoted in the message: one line)
        b"[direct]\n\xff\xfe = 1\n",  # not UTF-8
    ],
)
def test_a_bad_pin_file_is_said_in_one_line_and_never_rewritten(tmp_path, text):
    path = tmp_path / "known_peers.toml"
    path.write_bytes(text)
    before = path.read_bytes()
    for attempt in (lambda: KeyPins.load(path), lambda: KeyPins.load(path, RELAY)):
        with pytest.raises(PinFileError) as err:
            attempt()
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    pins = KeyPins(path)  # (one made without loading: its pin is kept in memory, the file as it was)
    assert pins.pin("bob", B.public) and pins.get("bob") == B.fingerprint
    assert str(path) in pins.write_error and "\n" not in pins.write_error
    assert path.read_bytes() == before


def test_a_bad_relay_pin_is_said_in_one_line(tmp_path):
    path = tmp_path / "known_relays.toml"
    path.write_text(f'"{RELAY}" = "not-a-fingerprint"\n', encoding="utf-8")
    with pytest.raises(PinFileError) as err:
        KnownRelays(path).get(RELAY)
    assert str(path) in str(err.value) and RELAY in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(PinFileError):
        KnownRelays(path).remember("10.0.0.1:6000", A.fingerprint)
    assert path.read_text(encoding="utf-8") == f'"{RELAY}" = "not-a-fingerprint"\n'


def test_the_first_pin_written_wins_between_two_stores_of_one_file(tmp_path):
    """The app and a `send` each loaded the file before either met bob: the one that writes
    second keeps the first one's pin (trust on first use holds across processes) and takes it as
    its own, so it warns about its own bob from then on; a relay's first pin stays too."""
    path = tmp_path / "known_keys.toml"
    app, send = KeyPins.load(path, RELAY), KeyPins.load(path, RELAY)
    assert app.pin("bob", A.public)
    assert not send.pin("Bob", B.public)  # somebody else pinned bob first
    assert send.get("bob") == A.fingerprint == KeyPins.load(path, RELAY).get("bob")
    relays = tmp_path / "known_relays.toml"
    KnownRelays(relays).remember(RELAY, A.fingerprint)
    KnownRelays(relays).remember(RELAY, B.fingerprint)
    assert KnownRelays(relays).get(RELAY) == A.fingerprint


def _pin_many(path, scope, who, n):
    """One process (the app, or a headless `send`) meeting `n` new nicks, one pin at a time."""
    if scope is None:
        relays = KnownRelays(path)
        for i in range(n):
            relays.remember(f"10.{who}.0.{i}:6000", C.fingerprint(bytes([who, i]) * 16))
        return
    pins = KeyPins.load(path, scope)
    for i in range(n):
        assert pins.pin(f"{who}-{i}", bytes([who, i]) * 16), pins.write_error


@pytest.mark.parametrize("scope", [DIRECT, RELAY, None], ids=["direct", "relay", "relay-keys"])
def test_processes_pinning_at_once_lose_none_of_each_others_pins(tmp_path, scope):
    """Four processes of one user (the app, `listen`, `send`...) with one config directory pin new
    keys at the same time. Each pin re-reads the file, adds to it and replaces it under a lock:
    every pin of every process is in the file afterwards. (Failed before: with the two stores of
    before, protocol/known.py's and direct mode's, which re-read without a lock or not at all, the
    file kept 60-106 of these 240 pins, in 5 runs of each of the three.)"""
    path = tmp_path / "conf" / "pins.toml"
    n, procs = 60, []
    ctx = multiprocessing.get_context("fork")
    for who in range(1, 5):
        procs.append(ctx.Process(target=_pin_many, args=(path, scope, who, n)))
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    if scope is None:
        assert len(tomllib.loads(path.read_text(encoding="utf-8"))) == 4 * n
    else:
        pins = KeyPins.load(path, scope)
        assert len(pins) == 4 * n
        assert all(
            pins.get(f"{w}-{i}") == C.fingerprint(bytes([w, i]) * 16) for w in range(1, 5) for i in range(n)
        )
    assert sorted(q.name for q in path.parent.iterdir()) == ["pins.toml"]  # no temporary, no lock file
