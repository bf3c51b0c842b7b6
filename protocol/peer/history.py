"""History: a peer joining through a contact asks it for the room's recent messages
(`PeerJoin.history`) and gets them as PeerHistory frames, paid from the contact's repair budget;
paging back (`page_back`) asks the room's members for the messages stamped below a Lamport stamp.

The answer comes from the peer's durable log when its driver gave it one (`serve_history`: a read
function, the app's log through `chatlog.peer_history`; the core does no I/O itself), merged with
what it holds in memory (`Room.history`, which has what the log's writer may not have stored yet).
Lines read from a log have no stream position: they travel with `seq` 0, and as their author
signed them (the message id, time, signature and key the log kept: `events.Signed`); a logged line
without them (logged before signatures were kept) is not served, as a receiver would drop it.

What a receiver takes (the answerer's word, shown as history): only from a member it asked, only
while it waits for that answer, at most as many lines as it asked for, each checked like a message
from the wire, stamped no later than the clock it knows (and, for a page, below the page's stamp).
A line of a member whose stream it receives live is taken only if that stream would not carry it
(before the stream's start, stamped no later than the member's own clock when it joined us).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from .. import events as E
from .. import frames as F
from ..crypto import fingerprint
from ..names import (
    MAX_TEXT_BYTES,
    InputError,
    Refused,
    canonical_room,
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
    LinkRoom,
    Room,
)

#: a read function: (room, before, n) -> the room's latest n signed messages stamped below
#: `before` (0: the newest), in stamp order, as (lc, nick, text, action, signed) tuples, `signed` an
#: `events.Signed` (the id, time, signature and key the author signed the line with)
HistorySource = Callable[[str, int, int], list]

MAX_PAGE = 100  # messages per page asked of a member (and answered)
PAGE_ASK = 4  # members asked for one page
PAGE_EVERY = 0.25  # seconds: a member's page requests answered at most this often (per room)


class Page:
    __slots__ = ("asked", "before", "deadline", "got", "items", "limit")

    def __init__(self, before: int, limit: int, asked: set[int], deadline: float) -> None:
        self.before = before
        self.limit = limit
        self.asked = asked  # node ids of the members whose answer is still coming
        self.deadline = deadline
        self.got: dict[int, int] = {}  # node id -> lines taken from its answer
        self.items: dict[int, F.PeerMsg] = {}  # direct_mid -> the line


def _text_id(room: str, nick: str, lc: int, text: str) -> int:
    """A line with its text: the same line, said the same way (a repeat, not a rival)."""
    data = f"{room}\0{nick}\0{lc}\0{text}".encode("utf-8", "surrogatepass")
    return (
        int.from_bytes(hashlib.blake2b(data, digest_size=8, person=b"udproom-text").digest(), "big") >> 1
    ) or 1


class History:
    """A part of `PeerNode` (node.py): these methods work on the node's state."""

    history_source: HistorySource | None = None

    def serve_history(self, read: HistorySource | None) -> None:
        """Answer history from a durable log too (`read`, see `HistorySource`); None: memory only.
        The clock goes on above the stamps logged for the rooms we are in."""
        self.history_source = read
        for name in self.rooms:
            self._resume_clock(name)

    def _resume_clock(self, name: str) -> None:
        """A peer restarted on its log: its new lines are stamped after those it answers with."""
        for m in self._logged(name, 0, 1):
            self._bump(m.lc)

    def _logged(self, name: str, before: int, n: int) -> list[F.PeerMsg]:
        """Up to `n` messages of room `name` from the log, stamped below `before` (0: any)."""
        read = self.history_source
        if read is None or n <= 0:
            return []
        out = []
        for row in list(read(name, before, n))[-n:]:
            try:
                lc, nick, text, action, signed = row
                check_nick(nick)
                check_text(text, MAX_TEXT_BYTES)
            except (InputError, TypeError, ValueError):
                continue
            if not isinstance(lc, int) or not 0 < lc <= LC_MAX or (before and lc >= before):
                continue
            if not isinstance(signed, E.Signed) or not signed.well_formed():
                continue  # not as its author signed it: a receiver would drop it
            kind = F.EV_ACTION if action else F.EV_MSG
            s = signed
            out.append(F.PeerMsg(name, 0, lc, kind, nick, text, s.ts, s.mid, s.sig, s.key))
        return out

    def _history_items(self, r: Room, before: int, n: int) -> list[F.PeerMsg]:
        """The room's latest `n` messages stamped below `before` (0: the newest), from the log and
        from memory (which wins: it knows the stream position and the message id), oldest first."""
        merged: dict[tuple[int, str], F.PeerMsg] = {}
        for m in self._logged(r.name, before, n):
            merged[(m.lc, m.nick)] = m
        for m in r.history:
            if not before or m.lc < before:
                merged[(m.lc, m.nick)] = m
        return sorted(merged.values(), key=lambda m: (m.lc, m.nick))[-n:]

    def _send_history(self, link: Link, r: Room, now: float, before: int = 0, n: int = 0) -> None:
        """Our messages of the room (the newest, or a page below `before`), as far as the link's
        repair budget allows; a page's last frame says it is the last."""
        for frame in self._history_frames(r, before, n):
            if not link.repair.take(F.size_of(frame), now, link.rtt.pace):
                break
            link.out.append(frame)

    def _history_frames(self, r: Room, before: int = 0, n: int = 0) -> list[F.Frame]:
        """PeerHistory frames of the room's latest `n` messages stamped below `before` (0, 0: the
        join backfill), each fitting one datagram with its Sid. An item too big for that goes
        without its room name (the frame names it); one too big even then (only hostile numbers
        can make it) is left out."""
        name, page = r.name, n > 0
        items = self._history_items(r, before, n or self.history)
        limit = F.MAX_DATAGRAM - SID_ROOM - F.size_of(F.PeerHistory(name, [], before, 0, True)) - 4
        parts: list[list[F.PeerMsg]] = []
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
                parts.append(cur)
                cur, size = [], 0
            cur.append(m)
            size += n
        parts.append(cur)
        last = len(parts) - 1
        return [F.PeerHistory(name, p, before, 0, page and i == last) for i, p in enumerate(parts)]

    # ------------------------------------------------------------------ taking history

    def _on_history(self, link: Link, h: F.PeerHistory, now: float) -> None:
        lr = link.rooms.get(h.room)
        r = self.rooms.get(h.room)
        if lr is None or r is None or not lr.member or not h.room:
            return
        if h.n > 0:  # a member pages back: one answer per PAGE_EVERY (each reads the log)
            if h.items or now < lr.history_sent + max(link.rtt.pace, PAGE_EVERY):
                return
            lr.history_sent = now
            before = h.before if 0 < h.before <= LC_MAX + 1 else 0
            if before:
                self._send_history(link, r, now, before, min(h.n, MAX_PAGE))
            return
        if h.before:
            self._on_page(link, lr, h, now)
            return
        if lr.history_want:
            lr.history_want = False
            lr.history_until = now + self.timing.timeout
            lr.history_left = self.history
        elif now > lr.history_until:
            return
        raw = h.items[: max(0, lr.history_left)]
        lr.history_left -= len(raw)
        for m in self._history_taken(link, lr, h, raw, 0, now):
            r.history.append(m)
            self._events.append(self._history_event(h.room, m, now))

    def _history_taken(
        self, link: Link, lr: LinkRoom, h: F.PeerHistory, raw: list, before: int, now: float
    ) -> list[F.PeerMsg]:
        """The lines of a history answer we take (see the module docstring), in (lc, nick) order;
        each marked seen."""
        items = []
        for m in raw:
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
            if not self._signed_by(m.key, h.room, m) or (pinned is not None and pinned != fingerprint(m.key)):
                self.stats["bad_signature"] += 1
                continue
            # the numbers are checked like any from the wire
            lc = max(0, min(m.lc, self.lc + LC_STEP, LC_MAX))
            if before and not 0 < lc < before:
                continue
            items.append(self._as_history(m, m.nick, m.key, lc))  # kept signed, to be passed on
        items.sort(key=lambda m: (m.lc, m.nick))
        # a member's messages from where its stream to us starts arrive live: not history
        live: dict[str, LinkRoom] = {
            nick_key(lk.nick): lk.rooms[h.room]
            for lk in self._members(h.room)
            if lk.rooms[h.room].rx is not None
        }
        taken = []
        for m in items:
            their = live.get(nick_key(m.nick))
            if their is not None and (m.seq >= their.rx_base or m.lc > their.join_lc):
                continue
            ident = E.direct_mid(h.room, m.nick, m.lc)
            if m.mid in self._seen or ident in self._seen:
                continue
            self._seen.add(m.mid)
            self._seen.add(ident)
            self._seen.add(_text_id(h.room, m.nick, m.lc, m.text))
            self._bump(m.lc)
            taken.append(m)
        return taken

    def _history_event(self, room: str, m: F.PeerMsg, now: float) -> E.MessageReceived:
        """A history line as shown: its time checked like any from the wire (the item itself keeps
        the time it was signed with, to be passed on)."""
        ts = self._wire_ts(m.ts, now, True)
        return E.MessageReceived(
            room, m.lc, m.nick, m.text, ts, m.kind == F.EV_ACTION, history=True, signed=self._signed_of(m)
        )

    def _repeat_of_history(self, name: str, m: F.PeerMsg) -> bool:
        """A live message (delivered in its stream's order) that history already showed, word for
        word: not shown again. (One that history showed otherwise is shown: history never hides
        what a member says itself.) Its name is noted, so history does not bring it again."""
        self._seen.add(E.direct_mid(name, m.nick, m.lc))
        return _text_id(name, m.nick, m.lc, m.text) in self._seen

    # ------------------------------------------------------------------ paging back

    def page_back(self, room: str, before: int, limit: int, now: float) -> None:
        """Ask the room's members (up to PAGE_ASK, contacts first) for up to `limit` (at most
        MAX_PAGE) messages stamped below `before`. The answer is one `E.HistoryPage` once every
        member asked answered (or after a keepalive), oldest first, each `history=True`;
        `complete` when they had fewer than asked. No one to ask: `RequestRefused("history", ...)`."""
        name = canonical_room(room)
        if name not in self.rooms:
            raise Refused(f"you are not in #{name}")
        before = max(1, min(int(before), LC_MAX + 1))
        limit = max(1, min(int(limit), MAX_PAGE))
        members = sorted(self._members(name), key=lambda lk: (not lk.contact, lk.rtt.rto))
        asked = members[:PAGE_ASK]
        if not asked:
            self._events.append(
                E.RequestRefused("history", name, "no peer is here to ask for older messages")
            )
            return
        wait = self.timing.keepalive + max(lk.rtt.rto for lk in asked)
        self._pages[name] = Page(before, limit, {lk.node for lk in asked}, now + wait)
        for lk in asked:
            lk.out.append(F.PeerHistory(name, [], before, limit))
        self._schedule(now)

    def _on_page(self, link: Link, lr: LinkRoom, h: F.PeerHistory, now: float) -> None:
        page = self._pages.get(h.room)
        if page is None or h.before != page.before or link.node not in page.asked:
            return  # not asked for
        room = h.room
        room_left = page.limit - page.got.get(link.node, 0)
        raw = h.items[: max(0, room_left)]
        page.got[link.node] = page.got.get(link.node, 0) + len(raw)
        for m in self._history_taken(link, lr, h, raw, page.before, now):
            page.items[E.direct_mid(room, m.nick, m.lc)] = m
        if h.end or page.got[link.node] >= page.limit:
            page.asked.discard(link.node)
        if not page.asked:
            self._page_done(room, now)

    def _page_done(self, name: str, now: float) -> None:
        page = self._pages.pop(name, None)
        if page is None:
            return
        items = sorted(page.items.values(), key=lambda m: (m.lc, m.nick))[-page.limit :]
        # every member asked answered, each with less than a page: nothing older anywhere
        complete = not page.asked and all(n < page.limit for n in page.got.values())
        events = tuple(self._history_event(name, m, now) for m in items)
        self._events.append(E.HistoryPage(name, page.before, events, complete))

    def _page_timers(self, now: float) -> None:
        """Pages whose members did not all answer in time end with what came."""
        for name, page in list(self._pages.items()):
            if now >= page.deadline:
                self._page_done(name, now)
