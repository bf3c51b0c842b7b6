"""The two one-row lines of the chat screen: the topic line (top) and the status line (bottom).

Both read the ChatModel and are redrawn by the app (`show`); each updates its Static only when
its text changed, without a layout pass. The status line also holds the short-lived notes
(`flash`) and lays its parts out by priority for the width it has.
"""

from __future__ import annotations

import math
import time

from rich.text import Text
from textual.widgets import Static

from . import model as m
from .model import Conn
from .theme import Palette

STICKY_SECONDS = 8.0  # a refusal stays in the status line this long (or until the next keystroke)
FLASH_SECONDS = 4.0  # a note (`flash`) stays this long (or until the next keystroke)

#: parts of the status line in display order
ORDER = ("state", "rtt", "away", "mode", "key", "share", "room", "act", "flash")
#: what to give up, in this order, while the line is too long for the width
SHRINK = (
    ("short", "key"),
    ("drop", "rtt"),
    ("drop", "key"),
    ("drop", "mode"),
    ("short", "share"),
    ("short", "state"),
    ("sep", ""),
    ("short", "away"),
    ("short", "room"),
    ("drop", "share"),
    ("drop", "flash"),
)


Parts = dict[str, tuple[Text, Text | None]]  # key -> (full text, short text or None)


class OneLine(Static):
    """A one-row Static updated only when its text changed (no layout pass)."""

    def set_text(self, text: Text) -> None:
        if getattr(self, "_text", None) != text:
            self._text = text
            self.update(text, layout=False)


class TopicLine(OneLine):
    """The room on screen and its topic (or what kind of place it is)."""

    def show(self, chat: m.ChatModel) -> None:
        room = chat.current
        p = self.app.palette
        t = Text(no_wrap=True, overflow="ellipsis")
        if room is chat.status_room:
            t.append(" udproom", f"bold {p.title}")
            t.append("  ·  no room open: /join ROOM", p.muted)
        else:
            t.append(f" {room.label}", f"bold {p.title}")
            if room.direct:
                t.append(f"  ·  direct conversation with {room.name[1:]}", p.muted)
            elif room.topic:
                t.append("  ·  ", p.faint)
                t.append(room.topic, p.text)
            else:
                t.append("  ·  no topic (/topic TEXT sets one)", p.faint)
        self.set_text(t)


def state_part(chat: m.ChatModel, p: Palette) -> tuple[Text, Text | None]:
    """The connection state, long and short."""
    state = chat.state
    if state == Conn.CONNECTED:
        return Text.assemble((" ● ", p.ok), ("connected", p.ok)), Text(" ●", p.ok)
    if state == Conn.STALLED:
        quiet = int(max(0.0, time.monotonic() - chat.stalled_since))
        return Text(f" ◌ no answer from the relay for {quiet} s", p.warn), Text(f" ◌ quiet {quiet} s", p.warn)
    if state == Conn.CONNECTING:
        where = f"connecting to {chat.address}…" if chat.address else "connecting…"
        return Text.assemble((" ◌ ", p.warn), (where, p.warn)), Text(" ◌ connecting…", p.warn)
    if state == Conn.RECONNECTING:
        left = math.ceil(max(0, (chat.retry_at or 0) - time.monotonic()))
        if not chat.connected_once:
            where = f" from {chat.address}" if chat.address else ""
            return Text(f" ↻ no answer{where} · retrying in {left} s", p.bad), Text(
                f" ↻ no answer, retry {left} s", p.bad
            )
        full = Text(f" ↻ reconnecting in {left} s", p.bad)
        if chat.reason:
            full.append(f" ({chat.reason})", p.muted)
        return full, Text(f" ↻ retry {left} s", p.bad)
    if state == Conn.REFUSED:
        return Text(f" ✗ refused: {chat.reason}", p.bad), Text(" ✗ refused", p.bad)
    if state == Conn.FAILED:
        return Text(f" ✗ {chat.reason or 'failed'}", p.bad), Text(" ✗ failed", p.bad)
    return Text(" ○ offline", p.muted), None


def session_parts(chat: m.ChatModel, parts: Parts, p: Palette) -> None:
    """State, RTT, away, mode and the addresses to share."""
    parts["state"] = state_part(chat, p)
    if chat.state == Conn.CONNECTED and chat.rtt is not None:
        ms = chat.rtt * 1000
        parts["rtt"] = (Text(f" {ms:.0f} ms" if ms >= 0.5 else " <1 ms", p.muted), None)
    if chat.away is not None:
        away = Text(f"away: {chat.away}" if chat.away else "away", f"bold {p.warn}")
        parts["away"] = (away, Text("away", f"bold {p.warn}"))
    if chat.mode:
        parts["mode"] = (Text(chat.mode, p.mode), None)
    if chat.relay_key:
        # the relay's key as it proved it: compare it with what its operator sees (`relay key ...`)
        fp = chat.relay_key
        parts["key"] = (Text(f"relay key {fp}", p.muted), Text(f"key {fp[:4]}…", p.muted))
    if chat.share:
        # what to give others: `--join ADDRESS` (a relay we host) or `--peer ADDRESS` (direct)
        direct = chat.mode.startswith("direct")
        full = Text("others peer with: " if direct else "others join: ", p.muted)
        full.append(", ".join(chat.share), f"bold {p.warn}")
        short = Text("peer: " if direct else "join: ", p.muted)
        short.append(chat.share[0] + (" …" if len(chat.share) > 1 else ""), f"bold {p.warn}")
        parts["share"] = (full, short)


def room_parts(chat: m.ChatModel, follow: bool, new_below: int, parts: Parts, p: Palette) -> None:
    """The room on screen (and whether the view is scrolled up), and the rooms with activity."""
    room = chat.current
    if room is not chat.status_room:
        t = Text(room.label, f"bold {p.title}")
        short = None
        if not follow:
            note = f"{new_below} new below, End shows them" if new_below else "scrolled up, End returns"
            t.append(f" · {note}", p.warn)
            short = Text(room.label, f"bold {p.title}")
            short.append(f" ({new_below} new ↓)" if new_below else " (↑)", p.warn)
        parts["room"] = (t, short)
    hot = [
        (i + 1, chat.rooms[name])
        for i, name in enumerate(chat.room_order())
        if name != chat.active and (chat.rooms[name].unread or chat.rooms[name].mentions)
    ]
    if hot:
        t = Text("act: ", p.muted)
        for j, (i, r) in enumerate(hot):
            if j:
                t.append(",", p.faint)
            t.append(f"{i}" + ("!" if r.mentions else ""), f"bold {p.warn}" if r.mentions else p.ok)
        parts["act"] = (t, None)


def fit(parts: Parts, width: int, right: Text, p: Palette) -> Text:
    """Lay the parts out in `ORDER` for `width` (with `right` at the right edge), giving up the
    least useful first (`SHRINK`)."""
    use = dict.fromkeys(parts, 0)  # 0 full, 1 short

    def build(sep: tuple[str, str]) -> Text:
        t = Text(no_wrap=True, overflow="ellipsis")
        first = True
        for key in ORDER:
            if key not in use:
                continue
            full, short = parts[key]
            if not first and key != "rtt":
                t.append(*sep)
            first = False
            t.append_text(short if use[key] and short is not None else full)
        return t

    sep = (" │ ", p.rule)
    t = build(sep)
    for op, key in SHRINK:
        if t.cell_len + right.cell_len <= width:
            break
        if op == "sep":
            sep = ("│", p.rule)
        elif key in use:
            if op == "drop":
                del use[key]
            else:
                use[key] = 1
        t = build(sep)
    room_for_left = max(width - right.cell_len, 1)
    if t.cell_len > room_for_left:
        t.truncate(room_for_left, overflow="ellipsis")
    t.append(" " * (width - t.cell_len - right.cell_len))
    t.append_text(right)
    return t


class StatusLine(OneLine):
    """The status line: connection, room, activity, and one note (a flash or a refusal)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.note = ""  # a short-lived note (`flash`)
        self.note_until = 0.0  # time.monotonic() it goes
        self.note_until_room: str | None = None  # ... or as soon as this room is open

    def flash(self, text: str, until_room: str | None = None) -> None:
        self.note = text
        self.note_until = time.monotonic() + FLASH_SECONDS
        self.note_until_room = until_room

    def typed(self, chat: m.ChatModel) -> bool:
        """A keystroke clears the note and a refusal; True if there was one."""
        if not (self.note or chat.sticky):
            return False
        self.note = chat.sticky = ""
        return True

    def _expire(self, chat: m.ChatModel) -> None:
        now = time.monotonic()
        opened = self.note_until_room is not None and self.note_until_room in chat.rooms
        if self.note and (now >= self.note_until or opened):
            self.note = ""
        if chat.sticky and now >= chat.sticky_at + STICKY_SECONDS:
            chat.sticky = ""  # a refusal: the next keystroke clears it, or these few seconds

    def show(self, chat: m.ChatModel, follow: bool, new_below: int, width: int) -> None:
        """Lay the line out for `width` (`follow`/`new_below`: the messages pane's scroll)."""
        parts: Parts = {}
        p = self.app.palette
        session_parts(chat, parts, p)
        room_parts(chat, follow, new_below, parts, p)
        self._expire(chat)
        if self.note:
            parts["flash"] = (Text(self.note, p.warn), None)
        elif chat.sticky:
            parts["flash"] = (Text(chat.sticky, f"bold {p.bad}"), None)
        self.set_text(fit(parts, width, Text(" F1 help ", p.faint), p))
