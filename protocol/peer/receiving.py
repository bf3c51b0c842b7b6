"""Their messages: each sender's stream delivered in order exactly once (`RecvStream`), Lamport
stamps and timestamps from the wire checked, acks and NACKs scheduled by `AckScheduler`
(reliability.py). A message is from the link it came over, whatever it says.
"""

from __future__ import annotations

import math

from .. import events as E
from .. import frames as F
from ..crypto import signed_bytes
from ..names import (
    MAX_TEXT_BYTES,
    check_text,
    look_alike,
)
from ..reliability import (
    RecvStream,
)
from .state import (
    DM_KINDS,
    LC_MAX,
    LC_STEP,
    MAX_RX_BYTES,
    ROOM_KINDS,
    RX_ITEM_BYTES,
    TS_SKEW,
    Link,
    LinkRoom,
)


class Receiving:
    """A part of `PeerNode` (node.py): these methods work on the node's state."""

    def _on_msg(self, link: Link, m: F.PeerMsg, now: float) -> None:
        name = m.room
        lr = link.rooms.get(name)
        if lr is None or lr.rx is None:
            if name and name not in self.rooms:
                link.out.append(F.PeerLeave(name, self.nick, "not here", self.lc))
            elif lr is not None:
                self._send_join(link, lr, now, ask=True)  # we need their PeerJoin first
            return
        if not link.bucket.take(now):
            self.stats["rate_limited"] += 1
            return
        if m.kind not in (DM_KINDS if name == "" else ROOM_KINDS) or not (1 <= m.seq < 1 << 62):
            raise ValueError("bad message kind")
        # m.nick is not read: a message is from the link it came over (see _deliver)
        check_text(m.text, MAX_TEXT_BYTES)
        if m.seq > lr.top:
            lr.top = m.seq
        rx = lr.rx
        if m.seq != rx.next:  # what this link may buffer, over all its streams
            used = sum(x.rx.bytes for x in link.rooms.values() if x.rx is not None)
            rx.max_bytes = max(1, MAX_RX_BYTES - (used - rx.bytes))
        fresh = rx.offer(m.seq, m, RX_ITEM_BYTES + len(m.text.encode()))
        if not fresh:
            self.stats["duplicates"] += 1
        self._deliver(link, lr, now)
        self._want_ack(link, name, now, urgent=not fresh or lr.rx.has_gap())

    def _deliver(self, link: Link, lr: LinkRoom, now: float) -> None:
        name = lr.name
        r = self.rooms.get(name)
        for _seq, m in lr.rx.pop_ready():
            # the join window (sent before they knew of us) is history, by its place in their stream
            history = bool(name) and m.seq < lr.live_from
            lc = self._wire_lc(lr, m)
            if not self._signed_by(link.key, name, m):
                self.stats["bad_signature"] += 1  # its number is used up; the message is not shown
                continue
            if m.mid in self._seen:
                self.stats["duplicates"] += 1
                continue
            self._seen.add(m.mid)
            # from the link it came over, whatever it says; its numbers checked
            kept = self._as_history(m, link.nick, link.key, lc)
            m = F.PeerMsg(
                room=m.room,
                seq=m.seq,
                lc=lc,
                kind=m.kind,
                nick=link.nick,
                text=m.text,
                ts=self._wire_ts(m.ts, now, history),
                mid=m.mid,
            )
            if name == "":
                if self._owner(link.nick) is not link or look_alike(link.nick, self.nick):
                    continue  # a DM from a second holder of a nick would look like the first's
                self._events.append(
                    E.MessageReceived(
                        E.direct_room(link.nick), m.lc, m.nick, m.text, m.ts, m.kind == F.EV_DM_ACTION
                    )
                )
            elif r is not None and not lr.hidden:  # a refused double of a nick says nothing
                if self._repeat_of_history(name, m):
                    continue  # history showed it already (history.py)
                r.history.append(kept)
                self._events.append(
                    E.MessageReceived(
                        name,
                        m.lc,
                        m.nick,
                        m.text,
                        m.ts,
                        m.kind == F.EV_ACTION,
                        history=history,
                        signed=self._signed_of(kept),
                    )
                )

    def _signed_by(self, key: bytes, room: str, m: F.PeerMsg) -> bool:
        """Is `m` signed by `key` (its author's identity key) for `room`? Verified once: a message
        seen again (from history, from another peer) hits the cache."""
        data = signed_bytes(room, m.kind, m.mid, m.ts, m.text.encode())
        return self.sigs.verify(key, data, m.sig)

    @staticmethod
    def _as_history(
        m: F.PeerMsg, nick: str, key: bytes, lc: int | None = None, room: str | None = None
    ) -> F.PeerMsg:
        """`m` as kept for PeerHistory: its author's nick and key, the stamps it was signed with
        (and another `lc` or `room` when given: a checked stamp; "" where the frame names it)."""
        return F.PeerMsg(
            room=m.room if room is None else room,
            seq=m.seq,
            lc=m.lc if lc is None else lc,
            kind=m.kind,
            nick=nick,
            text=m.text,
            ts=m.ts,
            mid=m.mid,
            sig=m.sig,
            key=key,
        )

    @staticmethod
    def _signed_of(m: F.PeerMsg) -> E.Signed:
        """What the app logs of a room message kept signed (`_as_history`: its author's key, the
        time it was signed with), so the line can be served again as its author signed it."""
        return E.Signed(m.mid, m.ts, m.sig, m.key)

    def _wire_lc(self, lr: LinkRoom, m: F.PeerMsg) -> int:
        """The Lamport stamp of a message of their stream, delivered in order: later than their
        previous one and than the clock their PeerJoin showed before it (an honest clock never
        goes back) and at most LC_STEP beyond what they said before. Merged into our clock. (How far
        back a live line may land on screen is the display's bound.)"""
        lo = lr.lc_last + 1
        if m.seq > lr.join_top:
            lo = max(lo, lr.join_lc + 1)
        lc = min(max(lo, min(m.lc, max(lr.lc_last, lr.join_lc) + LC_STEP)), LC_MAX)
        lr.lc_last = lc
        self._bump(lc)
        return lc

    def _wire_ts(self, ts: float, now: float, history: bool) -> float:
        """A timestamp from the wire, or the receive time if it is not plausible (not finite,
        more than TS_SKEW ahead, or, live, as far behind)."""
        wall = self._ts(now)
        if (
            not math.isfinite(ts)
            or ts > wall + TS_SKEW
            or (not history and ts < wall - TS_SKEW)
            or ts < -TS_SKEW
        ):
            return wall
        return ts

    def _want_ack(self, link: Link, name: str, now: float, urgent: bool) -> None:
        lr = link.rooms.get(name)
        link.acks.want(name, lr.rx if lr is not None else None, now, urgent)

    def _acks(self, link: Link, now: float) -> list[F.Frame]:
        def stream_of(name: str) -> tuple[RecvStream, int] | None:
            lr = link.rooms.get(name)
            return None if lr is None or lr.rx is None else (lr.rx, lr.top)

        out: list[F.Frame] = []
        for name, cum, sack, missing in link.acks.take(now, link.rtt.pace, stream_of):
            out.append(F.PeerAck(room=name, sender=link.nick, cum=cum, ranges=sack))
            if missing:
                out.append(F.Nack(name, missing))
        return out
