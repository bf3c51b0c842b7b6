"""Room names, nicks, addresses' text forms and sanitizing of text from others. Pure functions."""

from __future__ import annotations

import re
import unicodedata

MAX_TEXT_BYTES = 1000
MAX_ROOM_LEN = 32
MAX_NICK_LEN = 24
MAX_TOPIC_BYTES = 300
MAX_AWAY_BYTES = 200
MAX_REASON_BYTES = 200  # a leave or quit reason: longer ones are cut (a goodbye cannot be refused)

_ROOM_RE = re.compile(r"[A-Za-z0-9._-]{1,32}")


class NameError_(ValueError):
    """A room name, nick or text that breaks the rules; str() is a one-line explanation."""


def canonical_room(name: str) -> str:
    """'#Lobby' -> 'lobby'. Raises NameError_ with a one-line reason."""
    raw = name[1:] if name.startswith("#") else name
    if not raw:
        raise NameError_("room name is empty")
    if len(raw) > MAX_ROOM_LEN:
        raise NameError_(f"room name is longer than {MAX_ROOM_LEN} characters")
    if not _ROOM_RE.fullmatch(raw):
        raise NameError_(f"room name {name!r} may only use letters, digits, '-', '_' and '.'")
    return raw.lower()


def is_direct(room: str) -> bool:
    return room.startswith("@")


def check_nick(nick: str) -> str:
    if not nick:
        raise NameError_("nick is empty")
    if len(nick) > MAX_NICK_LEN:
        raise NameError_(f"nick is longer than {MAX_NICK_LEN} characters")
    if nick[0] in "@#":
        raise NameError_("nick may not start with '@' or '#'")
    for ch in nick:
        if ch.isspace() or not ch.isprintable():
            raise NameError_("nick may only use printable characters without spaces")
    return nick


def nick_key(nick: str) -> str:
    """The form under which two nicks are the same nick: every uniqueness check and every lookup
    by nick (relay, peer, app) compares `nick_key(a) == nick_key(b)`, never the raw strings."""
    return nick.casefold()


def check_text(text: str, limit: int = MAX_TEXT_BYTES, what: str = "message") -> str:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise NameError_(f"{what} is {size} bytes of UTF-8; the limit is {limit}")
    return text


def clip_utf8(text: str, limit: int) -> str:
    """`text` cut to at most `limit` bytes of UTF-8, at a character boundary."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


def default_nick(login: str) -> str:
    """A valid nick made from a login name."""
    cleaned = "".join(ch for ch in login if ch.isprintable() and not ch.isspace()).lstrip("@#")
    return cleaned[:MAX_NICK_LEN] or "guest"


# Control characters (C0, DEL, C1), and bidi overrides / isolates that can reorder a line.
_BIDI = {"\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"}


def sanitize(text: str) -> str:
    """Make text from others safe for a terminal: no escape sequences, no control characters.

    Tabs become a space; every other control or format-override character is replaced by U+FFFD
    (so nothing is silently hidden). Newlines are flattened to a visible '⏎ '.
    """
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif ch == "\t":
            out.append(" ")
        elif ch in "\u200c\u200d":  # joiners inside emoji and scripts are harmless
            out.append(ch)
        elif ch in "\r\n":
            out.append("⏎ ")
        elif ch in _BIDI or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            out.append("\ufffd")
        else:
            out.append(ch)  # e.g. non-ASCII spaces
    return "".join(out)
