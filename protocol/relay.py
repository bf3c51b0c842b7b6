"""The relay's sans-IO core: sessions, rooms, sequencing, fan-out, repair, presence.

No sockets, no asyncio, no clock: the runner passes `now` (monotonic seconds) to every call and
`RelayConfig.wall_offset` (wall clock minus that clock) for event timestamps.

How it works, in one page (README has the long form):
- Handshake: a Hello without a valid cookie gets a stateless Retry carrying an HMAC of the
  sender's address and a coarse time; only a Hello with a valid cookie creates a session. Before
  that, the relay never answers with more than 3x the bytes it received.
- Requests (join, post, nick...) are numbered per session (`cseq`) and handled strictly in that
  order, exactly once; a repeated request gets its stored Result again. Posts also carry a message
  id (`mid`) so a post resent on a new session after a reconnect is not duplicated either.
- Every room event gets the room's next sequence number. Every string that can reach an event is
  bounded, so any one event fits a datagram (and `Stream.append` refuses one that would not).
  Events are kept encoded; new ones are packed into Batch frames encoded once, and every member
  gets the same batch bytes behind its own `Sid(session token)`: only that session knows it, so no
  one else (another member included) can forge the relay's datagrams to it.
- Members ack (cumulative + selective ranges) and NACK holes; the relay also probes a member whose
  ack lags after an RTO (RFC 6298 estimate per session, exponential backoff; due probes come off a
  heap, so a tick costs what is due). Events live in a ring per room; a joiner is backfilled from
  it; a member that fell further behind than the ring gets `Gone` and skips ahead. All repair to a
  session (NACK answers, probes, backfill, repeated and stale answers, names chunks) is bounded by
  its `RepairBudget`: `repair_window` bytes per round trip.
- Nicks are unique per relay (`names.nick_key`), so a direct message has one recipient. Its Result
  waits until the recipient acks it; if the recipient drops, its undelivered direct messages are
  kept (bounded, `inbox_keep`) for whoever presents its old session token in `Hello.resume`, and
  the sender is told it failed if they are thrown away.
- Sessions that send nothing (clients ping when quiet) for `timing.timeout` are timed out and the
  room is told.
"""

from __future__ import annotations

import os
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from . import frames as F
from .cookies import CookieJar, SourceLimiter, amplification_ok, hello_padded
from .names import (
    MAX_AWAY_BYTES,
    MAX_REASON_BYTES,
    MAX_TEXT_BYTES,
    MAX_TOPIC_BYTES,
    NameError_,
    canonical_room,
    check_nick,
    check_text,
    clip_utf8,
    nick_key,
)
from .reliability import (
    Deadlines,
    DedupeWindow,
    RepairBudget,
    RttEstimator,
    Timing,
    TokenBucket,
    iter_ranges,
)
from .roomlog import MemoryLog, RoomLog, StoreError

Addr = tuple


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


# ----------------------------------------------------------------------------- state


class Member:
    """One session's view of one stream (room or inbox)."""

    __slots__ = (
        "acked",
        "attempts",
        "base",
        "join_seq",
        "last_retx",
        "probe_at",
        "sacked",
        "session",
        "snapshot",
        "stream",
    )

    def __init__(self, session: Session, stream: Stream, base: int, join_seq: int) -> None:
        self.session = session
        self.stream = stream
        self.acked = base - 1
        self.sacked: set[int] = set()
        self.probe_at = 0.0
        self.attempts = 0
        self.last_retx = 0
        self.base = base
        self.join_seq = join_seq
        self.snapshot: list[F.MemberInfo] = []


#: What one kept event costs besides its encoded bytes (measured with tracemalloc by
#: benchmarks/bench_relay_costs.py): the bytes object's header, its deque slot, and its timestamp
#: (a float and its slot). Room memory is counted as encoded size + this.
EVENT_OVERHEAD = 96
#: The head of every datagram to a session: the array header and the session's Sid frame.
DGRAM_HEAD = 1 + 11


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
        "last_active",
        "max_event",
        "members",
        "mids",
        "name",
        "overhead",
        "ring",
        "seq",
        "times",
        "topic",
    )

    def __init__(self, name: str, cap: int, cap_bytes: int = 1 << 20) -> None:
        self.name = name
        self.seq = 0  # last assigned
        self.ring: deque[bytes] = deque()
        self.times: deque[float] = deque()
        self.first = 1  # seq of ring[0]
        self.flushed = 0  # last seq broadcast
        self.members: dict[Addr, Member] = {}
        self.fanout: list[tuple[int, bytes, Addr]] | None = None  # (base, head, addr) per member
        self.topic = ""
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
        session's Sid, as (first seq, event count, bytes); lazily, so a caller with a budget stops
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


class Session:
    __slots__ = (
        "addr",
        "away",
        "bucket",
        "deferred",
        "dm_waiters",
        "head",
        "inbox",
        "inbox_member",
        "last_heard",
        "next_cseq",
        "nick",
        "nonce",
        "out",
        "pages",
        "pending",
        "repair",
        "results",
        "rooms",
        "rtt",
        "sid",
        "sid_item",
        "token",
    )

    def __init__(self, addr: Addr, nick: str, nonce: int, now: float, cfg: RelayConfig) -> None:
        self.addr = addr
        self.nick = nick
        self.away = ""
        self.nonce = nonce
        # 62 random bits, with the top bit of 63 set so that it always encodes in 9 bytes
        self.token = (int.from_bytes(os.urandom(8), "big") >> 2) | (1 << 62)
        # Every datagram to the session starts with Sid(its token): only the session knows it.
        self.sid = F.Sid(self.token)
        self.sid_item = F.encode_item(self.sid)
        self.head = F.datagram([self.sid_item, b""])  # + one encoded frame = a datagram
        self.rooms: dict[str, Stream] = {}
        self.inbox = Stream("", cfg.inbox_ring, cfg.ring_bytes // 4)
        self.inbox_member = Member(self, self.inbox, 1, 0)
        self.next_cseq = 1
        self.pending: dict[int, F.Req] = {}
        self.results: OrderedDict[int, F.Frame] = OrderedDict()
        self.last_heard = now
        self.rtt = RttEstimator(cfg.timing)
        self.bucket = TokenBucket(cfg.request_rate, cfg.request_burst, now)
        self.repair = RepairBudget(cfg.repair_window, cfg.timing.rto_min, now)
        self.pages = TokenBucket(cfg.page_rate, cfg.page_burst, now)
        self.out: list[F.Frame] = []
        # direct messages: the cseqs of ours still waiting for their recipient, and theirs in our
        # inbox that a sender waits on (inbox seq -> (sender, cseq, result))
        self.deferred: set[int] = set()
        self.dm_waiters: dict[int, tuple[Session, int, F.Result]] = {}


MAX_PENDING_REQUESTS = 1024
MAX_RESULTS_KEPT = 1024


#: the most events one history page (OP_HISTORY) returns
MAX_PAGE = 100
#: the most events one probe (or a join's backfill) looks at: the rest comes with the next probe
REPAIR_SPAN = 4096
#: what a post refused because the room log could not store it says, before the log's own words
NOT_STORED = "the relay could not store it"


class Relay:
    """The relay. `log` is the room log (protocol/roomlog.py) rooms take their numbers from and
    keep their events in: a MemoryLog (kept `config.ring` events per room) unless one is given.

    Nothing is acknowledged before it is stored: a post's Result waits for the log's next commit,
    made once per flush (`datagrams_to_send`) before anything for that group leaves, and events
    are broadcast only once committed. If the commit fails, the group's posts (and topics) are
    refused with the log's one-line reason, their numbers are handed out again, and presence
    events (leave, nick, away) of the group are appended again for the next commit."""

    def __init__(self, config: RelayConfig | None = None, log: RoomLog | None = None) -> None:
        self.config = cfg = config or RelayConfig()
        self.timing = cfg.timing
        self.cookies = CookieJar(cfg.secret)
        self.log = log if log is not None else MemoryLog(keep_days=None, keep_events=cfg.ring)
        # The epoch names the history (the log's): a relay restarted on the same data keeps it, so
        # its members resume where they were. (Sessions are protected by their own tokens.)
        self.epoch = cfg.epoch if cfg.epoch is not None else self.log.epoch
        # posts (and topics) waiting for the next commit: (session, cseq, Result, room)
        self._unstored: list[tuple[Session, int, F.Result, str]] = []
        self._next_expire = 0.0
        self.sessions: dict[Addr, Session] = {}
        self._tokens: dict[int, Session] = {}
        self._nicks: dict[str, Session] = {}  # nick_key -> session: nicks are unique per relay
        self._parked: dict[int, Parked] = {}  # old session token -> its undelivered DMs
        self._parked_bytes = 0
        self._probes = Deadlines()  # members whose ack lags, and rooms with fresh data, by when
        self.rooms: dict[str, Stream] = {}
        self._out: list[tuple[bytes, Addr]] = []
        self._events: deque = deque()
        self._dirty: set[str] = set()  # rooms with unflushed events
        self._dirty_sessions: set[Session] = set()  # sessions with frames queued
        self._hello_limit = SourceLimiter(cfg.hello_rate, burst=cfg.hello_burst)
        self._timer_at: float | None = None
        self._last_sweep = 0.0
        self._closing = False
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "datagrams_in",
                "datagrams_out",
                "bytes_in",
                "bytes_out",
                "malformed",
                "unknown_source",
                "rate_limited",
                "retransmitted",
                "sessions_opened",
                "sessions_timed_out",
                "posts",
                "unauthenticated",
                "unpadded",
                "repair_limited",
                "oversize",
                "repeated",
                "commits",
                "commit_failures",
                "refused_unstored",
                "pages",
            ),
            0,
        )

    # ------------------------------------------------------------------ sans-IO surface

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        st = self.stats
        st["datagrams_in"] += 1
        st["bytes_in"] += len(data)
        try:
            frames = F.decode(data)
        except F.FrameError:
            st["malformed"] += 1
            return
        session = self.sessions.get(addr)
        if session is None:
            self._from_unknown(frames, addr, len(data), now)
            return
        first = frames[0]
        if type(first) is F.Sid and first.token == session.token:
            frames = frames[1:]
        elif type(first) is F.Hello:
            self._hello_from_session(session, first, len(data), now)
            return
        else:
            # Not from the session's owner (or a stale client): off-path forgery is dropped here.
            st["unauthenticated"] += 1
            return
        session.last_heard = now
        acks: set | None = None
        for frame in frames:
            tp = type(frame)
            if tp is F.Ack or tp is F.Nack:
                # One of each per stream per datagram is all a client sends: more is a way to
                # make us work (84 NACKs in a datagram) for nothing.
                key = (tp, frame.room)
                if acks is None:
                    acks = set()
                elif key in acks:
                    st["repeated"] += 1
                    continue
                acks.add(key)
            try:
                self._handle(session, frame, now)
            except (NameError_, ValueError, TypeError, KeyError, IndexError, OverflowError):
                # Frames decode to valid types, but a hostile value could still surprise a
                # handler: count it and keep serving.
                st["malformed"] += 1
            if addr not in self.sessions:  # it said Bye
                return

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        if self._dirty or self._unstored:
            self._commit()
        if self._dirty:
            dirty, self._dirty = self._dirty, set()
            for name in dirty:
                room = self.rooms.get(name)
                if room is not None:
                    self._flush_room(room, now)
                    if room.flushed < room.seq:  # a failed commit left events to store first
                        self._dirty.add(name)
            if self._dirty:
                self._arm(now + self.timing.rto_min)  # try the commit again
        if self._dirty_sessions:
            for session in self._dirty_sessions:
                if session.out:
                    self._flush_session(session)
            self._dirty_sessions.clear()
        out, self._out = self._out, []
        st = self.stats
        st["datagrams_out"] += len(out)
        return out

    def get_timer(self) -> float | None:
        at = self._probes.next_at()
        if at is None or (self._timer_at is not None and self._timer_at < at):
            return self._timer_at
        return at

    def handle_timer(self, now: float) -> None:
        t = self.timing
        sweep = min(t.keepalive, t.timeout) / 4
        if self._timer_at is not None and now >= self._timer_at:
            self._timer_at = None
        # presence: time out silent sessions (one walk over the sessions per sweep, not per tick)
        if now >= self._last_sweep + sweep:
            self._last_sweep = now
            dead = [s for s in self.sessions.values() if now >= s.last_heard + t.timeout]
            for s in dead:
                self.stats["sessions_timed_out"] += 1
                self._drop_session(s, now, "timeout")
            self._hello_limit.prune(now)
            ttl = self.config.empty_room_ttl
            for name in [n for n, r in self.rooms.items() if not r.members and now >= r.last_active + ttl]:
                del self.rooms[name]
            while self._parked:
                token, parked = next(iter(self._parked.items()))
                if now < parked.until:
                    break
                self._forget(token)
        # repair: only the members (and rooms with fresh data) whose probe is due
        due = []
        for item in self._probes.pop_due(now):
            if type(item) is not Stream:
                due.append(item)
            elif self.rooms.get(item.name) is item:  # a room's fresh data: who has not acked it?
                times, first = item.times, item.first
                for m in item.members.values():
                    if m.acked < item.flushed:
                        i = m.acked + 1 - first
                        sent = times[i] if 0 <= i < len(times) else now
                        at = max(m.probe_at, sent + m.session.rtt.rto)
                        if now >= at:
                            due.append(m)
                        else:
                            self._set_probe(m, at)
        for m in due:
            stream = m.stream
            session = m.session
            if self._tokens.get(session.token) is not session:
                continue
            if stream.name and stream.members.get(session.addr) is not m:
                continue
            if m.acked < stream.flushed:
                if now >= m.probe_at:
                    self._probe(stream, m, now)
                else:
                    self._probes.schedule(m, m.probe_at)
        if now >= self._next_expire:
            self._expire(now)
        if self.sessions or self._parked:
            self._arm(min(self._last_sweep + sweep, self._next_expire))

    def next_event(self):
        return self._events.popleft() if self._events else None

    def shutdown(self, now: float) -> None:
        """Say goodbye to everyone; datagrams_to_send then returns the farewells."""
        self._commit()  # what is pending is stored (and answered) before the goodbyes
        self._closing = True
        for session in list(self.sessions.values()):
            self._send_now(session, [F.Bye("relay shutting down")])
        self.sessions.clear()
        self._tokens.clear()
        self._nicks.clear()
        self._parked.clear()
        self._parked_bytes = 0
        self.rooms.clear()

    # ------------------------------------------------------------------ the room log

    def _commit(self) -> str | None:
        """Make the pending group durable; then (only then) the posts waiting on it are answered.
        Returns None, or the log's one-line reason when the commit failed (the group is taken
        back: its posts are refused, its presence events appended again)."""
        log = self.log
        try:
            log.commit()
        except StoreError as exc:
            reason = str(exc)
            log.rollback()
            self.stats["commit_failures"] += 1
            self._rewind(reason)
            return reason
        self.stats["commits"] += 1
        unstored, self._unstored = self._unstored, []
        for session, cseq, res, _room in unstored:
            self._resolve(session, cseq, res)
        return None

    def _rewind(self, reason: str) -> None:
        log = self.log
        unstored, self._unstored = self._unstored, []
        for session, cseq, res, room in unstored:
            if res.seq and res.seq <= log.last_seq(room):  # a repeat of a post stored before
                self._resolve(session, cseq, res)
            else:
                self.stats["refused_unstored"] += 1
                self._resolve(session, cseq, _result(cseq, F.RES_REFUSED, 0, f"{NOT_STORED}: {reason}", room))
        for name in list(self._dirty):
            room = self.rooms.get(name)
            if room is None:
                continue
            try:
                last, topic = log.last_seq(name), log.topic(name)
            except StoreError:  # (a closed log: nothing more will be stored)
                last, topic = room.flushed, room.topic
            taken = room.truncate(last)
            room.topic = topic
            for data in taken:
                ev = F.decode_ev(data)
                if ev.kind in _PRESENCE:  # it happened all the same: numbered again, kept for next time
                    self._room_event(room, ev, room.last_active)

    def _older(self, stream: Stream):
        """Events the stream's ring no longer has, from the room log, as (seq, encoded): what
        `Stream.batches` backfills, repairs and pages from. A read that fails ends it."""
        if not stream.name:
            return None
        log, name = self.log, stream.name

        def read(lo: int, hi: int):
            while lo <= hi:
                try:
                    rows = log.read(name, lo, hi, limit=64)
                except StoreError:
                    return
                if not rows:
                    return
                for seq, ev in rows:
                    yield seq, F.encode_item(ev)
                lo = rows[-1][0] + 1

        return read

    def _first(self, stream: Stream) -> int:
        """The first sequence still kept: a room's is the log's (older ones are Gone)."""
        if not stream.name:
            return stream.first
        try:
            return min(stream.first, self.log.first_seq(stream.name))
        except StoreError:
            return stream.first

    def _expire(self, now: float) -> None:
        """Retention, a little at a time (from the timer): members behind the new start get Gone."""
        self._next_expire = now + self.config.expire_every
        try:
            cut = self.log.expire(now + self.config.wall_offset, self.config.expire_budget)
        except StoreError:
            return
        for name, first in cut.items():
            room = self.rooms.get(name)
            if room is not None:
                room.drop_before(first)

    # ------------------------------------------------------------------ internals

    def _arm(self, at: float) -> None:
        if self._timer_at is None or at < self._timer_at:
            self._timer_at = at

    def _queue(self, session: Session, frame: F.Frame) -> None:
        session.out.append(frame)
        self._dirty_sessions.add(session)

    def _emit(self, data: bytes, addr: Addr) -> None:
        if len(data) > F.MAX_DATAGRAM:  # every string is bounded, so this is a bug: never send it
            self.stats["oversize"] += 1
            return
        self._out.append((data, addr))
        self.stats["bytes_out"] += len(data)

    def _send_now(self, session: Session, frames: list[F.Frame]) -> None:
        for dgram in F.pack(frames, prefix=session.sid):
            self._emit(dgram, session.addr)

    def _set_probe(self, m: Member, at: float) -> None:
        m.probe_at = at
        self._probes.schedule(m, at)

    @staticmethod
    def _rtt_of(session: Session) -> float:
        rtt = session.rtt
        return rtt.srtt if rtt.srtt is not None else rtt.rto

    def _repair_ok(self, session: Session, nbytes: int, now: float) -> bool:
        """May this session make us send `nbytes` more of repair now (RepairBudget per RTT)?"""
        if session.repair.take(nbytes, now, self._rtt_of(session)):
            return True
        self.stats["repair_limited"] += 1
        return False

    def _answer(self, session: Session, frame: F.Frame, now: float) -> F.Frame:
        """Queue an answer that costs more than the request did (a Joined, a repeated Result):
        under the session's repair budget. If it says no, the client asks again (and gets the
        stored answer, under the same budget). Returns the frame, to be stored."""
        if self._repair_ok(session, F.size_of(frame), now):
            self._queue(session, frame)
        return frame

    def _flush_session(self, session: Session) -> None:
        frames, session.out = session.out, []
        self._send_now(session, frames)

    def _from_unknown(self, frames: list[F.Frame], addr: Addr, size: int, now: float) -> None:
        hello = frames[0]
        if not isinstance(hello, F.Hello):
            self.stats["unknown_source"] += 1
            # A client of a session we do not have (we restarted, or timed it out): tell it, with
            # the token it sent, so that only the real owner of that token believes us.
            if (
                type(hello) is F.Sid
                and not self._closing
                and self._hello_ok(addr, now)
                and not any(isinstance(f, (F.Bye, F.Reset)) for f in frames)
            ):
                self._reply_limited(addr, size, [F.Reset(hello.token)])
            return
        if self._closing:
            return
        if not hello_padded(size):  # an unpadded Hello could buy a Retry bigger than itself
            self.stats["unpadded"] += 1
            return
        if not self._hello_ok(addr, now):
            self.stats["rate_limited"] += 1
            return
        if not self.cookies.check(hello.cookie, addr, now):
            self._reply_limited(addr, size, [F.Retry(self.cookies.make(addr, now), F.VERSION)])
            return
        # the address is validated from here on
        if hello.version not in F.SUPPORTED_VERSIONS:
            self._reply_limited(
                addr,
                size,
                [
                    F.Refuse(
                        f"unsupported protocol version {hello.version}",
                        list(F.SUPPORTED_VERSIONS),
                        hello.nonce,
                    )
                ],
            )
            return
        try:
            nick = check_nick(hello.nick)
        except NameError_ as exc:
            self._reply_limited(addr, size, [F.Refuse(f"bad nick: {exc}", [], hello.nonce)])
            return
        if len(self.sessions) >= self.config.max_sessions:
            self._reply_limited(addr, size, [F.Refuse("relay is full, try later", [], hello.nonce)])
            return
        if hello.resume:
            old = self._tokens.get(hello.resume)
            if old is not None and old.addr != addr:  # the same client, from a new address
                self._drop_session(old, now, "reconnected")
        holder = self._nicks.get(nick_key(nick))
        if holder is not None:
            self._reply_limited(
                addr, size, [F.Refuse(f"nick {nick} is in use on this relay", [], hello.nonce)]
            )
            return
        session = Session(addr, nick, hello.nonce, now, self.config)
        if 1 <= hello.first_cseq < 1 << 62:
            session.next_cseq = hello.first_cseq
        self.sessions[addr] = session
        self._tokens[session.token] = session
        self._nicks[nick_key(nick)] = session
        self.stats["sessions_opened"] += 1
        self._events.append(SessionOpened(nick, addr))
        self._queue(session, self._welcome(session))
        parked = self._parked.pop(hello.resume, None) if hello.resume else None
        if parked is not None:
            self._parked_bytes -= parked.size
            self._unpark(session, parked, now)
        self._arm(now + min(self.timing.keepalive, self.timing.timeout) / 4)

    def _welcome(self, session: Session) -> F.Welcome:
        t = self.timing
        return F.Welcome(
            F.VERSION,
            session.nick,
            self.epoch,
            int(t.keepalive * 1000),
            int(t.timeout * 1000),
            session.token,
            session.nonce,
        )

    def _hello_ok(self, addr: Addr, now: float) -> bool:
        return self._hello_limit.allow(addr, now)

    def _reply_limited(self, addr: Addr, received: int, frames: list[F.Frame]) -> None:
        data = F.encode(frames)
        if amplification_ok(len(data), received):  # before validation: at most 3x what came in
            self._emit(data, addr)

    # ------------------------------------------------------------------ frames from sessions

    def _handle(self, session: Session, frame: F.Frame, now: float) -> None:
        tp = type(frame)
        if tp is F.Ack:
            self._on_ack(session, frame, now)
        elif tp is F.Req:
            self._on_req(session, frame, now)
        elif tp is F.Nack:
            self._on_nack(session, frame, now)
        elif tp is F.Ping:
            self._queue(session, F.Pong(frame.token))
        elif tp is F.Bye:
            self._drop_session(session, now, clip_utf8(frame.reason, MAX_REASON_BYTES) or "left")
        # Pong, Result... from a client are ignored

    def _hello_from_session(self, session: Session, hello: F.Hello, size: int, now: float) -> None:
        """A Hello from an address that has a session: a retransmit (our Welcome was lost), or the
        client starting over. Only a valid cookie may end the old session: a forged Hello, which
        cannot carry one, earns a Retry and changes nothing."""
        if hello.nonce == session.nonce:
            self._queue(session, self._welcome(session))
        elif not hello_padded(size):
            self.stats["unpadded"] += 1
        elif not self._hello_ok(session.addr, now):
            self.stats["rate_limited"] += 1
        elif self.cookies.check(hello.cookie, session.addr, now):
            self._drop_session(session, now, "reconnected")
            self._from_unknown([hello], session.addr, size, now)
        else:
            self._reply_limited(
                session.addr, size, [F.Retry(self.cookies.make(session.addr, now), F.VERSION)]
            )

    def _stream_of(self, session: Session, name: str) -> tuple[Stream | None, Member | None]:
        if name == "":
            return session.inbox, session.inbox_member
        room = session.rooms.get(name)
        if room is None:
            return None, None
        return room, room.members.get(session.addr)

    def _on_ack(self, session: Session, ack: F.Ack, now: float) -> None:
        stream, m = self._stream_of(session, ack.room)
        if m is None:
            return
        cum = min(ack.cum, stream.flushed)
        if cum > m.acked:
            if cum > m.last_retx:
                i = cum - stream.first
                if 0 <= i < len(stream.times):
                    session.rtt.sample(now - stream.times[i])
            m.acked = cum
            m.attempts = 0
            if m.snapshot and cum >= m.join_seq:
                # It has its member list (a client acks a room only once it has all of it): a
                # room of n members must not keep n copies of it.
                m.snapshot = []
            if cum < stream.flushed:
                self._set_probe(m, now + session.rtt.rto)
            else:
                m.probe_at = now + session.rtt.rto
            if m.sacked:
                m.sacked = {s for s in m.sacked if s > cum}
            if stream is session.inbox and session.dm_waiters:
                self._delivered(session, cum)
        if ack.ranges:
            if len(m.sacked) > 8192:  # a member that never advances: forget, probes will resend
                m.sacked.clear()
            for s in iter_ranges(ack.ranges, 1024):
                if m.acked < s <= stream.flushed:
                    m.sacked.add(s)

    def _on_nack(self, session: Session, nack: F.Nack, now: float) -> None:
        stream, m = self._stream_of(session, nack.room)
        if m is None:
            return
        if session.repair.available(now, self._rtt_of(session)) <= 0:
            self.stats["repair_limited"] += 1  # out of budget: not even worth reading
            return
        seqs = [s for s in iter_ranges(nack.ranges, 512) if m.acked < s <= stream.flushed]
        if seqs:
            self._resend(stream, m, seqs, now)

    def _probe(self, stream: Stream, m: Member, now: float) -> None:
        """The member's ack lags: resend from its ack point (skipping what it SACKed)."""
        m.attempts += 1
        self._set_probe(m, now + m.session.rtt.backoff(m.attempts))
        start = m.acked + 1
        first = self._first(stream)
        if start < first:  # said again on every probe until the member acks past it
            self._queue(m.session, F.Gone(stream.name, first))
            start = first
        end = min(stream.flushed, start + REPAIR_SPAN - 1)  # (the log may hold far more than a ring)
        seqs = [s for s in range(start, end + 1) if s not in m.sacked]
        if seqs:
            self._resend(stream, m, seqs, now)

    def _resend(self, stream: Stream, m: Member, seqs: list[int], now: float) -> None:
        """Resend `seqs` (sorted) to one member, as far as its session's repair budget allows (the
        rest waits for the next probe or NACK)."""
        session = m.session
        first = self._first(stream)
        if seqs[0] < first:
            self._queue(session, F.Gone(stream.name, first))
            seqs = [s for s in seqs if s >= first]
            if not seqs:
                return
        older = self._older(stream)
        addr = session.addr
        run_start = prev = seqs[0]
        runs = []
        for s in seqs[1:]:
            if s != prev + 1:
                runs.append((run_start, prev))
                run_start = s
            prev = s
        runs.append((run_start, prev))
        st = self.stats
        for lo, hi in runs:
            for first, count, item in stream.batches(lo, hi, older):
                data = session.head + item
                if not self._repair_ok(session, len(data), now):
                    return
                self._emit(data, addr)
                st["retransmitted"] += count
                last = first + count - 1
                if last > m.last_retx:
                    m.last_retx = last

    def _flush_room(self, room: Stream, now: float) -> None:
        """Broadcast events not yet sent: each batch is encoded once and every member gets the same
        bytes behind its own Sid. Only what the log has stored leaves."""
        lo, hi = room.flushed + 1, room.seq
        if lo > hi:
            return
        stored = self.log.last_seq(room.name)
        if stored < hi:
            hi = stored
            if lo > hi:
                return
        room.flushed = hi
        members = list(room.members.values())
        if not members:
            return
        st = self.stats
        out = self._out
        fan = room.fanout
        if fan is None:  # rebuilt when members come and go
            fan = room.fanout = [(m.base, m.session.head, m.session.addr) for m in members]
        for first, _count, item in room.batches(lo, hi, self._older(room) if lo < room.first else None):
            n = len(out)
            out.extend([(head + item, addr) for base, head, addr in fan if base <= first])
            st["bytes_out"] += (len(out) - n) * (DGRAM_HEAD + len(item))
        # One timer for the room, not one per member: when it fires, the members that have not
        # acked by then get timers of their own (most will have acked: a tick costs what is due),
        # due an RTO after the first event they lack was sent (`Stream.times`).
        self._probes.schedule(room, now + self.timing.rto_min)

    def _flush_inbox(self, session: Session, now: float) -> None:
        inbox = session.inbox
        lo, hi = inbox.flushed + 1, inbox.seq
        if lo > hi:
            return
        inbox.flushed = hi
        for _first, _count, item in inbox.batches(lo, hi):
            self._emit(session.head + item, session.addr)
        self._set_probe(session.inbox_member, now + session.rtt.rto)

    # ------------------------------------------------------------------ requests

    def _on_req(self, session: Session, req: F.Req, now: float) -> None:
        if req.cseq < session.next_cseq:
            if req.cseq in session.deferred:
                return  # a direct message still on its way: the answer comes when it arrives
            res = session.results.get(req.cseq)
            if type(res) is F.Req:  # a history page: served again (rate limited, under the budget)
                res = self._page(session, res, now)
                if type(res) is F.Req:
                    return
                self._store_result(session, req.cseq, res)
            if res is None:
                res = self._stale(session, req)
            self._answer(session, res, now)
            return
        if req.cseq > session.next_cseq:
            if len(session.pending) < MAX_PENDING_REQUESTS:
                session.pending[req.cseq] = req
            return
        if not session.bucket.take(now):
            self.stats["rate_limited"] += 1
            return  # the client will retransmit: natural backpressure
        self._do(session, req, now)
        while session.next_cseq in session.pending:
            nxt = session.pending.pop(session.next_cseq)
            if not session.bucket.take(now):
                session.pending[nxt.cseq] = nxt
                self.stats["rate_limited"] += 1
                break
            self._do(session, nxt, now)

    def _stale(self, session: Session, req: F.Req) -> F.Frame:
        """The answer to a request too old to remember. A join (or names) for a room the session is
        in is answered afresh, so a join completes whatever happened to its first answer."""
        if req.op in (F.OP_JOIN, F.OP_NAMES):
            try:
                name = canonical_room(req.room)
            except NameError_:
                name = ""
            room = session.rooms.get(name)
            if room is not None:
                m = room.members[session.addr]
                offset = req.arg if req.op == F.OP_NAMES else 0
                return self._joined(req.cseq, room, session, m, offset)
        return F.Result(req.cseq, F.RES_STALE)

    def _do(self, session: Session, req: F.Req, now: float) -> None:
        session.next_cseq = req.cseq + 1
        try:
            res = self._execute(session, req, now)
        except (NameError_, EventTooBig, StoreError) as exc:  # (the last two: bugs, refused cleanly)
            res = _result(req.cseq, F.RES_REFUSED, 0, str(exc), req.room)
        if res is None:  # deferred (a direct message waits for its recipient)
            session.deferred.add(req.cseq)
            return
        self._store_result(session, req.cseq, res)
        if type(res) is not F.Joined and type(res) is not F.Req:  # (queued, or sent, already)
            self._queue(session, res)

    def _store_result(self, session: Session, cseq: int, res: F.Frame) -> None:
        session.results[cseq] = res
        if len(session.results) > MAX_RESULTS_KEPT:
            session.results.popitem(last=False)

    def _ts(self, now: float) -> float:
        return round(now + self.config.wall_offset, 3)

    def _room_event(self, room: Stream, ev: F.Ev, now: float) -> int:
        """The room's next event: numbered by the log, pending until the next commit."""
        data = room.encode(ev)  # (refused before the log numbers it)
        seq = self.log.append(room.name, ev)
        room.push(data, now)  # (the ring is the recent cache in front of the log: same numbers)
        self._dirty.add(room.name)
        return seq

    def _execute(self, session: Session, req: F.Req, now: float) -> F.Frame:
        op = req.op
        cseq = req.cseq
        if op == F.OP_POST or op == F.OP_ACTION:
            room = session.rooms.get(req.room)
            if room is None:
                return _result(cseq, F.RES_REFUSED, 0, f"you are not in #{req.room}", req.room)
            seen = self._seq_of_mid(room, req.mid)
            if seen is not None:  # (answered after the next commit all the same: it may be pending)
                return self._after_commit(session, _result(cseq, F.RES_OK, seen, "", req.room))
            check_text(req.text, MAX_TEXT_BYTES)
            kind = F.EV_MSG if op == F.OP_POST else F.EV_ACTION
            seq = self._room_event(room, F.Ev(kind, session.nick, req.text, self._ts(now), req.mid), now)
            self.stats["posts"] += 1
            return self._after_commit(session, _result(cseq, F.RES_OK, seq, "", req.room))
        if op == F.OP_JOIN:
            return self._join(session, req, now)
        if op == F.OP_NAMES:
            return self._names(session, req, now)
        if op == F.OP_PART:
            room = session.rooms.get(req.room)
            if room is None:
                return _result(cseq, F.RES_OK, 0, "", req.room)
            self._leave(session, room, now, F.EV_LEAVE, clip_utf8(req.text, MAX_REASON_BYTES))
            return _result(cseq, F.RES_OK, room.seq, "", req.room)
        if op == F.OP_NICK:
            new = check_nick(req.text)
            if new == session.nick:
                return _result(cseq, F.RES_OK, 0, "", "")
            key = nick_key(new)
            holder = self._nicks.get(key)
            if holder is not None and holder is not session:
                return _result(cseq, F.RES_REFUSED, 0, f"nick {new} is in use on this relay", "")
            old = session.nick
            if self._nicks.get(nick_key(old)) is session:
                del self._nicks[nick_key(old)]
            self._nicks[key] = session
            session.nick = new
            for room in session.rooms.values():
                self._room_event(room, F.Ev(F.EV_NICK, old, new, self._ts(now)), now)
            return _result(cseq, F.RES_OK, 0, "", "")
        if op == F.OP_TOPIC:
            room = session.rooms.get(req.room)
            if room is None:
                return _result(cseq, F.RES_REFUSED, 0, f"you are not in #{req.room}", req.room)
            check_text(req.text, MAX_TOPIC_BYTES, "topic")
            room.topic = req.text
            self.log.set_topic(room.name, req.text)
            seq = self._room_event(room, F.Ev(F.EV_TOPIC, session.nick, req.text, self._ts(now)), now)
            return self._after_commit(session, _result(cseq, F.RES_OK, seq, "", req.room))
        if op == F.OP_AWAY:
            check_text(req.text, MAX_AWAY_BYTES, "away message")
            if req.text == session.away:  # nothing changes: nothing to tell the rooms
                return _result(cseq, F.RES_OK, 0, "", "")
            session.away = req.text
            for room in session.rooms.values():
                self._room_event(room, F.Ev(F.EV_AWAY, session.nick, req.text, self._ts(now)), now)
            return _result(cseq, F.RES_OK, 0, "", "")
        if op == F.OP_DIRECT:
            return self._direct(session, req, now)
        if op == F.OP_HISTORY:
            return self._page(session, req, now)
        return _result(cseq, F.RES_REFUSED, 0, f"unknown request {op}", req.room)

    def _after_commit(self, session: Session, res: F.Result) -> None:
        """Answer `res` (a post's, a topic's) once the group it is in is stored (None: deferred)."""
        self._unstored.append((session, res.cseq, res, res.room))
        return None

    def _seq_of_mid(self, room: Stream, mid: int) -> int | None:
        if not mid:
            return None
        try:
            return self.log.seq_of_mid(room.name, mid)
        except StoreError:
            return None

    def _new_room(self, name: str) -> Stream:
        room = Stream(name, self.config.ring, self.config.ring_bytes)
        log = self.log
        try:
            last, topic = log.last_seq(name), log.topic(name)
        except StoreError:
            last, topic = 0, ""
        if last:
            room.start_at(last, topic)
        return room

    def _page(self, session: Session, req: F.Req, now: float) -> F.Frame:
        """Paging back (OP_HISTORY): the room's last `n` (at most MAX_PAGE) stored events before
        sequence `arg` (0: the newest), in History frames of one datagram each. Rooms are public,
        so no membership is needed. The answer costs more than the request: it is rate limited
        per session and sent under its repair budget, newest events first, so a budget that
        cannot pay for the whole page answers a shorter one (the client pages on from its `lo`).
        When nothing can be sent now, the request itself is stored as the answer: its
        retransmission is served again."""
        cseq = req.cseq
        name = canonical_room(req.room)
        if not session.pages.take(now):
            self.stats["rate_limited"] += 1
            return req
        log = self.log
        limit = MAX_PAGE if req.n <= 0 else min(req.n, MAX_PAGE)
        try:
            last = log.last_seq(name)
            before = last + 1 if req.arg <= 0 else min(req.arg, last + 1)
            rows = log.before(name, before, limit)
            first = log.first_seq(name)
        except StoreError as exc:
            return _result(cseq, F.RES_REFUSED, 0, f"the relay could not read the history: {exc}", name)
        # newest first: datagrams of consecutive events, each a History frame
        room_left = F.MAX_DATAGRAM - DGRAM_HEAD - F.size_of(F.History(cseq, name, before, before, before))
        chunks: list[list[tuple[int, F.Ev]]] = []
        cur: list[tuple[int, F.Ev]] = []
        size = 0
        for seq, ev in reversed(rows):
            n = F.size_of(ev)
            if n + 3 > room_left:  # (a maximal event under a long nick: it cannot travel alone)
                break
            if cur and size + n + 3 > room_left:
                chunks.append(cur)
                cur, size = [], 0
            cur.append((seq, ev))
            size += n
        if cur:
            chunks.append(cur)
        avail = session.repair.available(now, self._rtt_of(session))
        if avail <= 0:
            self.stats["repair_limited"] += 1
            return req
        taken, cost = 0, 0
        for _chunk in chunks:
            nbytes = F.MAX_DATAGRAM  # at most
            if taken and cost + nbytes > avail:
                break
            taken += 1
            cost += nbytes
        chunks = chunks[:taken]
        lo = chunks[-1][-1][0] if chunks else before
        hi = chunks[0][0][0] if chunks else before - 1
        complete = lo <= first
        self.stats["pages"] += 1
        for chunk in reversed(chunks):
            chunk.reverse()
            frame = F.History(cseq, name, lo, hi, chunk[0][0], [ev for _s, ev in chunk], complete)
            data = session.head + F.encode_item(frame)
            session.repair.take(len(data), now, self._rtt_of(session))
            self._emit(data, session.addr)
        if not chunks:
            self._queue(session, F.History(cseq, name, lo, hi, lo, [], complete))
        return req

    def _join(self, session: Session, req: F.Req, now: float) -> F.Frame:
        cseq = req.cseq
        name = canonical_room(req.room)
        room = session.rooms.get(name)
        if room is not None:  # already in: answer with a fresh snapshot
            m = room.members[session.addr]
            return self._answer(session, self._joined(cseq, room, session, m, 0), now)
        if len(session.rooms) >= self.config.max_rooms_per_session:
            return _result(cseq, F.RES_REFUSED, 0, f"you are in {len(session.rooms)} rooms already", name)
        # Members get everything up to now first (stored first), then the joiner is added with its
        # backfill; nothing is pending from here on, so a room made afresh continues the log.
        self._commit()
        room = self.rooms.get(name)
        if room is None:
            if len(self.rooms) >= self.config.max_rooms:
                # Empty rooms keep their history until room space is needed.
                empty = next((k for k, r in self.rooms.items() if not r.members), None)
                if empty is None:
                    return _result(cseq, F.RES_REFUSED, 0, "the relay has too many rooms", name)
                del self.rooms[empty]
            room = self.rooms[name] = self._new_room(name)
        if len(room.members) >= self.config.max_members_per_room:
            return _result(cseq, F.RES_REFUSED, 0, f"#{name} is full", name)
        # The join itself is stored before it is answered: its number is then final.
        self._flush_room(room, now)
        self._dirty.discard(name)
        join_seq = self._room_event(room, F.Ev(F.EV_JOIN, session.nick, "", self._ts(now)), now)
        failed = self._commit()
        if failed is not None:
            return _result(cseq, F.RES_REFUSED, 0, f"{NOT_STORED}: {failed}", name)
        first = self._first(room)
        base = max(first, join_seq - self.config.history)
        if req.arg > 0:  # a member coming back: resume where it left off, if the log has it
            base = max(first, min(req.arg, join_seq))
        m = Member(session, room, base, join_seq)
        m.snapshot = self._snapshot(room, session)
        room.members[session.addr] = m
        room.fanout = None
        session.rooms[name] = room
        # The answer first (it costs more than the request: under the repair budget), then the
        # backfill: history before our join goes to us alone (the join itself is broadcast), as
        # repair under the same budget; what does not fit now, probes send later.
        joined = self._answer(session, self._joined(cseq, room, session, m, 0), now)
        if base < join_seq:
            self._resend(room, m, list(range(base, min(join_seq, base + REPAIR_SPAN))), now)
        # Karn: acks of the backfill say nothing about the RTT (those events are old)
        m.last_retx = join_seq - 1
        self._set_probe(m, now + session.rtt.rto)
        return joined

    @staticmethod
    def _snapshot(room: Stream, session: Session) -> list[F.MemberInfo]:
        """The member list as a joiner gets it: the others sorted, then itself."""
        snap = sorted(
            (
                F.MemberInfo(o.session.nick, o.session.away)
                for o in room.members.values()
                if o.session is not session
            ),
            key=lambda i: i.nick.lower(),
        )
        snap.append(F.MemberInfo(session.nick, session.away))
        return snap

    def _joined(self, cseq: int, room: Stream, session: Session, m: Member, offset: int) -> F.Joined:
        if not m.snapshot:  # freed once the member acked its join: build a fresh one
            m.snapshot = self._snapshot(room, session)
        snap = m.snapshot
        offset = max(0, min(offset, len(snap)))
        # the frame without members, measured, plus each member's exact encoded size
        empty = F.Joined(cseq, room.name, session.nick, m.base, m.join_seq, room.topic, [], offset, len(snap))
        size = F.size_of(empty) + 3  # the members array header can grow to 3 bytes
        chunk: list[F.MemberInfo] = []
        for info in snap[offset:]:
            n = F.size_of(info)
            if chunk and size + n > F.MAX_DATAGRAM - DGRAM_HEAD - 3:
                break
            chunk.append(info)
            size += n
        return F.Joined(
            cseq, room.name, session.nick, m.base, m.join_seq, room.topic, chunk, offset, len(snap)
        )

    def _names(self, session: Session, req: F.Req, now: float) -> F.Frame:
        room = session.rooms.get(req.room)
        if room is None:
            return _result(req.cseq, F.RES_REFUSED, 0, f"you are not in #{req.room}", req.room)
        m = room.members[session.addr]
        offset = req.arg
        return self._answer(session, self._joined(req.cseq, room, session, m, offset), now)

    def _direct(self, session: Session, req: F.Req, now: float) -> F.Frame | None:
        """A direct message. Its Result waits until the recipient acks it (None: deferred), so the
        sender is told "acknowledged" only for what was delivered; if the recipient's inbox is
        thrown away first (it never came back, or it overflowed) the sender is told it failed."""
        action = req.arg == 1
        check_text(req.text, MAX_TEXT_BYTES)
        label = "@" + req.room
        if req.mid:
            seen = session.inbox.mids.get(req.mid)
            if seen is not None:
                return _result(req.cseq, F.RES_OK, seen, "", label)
        target = self._nicks.get(nick_key(req.room))
        if target is None:
            return _result(req.cseq, F.RES_REFUSED, 0, f"no one called {req.room} is here", label)
        label = "@" + target.nick
        ts = self._ts(now)
        kind_in, kind_out = (F.EV_DM_ACTION, F.EV_DM_ACTION_SENT) if action else (F.EV_DM, F.EV_DM_SENT)
        seq = session.inbox.append(F.Ev(kind_out, target.nick, req.text, ts, req.mid), now)
        session.inbox.mids.add(req.mid, seq)
        self._flush_inbox(session, now)
        done = _result(req.cseq, F.RES_OK, seq, "", label)
        if target is session:
            return done
        inbox = target.inbox
        at = inbox.append(F.Ev(kind_in, session.nick, req.text, ts, req.mid), now)
        target.dm_waiters[at] = (session, req.cseq, done)
        self._overflowed(target)
        self._flush_inbox(target, now)
        return None

    # ------------------------------------------------------------------ direct messages' fate

    def _resolve(self, sender: Session, cseq: int, res: F.Result) -> None:
        """A deferred direct message's answer, now known."""
        sender.deferred.discard(cseq)
        if self._tokens.get(sender.token) is sender:  # else: it reconnected and will resend
            self._store_result(sender, cseq, res)
            self._queue(sender, res)

    def _delivered(self, session: Session, acked: int) -> None:
        waiters = session.dm_waiters
        while waiters:
            seq = next(iter(waiters))
            if seq > acked:
                break
            self._resolve(*waiters.pop(seq))

    def _overflowed(self, session: Session) -> None:
        """Direct messages that fell off a full inbox before they were delivered: say so."""
        waiters, first = session.dm_waiters, session.inbox.first
        while waiters:
            seq = next(iter(waiters))
            if seq >= first:
                break
            sender, cseq, _ = waiters.pop(seq)
            reason = f"{session.nick} has too many unread direct messages"
            self._resolve(sender, cseq, _result(cseq, F.RES_REFUSED, 0, reason))

    def _refuse_waiters(self, waiters: list, reason: str) -> None:
        for w in waiters:
            if w is not None:
                sender, cseq, _ = w
                self._resolve(sender, cseq, _result(cseq, F.RES_REFUSED, 0, reason))

    def _park(self, session: Session, now: float) -> None:
        """The session ends with direct messages not yet delivered: keep them for its owner."""
        m, inbox = session.inbox_member, session.inbox
        start = max(m.acked + 1, inbox.first)
        if start > inbox.seq:
            return
        events = [inbox.ring[s - inbox.first] for s in range(start, inbox.seq + 1)]
        waiters = [session.dm_waiters.get(s) for s in range(start, inbox.seq + 1)]
        session.dm_waiters.clear()
        if not any(waiters) and not any(F.decode_ev(e).kind in _DM_IN for e in events):
            return  # only echoes of what it sent: nothing anyone waits for
        parked = Parked(session.nick, events, waiters, now + self.config.inbox_keep)
        cfg = self.config
        while self._parked and (
            len(self._parked) >= cfg.max_parked or self._parked_bytes + parked.size > cfg.max_parked_bytes
        ):
            self._forget(next(iter(self._parked)))
        self._parked[session.token] = parked
        self._parked_bytes += parked.size

    def _forget(self, token: int) -> Parked | None:
        parked = self._parked.pop(token, None)
        if parked is not None:
            self._parked_bytes -= parked.size
            self._refuse_waiters(parked.waiters, f"{parked.nick} did not come back to receive it")
        return parked

    def _unpark(self, session: Session, parked: Parked, now: float) -> None:
        """Its owner is back (it presented the old token): its direct messages go to the new
        session's inbox, after the Welcome (the next probe sends them)."""
        inbox = session.inbox
        for data, waiter in zip(parked.events, parked.waiters, strict=True):
            seq = inbox.append(F.decode_ev(data), now)
            if waiter is not None:
                session.dm_waiters[seq] = waiter
        inbox.flushed = inbox.seq
        self._overflowed(session)
        self._set_probe(session.inbox_member, now + session.rtt.rto)

    def _leave(self, session: Session, room: Stream, now: float, kind: int, reason: str) -> None:
        m = room.members.pop(session.addr, None)
        if m is not None:
            self._probes.cancel(m)
            room.fanout = None
        session.rooms.pop(room.name, None)
        self._room_event(room, F.Ev(kind, session.nick, reason, self._ts(now)), now)

    def _drop_session(self, session: Session, now: float, reason: str) -> None:
        kind = F.EV_TIMEOUT if reason == "timeout" else F.EV_LEAVE
        for room in list(session.rooms.values()):
            self._leave(session, room, now, kind, "" if reason == "timeout" else reason)
        self.sessions.pop(session.addr, None)
        self._tokens.pop(session.token, None)
        if self._nicks.get(nick_key(session.nick)) is session:
            del self._nicks[nick_key(session.nick)]
        self._probes.cancel(session.inbox_member)
        self._park(session, now)
        self._events.append(SessionClosed(session.nick, session.addr, reason))


_DM_IN = (F.EV_DM, F.EV_DM_ACTION)
#: events that record what happened to a member, not what someone said: a failed commit numbers
#: them again for the next one (a post or topic is refused instead)
_PRESENCE = (F.EV_LEAVE, F.EV_TIMEOUT, F.EV_NICK, F.EV_AWAY)
MAX_ECHO_BYTES = 100  # a Result echoes the request's room (or "@nick") only up to this size


def _result(cseq: int, code: int = F.RES_OK, seq: int = 0, reason: str = "", room: str = "") -> F.Result:
    """A Result whose strings, which may echo what the client sent, are bounded."""
    if len(room) > MAX_ECHO_BYTES // 4 and len(room.encode()) > MAX_ECHO_BYTES:
        room = ""
    if len(reason) > MAX_REASON_BYTES // 4:
        reason = clip_utf8(reason, MAX_REASON_BYTES)
    return F.Result(cseq, code, seq, reason, room)
