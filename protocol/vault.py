"""Passphrase rooms, the client's side and the formats both sides share (docs/security.md,
"Passphrase rooms (end to end)"); the relay's side is protocol/relay/vault.py.

A passphrase room's message bodies (posts, actions, topics) travel sealed end to end under the
room's body key (`crypto.RoomKey.seal(text, aad=room)`), in the `body` field of `Req` and `Ev`,
with `text` empty: the relay stores and forwards ciphertext. The key comes from Argon2id over the
passphrase and the room's salt (`crypto.derive_passphrase`); the relay admits a member only with
the verifier derived alongside it. Keys live in memory only (`VaultKeys`).

Sans-IO, no clock, no msgspec: the Argon2id derivation (a third of a second, 128 MiB) is the
caller's to run off its event loop (`derive`), then hand the result to `ClientSession.unlock`.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from typing import NamedTuple

from .crypto import (
    ARGON_MAX_MEM,
    ARGON_MAX_OPS,
    KEY_BYTES,
    KID_BYTES,
    ROOM_BLOB_OVERHEAD,
    SALT_BYTES,
    CryptoError,
    Identity,
    PassphraseKeys,
    RoomKey,
    RoomKeyring,
    check_kdf_params,
    derive_passphrase,
    new_salt,
    open_room_key_share,
    room_key_share,
)
from .names import MAX_TEXT_BYTES, MAX_TOPIC_BYTES, TextTooLong

#: what a line that does not open is shown as (never the ciphertext, never garbage)
UNREADABLE = "(sealed under a key you do not have)"
#: a passphrase room's topic as the relay keeps it (Joined.topic is text): this, then base64
SEALED_TOPIC = "sealed:"
#: the largest sealed bodies the relay takes: the text limits plus the sealing (kid, nonce, tag)
MAX_SEALED_TEXT = MAX_TEXT_BYTES + ROOM_BLOB_OVERHEAD
MAX_SEALED_TOPIC = MAX_TOPIC_BYTES + ROOM_BLOB_OVERHEAD
#: a key share as relayed: the share (a sealed box: 48 + 32 + 64 + 36 bytes) and the new verifier
#: (32: the member rejoins with it after a reconnect), sealed again under the room's current body
#: key (only someone who holds that key can re-key its members; the relay reads neither)
SHARE_BYTES = 48 + KEY_BYTES + 64 + KID_BYTES + KEY_BYTES + KEY_BYTES + ROOM_BLOB_OVERHEAD

_PROPOSAL = struct.Struct(">16sIQI32s")  # salt, ops, mem, kid, verifier


class Proposal(NamedTuple):
    """What a creator (OP_MKPRIVATE) or a re-keyer (OP_PASSPHRASE) tells the relay."""

    salt: bytes
    ops: int
    mem: int
    kid: int
    verifier: bytes


def proposal(salt: bytes, ops: int, mem: int, keys: PassphraseKeys) -> bytes:
    return _PROPOSAL.pack(salt, ops, mem, keys.room.kid, keys.verifier)


def parse_proposal(body: bytes) -> Proposal:
    """Raises CryptoError (one line) for anything that is not a proposal with sane parameters."""
    if len(body) != _PROPOSAL.size:
        raise CryptoError("not a passphrase room proposal")
    p = Proposal(*_PROPOSAL.unpack(body))
    if not (1 <= p.ops <= ARGON_MAX_OPS and 8192 <= p.mem <= ARGON_MAX_MEM):
        raise CryptoError("passphrase parameters out of bounds")
    return p


def derive(
    passphrase: str, salt: bytes, ops: int, mem: int, check: Callable[[int, int], None] = check_kdf_params
) -> PassphraseKeys:
    """The room's keys from what the relay published (`NeedPassphrase`), its parameters checked
    first (`check`: a hostile relay may ask for no work, or for all the memory there is). Raises
    CryptoError (one line). `check` is replaced only by tests that run small parameters."""
    if len(salt) != SALT_BYTES:
        raise CryptoError(f"the relay sent a passphrase salt of {len(salt)} bytes, not {SALT_BYTES}")
    check(ops, mem)
    return derive_passphrase(passphrase, salt, ops, mem, check=False)


def create(passphrase: str, ops: int, mem: int) -> tuple[bytes, PassphraseKeys]:
    """A new room's (or a re-key's) salt and keys, and the proposal body for the relay."""
    salt = new_salt()
    keys = derive_passphrase(passphrase, salt, ops, mem, check=False)
    return proposal(salt, ops, mem, keys), keys


def _aad(room: str, kind: int) -> bytes:
    """What a body is bound to besides its key: the room and the event kind (frames.EV_MSG,
    EV_ACTION, EV_TOPIC), so a relay cannot move it to another room nor show a post as a topic."""
    return room.encode() + b"\0" + bytes((kind & 0xFF,))


def seal_text(
    key: RoomKey, room: str, kind: int, text: str, limit: int = MAX_TEXT_BYTES, what: str = "message"
) -> bytes:
    """A body sealed for `room`; a text over `limit` is refused before sealing (TextTooLong)."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) > limit:
        raise TextTooLong(f"{what} is {len(data)} bytes of UTF-8; the limit is {limit}")
    return key.seal(data, _aad(room, kind))


def open_text(keys: RoomKeyring, room: str, kind: int, body: bytes) -> str:
    """The text of a sealed body, or UNREADABLE (a key we do not have, tampering, bad UTF-8)."""
    try:
        return keys.open(body, _aad(room, kind)).decode("utf-8")
    except (CryptoError, UnicodeDecodeError):
        return UNREADABLE


def sealed_topic(blob: bytes) -> str:
    return SEALED_TOPIC + base64.b64encode(blob).decode("ascii")


def topic_body(topic: str) -> bytes:
    """The sealed body a passphrase room's topic carries (b"": none, or not a sealed topic)."""
    if not topic.startswith(SEALED_TOPIC):
        return b""
    try:
        return base64.b64decode(topic[len(SEALED_TOPIC) :], validate=True)
    except ValueError:
        return b""


def open_topic(keys: RoomKeyring, room: str, kind: int, topic: str) -> str:
    if not topic:
        return ""
    blob = topic_body(topic)
    if not blob:
        return UNREADABLE  # a clear topic in a passphrase room (not from a member), or not base64
    return open_text(keys, room, kind, blob)


def wrap_share(me: Identity, current: RoomKey, recipient: bytes, room: str, new: PassphraseKeys) -> bytes:
    """The new body key for one member: a sealed box to its identity key signed by us
    (`room_key_share`) and the new verifier, sealed again under the room's current body key,
    which the relay has not."""
    inner = room_key_share(me, recipient, room, new.room) + new.verifier
    return current.seal(inner, b"udproom keyshare " + room.encode())


def unwrap_share(me: Identity, keys: RoomKeyring, room: str, body: bytes) -> PassphraseKeys:
    """The body key and verifier in a share for us; CryptoError when it is not one we can trust."""
    inner = keys.open(body, b"udproom keyshare " + room.encode())
    if len(inner) <= KEY_BYTES:
        raise CryptoError("room key share of the wrong size")
    key = open_room_key_share(me, room, inner[:-KEY_BYTES])[1]
    return PassphraseKeys(key, inner[-KEY_BYTES:])


class VaultKeys:
    """The body keys of the passphrase rooms this client is in (memory only): per room the newest
    few (a re-key leaves older messages readable), and what a pending join will prove."""

    __slots__ = ("pending", "rings")

    def __init__(self) -> None:
        self.rings: dict[str, RoomKeyring] = {}
        #: room -> (keys, proposal): derived, not yet accepted by the relay (a creation when the
        #: proposal is not empty)
        self.pending: dict[str, tuple[PassphraseKeys, bytes]] = {}

    def private(self, room: str) -> bool:
        return room in self.rings

    def add(self, room: str, key: RoomKey) -> None:
        ring = self.rings.get(room)
        if ring is None:
            ring = self.rings[room] = RoomKeyring(keep=8)
        if key.kid not in ring.keys or ring.current is not ring.keys[key.kid]:
            ring.add(key)

    def current(self, room: str) -> RoomKey | None:
        ring = self.rings.get(room)
        return ring.current if ring is not None else None

    def forget(self, room: str) -> None:
        self.rings.pop(room, None)
        self.pending.pop(room, None)
