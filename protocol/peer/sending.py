"""Our own messages: numbered per stream, one `SendWindow` (reliability.py) per receiver,
resent on NACKs and probes under the link's `RepairBudget`; `PostAcknowledged` once every receiver
acked, `PostFailed` after `timing.give_up`.
"""

from __future__ import annotations

from .. import events as E
from .. import frames as F
from ..crypto import sign_message
from .state import (
    LC_STEP,
    MAX_KEPT,
    Link,
    LinkRoom,
    OutStream,
    OwnMsg,
    random_id,
)


class Sending:
    """A part of `PeerNode` (node.py): these methods work on the node's state."""

    def _send_msg(
        self, out: OutStream, app_room: str, targets: list[Link], kind: int, text: str, now: float
    ) -> int:
        self._tick()
        out.seq += 1
        lanes = [
            lr for link in targets if (lr := link.rooms.get(out.name)) is not None and lr.target is not None
        ]
        lc = min(self.lc, min((lr.said_lc for lr in lanes), default=self.lc) + LC_STEP)  # (said_lc: state.py)
        for lr in lanes:
            lr.said_lc = max(lr.said_lc, lc)
        mid = random_id()
        ts = self._ts(now)
        # signed by us; live, the link says who it is from (no nick, no key on the wire)
        sig = sign_message(self.identity, out.name, kind, mid, ts, text.encode())
        frame = F.PeerMsg(
            room=out.name, seq=out.seq, lc=lc, kind=kind, nick="", text=text, ts=ts, mid=mid, sig=sig
        )
        local_id = self._next_local
        self._next_local += 1
        waiting = set()
        for link in targets:
            lr = link.rooms.get(out.name)
            if lr is None or lr.target is None:
                continue
            waiting.add(link.node)
            tg = lr.target
            if tg.acked >= out.seq - 1:  # was caught up: this starts its retransmission clock
                tg.probe_at = now + link.rtt.rto
                tg.attempts = 0
            link.out.append(frame)
        msg = OwnMsg(frame, local_id, now, waiting, app_room)
        out.msgs[out.seq] = msg
        self._seen.add(mid)
        if out.name:  # as history for others, it names its author and key
            self.rooms[out.name].history.append(self._as_history(frame, self.nick, self.identity.public))
        if not waiting:
            msg.done = True
            self._events.append(self._acknowledged(msg))
        return local_id

    def _unwait(self, out: OutStream, node: int, now: float) -> None:
        for m in out.msgs.values():
            if not m.done and node in m.waiting:
                self._acked_by(m, node)

    def _acked_by(self, m: OwnMsg, node: int) -> None:
        m.waiting.discard(node)
        if not m.waiting and not m.done:
            m.done = True
            self._failed.pop(m.local_id, None)
            self._events.append(self._acknowledged(m))

    def _acknowledged(self, m: OwnMsg) -> E.PostAcknowledged:
        """Our post, acknowledged: its Lamport stamp, and for a room's message what we signed (the
        app logs it, and serves it again to peers as we signed it)."""
        frame = m.frame
        signed = None
        if frame.room:  # (a DM is not served as history)
            signed = E.Signed(frame.mid, frame.ts, frame.sig, self.identity.public)
        return E.PostAcknowledged(m.local_id, m.room, frame.lc, signed)

    def _window(self, link: Link, name: str) -> tuple[LinkRoom, OutStream] | None:
        """The member's send window for our stream `name` (its `target`), and the stream."""
        lr = link.rooms.get(name)
        if lr is None or lr.target is None or not lr.member:
            return None
        out = self._stream(link, name)
        return None if out is None else (lr, out)

    def _on_ack(self, link: Link, ack: F.PeerAck, now: float) -> None:
        found = self._window(link, ack.room)
        if found is None:
            return
        lr, out = found
        tg = lr.target
        cum = min(ack.cum, out.seq)
        node = link.node
        before, fresh = tg.acked, cum > tg.last_retx  # Karn: sampled only if nothing was resent
        if tg.on_ack(cum, out.seq):
            m = out.msgs.get(cum)
            if fresh and m is not None and m.created >= tg.since:
                link.rtt.sample(now - m.created)
            tg.probe_at = now + link.rtt.rto
            for s in range(before + 1, cum + 1):
                m = out.msgs.get(s)
                if m is not None and not m.done:
                    self._acked_by(m, node)
        if ack.ranges:
            for s in tg.on_sack(ack.ranges, out.seq):
                m = out.msgs.get(s)
                if m is not None and not m.done:
                    self._acked_by(m, node)

    def _on_nack(self, link: Link, nack: F.Nack, now: float) -> None:
        found = self._window(link, nack.room)
        if found is None:
            return
        lr, out = found
        seqs = lr.target.nacked(nack.ranges, out.seq)
        if seqs:
            self._resend(link, lr, out, seqs, now)

    def _probe(self, link: Link, lr: LinkRoom, out: OutStream, now: float) -> None:
        tg = lr.target
        tg.probe(now, link.rtt)
        first = out.first()
        if tg.acked + 1 < first:
            # what they miss is no longer kept: move their base (the PeerJoin tells them to skip)
            tg.skip_to(first)
            self._send_join(link, lr, now, ask=False)
        seqs = tg.unacked(out.seq)
        if seqs:
            self._resend(link, lr, out, seqs, now)

    def _resend(self, link: Link, lr: LinkRoom, out: OutStream, seqs: list[int], now: float) -> None:
        """Retransmit (timer or NACK): whatever they ask, at most the link's repair budget per RTT."""
        tg = lr.target
        for s in seqs:
            m = out.msgs.get(s)
            if m is None:
                continue
            if not link.repair.take(F.size_of(m.frame), now, link.rtt.pace):
                break
            link.out.append(m.frame)
            self.stats["retransmits"] += 1
            tg.resent(s)

    def _give_up(self, now: float) -> None:
        limit = now - self.timing.give_up
        streams = [r.out for r in self.rooms.values()] + [lk.dm_out for lk in self.links.values()]
        for out in streams:
            for m in out.msgs.values():
                if m.created > limit:
                    break
                if not m.done and not m.failed:
                    m.failed = True
                    self._failed[m.local_id] = (
                        m.room,
                        m.frame.text,
                        m.frame.kind in (F.EV_ACTION, F.EV_DM_ACTION),
                    )
                    self._events.append(
                        E.PostFailed(m.local_id, m.room, "not every peer acknowledged it in time")
                    )

    def _prune(self, now: float) -> None:
        since = now - self.timing.timeout
        streams = [r.out for r in self.rooms.values()] + [lk.dm_out for lk in self.links.values()]
        for out in streams:
            msgs = out.msgs
            while msgs:
                seq, m = next(iter(msgs.items()))
                if (m.done and m.created < since) or len(msgs) > MAX_KEPT:
                    del msgs[seq]
                else:
                    break
