"""History: a peer joining through a contact asks it for the room's recent messages
(`PeerJoin.history`) and gets them as PeerHistory frames, paid from the contact's repair budget.
"""

from __future__ import annotations

from .. import events as E
from .. import frames as F
from ..names import (
    MAX_TEXT_BYTES,
    InputError,
    check_nick,
    check_text,
    nick_key,
)
from .state import (
    LC_MAX,
    LC_STEP,
    ROOM_KINDS,
    SID_ROOM,
    Link,
    Room,
)


class History:
    """A part of `PeerNode` (node.py): these methods work on the node's state."""

    def _send_history(self, link: Link, r: Room, now: float) -> None:
        """Our recent messages of the room, as far as the link's repair budget allows."""
        for frame in self._history_frames(r):
            if not link.repair.take(F.size_of(frame), now, link.rtt.pace):
                break
            link.out.append(frame)

    def _history_frames(self, r: Room) -> list[F.Frame]:
        """PeerHistory frames, each fitting one datagram with its Sid. An item too big for that
        goes without its room name (the frame names it); one too big even then (only hostile
        numbers can make it) is left out."""
        items = sorted(r.history, key=lambda m: (m.lc, m.nick))
        limit = F.MAX_DATAGRAM - SID_ROOM - F.size_of(F.PeerHistory(r.name, [])) - 4
        frames: list[F.Frame] = []
        cur: list[F.PeerMsg] = []
        size = 0
        for m in items:
            n = F.size_of(m)
            if n > limit:
                m = self._as_history(m, m.nick, m.key, room="")
                n = F.size_of(m)
                if n > limit:
                    continue
            if cur and size + n > limit:
                frames.append(F.PeerHistory(r.name, cur))
                cur, size = [], 0
            cur.append(m)
            size += n
        frames.append(F.PeerHistory(r.name, cur))
        return frames

    def _on_history(self, link: Link, h: F.PeerHistory, now: float) -> None:
        lr = link.rooms.get(h.room)
        r = self.rooms.get(h.room)
        if lr is None or r is None or not lr.member:
            return
        if lr.history_want:
            lr.history_want = False
            lr.history_until = now + self.timing.timeout
        elif now > lr.history_until:
            return
        items = []
        for m in h.items[: self.history]:
            if m.kind not in ROOM_KINDS or m.room not in (h.room, ""):
                continue
            try:
                check_nick(m.nick)
                check_text(m.text, MAX_TEXT_BYTES)
            except InputError:
                self.stats["malformed"] += 1
                continue
            # relayed by the contact, but signed by its author: the key it names must have signed
            # it, and be the one pinned to that nick if the nick has a pin (never pinned from here:
            # pins come from keys proven in a handshake)
            pinned = self.pins.get(m.nick)
            if not self._signed_by(m.key, h.room, m) or (pinned is not None and pinned != m.key):
                self.stats["bad_signature"] += 1
                continue
            # the numbers are checked like any from the wire
            lc = max(0, min(m.lc, self.lc + LC_STEP, LC_MAX))
            items.append(self._as_history(m, m.nick, m.key, lc))  # kept signed, to be passed on
        items.sort(key=lambda m: (m.lc, m.nick))
        # a member's messages from where its stream to us starts arrive live: not history
        live = {
            nick_key(lk.nick): lk.rooms[h.room].rx_base
            for lk in self._members(h.room)
            if lk.rooms[h.room].rx is not None
        }
        for m in items:
            if m.mid in self._seen or m.seq >= live.get(nick_key(m.nick), 1 << 62):
                continue
            self._seen.add(m.mid)
            self._bump(m.lc)
            r.history.append(m)
            ts = self._wire_ts(m.ts, now, True)
            self._events.append(
                E.MessageReceived(h.room, m.lc, m.nick, m.text, ts, m.kind == F.EV_ACTION, history=True)
            )
