"""Sending rooms and inboxes to their members, and repairing what they miss.

New events are encoded and sealed once per batch (the room's key) and every member gets the same
blob behind its own tag (`_flush_room`). Each member is a `SendWindow` (reliability.py): acks and
SACKs move it, NACKs and probes (one room timer, then per-member timers off the `Deadlines` heap)
resend what it lacks, within its session's `RepairBudget`.
"""

from __future__ import annotations

from .. import frames as F
from ..crypto import RoomKey
from .state import (
    DGRAM_HEAD,
    REPAIR_SPAN,
    Member,
    Session,
    Stream,
)


class Fanout:
    """A part of `Relay` (core.py): these methods work on the relay's state."""

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

    def _probe(self, stream: Stream, m: Member, now: float) -> None:
        """The member's ack lags: resend from its ack point (skipping what it SACKed)."""
        m.probe(now, m.session.rtt)
        self._set_probe(m, m.probe_at)
        if stream.key is not None:  # (its RoomKey may be what was lost: it could open nothing)
            self._send_now(m.session, [self._room_key(stream)])
        first = self._first(stream)
        if m.acked + 1 < first:  # said again on every probe until the member acks past it
            self._queue(m.session, F.Gone(stream.name, first))
        # (the log may hold far more than a ring did: one probe looks at most REPAIR_SPAN ahead)
        seqs = m.unacked(min(stream.flushed, max(m.acked + 1, first) + REPAIR_SPAN - 1), first)
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
        room = stream if stream.key is not None else None
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
                payload = F.datagram([item])
                if not self._repair_ok(session, len(payload) + DGRAM_HEAD, now):
                    return
                if room is None:
                    self._emit(self._seal(session, payload), addr)
                else:  # re-sealed under the room's current key
                    self._emit(session.channel.seal_room(*self._seal_batch(room, payload)), addr)
                st["retransmitted"] += count
                m.resent(first + count - 1)

    def _flush_room(self, room: Stream, now: float) -> None:
        """Broadcast events not yet sent: each batch is encoded once and every member gets the same
        blob (sealed once under the room's key) behind its own tag. Only what the log has stored
        leaves."""
        if room.rekey_at is not None and now >= room.rekey_at:
            self._rekey(room, now)
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
            fan = room.fanout = [(m.base, m.session.channel, m.session.addr) for m in members]
        seal = self._seal_batch
        for first, _count, item in room.batches(lo, hi, self._older(room) if lo < room.first else None):
            # sealed once for the room; each member gets the same blob behind its own tag
            blob, digest = seal(room, F.datagram([item]))
            n = len(out)
            out.extend([(ch.seal_room(blob, digest), addr) for base, ch, addr in fan if base <= first])
            if out:
                st["bytes_out"] += (len(out) - n) * len(out[-1][0])
        # One timer for the room, not one per member: when it fires, the members that have not
        # acked by then get timers of their own (most will have acked: a tick costs what is due),
        # due an RTO after the first event they lack was sent (`Stream.times`).
        self._probes.schedule(room, now + self.timing.rto_min)

    def _rekey(self, room: Stream, now: float) -> None:
        """A new room key after departures (docs/security.md, "Rotation"): made, and sent to each
        remaining member over its session before the next batch sealed under it. At most once per
        `rekey_every`: leaves within it share one rotation (`_departed`)."""
        room.rekey_at = None
        self._rekey_due.discard(room)
        room.key = RoomKey.generate()
        room.rekeyed = now
        self.stats["rekeys"] += 1
        for m in room.members.values():
            self._send_now(m.session, [self._room_key(room)])

    @staticmethod
    def _room_key(room: Stream) -> F.RoomKey:
        return F.RoomKey(room.name, room.key.kid, room.key.key)

    def _departed(self, room: Stream, now: float) -> None:
        """A member left the room: its key changes for those who stay (at the next flush, or once
        `rekey_every` has passed since the last change)."""
        if room.rekey_at is None:
            room.rekey_at = max(now, room.rekeyed + self.config.rekey_every)
            self._rekey_due.add(room)
            self._arm(room.rekey_at)

    def _flush_inbox(self, session: Session, now: float) -> None:
        inbox = session.inbox
        lo, hi = inbox.flushed + 1, inbox.seq
        if lo > hi:
            return
        inbox.flushed = hi
        for _first, _count, item in inbox.batches(lo, hi):
            self._emit(self._seal(session, F.datagram([item])), session.addr)
        self._set_probe(session.inbox_member, now + session.rtt.rto)
