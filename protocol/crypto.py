"""udproom's cryptographic core: identity keys, the session handshake, sealed datagrams, room keys,
passphrase keys and message signatures. The design and its reasons are in docs/security.md
("Encryption and identity": handshake, key schedule, packet layouts); this module is its code.

Sans-IO: no sockets, no asyncio, no clock. Every primitive comes from libsodium through PyNaCl
(X25519, Ed25519, XChaCha20-Poly1305, Argon2id, sealed boxes) except BLAKE2b, which is the same
function from the standard library's hashlib (see `_hash`); nothing here builds one. Only the
identity key file helpers touch the file system. No msgspec either (frames.py carries the bytes
made here in `bytes` fields).

Every failure on bytes from the network raises `CryptoError`, and nothing else: callers count it
and drop the datagram. What each party can and cannot do with these pieces is docs/security.md.

Pieces:

- `Identity`: an Ed25519 key pair (users, relays); `fingerprint(pub)` is its short human name;
  `load_identity(path)`, `save_identity(...)`, `load_or_create_identity(path)` keep it in a file
  of mode 0600 and refuse one that others can read.
- `Initiator` / `Responder`: the 1-RTT session handshake as two pure state machines (bytes in,
  bytes out). The responder always proves its long-term key (the initiator can pin it); the
  initiator proves its identity optionally (relay mode) or mandatorily (direct mode). Both end
  with a `SealedChannel` keyed from the ephemeral X25519 secret and the transcript.
- `SealedChannel`: seals and opens a session's datagrams: per-direction keys, the packet number
  as the nonce, a sliding replay window. `seal_room`/`open_room` wrap a room blob sealed once
  (`RoomKey`) with a per-member 16-byte tag, so a relay encrypts a batch once for all members.
- `RoomKey`, `RoomKeyring`: encrypt once, decrypt by many, with a key id for rotation.
- `derive_passphrase`: Argon2id over a passphrase and a per-room salt -> the room's end-to-end
  key and a verifier for the relay (derived from the key, never the passphrase).
- `signed_bytes`, `sign_message`, `SignatureCache`, `VerifyQueue`: message signatures, verified
  once (cached) and, for backfill, a bounded number at a time.

One module over 600 lines because it is the one place that touches key material: every
primitive call (PyNaCl) and every derivation label is here, so an audit reads one file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
import struct
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

import nacl.bindings as _nb
import nacl.exceptions
import nacl.public
import nacl.pwhash.argon2id as _argon2id
import nacl.signing
import nacl.utils

__all__ = [
    "ARGON_MEM",
    "ARGON_OPS",
    "CryptoError",
    "Identity",
    "IdentityFileError",
    "Initiator",
    "PassphraseKeys",
    "PinMismatch",
    "ReplayWindow",
    "Responder",
    "RoomKey",
    "RoomKeyring",
    "SealedChannel",
    "SignatureCache",
    "VerifyQueue",
    "check_kdf_params",
    "derive_passphrase",
    "fingerprint",
    "is_sealed",
    "load_identity",
    "load_or_create_identity",
    "new_salt",
    "open_room_key_share",
    "parse_fingerprint",
    "room_key_share",
    "save_identity",
    "sign_message",
    "signed_bytes",
    "split_pinned_address",
    "verifier_matches",
    "verifier_record",
]

KEY_BYTES = 32  # X25519 / Ed25519 public keys, AEAD keys, seeds
SIG_BYTES = 64
TAG_BYTES = 16  # Poly1305
NONCE_BYTES = 24  # XChaCha20
KID_BYTES = 4

#: first byte of every sealed datagram: 0xC1 is the one byte MessagePack never uses, so a sealed
#: datagram can never be mistaken for a clear frame array (which starts 0x90-0x9F, 0xDC or 0xDD).
SEALED = 0xC1
KIND_SESSION = 1  # C1 01 | pn(8) | AEAD(session key, pn, payload)
KIND_ROOM = 2  # C1 02 | pn(8) | member tag(16) | room blob (kid(4) | nonce(24) | AEAD(room key))
HEAD_BYTES = 10  # marker, kind, packet number
_ROOM_PREFIX = bytes((SEALED, KIND_ROOM))
SESSION_OVERHEAD = HEAD_BYTES + TAG_BYTES  # 26
ROOM_BLOB_OVERHEAD = KID_BYTES + NONCE_BYTES + TAG_BYTES  # 44
ROOM_OVERHEAD = HEAD_BYTES + TAG_BYTES + ROOM_BLOB_OVERHEAD  # 70
MAX_PN = (1 << 64) - 1
REPLAY_WINDOW = 1024

HS_VERSION = 1
MSG1_BYTES = 1 + KEY_BYTES  # version, initiator ephemeral
_MSG2_HEAD = 1 + KEY_BYTES  # version, responder ephemeral (then the sealed static, sig, payload)

#: Argon2id parameters for passphrase rooms (docs/security.md, "Passphrase rooms"): 3 passes over
#: 128 MiB, about 0.34 s here. A room publishes the parameters it was made with; a client refuses
#: weaker ones (a relay must not downgrade them to make the verifier cheap to attack) and far
#: heavier ones (nor make joining exhaust a client's memory).
ARGON_OPS = 3
ARGON_MEM = 128 * 1024 * 1024
ARGON_MAX_OPS = 10
ARGON_MAX_MEM = 1024 * 1024 * 1024
SALT_BYTES = _argon2id.SALTBYTES  # 16

_IDENTITY_HEADER = "udproom-ed25519-seed"


class CryptoError(ValueError):
    """Bytes that do not authenticate, decrypt or parse: count and drop. The message is one line."""


class PinMismatch(CryptoError):
    """The responder proved a long-term key other than the pinned one."""


class IdentityFileError(Exception):
    """An identity key file that cannot be used; the message is one line for the user."""


# --------------------------------------------------------------------------- hashing, KDF


# BLAKE2b (RFC 7693) is libsodium's crypto_generichash; it is computed here with the standard
# library's hashlib.blake2b, the same function (tests/protocol/test_crypto.py checks the two agree,
# keyed and personalised), because PyNaCl's binding costs ~6 us a call against ~0.6 us: it sits on
# the relay's per-member path (the room tag) and the verification cache's.


def _hash(*parts: bytes, person: bytes, size: int = 32) -> bytes:
    """BLAKE2b over length-prefixed parts (so no two part lists hash alike), personalised."""
    data = b"".join(struct.pack(">I", len(p)) + p for p in parts)
    return hashlib.blake2b(data, digest_size=size, person=person).digest()


def _kdf(secret: bytes, context: bytes, label: bytes) -> bytes:
    """A 32-byte subkey: keyed BLAKE2b (libsodium's crypto_kdf construction: the key is the
    master secret, the personalisation names the purpose). `context` is hashed in as data."""
    return hashlib.blake2b(context, digest_size=KEY_BYTES, key=secret, person=label[:16]).digest()


def _nonce(pn: int) -> bytes:
    return bytes(16) + pn.to_bytes(8, "big")


def _aead_seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    return _nb.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key)


def _aead_open(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    try:
        return _nb.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, aad, nonce, key)
    except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError, nacl.exceptions.TypeError):
        raise CryptoError("does not authenticate") from None


# --------------------------------------------------------------------------- identities


def fingerprint(public_key: bytes) -> str:
    """A key's short human name: 120 bits of BLAKE2b as 24 base32 characters in groups of four,
    `k3pq-7x2m-...`. Long enough to pin a relay in an address; read aloud to check a friend."""
    digest = hashlib.blake2b(public_key, digest_size=15, person=b"udproom-fp").digest()
    text = base64.b32encode(digest).decode().lower()
    return "-".join(text[i : i + 4] for i in range(0, 24, 4))


def parse_fingerprint(text: str) -> str:
    """A fingerprint as typed (any case, with or without dashes or spaces) in canonical form.
    Raises CryptoError with a one-line reason."""
    raw = "".join(ch for ch in text.strip().lower() if ch not in "- ")
    if len(raw) != 24:
        raise CryptoError(f"a fingerprint has 24 characters, not {len(raw)}")
    try:
        base64.b32decode(raw.upper())
    except ValueError:
        raise CryptoError("a fingerprint has only letters a-z and digits 2-7") from None
    return "-".join(raw[i : i + 4] for i in range(0, 24, 4))


def split_pinned_address(text: str) -> tuple[str, str | None]:
    """`host:6000#FINGERPRINT` -> ("host:6000", canonical fingerprint); no `#`: (text, None)."""
    addr, sep, fp = text.partition("#")
    return (addr, parse_fingerprint(fp)) if sep else (addr, None)


class Identity:
    """An Ed25519 key pair: a user's (or a relay's) long-term key."""

    __slots__ = ("_signing", "public")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != KEY_BYTES:
            raise CryptoError("an identity seed is 32 bytes")
        self._signing = nacl.signing.SigningKey(seed)
        self.public = bytes(self._signing.verify_key)

    @classmethod
    def generate(cls) -> Identity:
        return cls(nacl.utils.random(KEY_BYTES))

    @property
    def seed(self) -> bytes:
        return bytes(self._signing)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)

    def sign(self, data: bytes) -> bytes:
        return self._signing.sign(data).signature

    def x25519_secret(self) -> bytes:
        return bytes(self._signing.to_curve25519_private_key())

    def __repr__(self) -> str:  # never the seed
        return f"Identity({self.fingerprint})"


def verify(public_key: bytes, data: bytes, signature: bytes) -> bool:
    """Is `signature` `public_key`'s over `data`? Never raises."""
    if len(public_key) != KEY_BYTES or len(signature) != SIG_BYTES:
        return False
    try:
        nacl.signing.VerifyKey(public_key).verify(data, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, nacl.exceptions.TypeError):
        return False
    except nacl.exceptions.RuntimeError:
        return False
    return True


def save_identity(identity: Identity, path: str | os.PathLike) -> None:
    """Write a new key file, mode 0600, created exclusively (never over an existing file)."""
    line = f"{_IDENTITY_HEADER} {base64.b64encode(identity.seed).decode()}\n"
    try:
        fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise IdentityFileError(f"{os.fspath(path)} exists already: not overwriting a key") from None
    except OSError as exc:
        raise IdentityFileError(f"cannot create {os.fspath(path)}: {exc.strerror}") from None
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def load_identity(path: str | os.PathLike) -> Identity:
    """Read a key file; refuse one that others can read (like ssh does) or that is not a key."""
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDONLY)
    except OSError as exc:
        raise IdentityFileError(f"cannot read identity {name}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if os.name == "posix" and mode & 0o077:
            raise IdentityFileError(
                f"identity {name} is readable by others (mode {stat.S_IMODE(mode):04o}): chmod 600 {name}"
            )
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    parts = data.decode("ascii", "replace").split()
    try:
        if len(parts) != 2 or parts[0] != _IDENTITY_HEADER:
            raise ValueError
        seed = base64.b64decode(parts[1], validate=True)
        return Identity(seed)
    except (ValueError, CryptoError):
        raise IdentityFileError(f"{name} is not a udproom identity key") from None


def load_or_create_identity(path: str | os.PathLike) -> Identity:
    """The identity in `path`, made (mode 0600, parent directories 0700) on first use."""
    name = os.fspath(path)
    if not os.path.exists(name):
        parent = os.path.dirname(name)
        if parent:
            os.makedirs(parent, mode=0o700, exist_ok=True)
        try:
            save_identity(Identity.generate(), name)
        except IdentityFileError:
            if not os.path.exists(name):  # lost a race with another process: read theirs
                raise
    return load_identity(name)


# --------------------------------------------------------------------------- replay window


class ReplayWindow:
    """Which packet numbers were accepted: the highest one and a bitmap of the `size` below it
    (IPsec's sliding window, RFC 4303; WireGuard keeps the same with RFC 6479's layout). A
    number seen before, or older than the window, is refused. `check` before decrypting
    (cheap), `mark` only after authenticating."""

    __slots__ = ("bits", "mask", "size", "top")

    def __init__(self, size: int = REPLAY_WINDOW) -> None:
        self.size = size
        self.mask = (1 << size) - 1
        self.top = -1
        self.bits = 0  # bit i: top - i was accepted

    def check(self, pn: int) -> bool:
        if pn > self.top:
            return True
        back = self.top - pn
        return back < self.size and not (self.bits >> back) & 1

    def mark(self, pn: int) -> None:
        if pn > self.top:
            shift = pn - self.top
            self.bits = ((self.bits << shift) | 1) & self.mask if shift < self.size else 1
            self.top = pn
        else:
            self.bits |= 1 << (self.top - pn)


# --------------------------------------------------------------------------- room keys


class RoomKey:
    """A symmetric key shared by a room: one `seal`, any number of `open`s. `kid` (32 bits) names
    it on the wire, so members can hold the old key and the new one across a rotation."""

    __slots__ = ("key", "kid")

    def __init__(self, key: bytes, kid: int) -> None:
        if len(key) != KEY_BYTES or not 0 <= kid < 1 << 32:
            raise CryptoError("a room key is 32 bytes with a 32-bit id")
        self.key = key
        self.kid = kid

    @classmethod
    def generate(cls, kid: int | None = None) -> RoomKey:
        if kid is None:
            kid = int.from_bytes(nacl.utils.random(KID_BYTES), "big")
        return cls(nacl.utils.random(KEY_BYTES), kid)

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        """kid(4) | random nonce(24) | ciphertext+tag. Random nonces: XChaCha's 192 bits make
        collisions negligible, so any number of holders may seal under one key."""
        head = self.kid.to_bytes(KID_BYTES, "big") + nacl.utils.random(NONCE_BYTES)
        return head + _aead_seal(self.key, head[KID_BYTES:], plaintext, head[:KID_BYTES] + aad)

    def open(self, blob: bytes, aad: bytes = b"") -> bytes:
        if len(blob) < ROOM_BLOB_OVERHEAD:
            raise CryptoError("room blob too short")
        if int.from_bytes(blob[:KID_BYTES], "big") != self.kid:
            raise CryptoError("unknown room key id")
        return _aead_open(
            self.key,
            blob[KID_BYTES : KID_BYTES + NONCE_BYTES],
            blob[KID_BYTES + NONCE_BYTES :],
            blob[:KID_BYTES] + aad,
        )


class RoomKeyring:
    """The keys of one room a member can open with: the newest `keep` (a rotation leaves the old
    one usable for retransmits in flight). Sealing uses `current`."""

    __slots__ = ("current", "keep", "keys")

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self.keys: OrderedDict[int, RoomKey] = OrderedDict()
        self.current: RoomKey | None = None

    def add(self, key: RoomKey) -> None:
        self.keys.pop(key.kid, None)
        self.keys[key.kid] = key
        self.current = key
        while len(self.keys) > self.keep:
            self.keys.popitem(last=False)

    def open(self, blob: bytes, aad: bytes = b"") -> bytes:
        if len(blob) < ROOM_BLOB_OVERHEAD:
            raise CryptoError("room blob too short")
        key = self.keys.get(int.from_bytes(blob[:KID_BYTES], "big"))
        if key is None:
            raise CryptoError("unknown room key id")
        return key.open(blob, aad)


def room_key_share(sender: Identity, recipient: bytes, room: str, key: RoomKey) -> bytes:
    """A room key for one member, readable only by the holder of identity `recipient` (a sealed
    box to its X25519 form) and signed by `sender` inside (so the relay cannot substitute one)."""
    body = key.kid.to_bytes(KID_BYTES, "big") + key.key
    sig = sender.sign(_share_bytes(room, recipient, body))
    try:
        box = nacl.public.SealedBox(nacl.signing.VerifyKey(recipient).to_curve25519_public_key())
    except (nacl.exceptions.ValueError, nacl.exceptions.TypeError, nacl.exceptions.RuntimeError):
        raise CryptoError("not a valid identity key") from None
    return box.encrypt(sender.public + sig + body)


def open_room_key_share(me: Identity, room: str, share: bytes) -> tuple[bytes, RoomKey]:
    """(the sender's identity key, the room key) from `room_key_share`. The caller decides
    whether that sender may hand out keys for the room (an operator, a member)."""
    try:
        plain = nacl.public.SealedBox(nacl.public.PrivateKey(me.x25519_secret())).decrypt(share)
    except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError, nacl.exceptions.TypeError):
        raise CryptoError("room key share does not open") from None
    if len(plain) != KEY_BYTES + SIG_BYTES + KID_BYTES + KEY_BYTES:
        raise CryptoError("room key share of the wrong size")
    sender, sig, body = (
        plain[:KEY_BYTES],
        plain[KEY_BYTES : KEY_BYTES + SIG_BYTES],
        plain[KEY_BYTES + SIG_BYTES :],
    )
    if not verify(sender, _share_bytes(room, me.public, body), sig):
        raise CryptoError("room key share has a bad signature")
    return sender, RoomKey(body[KID_BYTES:], int.from_bytes(body[:KID_BYTES], "big"))


def _share_bytes(room: str, recipient: bytes, body: bytes) -> bytes:
    return b"udproom-v2 room key share\0" + _hash(room.encode(), recipient, body, person=b"udproom-share")


# --------------------------------------------------------------------------- sealed channel


def is_sealed(data: bytes) -> bool:
    """Is this datagram sealed (as opposed to a clear frame array: Hello, Retry, Refuse)?"""
    return data[:1] == b"\xc1"


class SealedChannel:
    """One session's datagrams, both directions. A sealed datagram is `C1 kind pn(8) ...`: the
    packet number (from 1; 0 belongs to the handshake) is the AEAD nonce under this direction's
    key, and the 10-byte head is associated data. `open` refuses, with CryptoError, anything that
    does not authenticate, repeats a packet number, or is older than the replay window.

    Room datagrams (`seal_room`) carry a tag made with a MAC key of their own per direction,
    derived from the direction's key: keyed BLAKE2b-128, ~0.6 us where an AEAD call costs ~5."""

    __slots__ = ("_recv_mac", "_send_mac", "next_pn", "recv_key", "send_key", "window")

    def __init__(
        self, send_key: bytes, recv_key: bytes, window: int = REPLAY_WINDOW, next_pn: int = 1
    ) -> None:
        self.send_key = send_key
        self.recv_key = recv_key
        # keyed BLAKE2b states with the key block already absorbed: a tag is copy, update, digest
        self._send_mac = hashlib.blake2b(digest_size=TAG_BYTES, key=_kdf(send_key, b"", b"udproom room tag"))
        self._recv_mac = hashlib.blake2b(digest_size=TAG_BYTES, key=_kdf(recv_key, b"", b"udproom room tag"))
        self.next_pn = next_pn
        self.window = ReplayWindow(window)

    def _head(self, kind: int) -> tuple[bytes, int]:
        pn = self.next_pn
        if pn > MAX_PN:
            raise CryptoError("packet numbers exhausted: the session must be renewed")
        self.next_pn = pn + 1
        return bytes((SEALED, kind)) + pn.to_bytes(8, "big"), pn

    def seal(self, payload: bytes) -> bytes:
        head, pn = self._head(KIND_SESSION)
        return head + _aead_seal(self.send_key, _nonce(pn), payload, head)

    def seal_room(self, blob: bytes, digest: bytes) -> bytes:
        """This member's datagram around a room blob sealed once for everyone (`RoomKey.seal`):
        the head, a 16-byte tag binding the blob (`room_digest(blob)`, computed once) to this
        session and packet number, then the blob itself. Per member: one keyed BLAKE2b over 42
        bytes, not an AEAD over the whole batch."""
        pn = self.next_pn
        if pn > MAX_PN:
            raise CryptoError("packet numbers exhausted: the session must be renewed")
        self.next_pn = pn + 1
        head = _ROOM_PREFIX + pn.to_bytes(8, "big")
        mac = self._send_mac.copy()
        mac.update(head + digest)
        return head + mac.digest() + blob

    def _check(self, packet: bytes, kind: int, least: int) -> int:
        if len(packet) < least or packet[0] != SEALED or packet[1] != kind:
            raise CryptoError("not a sealed datagram of this kind")
        pn = int.from_bytes(packet[2:HEAD_BYTES], "big")
        if not self.window.check(pn):
            raise CryptoError("replayed or too old")
        return pn

    def open(self, packet: bytes) -> bytes:
        pn = self._check(packet, KIND_SESSION, SESSION_OVERHEAD)
        payload = _aead_open(self.recv_key, _nonce(pn), packet[HEAD_BYTES:], packet[:HEAD_BYTES])
        self.window.mark(pn)
        return payload

    def open_room(self, packet: bytes, keys: RoomKeyring | RoomKey, aad: bytes = b"") -> bytes:
        """The batch inside a member's room datagram: the session tag, then the room blob."""
        pn = self._check(packet, KIND_ROOM, ROOM_OVERHEAD)
        blob = packet[HEAD_BYTES + TAG_BYTES :]
        mac = self._recv_mac.copy()
        mac.update(packet[:HEAD_BYTES] + room_digest(blob))
        if not hmac.compare_digest(mac.digest(), packet[HEAD_BYTES : HEAD_BYTES + TAG_BYTES]):
            raise CryptoError("does not authenticate")
        payload = keys.open(blob, aad)
        self.window.mark(pn)
        return payload

    def kind_of(self, packet: bytes) -> int:
        """KIND_SESSION or KIND_ROOM (0 for anything else): which `open` to call."""
        return packet[1] if len(packet) >= 2 and packet[0] == SEALED and packet[1] in (1, 2) else 0


def room_digest(blob: bytes) -> bytes:
    """What a member's room tag covers of the shared blob: computed once per batch by the relay."""
    return hashlib.blake2b(blob, digest_size=32, person=b"udproom-room").digest()


# --------------------------------------------------------------------------- handshake
#
#   msg1  I -> R   01 | e_i                                   (in the padded Hello)
#   msg2  R -> I   01 | e_r | AEAD(hs_key, 0, aad=01|e_r, S_r | sig_r | payload2)   (in Welcome)
#   msg3  I -> R   a sealed packet, pn 0: flag | [S_i | sig_i] | payload3           (first datagram)
#
#   dh = X25519(e_i, e_r); th1 = H(prologue, msg1, e_r); hs_key = KDF(dh, th1, "hs r2i")
#   sig_r = Sign(S_r, "udproom-v2 responder" | th1 | S_r); th2 = H(th1, S_r)
#   i2r = KDF(dh, th2, "i2r"); r2i = KDF(dh, th2, "r2i")
#   sig_i = Sign(S_i, "udproom-v2 initiator" | th2 | S_i)


def _x25519_pair(secret: bytes | None) -> tuple[bytes, bytes]:
    secret = secret if secret is not None else nacl.utils.random(KEY_BYTES)
    return secret, _nb.crypto_scalarmult_base(secret)


def _dh(secret: bytes, public: bytes) -> bytes:
    try:
        return _nb.crypto_scalarmult(secret, public)
    except (nacl.exceptions.RuntimeError, nacl.exceptions.ValueError, nacl.exceptions.TypeError):
        raise CryptoError("bad ephemeral key") from None  # a low-order point gives all zeroes


_LABEL_R = b"udproom-v2 responder\0"
_LABEL_I = b"udproom-v2 initiator\0"


class _Keys(NamedTuple):
    i2r: bytes
    r2i: bytes


def _session_keys(dh: bytes, th2: bytes) -> _Keys:
    return _Keys(_kdf(dh, th2, b"udproom i2r"), _kdf(dh, th2, b"udproom r2i"))


class Initiator:
    """The side that says Hello. `start()` -> msg1; `finish(msg2, payload3)` -> msg3 (send it, and
    resend the same bytes until answered) and the responder's payload. After `finish`:
    `responder_key` (its long-term key, checked against `pinned` when given), `channel`,
    `handshake_hash` (th2, unique to this session: bind anything to it)."""

    def __init__(
        self,
        *,
        pinned: bytes | str | None = None,
        identity: Identity | None = None,
        prologue: bytes = b"",
        ephemeral: bytes | None = None,
    ) -> None:
        self.pinned = pinned
        self.identity = identity
        self.prologue = prologue
        self._secret, self._public = _x25519_pair(ephemeral)
        self.msg1 = bytes((HS_VERSION,)) + self._public
        self.responder_key: bytes | None = None
        self.channel: SealedChannel | None = None
        self.handshake_hash = b""
        self.msg3 = b""

    def start(self) -> bytes:
        return self.msg1

    def finish(self, msg2: bytes, payload: bytes = b"") -> tuple[bytes, bytes]:
        if self.channel is not None:
            raise CryptoError("handshake already finished")
        if len(msg2) < _MSG2_HEAD + TAG_BYTES + KEY_BYTES + SIG_BYTES or msg2[0] != HS_VERSION:
            raise CryptoError("malformed handshake answer")
        e_r = msg2[1:_MSG2_HEAD]
        dh = _dh(self._secret, e_r)
        th1 = _hash(self.prologue, self.msg1, e_r, person=b"udproom-hs1")
        inner = _aead_open(_kdf(dh, th1, b"udproom hs r2i"), _nonce(0), msg2[_MSG2_HEAD:], msg2[:_MSG2_HEAD])
        s_r, sig_r, payload2 = (
            inner[:KEY_BYTES],
            inner[KEY_BYTES : KEY_BYTES + SIG_BYTES],
            inner[KEY_BYTES + SIG_BYTES :],
        )
        if not verify(s_r, _LABEL_R + th1 + s_r, sig_r):
            raise CryptoError("the responder's signature does not verify")
        if self.pinned is not None:
            if isinstance(self.pinned, str):  # a fingerprint, as typed in `host:6000#FINGERPRINT`
                same = hmac.compare_digest(fingerprint(s_r), parse_fingerprint(self.pinned))
                expected = parse_fingerprint(self.pinned)
            else:
                same = hmac.compare_digest(s_r, self.pinned)
                expected = fingerprint(self.pinned)
            if not same:
                raise PinMismatch(f"key {fingerprint(s_r)} is not the pinned {expected}")
        th2 = _hash(th1, s_r, person=b"udproom-hs2")
        keys = _session_keys(dh, th2)
        if self.identity is not None:
            ident = self.identity
            auth = b"\x01" + ident.public + ident.sign(_LABEL_I + th2 + ident.public)
        else:
            auth = b"\x00"
        head = bytes((SEALED, KIND_SESSION)) + bytes(8)  # pn 0
        self.msg3 = head + _aead_seal(keys.i2r, _nonce(0), auth + payload, head)
        self.responder_key = s_r
        self.handshake_hash = th2
        self.channel = SealedChannel(keys.i2r, keys.r2i)
        self.channel.window.mark(0)
        return self.msg3, payload2


class Responder:
    """The side that answers (the relay; a peer answering a Hello). `respond(msg1, payload2)` ->
    msg2 (its long-term `identity` proves itself; `payload2` travels encrypted); then
    `finish(msg3)` -> the initiator's payload, and `initiator_key` (its identity key, or None
    when it sent none; `require_identity` refuses that). A repeated msg3 gives the same payload."""

    def __init__(
        self,
        identity: Identity,
        *,
        prologue: bytes = b"",
        ephemeral: bytes | None = None,
        require_identity: bool = False,
    ) -> None:
        self.identity = identity
        self.prologue = prologue
        self.require_identity = require_identity
        self._secret, self._public = _x25519_pair(ephemeral)
        self.channel: SealedChannel | None = None
        self.handshake_hash = b""
        self.initiator_key: bytes | None = None
        self.msg2 = b""
        self._msg3 = b""
        self._payload3 = b""
        self._i2r = b""

    def respond(self, msg1: bytes, payload: bytes = b"") -> bytes:
        if self.msg2:
            raise CryptoError("already answered: resend msg2")
        if len(msg1) != MSG1_BYTES or msg1[0] != HS_VERSION:
            raise CryptoError("malformed handshake")
        dh = _dh(self._secret, msg1[1:])
        th1 = _hash(self.prologue, msg1, self._public, person=b"udproom-hs1")
        s_r = self.identity.public
        head = bytes((HS_VERSION,)) + self._public
        inner = s_r + self.identity.sign(_LABEL_R + th1 + s_r) + payload
        self.msg2 = head + _aead_seal(_kdf(dh, th1, b"udproom hs r2i"), _nonce(0), inner, head)
        self.handshake_hash = th2 = _hash(th1, s_r, person=b"udproom-hs2")
        keys = _session_keys(dh, th2)
        self._i2r = keys.i2r
        self.channel = SealedChannel(keys.r2i, keys.i2r)
        return self.msg2

    def finish(self, msg3: bytes) -> bytes:
        if self.channel is None:
            raise CryptoError("no handshake to finish")
        if self._msg3:
            if hmac.compare_digest(msg3, self._msg3):
                return self._payload3
            raise CryptoError("handshake already finished")
        if len(msg3) < SESSION_OVERHEAD + 1 or msg3[:HEAD_BYTES] != bytes((SEALED, KIND_SESSION)) + bytes(8):
            raise CryptoError("malformed handshake")
        inner = _aead_open(self._i2r, _nonce(0), msg3[HEAD_BYTES:], msg3[:HEAD_BYTES])
        if inner[0] == 1 and len(inner) >= 1 + KEY_BYTES + SIG_BYTES:
            s_i, sig_i = inner[1 : 1 + KEY_BYTES], inner[1 + KEY_BYTES : 1 + KEY_BYTES + SIG_BYTES]
            if not verify(s_i, _LABEL_I + self.handshake_hash + s_i, sig_i):
                raise CryptoError("the initiator's signature does not verify")
            self.initiator_key = s_i
            payload = inner[1 + KEY_BYTES + SIG_BYTES :]
        elif inner[0] == 0 and not self.require_identity:
            payload = inner[1:]
        else:
            raise CryptoError("an identity is required" if inner[0] == 0 else "malformed handshake")
        self._msg3, self._payload3 = msg3, payload
        self.channel.window.mark(0)
        return payload


# --------------------------------------------------------------------------- passphrase rooms


class PassphraseKeys(NamedTuple):
    room: RoomKey  # encrypts bodies end to end; its kid is derived, so every member agrees on it
    verifier: bytes  # proves knowledge to the relay; independent of `room` (a relay holding it reads nothing)


def new_salt() -> bytes:
    return nacl.utils.random(SALT_BYTES)


def check_kdf_params(ops: int, mem: int) -> None:
    """Refuse parameters a relay publishes that are too weak (downgrade) or too heavy (DoS)."""
    if not (ARGON_OPS <= ops <= ARGON_MAX_OPS and ARGON_MEM <= mem <= ARGON_MAX_MEM):
        raise CryptoError(
            f"passphrase parameters ops={ops} mem={mem} outside {ARGON_OPS}-{ARGON_MAX_OPS}, "
            f"{ARGON_MEM >> 20}-{ARGON_MAX_MEM >> 20} MiB"
        )


def derive_passphrase(
    passphrase: str, salt: bytes, ops: int = ARGON_OPS, mem: int = ARGON_MEM, *, check: bool = True
) -> PassphraseKeys:
    """Argon2id(passphrase NFC-normalised, salt) -> a master key, then by KDF the room key, its id
    and the verifier. `check=False` only for tests with small parameters."""
    if len(salt) != SALT_BYTES:
        raise CryptoError(f"a passphrase salt is {SALT_BYTES} bytes")
    if check:
        check_kdf_params(ops, mem)
    if not passphrase:
        raise CryptoError("empty passphrase")
    secret = unicodedata.normalize("NFC", passphrase).encode()
    master = _argon2id.kdf(KEY_BYTES, secret, salt, opslimit=ops, memlimit=mem)
    key = _kdf(master, salt, b"udproom pp room")
    kid = int.from_bytes(_kdf(master, salt, b"udproom pp kid")[:KID_BYTES], "big")
    return PassphraseKeys(RoomKey(key, kid), _kdf(master, salt, b"udproom pp verif"))


def verifier_record(verifier: bytes) -> bytes:
    """What the relay stores for a passphrase room (a hash: its files alone admit no one)."""
    return _hash(verifier, person=b"udproom-verifier")


def verifier_matches(record: bytes, presented: bytes) -> bool:
    return hmac.compare_digest(record, verifier_record(presented))


# --------------------------------------------------------------------------- message signatures


def signed_bytes(room: str, kind: int, mid: int, ts: float, body: bytes) -> bytes:
    """What an author signs: the room, the event kind, the message id, the author's timestamp and
    the body as sent (ciphertext in a passphrase room: signatures then reveal nothing about the
    text). Length-prefixed and labelled, so no two messages sign alike and no other signed
    thing (a handshake, a key share) can pass for a message."""
    return b"udproom-v2 message\0" + _hash(
        room.encode("utf-8", "surrogatepass"),
        struct.pack(">BQd", kind & 0xFF, mid & MAX_PN, ts),
        body,
        person=b"udproom-msg",
    )


def signed_event(room: str, kind: int, mid: int, text: str, body: bytes = b"", by: str = "") -> bytes:
    """What the author of a room event signs when the time is not its own (`signed_bytes` with no
    time): a message in relay mode (the relay stamps its time: the signature binds the room, kind,
    message id and text), a topic in either mode (`mid` 0 in relay mode; in direct mode the topic's
    Lamport stamp, so an old topic cannot come back as a new one, and `by`, the setter's
    `nick_key`, so no one passing it on can say another nick set it). In a passphrase room it binds
    the sealed body instead (the text is empty there), under the room name prefixed "sealed:" (no
    room name holds a ':'), so a body can never pass for a clear text; `by` likewise, as
    "by:NICK:" before the room."""
    if by:
        room = f"by:{by}:{room}"
    if body:
        return signed_bytes("sealed:" + room, kind, mid, 0.0, body)
    return signed_bytes(room, kind, mid, 0.0, text.encode("utf-8", "surrogatepass"))


def sign_message(identity: Identity, room: str, kind: int, mid: int, ts: float, body: bytes) -> bytes:
    return identity.sign(signed_bytes(room, kind, mid, ts, body))


class SignatureCache:
    """Verification results, so a message verified once (live, then again in history, from two
    peers, on redraw) is not verified again: a bounded LRU keyed by the signature (a signature
    names its message: Ed25519 signatures are deterministic and unforgeable) with the key and the
    signed bytes' hash checked on a hit."""

    __slots__ = ("_cache", "hits", "maxsize", "misses")

    def __init__(self, maxsize: int = 8192) -> None:
        self.maxsize = maxsize
        self._cache: OrderedDict[bytes, tuple[bytes, bytes, bool]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def verify(self, public_key: bytes, data: bytes, signature: bytes) -> bool:
        digest = _hash(data, person=b"udproom-vcache")
        hit = self._cache.get(signature)
        if hit is not None and hit[0] == public_key and hit[1] == digest:
            self.hits += 1
            self._cache.move_to_end(signature)
            return hit[2]
        self.misses += 1
        ok = verify(public_key, data, signature)
        self._cache[signature] = (public_key, digest, ok)
        if len(self._cache) > self.maxsize:
            self._cache.popitem(last=False)
        return ok


class VerifyQueue:
    """Signatures to check later, a bounded number at a time: backfill and history are shown at
    once as 'not yet verified' and checked in slices between frames (`run(limit)`), never all
    before the first frame. `done(item, ok)` is called for each; a failure is dropped by the
    caller and counted."""

    __slots__ = ("_items", "cache", "done")

    def __init__(self, done: Callable[[object, bool], None], cache: SignatureCache | None = None) -> None:
        self.done = done
        self.cache = cache or SignatureCache()
        self._items: list[tuple[object, bytes, bytes, bytes]] = []

    def __len__(self) -> int:
        return len(self._items)

    def push(self, item: object, public_key: bytes, data: bytes, signature: bytes) -> None:
        self._items.append((item, public_key, data, signature))

    def run(self, limit: int) -> int:
        """Verify up to `limit` queued signatures, newest first (what is on screen); -> checked."""
        n = 0
        while self._items and n < limit:
            item, key, data, sig = self._items.pop()
            self.done(item, self.cache.verify(key, data, sig))
            n += 1
        return n
