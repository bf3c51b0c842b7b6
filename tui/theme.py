"""udproom's colours, all taken from the app's Textual theme (`--theme NAME`, remembered in the config).

The stylesheet uses the theme's variables ($secondary, $warning, $surface...); text drawn in
Python (message rows, the lists, the status line) uses a `Palette` made from the same theme. On a
dark theme the theme's own colours are used as they are; on a light one their `text-*` variants
(the same hue, dark enough to read on a light background).
"""

from __future__ import annotations

import zlib

from rich.style import Style
from textual.color import Color
from textual.theme import BUILTIN_THEMES, Theme

DEFAULT_THEME = "tokyo-night"

# Nick colours: spread around the wheel; on a light theme each is darkened to read there too.
NICK_COLOURS = (
    "#e06c75",
    "#98c379",
    "#e5c07b",
    "#61afef",
    "#c678dd",
    "#56b6c2",
    "#d19a66",
    "#f0a6ca",
    "#9ece6a",
    "#7aa2f7",
    "#ff9e64",
    "#2ac3de",
)


def theme_names() -> list[str]:
    return sorted(BUILTIN_THEMES)


def nick_index(nick: str) -> int:
    return zlib.crc32(nick.casefold().encode("utf-8", "surrogatepass")) % len(NICK_COLOURS)


class Palette:
    """Colour strings (for `Text.append`) and `Style`s (for Segments) from one theme."""

    def __init__(self, theme: Theme) -> None:
        self.name = theme.name
        self.dark = theme.dark
        v = theme.to_color_system().generate()

        def role(name: str) -> str:
            return v[name] if theme.dark else v[f"text-{name}"]

        fg, bg = Color.parse(v["foreground"]), Color.parse(v["background"])

        def toward_fg(amount: float) -> str:
            return bg.blend(fg, amount).hex

        self.title = role("secondary")  # room names, the prompt, frames
        self.ok = role("success")
        self.warn = role("warning")
        self.bad = role("error")
        self.notice = role("primary")
        self.text = fg.hex
        self.mode = toward_fg(0.85)
        self.history = toward_fg(0.7)  # backfilled messages: from before we joined
        self.muted = toward_fg(0.55)
        self.faint = toward_fg(0.4)
        self.rule = v["panel"]
        self.inverse = bg.hex  # text on a coloured badge
        self.mention_bg = v["warning-muted"]
        nicks = NICK_COLOURS if theme.dark else tuple(Color.parse(c).darken(0.3).hex for c in NICK_COLOURS)
        self._nicks = [Style(color=c) for c in nicks]
        self._nicks_bold = [Style(color=c, bold=True) for c in nicks]
        # message rows
        self.TIME = Style(color=self.muted)
        self.SEP = Style(color=self.rule)
        self.SEP_MINE = Style(color=self.title, bold=True)
        self.SEP_MENTION = Style(color=self.warn, bold=True)
        self.TEXT = Style(color=self.text)
        self.TEXT_MENTION = Style(
            color=v["foreground-lighten-3" if theme.dark else "foreground-darken-3"], bold=True
        )
        self.MENTION_BG = Style(bgcolor=self.mention_bg)
        self.PENDING = Style(color=self.muted, italic=True)
        self.FAILED = Style(color=self.bad)
        self.DIM = Style(color=self.muted)
        self.JOIN = Style(color=self.ok)
        self.LEAVE = Style(color=self.bad)
        self.TIMEOUT = Style(color=self.warn)
        self.NOTICE = Style(color=self.notice)
        self.ERROR = Style(color=self.bad, bold=True)
        self.DAY = Style(color=self.faint)
        self.MARKER = Style(color=self.bad)
        self.ACTION = Style(color=self.text, italic=True)
        self.HISTORY = Style(color=self.history)
        self.HISTORY_NICK = Style(dim=True)
        # presence in the members pane
        self.presence = {
            "here": ("●", Style(color=self.ok)),
            "away": ("◐", Style(color=self.warn)),
            "timed out": ("○", Style(color=self.bad)),
            "unknown": ("?", Style(color=self.faint)),  # a DM with someone not in any room we are in
        }

    def nick(self, nick: str, bold: bool = False) -> Style:
        i = nick_index(nick)
        return self._nicks_bold[i] if bold else self._nicks[i]


_PALETTES: dict[str, Palette] = {}


def palette_for(theme: Theme) -> Palette:
    """The palette of `theme` (made once per theme name)."""
    p = _PALETTES.get(theme.name)
    if p is None:
        p = _PALETTES[theme.name] = Palette(theme)
    return p
