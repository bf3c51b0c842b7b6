"""udproom's wire format: the only module that imports msgspec.

A datagram is a MessagePack array of one or more frames. Every frame is a frozen, array-like
msgspec Struct whose first element is an integer tag, so frames are compact (no field names on the
wire) and decoding is one typed pass. Fields are only ever appended, each with a default, so an
older peer can read a newer frame's prefix.

Every datagram is at most MAX_DATAGRAM (1200) bytes: the size that crosses IPv4 and IPv6 paths
without fragmentation. `decode` raises `FrameError` and nothing else.
"""

from __future__ import annotations

import msgspec

VERSION = 2
SUPPORTED_VERSIONS = (2,)
MAX_DATAGRAM = 1200
#: The longest message text in bytes of UTF-8 (protocol 2: room for a signature, its author's key
#: and the sealing overheads in every room; docs/security.md "Message signatures").
#: names.MAX_TEXT_BYTES is this.
MAX_TEXT = 815
#: A client's first datagram is padded to at least this many bytes (anti-amplification: the relay
#: may answer an unvalidated address with at most 3x what it received).
HELLO_PAD_TO = 1200


class FrameError(ValueError):
    """A datagram that is not valid udproom wire format."""


class Frame(msgspec.Struct, frozen=True, array_like=True):
    pass


# --------------------------------------------------------------------------- handshake


class Hello(Frame, tag=1):
    """Client -> relay (or peer -> peer). Without a valid cookie it only earns a Retry."""

    version: int
    nick: str
    cookie: bytes = b""
    pad: bytes = b""
    #: random per connection attempt: a repeated Hello with the same nonce is a retransmit
    nonce: int = 0
    #: direct mode: the room the sender wants to be in
    room: str = ""
    #: the session's first request number: random per session, so a late Result from an earlier
    #: session can never answer a request of this one
    first_cseq: int = 1
    #: the token of the session this client had before (at any address): the relay ends that one
    #: (a client whose address changed under NAT comes back without colliding with its ghost)
    resume: int = 0
    #: direct mode: the sender's node id (random per process); `nonce` is then the sender's
    #: secret for this link attempt (the `Sid` token the answerer must put on every datagram)
    node: int = 0
    #: protocol 2: the initiator's handshake message 1 (`crypto.Initiator`), docs/security.md
    kx: bytes = b""


class Retry(Frame, tag=2):
    """Stateless answer to a cookieless Hello: send Hello again with this cookie."""

    cookie: bytes
    version: int = VERSION


class Welcome(Frame, tag=3):
    """The session exists now. `epoch` names this relay run: a new epoch means sequences restarted.

    `token` is the session's secret: the client starts every later datagram with `Sid(token)`, so
    an off-path attacker who forges the client's address cannot speak for it."""

    version: int
    nick: str
    epoch: int
    keepalive_ms: int
    timeout_ms: int
    token: int = 0
    nonce: int = 0  # echoes the Hello's nonce: a forged Welcome cannot guess it
    #: protocol 2: the responder's handshake message 2 (`crypto.Responder`), docs/security.md
    kx: bytes = b""


class Refuse(Frame, tag=4):
    """The whole session is refused (version, capacity, nick). `versions` lists what the relay speaks.
    `retry_ms` > 0: the refusal should pass by then (the nick's holder looks like a ghost that will
    time out), so the client says Hello again after that long; 0: final."""

    reason: str
    versions: list[int] = []
    nonce: int = 0  # echoes the Hello's nonce
    retry_ms: int = 0


class Reset(Frame, tag=5):
    """'I have no session for your address': the client should say Hello again. `token` echoes the
    Sid the datagram came with, so only the session's owner (who knows it) believes a Reset."""

    token: int = 0


class Bye(Frame, tag=6):
    reason: str = ""


#: A Bye with this reason ends a session whose registered nick its owner (the same identity key)
#: took over from a new login: the client stops there (reconnecting would take it back, forever).
TAKEN_OVER = "your nick was taken by a newer login with your identity key"


class Login(Frame, tag=13):
    """Protocol 2, client -> relay, sealed (the payload of handshake message 3): what the clear
    Hello carried in protocol 1. `resume` is the token of the client's previous session."""

    nick: str
    resume: int = 0
    first_cseq: int = 1


class LoggedIn(Frame, tag=14):
    """Protocol 2, relay -> client, sealed: the session exists (what Welcome carried in protocol
    1). `token` names the session for a later Login's `resume`; it is never sent in the clear."""

    nick: str
    epoch: int
    keepalive_ms: int
    timeout_ms: int
    token: int = 0


class RoomKey(Frame, tag=15):
    """Protocol 2, relay -> member, sealed under the member's session: the key `room`'s batches
    are sealed with from now on (`crypto.RoomKey(key, kid)`), at join and after departures."""

    room: str
    kid: int
    key: bytes


class NeedPassphrase(Frame, tag=50):
    """Relay -> client, sealed: the answer to request `cseq` about passphrase room `room`: derive
    the room's keys with Argon2id(passphrase, salt, ops, mem) and ask again with the verifier
    (`crypto.check_kdf_params` bounds what a hostile relay may ask)."""

    cseq: int
    room: str
    salt: bytes = b""
    ops: int = 0
    mem: int = 0


class Sid(Frame, tag=9):
    """First frame of every datagram a client sends on an established session."""

    token: int


class Ping(Frame, tag=7):
    token: int


class Pong(Frame, tag=8):
    token: int


# --------------------------------------------------------------------------- client requests

OP_JOIN = 1
OP_PART = 2
OP_POST = 3
OP_ACTION = 4
OP_NICK = 5
OP_TOPIC = 6
OP_AWAY = 7
OP_DIRECT = 8  # room = target nick
OP_NAMES = 9  # arg = offset into the member snapshot taken at join
OP_HISTORY = 10  # paging back: events of `room` before sequence `arg` (0: the newest), at most `n`
# Registered nicks and moderation (protocol/relay/moderation.py; docs/security.md): `room` is the
# room, `text` the target (a nick, or for a ban a nick or a fingerprint) and, for a kick, a reason
# after the first space; OP_MODE's `text` is a mode change ("+i", "-tm").
OP_REGISTER = 20  # bind the session's nick to its identity key on this relay
OP_KICK = 21
OP_BAN = 22
OP_UNBAN = 23
OP_OP = 24
OP_DEOP = 25
OP_MODE = 26
OP_INVITE = 27
OP_VOICE = 28
OP_DEVOICE = 29
#: every moderation request, by op: its name (what the client says it was)
MODERATION_OPS = {
    OP_REGISTER: "register",
    OP_KICK: "kick",
    OP_BAN: "ban",
    OP_UNBAN: "unban",
    OP_OP: "op",
    OP_DEOP: "deop",
    OP_MODE: "mode",
    OP_INVITE: "invite",
    OP_VOICE: "voice",
    OP_DEVOICE: "devoice",
}
# passphrase rooms (protocol/relay/vault.py; docs/security.md "Passphrase rooms"): numbers 50-59
OP_MKPRIVATE = 50  # make `room` a passphrase room and join it: body = vault.proposal(...)
OP_PASSPHRASE = 51  # re-key `room` (its creator): body = vault.proposal(...) of the new passphrase
OP_KEYSHARE = 52  # hand `room`'s new body key to the member whose identity key is `text` (hex): body = share


class Req(Frame, tag=10):
    """A client request, numbered per session. The relay handles them in `cseq` order, once."""

    cseq: int
    op: int
    room: str = ""
    text: str = ""
    mid: int = 0  # message id, stable across retransmits and reconnects (dedupe)
    arg: int = 0
    n: int = 0  # a count: OP_HISTORY's most events wanted
    #: passphrase rooms: a sealed body (OP_POST, OP_ACTION, OP_TOPIC; `text` is then empty), the
    #: verifier (OP_JOIN, OP_HISTORY), a proposal (OP_MKPRIVATE, OP_PASSPHRASE), a key share
    body: bytes = b""
    #: protocol 2: a post's signature by its author's identity key (`crypto.sign_message`)
    sig: bytes = b""


RES_OK = 0
RES_REFUSED = 1
RES_STALE = 2  # too old to remember; treat as done


class Result(Frame, tag=11):
    cseq: int
    code: int = RES_OK
    seq: int = 0
    reason: str = ""
    room: str = ""


class MemberInfo(msgspec.Struct, frozen=True, array_like=True):
    nick: str
    away: str = ""
    #: protocol 2: the member's identity key (proven in its handshake), empty when unknown
    key: bytes = b""
    #: "@" an operator of the room, "+" voiced, "" neither
    mode: str = ""


class Joined(Frame, tag=12):
    """Result of a join (or a names request): the member snapshot as of our join, in chunks."""

    cseq: int
    room: str
    nick: str
    base: int  # first sequence the relay will deliver to us (backfill starts here)
    join_seq: int  # our own join event
    topic: str = ""
    members: list[MemberInfo] = []
    offset: int = 0  # index of members[0] in the snapshot
    total: int = 0  # members in the snapshot
    #: protocol 2: the topic's setter's identity key and signature (as in its EV_TOPIC), when the
    #: relay has them (empty: unchecked, docs/security.md "Signed topics")
    topic_key: bytes = b""
    topic_sig: bytes = b""


# --------------------------------------------------------------------------- sequenced events

EV_MSG = 1
EV_ACTION = 2
EV_JOIN = 3
EV_LEAVE = 4
EV_TIMEOUT = 5
EV_NICK = 6  # nick = old, text = new
EV_TOPIC = 7
EV_AWAY = 8
EV_DM = 9  # inbox: nick = sender
EV_DM_SENT = 10  # inbox: nick = recipient (our own direct message, for our other view)
EV_DM_ACTION = 11
EV_DM_ACTION_SENT = 12
# Moderation (protocol/relay/moderation.py): `nick` is the operator, `text` the target (a nick or
# a fingerprint) or the mode change; EV_KICK's `nick` is the member put out and its `text`
# "OPERATOR[ REASON]" (members leave on it, as on EV_LEAVE). In the inbox, EV_KICKED tells the
# member put out: `nick` the operator, `text` "ROOM[ REASON]".
EV_KICK = 20
EV_BAN = 21
EV_UNBAN = 22
EV_OP = 23
EV_DEOP = 24
EV_MODE = 25
EV_INVITE = 26
EV_VOICE = 27
EV_DEVOICE = 28
EV_KICKED = 29
# EV_JOIN's `text` is the joiner's mode in the room: "@", "+" or "".
EV_KEYSHARE = 50  # passphrase room re-keyed: nick = changer, text = recipient key (hex), body = share


class Ev(msgspec.Struct, frozen=True, array_like=True):
    kind: int
    nick: str
    text: str = ""
    ts: float = 0.0
    mid: int = 0
    #: passphrase rooms: the body sealed end to end (`text` is then empty), or a key share
    body: bytes = b""
    #: protocol 2: a message's signature by its author (`crypto.sign_message`), as posted
    sig: bytes = b""
    #: protocol 2: in a join, the joiner's identity key (as it proved it in its handshake)
    key: bytes = b""


class Batch(Frame, tag=20):
    """Consecutive events of one room (or of the inbox, room ""), starting at `seq`."""

    room: str
    seq: int
    events: list[Ev]


class Gone(Frame, tag=21):
    """Events before `first` are no longer kept: skip to it."""

    room: str
    first: int


class Ack(Frame, tag=22):
    """Receiver -> sender: every event up to `cum` arrived, and these [lo, hi] ranges above it."""

    room: str
    cum: int
    ranges: list[int] = []  # flattened lo, hi, lo, hi ...


class Nack(Frame, tag=23):
    """Receiver -> sender: please resend these [lo, hi] ranges now."""

    room: str
    ranges: list[int]


class History(Frame, tag=24):
    """Relay -> client: one datagram of the answer to an OP_HISTORY request `cseq`. The page is the
    room's events lo..hi (hi = lo - 1: none); this part carries those from `seq` on. `complete`:
    nothing older than lo is kept."""

    cseq: int
    room: str
    lo: int
    hi: int
    seq: int
    events: list[Ev] = []
    complete: bool = False


# --------------------------------------------------------------------------- direct mode (peers)


class PeerMsg(Frame, tag=30):
    """A peer's own message, numbered by its sender (`seq`), ordered by Lamport clock `lc`.

    Protocol 2: `sig` is its author's signature (`crypto.sign_message` over room, kind, mid, ts
    and text). Live, the author is the link it came over (`nick` is not read, and sent empty);
    as a PeerHistory item it is someone else's message, so it carries its author's `nick` and
    identity `key`, which the receiver checks against its pin for that nick."""

    room: str
    seq: int
    lc: int
    kind: int
    nick: str
    text: str = ""
    ts: float = 0.0
    mid: int = 0
    sig: bytes = b""
    key: bytes = b""


class PeerList(Frame, tag=31):
    """Gossip: members of `room` this peer knows, as [nick, host, port] triples (the address as
    the sender sees that member), with each member's node id at the same index in `ids`."""

    room: str
    peers: list[tuple[str, str, int]] = []
    ids: list[int] = []


class PeerAck(Frame, tag=32):
    room: str
    sender: str  # nick of the sender whose stream is acked
    cum: int
    ranges: list[int] = []


class PeerLeave(Frame, tag=33):
    room: str
    nick: str
    reason: str = ""
    #: the sender's Lamport clock as it left (it ticks on leaving): a PeerJoin of theirs stamped
    #: earlier was sent before, and arriving after this (reordered) it does not bring them back
    lc: int = 0


class PeerHistory(Frame, tag=34):
    """Recent room history for a late joiner, oldest first. Paging back: with `n` > 0 (and no
    items) a request for up to `n` messages stamped below `before`; the answer carries the same
    `before`, its last frame `end`."""

    room: str
    items: list[PeerMsg] = []
    before: int = 0  # a page: its messages are stamped below this (0: the join backfill)
    n: int = 0  # > 0: a request for a page
    end: bool = False  # the last frame of a page's answer


class PeerJoin(Frame, tag=35):
    """Peer -> peer, per room: 'I am in `room` as `nick`'. Also the periodic state refresh.

    `base` is the first sequence of the sender's stream in `room` that the receiver will get
    (anything lower is skipped); `top` is the sender's last sequence there (a lost tail can be
    NACKed). `ask` asks for the receiver's own PeerJoin in return; `history` asks for PeerHistory.
    Room "" is the pair's direct-message stream."""

    room: str
    nick: str
    node: int
    base: int
    top: int = 0
    lc: int = 0
    away: str = ""
    topic: str = ""
    topic_lc: int = 0
    topic_by: str = ""
    ask: bool = False
    history: bool = False
    #: when the sender joined `room` (its wall clock): of two peers with one nick, the later
    #: joiner is refused
    since: float = 0.0
    #: protocol 2: the topic's setter's identity key and its signature over the room, the topic's
    #: stamp and text (`crypto.signed_event(room, EV_TOPIC, topic_lc, topic)`): whoever relays a
    #: topic, only its setter could have made it
    topic_key: bytes = b""
    topic_sig: bytes = b""


AnyFrame = (
    Hello
    | Retry
    | Welcome
    | Refuse
    | Reset
    | Bye
    | Ping
    | Pong
    | Sid
    | Login
    | LoggedIn
    | RoomKey
    | NeedPassphrase
    | Req
    | Result
    | Joined
    | Batch
    | Gone
    | Ack
    | Nack
    | History
    | PeerMsg
    | PeerList
    | PeerAck
    | PeerLeave
    | PeerHistory
    | PeerJoin
)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[AnyFrame])
_ev_decoder = msgspec.msgpack.Decoder(Ev)


def encode(frames: list[Frame] | tuple[Frame, ...]) -> bytes:
    """One datagram carrying `frames`. The caller keeps it within MAX_DATAGRAM (see `pack`)."""
    return _encoder.encode(frames)


def encode_one(frame: Frame) -> bytes:
    return _encoder.encode((frame,))


def size_of(obj: object) -> int:
    """Encoded size of a frame or event item, in bytes."""
    return len(_encoder.encode(obj))


def encode_ev(ev: Ev) -> bytes:
    """An event as stored in a log (the same MessagePack array it has inside a Batch)."""
    return _encoder.encode(ev)


def decode_ev(data: bytes) -> Ev:
    """An event read back from a log. Raises FrameError, and only FrameError, for anything invalid."""
    try:
        return _ev_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise FrameError(f"stored event: {exc}") from None
    except Exception as exc:  # defensive, as in decode()
        raise FrameError(f"undecodable stored event: {exc.__class__.__name__}") from None


def decode(data: bytes) -> list[Frame]:
    """Frames in a datagram. Raises FrameError, and only FrameError, for anything invalid."""
    if len(data) > MAX_DATAGRAM:
        raise FrameError(f"datagram of {len(data)} bytes is over {MAX_DATAGRAM}")
    try:
        frames = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise FrameError(str(exc)) from None
    except Exception as exc:  # defensive: msgspec raises only the above, but never leak
        raise FrameError(f"undecodable datagram: {exc.__class__.__name__}") from None
    if not frames:
        raise FrameError("empty datagram")
    return frames


def decode_counted(data: bytes, stats: dict[str, int]) -> list[Frame] | None:
    """`decode`, or None with `stats["malformed"]` counted: what a core does with what it opened."""
    try:
        return decode(data)
    except FrameError:
        stats["malformed"] += 1
        return None


def pack(frames: list[Frame], limit: int = MAX_DATAGRAM, prefix: Frame | None = None) -> list[bytes]:
    """Pack frames into as few datagrams of at most `limit` bytes as order allows.

    With `prefix` (a session's `Sid`), every datagram starts with that frame."""
    out: list[bytes] = []
    head = [prefix] if prefix is not None else []
    base = 3 + (len(_encoder.encode(prefix)) if prefix is not None else 0)
    current: list[Frame] = list(head)
    size = base
    for frame in frames:
        n = len(_encoder.encode(frame))
        if len(current) > len(head) and size + n > limit:
            out.append(_encoder.encode(current))
            current, size = list(head), base
        current.append(frame)
        size += n
    if len(current) > len(head):
        out.append(_encoder.encode(current))
    return out


def hello_padding(frame_size: int) -> bytes:
    """Padding that brings a Hello datagram (measured with an empty pad) to exactly HELLO_PAD_TO
    bytes: the pad replaces the empty pad's 2 bytes with itself and a 3-byte bin16 header."""
    return bytes(max(0, HELLO_PAD_TO - frame_size - 1))


def hello_prologue(hello: Hello) -> bytes:
    """What both ends of a protocol-2 handshake hash as its prologue: the clear Hello fields that
    stay the same across its Retry (version and nonce; not the cookie), so a Hello altered in
    flight gives different keys (docs/security.md, "The handshake")."""
    return f"udproom hello {hello.version} {hello.nonce}".encode()


def padded_hello(**fields: object) -> Hello:
    """A Hello with these fields, padded so that its datagram is HELLO_PAD_TO bytes."""
    fields.pop("pad", None)
    unpadded = Hello(**fields)  # type: ignore[arg-type]
    return msgspec.structs.replace(unpadded, pad=hello_padding(size_of((unpadded,))))


# --------------------------------------------------------------------------- pre-encoded pieces
# A datagram is an array of frames, so it can be assembled from frames encoded once: the relay
# keeps room events encoded, builds each Batch frame once and sends every member the same batch
# bytes behind that member's own encoded Sid.


def encode_item(obj: object) -> bytes:
    """One frame or event, encoded alone (not wrapped in a datagram's array)."""
    return _encoder.encode(obj)


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def batch_item(room: str, seq: int, events: list[bytes]) -> bytes:
    """An encoded Batch frame made of already encoded events (what `encode_item(Batch(...))`
    gives, without decoding or re-encoding the events)."""
    head = _encoder.encode((Batch.__struct_config__.tag, room, seq))  # a 3-array: tag, room, seq
    return b"\x94" + head[1:] + _array_header(len(events)) + b"".join(events)


def batch_overhead(room: str) -> int:
    """Bytes of a Batch frame besides its events: header, tag, room, seq (<= 9) and the events'
    array header (<= 3)."""
    return 1 + 1 + len(_encoder.encode(room)) + 9 + 3


def datagram(items: list[bytes]) -> bytes:
    """A datagram made of encoded frames (`encode_item`)."""
    return _array_header(len(items)) + b"".join(items)
