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
from .addr import Addr
from .cookies import CookieJar, SourceLimiter, hello_padded, limited_reply, screen_unknown
from .names import (
    MAX_AWAY_BYTES,
    MAX_REASON_BYTES,
    MAX_TEXT_BYTES,
    MAX_TOPIC_BYTES,
    InputError,
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

    def append(self, ev: F.Ev, now: float) -> int:
        data = F.encode_item(ev)
        if len(data) > self.max_event:
            raise EventTooBig(f"an event of {len(data)} bytes does not fit a datagram")
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

    def batches(self, lo: int, hi: int):
        """Encoded Batch frames covering lo..hi (inclusive), each fitting one datagram behind a
        session's Sid, as (first seq, event count, bytes); lazily, so a caller with a budget stops
        early. An event too big for a datagram cannot be in the ring (`append` refuses it)."""
        lo = max(lo, self.first)
        room = F.MAX_DATAGRAM - DGRAM_HEAD
        overhead = self.overhead
        cur: list[bytes] = []
        start = lo
        size = overhead
        ring, first = self.ring, self.first
        for s in range(lo, hi + 1):
            data = ring[s - first]
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
        "pending",
        "repair",
        "results",
        "rooms",
        "rtt",
        "sid",
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
        self.head = F.datagram([F.encode_item(self.sid), b""])  # + one encoded frame = a datagram
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
        self.out: list[F.Frame] = []
        # direct messages: the cseqs of ours still waiting for their recipient, and theirs in our
        # inbox that a sender waits on (inbox seq -> (sender, cseq, result))
        self.deferred: set[int] = set()
        self.dm_waiters: dict[int, tuple[Session, int, F.Result]] = {}


MAX_PENDING_REQUESTS = 1024
MAX_RESULTS_KEPT = 1024


class Relay:
    def __init__(self, config: RelayConfig | None = None) -> None:
        self.config = cfg = config or RelayConfig()
        self.timing = cfg.timing
        self.cookies = CookieJar(cfg.secret)
        self.epoch = cfg.epoch if cfg.epoch is not None else int.from_bytes(os.urandom(6), "big")
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
            except (ValueError, TypeError, KeyError, IndexError, OverflowError):
                # Frames decode to valid types, but a hostile value could still surprise a
                # handler: count it and keep serving.
                st["malformed"] += 1
            if addr not in self.sessions:  # it said Bye
                return

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        if self._dirty:
            for name in list(self._dirty):
                room = self.rooms.get(name)
                if room is not None:
                    self._flush_room(room, now)
            self._dirty.clear()
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
        if self.sessions or self._parked:
            self._arm(self._last_sweep + sweep)

    def next_event(self):
        return self._events.popleft() if self._events else None

    def shutdown(self, now: float) -> None:
        """Say goodbye to everyone; datagrams_to_send then returns the farewells."""
        self._closing = True
        for session in list(self.sessions.values()):
            self._send_now(session, [F.Bye("relay shutting down")])
        self.sessions.clear()
        self._tokens.clear()
        self._nicks.clear()
        self._parked.clear()
        self._parked_bytes = 0
        self.rooms.clear()

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
        if self._closing:
            return
        hello, reply = screen_unknown(
            frames, addr, size, now, self.cookies, self._hello_limit, self.stats, (F.Bye, F.Reset)
        )
        if reply is not None:
            self._emit(reply, addr)
        if hello is None:
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
        except InputError as exc:
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
            version=F.VERSION,
            nick=session.nick,
            epoch=self.epoch,
            keepalive_ms=int(t.keepalive * 1000),
            timeout_ms=int(t.timeout * 1000),
            token=session.token,
            nonce=session.nonce,
        )

    def _reply_limited(self, addr: Addr, received: int, frames: list[F.Frame]) -> None:
        data = limited_reply(frames, received)  # before validation: at most 3x what came in
        if data is not None:
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
        elif not self._hello_limit.allow(session.addr, now):
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
        fresh = cum > m.last_retx  # Karn: sampled only if nothing up to it was resent
        if m.on_ack(cum, stream.flushed):
            if fresh:
                i = cum - stream.first
                if 0 <= i < len(stream.times):
                    session.rtt.sample(now - stream.times[i])
            if m.snapshot and cum >= m.join_seq:
                # It has its member list (a client acks a room only once it has all of it): a
                # room of n members must not keep n copies of it.
                m.snapshot = []
            if cum < stream.flushed:
                self._set_probe(m, now + session.rtt.rto)
            else:
                m.probe_at = now + session.rtt.rto
            if stream is session.inbox and session.dm_waiters:
                self._delivered(session, cum)
        if ack.ranges:
            m.on_sack(ack.ranges, stream.flushed)

    def _on_nack(self, session: Session, nack: F.Nack, now: float) -> None:
        stream, m = self._stream_of(session, nack.room)
        if m is None:
            return
        if session.repair.available(now, self._rtt_of(session)) <= 0:
            self.stats["repair_limited"] += 1  # out of budget: not even worth reading
            return
        seqs = m.nacked(nack.ranges, stream.flushed)
        if seqs:
            self._resend(stream, m, seqs, now)

    def _probe(self, stream: Stream, m: Member, now: float) -> None:
        """The member's ack lags: resend from its ack point (skipping what it SACKed)."""
        m.probe(now, m.session.rtt)
        self._set_probe(m, m.probe_at)
        if m.acked + 1 < stream.first:  # said again on every probe until the member acks past it
            self._queue(m.session, F.Gone(stream.name, stream.first))
        seqs = m.unacked(stream.flushed, stream.first)
        if seqs:
            self._resend(stream, m, seqs, now)

    def _resend(self, stream: Stream, m: Member, seqs: list[int], now: float) -> None:
        """Resend `seqs` (sorted) to one member, as far as its session's repair budget allows (the
        rest waits for the next probe or NACK)."""
        session = m.session
        if seqs[0] < stream.first:
            self._queue(session, F.Gone(stream.name, stream.first))
            seqs = [s for s in seqs if s >= stream.first]
            if not seqs:
                return
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
            for first, count, item in stream.batches(lo, hi):
                data = session.head + item
                if not self._repair_ok(session, len(data), now):
                    return
                self._emit(data, addr)
                st["retransmitted"] += count
                m.resent(first + count - 1)

    def _flush_room(self, room: Stream, now: float) -> None:
        """Broadcast events not yet sent: each batch is encoded once and every member gets the same
        bytes behind its own Sid."""
        lo, hi = room.flushed + 1, room.seq
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
        for first, _count, item in room.batches(lo, hi):
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
            except InputError:
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
        except (InputError, EventTooBig) as exc:  # (the second is a bug, but one refused cleanly)
            res = _result(req.cseq, F.RES_REFUSED, 0, str(exc), req.room)
        if res is None:  # deferred (a direct message waits for its recipient)
            session.deferred.add(req.cseq)
            return
        self._store_result(session, req.cseq, res)
        if type(res) is not F.Joined:  # a Joined was queued (or not) by `_answer`
            self._queue(session, res)

    def _store_result(self, session: Session, cseq: int, res: F.Frame) -> None:
        session.results[cseq] = res
        if len(session.results) > MAX_RESULTS_KEPT:
            session.results.popitem(last=False)

    def _ts(self, now: float) -> float:
        return round(now + self.config.wall_offset, 3)

    def _room_event(self, room: Stream, ev: F.Ev, now: float) -> int:
        seq = room.append(ev, now)
        self._dirty.add(room.name)
        return seq

    def _execute(self, session: Session, req: F.Req, now: float) -> F.Frame:
        op = req.op
        cseq = req.cseq
        if op == F.OP_POST or op == F.OP_ACTION:
            room = session.rooms.get(req.room)
            if room is None:
                return _result(cseq, F.RES_REFUSED, 0, f"you are not in #{req.room}", req.room)
            if req.mid:
                seen = room.mids.get(req.mid)
                if seen is not None:
                    return _result(cseq, F.RES_OK, seen, "", req.room)
            check_text(req.text, MAX_TEXT_BYTES)
            kind = F.EV_MSG if op == F.OP_POST else F.EV_ACTION
            seq = self._room_event(
                room, F.Ev(kind=kind, nick=session.nick, text=req.text, ts=self._ts(now), mid=req.mid), now
            )
            if req.mid:
                room.mids.add(req.mid, seq)
            self.stats["posts"] += 1
            return _result(cseq, F.RES_OK, seq, "", req.room)
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
                self._room_event(room, F.Ev(kind=F.EV_NICK, nick=old, text=new, ts=self._ts(now)), now)
            return _result(cseq, F.RES_OK, 0, "", "")
        if op == F.OP_TOPIC:
            room = session.rooms.get(req.room)
            if room is None:
                return _result(cseq, F.RES_REFUSED, 0, f"you are not in #{req.room}", req.room)
            check_text(req.text, MAX_TOPIC_BYTES, "topic")
            room.topic = req.text
            seq = self._room_event(
                room, F.Ev(kind=F.EV_TOPIC, nick=session.nick, text=req.text, ts=self._ts(now)), now
            )
            return _result(cseq, F.RES_OK, seq, "", req.room)
        if op == F.OP_AWAY:
            check_text(req.text, MAX_AWAY_BYTES, "away message")
            if req.text == session.away:  # nothing changes: nothing to tell the rooms
                return _result(cseq, F.RES_OK, 0, "", "")
            session.away = req.text
            for room in session.rooms.values():
                self._room_event(
                    room, F.Ev(kind=F.EV_AWAY, nick=session.nick, text=req.text, ts=self._ts(now)), now
                )
            return _result(cseq, F.RES_OK, 0, "", "")
        if op == F.OP_DIRECT:
            return self._direct(session, req, now)
        return _result(cseq, F.RES_REFUSED, 0, f"unknown request {op}", req.room)

    def _join(self, session: Session, req: F.Req, now: float) -> F.Frame:
        cseq = req.cseq
        name = canonical_room(req.room)
        room = session.rooms.get(name)
        if room is not None:  # already in: answer with a fresh snapshot
            m = room.members[session.addr]
            return self._answer(session, self._joined(cseq, room, session, m, 0), now)
        if len(session.rooms) >= self.config.max_rooms_per_session:
            return _result(cseq, F.RES_REFUSED, 0, f"you are in {len(session.rooms)} rooms already", name)
        room = self.rooms.get(name)
        if room is None:
            if len(self.rooms) >= self.config.max_rooms:
                # Empty rooms keep their history until room space is needed.
                empty = next((k for k, r in self.rooms.items() if not r.members), None)
                if empty is None:
                    return _result(cseq, F.RES_REFUSED, 0, "the relay has too many rooms", name)
                del self.rooms[empty]
            room = self.rooms[name] = Stream(name, self.config.ring, self.config.ring_bytes)
        if len(room.members) >= self.config.max_members_per_room:
            return _result(cseq, F.RES_REFUSED, 0, f"#{name} is full", name)
        # Members get everything up to now first, then the joiner is added with its backfill.
        self._flush_room(room, now)
        self._dirty.discard(name)
        join_seq = self._room_event(
            room, F.Ev(kind=F.EV_JOIN, nick=session.nick, text="", ts=self._ts(now)), now
        )
        base = max(room.first, join_seq - self.config.history)
        if req.arg > 0:  # a member coming back: resume where it left off, if the ring has it
            base = max(room.first, min(req.arg, join_seq))
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
            self._resend(room, m, list(range(base, join_seq)), now)
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
        empty = F.Joined(
            cseq=cseq,
            room=room.name,
            nick=session.nick,
            base=m.base,
            join_seq=m.join_seq,
            topic=room.topic,
            members=[],
            offset=offset,
            total=len(snap),
        )
        size = F.size_of(empty) + 3  # the members array header can grow to 3 bytes
        chunk: list[F.MemberInfo] = []
        for info in snap[offset:]:
            n = F.size_of(info)
            if chunk and size + n > F.MAX_DATAGRAM - DGRAM_HEAD - 3:
                break
            chunk.append(info)
            size += n
        return F.Joined(
            cseq=cseq,
            room=room.name,
            nick=session.nick,
            base=m.base,
            join_seq=m.join_seq,
            topic=room.topic,
            members=chunk,
            offset=offset,
            total=len(snap),
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
        seq = session.inbox.append(
            F.Ev(kind=kind_out, nick=target.nick, text=req.text, ts=ts, mid=req.mid), now
        )
        session.inbox.mids.add(req.mid, seq)
        self._flush_inbox(session, now)
        done = _result(req.cseq, F.RES_OK, seq, "", label)
        if target is session:
            return done
        inbox = target.inbox
        at = inbox.append(F.Ev(kind=kind_in, nick=session.nick, text=req.text, ts=ts, mid=req.mid), now)
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
        self._room_event(room, F.Ev(kind=kind, nick=session.nick, text=reason, ts=self._ts(now)), now)

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
MAX_ECHO_BYTES = 100  # a Result echoes the request's room (or "@nick") only up to this size


def _result(cseq: int, code: int = F.RES_OK, seq: int = 0, reason: str = "", room: str = "") -> F.Result:
    """A Result whose strings, which may echo what the client sent, are bounded."""
    if len(room) > MAX_ECHO_BYTES // 4 and len(room.encode()) > MAX_ECHO_BYTES:
        room = ""
    if len(reason) > MAX_REASON_BYTES // 4:
        reason = clip_utf8(reason, MAX_REASON_BYTES)
    return F.Result(cseq=cseq, code=code, seq=seq, reason=reason, room=room)
