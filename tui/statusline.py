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

STICKY_SECONDS = 8.0  # a refusal stays in the status line this long (or until the next keystroke)
FLASH_SECONDS = 4.0  # a note (`flash`) stays this long (or until the next keystroke)

#: parts of the status line in display order
ORDER = ("state", "rtt", "away", "mode", "share", "room", "act", "flash")
#: what to give up, in this order, while the line is too long for the width
SHRINK = (
    ("drop", "rtt"),
    ("drop", "mode"),
    ("short", "share"),
    ("short", "state"),
    ("sep", ""),
    ("short", "away"),
    ("short", "room"),
    ("drop", "share"),
    ("drop", "flash"),
)

GREEN, AMBER, RED, BLUE, TEAL = "#9ece6a", "#e0af68", "#f7768e", "#7aa2f7", "#73daca"
MUTED, FAINT, RULE, MODE, TEXT = "#737aa2", "#565f89", "#3b4261", "#a9b1d6", "#c0caf5"

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
        t = Text(no_wrap=True, overflow="ellipsis")
        if room is chat.status_room:
            t.append(" udproom", f"bold {BLUE}")
            t.append("  ·  no room open: /join ROOM", MUTED)
        else:
            t.append(f" {room.label}", f"bold {BLUE}")
            if room.direct:
                t.append(f"  ·  direct conversation with {room.name[1:]}", MUTED)
            elif room.topic:
                t.append("  ·  ", FAINT)
                t.append(room.topic, TEXT)
            else:
                t.append("  ·  no topic (/topic TEXT sets one)", FAINT)
        self.set_text(t)


def state_part(chat: m.ChatModel) -> tuple[Text, Text | None]:
    """The connection state, long and short."""
    state = chat.state
    if state == Conn.CONNECTED:
        return Text.assemble((" ● ", GREEN), ("connected", GREEN)), Text(" ●", GREEN)
    if state == Conn.STALLED:
        quiet = int(max(0.0, time.monotonic() - chat.stalled_since))
        return Text(f" ◌ no answer from the relay for {quiet} s", AMBER), Text(f" ◌ quiet {quiet} s", AMBER)
    if state == Conn.CONNECTING:
        where = f"connecting to {chat.address}…" if chat.address else "connecting…"
        return Text.assemble((" ◌ ", AMBER), (where, AMBER)), Text(" ◌ connecting…", AMBER)
    if state == Conn.RECONNECTING:
        left = math.ceil(max(0, (chat.retry_at or 0) - time.monotonic()))
        if not chat.connected_once:
            where = f" from {chat.address}" if chat.address else ""
            return Text(f" ↻ no answer{where} · retrying in {left} s", RED), Text(
                f" ↻ no answer, retry {left} s", RED
            )
        full = Text(f" ↻ reconnecting in {left} s", RED)
        if chat.reason:
            full.append(f" ({chat.reason})", MUTED)
        return full, Text(f" ↻ retry {left} s", RED)
    if state == Conn.REFUSED:
        return Text(f" ✗ refused: {chat.reason}", RED), Text(" ✗ refused", RED)
    if state == Conn.FAILED:
        return Text(f" ✗ {chat.reason or 'failed'}", RED), Text(" ✗ failed", RED)
    return Text(" ○ offline", MUTED), None


def session_parts(chat: m.ChatModel, parts: Parts) -> None:
    """State, RTT, away, mode and the addresses to share."""
    parts["state"] = state_part(chat)
    if chat.state == Conn.CONNECTED and chat.rtt is not None:
        ms = chat.rtt * 1000
        parts["rtt"] = (Text(f" {ms:.0f} ms" if ms >= 0.5 else " <1 ms", MUTED), None)
    if chat.away is not None:
        away = Text(f"away: {chat.away}" if chat.away else "away", f"bold {AMBER}")
        parts["away"] = (away, Text("away", f"bold {AMBER}"))
    if chat.mode:
        parts["mode"] = (Text(chat.mode, MODE), None)
    if chat.share:
        # what to give others: `--join ADDRESS` (a relay we host) or `--peer ADDRESS` (direct)
        direct = chat.mode.startswith("direct")
        full = Text("others peer with: " if direct else "others join: ", MUTED)
        full.append(", ".join(chat.share), f"bold {AMBER}")
        short = Text("peer: " if direct else "join: ", MUTED)
        short.append(chat.share[0] + (" …" if len(chat.share) > 1 else ""), f"bold {AMBER}")
        parts["share"] = (full, short)


def room_parts(chat: m.ChatModel, follow: bool, new_below: int, parts: Parts) -> None:
    """The room on screen (and whether the view is scrolled up), and the rooms with activity."""
    room = chat.current
    if room is not chat.status_room:
        t = Text(room.label, f"bold {BLUE}")
        short = None
        if not follow:
            note = f"{new_below} new below, End shows them" if new_below else "scrolled up, End returns"
            t.append(f" · {note}", AMBER)
            short = Text(room.label, f"bold {BLUE}")
            short.append(f" ({new_below} new ↓)" if new_below else " (↑)", AMBER)
        parts["room"] = (t, short)
    hot = [
        (i + 1, chat.rooms[name])
        for i, name in enumerate(chat.room_order())
        if name != chat.active and (chat.rooms[name].unread or chat.rooms[name].mentions)
    ]
    if hot:
        t = Text("act: ", MUTED)
        for j, (i, r) in enumerate(hot):
            if j:
                t.append(",", FAINT)
            t.append(f"{i}" + ("!" if r.mentions else ""), f"bold {AMBER}" if r.mentions else TEAL)
        parts["act"] = (t, None)


def fit(parts: Parts, width: int, right: Text) -> Text:
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

    sep = (" │ ", RULE)
    t = build(sep)
    for op, key in SHRINK:
        if t.cell_len + right.cell_len <= width:
            break
        if op == "sep":
            sep = ("│", RULE)
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
        session_parts(chat, parts)
        room_parts(chat, follow, new_below, parts)
        self._expire(chat)
        if self.note:
            parts["flash"] = (Text(self.note, AMBER), None)
        elif chat.sticky:
            parts["flash"] = (Text(chat.sticky, f"bold {RED}"), None)
        self.set_text(fit(parts, width, Text(" F1 help ", FAINT)))
