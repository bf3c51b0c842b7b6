"""The relay's state: its configuration, sessions, rooms and inboxes as streams of events, and
its members (a send window each)."""

from __future__ import annotations

import os
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from .. import frames as F
from ..addr import Addr
from ..cookies import source_of
from ..crypto import (
    ARGON_MEM,
    ARGON_OPS,
    ROOM_OVERHEAD,
    SESSION_OVERHEAD,
    Identity,
    Responder,
    RoomKey,
    SealedChannel,
)
from ..names import (
    MAX_REASON_BYTES,
    clip_utf8,
)
from ..reliability import (
    DedupeWindow,
    RepairBudget,
    RttEstimator,
    SendWindow,
    Timing,
    TokenBucket,
)


@dataclass(slots=True)
class RelayConfig:
    timing: Timing = field(default_factory=Timing)
    wall_offset: float = 0.0
    history: int = 100  # events backfilled to a joiner
    ring: int = 4096  # events kept per room for repair (and at most ring_bytes of them)
    ring_bytes: int = 512 * 1024
    inbox_ring: int = 512  # direct messages kept per session for repair
    empty_room_ttl: float = 3600.0  # an empty room keeps its history this long
    max_sessions: int = 10_000
    max_rooms: int = 10_000
    max_rooms_per_session: int = 50
    max_members_per_room: int = 1_000
    request_rate: float = 5_000.0  # requests per second per session (token bucket)
    request_burst: float = 10_000.0
    hello_rate: float = 50.0  # handshakes per second from one source address (IPv6: one /64)
    secret: bytes | None = None
    epoch: int | None = None
    #: repair bytes (retransmissions, NACK answers, backfill, repeated answers) one session may
    #: cause per round trip (a RepairBudget, whose round trip is never taken below timing.rto_min)
    repair_window: int = 24_000
    inbox_keep: float = 600.0  # a dropped session's undelivered direct messages wait this long
    max_parked: int = 10_000  # dropped sessions whose direct messages wait (oldest go first)
    max_parked_bytes: int = 64 * 1024 * 1024  # and all their messages together
    hello_burst: float = 200.0  # (a NAT or a test machine puts many clients behind one address)
    page_rate: float = 10.0  # history pages per second per session (OP_HISTORY)
    page_burst: float = 20.0
    expire_every: float = 1.0  # retention: the room log's expire() runs this often...
    expire_budget: int = 200  # ...deleting at most this many events each time
    #: the relay's long-term key (docs/security.md): None makes one for this run, in memory
    identity: Identity | None = None
    #: a handshake that has not logged in (handshake message 3) after this long is forgotten
    pending_timeout: float = 10.0
    #: room keys change after departures at most this often (leaves within it share one rotation)
    rekey_every: float = 1.0
    #: fingerprints of the relay operators' keys: operators in every room (moderation.py)
    admin_keys: frozenset[str] = frozenset()
    #: the most rooms one key may make on this relay (0: no limit; moderation.py)
    max_rooms_per_key: int = 0
    #: posts (messages, /me, direct messages) per second from one identity key, in bursts of
    #: `posts_per_key_burst`, whatever its sessions, addresses or nicks (0: no limit)
    posts_per_key: float = 100.0
    posts_per_key_burst: float = 1000.0
    #: the most nicks one key may register on this relay (each is a record kept for good)
    max_nicks_per_key: int = 5
    #: the weakest Argon2id parameters a passphrase room may be made with here (relay/vault.py);
    #: lowered only by tests, which cannot spend 128 MiB per derivation
    argon_ops: int = ARGON_OPS
    argon_mem: int = ARGON_MEM
    #: verifiers checked per second from one source address (IPv6: one /64), in bursts of
    #: `passphrase_burst`: online guessing at a passphrase room's door
    passphrase_rate: float = 1.0
    passphrase_burst: float = 10.0
    #: per source address (`cookies.source_of`: an IPv4 address, an IPv6 /64), whatever its
    #: sessions, keys or nicks; generous, since a NAT puts many users behind one address (0: no
    #: limit). The most sessions open at once (a login beyond it is refused)...
    max_sessions_per_address: int = 64
    #: ...requests a second, all its sessions together (beyond it a request is dropped and
    #: counted: the client sends it again; each session has its own `request_rate` too)...
    requests_per_address: float = 10_000.0
    requests_per_address_burst: float = 20_000.0
    #: ...and posts (messages, /me, direct messages) a second, refused like `posts_per_key`
    posts_per_address: float = 200.0
    posts_per_address_burst: float = 2_000.0
    #: handshakes waiting for their Login at once from one source address (IPv4 address, IPv6
    #: /64): a Hello beyond it is dropped and counted (its client sends it again), so a few
    #: addresses' half-open handshakes cannot fill `max_sessions` for everyone (0: no limit)
    max_handshakes_per_address: int = 32


#: RelayConfig(**NO_ADDRESS_LIMITS): the per-address limits off, as with `relay
#: --max-sessions-per-address 0 --requests-per-address 0 --posts-per-address 0` (benchmarks, whose
#: thousands of clients all come from one machine)
NO_ADDRESS_LIMITS = {
    "max_sessions_per_address": 0,
    "max_handshakes_per_address": 0,
    "requests_per_address": 0.0,
    "posts_per_address": 0.0,
}


# ----------------------------------------------------------------------------- relay events (logs)


@dataclass(frozen=True, slots=True)
class SessionOpened:
    nick: str
    addr: Addr


@dataclass(frozen=True, slots=True)
class SessionClosed:
    nick: str
    addr: Addr
    reason: str


@dataclass(frozen=True, slots=True)
class StoreFailed:
    """The room log stopped storing (disk full, read-only...): posts are refused with `reason`
    until a `StoreRecovered`. Said once per outage, for the operator."""

    reason: str


@dataclass(frozen=True, slots=True)
class StoreRecovered:
    """The room log stores again after a `StoreFailed`; `refused` commits failed meanwhile."""

    refused: int


# ----------------------------------------------------------------------------- state


class Member(SendWindow):
    """One session's view of one stream (room or inbox): the stream's send window towards it,
    and what its join needs."""

    __slots__ = ("join_seq", "session", "snapshot", "stream")

    def __init__(self, session: Session, stream: Stream, base: int, join_seq: int) -> None:
        super().__init__(base)
        self.session = session
        self.stream = stream
        self.join_seq = join_seq
        self.snapshot: list[F.MemberInfo] = []


#: What one kept event costs besides its encoded bytes (measured with tracemalloc by
#: benchmarks/bench_relay_costs.py): the bytes object's header, its deque slot, and its timestamp
#: (a float and its slot). Room memory is counted as encoded size + this.
EVENT_OVERHEAD = 96
#: What a datagram to a session carries besides its frames: the array header and the sealing (a
#: room datagram's, the larger: head, member tag, key id, nonce, AEAD tag; crypto.ROOM_OVERHEAD).
DGRAM_HEAD = 1 + ROOM_OVERHEAD
#: ...and a datagram sealed under the session alone (what answers to one member are: a history page)
SESSION_HEAD = 1 + SESSION_OVERHEAD


class EventTooBig(ValueError):
    """An event that could not fit one datagram: a bug of the caller (every string that reaches an
    event is bounded), refused here so that it can never wedge a stream."""


class Stream:
    """A numbered event log: a room, or one session's inbox (wire name "").

    Events are kept encoded (`F.encode_item`): what is counted is what is kept, and a batch is
    built by joining them, never re-encoding."""

    __slots__ = (
        "bytes",
        "cap",
        "cap_bytes",
        "fanout",
        "first",
        "flushed",
        "key",
        "last_active",
        "max_event",
        "members",
        "mids",
        "name",
        "overhead",
        "rekey_at",
        "rekeyed",
        "ring",
        "seq",
        "times",
        "topic",
        "topic_signed",
    )

    def __init__(self, name: str, cap: int, cap_bytes: int = 1 << 20) -> None:
        self.name = name
        self.seq = 0  # last assigned
        self.ring: deque[bytes] = deque()
        self.times: deque[float] = deque()
        self.first = 1  # seq of ring[0]
        self.flushed = 0  # last seq broadcast
        self.members: dict[Addr, Member] = {}
        self.fanout: list[tuple[int, SealedChannel, Addr]] | None = None  # (base, channel, addr)
        # a room's batches are sealed once under its key (a member's tag added per member); the
        # inbox ("") is sealed per session
        self.key: RoomKey | None = RoomKey.generate() if name else None
        self.rekey_at: float | None = None  # a departure asks for a new key from then on
        self.rekeyed = float("-inf")  # when the key last changed
        self.topic = ""
        #: (topic, its setter's key, its signature) as last set here: given to joiners while
        #: `topic` is still that one (kept in memory only: a restart leaves the topic unchecked)
        self.topic_signed: tuple[str, bytes, bytes] = ("", b"", b"")
        self.mids = DedupeWindow(4096)
        self.cap = cap
        self.cap_bytes = cap_bytes
        self.bytes = 0
        self.last_active = 0.0
        self.overhead = F.batch_overhead(name)
        self.max_event = F.MAX_DATAGRAM - DGRAM_HEAD - self.overhead

    def start_at(self, last: int, topic: str = "") -> None:
        """A room the log already has: its numbers continue after `last` (nothing cached yet)."""
        self.seq = self.flushed = last
        self.first = last + 1
        self.topic = topic

    def truncate(self, last: int) -> list[bytes]:
        """Take back the events after `last` (a failed commit); returns them, oldest first."""
        taken: list[bytes] = []
        while self.seq > last and self.ring:
            data = self.ring.pop()
            self.times.pop()
            self.bytes -= len(data) + EVENT_OVERHEAD
            taken.append(data)
            self.seq -= 1
        self.seq = last
        if not self.ring:
            self.first = last + 1
        self.flushed = min(self.flushed, last)
        taken.reverse()
        return taken

    def drop_before(self, first: int) -> None:
        """Retention moved the log's first kept sequence: the cache follows."""
        while self.ring and self.first < first:
            self.bytes -= len(self.ring.popleft()) + EVENT_OVERHEAD
            self.times.popleft()
            self.first += 1

    def append(self, ev: F.Ev, now: float) -> int:
        return self.push(self.encode(ev), now)

    def encode(self, ev: F.Ev) -> bytes:
        """The event as kept; EventTooBig if it could not travel in one datagram."""
        data = F.encode_item(ev)
        if len(data) > self.max_event:
            raise EventTooBig(f"an event of {len(data)} bytes does not fit a datagram")
        return data

    def push(self, data: bytes, now: float) -> int:
        """Keep an encoded event (`encode`) as the next one."""
        self.seq += 1
        self.ring.append(data)
        self.times.append(now)
        self.bytes += len(data) + EVENT_OVERHEAD
        self.last_active = now
        # bounded by count and by bytes, whichever bites first
        while len(self.ring) > self.cap or (self.bytes > self.cap_bytes and len(self.ring) > 1):
            self.bytes -= len(self.ring.popleft()) + EVENT_OVERHEAD
            self.times.popleft()
            self.first += 1
        return self.seq

    def get(self, seq: int) -> F.Ev | None:
        i = seq - self.first
        if 0 <= i < len(self.ring):
            return F.decode_ev(self.ring[i])
        return None

    def events(self) -> list[F.Ev]:
        """Every kept event, decoded (tests and tools)."""
        return [F.decode_ev(d) for d in self.ring]

    def batches(self, lo: int, hi: int, older=None):
        """Encoded Batch frames covering lo..hi (inclusive), each fitting one datagram behind a
        session's sealing, as (first seq, event count, bytes); lazily, so a caller with a budget stops
        early. An event too big for a datagram cannot be in the ring (`append` refuses it).
        `older(lo, hi)`, when given, yields (seq, encoded event) for what the ring no longer has
        (the room log); without it, the batches start at the ring."""
        lo = max(lo, self.first) if older is None else lo
        yield from self._pack(self._items(lo, hi, older), lo)

    def _items(self, lo: int, hi: int, older):
        ring, first = self.ring, self.first
        if lo < first:
            yield from older(lo, min(hi, first - 1))
            lo = first
        for s in range(lo, hi + 1):
            yield s, ring[s - first]

    def _pack(self, items, lo: int):
        room = F.MAX_DATAGRAM - DGRAM_HEAD
        overhead = self.overhead
        cur: list[bytes] = []
        start = lo
        size = overhead
        for s, data in items:
            if cur and s != start + len(cur):  # (a hole: the log skipped what it no longer keeps)
                yield start, len(cur), F.batch_item(self.name, start, cur)
                cur, start, size = [], s, overhead
            if not cur:
                start = s
            n = len(data)
            if cur and size + n > room:
                yield start, len(cur), F.batch_item(self.name, start, cur)
                cur, start, size = [], s, overhead
            cur.append(data)
            size += n
        if cur:
            yield start, len(cur), F.batch_item(self.name, start, cur)


class Parked:
    """A dropped session's undelivered direct messages, kept for its owner's return (who proves it
    is the owner with the old session token, `Hello.resume`), until `until`."""

    __slots__ = ("events", "nick", "size", "until", "waiters")

    def __init__(self, nick: str, events: list[bytes], waiters: list, until: float) -> None:
        self.nick = nick
        self.events = events
        self.size = sum(len(e) + EVENT_OVERHEAD for e in events)
        self.waiters = waiters  # per event: (sender, cseq, result) or None
        self.until = until


class RemoteSender:
    """The sender of a direct message that came through the cluster from another relay (cluster.py):
    its waiter in a recipient's inbox answers that relay instead of a session here."""

    __slots__ = ("dm_id", "names", "origin", "token")

    def __init__(self, names: object, origin: str, dm_id: int) -> None:
        self.names = names
        self.origin = origin
        self.dm_id = dm_id
        self.token = 0

    def answer(self, res: F.Result) -> None:
        ok = res.code == F.RES_OK
        self.names.answer_dm(self.origin, self.dm_id, ok, res.room[1:] if ok else res.reason)  # type: ignore[attr-defined]


class Pending:
    """A handshake answered (Welcome with handshake message 2) and waiting for the client's
    message 3 (its sealed Login). Counts against `max_sessions`; forgotten after
    `pending_timeout`. `answer` is what a refused Login got, sent again for a repeated msg3."""

    __slots__ = ("addr", "answer", "claimed_as", "created", "hs", "nonce", "session", "welcome")

    def __init__(self, addr: Addr, nonce: int, hs: Responder, welcome: bytes, now: float) -> None:
        self.addr = addr
        self.nonce = nonce
        self.hs = hs
        self.welcome = welcome
        self.created = now
        self.answer: bytes | None = None
        #: the session its Login makes, kept while the Login waits for the cluster (its nick claim
        #: names the session's token: asked again, it is the same claim)
        self.session: Session | None = None
        #: (nick, token) of the Login from this address that waited before this handshake began
        self.claimed_as: tuple[str, int] | None = None


class Session:
    __slots__ = (
        "addr",
        "away",
        "bucket",
        "channel",
        "deferred",
        "dm_in",
        "dm_waiters",
        "doubted",
        "hs",
        "inbox",
        "inbox_member",
        "joining",
        "key",
        "last_heard",
        "next_cseq",
        "nick",
        "nonce",
        "out",
        "pages",
        "parked",
        "pending",
        "repair",
        "results",
        "rooms",
        "rtt",
        "source",
        "token",
        "vault",
    )

    def __init__(
        self, addr: Addr, nick: str, nonce: int, now: float, cfg: RelayConfig, hs: Responder
    ) -> None:
        self.addr = addr
        self.source = source_of(addr)  # what the per-address limits count it as
        self.nick = nick
        self.away = ""
        self.nonce = nonce
        # 62 random bits, with the top bit of 63 set so that it always encodes in 9 bytes
        self.token = (int.from_bytes(os.urandom(8), "big") >> 2) | (1 << 62)
        # Every datagram of the session is sealed under its keys (the handshake's): only the
        # session can make or read them. `key` is the identity the client proved (or None).
        self.hs = hs  # kept to recognise a repeated handshake message 3 (our LoggedIn was lost)
        self.channel: SealedChannel = hs.channel
        self.key: bytes | None = hs.initiator_key
        self.rooms: dict[str, Stream] = {}
        self.inbox = Stream("", cfg.inbox_ring, cfg.ring_bytes // 4)
        self.inbox_member = Member(self, self.inbox, 1, 0)
        self.next_cseq = 1
        self.pending: dict[int, F.Req] = {}
        #: the cseq of the request waiting for the cluster (roomlog.Pending; 0: none): requests
        #: are handled in order, so a session has at most one (the next ones wait in `pending`)
        self.parked = 0
        #: rooms whose join event is committing (a cluster): name -> (its seq, the Commit); None: none
        self.joining: dict[str, tuple[int, Any]] | None = None
        self.results: OrderedDict[int, F.Frame] = OrderedDict()
        self.last_heard = now
        self.doubted: float | None = None  # last_heard when a Hello for our nick came (handshake.py)
        self.rtt = RttEstimator(cfg.timing)
        self.bucket = TokenBucket(cfg.request_rate, cfg.request_burst, now)
        self.repair = RepairBudget(cfg.repair_window, cfg.timing.rto_min, now)
        self.pages = TokenBucket(cfg.page_rate, cfg.page_burst, now)
        self.out: list[F.Frame] = []
        # direct messages: the cseqs of ours still waiting for their recipient, and theirs in our
        # inbox that a sender waits on (inbox seq -> (sender, cseq, result))
        self.deferred: set[int] = set()
        self.dm_waiters: dict[int, tuple[Session, int, F.Result]] = {}
        #: direct messages that came through the cluster: (sender's nick_key, mid) -> inbox seq, so
        #: a resend through another relay (the sender failed over) is not delivered twice
        self.dm_in: OrderedDict[tuple[str, int], int] = OrderedDict()
        self.vault: dict[str, int] = {}  # passphrase rooms this session proved: room -> key id


MAX_PENDING_REQUESTS = 1024
#: requests and Logins waiting for the cluster (roomlog.Pending), over all sessions: one per
#: session at most, and beyond this many the relay refuses at once rather than hold more
MAX_PARKED = 1024
TOO_MANY_WAITING = "the relay is waiting on its cluster for too many requests; try again in a moment"
MAX_RESULTS_KEPT = 1024
#: the most events one history page (OP_HISTORY) returns
MAX_PAGE = 100
#: the most events one probe (or a join's backfill) looks at: the rest comes with the next probe
REPAIR_SPAN = 4096
#: what a post refused because the room log could not store it says, before the log's own words
NOT_STORED = "the relay could not store it"


_DM_IN = (F.EV_DM, F.EV_DM_ACTION)
#: events that record what happened to a member, not what someone said: a failed commit numbers
#: them again for the next one (a post or topic is refused instead)
PRESENCE = (F.EV_LEAVE, F.EV_TIMEOUT, F.EV_NICK, F.EV_AWAY)
MAX_ECHO_BYTES = 100  # a Result echoes the request's room (or "@nick") only up to this size


def result_frame(cseq: int, code: int = F.RES_OK, seq: int = 0, reason: str = "", room: str = "") -> F.Result:
    """A Result whose strings, which may echo what the client sent, are bounded."""
    if len(room) > MAX_ECHO_BYTES // 4 and len(room.encode()) > MAX_ECHO_BYTES:
        room = ""
    if len(reason) > MAX_REASON_BYTES // 4:
        reason = clip_utf8(reason, MAX_REASON_BYTES)
    return F.Result(cseq=cseq, code=code, seq=seq, reason=reason, room=room)
