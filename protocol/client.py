"""The client session's sans-IO core: handshake, requests, ordered delivery, presence, reconnects.

No sockets, no asyncio, no clock: every call takes `now` (monotonic seconds); `wall_offset`
(wall clock minus that clock) stamps nothing here but is kept for symmetry with the relay.

The session keeps what the user wants (rooms, nick, away, unacknowledged posts) apart from what
the relay has confirmed, so when the relay goes away and comes back (or restarts with a new epoch)
the session says Hello again, rejoins the rooms and resends what was never acknowledged; message ids
(`mid`) make those resends idempotent at the relay and at every receiver.

It is one module (over 600 lines) because it is one state machine: the handshake, the requests
in flight, delivery and acks (`reliability.AckScheduler`) and reconnecting all read and reset the
same session state, and splitting them would only pass that state around.
"""

from __future__ import annotations

import os
from collections import OrderedDict, deque
from dataclasses import dataclass

from . import events as E
from . import frames as F
from .addr import Addr, format_sockaddr
from .backend import OutboxFull
from .names import (
    MAX_AWAY_BYTES,
    MAX_TOPIC_BYTES,
    Refused,
    canonical_room,
    check_nick,
    check_text,
    is_direct,
)
from .reliability import AckScheduler, DedupeWindow, RecvStream, RttEstimator, Timing

IDLE, HANDSHAKE, CONNECTED, WAITING, CLOSED = "idle", "handshake", "connected", "waiting", "closed"

MAX_INFLIGHT = 256
MAX_PAGE = 100  # events per history page (the relay's bound too)
MAX_OUTBOX = 5000
OWN_MIDS = 8192  # our recent posts whose copy from the relay is matched to the local id
ACK_EVERY = 128  # or after ack_delay; gaps and duplicates are acked at once
MAX_REFUSE_WAIT = 300.0  # at most this long (s) before a Hello after a Refuse that says "try later"


@dataclass(slots=True)
class Request:
    op: int
    room: str = ""
    text: str = ""
    mid: int = 0
    arg: int = 0
    local_id: int = 0
    created: float = 0.0
    cseq: int = 0
    sent_at: float = 0.0
    due: float = 0.0
    attempts: int = 0
    failed: bool = False
    n: int = 0  # OP_HISTORY: the most events wanted
    got: dict | None = None  # OP_HISTORY: the page's events received so far, by sequence

    def frame(self) -> F.Req:
        return F.Req(
            cseq=self.cseq, op=self.op, room=self.room, text=self.text, mid=self.mid, arg=self.arg, n=self.n
        )


class RoomState:
    __slots__ = (
        "collecting",
        "early",
        "history_below",
        "join_seq",
        "members",
        "name",
        "ready",
        "rx",
        "topic",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.rx: RecvStream | None = None
        self.join_seq = 0
        self.history_below = 0
        self.members: dict[str, E.Member] = {}
        self.topic = ""
        self.collecting: list[F.MemberInfo] = []
        self.early: dict[int, F.Ev] = {}
        self.ready = False


class ClientSession:
    def __init__(self, nick: str, timing: Timing | None = None, wall_offset: float = 0.0) -> None:
        self.nick = check_nick(nick)
        self.timing = t = timing or Timing()
        self.wall_offset = wall_offset
        self.rtt = RttEstimator(t)
        self.state = IDLE
        self.addr: Addr | None = None
        #: the relays of a cluster to fail over to (addr among them): the next one when ours stops
        #: answering; the cluster's epoch makes it a resume there (no gap, no duplicate)
        self.relays: list[Addr] = []
        self.failed_from = ""  # the relay we last failed over from (the status line says so)
        self.epoch: int | None = None
        self.rooms: OrderedDict[str, RoomState] = OrderedDict()  # wanted rooms, in join order
        self.away = ""
        self.inbox: RecvStream = RecvStream(1)
        self._events: deque = deque()
        self._frames: list[F.Frame] = []  # queued for the next datagrams_to_send
        self._outbox: deque[Request] = deque()  # not yet numbered
        self._inflight: OrderedDict[int, Request] = OrderedDict()  # cseq -> request
        self._failed: dict[int, Request] = {}
        self._next_cseq = 1
        self._next_local = 1
        self._own_mids: OrderedDict[int, int] = OrderedDict()  # our posts: mid -> local id (newest)
        self._seen_mids = DedupeWindow(16384)
        self._nonce = 0
        self._cookie = b""
        self._hello_at = 0.0
        self._hello_tries = 0
        self._handshake_started = 0.0
        self._wait_until = 0.0
        self._reconnects = 0
        self._last_heard = 0.0
        self._last_sent = 0.0
        self._ping_token = 0
        self._ping_sent: dict[int, float] = {}
        self._acks_due = AckScheduler(self.timing.ack_delay, ACK_EVERY)  # rooms, "" = the inbox
        self._retx_at: float | None = None
        self._token = 0
        self._hello_sent = 0.0
        self._last_ping = 0.0
        self._first_cseq = 1
        self._resume = 0
        self._stalled = False
        self._renaming = ""  # the nick a /nick asked for, until the relay answers
        self.stats = {"malformed": 0, "duplicates": 0, "retransmits": 0, "unauthenticated": 0}
        self._keepalive = t.keepalive

    # ------------------------------------------------------------------ commands

    @property
    def pending_posts(self) -> int:
        n = sum(1 for r in self._outbox if r.op in (F.OP_POST, F.OP_ACTION, F.OP_DIRECT))
        return n + sum(1 for r in self._inflight.values() if r.op in (F.OP_POST, F.OP_ACTION, F.OP_DIRECT))

    @property
    def connected(self) -> bool:
        return self.state == CONNECTED

    def connect(self, addr: Addr, now: float) -> None:
        self.addr = addr
        self._start_handshake(now)

    def join(self, room: str, now: float) -> None:
        name = canonical_room(room)
        if name in self.rooms:
            return
        self.rooms[name] = RoomState(name)
        self._enqueue(Request(F.OP_JOIN, name), now)

    def part(self, room: str, now: float) -> None:
        name = canonical_room(room)
        if self.rooms.pop(name, None) is None:
            return
        # drop queued requests for that room that were never sent
        self._outbox = deque(r for r in self._outbox if r.room != name or r.op == F.OP_PART)
        self._enqueue(Request(F.OP_PART, name), now)
        self._events.append(E.RoomLeft(name))

    def post(self, room: str, text: str, now: float, action: bool = False) -> int:
        check_text(text)
        if len(self._outbox) + len(self._inflight) >= MAX_OUTBOX:
            raise OutboxFull(f"{MAX_OUTBOX} messages are waiting for the relay; wait a moment")
        if is_direct(room):
            target = check_nick(room[1:])
            req = Request(F.OP_DIRECT, target, text, arg=1 if action else 0)
        else:
            name = canonical_room(room)
            if name not in self.rooms:
                raise Refused(f"you are not in #{name}")
            req = Request(F.OP_ACTION if action else F.OP_POST, name, text)
        req.mid = int.from_bytes(os.urandom(8), "big") >> 1 or 1
        return self._own(req.mid, self._enqueue(req, now))

    def retry(self, local_id: int, now: float) -> int:
        old = self._failed.pop(local_id, None)
        if old is None:
            raise Refused("that message is not waiting for a retry")
        # same mid: if the first attempt did land after all, the relay answers with its seq
        req = Request(old.op, old.room, old.text, old.mid, old.arg)
        return self._own(req.mid, self._enqueue(req, now))

    def _own(self, mid: int, local_id: int) -> int:
        """Remember that `mid` is our post `local_id` (its copy from the relay carries it)."""
        own = self._own_mids
        own[mid] = local_id
        own.move_to_end(mid)
        if len(own) > OWN_MIDS:
            own.popitem(last=False)
        return local_id

    def set_nick(self, nick: str, now: float) -> None:
        check_nick(nick)
        self._renaming = nick
        self._enqueue(Request(F.OP_NICK, "", nick), now)

    def set_topic(self, room: str, topic: str, now: float) -> None:
        name = canonical_room(room)
        check_text(topic, MAX_TOPIC_BYTES, "topic")
        self._enqueue(Request(F.OP_TOPIC, name, topic), now)

    def set_away(self, text: str, now: float) -> None:
        check_text(text, MAX_AWAY_BYTES, "away message")
        self.away = text
        self._enqueue(Request(F.OP_AWAY, "", text), now)

    def page_back(self, room: str, before: int, limit: int, now: float) -> None:
        """Ask the relay for up to `limit` (at most MAX_PAGE) events of `room` with sequence
        numbers below `before` (0: the newest). The answer is one `E.HistoryPage` (oldest first,
        every event `history=True`); a refusal is a `RequestRefused("history", ...)`."""
        name = canonical_room(room)
        limit = max(1, min(int(limit), MAX_PAGE))
        self._enqueue(Request(F.OP_HISTORY, name, arg=max(0, int(before)), n=limit), now)

    def close(self, now: float) -> None:
        if self.state == CONNECTED:
            if self._acks_due.streams:  # what we delivered is acknowledged before we go (a DM's
                self._frames.extend(self._acks(now))  # sender waits for it)
            self._frames.append(F.Bye("quit"))
        self.state = CLOSED

    # ------------------------------------------------------------------ sans-IO surface

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        if self.state == CLOSED or addr != self.addr:
            return
        try:
            frames = F.decode(data)
        except F.FrameError:
            self.stats["malformed"] += 1
            return
        first = frames[0]
        if type(first) is F.Sid:
            if self.state == CONNECTED:
                # The relay marks everything on our session with our own token, which only we
                # (and the relay) know: another member cannot forge the relay's datagrams to us.
                if first.token != self._token:
                    self.stats["unauthenticated"] += 1
                    return
            elif self.state != HANDSHAKE:
                return
            frames = frames[1:]
        elif self.state == CONNECTED and any(type(f) not in _SESSIONLESS for f in frames):
            # Without the relay's Sid only handshake answers and Reset are believed.
            self.stats["unauthenticated"] += 1
            return
        self._last_heard = now
        if self._stalled:
            self._stalled = False
            self._events.append(E.ConnectionResumed(self.rtt.srtt))
        for frame in frames:
            try:
                self._handle(frame, now)
            except (ValueError, TypeError, KeyError, IndexError, OverflowError):
                self.stats["malformed"] += 1
            if self.state == CLOSED:
                return

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        if self.addr is None:
            return []
        frames = self._frames
        self._frames = []
        if self.state == CONNECTED:
            if self._acks_due.due(now):
                frames.extend(self._acks(now))
            self._send_requests(now, frames)
            if not frames and now >= self._ping_due():
                frames.append(self._ping(now))
        if not frames:
            return []
        self._last_sent = now
        # On an established session every datagram starts with the session's token.
        sid = F.Sid(self._token) if self._token and self.state in (CONNECTED, CLOSED) else None
        dgrams = F.pack(frames, prefix=sid)
        addr = self.addr
        return [(d, addr) for d in dgrams]

    def get_timer(self) -> float | None:
        t = self.timing
        st = self.state
        if st == HANDSHAKE:
            return self._hello_at
        if st == WAITING:
            return self._wait_until
        if st != CONNECTED:
            return None
        at = min(self._ping_due(), self._last_heard + t.timeout)
        if not self._stalled and self._last_heard + self._stall_after() < at:
            at = self._last_heard + self._stall_after()
        ack_at = self._acks_due.at
        if self._acks_due.streams and ack_at is not None and ack_at < at:
            at = ack_at
        if self._inflight:
            if self._retx_at is not None and self._retx_at < at:
                at = self._retx_at
            # only posts give up (and only once): the oldest post still hoping sets the deadline
            for req in self._inflight.values():
                if req.op in _POSTS and not req.failed:
                    if req.created + t.give_up < at:
                        at = req.created + t.give_up
                    break
        if self._outbox and len(self._inflight) < MAX_INFLIGHT:
            return min(at, self._last_sent)
        return at

    def handle_timer(self, now: float) -> None:
        t = self.timing
        st = self.state
        if st == HANDSHAKE:
            if now >= self._hello_at:
                if now >= self._handshake_started + min(t.handshake, t.timeout):
                    self._lost("no answer from the relay", now, failover=True)
                else:
                    self._send_hello(now)
            self._expire_outbox(now)
            return
        if st == WAITING:
            if now >= self._wait_until:
                self._start_handshake(now)
            self._expire_outbox(now)
            return
        if st != CONNECTED:
            return
        if now >= self._last_heard + t.timeout:
            self._lost("the relay stopped answering", now, failover=True)
            return
        if not self._stalled and now >= self._last_heard + self._stall_after():
            self._stalled = True
            self._events.append(E.ConnectionStalled(now - self._last_heard))
        # retransmit what is due
        for req in self._inflight.values():
            if req.due <= now:
                req.attempts += 1
                req.sent_at = now
                req.due = now + self.rtt.backoff(req.attempts + 1)
                self._frames.append(req.frame())
                self.stats["retransmits"] += 1
            if (
                not req.failed
                and now >= req.created + t.give_up
                and req.op in (F.OP_POST, F.OP_ACTION, F.OP_DIRECT)
            ):
                req.failed = True
                self._fail(req, "the relay did not acknowledge it in time")
        self._retx_at = min((r.due for r in self._inflight.values()), default=None)

    def next_event(self):
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ connection

    def _start_handshake(self, now: float) -> None:
        self.state = HANDSHAKE
        self._stalled = False
        self._cookie = b""
        self._nonce = int.from_bytes(os.urandom(6), "big")
        # A random first request number per session: a late Result from an earlier session can
        # never answer one of this session's requests.
        self._first_cseq = int.from_bytes(os.urandom(4), "big") | 1
        if self._token:
            self._resume = self._token  # lets the relay end our old session if our address moved
        self._token = 0
        self._handshake_started = now
        self._hello_tries = 0
        self._events.append(E.Connecting(format_sockaddr(self.addr)))
        self._send_hello(now)

    def _send_hello(self, now: float) -> None:
        self._frames.append(
            F.padded_hello(
                version=F.VERSION,
                nick=self.nick,
                cookie=self._cookie,
                nonce=self._nonce,
                first_cseq=self._first_cseq,
                resume=self._resume,
            )
        )
        self._hello_tries += 1
        self._hello_sent = now
        self._hello_at = now + self.timing.hello_backoff(self._hello_tries)

    def _lost(self, reason: str, now: float, delay: float | None = None, failover: bool = False) -> None:
        self._stalled = False
        others = failover and len(self.relays) > 1 and self.addr in self.relays
        if delay is None:
            # with other relays to try, the backoff grows once per round of them
            delay = self.timing.reconnect_backoff(self._reconnects // (len(self.relays) if others else 1))
            self._reconnects += 1
        if others:
            self.failed_from = format_sockaddr(self.addr)
            self.addr = self.relays[(self.relays.index(self.addr) + 1) % len(self.relays)]
            reason += f"; failing over to {format_sockaddr(self.addr)}"
        self.state = WAITING
        self._wait_until = now + delay
        self._frames = []
        self._events.append(E.ConnectionLost(reason, delay))

    def _on_welcome(self, w: F.Welcome, now: float) -> None:
        if self.state != HANDSHAKE or w.nonce != self._nonce:
            return
        new_epoch = self.epoch is not None and w.epoch != self.epoch
        self.epoch = w.epoch
        self._token = w.token
        # the relay may want to hear from us more often than we planned
        self._keepalive = min(self.timing.keepalive, max(0.001, w.keepalive_ms / 1000))
        self.state = CONNECTED
        self._reconnects = 0
        self.nick = w.nick
        self._last_heard = now
        if self._hello_tries == 1:  # Karn: only an answer to a Hello sent once is a sample
            self.rtt.sample(now - self._hello_sent)
        # Rebuild the request stream for the new session: rooms first, then what was unsent.
        old = list(self._inflight.values()) + list(self._outbox)
        self._inflight.clear()
        self._outbox.clear()
        self._next_cseq = self._first_cseq
        self.inbox = RecvStream(1)
        self._acks_due.clear()
        for room in self.rooms.values():
            room.ready = False
            room.collecting = []
            room.early = {}
            if new_epoch:
                room.rx = None
            # Same relay run: ask to resume where we were rather than from the backfill window.
            resume = room.rx.next if room.rx is not None else 0
            self._outbox.append(Request(F.OP_JOIN, room.name, arg=resume, created=now))
        if self.away:
            self._outbox.append(Request(F.OP_AWAY, "", self.away, created=now))
        for req in old:
            if req.op in (F.OP_JOIN, F.OP_NAMES, F.OP_PART, F.OP_AWAY):
                continue
            req.cseq = 0
            req.attempts = 0
            if new_epoch:
                req.got = None  # parts of a history page from another history
            self._outbox.append(req)
        self._events.append(
            E.Connected(format_sockaddr(self.addr), self.nick, self.rtt.srtt, self.epoch or 0)
        )

    def _stall_after(self) -> float:
        """Silence (while we keep asking) after which we say the relay is not answering: past a
        keepalive and its unanswered probes, well before the timeout."""
        return min(self.timing.timeout / 2, self._keepalive + 4 * self.rtt.rto)

    def _ping_due(self) -> float:
        """Ping when quiet for a keepalive; while a ping goes unanswered, probe faster, so one
        lost datagram does not let the session drift towards a timeout."""
        if self._last_heard >= self._last_ping:
            return self._last_sent + self._keepalive
        return self._last_ping + max(self.rtt.rto, self._keepalive / 5)

    def _ping(self, now: float) -> F.Ping:
        self._last_ping = now
        self._ping_token += 1
        self._ping_sent = {self._ping_token: now}
        return F.Ping(self._ping_token)

    # ------------------------------------------------------------------ requests

    def _enqueue(self, req: Request, now: float) -> int:
        req.local_id = self._next_local
        self._next_local += 1
        req.created = now
        self._outbox.append(req)
        return req.local_id

    def _send_requests(self, now: float, frames: list[F.Frame]) -> None:
        outbox = self._outbox
        inflight = self._inflight
        due = now + self.rtt.rto
        while outbox and len(inflight) < MAX_INFLIGHT:
            req = outbox.popleft()
            req.cseq = self._next_cseq
            self._next_cseq += 1
            req.sent_at = now
            req.due = due
            inflight[req.cseq] = req
            frames.append(req.frame())
        if inflight and (self._retx_at is None or self._retx_at > due):
            self._retx_at = due

    def _expire_outbox(self, now: float) -> None:
        """While disconnected, posts older than give_up fail (and leave the queue)."""
        limit = now - self.timing.give_up
        if not self._outbox and not self._inflight:
            return
        keep: deque[Request] = deque()
        for req in list(self._inflight.values()) + list(self._outbox):
            if req.op in (F.OP_POST, F.OP_ACTION, F.OP_DIRECT) and req.created < limit:
                if not req.failed:
                    self._fail(req, "no connection to the relay")
                else:
                    self._failed.setdefault(req.local_id, req)
            else:
                keep.append(req)
        self._inflight.clear()
        for req in keep:
            req.cseq = 0
        self._outbox = keep

    def _fail(self, req: Request, reason: str) -> None:
        self._failed[req.local_id] = req
        room = "@" + req.room if req.op == F.OP_DIRECT else req.room
        self._events.append(E.PostFailed(req.local_id, room, reason))

    def _done(self, cseq: int, now: float) -> Request | None:
        req = self._inflight.pop(cseq, None)
        if req is not None and req.attempts == 0:
            self.rtt.sample(now - req.sent_at)
        return req

    def _on_result(self, res: F.Result, now: float) -> None:
        req = self._done(res.cseq, now)
        if req is None:
            return
        op = req.op
        if op in (F.OP_POST, F.OP_ACTION, F.OP_DIRECT):
            room = "@" + req.room if op == F.OP_DIRECT else req.room
            self._failed.pop(req.local_id, None)
            if res.code == F.RES_REFUSED:
                self._events.append(E.PostFailed(req.local_id, room, res.reason, refused=True))
            else:
                self._events.append(E.PostAcknowledged(req.local_id, room, res.seq))
            return
        if res.code == F.RES_STALE and op == F.OP_HISTORY:
            # too old for the relay to remember (it forgets old answers): the page is still wanted
            req.cseq, req.attempts = 0, 0
            self._outbox.appendleft(req)
            return
        if res.code == F.RES_STALE and op in (F.OP_JOIN, F.OP_NAMES):
            # Too old for the relay to remember, and its answer never reached us: a join must
            # complete whatever happened to it, so ask again with a fresh request.
            room = self.rooms.get(req.room)
            if room is not None and not room.ready:
                resume = room.rx.next if room.rx is not None else 0
                self._outbox.appendleft(Request(F.OP_JOIN, req.room, arg=resume, created=now))
            return
        if res.code != F.RES_REFUSED:
            if op == F.OP_NICK:
                self.nick = req.text  # what the next Hello (after a reconnect) asks for
            return
        what = {
            F.OP_JOIN: "join",
            F.OP_PART: "part",
            F.OP_NICK: "nick",
            F.OP_TOPIC: "topic",
            F.OP_AWAY: "away",
            F.OP_NAMES: "names",
            F.OP_HISTORY: "history",
        }.get(op, "request")
        if op == F.OP_JOIN:
            self.rooms.pop(req.room, None)
        self._events.append(E.RequestRefused(what, res.room or req.room, res.reason))

    def _on_joined(self, j: F.Joined, now: float) -> None:
        self._done(j.cseq, now)
        room = self.rooms.get(j.room)
        if room is None or room.ready:
            return
        if j.offset == 0:
            room.collecting = []
        if j.offset != len(room.collecting):
            return
        room.collecting.extend(j.members)
        if len(room.collecting) < j.total and j.members:
            self._outbox.appendleft(Request(F.OP_NAMES, j.room, arg=len(room.collecting), created=now))
            return
        self.nick = j.nick
        room.members = {m.nick: E.Member(m.nick, m.away) for m in room.collecting}
        room.collecting = []
        room.topic = j.topic
        rx = room.rx
        if rx is not None and j.base <= rx.next <= j.join_seq + 1:
            pass  # same relay run: carry on from where we were, nothing lost, nothing repeated
        else:
            missed = rx is not None and rx.next < j.base
            room.rx = rx = RecvStream(j.base)
            # first join: what came before us is history; a rejoin: all of it is news to us
            room.history_below = j.base if room.join_seq else j.join_seq
            if missed:
                self._events.append(E.Notice("some events were missed while disconnected", j.room))
        room.join_seq = j.join_seq
        room.ready = True
        self._events.append(E.RoomJoined(j.room, j.nick, tuple(room.members.values()), j.topic))
        if room.early:
            for seq, ev in sorted(room.early.items()):
                rx.offer(seq, ev)
            room.early = {}
            self._deliver(room, now)
            self._want_ack(j.room, now, urgent=True)  # else the relay resends the backfill

    # ------------------------------------------------------------------ incoming frames

    def _handle(self, frame: F.Frame, now: float) -> None:
        tp = type(frame)
        if tp is F.Batch:
            self._on_batch(frame, now)
        elif tp is F.Result:
            self._on_result(frame, now)
        elif tp is F.Joined:
            self._on_joined(frame, now)
        elif tp is F.History:
            self._on_history(frame, now)
        elif tp is F.Pong:
            sent = self._ping_sent.pop(frame.token, None)
            if sent is not None:
                self.rtt.sample(now - sent)
                self._events.append(E.RttUpdated(self.rtt.srtt or 0.0))
        elif tp is F.Gone:
            self._on_gone(frame, now)
        elif tp is F.Retry:
            if self.state == HANDSHAKE:
                self._cookie = frame.cookie
                self._hello_tries = 0
                self._send_hello(now)
        elif tp is F.Welcome:
            self._on_welcome(frame, now)
        elif tp is F.Reset:
            if self.state == CONNECTED and frame.token == self._token:
                self._events.append(E.ConnectionLost("the relay forgot this session", 0.0))
                self._start_handshake(now)
        elif tp is F.Bye:
            if self.state == CONNECTED:
                self._lost(frame.reason or "the relay said goodbye", now, self.timing.reconnect_min)
        elif tp is F.Refuse:
            if self.state != HANDSHAKE or frame.nonce != self._nonce:
                return
            if isinstance(frame.retry_ms, int) and frame.retry_ms > 0:  # passes (a ghost's nick): try again
                delay = min(max(frame.retry_ms / 1000, self.timing.reconnect_min), MAX_REFUSE_WAIT)
                self._lost(frame.reason, now, delay)
                return
            self.state = CLOSED
            self._events.append(E.Refused(frame.reason))

    def _on_history(self, h: F.History, now: float) -> None:
        """A part of a history page: the page is answered once every event lo..hi is in. Parts of
        an earlier try of the same request count (a sequence names one event within an epoch)."""
        req = self._inflight.get(h.cseq)
        if req is None or req.op != F.OP_HISTORY or h.room != req.room:
            return
        if not (0 < h.lo <= h.hi + 1 and h.hi - h.lo < MAX_PAGE and h.lo <= h.seq):
            self.stats["malformed"] += 1
            return
        if (req.arg > 0 and h.hi >= req.arg) or h.hi - h.lo + 1 > req.n:
            self.stats["malformed"] += 1  # not what we asked for (above `before`, or more than n)
            return
        got = req.got if req.got is not None else {}
        req.got = got
        for i, ev in enumerate(h.events):
            seq = h.seq + i
            if h.lo <= seq <= h.hi:
                got[seq] = ev
        if any(s not in got for s in range(h.lo, h.hi + 1)):
            return  # more parts to come (or the request is sent again)
        self._done(h.cseq, now)
        events = tuple(self._as_event(h.room, s, got[s], True) for s in range(h.lo, h.hi + 1))
        before = req.arg if req.arg > 0 else h.hi + 1
        self._events.append(E.HistoryPage(h.room, before, tuple(e for e in events if e), h.complete))

    def _on_gone(self, g: F.Gone, now: float) -> None:
        if g.room == "":
            rx = self.inbox
        else:
            room = self.rooms.get(g.room)
            if room is None or room.rx is None:
                return
            rx = room.rx
        skipped = rx.skip_to(g.first)
        if skipped:
            self._events.append(E.Notice(f"{skipped} older events were no longer available", g.room))
            if g.room:
                self._deliver(self.rooms[g.room], now)
            else:
                self._deliver_inbox(now)
        self._want_ack(g.room, now, urgent=True)

    def _on_batch(self, b: F.Batch, now: float) -> None:
        if self.state != CONNECTED:
            return
        room = None
        if b.room == "":
            rx = self.inbox
        else:
            room = self.rooms.get(b.room)
            if room is None:
                return
            if not room.ready:  # kept until the Joined says where the room starts for us
                if len(room.early) < 8192:
                    for i, ev in enumerate(b.events):
                        room.early[b.seq + i] = ev
                return
            rx = room.rx
        fresh = False
        for i, ev in enumerate(b.events):
            fresh |= rx.offer(b.seq + i, ev)
        if not fresh:
            self.stats["duplicates"] += 1
        if room is None:
            self._deliver_inbox(now)
        else:
            self._deliver(room, now)
        self._want_ack(b.room, now, urgent=not fresh or rx.has_gap())

    def _want_ack(self, name: str, now: float, urgent: bool) -> None:
        self._acks_due.want(name, self.inbox if name == "" else self.rooms[name].rx, now, urgent)

    def _acks(self, now: float) -> list[F.Frame]:
        def stream_of(name: str) -> tuple[RecvStream, int] | None:
            if name == "":
                return self.inbox, 0
            room = self.rooms.get(name)
            return None if room is None or room.rx is None else (room.rx, 0)

        out: list[F.Frame] = []
        for name, cum, sack, missing in self._acks_due.take(now, self.rtt.pace, stream_of):
            out.append(F.Ack(name, cum, sack))
            if missing:
                out.append(F.Nack(name, missing))
        return out

    def _deliver(self, room: RoomState, now: float) -> None:
        ready = room.rx.pop_ready()
        if not ready:
            return
        name = room.name
        emit = self._events.append
        members = room.members
        for seq, ev in ready:
            hist = seq < room.history_below
            kind = ev.kind
            if kind == F.EV_MSG or kind == F.EV_ACTION:
                if ev.mid:
                    if ev.mid in self._seen_mids:
                        self.stats["duplicates"] += 1
                        continue
                    self._seen_mids.add(ev.mid)
            elif hist:
                pass
            elif kind == F.EV_JOIN:
                members[ev.nick] = E.Member(ev.nick)
            elif kind == F.EV_LEAVE or kind == F.EV_TIMEOUT:
                members.pop(ev.nick, None)
            elif kind == F.EV_NICK:
                old = members.pop(ev.nick, None)
                members[ev.text] = E.Member(ev.text, old.away if old else "")
                if ev.nick == self.nick and self._renaming == ev.text:
                    self.nick = ev.text  # ours: true from this event on, not only from the Result
            elif kind == F.EV_TOPIC:
                room.topic = ev.text
            elif kind == F.EV_AWAY:
                members[ev.nick] = E.Member(ev.nick, ev.text)
            event = self._as_event(name, seq, ev, hist)
            if event is not None:
                emit(event)

    def _as_event(self, name: str, seq: int, ev: F.Ev, hist: bool) -> E.Event | None:
        """The app's event for a room event (None for a kind rooms do not have)."""
        kind = ev.kind
        if kind == F.EV_MSG or kind == F.EV_ACTION:
            local_id = self._own_mids.get(ev.mid, 0)
            own = ev.mid in self._own_mids
            action = kind == F.EV_ACTION
            return E.MessageReceived(name, seq, ev.nick, ev.text, ev.ts, action, hist, own, local_id)
        if kind == F.EV_JOIN:
            return E.MemberJoined(name, seq, ev.nick, ev.ts, hist)
        if kind == F.EV_LEAVE:
            return E.MemberLeft(name, seq, ev.nick, ev.ts, ev.text, hist)
        if kind == F.EV_TIMEOUT:
            return E.MemberTimedOut(name, seq, ev.nick, ev.ts, hist)
        if kind == F.EV_NICK:
            return E.NickChanged(name, seq, ev.nick, ev.text, ev.ts, hist)
        if kind == F.EV_TOPIC:
            return E.TopicChanged(name, seq, ev.nick, ev.text, ev.ts, hist)
        if kind == F.EV_AWAY:
            return E.AwayChanged(name, seq, ev.nick, ev.text, ev.ts, hist)
        return None

    def _deliver_inbox(self, now: float) -> None:
        for seq, ev in self.inbox.pop_ready():
            if ev.mid:
                if ev.mid in self._seen_mids:
                    continue
                self._seen_mids.add(ev.mid)
            kind = ev.kind
            sent = kind in (F.EV_DM_SENT, F.EV_DM_ACTION_SENT)
            action = kind in (F.EV_DM_ACTION, F.EV_DM_ACTION_SENT)
            self._events.append(
                E.MessageReceived(
                    E.direct_room(ev.nick),
                    seq,
                    self.nick if sent else ev.nick,
                    ev.text,
                    ev.ts,
                    action,
                    False,
                    sent,
                    self._own_mids.get(ev.mid, 0) if sent else 0,
                )
            )


_POSTS = (F.OP_POST, F.OP_ACTION, F.OP_DIRECT)
_SESSIONLESS = (F.Retry, F.Welcome, F.Refuse, F.Reset)
