"""Turning model lines into terminal rows (textual Strips), cached per line and width.

Layout of a message row (WeeChat style, nicks right-aligned in a column):

    14:02        alice │ hello there, this text wraps under
                       │ itself when it is long
"""

from __future__ import annotations

from datetime import datetime

from rich.cells import cell_len, chop_cells
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.theme import BUILTIN_THEMES

from udproom.protocol.names import sanitize

from . import model as m
from .theme import DEFAULT_THEME, Palette, palette_for


def wrap(text: str, width: int) -> list[str]:
    """Greedy word wrap by terminal cells; words longer than a row are split."""
    width = max(width, 1)
    if cell_len(text) <= width:
        return [text]
    rows: list[str] = []
    cur = ""
    cur_w = 0
    for word in text.split(" "):
        w = cell_len(word)
        if cur_w and cur_w + 1 + w <= width:
            cur += " " + word
            cur_w += 1 + w
            continue
        if cur_w or cur:
            rows.append(cur)
            cur, cur_w = "", 0
        if w > width:
            pieces = chop_cells(word, width)
            rows.extend(pieces[:-1])
            cur = pieces[-1]
            cur_w = cell_len(cur)
        else:
            cur, cur_w = word, w
    rows.append(cur)
    return rows


def cut(text: str, width: int) -> str:
    """`text` in at most `width` cells: a longer one is cut and ends with an ellipsis."""
    if cell_len(text) <= width:
        return text
    return chop_cells(text, max(width - 1, 1))[0] + "…" if width > 1 else "…"[:width]


def _fit(text: str, width: int) -> str:
    """Right-align `text` in `width` cells, truncating with an ellipsis."""
    text = cut(text, width)
    return " " * (width - cell_len(text)) + text


class Renderer:
    """Renders lines for one width; the MessageView owns one."""

    def __init__(
        self, width: int, tz=None, base: Style | None = None, palette: Palette | None = None
    ) -> None:
        self.width = max(width, 10)
        self.tz = tz
        self.base = base or Style()
        self.p = palette or palette_for(BUILTIN_THEMES[DEFAULT_THEME])
        self.nick_w = 11 if self.width >= 60 else 7
        self.prefix_w = 6 + self.nick_w + 3  # "HH:MM " + nick + " │ "
        self.key = (self.width, self.tz, self.base, self.p.name)
        self._time_cache: dict[int, str] = {}
        self._day_rules: dict[float, Strip] = {}

    def hhmm(self, ts: float) -> str:
        minute = int(ts // 60)
        s = self._time_cache.get(minute)
        if s is None:
            s = datetime.fromtimestamp(ts, self.tz).strftime("%H:%M")
            if len(self._time_cache) > 4096:
                self._time_cache.clear()
            self._time_cache[minute] = s
        return s

    def layout(self, line: m.Line):
        """(row texts, parts) for `line`: cheap, cached; enough to know its height."""
        if line.cache_key is self.key:
            return line.cache
        parts = self._parts(line)
        text, suffix = parts[4], parts[7]
        avail = self.width - self.prefix_w
        rows = wrap(text, max(avail, 4))
        if suffix:
            suffix_w = sum(cell_len(seg.text) for seg in suffix)
            if cell_len(rows[-1]) + suffix_w > avail:
                rows.append("")
        layout = (rows, parts)
        line.cache_key = self.key
        line.cache = layout
        line.strips = None
        return layout

    def height(self, line: m.Line) -> int:
        return len(self.layout(line)[0])

    def strips(self, line: m.Line) -> list[Strip]:
        rows, parts = self.layout(line)
        strips = line.strips
        if strips is None:
            strips = line.strips = self._render(line, rows, parts)
        return strips  # type: ignore[return-value]

    def _finish(self, segments: list[Segment], bg: Style | None = None) -> Strip:
        strip = Strip(segments)
        strip = strip.extend_cell_length(self.width).crop(0, self.width)
        base = self.base + bg if bg is not None else self.base
        return strip.apply_style(base)

    def rule(self, label: str, style: Style) -> Strip:
        label = f" {label} "
        lw = cell_len(label)
        left = max((self.width - lw) // 2, 2)
        right = max(self.width - lw - left, 0)
        return self._finish([Segment("─" * left, style), Segment(label, style), Segment("─" * right, style)])

    def day_rule(self, day: float) -> Strip:
        """The separator drawn above the first line of a day (`day`: local midnight)."""
        rules = self._day_rules
        strip = rules.get(day)
        if strip is None:
            label = datetime.fromtimestamp(day, self.tz).strftime("%A %d %B %Y")
            strip = rules[day] = self.rule(label, self.p.DAY)
        return strip

    def _parts(self, line: m.Line):
        kind = line.kind
        p = self.p
        text_style = p.TEXT
        sep = p.SEP
        sep_char = " │ "
        bg = None
        nick_col_style = p.DIM
        # one path to the screen for every line's text: others' text was sanitised as it
        # arrived; our own (a pasted tab) and local notices quoting what we typed are here
        text = sanitize(line.text)
        if kind == m.MSG:
            nick_col = line.nick
            nick_col_style = p.nick(line.nick, bold=line.mine)
            if line.mine:
                sep, sep_char = p.SEP_MINE, " ┃ "
            elif line.mention:
                sep, sep_char = p.SEP_MENTION, " ┃ "
                text_style = p.TEXT_MENTION
                bg = p.MENTION_BG
        elif kind == m.ACTION:
            nick_col = "*"
            nick_col_style = p.nick(line.nick, bold=True)
            text_style = p.ACTION
            text = line.nick + " " + text
            if line.mine:
                sep, sep_char = p.SEP_MINE, " ┃ "
            elif line.mention:
                sep, sep_char = p.SEP_MENTION, " ┃ "
                bg = p.MENTION_BG
        elif kind == m.JOIN:
            nick_col, nick_col_style, text_style = "-->", p.JOIN, p.DIM
            text = f"{line.nick} joined"
        elif kind == m.LEAVE:
            nick_col, nick_col_style, text_style = "<--", p.LEAVE, p.DIM
            text = f"{line.nick} left" + (f" ({line.text})" if line.text else "")
        elif kind == m.TIMEOUT:
            nick_col, nick_col_style, text_style = "--x", p.TIMEOUT, p.DIM
            text = f"{line.nick} timed out"
        elif kind == m.NICK:
            nick_col, text_style = "--", p.DIM
            text = (
                f"you are now known as {line.text}"
                if line.mine
                else f"{line.nick} is now known as {line.text}"
            )
        elif kind == m.TOPIC:
            nick_col, text_style = "--", p.DIM
            text = (
                f"{line.nick} set the topic: {line.text}" if line.text else f"{line.nick} cleared the topic"
            )
        elif kind == m.AWAY:
            nick_col, text_style = "--", p.DIM
            if line.mine:
                text = f"you are marked away: {line.text}" if line.text else "you are back"
            else:
                text = f"{line.nick} is away: {line.text}" if line.text else f"{line.nick} is back"
        elif kind == m.NOTICE:
            nick_col, nick_col_style, text_style = "-!-", p.NOTICE, p.NOTICE
        elif kind == m.ERROR:
            nick_col, nick_col_style, text_style = "!!", p.ERROR, p.FAILED
        else:  # INFO
            nick_col, text_style = "--", p.DIM

        if line.history and kind in (m.MSG, m.ACTION):
            text_style = p.HISTORY + Style(italic=kind == m.ACTION)
            nick_col_style = nick_col_style + p.HISTORY_NICK
            sep, sep_char, bg = p.SEP, " │ ", None
        suffix: list[Segment] = []
        if line.mine and kind in (m.MSG, m.ACTION):
            if line.state == m.PENDING:
                text_style = p.PENDING
                suffix = [Segment(" ◌", p.PENDING)]
            elif line.state == m.FAILED:
                text_style = p.FAILED
                suffix = [Segment(" ✗ not delivered", p.FAILED)]

        return (nick_col, nick_col_style, sep, text, text, text_style, bg, suffix, sep_char)

    def _render(self, line: m.Line, rows: list[str], parts) -> list[Strip]:
        nick_col, nick_col_style, sep, _, _text, text_style, bg, suffix, sep_char = parts
        time_text = self.hhmm(line.ts) + " "
        out = []
        blank_time = " " * 6
        blank_nick = " " * self.nick_w
        for i, row in enumerate(rows):
            if i == 0:
                segs = [Segment(time_text, self.p.TIME), Segment(_fit(nick_col, self.nick_w), nick_col_style)]
            else:
                segs = [Segment(blank_time), Segment(blank_nick)]
            segs.append(Segment(sep_char, sep))
            segs.append(Segment(row, text_style))
            if i == len(rows) - 1:
                segs.extend(suffix)
            out.append(self._finish(segs, bg))
        return out
