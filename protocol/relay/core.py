"""`Relay`: the relay core, its sans-IO surface and its timers. Each concept of the relay is a
part of its own that Relay is made of (see the package docstring)."""

from __future__ import annotations

from collections import deque

from .. import frames as F
from ..addr import Addr
from ..cookies import CookieJar, SourceLimiter, source_of
from ..crypto import SESSION_OVERHEAD, CryptoError, Identity, is_sealed, room_digest
from ..names import (
    MAX_REASON_BYTES,
    clip_utf8,
    nick_key,
    nick_keys,
)
from ..reliability import (
    Deadlines,
)
from ..roomlog import MemoryLog, RoomLog
from .cluster import Follow
from .fanout import Fanout
from .handshake import Handshake
from .inbox import Inbox
from .moderation import Moderation, count_made, count_registered, load_rules
from .requests import Requests
from .state import (
    Parked,
    Pending,
    RelayConfig,
    Session,
    SessionClosed,
    Stream,
)
from .storage import Storage
from .vault import Vault


class Relay(Handshake, Fanout, Requests, Inbox, Storage, Moderation, Vault, Follow):
    """The relay. `log` is the room log (protocol/roomlog.py) rooms take their numbers from and
    keep their events in: a MemoryLog (kept `config.ring` events per room) unless one is given.

    Nothing is acknowledged before it is stored: a post's Result waits for the log's next commit,
    made once per flush (`datagrams_to_send`) before anything for that group leaves, and events
    are broadcast only once committed. If the commit fails, the group's posts (and topics) are
    refused with the log's one-line reason, their numbers are handed out again, and presence
    events (leave, nick, away) of the group are appended again for the next commit (storage.py)."""

    def __init__(self, config: RelayConfig | None = None, log: RoomLog | None = None, names=None) -> None:
        self.config = cfg = config or RelayConfig()
        self.timing = cfg.timing
        self.cookies = CookieJar(cfg.secret)
        # the relay's long-term key: clients pin it (docs/security.md, "The handshake")
        self.identity = cfg.identity if cfg.identity is not None else Identity.generate()
        self._pending: dict[Addr, Pending] = {}  # handshakes waiting for their Login
        self.log = log if log is not None else MemoryLog(keep_days=None, keep_events=cfg.ring)
        # The epoch names the history (the log's): a relay restarted on the same data keeps it, so
        # its members resume where they were. (Sessions are protected by their own tokens.)
        self.epoch = cfg.epoch if cfg.epoch is not None else self.log.epoch
        # registered nicks and room rules, from the log's records (moderation.py)
        self.rules = load_rules(self.log)
        self._made = count_made(self.rules)
        self._registered = count_registered(self.log)
        # posts (and topics) waiting for the next commit: (session, cseq, Result, room)
        self._unstored: list[tuple[Session, int, F.Result, str]] = []
        self._posts_pending = 0  # new posts among them
        self._store_failures = 0  # commits refused in a row (StoreFailed said once)
        self._next_expire = 0.0
        self.sessions: dict[Addr, Session] = {}
        self._tokens: dict[int, Session] = {}
        self._nicks: dict[str, Session] = {}  # nick_key -> session: lookups by nick
        #: every key of every held nick (names.nick_keys) -> its session: nicks are unique per relay
        self._taken: dict[str, Session] = {}
        self._parked: dict[int, Parked] = {}  # old session token -> its undelivered DMs
        self._parked_bytes = 0
        self._probes = Deadlines()  # members whose ack lags, and rooms with fresh data, by when
        self.rooms: dict[str, Stream] = {}
        self._out: list[tuple[bytes, Addr]] = []
        self._events: deque = deque()
        self._dirty: set[str] = set()  # rooms with unflushed events
        self._dirty_sessions: set[Session] = set()  # sessions with frames queued
        self._rekey_due: set[Stream] = set()  # rooms whose key changes at their `rekey_at`
        self._hello_limit = SourceLimiter(cfg.hello_rate, burst=cfg.hello_burst)
        #: posts per identity key (requests.py `_post_allowed`): a bucket outlives the session
        self._post_limit = SourceLimiter(cfg.posts_per_key, burst=cfg.posts_per_key_burst)
        #: per source address (`Session.source`): open sessions, requests and posts (requests.py)
        self._per_source: dict[object, int] = {}
        self._pending_per_source: dict[object, int] = {}  # handshakes waiting for their Login
        self._request_limit = SourceLimiter(cfg.requests_per_address, burst=cfg.requests_per_address_burst)
        self._source_post_limit = SourceLimiter(cfg.posts_per_address, burst=cfg.posts_per_address_burst)
        self._timer_at: float | None = None
        self._last_sweep = 0.0
        self._closing = False
        self._follow_init(names)  # a log that follows its rooms (a cluster): cluster.py
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "datagrams_in",
                "datagrams_out",
                "bytes_in",
                "bytes_out",
                "malformed",
                "unknown_source",
                "rate_limited",
                "posts_refused_rate",
                "posts_refused_address",
                "requests_limited_address",
                "sessions_refused_address",
                "handshakes_limited_address",
                "topic_signature_not_kept",
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
                "posts_sent_again",
                "pages",
                "sealed_dropped",
                "pending_timed_out",
                "rekeys",
                "passphrase_asked",
                "passphrase_refused",
                "passphrase_changed",
                "passphrase_limited",
            ),
            0,
        )

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        st = self.stats
        st["datagrams_in"] += 1
        st["bytes_in"] += len(data)
        if len(data) > F.MAX_DATAGRAM:
            st["malformed"] += 1
            return
        if is_sealed(data):
            self._sealed(data, addr, now)
            return
        # In the clear: only a Hello (a handshake) means anything.
        try:
            frames = F.decode(data)
        except F.FrameError:
            st["malformed"] += 1
            return
        session = self.sessions.get(addr)
        if session is None:
            self._from_unknown(frames, addr, len(data), now)
        elif type(frames[0]) is F.Hello:
            self._hello_from_session(session, frames[0], len(data), now)
        else:
            # Not sealed under the session's keys: an off-path forgery (or a stale client).
            st["unauthenticated"] += 1

    def _sealed(self, data: bytes, addr: Addr, now: float) -> None:
        st = self.stats
        session = self.sessions.get(addr)
        if data[2:10] == bytes(8):  # packet number 0: a handshake's message 3
            pending = self._pending.get(addr)
            if pending is not None:
                self._from_pending(pending, data, now)
            elif session is not None and self._repeated_login(session, data):
                st["repeated"] += 1  # (a copy of the msg3 that opened it: our LoggedIn was lost)
                self._queue(session, self._logged_in(session))
            else:
                st["sealed_dropped" if session is not None else "unknown_source"] += 1
            return
        if session is None:
            st["unknown_source"] += 1
            if self._hello_limit.allow(addr, now):  # we lost its session (a restart): a hint
                self._reply_limited(addr, len(data), [F.Reset()])
            return
        try:
            payload = session.channel.open(data)
        except CryptoError:
            st["sealed_dropped"] += 1
            return
        frames = F.decode_counted(payload, st)
        if frames is None:
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
            self._session_frame(session, frame, now)
            if addr not in self.sessions:  # it said Bye
                return

    @staticmethod
    def _repeated_login(session: Session, data: bytes) -> bool:
        try:
            session.hs.finish(data)  # the same msg3 gives the same payload; another one raises
        except CryptoError:
            return False
        return True

    def _session_frame(self, session: Session, frame: F.Frame, now: float) -> None:
        try:
            self._handle(session, frame, now)
        except (ValueError, TypeError, KeyError, IndexError, OverflowError):
            # Frames decode to valid types, but a hostile value could still surprise a
            # handler: count it and keep serving.
            self.stats["malformed"] += 1

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        if self._follows:
            self._cluster_poll(now)
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
            late = [a for a, p in self._pending.items() if now >= p.created + self.config.pending_timeout]
            for a in late:
                self.stats["pending_timed_out"] += 1
                self._forget_pending(a)
            self._hello_limit.prune(now)
            cfg = self.config
            for limiter, rate, burst in (  # (a bucket idle this long is full: nothing forgotten)
                (self._post_limit, cfg.posts_per_key, cfg.posts_per_key_burst),
                (self._request_limit, cfg.requests_per_address, cfg.requests_per_address_burst),
                (self._source_post_limit, cfg.posts_per_address, cfg.posts_per_address_burst),
            ):
                if rate > 0:
                    limiter.prune(now, burst / rate)
            ttl = self.config.empty_room_ttl
            for name in [n for n, r in self.rooms.items() if not r.members and now >= r.last_active + ttl]:
                del self.rooms[name]
            while self._parked:
                token, parked = next(iter(self._parked.items()))
                if now < parked.until:
                    break
                self._forget(token)
        for room in [r for r in self._rekey_due if now >= r.rekey_at]:
            self._rekey(room, now)
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
        if self.sessions or self._parked or self._pending:
            self._arm(min(self._last_sweep + sweep, self._next_expire))
        for room in self._rekey_due:
            self._arm(room.rekey_at)

    def _nick_holder(self, nick: str, me: Session | None = None) -> Session | None:
        """A session other than `me` holding `nick` or a look-alike of it (None: it is free here)."""
        for key in nick_keys(nick):
            holder = self._taken.get(key)
            if holder is not None and holder is not me:
                return holder
        return None

    @staticmethod
    def _in_use(nick: str, holder: Session) -> str:
        """The one line a nick held here (or a look-alike of it: `names.nick_keys`) is refused with."""
        said = f"nick {nick} is in use on this relay"
        return said if holder.nick == nick else f"{said} (it looks like {holder.nick})"

    def _hold_nick(self, session: Session, nick: str) -> None:
        self._nicks[nick_key(nick)] = session
        for key in nick_keys(nick):
            self._taken[key] = session

    def _release_nick(self, session: Session, nick: str) -> bool:
        """Forget that `session` holds `nick`; False if it did not."""
        if self._nicks.get(nick_key(nick)) is not session:
            return False
        del self._nicks[nick_key(nick)]
        for key in nick_keys(nick):
            if self._taken.get(key) is session:
                del self._taken[key]
        return True

    def _source_count(self, source: object, delta: int, table: dict[object, int] | None = None) -> int:
        """Sessions open from `source` (`RelayConfig.max_sessions_per_address`), after `delta` (or
        what `table` counts per source: handshakes waiting for their Login)."""
        table = self._per_source if table is None else table
        n = table.get(source, 0) + delta
        if n > 0:
            table[source] = n
        else:
            table.pop(source, None)
        return n

    def _forget_pending(self, addr: Addr) -> None:
        """A handshake that waited for its Login is done (logged in, or timed out)."""
        if self._pending.pop(addr, None) is not None:
            self._source_count(source_of(addr), -1, self._pending_per_source)

    def next_event(self):
        return self._events.popleft() if self._events else None

    def shutdown(self, now: float) -> None:
        """Say goodbye to everyone; datagrams_to_send then returns the farewells."""
        self._commit(wait=True)  # what is pending is stored (and answered) before the goodbyes
        if self._follows:
            self._settle_commits(None)
        self._closing = True
        for session in list(self.sessions.values()):
            self._send_now(session, [F.Bye("relay shutting down")])
        self.sessions.clear()
        self._per_source.clear()
        self._pending.clear()
        self._pending_per_source.clear()
        self._tokens.clear()
        self._nicks.clear()
        self._taken.clear()
        self._parked.clear()
        self._parked_bytes = 0
        self.rooms.clear()
        self._rekey_due.clear()

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
        for payload in F.pack(frames, F.MAX_DATAGRAM - SESSION_OVERHEAD):
            self._emit(self._seal(session, payload), session.addr)

    # Sealing (docs/security.md, "Sealed datagrams" and "room keys"): small methods, so that
    # benchmarks/bench_crypto.py can measure the same core without them (its plain baseline). A
    # member's copy of a sealed batch is `session.channel.seal_room(blob, digest)`.

    @staticmethod
    def _seal(session: Session, payload: bytes) -> bytes:
        """A datagram of the session's, sealed under its keys."""
        return session.channel.seal(payload)

    @staticmethod
    def _seal_batch(room: Stream, payload: bytes) -> tuple[bytes, bytes]:
        """A room datagram's payload sealed once under the room's key: (blob, its digest)."""
        blob = room.key.seal(payload)
        return blob, room_digest(blob)

    def _flush_session(self, session: Session) -> None:
        frames, session.out = session.out, []
        self._send_now(session, frames)

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

    def _drop_session(self, session: Session, now: float, reason: str) -> None:
        kind = F.EV_TIMEOUT if reason == "timeout" else F.EV_LEAVE
        if session.joining:  # (a cluster: joins still committing)
            self._left_while_joining(session, now, kind, "" if reason == "timeout" else reason)
        for room in list(session.rooms.values()):
            self._leave(session, room, now, kind, "" if reason == "timeout" else reason)
        if self.sessions.pop(session.addr, None) is session:
            self._source_count(session.source, -1)
        self._tokens.pop(session.token, None)
        if self._release_nick(session, session.nick):
            self._release_shared_nick(session, session.nick)
        self._probes.cancel(session.inbox_member)
        self._park(session, now)
        self._events.append(SessionClosed(session.nick, session.addr, reason))
