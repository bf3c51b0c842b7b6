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
- Every room event gets the room's next sequence number. New events are packed into Batch frames
  of at most 1200 bytes, encoded once, and the same bytes go to every member.
- Members ack (cumulative + selective ranges) and NACK holes; the relay also probes a member whose
  ack lags after an RTO (RFC 6298 estimate per session, exponential backoff). Events live in a ring
  per room; a joiner is backfilled from it; a member that fell further behind than the ring gets
  `Gone` and skips ahead.
- Sessions that send nothing (clients ping when quiet) for `timing.timeout` are timed out and the
  room is told.
"""

from __future__ import annotations

import os
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from . import frames as F
from .cookies import CookieJar, SourceLimiter, amplification_ok
from .names import (
    MAX_AWAY_BYTES,
    MAX_TEXT_BYTES,
    MAX_TOPIC_BYTES,
    NameError_,
    canonical_room,
    check_nick,
    check_text,
    nick_key,
)
from .reliability import DedupeWindow, RttEstimator, Timing, TokenBucket, iter_ranges

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
    hello_rate: float = 20.0  # handshakes per second across unknown sources, per address
    secret: bytes | None = None
    epoch: int | None = None
    max_repair_bytes: int = 24_000  # per member per probe


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
    )

    def __init__(self, session: Session, base: int, join_seq: int) -> None:
        self.session = session
        self.acked = base - 1
        self.sacked: set[int] = set()
        self.probe_at = 0.0
        self.attempts = 0
        self.last_retx = 0
        self.base = base
        self.join_seq = join_seq
        self.snapshot: list[F.MemberInfo] = []


class Stream:
    """A numbered event log: a room, or one session's inbox (wire name "")."""

    __slots__ = (
        "bytes",
        "cap",
        "cap_bytes",
        "first",
        "flushed",
        "last_active",
        "members",
        "mids",
        "name",
        "ring",
        "seq",
        "sizes",
        "times",
        "topic",
    )

    def __init__(self, name: str, cap: int, cap_bytes: int = 1 << 20) -> None:
        self.name = name
        self.seq = 0  # last assigned
        self.ring: deque[F.Ev] = deque()
        self.sizes: deque[int] = deque()
        self.times: deque[float] = deque()
        self.first = 1  # seq of ring[0]
        self.flushed = 0  # last seq broadcast
        self.members: dict[Addr, Member] = {}
        self.topic = ""
        self.mids = DedupeWindow(4096)
        self.cap = cap
        self.cap_bytes = cap_bytes
        self.bytes = 0
        self.last_active = 0.0

    def append(self, ev: F.Ev, now: float) -> int:
        self.seq += 1
        self.ring.append(ev)
        # An upper bound of the encoded size, without encoding: array header, kind, two string
        # headers, a float64 and a uint64 take at most 24 bytes besides the strings themselves.
        size = 24 + len(ev.nick.encode()) + len(ev.text.encode())
        self.sizes.append(size)
        self.times.append(now)
        self.bytes += size
        self.last_active = now
        # bounded by count and by bytes, whichever bites first
        while len(self.ring) > self.cap or (self.bytes > self.cap_bytes and len(self.ring) > 1):
            self.ring.popleft()
            self.bytes -= self.sizes.popleft()
            self.times.popleft()
            self.first += 1
        return self.seq

    def get(self, seq: int) -> F.Ev | None:
        i = seq - self.first
        if 0 <= i < len(self.ring):
            return self.ring[i]
        return None

    def batches(self, lo: int, hi: int, limit_bytes: int | None = None) -> list[F.Batch]:
        """Batch frames covering lo..hi (inclusive), each fitting one datagram."""
        lo = max(lo, self.first)
        out: list[F.Batch] = []
        budget = limit_bytes
        overhead = 16 + len(self.name.encode())
        cur: list[F.Ev] = []
        start = lo
        size = overhead
        ring, sizes, first = self.ring, self.sizes, self.first
        for s in range(lo, hi + 1):
            i = s - first
            n = sizes[i]
            if cur and size + n > F.MAX_DATAGRAM - SID_ROOM:
                out.append(F.Batch(self.name, start, cur))
                if budget is not None:
                    budget -= size
                    if budget <= 0:
                        return out
                cur, start, size = [], s, overhead
            cur.append(ring[i])
            size += n
        if cur:
            out.append(F.Batch(self.name, start, cur))
        return out


class Session:
    __slots__ = (
        "addr",
        "away",
        "bucket",
        "inbox",
        "inbox_member",
        "last_heard",
        "next_cseq",
        "nick",
        "nonce",
        "out",
        "pending",
        "results",
        "rooms",
        "rtt",
        "token",
    )

    def __init__(self, addr: Addr, nick: str, nonce: int, now: float, cfg: RelayConfig) -> None:
        self.addr = addr
        self.nick = nick
        self.away = ""
        self.nonce = nonce
        self.token = int.from_bytes(os.urandom(8), "big") >> 1
        self.rooms: dict[str, Stream] = {}
        self.inbox = Stream("", cfg.inbox_ring, cfg.ring_bytes // 4)
        self.inbox_member = Member(self, 1, 0)
        self.next_cseq = 1
        self.pending: dict[int, F.Req] = {}
        self.results: OrderedDict[int, F.Frame] = OrderedDict()
        self.last_heard = now
        self.rtt = RttEstimator(cfg.timing)
        self.bucket = TokenBucket(cfg.request_rate, cfg.request_burst, now)
        self.out: list[F.Frame] = []


MAX_PENDING_REQUESTS = 1024
SID_ROOM = 8 + 12  # a datagram's array header and its Sid frame, with room to spare
MAX_RESULTS_KEPT = 1024


class Relay:
    def __init__(self, config: RelayConfig | None = None) -> None:
        self.config = cfg = config or RelayConfig()
        self.timing = cfg.timing
        self.cookies = CookieJar(cfg.secret)
        self.epoch = cfg.epoch if cfg.epoch is not None else int.from_bytes(os.urandom(6), "big")
        self.sessions: dict[Addr, Session] = {}
        self._tokens: dict[int, Session] = {}
        # Every datagram to a session starts with Sid(epoch): clients drop what lacks it, so an
        # off-path attacker who forges the relay's address cannot inject events.
        self._sid = F.Sid(self.epoch)
        self.rooms: dict[str, Stream] = {}
        self._out: list[tuple[bytes, Addr]] = []
        self._events: deque = deque()
        self._dirty: set[str] = set()  # rooms with unflushed events
        self._dirty_sessions: set[Session] = set()  # sessions with frames queued
        self._hello_limit = SourceLimiter(cfg.hello_rate)
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
        for frame in frames:
            try:
                self._handle(session, frame, now)
            except (NameError_, ValueError, TypeError, KeyError, IndexError, OverflowError):
                # Frames decode to valid types, but a hostile value could still surprise a
                # handler: count it and keep serving.
                st["malformed"] += 1
            if addr not in self.sessions:  # it said Bye
                return
        self._arm(now + self.timing.rto_min / 2)

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
        return self._timer_at

    def handle_timer(self, now: float) -> None:
        self._timer_at = None
        t = self.timing
        # presence: time out silent sessions
        if now >= self._last_sweep + min(t.keepalive, t.timeout) / 4:
            self._last_sweep = now
            dead = [s for s in self.sessions.values() if now >= s.last_heard + t.timeout]
            for s in dead:
                self.stats["sessions_timed_out"] += 1
                self._drop_session(s, now, "timeout")
            self._hello_limit.prune(now)
            ttl = self.config.empty_room_ttl
            for name in [n for n, r in self.rooms.items() if not r.members and now >= r.last_active + ttl]:
                del self.rooms[name]
        outstanding = False
        for session in self.sessions.values():
            for stream in (*session.rooms.values(), session.inbox):
                m = stream.members.get(session.addr) if stream.name else session.inbox_member
                if m is None:
                    continue
                if m.acked < stream.flushed:
                    outstanding = True
                    if now >= m.probe_at:
                        self._probe(stream, m, now)
        if self.sessions:
            nxt = now + (t.rto_min / 2 if outstanding else min(t.keepalive, t.timeout) / 4)
            self._arm(nxt)

    def next_event(self):
        return self._events.popleft() if self._events else None

    def shutdown(self, now: float) -> None:
        """Say goodbye to everyone; datagrams_to_send then returns the farewells."""
        self._closing = True
        for session in list(self.sessions.values()):
            self._send_now(session, [F.Bye("relay shutting down")])
        self.sessions.clear()
        self._tokens.clear()
        self.rooms.clear()

    # ------------------------------------------------------------------ internals

    def _arm(self, at: float) -> None:
        if self._timer_at is None or at < self._timer_at:
            self._timer_at = at

    def _queue(self, session: Session, frame: F.Frame) -> None:
        session.out.append(frame)
        self._dirty_sessions.add(session)

    def _send_now(self, session: Session, frames: list[F.Frame]) -> None:
        for dgram in F.pack(frames, prefix=self._sid):
            self._out.append((dgram, session.addr))
            self.stats["bytes_out"] += len(dgram)

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
        session = Session(addr, nick, hello.nonce, now, self.config)
        if 1 <= hello.first_cseq < 1 << 62:
            session.next_cseq = hello.first_cseq
        self.sessions[addr] = session
        self._tokens[session.token] = session
        self.stats["sessions_opened"] += 1
        self._events.append(SessionOpened(nick, addr))
        self._queue(session, self._welcome(session))
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
            self._out.append((data, addr))
            self.stats["bytes_out"] += len(data)

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
            self._drop_session(session, now, frame.reason or "left")
        # Pong, Result... from a client are ignored

    def _hello_from_session(self, session: Session, hello: F.Hello, size: int, now: float) -> None:
        """A Hello from an address that has a session: a retransmit (our Welcome was lost), or the
        client starting over. Only a valid cookie may end the old session: a forged Hello, which
        cannot carry one, earns a Retry and changes nothing."""
        if hello.nonce == session.nonce:
            self._queue(session, self._welcome(session))
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
            m.probe_at = now + session.rtt.rto
            if m.sacked:
                m.sacked = {s for s in m.sacked if s > cum}
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
        seqs = [s for s in iter_ranges(nack.ranges, 512) if m.acked < s <= stream.flushed]
        if seqs:
            self._resend(stream, m, seqs, now)

    def _probe(self, stream: Stream, m: Member, now: float) -> None:
        """The member's ack lags: resend from its ack point (skipping what it SACKed)."""
        m.attempts += 1
        m.probe_at = now + m.session.rtt.backoff(m.attempts)
        start = m.acked + 1
        if start < stream.first:  # said again on every probe until the member acks past it
            self._queue(m.session, F.Gone(stream.name, stream.first))
            start = stream.first
        seqs = [s for s in range(start, stream.flushed + 1) if s not in m.sacked]
        if seqs:
            self._resend(stream, m, seqs, now)

    def _resend(self, stream: Stream, m: Member, seqs: list[int], now: float) -> None:
        if seqs[0] < stream.first:
            self._queue(m.session, F.Gone(stream.name, stream.first))
            seqs = [s for s in seqs if s >= stream.first]
            if not seqs:
                return
        budget = self.config.max_repair_bytes
        addr = m.session.addr
        run_start = prev = seqs[0]
        runs = []
        for s in seqs[1:]:
            if s != prev + 1:
                runs.append((run_start, prev))
                run_start = s
            prev = s
        runs.append((run_start, prev))
        for lo, hi in runs:
            for batch in stream.batches(lo, hi, budget):
                data = F.encode((self._sid, batch))
                self._out.append((data, addr))
                self.stats["bytes_out"] += len(data)
                self.stats["retransmitted"] += len(batch.events)
                budget -= len(data)
                last = batch.seq + len(batch.events) - 1
                if last > m.last_retx:
                    m.last_retx = last
                if budget <= 0:
                    return

    def _flush_room(self, room: Stream, now: float) -> None:
        """Broadcast events not yet sent: encode each batch once, same bytes to every member."""
        lo, hi = room.flushed + 1, room.seq
        if lo > hi:
            return
        room.flushed = hi
        members = list(room.members.values())
        if not members:
            return
        st = self.stats
        out = self._out
        for batch in room.batches(lo, hi):
            data = F.encode((self._sid, batch))
            first = batch.seq
            for m in members:
                if m.base <= first:
                    out.append((data, m.session.addr))
            st["bytes_out"] += len(data) * len(members)
        for m in members:
            if m.acked >= lo - 1:  # was caught up: the new data starts its retransmission clock
                m.probe_at = now + m.session.rtt.rto
                m.attempts = 0
        self._arm(now + self.timing.rto_min / 2)

    def _flush_inbox(self, session: Session, now: float) -> None:
        inbox = session.inbox
        lo, hi = inbox.flushed + 1, inbox.seq
        if lo > hi:
            return
        inbox.flushed = hi
        for batch in inbox.batches(lo, hi):
            data = F.encode((self._sid, batch))
            self._out.append((data, session.addr))
        m = session.inbox_member
        m.probe_at = now + session.rtt.rto
        self._arm(now + self.timing.rto_min / 2)

    # ------------------------------------------------------------------ requests

    def _on_req(self, session: Session, req: F.Req, now: float) -> None:
        if req.cseq < session.next_cseq:
            res = session.results.get(req.cseq)
            self._queue(session, res if res is not None else F.Result(req.cseq, F.RES_STALE))
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

    def _do(self, session: Session, req: F.Req, now: float) -> None:
        session.next_cseq = req.cseq + 1
        try:
            res = self._execute(session, req, now)
        except NameError_ as exc:
            res = F.Result(req.cseq, F.RES_REFUSED, 0, str(exc), req.room)
        session.results[req.cseq] = res
        if len(session.results) > MAX_RESULTS_KEPT:
            session.results.popitem(last=False)
        self._queue(session, res)

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
                return F.Result(cseq, F.RES_REFUSED, 0, f"you are not in #{req.room}", req.room)
            if req.mid:
                seen = room.mids.get(req.mid)
                if seen is not None:
                    return F.Result(cseq, F.RES_OK, seen, "", req.room)
            check_text(req.text, MAX_TEXT_BYTES)
            kind = F.EV_MSG if op == F.OP_POST else F.EV_ACTION
            seq = self._room_event(room, F.Ev(kind, session.nick, req.text, self._ts(now), req.mid), now)
            if req.mid:
                room.mids.add(req.mid, seq)
            self.stats["posts"] += 1
            return F.Result(cseq, F.RES_OK, seq, "", req.room)
        if op == F.OP_JOIN:
            return self._join(session, req, now)
        if op == F.OP_NAMES:
            return self._names(session, req)
        if op == F.OP_PART:
            room = session.rooms.get(req.room)
            if room is None:
                return F.Result(cseq, F.RES_OK, 0, "", req.room)
            self._leave(session, room, now, F.EV_LEAVE, req.text[:200])
            return F.Result(cseq, F.RES_OK, room.seq, "", req.room)
        if op == F.OP_NICK:
            new = check_nick(req.text)
            if new == session.nick:
                return F.Result(cseq, F.RES_OK, 0, "", "")
            for room in session.rooms.values():
                for m in room.members.values():
                    if m.session is not session and m.session.nick.casefold() == new.casefold():
                        return F.Result(
                            cseq, F.RES_REFUSED, 0, f"nick {new} is taken in #{room.name}", room.name
                        )
            old = session.nick
            session.nick = new
            for room in session.rooms.values():
                self._room_event(room, F.Ev(F.EV_NICK, old, new, self._ts(now)), now)
            return F.Result(cseq, F.RES_OK, 0, "", "")
        if op == F.OP_TOPIC:
            room = session.rooms.get(req.room)
            if room is None:
                return F.Result(cseq, F.RES_REFUSED, 0, f"you are not in #{req.room}", req.room)
            check_text(req.text, MAX_TOPIC_BYTES, "topic")
            room.topic = req.text
            seq = self._room_event(room, F.Ev(F.EV_TOPIC, session.nick, req.text, self._ts(now)), now)
            return F.Result(cseq, F.RES_OK, seq, "", req.room)
        if op == F.OP_AWAY:
            check_text(req.text, MAX_AWAY_BYTES, "away message")
            if req.text == session.away:  # nothing changes: nothing to tell the rooms
                return F.Result(cseq, F.RES_OK, 0, "", "")
            session.away = req.text
            for room in session.rooms.values():
                self._room_event(room, F.Ev(F.EV_AWAY, session.nick, req.text, self._ts(now)), now)
            return F.Result(cseq, F.RES_OK, 0, "", "")
        if op == F.OP_DIRECT:
            return self._direct(session, req, now)
        return F.Result(cseq, F.RES_REFUSED, 0, f"unknown request {op}", req.room)

    def _join(self, session: Session, req: F.Req, now: float) -> F.Frame:
        cseq = req.cseq
        name = canonical_room(req.room)
        room = session.rooms.get(name)
        if room is not None:  # already in: answer with a fresh snapshot
            m = room.members[session.addr]
            return self._joined(cseq, room, session, m, 0)
        if len(session.rooms) >= self.config.max_rooms_per_session:
            return F.Result(cseq, F.RES_REFUSED, 0, f"you are in {len(session.rooms)} rooms already", name)
        room = self.rooms.get(name)
        if room is None:
            if len(self.rooms) >= self.config.max_rooms:
                # Empty rooms keep their history until room space is needed.
                empty = next((k for k, r in self.rooms.items() if not r.members), None)
                if empty is None:
                    return F.Result(cseq, F.RES_REFUSED, 0, "the relay has too many rooms", name)
                del self.rooms[empty]
            room = self.rooms[name] = Stream(name, self.config.ring, self.config.ring_bytes)
        if len(room.members) >= self.config.max_members_per_room:
            return F.Result(cseq, F.RES_REFUSED, 0, f"#{name} is full", name)
        for other in room.members.values():
            if nick_key(other.session.nick) == nick_key(session.nick):
                return F.Result(cseq, F.RES_REFUSED, 0, f"nick {session.nick} is already in #{name}", name)
        # Members get everything up to now first, then the joiner is added with its backfill.
        self._flush_room(room, now)
        self._dirty.discard(name)
        join_seq = self._room_event(room, F.Ev(F.EV_JOIN, session.nick, "", self._ts(now)), now)
        base = max(room.first, join_seq - self.config.history)
        if req.arg > 0:  # a member coming back: resume where it left off, if the ring has it
            base = max(room.first, min(req.arg, join_seq))
        m = Member(session, base, join_seq)
        m.snapshot = sorted(
            (F.MemberInfo(o.session.nick, o.session.away) for o in room.members.values()),
            key=lambda i: i.nick.lower(),
        )
        m.snapshot.append(F.MemberInfo(session.nick, session.away))
        room.members[session.addr] = m
        session.rooms[name] = room
        # backfill: history before our join goes to us alone (the join itself is broadcast)
        if base < join_seq:
            self._resend(room, m, list(range(base, join_seq)), now)
        # Karn: acks of the backfill say nothing about the RTT (those events are old)
        m.last_retx = join_seq - 1
        m.probe_at = now + session.rtt.rto
        return self._joined(cseq, room, session, m, 0)

    def _joined(self, cseq: int, room: Stream, session: Session, m: Member, offset: int) -> F.Joined:
        snap = m.snapshot
        # the frame without members, measured, plus each member's exact encoded size
        empty = F.Joined(cseq, room.name, session.nick, m.base, m.join_seq, room.topic, [], offset, len(snap))
        size = F.size_of(empty) + 3  # the members array header can grow to 3 bytes
        chunk: list[F.MemberInfo] = []
        for info in snap[offset:]:
            n = F.size_of(info)
            if chunk and size + n > F.MAX_DATAGRAM - SID_ROOM:
                break
            chunk.append(info)
            size += n
        return F.Joined(
            cseq, room.name, session.nick, m.base, m.join_seq, room.topic, chunk, offset, len(snap)
        )

    def _names(self, session: Session, req: F.Req) -> F.Frame:
        room = session.rooms.get(req.room)
        if room is None:
            return F.Result(req.cseq, F.RES_REFUSED, 0, f"you are not in #{req.room}", req.room)
        m = room.members[session.addr]
        return self._joined(req.cseq, room, session, m, max(0, min(req.arg, len(m.snapshot))))

    def _direct(self, session: Session, req: F.Req, now: float) -> F.Frame:
        target_nick = req.room
        action = req.arg == 1
        check_text(req.text, MAX_TEXT_BYTES)
        if req.mid:
            seen = session.inbox.mids.get(req.mid)
            if seen is not None:
                return F.Result(req.cseq, F.RES_OK, seen, "", "@" + target_nick)
        target = None
        for room in session.rooms.values():
            for m in room.members.values():
                if m.session.nick.casefold() == target_nick.casefold():
                    target = m.session
                    break
            if target:
                break
        if target is None:
            target = next(
                (s for s in self.sessions.values() if s.nick.casefold() == target_nick.casefold()), None
            )
        if target is None:
            return F.Result(
                req.cseq, F.RES_REFUSED, 0, f"no one called {target_nick} is here", "@" + target_nick
            )
        ts = self._ts(now)
        kind_in, kind_out = (F.EV_DM_ACTION, F.EV_DM_ACTION_SENT) if action else (F.EV_DM, F.EV_DM_SENT)
        if target is not session:
            target.inbox.append(F.Ev(kind_in, session.nick, req.text, ts, req.mid), now)
            self._flush_inbox(target, now)
        seq = session.inbox.append(F.Ev(kind_out, target_nick, req.text, ts, req.mid), now)
        session.inbox.mids.add(req.mid, seq)
        self._flush_inbox(session, now)
        return F.Result(req.cseq, F.RES_OK, seq, "", "@" + target_nick)

    def _leave(self, session: Session, room: Stream, now: float, kind: int, reason: str) -> None:
        room.members.pop(session.addr, None)
        session.rooms.pop(room.name, None)
        self._room_event(room, F.Ev(kind, session.nick, reason, self._ts(now)), now)

    def _drop_session(self, session: Session, now: float, reason: str) -> None:
        kind = F.EV_TIMEOUT if reason == "timeout" else F.EV_LEAVE
        for room in list(session.rooms.values()):
            self._leave(session, room, now, kind, "" if reason == "timeout" else reason)
        self.sessions.pop(session.addr, None)
        self._tokens.pop(session.token, None)
        self._events.append(SessionClosed(session.nick, session.addr, reason))
