"""The room log behind the relay's rooms (protocol/roomlog.py): numbers come from it, nothing is
acknowledged or broadcast before it stored it (group commit, once per flush), a failed commit is
taken back (posts and topics refused, presence numbered again), backfill and repair read it for
what the ring no longer has, retention moves a room's first sequence, and paging back (OP_HISTORY)
answers from it.
"""

from __future__ import annotations

from .. import frames as F
from ..names import canonical_room
from ..roomlog import Pending, StoreError
from .state import (
    MAX_PAGE,
    NOT_STORED,
    PRESENCE,
    SESSION_HEAD,
    Session,
    StoreFailed,
    StoreRecovered,
    Stream,
    result_frame,
)


def page_room(cseq: int, room: str, before: int) -> int:
    """Bytes of events one datagram of a history page carries: a History frame alone in a datagram
    sealed under the session (`SESSION_HEAD`), less the frame's own fields (its numbers at most
    `before`). The largest post, signed and keyed, must fit it (tests/protocol/test_limits.py)."""
    return F.MAX_DATAGRAM - SESSION_HEAD - F.size_of(F.History(cseq, room, before, before, before))


class Storage:
    """A part of `Relay` (core.py): these methods work on the relay's state."""

    def _commit(self, wait: bool = False) -> str | None:
        """Make the pending group durable; then (only then) the posts waiting on it are answered.
        Returns None, or the log's one-line reason when the commit failed (the group is taken
        back: its posts are refused, its presence events appended again). On a log that follows
        its rooms (a cluster) the commit completes later, unless `wait` (cluster.py)."""
        if self._follows:
            return self._commit_follow(wait)
        log = self.log
        try:
            log.commit()
        except StoreError as exc:
            reason = str(exc)
            self._posts_pending = 0  # refused, not served
            log.rollback()
            self.stats["commit_failures"] += 1
            if not self._store_failures:
                self._events.append(StoreFailed(reason))
            self._store_failures += 1
            self._rewind(reason)
            return reason
        if self._store_failures:
            self._events.append(StoreRecovered(self._store_failures))
            self._store_failures = 0
        self.stats["commits"] += 1
        self.stats["posts"] += self._posts_pending
        self._posts_pending = 0
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
                self._resolve(
                    session, cseq, result_frame(cseq, F.RES_REFUSED, 0, f"{NOT_STORED}: {reason}", room)
                )
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
                if ev.kind in PRESENCE:  # it happened all the same: numbered again, kept for next time
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
                except (StoreError, Pending):  # (Pending: being read; the next probe takes it)
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
        if self._follows:
            self._follow_room(room)
            return room
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
        so no membership is needed (but a banned key, or one not invited to a +i room, is
        refused). The answer costs more than the request: it is rate limited per session and
        sent under its repair budget, newest events first, so a budget that cannot pay for the
        whole page answers a shorter one (the client pages on from its `lo`).
        When nothing can be sent now, the request itself is stored as the answer: its
        retransmission is served again."""
        cseq = req.cseq
        name = canonical_room(req.room)
        kept_out = self._admit(session, name, False)  # (moderation.py: banned, or not invited)
        if kept_out is not None:
            return result_frame(cseq, F.RES_REFUSED, 0, kept_out, name)
        if not session.pages.take(now):
            self.stats["rate_limited"] += 1
            return req
        log = self.log
        limit = MAX_PAGE if req.n <= 0 else min(req.n, MAX_PAGE)
        # (a page that waited for the cluster reads the range it asked for first: the newest events
        # of a busy room would otherwise move on, round trip after round trip)
        pinned = self._pages_waiting.pop((session.token, cseq), None)
        try:
            last = log.last_seq(name)
            before = pinned or (last + 1 if req.arg <= 0 else min(req.arg, last + 1))
            try:
                rows = log.before(name, before, limit)
            except Pending:
                self._pages_waiting[(session.token, cseq)] = before
                raise
            first = log.first_seq(name)
        except StoreError as exc:
            return result_frame(cseq, F.RES_REFUSED, 0, f"the relay could not read the history: {exc}", name)
        # newest first: datagrams of consecutive events, each a History frame
        room_left = page_room(cseq, name, before)
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
            data = self._seal(session, F.datagram([F.encode_item(frame)]))
            session.repair.take(len(data), now, self._rtt_of(session))
            self._emit(data, session.addr)
        if not chunks:
            self._queue(session, F.History(cseq, name, lo, hi, lo, [], complete))
        return req
