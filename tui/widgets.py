"""The chat screen's widgets. They read the ChatModel; the app tells them when to redraw."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Input

from udproom.protocol.names import sanitize

from . import model as m
from .render import Renderer, cut


class MessageView(ScrollView, can_focus=False):
    """The centre pane: renders only the visible rows of the active room (line API)."""

    class TopReached(Message):
        """Scrolled up to (or past) the top of the room's lines: time for an older page."""

    DEFAULT_CSS = """
    MessageView { overflow-x: hidden; }
    """

    def __init__(self, chat: m.ChatModel, **kwargs) -> None:
        super().__init__(**kwargs)
        self.chat = chat
        self._rows: list[Strip] = []
        self._room: m.Room | None = None
        self._renderer: Renderer | None = None
        self.follow = True  # stick to the bottom as lines arrive
        self._bottom_serial = -1  # newest line seen at the bottom (what is newer is "new below")

    def _get_renderer(self, width: int | None = None) -> Renderer:
        width = width or self.scrollable_content_region.width or self.size.width or 80
        base = self.rich_style
        r = self._renderer
        palette = self.app.palette
        if (
            r is None
            or r.width != max(width, 10)
            or r.base != base
            or r.tz is not self.chat.tz
            or r.p is not palette
        ):
            r = self._renderer = Renderer(width, self.chat.tz, base, palette)
        return r

    def _text_width(self, scrollbar: bool) -> int:
        return max(self.content_region.width - (self.styles.scrollbar_size_vertical if scrollbar else 0), 0)

    def rebuild(self) -> None:
        """Recompute rows for the active room (cheap: line renders are cached)."""
        room = self.chat.current
        switched = room is not self._room
        self._room = room
        anchor = None if switched or self.follow else self._top_line()
        # Lay out for the width beside the scrollbar this room needs: it comes and goes with the
        # number of rows (guessed first, to lay out twice only when the guess was wrong).
        height = self.scrollable_content_region.height
        bar = len(room.lines) >= height or (not switched and len(self._rows) > height)
        r = self._get_renderer(self._text_width(bar))
        rows = self._layout(room, r)
        if (len(rows) > height) != bar:
            r = self._get_renderer(self._text_width(not bar))
            rows = self._layout(room, r)
        self._rows = rows
        at_bottom = self.follow or switched
        self.virtual_size = Size(r.width, len(rows))
        if at_bottom:
            self.follow = True
            target = max(len(rows) - self.scrollable_content_region.height, 0)
            self.scroll_target_y = self.scroll_y = target
            self._seen_bottom()
        elif anchor is not None:
            self._hold(anchor)
        self.refresh()

    def _layout(self, room: m.Room, r: Renderer) -> list:
        # One entry per screen row: (line, row of that line), or a ready Strip (the unread marker,
        # a day separator). Only heights are computed here; rows are rendered when they scroll
        # into view. A day separator goes wherever the day changes, and at the top unless the
        # room's first line is from today.
        rows: list = []
        append = rows.append
        layout = r.layout
        lines = room.lines
        read_upto = room.read_upto if lines and lines[-1].serial != room.read_upto else -1
        # the unread marker goes above the first line from someone else after the last line
        # read: our own lines and local notices (nick "") are not news to us
        unread = False
        day_rule = r.day_rule
        prev_day = self.chat.day_of(self.chat.clock())
        for line in lines:
            if unread and line.nick and not line.mine:
                unread = False
                append(r.rule("new", r.p.MARKER))
            if line.day != prev_day:
                prev_day = line.day
                append(day_rule(prev_day))
            n = len(layout(line)[0])
            append((line, 0))
            if n > 1:
                for i in range(1, n):
                    append((line, i))
            if line.serial == read_upto:
                unread = True
        return rows

    def _top_line(self) -> tuple[m.Line, int, int] | None:
        """(line, row of that line, rows above it in the view) for the first message row shown."""
        top = int(self.scroll_y)
        rows = self._rows
        for index in range(top, min(top + self.scrollable_content_region.height, len(rows))):
            entry = rows[index]
            if not isinstance(entry, Strip):
                return entry[0], entry[1], index - top
        return None

    def _hold(self, anchor: tuple[m.Line, int, int]) -> None:
        """Scrolled up: keep the same line at the same place while lines arrive below and the
        oldest are trimmed above (the scroll offset follows the line, not the row number)."""
        line, row, above = anchor
        for index, entry in enumerate(self._rows):
            if not isinstance(entry, Strip) and entry[0] is line:
                top = min(
                    max(index + min(row, self._renderer.height(line) - 1) - above, 0), self.max_scroll_y
                )
                self.scroll_target_y = self.scroll_y = top
                self.follow = False  # what arrived is below, counted as new
                return

    def _seen_bottom(self) -> None:
        lines = self.chat.current.lines
        self._bottom_serial = lines[-1].serial if lines else -1

    def new_below(self) -> int:
        """Messages that arrived below the view since it was scrolled up."""
        if self.follow:
            return 0
        n = 0
        for line in reversed(self.chat.current.lines):
            if line.serial <= self._bottom_serial:
                break
            if line.kind <= m.ACTION:
                n += 1
        return n

    def to_bottom(self) -> None:
        self.follow = True
        self.scroll_target_y = self.scroll_y = self.max_scroll_y
        self._seen_bottom()

    def on_resize(self, event: events.Resize) -> None:
        self.rebuild()

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        self.follow = new >= self.max_scroll_y
        if self.follow:
            self._seen_bottom()
        elif new <= 0 < old:
            self.post_message(self.TopReached())

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        if self.scroll_y <= 0:
            self.post_message(self.TopReached())  # the wheel at the top: older lines

    def show_line(self, line: m.Line) -> bool:
        """Scroll so `line` is in view, a third of the way down (a search result's jump)."""
        for index, entry in enumerate(self._rows):
            if not isinstance(entry, Strip) and entry[0] is line:
                height = self.scrollable_content_region.height
                top = min(max(index - height // 3, 0), self.max_scroll_y)
                self.scroll_target_y = self.scroll_y = top
                self.follow = top >= self.max_scroll_y
                return True
        return False

    def page(self, direction: int) -> None:
        height = max(self.scrollable_content_region.height - 1, 1)
        target = min(max(self.scroll_y + direction * height, 0), self.max_scroll_y)
        self.scroll_target_y = self.scroll_y = target
        self.follow = self.scroll_y >= self.max_scroll_y
        if self.follow:
            self._seen_bottom()

    def render_line(self, y: int) -> Strip:
        index = self.scroll_offset.y + y
        rows = self._rows
        width = self.scrollable_content_region.width
        if 0 <= index < len(rows):
            entry = rows[index]
            if isinstance(entry, Strip):
                return entry
            line, i = entry
            return self._renderer.strips(line)[i]
        return Strip.blank(width, self.rich_style)

    def visible_text(self) -> list[str]:
        """The text of every row (tests and debugging)."""
        out = []
        for entry in self._rows:
            strip = entry if isinstance(entry, Strip) else self._renderer.strips(entry[0])[entry[1]]
            out.append(strip.text.rstrip())
        return out


class _ClickList(Widget):
    """A small list rendered as one Text; clicking a row posts `Picked`."""

    class Picked(Message):
        def __init__(self, sender: Widget, key: str) -> None:
            super().__init__()
            self.sender = sender
            self.key = key

    def __init__(self, chat: m.ChatModel, **kwargs) -> None:
        super().__init__(**kwargs)
        self.chat = chat
        self._keys: list[str] = []

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        if 0 <= offset.y < len(self._keys) and self._keys[offset.y]:
            self.post_message(self.Picked(self, self._keys[offset.y]))

    def get_content_height(self, container, viewport, width: int) -> int:
        self.build()
        self._height = max(len(self._keys), 1)
        return self._height

    def redraw(self) -> None:
        """Repaint; a layout pass only when the number of rows changed."""
        self.build()
        self.refresh(layout=max(len(self._keys), 1) != getattr(self, "_height", -1))

    def render(self) -> Text:
        return self.build()

    def build(self) -> Text:
        raise NotImplementedError


class RoomList(_ClickList):
    """Left pane: numbered rooms, unread counts, mention marks, the active one highlighted."""

    def build(self) -> Text:
        chat = self.chat
        out = Text(no_wrap=True, overflow="ellipsis", end="")
        keys: list[str] = []
        width = self.size.width or 20
        p = self.app.palette
        out.append("ROOMS\n", f"bold {p.faint}")
        keys.append("")
        order = chat.room_order()
        for i, name in enumerate(order):
            room = chat.rooms[name]
            active = name == chat.active
            num = f"{i + 1}" if i < 9 else " "
            label = room.label
            if room.mentions:
                badge = f" {room.unread}!"
            elif room.unread:
                badge = f" {room.unread}"
            else:
                badge = ""
            if active:
                num_style = f"{p.inverse} on {p.title}"
                style, badge_style = f"bold {num_style}", ""
            elif room.mentions:
                style, num_style, badge_style = f"bold {p.warn}", p.faint, f"bold {p.inverse} on {p.warn}"
            elif room.unread:
                style, num_style, badge_style = f"bold {p.text}", p.faint, f"bold {p.inverse} on {p.ok}"
            elif room.activity:
                style, num_style, badge_style = p.mode, p.faint, ""
            else:
                style, num_style, badge_style = p.muted, p.faint, ""
            room_w = max(width - 3 - len(badge), 3)
            label = cut(label, room_w)
            line = Text(no_wrap=True, end="")
            line.append(f"{num:>2} ", num_style)
            line.append(label.ljust(room_w) if active else label, style)
            if badge:
                if not active:
                    line.append(" " * max(room_w - len(label), 0), style)
                line.append(badge, badge_style or style)
            if active:
                line.pad_right(width - line.cell_len)
                line.stylize(style)
            out.append_text(line)
            out.append("\n")
            keys.append(name)
        if not order:
            out.append(" (none)\n", p.faint)
        self._keys = keys
        out.rstrip()
        return out


class MemberList(_ClickList):
    """Right pane: the active room's members with presence. A member's detail (presence, away
    message, operator or voiced, and the short fingerprint of their identity key, as /whois has
    it) is the tooltip of their row."""

    def on_mouse_move(self, event: events.MouseMove) -> None:
        offset = event.get_content_offset(self)
        nick = self._keys[offset.y] if offset is not None and 0 <= offset.y < len(self._keys) else ""
        detail = self.detail(nick) if nick else None
        if detail != self.tooltip:
            self.tooltip = detail

    def detail(self, nick: str) -> Text:
        """What the pane says of `nick` on hover: one line each (plain text, never markup)."""
        member = self.chat.current.members.get(nick)
        lines = [nick + (" (you)" if nick == self.chat.nick else "")]
        if member is not None:
            state = member.presence
            lines.append(f"away: {member.away}" if member.away else state)
            role = {"@": "operator", "+": "voiced"}.get(member.mode[:1], "")
            if role:
                lines.append(role)
        fp = self.app.key_fingerprint(nick)
        lines.append(f"key {fp}" if fp else "key not known")
        return Text("\n".join(lines))

    def build(self) -> Text:
        room = self.chat.current
        members = room.sorted_members()
        out = Text(no_wrap=True, overflow="ellipsis", end="")
        keys: list[str] = [""]
        presence = {x.nick: x.presence for x in members}
        if room.direct:
            # the other person: what the rooms we share say (a DM has no presence of its own)
            other = room.name[1:]
            presence[other] = self.chat.presence_of(other) or "unknown"
        offline = self.chat.presence_unknown  # disconnected: nobody's presence is known
        if offline:
            presence = dict.fromkeys(presence, "unknown")
        here = "?" if offline else sum(1 for p in presence.values() if p == "here")
        p = self.app.palette
        out.append(f"MEMBERS {here}/{len(members)}\n", f"bold {p.faint}")
        width = self.size.width or 20
        for member in members:
            glyph, gstyle = p.presence[presence.get(member.nick, member.presence)]
            out.append(f" {glyph} ", gstyle)
            is_me = member.nick == self.chat.nick
            style = p.nick(member.nick, bold=is_me)
            state = presence.get(member.nick, member.presence)
            if state == "timed out":
                style = Style(color=p.faint, strike=True)
            elif state == "away":
                style = style + Style(dim=True, italic=True)
            elif state == "unknown":
                style = Style(color=p.muted)
            if member.mode:  # "@" an operator of the room, "+" voiced
                out.append(member.mode, f"bold {p.faint}")
            # one row per member: a long nick is cut (the pane scrolls, it never wraps)
            out.append(cut(member.nick, width - 3 - len(member.mode) - (6 if is_me else 0)), style)
            if is_me:
                out.append(" (you)", p.faint)
            out.append("\n")
            keys.append(member.nick)
            if state == "unknown" and not offline:
                out.append("   not seen in any of\n   your rooms\n", f"italic {p.faint}")
                keys += ["", ""]
        self._keys = keys
        out.rstrip()
        return out


class ChatInput(Input):
    """The input line: Tab completes, Up/Down walk history."""

    BINDINGS = [
        Binding("tab", "complete", "Complete a nick, #room or /command", priority=False),
        Binding("up", "history(-1)", "Previous line from history"),
        Binding("down", "history(1)", "Next line from history"),
    ]

    class Complete(Message):
        pass

    class MultiPaste(Message):
        """A paste of several lines: the app sends each as its own message (or asks first)."""

        def __init__(self, lines: list[str]) -> None:
            super().__init__()
            self.lines = lines

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.history: list[str] = []
        self._hist_pos = 0
        self._draft = ""

    def remember(self, text: str) -> None:
        if text and (not self.history or self.history[-1] != text):
            self.history.append(text)
            del self.history[:-500]
        self._hist_pos = len(self.history)
        self._draft = ""

    def action_history(self, step: int) -> None:
        if not self.history:
            return
        if self._hist_pos == len(self.history):
            self._draft = self.value
        pos = min(max(self._hist_pos + step, 0), len(self.history))
        if pos == self._hist_pos:
            return
        self._hist_pos = pos
        self.value = self._draft if pos == len(self.history) else self.history[pos]
        self.cursor_position = len(self.value)

    def action_end(self, select: bool = False) -> None:
        """End: the end of the line; with nothing typed, the newest message."""
        if not self.value and not select:
            self.app.action_scroll_bottom()
            return
        super().action_end(select)

    def action_complete(self) -> None:
        self.post_message(self.Complete())

    async def _on_key(self, event: events.Key) -> None:
        """Keys apply in the order they were typed, also when they arrive in one burst (a fast
        typist, a script, a terminal without bracketed paste). Textual runs a focused widget's
        bindings (Enter, Backspace, ←...) only once the key has bubbled up to the app, after this
        input has already inserted the characters typed after it: run our own bindings here.
        (Input's own handler, next in the MRO, inserts printable characters.)"""
        if not event.is_printable:
            for binding in self._bindings.key_to_bindings.get(event.key, ()):
                if not binding.priority and await self.app.run_action(binding.action, self):
                    event.stop()
                    event.prevent_default()
                    return
            ch = event.character
            if ch and sanitize(ch) == ch:  # the zero-width joiners inside emoji and scripts
                event.stop()
                event.prevent_default()
                self.insert_text_at_cursor(ch)

    async def action_submit(self) -> None:
        """Enter: post what was typed before it and start a new line at once (the keys typed
        after it may already be waiting behind it)."""
        text = self.value
        self.value = ""
        self.post_message(self.Submitted(self, text))

    def _on_paste(self, event: events.Paste) -> None:
        # no escape sequence or bidi override on our own line (what others see is made safe too)
        lines = [sanitize(x) for x in event.text.splitlines() if x.strip()]
        if len(lines) <= 1:
            if lines:
                event.text = lines[0]  # Input's own handler (called after this one) inserts it
            return
        event.prevent_default()  # not Input's handler, which would keep only the first line
        event.stop()
        # what was typed around the cursor goes with the first and the last line
        before, after = self.value[: self.cursor_position], self.value[self.cursor_position :]
        lines[0] = before + lines[0]
        lines[-1] = lines[-1] + after
        self.value = ""
        self.post_message(self.MultiPaste(lines))
