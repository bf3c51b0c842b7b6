"""The relay on a room log that follows its rooms: relays sharing rooms through NATS JetStream
(protocol/jetstream.py, docs/cluster.md). What differs from a relay on a log of its own, in one
place; on MemoryLog and SqliteLog (`log.follows` false) none of this runs.

- Numbers: an append gets the room's next number as this relay knows it, but nothing reaches the
  room's ring at append. The ring is fed from the log's feed (`drain()`): the stream's events in
  stream order, stored by this relay or any other. So every relay sends its members one order,
  each event once, and a post of ours travels the same path as anyone's.
- Commits: `begin_commit()` once per flush, without waiting (the NATS round trip never stalls the
  UDP loop). When a group completes (the log wakes the runner) the posts waiting on it are
  answered: stored -> their Result; a duplicate (the same message id, stored before, maybe
  through another relay) -> the number it has; anything else -> refused with the log's reason,
  never acknowledged. A group's presence events (leave, timeout, nick, away) that were not stored
  are appended again: they happened all the same.
- A join waits (bounded) for its own commit: the joiner's numbers must be final. It waits parked,
  as everything that needs a round trip does (roomlog.Pending: `_wait_for`, `_resume`): the log
  or the nicks raise Pending(key), the request is kept and done again when the key completes,
  and the loop serves everyone else meanwhile (docs/cluster.md "The NATS client and the UDP loop").
- A post whose commit got no answer in time may be stored yet: never refused for that, it is
  sent again with its message id until the cluster answers (`_send_again`).
- Nicks: unique across relays through `names` (jetstream.ClusterNicks), claimed when a session
  opens or changes nick, released when it ends.
- Direct messages to a nick held through another relay go there (`_direct_remote`; the routing is
  ClusterNicks'): that relay puts the event in the recipient's inbox like its own, and answers when
  the recipient acknowledged it (or its inbox was thrown away); the sender's Result waits for that
  answer, bounded: no answer means "not delivered", never "delivered".
"""

from __future__ import annotations

from collections import deque
from typing import Any

from .. import frames as F
from ..names import MAX_TEXT_BYTES, InputError, canonical_room, check_nick, check_text, nick_key
from ..roomlog import Pending, StoreError
from .state import (
    _DM_IN,
    MAX_PARKED,
    NOT_STORED,
    PRESENCE,
    EventTooBig,
    RemoteSender,
    Session,
    StoreFailed,
    StoreRecovered,
    Stream,
    result_frame,
)


class Follow:
    """A part of `Relay` (core.py): these methods work on the relay's state."""

    def _follow_init(self, names: Any) -> None:
        #: the log follows rooms (JetStreamLog): fan out from its feed, commit without waiting
        self._follows = bool(getattr(self.log, "follows", False))
        if self._follows:  # numbers come from the stream: relays posting at once never refuse each other
            self.log.stream_numbers = True
            # and no round trip stalls the loop: what needs one raises Pending and waits (below)
            for part in (self.log, names):
                if hasattr(part, "nonblocking"):
                    part.nonblocking = True
        #: what waits for the cluster (roomlog.Pending): key -> {who: what}; who is ("req", session
        #: token) with (session, request), or ("login", addr) with (pending handshake, datagram)
        self._waiting: dict[Any, dict[Any, tuple]] = {}
        self._n_waiting = 0
        self._ready: list[Any] = []  # commits that joins wait for, settled
        self._pages_waiting: dict[tuple[int, int], int] = {}  # (token, cseq) -> the page's `before`
        #: rooms being opened (their join waits for the cluster): the feed's presence events so far
        self._opening: dict[str, list[F.Ev]] = {}
        #: posts sent to the cluster without an answer in time, sent again until one comes:
        #: (session token, cseq) -> the event (Commit.unknown)
        self._unsure: dict[tuple[int, int], F.Ev] = {}
        self._numbers: dict[tuple[str, int], int] = {}  # the last waited-for group's final numbers
        self._last_error = ""  # why the last commit failed, and when (joins wait for no commit then)
        self._failed_at = 0.0
        self._now = 0.0  # the last `now` the relay was given (for what settles without one)
        self._commits: deque = deque()  # (Commit, its unstored posts, its presence events, posts)
        self._group_presence: list[tuple[str, int, F.Ev]] = []
        self._followed: set[str] = set()
        #: who is in each followed room as its stream says (every relay's members): nick_key -> info
        self._roster: dict[str, dict[str, F.MemberInfo]] = {}
        self._wakeup: Any = None
        #: nick claims across relays (jetstream.ClusterNicks), or None: unique on this relay only
        self.names = names
        #: direct messages sent through the cluster, waiting for the recipient's relay:
        #: id -> (session, cseq, echo event, label, give up at)
        self._remote_dms: dict[int, tuple[Session, int, F.Ev, str, float]] = {}
        self._dm_ids = 0

    def set_wakeup(self, fn: Any) -> None:
        """`fn()`, callable from any thread, makes the runner flush soon: a commit completed, or the
        feed has events. (The runner hops to its loop: loop.call_soon_threadsafe.)"""
        self._wakeup = fn
        if self._follows:
            self.log.set_wakeup(fn)
        if self.names is not None:
            self.names.set_wakeup(fn)

    # ------------------------------------------------------------------ appends and commits

    def _fed_event(self, room: Stream, ev: F.Ev, now: float) -> int:
        """`_room_event` on a following log: numbered and pending; it reaches the ring (and the
        members) when the feed delivers it, once stored."""
        seq = self.log.append(room.name, ev)
        if ev.kind in PRESENCE:
            self._group_presence.append((room.name, seq, ev))
        room.last_active = now
        self._dirty.add(room.name)
        return seq

    def _commit_follow(self, wait: bool) -> str | None:
        """Start committing the pending group; with `wait`, wait (bounded) for it and return its
        error (None: stored)."""
        log = self.log
        unstored, self._unstored = self._unstored, []
        presence, self._group_presence = self._group_presence, []
        posts, self._posts_pending = self._posts_pending, 0
        if not log.pending and not unstored and not wait:
            return None
        try:
            handle = log.begin_commit()
        except StoreError as exc:  # (a closed log)
            handle = _failed(str(exc))
        self._commits.append((handle, unstored, presence, posts))
        if not handle.done() and self._wakeup is not None:
            wakeup = self._wakeup
            handle.add_done_callback(lambda _h: wakeup())
        if not wait:
            return None
        if not handle.wait(getattr(log, "commit_timeout", 5.0) + 1.0):
            return "the cluster did not answer in time"
        self._numbers = handle.numbers
        self._settle_commits(None)
        return handle.error

    def _settle_commits(self, now: float | None) -> None:
        """Answer the posts of the groups that completed, oldest first."""
        log = self.log
        again = False
        while self._commits and self._commits[0][0].done():
            handle, unstored, presence, posts = self._commits.popleft()
            stored, dups, error = handle.stored, handle.duplicates, handle.error
            if error is None:
                self.stats["commits"] += 1
                self.stats["posts"] += posts
                if self._store_failures:
                    self._events.append(StoreRecovered(self._store_failures))
                    self._store_failures = 0
            else:
                self._last_error, self._failed_at = error, now if now is not None else self._now
                self.stats["commit_failures"] += 1
                if not self._store_failures:
                    self._events.append(StoreFailed(error))
                self._store_failures += 1
            if handle in self._waiting:  # a join waits for it
                self._ready.append(handle)
            events = set(handle.events)
            numbers = handle.numbers
            for session, cseq, res, room in unstored:
                key = (room, res.seq)
                unsure = self._unsure.pop((session.token, cseq), None)
                if key in stored:
                    if key in numbers:  # the number the stream gave it
                        res = result_frame(cseq, res.code, numbers[key], res.reason, room)
                    self._resolve(session, cseq, res)
                elif key in dups:
                    self._resolve(session, cseq, result_frame(cseq, F.RES_OK, dups[key], "", room))
                elif res.seq and key not in events and _stored_before(log, room, res.seq):
                    self._resolve(session, cseq, res)  # a repeat of a post stored earlier
                elif key in handle.unknown or (unsure is not None and key in handle.unsent):
                    # sent, and maybe stored: neither acknowledged nor refused, sent again
                    self._send_again(session, cseq, res, room, handle.unknown.get(key) or unsure)
                    again = True
                else:
                    self.stats["refused_unstored"] += 1
                    why = error or "the cluster did not store it"
                    refused = result_frame(cseq, F.RES_REFUSED, 0, f"{NOT_STORED}: {why}", room)
                    self._resolve(session, cseq, refused)
            for name, seq, ev in presence:
                if (name, seq) in stored or (name, seq) in dups:
                    continue
                room = self.rooms.get(name)
                if room is not None:  # it happened all the same: numbered again, for the next commit
                    self._fed_event(room, ev, room.last_active)
                    again = True
        if again and now is not None:
            self._arm(now + self.timing.rto_min)

    # ------------------------------------------------------------------ the feed

    def _take_feed(self, now: float) -> None:
        """Events the followed rooms got (from any relay), into the rooms' rings in stream order."""
        log = self.log
        for name, seq, data in log.drain():
            room = self.rooms.get(name)
            if room is None:  # (being opened, its join waiting: it starts after this; or not ours)
                try:
                    ev = F.decode_ev(data)
                except F.FrameError:
                    continue
                log.observe(name, seq, ev)
                early = self._opening.get(name)
                if early is not None and ev.kind in _ROSTER and len(early) < MAX_EARLY:
                    early.append(ev)
                continue
            if seq <= room.seq:
                continue  # (had already)
            try:
                ev = F.decode_ev(data)
                item = room.encode(ev)
            except (F.FrameError, EventTooBig):
                self.stats["malformed"] += 1
                _skip_to(room, seq)  # (members read around it from the log, which refuses it too)
                continue
            log.observe(name, seq, ev)
            if seq > room.seq + 1:  # a gap (expired before we followed): members read it from the log
                _skip_to(room, seq - 1)
            room.push(item, now)
            if ev.kind == F.EV_TOPIC:
                room.topic = ev.text
            elif ev.kind in _ROSTER:
                _roster_event(self._roster.setdefault(name, {}), ev)
            self._dirty.add(name)
        if len(self._followed) != len(self.rooms) or not self._followed.issubset(self.rooms):
            for name in [n for n in self._followed if n not in self.rooms]:
                self._followed.discard(name)
                self._roster.pop(name, None)
                log.unfollow(name)

    def _cluster_poll(self, now: float) -> None:
        self._now = now
        self._settle_commits(now)
        self._take_feed(now)
        self._resume(now)
        if self.names is not None:
            self._announce_reaped(now)
            self._take_dms(now)

    def _announce_reaped(self, now: float) -> None:
        """Members of a relay that died, found by this relay (jetstream.ClusterNicks): the room
        hears that they timed out, as their relay would have said."""
        for name, nick in self.names.reaped():
            try:  # (read from a bucket: checked like anything else that becomes an event)
                name, nick = canonical_room(name), check_nick(nick)
                ev = F.Ev(kind=F.EV_TIMEOUT, nick=nick, text="", ts=self._ts(now))
                room = self.rooms.get(name)
                if room is not None:
                    room.encode(ev)
                    self._fed_event(room, ev, now)
                else:  # a room this relay does not serve: into the log all the same
                    self.log.append(name, ev)
                    self._dirty.add(name)
            except (InputError, StoreError, EventTooBig):
                continue

    def _member_joined(self, session: Session, room: Stream) -> None:
        if self.names is not None:
            self.names.joined(room.name, session.nick)

    def _member_left(self, session: Session, room: Stream, nick: str = "") -> None:
        if self.names is not None:
            self.names.left(room.name, nick or session.nick)

    def _cluster_refuses(self, now: float) -> str | None:
        """Why a join is refused at once: the last commit failed a moment ago (the cluster is not
        reachable, or did not answer in time). A join waits for its commit (parked): during an
        outage every join would wait its timeout, one after another. After a moment a join may
        try again (it is what finds out that the cluster is back when no one posts)."""
        if (
            self._follows
            and self._store_failures
            and now < self._failed_at + min(self.timing.timeout / 4, 2.0)
        ):
            return self._last_error
        return None

    def _follow_room(self, room: Stream) -> None:
        """A room this relay opens: follow it from the last event the cluster has (blocks, bounded:
        once per room opened; StoreError when the cluster cannot be reached). Nonblocking: Pending
        until the room is followed (the log answers at once from then on), then until its member
        list is read: after the feed's start, so that a member whose join came before it is in the
        bucket by then (a member's key is put once its join is stored)."""
        name = room.name
        if len(self._opening) >= 2 * MAX_PARKED:  # (joins that never came back: forgotten)
            self._opening.clear()
        self._opening.setdefault(name, [])
        try:
            last, _first, topic = self.log.follow(name)
            nicks: list[str] = []
            if self.names is not None:  # who is in it now, through any relay (the feed keeps it)
                nicks = self.names.members(name)
        except StoreError:
            self._opening.pop(name, None)
            raise
        self._followed.add(name)
        roster = self._roster[name] = {}
        for nick in nicks:
            try:  # (read from a bucket: checked like a Hello's nick)
                roster[nick_key(nick)] = F.MemberInfo(check_nick(nick), "")
            except InputError:
                continue
        # the bucket learns of a member only once its join is stored: the room's recent presence
        # events as the log read them, then those the feed brought while the room was being opened
        window = getattr(self.log, "presence_window", None)
        for ev in (window(name) if window is not None else []) + self._opening.pop(name, []):
            _roster_event(roster, ev)
        if last:
            room.start_at(last, topic)
        else:
            room.topic = topic

    def _elsewhere(self, room: Stream, session: Session) -> list[F.MemberInfo]:
        """The room's members on other relays, for a joiner's member list."""
        here = {nick_key(m.session.nick) for m in room.members.values()} | {nick_key(session.nick)}
        return [info for key, info in self._roster.get(room.name, {}).items() if key not in here]

    # ------------------------------------------------------------------ waiting for the cluster

    def _wait_for(self, who: Any, key: Any, what: tuple) -> bool:
        """Keep `what` (a request, a Login) until `key` completes; False: too many wait already."""
        waiting = self._waiting.get(key)
        if waiting is not None and who in waiting:  # (a retransmitted Login)
            waiting[who] = what
            return True
        if self._n_waiting >= MAX_PARKED:
            return False
        self._waiting.setdefault(key, {})[who] = what
        self._n_waiting += 1
        return True

    def _resume(self, now: float) -> None:
        """Do again what waited for round trips that completed (their answers are there now), in
        the order it came; a session gone meanwhile is skipped."""
        keys, self._ready = self._ready, []
        for part in (self.log, self.names):
            completed = getattr(part, "completed", None)
            if completed is not None:
                keys += completed()
        for key in keys:
            waiting = self._waiting.pop(key, None)
            if not waiting:
                continue
            self._n_waiting -= len(waiting)
            for who, what in waiting.items():
                if who[0] == "req":
                    session, req = what
                    if self._tokens.get(session.token) is not session or session.parked != req.cseq:
                        self._pages_waiting.pop((session.token, req.cseq), None)
                        continue
                    session.parked = 0
                    self._do(session, req, now)
                    self._do_pending(session, now)
                else:
                    pending, data = what
                    if self._pending.get(pending.addr) is pending:
                        self._from_pending(pending, data, now)

    def _join_committed(self, session: Session, req: F.Req, name: str, now: float) -> F.Frame:
        """A join whose event is committing: Pending until its commit is settled, then seated."""
        joining = session.joining
        assert joining is not None
        join_seq, handle = joining[name]
        if not handle.done() or any(c[0] is handle for c in self._commits):
            raise Pending(handle)
        del joining[name]
        room = self.rooms.get(name)
        if (name, join_seq) not in handle.stored:  # (refused; or its answer late: maybe stored later)
            if (name, join_seq) in handle.unknown and room is not None:  # then not a member there
                gone = F.Ev(kind=F.EV_LEAVE, nick=session.nick, text="", ts=self._ts(now))
                self._room_event(room, gone, now)
            why = handle.error or "the cluster did not store it"
            return result_frame(req.cseq, F.RES_REFUSED, 0, f"{NOT_STORED}: {why}", name)
        if room is None:  # (closed meanwhile: a join again opens it again)
            return result_frame(req.cseq, F.RES_REFUSED, 0, f"#{name} was closed meanwhile; join again", name)
        return self._seat(session, req, room, handle.numbers.get((name, join_seq), join_seq), now)

    def _send_again(self, session: Session, cseq: int, res: F.Result, name: str, ev: F.Ev | None) -> None:
        """A post sent to the cluster whose answer did not come in time may be stored yet (a late
        ack; nats-py sends what it buffered when it reconnects): refusing it could be wrong, and
        acknowledging it is wrong until it is known. It goes again in the next group, with its
        message id (JetStream's duplicate window answers with the number it has), until it is
        stored or the cluster refuses it; meanwhile its client's retransmissions wait (the request
        is deferred). While the cluster is known unreachable it is not sent, only kept. A session
        gone meanwhile, or too many such posts: kept no longer, never answered (its client sends
        it again, with its id, on its next session)."""
        if ev is None or self._tokens.get(session.token) is not session or len(self._unsure) >= MAX_UNSURE:
            return
        self._unsure[(session.token, cseq)] = ev
        self.stats["posts_sent_again"] += 1
        room = self.rooms.get(name)
        if room is not None:
            seq = self._fed_event(room, ev, self._now)
        else:
            seq = self.log.append(name, ev)
            self._dirty.add(name)
        self._unstored.append((session, cseq, result_frame(cseq, res.code, seq, res.reason, name), name))

    def _left_while_joining(self, session: Session, now: float, kind: int, reason: str) -> None:
        """A session that ends while its join is committing: the rooms hear that it left."""
        for name in session.joining or ():
            room = self.rooms.get(name)
            if room is not None:
                self._room_event(room, F.Ev(kind=kind, nick=session.nick, text=reason, ts=self._ts(now)), now)
        session.joining = None

    # ------------------------------------------------------------------ direct messages across relays

    def _direct_remote(self, session: Session, req: F.Req, now: float) -> F.Frame | None:
        """`_direct` (requests.py) for a nick not held here: sent to the relay holding it, if any.
        The Result waits (None: deferred) for that relay's answer, bounded by the time an inbox is
        kept for its owner's return."""
        label = "@" + req.room
        if len(self._remote_dms) >= MAX_REMOTE_DMS:
            return result_frame(req.cseq, F.RES_REFUSED, 0, "too many direct messages on their way", label)
        action = req.arg == 1
        kind_in, kind_out = (F.EV_DM_ACTION, F.EV_DM_ACTION_SENT) if action else (F.EV_DM, F.EV_DM_SENT)
        ts = self._ts(now)
        sig = req.sig if len(req.sig) == 64 else b""  # (the author's, as it came; with its key)
        ev = F.Ev(kind_in, session.nick, req.text, ts, req.mid, sig=sig, key=session.key or b"")
        echo = F.Ev(kind=kind_out, nick=req.room, text=req.text, ts=ts, mid=req.mid)
        self._dm_ids += 1
        give_up = now + self.config.inbox_keep + self.timing.timeout
        self._remote_dms[self._dm_ids] = (session, req.cseq, echo, label, give_up)
        self.names.send_dm(self._dm_ids, req.room, F.encode_ev(ev))
        return None

    def _take_dms(self, now: float) -> None:
        """Answers about the DMs we sent through the cluster, and DMs for our members."""
        for dm_id, ok, why in self.names.dm_outcomes():
            waiting = self._remote_dms.pop(dm_id, None)
            if waiting is None:
                continue
            session, cseq, echo, label, _ = waiting
            if not ok:
                self._resolve(session, cseq, result_frame(cseq, F.RES_REFUSED, 0, why, label))
                continue
            try:  # the recipient's nick as its relay spells it
                echo = F.Ev(echo.kind, check_nick(why), echo.text, echo.ts, echo.mid)
            except InputError:
                pass
            seq = session.inbox.append(echo, now)
            session.inbox.mids.add(echo.mid, seq)
            self._flush_inbox(session, now)
            self._resolve(session, cseq, result_frame(cseq, F.RES_OK, seq, "", "@" + echo.nick))
        while self._remote_dms:  # (all wait the same bound: the oldest first)
            dm_id = next(iter(self._remote_dms))
            session, cseq, echo, label, give_up = self._remote_dms[dm_id]
            if now < give_up:
                break
            del self._remote_dms[dm_id]
            why = f"no answer about its delivery to {echo.nick}: it may not have been delivered"
            self._resolve(session, cseq, result_frame(cseq, F.RES_REFUSED, 0, why, label))
        for origin, dm_id, to, data, kept in self.names.incoming_dms():
            self._deliver_remote(RemoteSender(self.names, origin, dm_id), to, data, now, kept)

    def _deliver_remote(
        self, sender: RemoteSender, to: str, data: bytes, now: float, kept: bool = False
    ) -> None:
        """A DM that came through the cluster into the inbox of our member `to` (checked like
        anything from the network); `sender` hears when it was acknowledged. `kept`: read back
        from the cluster for `to`, who failed over here (its relay died, or it lost it for a
        moment); if `to` is not here (yet), it is left where it is kept."""
        try:
            got = F.decode_ev(data)
            sig, key = got.sig, got.key
            if got.kind not in _DM_IN or got.body or len(sig) not in (0, 64) or len(key) not in (0, 32):
                return  # (not a DM as a relay makes one: no answer; the sender's relay gives up)
            check_text(got.text, MAX_TEXT_BYTES)
            # as this relay would have made it (its own time), the author's signature and key as they came
            ev = F.Ev(got.kind, check_nick(got.nick), got.text, self._ts(now), got.mid, sig=sig, key=key)
            target = self._nicks.get(nick_key(check_nick(to)))
        except (F.FrameError, InputError):
            return
        if target is None:
            if kept:
                return
            sender.answer(result_frame(0, F.RES_REFUSED, 0, f"no one called {to} is here", "@" + to))
            return
        done = result_frame(0, F.RES_OK, 0, "", "@" + target.nick)
        key = (nick_key(ev.nick), ev.mid)
        seen = target.dm_in.get(key) if ev.mid else None
        if seen is not None and seen >= target.inbox.first:  # a resend (its sender failed over)
            if seen <= target.inbox_member.acked:
                sender.answer(done)
            else:
                target.dm_waiters[seen] = (sender, 0, done)
            return
        at = target.inbox.append(ev, now)
        if ev.mid:
            target.dm_in[key] = at
            while len(target.dm_in) > MAX_REMOTE_DMS:
                target.dm_in.popitem(last=False)
        target.dm_waiters[at] = (sender, 0, done)
        self._overflowed(target)
        self._flush_inbox(target, now)

    # ------------------------------------------------------------------ nicks across relays

    def _claim_shared_nick(self, session: Session, nick: str, resume: int = 0) -> str | None:
        """None when `nick` may be `session`'s across the cluster, else why not (one line); an
        `Unchecked` reason when the cluster could not be asked (it passes: try again)."""
        if self.names is None:
            return None
        try:
            if self.names.claim(nick, session.token, resume, session.key or b""):
                return None
        except StoreError as exc:
            return Unchecked(f"the relay cannot check nicks with its cluster: {exc}")
        return f"nick {nick} is in use on another relay"

    def _release_shared_nick(self, session: Session, nick: str) -> None:
        if self.names is not None:
            self.names.release(nick, session.token)


class Unchecked(str):
    """Why a nick was refused when the cluster could not be asked (slow, or not reachable): a Login
    refused so is told to try again (`retry_ms`), not refused for good: when a relay dies, its
    members all fail over at once, and under that load a claim can time out."""

    def retry_ms(self, token: int) -> int:
        """1 to 2 s, spread by the session's token (the members of a dead relay come at once)."""
        return 1000 + token % 1000


#: direct messages sent through the cluster and not answered yet (per relay), and remembered per
#: recipient (for resends)
MAX_REMOTE_DMS = 4096
#: posts without an answer from the cluster, sent again until one comes (per relay)
MAX_UNSURE = 4096
#: presence events kept per room while it is being opened
MAX_EARLY = 4096

_ROSTER = (F.EV_JOIN, F.EV_LEAVE, F.EV_TIMEOUT, F.EV_NICK, F.EV_AWAY)


def _roster_event(roster: dict[str, F.MemberInfo], ev: F.Ev) -> None:
    """Who is in a room, after one of its events."""
    key = nick_key(ev.nick)
    if ev.kind == F.EV_JOIN:
        roster[key] = F.MemberInfo(ev.nick, "")
    elif ev.kind in (F.EV_LEAVE, F.EV_TIMEOUT):
        roster.pop(key, None)
    elif ev.kind == F.EV_NICK:
        old = roster.pop(key, None)
        roster[nick_key(ev.text)] = F.MemberInfo(ev.text, old.away if old is not None else "")
    elif key in roster:  # away
        roster[key] = F.MemberInfo(ev.nick, ev.text)


def _stored_before(log: Any, room: str, seq: int) -> bool:
    try:
        return seq <= log.last_seq(room)
    except StoreError:
        return False


def _skip_to(room: Stream, last: int) -> None:
    """The room's ring starts over after `last` (what came before is read from the log)."""
    room.ring.clear()
    room.times.clear()
    room.bytes = 0
    room.seq = last
    room.first = last + 1


def _failed(error: str) -> Any:
    from ..roomlog import Commit

    handle = Commit([])
    handle.finish(error=error)
    return handle
