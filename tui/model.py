"""What the chat screen shows, as plain data: rooms, their lines and members, the connection.

No textual here: `ChatModel.apply(event)` folds protocol events into state and records what
changed, so the app can batch a whole burst of events into one screen update. It is cheap per
event (the TUI benchmark ingests 100,000 messages through it). The handlers of each event type
are in fold.py; what stays here is the state and the one rule of where a line goes (history above
"you joined", stamp order in direct mode, the relay's order for our own posts), which is one idea
even at ~630 lines.
"""

from __future__ import annotations

import re
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from enum import StrEnum

from udproom.protocol.names import is_direct, nick_key

from .fold import EventFolding

#: timestamps come from the network: outside these bounds (or not finite) a line shows the time it
#: arrived instead (datetime cannot show them, and a NaN would end the app)
TS_MIN, TS_MAX = 0.0, 1e11  # 1970 .. the year 5138
FORGET_TIMED_OUT = 600.0  # a member timed out this long leaves the members pane
#: direct mode: a live line goes at most this many lines up from the bottom, whatever its stamp
#: (a stamp from the network must not put it at the top of the scrollback)
LIVE_REORDER = 200
SCROLLBACK = 2000  # lines kept per room; older history comes back from the relay's backfill

# Where lines go. A room's lines are, top to bottom: backfilled history (events from before we
# joined, `history=True`), the "you joined" line (`Room.join_marker`), then live events. The core
# emits RoomJoined first and the backfill after it, so history lines are inserted above the marker.
# In direct mode (`ChatModel.stamp_order`) a message's `seq` is its Lamport stamp and the room's
# final order is (seq, nick) on every peer: each message line is inserted at that position among
# the message lines of its part (history or live), so all peers show the same order once traffic
# settles. In relay mode `seq` is the relay's room sequence and arrival order already is that order.
# Day separators are not stored: the view draws one wherever the day changes (`Line.day`).

# Line kinds (MSG and ACTION first: `kind <= ACTION` means a chat message)
MSG = 0
ACTION = 1
JOIN = 2
LEAVE = 3
TIMEOUT = 4
NICK = 5
TOPIC = 6
AWAY = 7
# 8: unused (day separators are drawn by the view, not stored)
NOTICE = 9
ERROR = 10
INFO = 11


class Conn(StrEnum):
    """The session's connection as the status line shows it (`ChatModel.set_state` changes it)."""

    DISCONNECTED = "disconnected"  # no session (before the first, or back on the connect screen)
    CONNECTING = "connecting"  # a session started, no answer yet
    CONNECTED = "connected"
    STALLED = "stalled"  # connected, but the relay has gone quiet (ConnectionStalled)
    RECONNECTING = "reconnecting"  # lost (or never answered): the core retries at `retry_at`
    REFUSED = "refused"  # the relay refused the session
    FAILED = "failed"  # the session could not start (bad address, port in use...)


# Own post states
SENT = 0
PENDING = 1
FAILED = 2


class Line:
    """One logical line in a room. Mutable only in `state` (own posts) and its render cache."""

    __slots__ = (
        "cache",
        "cache_key",
        "day",
        "echoed",
        "history",
        "kind",
        "local_id",
        "mention",
        "mine",
        "nick",
        "seq",
        "serial",
        "state",
        "strips",
        "text",
        "ts",
    )

    def __init__(
        self,
        serial: int,
        kind: int,
        ts: float,
        nick: str = "",
        text: str = "",
        mine: bool = False,
        mention: bool = False,
        state: int = SENT,
        local_id: int = -1,
        seq: int = -1,
        day: float = 0.0,
        history: bool = False,
    ) -> None:
        self.serial = serial
        self.history = history  # backfill: happened before we joined (drawn dim, above "you joined")
        self.day = day  # local midnight of `ts` (the view draws a separator where it changes)
        self.kind = kind
        self.ts = ts
        self.nick = nick
        self.text = text
        self.mine = mine
        self.mention = mention
        self.state = state
        self.local_id = local_id
        self.seq = seq
        self.echoed = False  # own post: the relay's copy of it has been seen
        self.cache_key: object = None  # the Renderer key the caches below were made for
        self.cache: object = None  # layout: (row texts, parts)
        self.strips: object = None  # rendered rows, made only when shown

    def __repr__(self) -> str:  # for test failure messages
        return f"Line({self.kind}, {self.nick!r}, {self.text!r}, state={self.state})"


@dataclass
class MemberState:
    nick: str
    away: str = ""
    timed_out: bool = False
    timed_out_at: float = 0.0  # when (wall clock); forgotten FORGET_TIMED_OUT seconds later
    mode: str = ""  # "@" an operator of the room, "+" voiced (the members pane shows it)

    @property
    def presence(self) -> str:
        if self.timed_out:
            return "timed out"
        return "away" if self.away else "here"


@dataclass
class Room:
    name: str
    lines: deque = field(default_factory=lambda: deque(maxlen=SCROLLBACK))
    members: dict[str, MemberState] = field(default_factory=dict)
    topic: str = ""
    unread: int = 0  # messages arrived while not looking at the room
    mentions: int = 0
    activity: bool = False  # joins/leaves etc. while not looking
    read_upto: int = -1  # serial of the last line seen before the user last left the room
    joined: bool = False  # a RoomJoined for it has arrived (a second one is a resync)
    join_marker: Line | None = None  # the "you joined" line: history goes above it
    my_nick: str = ""  # our nick in this room (a /nick reaches each room by its own NickChanged)

    @property
    def direct(self) -> bool:
        return is_direct(self.name)

    @property
    def label(self) -> str:
        return self.name if self.direct else "#" + self.name

    def sorted_members(self) -> list[MemberState]:
        order = {"here": 0, "away": 1, "timed out": 2}
        return sorted(self.members.values(), key=lambda m: (order[m.presence], m.nick.casefold()))


@dataclass
class Changes:
    """What one batch of events changed (the app redraws only that)."""

    rooms: set[str] = field(default_factory=set)  # rooms whose lines changed
    members: set[str] = field(default_factory=set)
    topics: set[str] = field(default_factory=set)
    room_list: bool = False  # rooms added/removed/counts changed
    status: bool = False
    mention: bool = False  # ring the bell
    active_changed: bool = False

    def __bool__(self) -> bool:
        return bool(
            self.rooms
            or self.members
            or self.topics
            or self.room_list
            or self.status
            or self.mention
            or self.active_changed
        )


class ChatModel(EventFolding):
    def __init__(self, nick: str = "", tz: tzinfo | None = None, clock=time.time) -> None:
        self.nick = nick
        self.tz = tz
        self.clock = clock
        self.rooms: dict[str, Room] = {}
        self.status_room = Room("*status")  # notices when no room is open
        self.active: str | None = None
        self.previous: str | None = None  # the room on screen before the current one
        self.pending: dict[int, tuple[str, Line]] = {}  # local_id -> (room, line)
        self.auto_switch: set[str] = set()  # rooms the user asked to open: switch when joined
        self._serial = 0
        self._mention_re: re.Pattern | None = None
        # connection
        self.state = Conn.DISCONNECTED
        self.address = ""
        self.rtt: float | None = None
        self.retry_at: float | None = None  # time.monotonic() deadline
        self.reason = ""
        self.connected_once = False  # this session has connected at least once
        self.stalled_since = 0.0  # time.monotonic() the relay went quiet (state "stalled")
        self.esc_back = False  # Esc returns to the connect screen (said in the "no answer" line)
        self.away: str | None = None  # our own away message (None: here)
        self.sticky = ""  # a refusal the status line shows until the next keystroke (or a few s)
        self.sticky_at = 0.0  # time.monotonic() it was set
        self.mode = ""
        self.share: list[str] = []  # host mode: addresses to give others
        self.relay_key = ""  # the fingerprint of the relay's key, as it proved it (relay mode)
        self.stamp_order = False  # direct mode: order messages by (Lamport stamp, nick)
        # the one "connection lost" line of an outage, updated in place: (room, line, quiet since
        # (wall clock), first reason, tries)
        self.outage: tuple[Room, Line, float, str, int] | None = None  # + first reason, tries
        self._day: tuple[float, float] = (0.0, -1.0)  # [start, end) of the last day looked up
        self.changes = Changes()
        self._set_mention_re()

    # ------------------------------------------------------------------ helpers

    def _set_mention_re(self) -> None:
        self._mention_re = (
            re.compile(r"(?<![\w@])@?" + re.escape(self.nick) + r"(?!\w)", re.IGNORECASE)
            if self.nick
            else None
        )

    def reset_session(self, nick: str, address: str = "", rooms: list[str] | tuple = ()) -> None:
        """A new session starts: forget the old one's rooms, posts and connection (`nick` is the
        new session's, `rooms[:1]` comes on screen once joined)."""
        self.connected_once = False
        for name in list(self.rooms):
            self.remove_room(name)
        self.pending.clear()
        self.share = []
        self.away = None
        self.mode = ""
        self.stamp_order = False
        self.rtt = None
        self.outage = None
        self.esc_back = False
        self.set_state(Conn.CONNECTING)
        self.set_nick(nick)
        if address:
            self.address = address
        self.auto_switch.update(rooms[:1])

    def set_nick(self, nick: str) -> None:
        self.nick = nick
        self._set_mention_re()
        self.changes.status = True

    def _became(self, old: str, new: str) -> None:
        """Our nick is `new` now: everywhere (prompt, mentions, "(you)", direct conversations)."""
        if self.nick != new:
            self.set_nick(new)
        for room in self.rooms.values():
            if room.direct and room.my_nick == old:
                room.my_nick = new
                member = room.members.pop(old, None)
                if member is not None:
                    member.nick = new
                    room.members[new] = member
                self.changes.members.add(room.name)

    def _follow_rename(self, old: str, new: str, ts: float) -> None:
        """Someone we talk to directly changed nick: `@old` becomes `@new` (same place in the rooms
        pane, same history, a "old is now new" line), so writing there reaches them. If a `@new`
        conversation was opened meanwhile (their reply came first), the two become one."""
        if not new or nick_key(new) == nick_key(self.nick):
            return  # a claim to be us (or nobody) renames no conversation
        key = nick_key(old)
        src = next((n for n in self.rooms if is_direct(n) and nick_key(n[1:]) == key), None)
        dst = "@" + new
        room = self.rooms.get(src) if src is not None else None
        if room is None or src == dst:
            return
        old = src[1:]
        other = self.rooms.get(dst)
        self.rooms = {(dst if k == src else k): v for k, v in self.rooms.items() if k != dst}
        room.name = dst
        if other is not None:
            merged = sorted([*room.lines, *other.lines], key=lambda x: x.serial)
            room.lines = deque(merged, maxlen=SCROLLBACK)
            room.unread += other.unread
            room.mentions += other.mentions
        member = room.members.pop(old, None) or MemberState(new)
        member.nick = new
        room.members[new] = member
        for lid, (rname, line) in list(self.pending.items()):
            if rname in (src, dst):
                self.pending[lid] = (dst, line)
        if self.active in (src, dst):
            self.active = dst
            self.changes.active_changed = True
        self._append(room, NICK, ts, old, new)
        self.changes.room_list = True
        self.changes.members.add(dst)
        self.changes.topics.add(dst)

    def presence_of(self, nick: str) -> str | None:
        """What we know of `nick` from the rooms we share (best of them), None if not seen."""
        best = None
        order = {"here": 0, "away": 1, "timed out": 2}
        for room in self.rooms.values():
            if room.direct:
                continue
            member = room.members.get(nick)
            if member is not None and (best is None or order[member.presence] < order[best]):
                best = member.presence
        return best

    def forget_timed_out(self, now: float) -> None:
        """Drop members that timed out more than FORGET_TIMED_OUT seconds ago."""
        for room in self.rooms.values():
            if room.direct:
                continue
            gone = [
                n
                for n, mb in room.members.items()
                if mb.timed_out and now - mb.timed_out_at > FORGET_TIMED_OUT
            ]
            for n in gone:
                del room.members[n]
            if gone:
                self.changes.members.add(room.name)

    def known_nicks(self) -> list[str]:
        """Everyone in any of our rooms but us (for completion and the quick switcher)."""
        seen: dict[str, None] = {}
        for room in self.rooms.values():
            if not room.direct:
                for nick in room.members:
                    if nick != self.nick:
                        seen.setdefault(nick)
        return sorted(seen, key=str.casefold)

    def is_mention(self, text: str) -> bool:
        return self._mention_re is not None and self._mention_re.search(text) is not None

    def take_changes(self) -> Changes:
        changes, self.changes = self.changes, Changes()
        return changes

    def room_order(self) -> list[str]:
        """Rooms as the rooms pane lists them: rooms first, then direct conversations."""
        names = list(self.rooms)
        return [n for n in names if not is_direct(n)] + [n for n in names if is_direct(n)]

    @property
    def current(self) -> Room:
        if self.active is not None and self.active in self.rooms:
            return self.rooms[self.active]
        return self.status_room

    def add_room(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name)
            if is_direct(name):
                other = name[1:]
                room.members = {self.nick: MemberState(self.nick), other: MemberState(other)}
                room.my_nick = self.nick
            self.changes.room_list = True
            if self.active is None:
                # what was said while no room was open (a refused join...) comes along
                room.lines.extend(self.status_room.lines)
                self.status_room.lines.clear()
                self.switch(name)
        return room

    def remove_room(self, name: str) -> None:
        if name not in self.rooms:
            return
        order = self.room_order()
        idx = order.index(name)
        del self.rooms[name]
        self.changes.room_list = True
        if self.active == name:
            order.remove(name)
            self.active = None
            if order:
                self.switch(order[min(idx, len(order) - 1)])
            else:
                self.changes.active_changed = True

    def drop_conversation(self, name: str, post: Line | None = None) -> bool:
        """A direct conversation that never was (no one by that nick): close it and go back to
        the room we came from. Only when nothing but `post` (the refused one) was said there."""
        room = self.rooms.get(name)
        if room is None or not room.direct:
            return False
        if any(x.kind <= ACTION and x is not post for x in room.lines):
            return False
        back = self.previous
        self.remove_room(name)
        if back in self.rooms:
            self.switch(back)
        return True

    def switch(self, name: str) -> bool:
        if name not in self.rooms or name == self.active:
            return False
        old = self.rooms.get(self.active) if self.active else None
        if old is not None and old.lines:
            old.read_upto = old.lines[-1].serial
        self.previous = self.active
        self.active = name
        room = self.rooms[name]
        room.unread = room.mentions = 0
        room.activity = False
        self.changes.active_changed = True
        self.changes.room_list = True
        return True

    def safe_ts(self, ts: float) -> float:
        """`ts` if datetime can show it, else now (see TS_MIN)."""
        return ts if isinstance(ts, (int, float)) and TS_MIN <= ts <= TS_MAX else self.clock()

    def day_of(self, ts: float) -> float:
        """Local midnight of `ts` (cached: consecutive lines are nearly always on one day)."""
        start, end = self._day
        if start <= ts < end:
            return start
        day = datetime.fromtimestamp(ts, self.tz)
        midnight = day.replace(hour=0, minute=0, second=0, microsecond=0)
        start = midnight.timestamp()
        self._day = (start, (midnight + timedelta(days=1)).timestamp())
        return start

    def _append(
        self,
        room: Room,
        kind: int,
        ts: float,
        nick: str = "",
        text: str = "",
        mine: bool = False,
        mention: bool = False,
        state: int = SENT,
        local_id: int = -1,
        seq: int = -1,
        history: bool = False,
    ) -> Line:
        self._serial += 1
        ts = self.safe_ts(ts)
        line = Line(
            self._serial, kind, ts, nick, text, mine, mention, state, local_id, seq, self.day_of(ts), history
        )
        if history or (self.stamp_order and seq >= 0 and kind <= ACTION):
            self._place(room, line, history)
        else:
            room.lines.append(line)
        self.changes.rooms.add(room.name)
        return line

    def _place(self, room: Room, line: Line, history: bool) -> None:
        """Insert `line` where it belongs (see the note at the top of this module)."""
        lines = room.lines
        marker = room.join_marker
        hi = len(lines)
        if history and marker is not None:
            for j, x in enumerate(reversed(lines)):
                if x is marker:
                    hi = len(lines) - 1 - j
                    break
            else:
                room.join_marker = marker = None  # scrolled out of the scrollback
        if self.stamp_order and line.seq >= 0 and line.kind <= ACTION:
            key = (line.seq, line.nick)
            pos = hi
            for i in range(hi - 1, -1 if history else max(-1, hi - 1 - LIVE_REORDER), -1):
                x = lines[i]
                if x is marker:
                    break  # live lines stay below "you joined"
                if x.kind <= ACTION and x.seq >= 0 and x.state == SENT:
                    if (x.seq, x.nick) > key:
                        pos = i
                    else:
                        break
            hi = pos
        if hi >= len(lines):
            lines.append(line)
            return
        if len(lines) == lines.maxlen:
            lines.popleft()
            hi -= 1
            if hi < 0:
                return  # older than everything the scrollback keeps
        lines.insert(hi, line)

    def _reposition(self, room: Room, line: Line) -> None:
        """Move `line` (our own post, just stamped) to its place in the room's order."""
        lines = room.lines
        for j, x in enumerate(reversed(lines)):
            if x is line:
                del lines[len(lines) - 1 - j]
                self._place(room, line, False)
                self.changes.rooms.add(room.name)
                return

    def _to_room_order(self, room: Room, line: Line) -> None:
        """Relay mode: the relay's copy of our post arrives in the room's order, so that is where
        the post belongs: after whatever came in since it was typed (a resend after an outage goes
        below the reconnect notices, as everyone else sees it), before our own posts still waiting
        for their copy."""
        if self.stamp_order:
            return  # direct mode places stamped posts itself (`_reposition`)
        lines = room.lines
        pos = len(lines)
        while pos > 0 and lines[pos - 1] is not line and _waiting(lines[pos - 1]):
            pos -= 1
        for i in range(pos - 1, -1, -1):
            if lines[i] is line:
                if i != pos - 1:
                    del lines[i]
                    lines.insert(pos - 1, line)
                    self.changes.rooms.add(room.name)
                return

    def _room_for_event(self, name: str) -> Room | None:
        room = self.rooms.get(name)
        if room is None and is_direct(name):
            room = self.add_room(name)
        return room

    def _count(self, room: Room, mention: bool, message: bool) -> None:
        if room.name == self.active:
            return
        if message:
            room.unread += 1
            if mention:
                room.mentions += 1
        else:
            if room.activity:
                return
            room.activity = True
        self.changes.room_list = True

    # ------------------------------------------------------------------ local actions

    def add_local(self, room_name: str | None, kind: int, text: str, ts: float | None = None) -> None:
        """An inline error, notice or help text for the user (never sent anywhere)."""
        room = self.rooms.get(room_name) if room_name else None
        if room is None:
            room = self.current
        self._append(room, kind, self.clock() if ts is None else ts, text=text)

    @property
    def presence_unknown(self) -> bool:
        """Disconnected after having been connected: who is here is not known until we are back."""
        return self.connected_once and self.state not in (Conn.CONNECTED, Conn.STALLED)

    def _outage(self, reason: str, retry_in: float, since: float) -> None:
        """One notice per outage, updated in place at each retry (not one line per retry): what
        ended the session, when the next try is, how many there have been."""
        if self.outage is not None:
            room, line, since, first, tries = self.outage
            if (room is self.status_room or self.rooms.get(room.name) is room) and line in room.lines:
                self.outage = (room, line, since, first, tries + 1)
                text = f"connection lost: {first}; retrying in {format_seconds(retry_in)} (try {tries + 1})"
                self._update_line(room, line, text)
                return
        room = self.current
        text = f"connection lost: {reason}; retrying in {format_seconds(retry_in)}"
        line = self._append(room, ERROR, self.clock(), text=text)
        self.outage = (room, line, since, reason, 1)
        for r in self.rooms.values():
            self.changes.members.add(r.name)  # presence becomes unknown

    def _update_line(self, room: Room, line: Line, text: str) -> None:
        line.text = text
        line.cache_key = line.cache = line.strips = None
        self.changes.rooms.add(room.name)

    def add_own_post(self, room_name: str, text: str, action: bool, local_id: int) -> Line:
        room = self.rooms.get(room_name) or self.add_room(room_name)
        line = self._append(
            room,
            ACTION if action else MSG,
            self.clock(),
            self.nick,
            text,
            mine=True,
            state=PENDING,
            local_id=local_id,
        )
        self.pending[local_id] = (room.name, line)
        return line

    def retarget_post(self, old_id: int, new_id: int) -> None:
        entry = self.pending.pop(old_id, None)
        if entry is None:
            return
        room_name, line = entry
        line.state = PENDING
        line.local_id = new_id
        line.cache_key = None
        self.pending[new_id] = entry
        self.changes.rooms.add(room_name)

    def failed_posts(self, room_name: str) -> list[Line]:
        return [line for r, line in self.pending.values() if r == room_name and line.state == FAILED]

    # ------------------------------------------------------------------ connection state

    def set_state(self, state: Conn, reason: str | None = None) -> None:
        """Every change of `state` goes through here (events below, and the app's own: a session
        started, failed to start, or given up)."""
        self.state = state
        if reason is not None:
            self.reason = reason
        if state != Conn.RECONNECTING:
            self.retry_at = None
        self.changes.status = True


def _waiting(line: Line) -> bool:
    """Our own post whose copy from the relay has not come back yet."""
    return line.mine and not line.echoed and line.kind <= ACTION and not line.history


def format_seconds(delay: float) -> str:
    """'0.5 s', '3 s': short delays keep their tenths, so a quick retry does not read '0 s'."""
    return f"{delay:.1f} s" if delay < 10 else f"{delay:.0f} s"
