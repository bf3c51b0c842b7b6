"""A direct peer's state: its limits, its links and rooms, and the streams it sends."""

from __future__ import annotations

import os
from collections import OrderedDict, deque

from .. import frames as F
from ..addr import Addr
from ..crypto import Initiator, Responder, SealedChannel
from ..reliability import (
    AckScheduler,
    RecvStream,
    RepairBudget,
    RttEstimator,
    SendWindow,
    Timing,
    TokenBucket,
)

#: a link's states: HELLO (we dial: knock, Hello, until their Welcome), KEYING (we answered their
#: Hello: until their msg3 proves their identity key), UP (keyed both ways: everything sealed)
HELLO, KEYING, UP = "hello", "keying", "up"

MAX_LINKS = 256
MAX_ROOMS = 50
MAX_MEMBERS = 64
MAX_OUTBOX = 5000
MAX_KEPT = 2048  # own messages kept per stream for retransmission / late members
ASK_TRIES = 8
ACK_EVERY = 32
REPAIR_WINDOW = 24_000  # bytes of repair (retransmits, NACK answers, history) per link per RTT
GOSSIP_ENTRIES = 80  # entries of one PeerList we act on
MSG_RATE = 2000.0  # frames per second per link
MSG_BURST = 4000.0
HELLO_RATE = 20.0
#: Lamport stamps from the wire are checked against what the same sender said before, never
#: against our own clock (so every honest peer decides alike and the order stays one): each later
#: than its previous, at most LC_STEP beyond it (2**64-1 would pin a line or a topic for ever),
#: and no clock ever passes LC_MAX
LC_STEP = 1 << 32
LC_MAX = 1 << 62
TS_SKEW = 86_400.0  # a wire timestamp further than this from our clock is replaced by ours
MAX_RX_BYTES = 256 * 1024  # out-of-order messages buffered per link (all its streams)
RX_ITEM_BYTES = 448  # what one buffered message costs besides its text (measured: tracemalloc)
MAX_RX_ITEMS = 2048  # ... and per stream
#: dialing addresses learned from gossip: at most this many new links a second, and the knocks
#: sent to an address that never answered are paid from the gossiping link's credit, which
#: grows by AMPLIFICATION x the bytes of each gossip datagram it sent us (and is capped)
DIAL_RATE = 20.0
MAX_DIAL_CREDIT = 64 * 1200
#: what a datagram carries besides its frames: the seal (head and tag, crypto.SESSION_OVERHEAD)
#: and the frames' array header, with room to spare (the name is protocol 1's, when it was a Sid)
SID_ROOM = 32

EARLY = 8  # sealed datagrams kept per link while a handshake we answered waits for msg3

ROOM_KINDS = (F.EV_MSG, F.EV_ACTION)
DM_KINDS = (F.EV_DM, F.EV_DM_ACTION)


def random_id() -> int:
    return int.from_bytes(os.urandom(8), "big") >> 1 or 1


class OwnMsg:
    __slots__ = ("created", "done", "failed", "frame", "local_id", "room", "waiting")

    def __init__(self, frame: F.PeerMsg, local_id: int, created: float, waiting: set[int], room: str) -> None:
        self.frame = frame
        self.local_id = local_id
        self.created = created
        self.waiting = waiting
        self.failed = False
        self.done = False
        self.room = room  # as the app names it ("lobby" or "@nick")


class OutStream:
    """Our numbered messages in one room (or in one pair's DM stream)."""

    __slots__ = ("msgs", "name", "seq")

    def __init__(self, name: str) -> None:
        self.name = name
        self.seq = 0
        self.msgs: OrderedDict[int, OwnMsg] = OrderedDict()

    def first(self) -> int:
        return next(iter(self.msgs), self.seq + 1)


class Target(SendWindow):
    """One receiver of one of our streams: its send window, and since when (no RTT sample from a
    message sent before it was a receiver)."""

    __slots__ = ("since",)

    def __init__(self, base: int, now: float) -> None:
        super().__init__(base, probe_at=now)
        self.since = now


class LinkRoom:
    """What one link shares about one room ("" = the pair's DM stream)."""

    __slots__ = (
        "ask_at",
        "ask_tries",
        "gossiped",
        "hidden",
        "history_left",
        "history_sent",
        "history_until",
        "history_want",
        "join_lc",
        "join_sent",
        "join_top",
        "lc_last",
        "left_lc",
        "live_from",
        "member",
        "name",
        "rx",
        "rx_base",
        "said_lc",
        "since",
        "target",
        "top",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.member = False  # confirmed by their PeerJoin
        self.target: Target | None = None  # our stream -> them
        self.rx: RecvStream | None = None  # their stream -> us
        self.rx_base = 0  # where their stream to us started (earlier = history)
        self.ask_at: float | None = None  # next PeerJoin(ask) while unconfirmed
        self.ask_tries = 0
        self.history_want = False
        self.history_until = 0.0
        self.history_left = 0  # history lines we still take from them (what we asked for)
        self.history_sent = -1e18
        self.top = 0
        self.gossiped = False  # their member list for this room arrived
        #: a member whose nick another member (or we) already has: never announced; the later
        #: joiner of the two refuses itself and leaves (see PeerNode._on_join)
        self.hidden = False
        self.since = 0.0  # when they joined the room (their clock), from their PeerJoin
        #: their clock as their PeerJoins told it: every message after `join_top` is stamped later
        #: than `join_lc` (a sender's clock never goes back), and each later than the one before
        self.join_top = 0
        self.join_lc = 0
        self.lc_last = 0
        #: first sequence of their stream sent after they knew of us: anything before is the join
        #: window (history), decided by what we know and not by their clock
        self.live_from = 0
        self.join_sent = -1e18  # our last PeerJoin answering theirs (answers are paced per RTT)
        #: the highest stamp we told them in this room (PeerJoin or message). They take a stamp of
        #: ours only up to LC_STEP beyond what we said before, so we never send one further: a
        #: hostile member that pushes our clock up must not make our line's stamp differ between
        #: receivers (each clamping it its own way), or their orders would part
        self.said_lc = 0
        self.left_lc = -1  # their clock in their last PeerLeave: an older PeerJoin is stale


class Link:
    def __init__(self, addr: Addr, now: float, timing: Timing) -> None:
        self.addr = addr
        self.state = HELLO
        self.node = 0
        self.nick = ""
        self.nick_at = (
            now  # since when it has had this nick (of two links with one nick, the earlier owns it)
        )
        self.away = ""
        self.cookie = b""
        self.hello_tries = 0
        self.hello_at = now
        self.hello_sent = now
        self.started = now
        self.contact = False  # given by add_peer: retried forever, asked for history
        #: our dial attempt's secret: the nonce of our Hello (their Welcome echoes it) and the
        #: token of our knock (the Reset answering it echoes it)
        self.rx_token = 0
        #: the handshake (crypto.Initiator when we dial, crypto.Responder when we answer) and what
        #: it gives: `channel` seals and opens every datagram once the link is UP, `key` is their
        #: identity key, proven in the handshake. A datagram that does not open is dropped.
        self.initiator: Initiator | None = None
        self.responder: Responder | None = None
        self.responder_at = now  # when we answered (a pending answer is forgotten after a timeout)
        self.hs_nonce = 0  # the nonce of the Hello we answered last (a repeat gets the same Welcome)
        self.hs_node = 0  # ... and its node id (msg3 must name the same)
        self.welcome = b""  # our Welcome datagram to it, resent as it was
        self.channel: SealedChannel | None = None
        self.key = b""
        self.msg3 = b""  # ours, resent until they are heard from under the new keys
        self.msg3_in = b""  # theirs, as answered (a repeat means our answers were lost)
        #: sealed datagrams that came before their msg3 (sent after it, overtaking it, or it was
        #: lost): opened once msg3 proves who sent them, at most EARLY of them
        self.early: list[bytes] = []
        self.confirmed = True  # they have our msg3 (something sealed came back)
        self.answered = False  # a handshake with this address completed once
        self.knocked = False  # a gossiped address answered our knock (see PeerNode._send_hello)
        self.via: Addr | None = None  # learned from this link's gossip: it pays our Hellos
        self.credit = 0.0  # bytes we may send to addresses its gossip named
        self.repair = RepairBudget(REPAIR_WINDOW, timing.rto_min, now)
        self.fails = 0
        self.last_heard = now
        self.last_sent = now
        self.refresh_at = now
        self.ping_at = 0.0
        self.rtt = RttEstimator(timing)
        self.bucket = TokenBucket(MSG_RATE, MSG_BURST, now)
        self.rooms: dict[str, LinkRoom] = {}
        self.out: list[F.Frame] = []
        self.acks = AckScheduler(timing.ack_delay, ACK_EVERY)
        self.dm_out = OutStream("")
        self.ping_token = 0
        self.ping_sent: dict[int, float] = {}


class Room:
    __slots__ = ("history", "joined_at", "joined_ts", "name", "out", "topic", "topic_key", "topic_proof")

    def __init__(self, name: str, history: int, joined_ts: float = 0.0, joined_at: float = 0.0) -> None:
        self.name = name
        self.joined_ts = joined_ts
        self.joined_at = joined_at  # our clock (monotonic)
        self.out = OutStream(name)
        self.topic = ""
        self.topic_key: tuple[int, str] = (0, "")  # (its stamp, who set it)
        self.topic_proof: tuple[bytes, bytes] = (b"", b"")  # (the setter's key, its signature)
        self.history: deque[F.PeerMsg] = deque(maxlen=max(1, history))
