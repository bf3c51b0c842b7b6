"""Requests from sessions: in order per session, at most once (results are remembered;
a repeated request gets the stored answer, a too old one a stale Result), rate limited; what
each operation does (post, join, part, nick, away, topic, names, direct messages; moderation is
moderation.py's).
"""

from __future__ import annotations

from .. import frames as F
from ..names import (
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
from ..roomlog import Pending, StoreError
from .state import (
    DGRAM_HEAD,
    MAX_PENDING_REQUESTS,
    MAX_RESULTS_KEPT,
    NOT_STORED,
    REPAIR_SPAN,
    TOO_MANY_WAITING,
    EventTooBig,
    Member,
    Session,
    Stream,
    result_frame,
)

#: the record (RoomLog.record) holding a room's topic with its setter's key and signature
TOPIC_RECORD = "topic/"


class Requests:
    """A part of `Relay` (core.py): these methods work on the relay's state."""

    def _on_req(self, session: Session, req: F.Req, now: float) -> None:
        if req.cseq < session.next_cseq:
            if req.cseq in session.deferred:
                return  # a direct message still on its way: the answer comes when it arrives
            res = session.results.get(req.cseq)
            if type(res) is F.Req:  # a history page: served again (rate limited, under the budget)
                try:
                    res = self._page(session, res, now)
                except Pending:
                    return  # (being read: the next retransmission takes it)
                if type(res) is F.Req:
                    return
                self._store_result(session, req.cseq, res)
            if res is None:
                res = self._stale(session, req)
            self._answer(session, res, now)
            return
        if req.cseq > session.next_cseq or session.parked:
            # (the one waiting for the cluster is answered once it is done: not twice)
            if req.cseq != session.parked and len(session.pending) < MAX_PENDING_REQUESTS:
                session.pending[req.cseq] = req
            return
        if not self._request_allowed(session, now):
            return  # the client will retransmit: natural backpressure
        self._do(session, req, now)
        self._do_pending(session, now)

    def _do_pending(self, session: Session, now: float) -> None:
        """The requests that came early, in order, while the rate allows and none waits."""
        while session.next_cseq in session.pending and not session.parked:
            nxt = session.pending.pop(session.next_cseq)
            if not self._request_allowed(session, now):
                session.pending[nxt.cseq] = nxt
                break
            self._do(session, nxt, now)

    def _request_allowed(self, session: Session, now: float) -> bool:
        """A token from the session's bucket (`RelayConfig.request_rate`) and from its address's,
        shared by every session from there (`requests_per_address`); a request refused is dropped
        and counted, and its client sends it again."""
        if not session.bucket.take(now):
            self.stats["rate_limited"] += 1
            return False
        if self.config.requests_per_address > 0 and not self._request_limit.take(session.source, now):
            self.stats["requests_limited_address"] += 1
            return False
        return True

    def _post_refused(
        self, session: Session, now: float, events: int = 1, what: str = "messages"
    ) -> str | None:
        """Why a new post from this session is refused by the per-key rate (None: it is not).
        The bucket is its identity key's, as proven in the handshake, so reconnecting, another
        address or another nick does not refill it (`RelayConfig.posts_per_key`); keys cost
        nothing to make, so its address's bucket, shared by all its sessions, has a say too
        (`posts_per_address`). Other room events a member makes (a nick change, an away text, a
        topic: `what`) are stored and sent to every member as posts are, and take a token for
        each of the `events` they make (a nick change: one in each of the member's rooms)."""
        cfg = self.config
        if events <= 0:  # (a change shown in no room: in none of the member's)
            return None
        if cfg.posts_per_key > 0 and not self._post_limit.take(session.key or session.addr, now, events):
            self.stats["posts_refused_rate"] += 1
            return f"too many {what} from your key (at most {cfg.posts_per_key:g} a second); wait a moment"
        if cfg.posts_per_address > 0 and not self._source_post_limit.take(session.source, now, events):
            self.stats["posts_refused_address"] += 1
            return (
                f"too many {what} from your address (at most {cfg.posts_per_address:g} a second); "
                "wait a moment"
            )
        return None

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
        except Pending as wait:  # the cluster's answer is on its way: done again when it is here
            if self._wait_for(("req", session.token), wait.key, (session, req)):
                session.next_cseq, session.parked = req.cseq, req.cseq
                return
            res = result_frame(req.cseq, F.RES_REFUSED, 0, TOO_MANY_WAITING, req.room)
        except (InputError, EventTooBig, StoreError) as exc:  # (the last two: bugs, refused cleanly)
            res = result_frame(req.cseq, F.RES_REFUSED, 0, str(exc), req.room)
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
        if self._follows:
            return self._fed_event(room, ev, now)
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
                return result_frame(cseq, F.RES_REFUSED, 0, f"you are not in #{req.room}", req.room)
            seen = self._seq_of_mid(room, req.mid)
            if seen is not None:  # (answered after the next commit all the same: it may be pending)
                return self._after_commit(session, result_frame(cseq, F.RES_OK, seen, "", req.room))
            forbids = self._forbids(session, room, "m") or self._post_refused(session, now)
            if forbids is not None:
                return result_frame(cseq, F.RES_REFUSED, 0, forbids, req.room)
            sealed = self._sealed_only(room, req)  # a passphrase room: the body, sealed end to end
            check_text(req.text, MAX_TEXT_BYTES)
            kind = F.EV_MSG if op == F.OP_POST else F.EV_ACTION
            body = req.body if sealed else b""
            # (the author's signature travels as it came: receivers verify it, the relay does
            # not: docs/security.md, "Message signatures"; a signature is 64 bytes or none)
            sig = req.sig if len(req.sig) == 64 else b""
            key = session.key or b""  # (the author's key as proven in its handshake: what receivers check)
            ev = F.Ev(kind, session.nick, req.text, self._ts(now), req.mid, body=body, sig=sig, key=key)
            seq = self._room_event(room, ev, now)
            self._posts_pending += 1  # served (stats["posts"]) once its commit succeeds
            return self._after_commit(session, result_frame(cseq, F.RES_OK, seq, "", req.room))
        if op == F.OP_JOIN or op == F.OP_HISTORY:
            door = self._vault_door(session, req, now)  # a passphrase room: the verifier first
            if door is not None:
                return door
        if op == F.OP_JOIN:
            return self._join(session, req, now)
        if op == F.OP_NAMES:
            return self._names(session, req, now)
        if op == F.OP_PART:
            room = session.rooms.get(req.room)
            if room is None:
                return result_frame(cseq, F.RES_OK, 0, "", req.room)
            self._leave(session, room, now, F.EV_LEAVE, clip_utf8(req.text, MAX_REASON_BYTES))
            return result_frame(cseq, F.RES_OK, room.seq, "", req.room)
        if op == F.OP_NICK:
            new = check_nick(req.text)
            if new == session.nick:
                return result_frame(cseq, F.RES_OK, 0, "", "")
            refused = self._post_refused(session, now, len(session.rooms), "nick changes")
            if refused is not None:  # (first: a refusal changes nothing)
                return result_frame(cseq, F.RES_REFUSED, 0, refused, "")
            refused = self._claim_nick(new, session.key, session, now)  # (moderation.py)
            if refused is not None:
                return result_frame(cseq, F.RES_REFUSED, 0, refused, "")
            holder = self._nick_holder(new, session)
            if holder is not None:
                return result_frame(cseq, F.RES_REFUSED, 0, self._in_use(new, holder), "")
            refused = self._claim_shared_nick(session, new)
            if refused is not None:  # (a nick change is refused either way: the member asks again)
                return result_frame(cseq, F.RES_REFUSED, 0, str(refused), "")
            old = session.nick
            if self._release_nick(session, old):
                self._release_shared_nick(session, old)
            self._hold_nick(session, new)
            session.nick = new
            for room in session.rooms.values():
                self._member_left(session, room, old)
                self._member_joined(session, room)
                self._room_event(room, F.Ev(kind=F.EV_NICK, nick=old, text=new, ts=self._ts(now)), now)
            return result_frame(cseq, F.RES_OK, 0, "", "")
        if op == F.OP_TOPIC:
            room = session.rooms.get(req.room)
            if room is None:
                return result_frame(cseq, F.RES_REFUSED, 0, f"you are not in #{req.room}", req.room)
            forbids = self._forbids(session, room, "t")
            if forbids is not None:
                return result_frame(cseq, F.RES_REFUSED, 0, forbids, req.room)
            check_text(req.text, MAX_TOPIC_BYTES, "topic")
            refused = self._post_refused(session, now, 1, "topics")  # (before anything changes)
            if refused is not None:
                return result_frame(cseq, F.RES_REFUSED, 0, refused, req.room)
            sealed = self._sealed_only(room, req, topic=True)
            topic = self._sealed_topic(req) if sealed else req.text
            body = req.body if sealed else b""
            sig = req.sig if len(req.sig) == 64 else b""  # (the setter's, as it came)
            # first (a cluster may raise Pending: then nothing has changed yet)
            self._keep_topic_signature(room, (topic, session.key or b"", sig))
            room.topic_signed = (topic, session.key or b"", sig)
            if sealed or not self._follows:  # (in a cluster: when the feed brings the topic event)
                room.topic = topic
            self.log.set_topic(room.name, topic)
            ev = F.Ev(
                kind=F.EV_TOPIC,
                nick=session.nick,
                text=req.text,
                ts=self._ts(now),
                body=body,
                sig=sig,
                key=session.key or b"",
            )
            seq = self._room_event(room, ev, now)
            return self._after_commit(session, result_frame(cseq, F.RES_OK, seq, "", req.room))
        if op == F.OP_AWAY:
            check_text(req.text, MAX_AWAY_BYTES, "away message")
            if req.text == session.away:  # nothing changes: nothing to tell the rooms
                return result_frame(cseq, F.RES_OK, 0, "", "")
            refused = self._post_refused(session, now, len(session.rooms), "away changes")
            if refused is not None:
                return result_frame(cseq, F.RES_REFUSED, 0, refused, "")
            session.away = req.text
            for room in session.rooms.values():
                self._room_event(
                    room, F.Ev(kind=F.EV_AWAY, nick=session.nick, text=req.text, ts=self._ts(now)), now
                )
            return result_frame(cseq, F.RES_OK, 0, "", "")
        if op == F.OP_DIRECT:
            return self._direct(session, req, now)
        if op == F.OP_HISTORY:
            return self._page(session, req, now)
        if op in F.MODERATION_OPS:
            return self._moderate(session, req, now)  # (moderation.py)
        if op == F.OP_MKPRIVATE:
            return self._mkprivate(session, req, now)
        if op == F.OP_PASSPHRASE:
            return self._rekey_vault(session, req, now)
        if op == F.OP_KEYSHARE:
            return self._keyshare(session, req, now)
        return result_frame(cseq, F.RES_REFUSED, 0, f"unknown request {op}", req.room)

    def _join(self, session: Session, req: F.Req, now: float) -> F.Frame:
        cseq = req.cseq
        name = canonical_room(req.room)
        room = session.rooms.get(name)
        if room is not None:  # already in: answer with a fresh snapshot
            m = room.members[session.addr]
            return self._answer(session, self._joined(cseq, room, session, m, 0), now)
        if session.joining and name in session.joining:  # (a cluster: its join event is committing)
            return self._join_committed(session, req, name, now)
        refused = self._rooms_full(session)
        if refused is not None:
            return result_frame(cseq, F.RES_REFUSED, 0, refused, name)
        refused = self._admit(session, name, name not in self.rooms and not self.log.last_seq(name))
        if refused is not None:  # (moderation.py: bans, +i, rooms per key)
            return result_frame(cseq, F.RES_REFUSED, 0, refused, name)
        # Members get everything up to now first (stored first), then the joiner is added with its
        # backfill; nothing is pending from here on, so a room made afresh continues the log.
        self._commit()
        down = self._cluster_refuses(now)  # (a cluster that failed a moment ago: cluster.py)
        if down is not None:
            return result_frame(cseq, F.RES_REFUSED, 0, f"{NOT_STORED}: {down}", name)
        room = self.rooms.get(name)
        if room is None:
            fresh = self._new_room(name)  # (a cluster: Pending until the room is read, before any change)
            if len(self.rooms) >= self.config.max_rooms:
                # Empty rooms keep their history until room space is needed.
                empty = next((k for k, r in self.rooms.items() if not r.members), None)
                if empty is None:
                    return result_frame(cseq, F.RES_REFUSED, 0, "the relay has too many rooms", name)
                del self.rooms[empty]
            room = self.rooms[name] = fresh
        if len(room.members) >= self.config.max_members_per_room:
            return result_frame(cseq, F.RES_REFUSED, 0, f"#{name} is full", name)
        # The join itself is stored before it is answered: its number is then final.
        self._flush_room(room, now)
        self._dirty.discard(name)
        join_seq = self._room_event(
            room,
            F.Ev(
                kind=F.EV_JOIN,
                nick=session.nick,
                text=self._mode_of(name, session),
                ts=self._ts(now),
                key=session.key or b"",
            ),
            now,
        )
        if self._follows and getattr(self.log, "nonblocking", False):  # the loop does not wait for it
            self._commit()
            if session.joining is None:
                session.joining = {}
            session.joining[name] = (join_seq, self._commits[-1][0])
            return self._join_committed(session, req, name, now)
        failed = self._commit(wait=True)
        if failed is not None:
            return result_frame(cseq, F.RES_REFUSED, 0, f"{NOT_STORED}: {failed}", name)
        if self._follows:  # (in a cluster the stream numbered it)
            join_seq = self._numbers.get((name, join_seq), join_seq)
        return self._seat(session, req, room, join_seq, now)

    def _seat(self, session: Session, req: F.Req, room: Stream, join_seq: int, now: float) -> F.Frame:
        """The joiner becomes a member, its join stored as `join_seq`: the key, the answer, the backfill."""
        cseq, name = req.cseq, room.name
        first = self._first(room)
        base = max(first, join_seq - self.config.history)
        if req.arg > 0:  # a member coming back: resume where it left off, if the log has it
            base = max(first, min(req.arg, join_seq))
        m = Member(session, room, base, join_seq)
        m.snapshot = self._snapshot(room, session)
        room.members[session.addr] = m
        room.fanout = None
        session.rooms[name] = room
        self._member_joined(session, room)  # (a cluster's presence: cluster.py)
        # the room's key before anything sealed under it (the backfill below, the next batch)
        self._send_now(session, [self._room_key(room)])
        # The answer first (it costs more than the request: under the repair budget), then the
        # backfill: history before our join goes to us alone (the join itself is broadcast), as
        # repair under the same budget; what does not fit now, probes send later.
        joined = self._answer(session, self._joined(cseq, room, session, m, 0), now)
        if base < join_seq:
            # (in a cluster the ring may not have caught up with the join yet: the feed brings the rest)
            self._resend(room, m, list(range(base, min(join_seq, base + REPAIR_SPAN, room.seq + 1))), now)
        # Karn: acks of the backfill say nothing about the RTT (those events are old)
        m.last_retx = join_seq - 1
        self._set_probe(m, now + session.rtt.rto)
        return joined

    def _snapshot(self, room: Stream, session: Session) -> list[F.MemberInfo]:
        """The member list as a joiner gets it: the others sorted, then itself (in a cluster, the
        members on other relays too: cluster.py)."""

        def info(s: Session) -> F.MemberInfo:
            return F.MemberInfo(s.nick, s.away, s.key or b"", self._mode_of(room.name, s))

        others = [info(o.session) for o in room.members.values() if o.session is not session]
        if self._follows:
            others += self._elsewhere(room, session)
        snap = sorted(others, key=lambda i: i.nick.lower())
        snap.append(info(session))
        return snap

    def _topic_signature(self, room: Stream) -> dict[str, bytes]:
        """The current topic's setter key and signature for a Joined, if known: set here, or kept
        in the log's records (set before a restart, or through another relay of a cluster)."""
        topic, key, sig = room.topic_signed
        if topic != room.topic:
            kept = self._kept_topic_signature(room.name)
            if kept is not None and kept[0] == room.topic:
                room.topic_signed = kept
                topic, key, sig = kept
        if topic != room.topic or not topic or not key or not sig:
            return {}
        return {"topic_key": key, "topic_sig": sig}

    def _keep_topic_signature(self, room: Stream, signed: tuple[str, bytes, bytes]) -> None:
        """The topic's signature with the relay's data (a record: key, signature, then the topic),
        so joiners after a restart, or at another relay of a cluster, can still check the topic.
        Not kept (a full disk, the cluster away): joiners are shown it unchecked, as before."""
        topic, key, sig = signed
        value = (
            key + sig + topic.encode("utf-8", "surrogatepass") if len(key) == 32 and len(sig) == 64 else None
        )
        try:
            self.log.put_record(TOPIC_RECORD + room.name, value)
        except StoreError:
            self.stats["topic_signature_not_kept"] += 1

    def _kept_topic_signature(self, name: str) -> tuple[str, bytes, bytes] | None:
        try:
            value = self.log.record(TOPIC_RECORD + name)
        except StoreError:
            return None
        if value is None or len(value) < 96:
            return None
        try:
            topic = value[96:].decode("utf-8")
        except UnicodeDecodeError:
            return None
        return topic, value[:32], value[32:96]

    def _rooms_full(self, session: Session) -> str | None:
        """Why `session` may join no more rooms (None: it may)."""
        if len(session.rooms) >= self.config.max_rooms_per_session:
            return f"you are in {len(session.rooms)} rooms already"
        return None

    def _joined(self, cseq: int, room: Stream, session: Session, m: Member, offset: int) -> F.Joined:
        if not m.snapshot:  # freed once the member acked its join: build a fresh one
            m.snapshot = self._snapshot(room, session)
        snap = m.snapshot
        offset = max(0, min(offset, len(snap)))
        # the frame without members, measured, plus each member's exact encoded size
        fields = {
            "cseq": cseq,
            "room": room.name,
            "nick": session.nick,
            "base": m.base,
            "join_seq": m.join_seq,
            "topic": room.topic,
            "offset": offset,
            **self._topic_signature(room),
            "total": len(snap),
        }
        empty = F.Joined(members=[], **fields)
        size = F.size_of(empty) + 3  # the members array header can grow to 3 bytes
        chunk: list[F.MemberInfo] = []
        for info in snap[offset:]:
            n = F.size_of(info)
            if chunk and size + n > F.MAX_DATAGRAM - DGRAM_HEAD - 3:
                break
            chunk.append(info)
            size += n
        return F.Joined(members=chunk, **fields)

    def _names(self, session: Session, req: F.Req, now: float) -> F.Frame:
        room = session.rooms.get(req.room)
        if room is None:
            return result_frame(req.cseq, F.RES_REFUSED, 0, f"you are not in #{req.room}", req.room)
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
                return result_frame(req.cseq, F.RES_OK, seen, "", label)
        refused = self._post_refused(session, now)
        if refused is not None:
            return result_frame(req.cseq, F.RES_REFUSED, 0, refused, label)
        target = self._nicks.get(nick_key(req.room))
        if target is None:
            if self.names is not None:  # held through another relay, maybe (cluster.py)
                return self._direct_remote(session, req, now)
            return result_frame(req.cseq, F.RES_REFUSED, 0, f"no one called {req.room} is here", label)
        label = "@" + target.nick
        ts = self._ts(now)
        kind_in, kind_out = (F.EV_DM_ACTION, F.EV_DM_ACTION_SENT) if action else (F.EV_DM, F.EV_DM_SENT)
        seq = session.inbox.append(
            F.Ev(kind=kind_out, nick=target.nick, text=req.text, ts=ts, mid=req.mid), now
        )
        session.inbox.mids.add(req.mid, seq)
        self._flush_inbox(session, now)
        done = result_frame(req.cseq, F.RES_OK, seq, "", label)
        if target is session:
            return done
        inbox = target.inbox
        sig = req.sig if len(req.sig) == 64 else b""  # (the author's, as it came; with its key)
        ev = F.Ev(kind_in, session.nick, req.text, ts, req.mid, sig=sig, key=session.key or b"")
        at = inbox.append(ev, now)
        target.dm_waiters[at] = (session, req.cseq, done)
        self._overflowed(target)
        self._flush_inbox(target, now)
        return None

    def _leave(self, session: Session, room: Stream, now: float, kind: int, reason: str) -> None:
        if self._unseat(session, room):
            self._departed(room, now)
        self._room_event(room, F.Ev(kind=kind, nick=session.nick, text=reason, ts=self._ts(now)), now)

    def _unseat(self, session: Session, room: Stream) -> bool:
        """The session is no longer a member of the room (False: it was not one)."""
        session.rooms.pop(room.name, None)
        self._member_left(session, room)  # (a cluster's presence: cluster.py)
        m = room.members.pop(session.addr, None)
        if m is None:
            return False
        self._probes.cancel(m)
        room.fanout = None
        return True
