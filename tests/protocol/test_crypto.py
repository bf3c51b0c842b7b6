"""protocol/crypto.py: known answers for the key derivations, the handshake (success, pinning,
tampering), the sealed channel (replay, reorder, tamper, forgery: each refused with CryptoError and
counted by the caller), room keys, passphrase keys, signatures and the identity key file."""

from __future__ import annotations

import hashlib
import os
import stat
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from udproom.protocol import crypto as C

SALT = bytes(range(16))
PASS = "correct horse battery staple"
SMALL = (2, 8 << 20)  # Argon2id parameters small enough for many tests (check=False)


def _pair(identity: C.Identity | None = None, responder: C.Identity | None = None, **kw):
    responder = responder or C.Identity.generate()
    ini = C.Initiator(identity=identity, **kw)
    res = C.Responder(responder)
    msg2 = res.respond(ini.start(), b"welcome")
    msg3, payload2 = ini.finish(msg2, b"login")
    assert payload2 == b"welcome"
    assert res.finish(msg3) == b"login"
    return ini, res


def _count_opened(channel: C.SealedChannel, packets: list[bytes]) -> tuple[list[bytes], int]:
    """What a caller does: open each datagram, keep what opens, count what raises CryptoError."""
    opened, dropped = [], 0
    for p in packets:
        try:
            opened.append(channel.open(p))
        except C.CryptoError:
            dropped += 1
    return opened, dropped


def _flip(data: bytes, bit: int) -> bytes:
    b = bytearray(data)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


# --------------------------------------------------------------------------- known answers


def test_passphrase_known_answer_small_parameters():
    keys = C.derive_passphrase(PASS, SALT, *SMALL, check=False)
    assert keys.room.key.hex() == "279cdba5ca7fbf67d947e77ed068dfa6be79e0b9865d7d50aa304c8de9787423"
    assert keys.room.kid == 651228023
    assert keys.verifier.hex() == "a71e8dbcf96db0a0c47a636b8acb16b5b5a8f053b4f0a2fa51a98906c9c9d7a1"


def test_passphrase_known_answer_chosen_parameters():
    keys = C.derive_passphrase(PASS, SALT)  # ARGON_OPS, ARGON_MEM: what rooms are made with
    assert keys.room.key.hex() == "f4f74bd3f5bcbeaaf3a505fbcc9fc2b7bd40cadd1344d47f5b4ff6f6f2728e1e"
    assert keys.room.kid == 739264693
    assert keys.verifier.hex() == "09a0adf8cbf8dc899acab7b8ee9d010211f9a6f53e1053c79fa030bfc5da7a4f"


def test_passphrase_derivation_is_the_documented_schedule():
    """Recomputed with hashlib's BLAKE2b (keyed, personalised): the KDF is what security.md says."""
    import nacl.pwhash.argon2id as argon

    master = argon.kdf(32, PASS.encode(), SALT, opslimit=SMALL[0], memlimit=SMALL[1])

    def kdf(label: bytes) -> bytes:
        return hashlib.blake2b(SALT, digest_size=32, key=master, person=label.ljust(16, b"\0")).digest()

    keys = C.derive_passphrase(PASS, SALT, *SMALL, check=False)
    assert keys.room.key == kdf(b"udproom pp room")
    assert keys.verifier == kdf(b"udproom pp verif")
    assert keys.room.kid == int.from_bytes(kdf(b"udproom pp kid")[:4], "big")
    assert keys.verifier != keys.room.key


def test_passphrase_is_nfc_normalised_and_salted():
    composed = C.derive_passphrase("caf\u00e9", SALT, *SMALL, check=False)
    decomposed = C.derive_passphrase("cafe\u0301", SALT, *SMALL, check=False)
    assert composed.room.key == decomposed.room.key
    other_salt = C.derive_passphrase("caf\u00e9", bytes(16), *SMALL, check=False)
    assert other_salt.room.key != composed.room.key and other_salt.verifier != composed.verifier
    other_pass = C.derive_passphrase("cafe", SALT, *SMALL, check=False)
    assert other_pass.room.key != composed.room.key


def test_passphrase_parameters_are_checked():
    for ops, mem in [(1, C.ARGON_MEM), (C.ARGON_OPS, 64 << 20), (99, C.ARGON_MEM), (C.ARGON_OPS, 4 << 30)]:
        with pytest.raises(C.CryptoError, match="outside"):
            C.derive_passphrase(PASS, SALT, ops, mem)
    with pytest.raises(C.CryptoError):
        C.derive_passphrase(PASS, b"short", *SMALL, check=False)
    with pytest.raises(C.CryptoError):
        C.derive_passphrase("", SALT, *SMALL, check=False)


def test_verifier_record_admits_only_the_right_verifier():
    right = C.derive_passphrase(PASS, SALT, *SMALL, check=False)
    wrong = C.derive_passphrase(PASS + "!", SALT, *SMALL, check=False)
    record = C.verifier_record(right.verifier)
    assert record != right.verifier  # the relay's files do not hold the verifier itself
    assert C.verifier_matches(record, right.verifier)
    assert not C.verifier_matches(record, wrong.verifier)
    assert not C.verifier_matches(record, right.room.key)


def test_hashlib_blake2b_is_libsodiums_generichash():
    """crypto.py computes BLAKE2b with hashlib (faster to call): it must be libsodium's function,
    keyed and personalised alike."""
    import nacl.bindings as nb

    for data, key, person, size in [
        (b"", b"", b"", 32),
        (b"x" * 1150, b"", b"udproom-room", 32),
        (b"y" * 42, bytes(range(32)), b"udproom room tag", 16),
        (b"z", bytes(32), b"udproom-fp", 15),
    ]:
        ours = hashlib.blake2b(data, digest_size=size, key=key, person=person).digest()
        theirs = nb.crypto_generichash_blake2b_salt_personal(data, digest_size=size, key=key, person=person)
        assert ours == theirs


KAT_PROLOGUE = b"udproom v2 kat"


def _kat_handshake():
    relay, user = C.Identity(bytes([1]) * 32), C.Identity(bytes([2]) * 32)
    ini = C.Initiator(identity=user, prologue=KAT_PROLOGUE, ephemeral=bytes([3]) * 32)
    res = C.Responder(relay, prologue=KAT_PROLOGUE, ephemeral=bytes([4]) * 32)
    msg1 = ini.start()
    msg2 = res.respond(msg1, b"w")
    msg3, _ = ini.finish(msg2, b"l")
    res.finish(msg3)
    return relay, user, ini, res, msg1, msg2, msg3


def test_handshake_known_answer():
    relay, user, ini, res, _msg1, msg2, msg3 = _kat_handshake()
    assert relay.fingerprint == "x4dp-3744-zxv5-sanb-3py2-l2xu"
    assert user.fingerprint == "skg2-f4ff-bmjf-rgqk-gscy-stki"
    assert ini.channel.send_key.hex() == "3c3fa624b9fa8d659772b7ef5f8add1153373a6c9850ddbb2bfcdc13b632d7c3"
    assert ini.channel.recv_key.hex() == "6caeef4463ceb8803fe559f2927df392aeacd586347533f267b5eae970403e9f"
    assert ini.handshake_hash.hex() == "de84e63cfb38dd11c08fdec6b3b1c4268711a0e85f2cc4864d802d5319b5f86f"
    # Ed25519 and the AEAD with a fixed nonce are deterministic: the messages are too
    assert (
        hashlib.sha256(msg2).hexdigest() == "93d7b61ae2538685218a9f90743867311e92a565736152f8bd811aaf41d957d9"
    )
    assert (
        hashlib.sha256(msg3).hexdigest() == "e443be6b1c6460a506d7c223d43a12797a71c7920deb6c29afa62700b2664f40"
    )
    assert (res.channel.send_key, res.channel.recv_key) == (ini.channel.recv_key, ini.channel.send_key)
    assert res.initiator_key == user.public and ini.responder_key == relay.public


def test_handshake_keys_are_the_documented_schedule():
    """dh = X25519(e_i, e_r); th1 = H(prologue, msg1, e_r); th2 = H(th1, S_r); keys = KDF(dh, th2)."""
    import nacl.bindings as nb

    relay, _user, ini, _res, msg1, msg2, _ = _kat_handshake()

    def h(*parts: bytes, person: bytes) -> bytes:
        data = b"".join(struct.pack(">I", len(p)) + p for p in parts)
        return hashlib.blake2b(data, digest_size=32, person=person).digest()

    e_r = msg2[1:33]
    dh = nb.crypto_scalarmult(bytes([3]) * 32, e_r)
    assert dh == nb.crypto_scalarmult(bytes([4]) * 32, msg1[1:])
    th1 = h(KAT_PROLOGUE, msg1, e_r, person=b"udproom-hs1")
    th2 = h(th1, relay.public, person=b"udproom-hs2")
    assert ini.handshake_hash == th2

    def kdf(label: bytes) -> bytes:
        return hashlib.blake2b(th2, digest_size=32, key=dh, person=label.ljust(16, b"\0")).digest()

    assert ini.channel.send_key == kdf(b"udproom i2r")
    assert ini.channel.recv_key == kdf(b"udproom r2i")


# --------------------------------------------------------------------------- handshake


def test_handshake_with_and_without_initiator_identity():
    user = C.Identity.generate()
    ini, res = _pair(identity=user)
    assert res.initiator_key == user.public
    anon, res2 = _pair()
    assert res2.initiator_key is None
    assert anon.handshake_hash != ini.handshake_hash  # fresh ephemerals: every session differs
    # both directions work, and each side's packets open only on the other side
    assert res.channel.open(ini.channel.seal(b"up")) == b"up"
    assert ini.channel.open(res.channel.seal(b"down")) == b"down"
    with pytest.raises(C.CryptoError):
        ini.channel.open(ini.channel.seal(b"reflected"))


def test_responder_that_requires_an_identity_refuses_an_anonymous_initiator():
    ini = C.Initiator()
    res = C.Responder(C.Identity.generate(), require_identity=True)
    msg3, _ = ini.finish(res.respond(ini.start()))
    with pytest.raises(C.CryptoError, match="identity is required"):
        res.finish(msg3)


def test_pinned_key_accepts_the_right_responder_and_refuses_another():
    relay = C.Identity.generate()
    _pair(responder=relay, pinned=relay.public)
    _pair(responder=relay, pinned=relay.fingerprint.upper().replace("-", ""))  # as typed in an address
    impostor = C.Identity.generate()
    for pin in (relay.public, relay.fingerprint):
        ini = C.Initiator(pinned=pin)
        res = C.Responder(impostor)
        with pytest.raises(C.PinMismatch, match=impostor.fingerprint):
            ini.finish(res.respond(ini.start()))
        assert ini.channel is None  # no keys, nothing to send


def test_a_relayed_answer_from_another_handshake_is_refused():
    """A man in the middle who forwards the real relay's msg2 to a different msg1 (its own)
    gets nothing the initiator accepts: msg2 is bound to the msg1 it answers."""
    relay = C.Identity.generate()
    victim = C.Initiator(pinned=relay.public)
    victim.start()
    mitm = C.Initiator()
    msg2 = C.Responder(relay).respond(mitm.start())
    with pytest.raises(C.CryptoError):
        victim.finish(msg2)


def test_prologue_mismatch_fails():
    ini = C.Initiator(prologue=b"hello as sent")
    res = C.Responder(C.Identity.generate(), prologue=b"hello as tampered")
    with pytest.raises(C.CryptoError):
        ini.finish(res.respond(ini.start()))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_bit_flip_in_a_handshake_message_fails(data):
    relay, user = C.Identity.generate(), C.Identity.generate()
    ini = C.Initiator(identity=user, pinned=relay.public)
    res = C.Responder(relay)
    msg1 = ini.start()
    which = data.draw(st.sampled_from(["msg1", "msg2", "msg3"]))
    if which == "msg1":
        msg1 = _flip(msg1, data.draw(st.integers(0, len(msg1) * 8 - 1)))
    try:
        msg2 = res.respond(msg1, b"w")
    except C.CryptoError:
        return  # a broken version byte
    if which == "msg2":
        msg2 = _flip(msg2, data.draw(st.integers(0, len(msg2) * 8 - 1)))
    try:
        msg3, _ = ini.finish(msg2, b"l")
    except C.CryptoError:
        assert which in ("msg1", "msg2")
        return
    assert which == "msg3"  # a changed msg1 or msg2 never yields keys
    msg3 = _flip(msg3, data.draw(st.integers(0, len(msg3) * 8 - 1)))
    with pytest.raises(C.CryptoError):
        res.finish(msg3)
    assert res.initiator_key is None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_handshake_garbage_raises_only_crypto_error(junk):
    res = C.Responder(C.Identity.generate())
    with pytest.raises(C.CryptoError):
        res.finish(junk)
    try:
        res.respond(junk)
    except C.CryptoError:
        pass
    ini = C.Initiator()
    ini.start()
    with pytest.raises(C.CryptoError):
        ini.finish(junk)


def test_a_retransmitted_msg3_gives_the_same_payload_and_a_different_one_is_refused():
    ini = C.Initiator()
    res = C.Responder(C.Identity.generate())
    msg3, _ = ini.finish(res.respond(ini.start()), b"login")
    assert res.finish(msg3) == b"login"
    assert res.finish(msg3) == b"login"  # our answer was lost, it said it again
    with pytest.raises(C.CryptoError):
        res.finish(_flip(msg3, 100))


# --------------------------------------------------------------------------- sealed channel


def test_replayed_tampered_and_forged_datagrams_are_dropped_and_counted():
    ini, res = _pair()
    good = [ini.channel.seal(f"m{i}".encode()) for i in range(5)]
    forger, _ = _pair()  # a session with the same layout and other keys
    bad = [
        good[1],  # replay
        _flip(good[2], 8 * 20),  # ciphertext bit
        good[3][:2] + (3).to_bytes(8, "big") + good[3][10:],  # packet number changed
        forger.channel.seal(b"forged"),
        good[4][:-1],  # truncated tag
        b"\xc1\x01" + bytes(30),
    ]
    opened, dropped = _count_opened(res.channel, [good[0], good[1], *bad, good[2], good[3], good[4]])
    assert opened == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    assert dropped == len(bad)


def test_reordering_within_the_window_is_accepted_beyond_it_refused():
    ini, res = _pair()
    res.channel.window = C.ReplayWindow(64)
    packets = [ini.channel.seal(bytes([i % 256])) for i in range(200)]
    late = packets[10]
    # 49 packets newest first: all within 64 of the newest, so all accepted
    opened, dropped = _count_opened(res.channel, packets[:10] + packets[11:60][::-1] + packets[60:100])
    assert dropped == 0 and len(opened) == 99
    assert _count_opened(res.channel, [late]) == ([], 1)  # 90 behind the newest: outside 64
    assert _count_opened(res.channel, [packets[60]]) == ([], 1)  # inside, but already seen
    assert _count_opened(res.channel, packets[100:]) == ([bytes([i % 256]) for i in range(100, 200)], 0)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1150), st.data())
def test_any_bit_flip_in_a_sealed_packet_never_decrypts(payload, data):
    ini, res = _pair_cached()
    packet = ini.channel.seal(payload)
    bit = data.draw(st.integers(0, len(packet) * 8 - 1))
    with pytest.raises(C.CryptoError):
        res.channel.open(_flip(packet, bit))
    assert res.channel.open(packet) == payload  # the untouched one still opens: nothing was marked


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=1150), st.data())
def test_any_bit_flip_in_a_room_packet_never_decrypts(batch, data):
    ini, res = _pair_cached()
    key = C.RoomKey.generate()
    blob = key.seal(batch)
    packet = res.channel.seal_room(blob, C.room_digest(blob))
    bit = data.draw(st.integers(0, len(packet) * 8 - 1))
    with pytest.raises(C.CryptoError):
        ini.channel.open_room(_flip(packet, bit), key)
    assert ini.channel.open_room(packet, key) == batch


_CACHED: list = []


def _pair_cached():
    """One handshake for many hypothesis examples (the channel state carries over harmlessly:
    every example seals a fresh packet number)."""
    if not _CACHED:
        _CACHED.append(_pair())
    return _CACHED[0]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200))
def test_random_bytes_never_open(junk):
    _ini, res = _pair_cached()
    with pytest.raises(C.CryptoError):
        res.channel.open(junk)
    with pytest.raises(C.CryptoError):
        res.channel.open_room(junk, C.RoomKey.generate())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 300), max_size=120), st.integers(1, 70))
def test_replay_window_accepts_exactly_the_new_numbers_inside_it(pns, size):
    window, seen, top = C.ReplayWindow(size), set(), -1
    for pn in pns:
        expected = pn not in seen and pn > top - size
        assert window.check(pn) == expected
        if expected:
            window.mark(pn)
            seen.add(pn)
            top = max(top, pn)


def test_packet_numbers_are_never_reused():
    ini, _ = _pair()
    pns = [int.from_bytes(ini.channel.seal(b"x")[2:10], "big") for _ in range(50)]
    assert pns == list(range(1, 51))  # 0 was the handshake's
    ini.channel.next_pn = C.MAX_PN + 1
    with pytest.raises(C.CryptoError, match="exhausted"):
        ini.channel.seal(b"x")


# --------------------------------------------------------------------------- room keys


def test_a_room_batch_sealed_once_opens_for_every_member_and_binds_each_session():
    relay = C.Identity.generate()
    members = [_pair(responder=relay) for _ in range(3)]
    key = C.RoomKey.generate()
    blob = key.seal(b"batch bytes")
    digest = C.room_digest(blob)
    packets = [res.channel.seal_room(blob, digest) for _ini, res in members]
    for (ini, _res), packet in zip(members, packets, strict=True):
        assert ini.channel.open_room(packet, key) == b"batch bytes"
        assert packet.endswith(blob)  # the shared part is the same bytes for everyone
    # member 0 knows the room key, but cannot make member 1 accept a batch: the tag is per session
    forged_blob = key.seal(b"forged events")
    forged = members[0][1].channel.seal_room(forged_blob, C.room_digest(forged_blob))
    with pytest.raises(C.CryptoError):
        members[1][0].channel.open_room(forged, key)
    # nor splice another blob behind a real member tag
    spliced = packets[2][: C.HEAD_BYTES + C.TAG_BYTES] + forged_blob
    with pytest.raises(C.CryptoError):
        members[2][0].channel.open_room(spliced, key)


def test_rotation_keeps_the_previous_key_and_shuts_out_a_departed_member():
    ring = C.RoomKeyring(keep=2)
    k1, k2, k3 = (C.RoomKey.generate(kid) for kid in (1, 2, 3))
    ring.add(k1)
    old = k1.seal(b"before")
    ring.add(k2)
    assert ring.open(old) == b"before"  # a retransmit under the old key still opens
    assert ring.current is k2
    departed = C.RoomKeyring()
    departed.add(k1)
    with pytest.raises(C.CryptoError, match="unknown room key id"):
        departed.open(k2.seal(b"after they left"))
    ring.add(k3)
    with pytest.raises(C.CryptoError):
        ring.open(old)
    with pytest.raises(C.CryptoError):
        k2.open(k2.seal(b"x", aad=b"#vault"), aad=b"#other")


def test_room_key_share_opens_only_for_its_recipient_and_names_its_sender():
    alice, bob, eve = (C.Identity.generate() for _ in range(3))
    key = C.RoomKey.generate()
    share = C.room_key_share(alice, bob.public, "#vault", key)
    sender, got = C.open_room_key_share(bob, "#vault", share)
    assert sender == alice.public and (got.key, got.kid) == (key.key, key.kid)
    for who, room, data in [
        (eve, "#vault", share),
        (bob, "#other", share),
        (bob, "#vault", _flip(share, 77)),
    ]:
        with pytest.raises(C.CryptoError):
            C.open_room_key_share(who, room, data)


# --------------------------------------------------------------------------- signatures


def test_signatures_fail_on_any_change():
    alice, mallory = C.Identity.generate(), C.Identity.generate()
    args = ("#lobby", 1, 12345, 1700000000.5, b"hello")
    sig = C.sign_message(alice, *args)
    cache = C.SignatureCache()
    assert cache.verify(alice.public, C.signed_bytes(*args), sig)
    for changed in [
        ("#lobby", 1, 12345, 1700000000.5, b"hellO"),
        ("#other", 1, 12345, 1700000000.5, b"hello"),
        ("#lobby", 2, 12345, 1700000000.5, b"hello"),
        ("#lobby", 1, 12346, 1700000000.5, b"hello"),
        ("#lobby", 1, 12345, 1700000001.5, b"hello"),
    ]:
        assert not cache.verify(alice.public, C.signed_bytes(*changed), sig)
    assert not cache.verify(mallory.public, C.signed_bytes(*args), sig)
    assert not cache.verify(alice.public, C.signed_bytes(*args), _flip(sig, 5))
    assert not C.verify(b"short", b"", sig) and not C.verify(alice.public, b"", b"short")


def test_verification_cache_hits_only_the_same_key_and_message():
    alice = C.Identity.generate()
    data = C.signed_bytes("#lobby", 1, 1, 0.0, b"x")
    sig = alice.sign(data)
    cache = C.SignatureCache(maxsize=2)
    assert cache.verify(alice.public, data, sig) and cache.verify(alice.public, data, sig)
    assert (cache.hits, cache.misses) == (1, 1)
    assert not cache.verify(C.Identity.generate().public, data, sig)  # same sig, other key: verified
    assert not cache.verify(alice.public, data + b"!", sig)
    assert cache.misses == 3
    for i in range(3):
        cache.verify(alice.public, data, alice.sign(data + bytes([i])))
    assert len(cache._cache) == 2


def test_verify_queue_checks_a_bounded_slice_newest_first_and_reports_failures():
    alice = C.Identity.generate()
    results: list = []
    queue = C.VerifyQueue(lambda item, ok: results.append((item, ok)))
    for i in range(10):
        data = C.signed_bytes("#lobby", 1, i, 0.0, b"line")
        sig = alice.sign(data)
        queue.push(i, alice.public, data, sig if i != 7 else _flip(sig, 3))
    assert queue.run(3) == 3
    assert results == [(9, True), (8, True), (7, False)]
    assert queue.run(100) == 7 and len(queue) == 0
    assert [ok for _, ok in results].count(False) == 1


# --------------------------------------------------------------------------- identity files, fingerprints


def test_identity_file_is_created_0600_and_loads_the_same_key(tmp_path):
    path = tmp_path / "data" / "identity"
    ident = C.load_or_create_identity(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert C.load_or_create_identity(path).public == ident.public
    assert C.load_identity(path).fingerprint == ident.fingerprint
    with pytest.raises(C.IdentityFileError, match="exists already"):
        C.save_identity(C.Identity.generate(), path)
    assert C.load_identity(path).public == ident.public  # not overwritten


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_identity_file_readable_by_others_is_refused_with_one_line(tmp_path):
    path = tmp_path / "identity"
    C.save_identity(C.Identity.generate(), path)
    os.chmod(path, 0o644)
    with pytest.raises(C.IdentityFileError) as info:
        C.load_or_create_identity(path)
    message = str(info.value)
    assert "\n" not in message and "0644" in message and "chmod 600" in message


def test_identity_file_that_is_not_a_key_is_refused(tmp_path):
    for content in (b"", b"hello", b"udproom-ed25519-seed AAAA\n", b"udproom-ed25519-seed !!!\n"):
        path = tmp_path / "junk"
        path.write_bytes(content)
        os.chmod(path, 0o600)
        with pytest.raises(C.IdentityFileError, match="not a udproom identity key"):
            C.load_identity(path)
    with pytest.raises(C.IdentityFileError, match="cannot read"):
        C.load_identity(tmp_path / "missing")
    assert "seed" not in repr(C.Identity.generate())


def test_fingerprints_parse_as_typed_and_bad_ones_say_why():
    ident = C.Identity.generate()
    fp = ident.fingerprint
    assert len(fp) == 29 and fp.count("-") == 5
    assert C.parse_fingerprint(fp.upper().replace("-", " ")) == fp
    assert C.split_pinned_address(f"relay.example:6000#{fp.replace('-', '')}") == ("relay.example:6000", fp)
    assert C.split_pinned_address("[::1]:6000") == ("[::1]:6000", None)
    with pytest.raises(C.CryptoError, match="24 characters"):
        C.parse_fingerprint("abcd")
    with pytest.raises(C.CryptoError, match="a-z and digits 2-7"):
        C.parse_fingerprint("1" * 24)
    assert C.fingerprint(C.Identity.generate().public) != fp


def _claiming(real: C.Identity) -> C.Identity:
    """An identity that says it is `real` (its public key) but holds another secret key."""
    impostor = C.Identity.generate()
    impostor.public = real.public
    return impostor


def test_a_responder_that_shows_the_pinned_key_without_its_secret_is_refused():
    relay = C.Identity.generate()
    ini = C.Initiator(pinned=relay.public)
    res = C.Responder(_claiming(relay))
    with pytest.raises(C.CryptoError, match="signature does not verify"):
        ini.finish(res.respond(ini.start()))
    assert ini.channel is None


def test_an_initiator_that_claims_another_users_key_is_refused():
    alice = C.Identity.generate()
    ini = C.Initiator(identity=_claiming(alice))
    res = C.Responder(C.Identity.generate())
    msg3, _ = ini.finish(res.respond(ini.start()))
    with pytest.raises(C.CryptoError, match="signature does not verify"):
        res.finish(msg3)
    assert res.initiator_key is None
