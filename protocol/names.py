"""Room names, nicks, addresses' text forms and sanitizing of text from others. Pure functions."""

from __future__ import annotations

import functools
import re
import unicodedata

from .frames import MAX_TEXT as MAX_TEXT_BYTES  # one limit, the wire format's

MAX_ROOM_LEN = 32
MAX_NICK_LEN = 24
MAX_TOPIC_BYTES = 300
MAX_AWAY_BYTES = 200
MAX_REASON_BYTES = 200  # a leave or quit reason: longer ones are cut (a goodbye cannot be refused)

_ROOM_RE = re.compile(r"[A-Za-z0-9._-]{1,32}")


class InputError(ValueError):
    """Input or a command refused; str() is a one-line explanation for the user. Catch this one:
    each kind below is one."""


class InvalidName(InputError):
    """A room name or nick that breaks the rules."""


class TextTooLong(InputError):
    """A message, topic, away text or reason over its byte limit."""


class LimitReached(InputError):
    """A count limit: too many peers, too many rooms."""


class Refused(InputError):
    """A command the current state refuses: not in that room, no one by that nick, nothing to retry."""


def canonical_room(name: str) -> str:
    """'#Lobby' -> 'lobby'. Raises InvalidName with a one-line reason."""
    raw = name[1:] if name.startswith("#") else name
    if not raw:
        raise InvalidName("room name is empty")
    if len(raw) > MAX_ROOM_LEN:
        raise InvalidName(f"room name is longer than {MAX_ROOM_LEN} characters")
    if not _ROOM_RE.fullmatch(raw):
        raise InvalidName(f"room name {name!r} may only use letters, digits, '-', '_' and '.'")
    return raw.lower()


def is_direct(room: str) -> bool:
    return room.startswith("@")


# Default_Ignorable_Code_Point (Unicode DerivedCoreProperties.txt, unchanged from 14.0 to 16.0):
# invisible characters that render as nothing, so "ali\u034fce" and "alice\u3164" look like "alice".
_IGNORABLE_RANGES = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
_DROP_IGNORABLES: dict[int, None] = {cp: None for lo, hi in _IGNORABLE_RANGES for cp in range(lo, hi + 1)}
_JOINERS = "\u200c\u200d"  # ZWNJ/ZWJ: needed inside words of some scripts, and in emoji


def is_ignorable(ch: str) -> bool:
    """Is `ch` a default-ignorable code point (rendered as nothing)?"""
    return ord(ch) in _DROP_IGNORABLES


def check_nick(nick: str) -> str:
    """A valid nick, NFKC-normalised (so 'ａｌｉｃｅ' is 'alice'); InvalidName with a one-line reason.

    Invisible (default-ignorable) characters are refused, except a joiner between two non-ASCII
    characters, where some scripts and emoji need one; `nick_key` ignores them all anyway."""
    if not nick:
        raise InvalidName("nick is empty")
    if len(nick) > 4 * MAX_NICK_LEN:  # bound the work before normalising (NFKC may expand 18x)
        raise InvalidName(f"nick is longer than {MAX_NICK_LEN} characters")
    nick = unicodedata.normalize("NFKC", nick)
    if len(nick) > MAX_NICK_LEN:
        raise InvalidName(f"nick is longer than {MAX_NICK_LEN} characters")
    if nick[0] in "@#":
        raise InvalidName("nick may not start with '@' or '#'")
    last = len(nick) - 1
    for i, ch in enumerate(nick):
        if ch in _JOINERS and 0 < i < last and not (nick[i - 1].isascii() or nick[i + 1].isascii()):
            continue
        if is_ignorable(ch):
            raise InvalidName(f"nick may not contain invisible characters (U+{ord(ch):04X})")
        if ch.isspace() or not ch.isprintable():
            raise InvalidName("nick may only use printable characters without spaces")
    return nick


def _confusable_table() -> dict[int, str]:
    from ._confusables import DATA

    table: dict[int, str] = {}
    for entry in DATA.split(";"):
        if entry:
            src, dst = entry.split(":")
            table[int(src, 16)] = "".join(chr(int(h, 16)) for h in dst.split())
    return table


_SKELETON = _confusable_table()


def _fold(text: str) -> str:
    """NFKC, casefold, NFKC again (casefolding can denormalise), without invisible characters."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return folded.translate(_DROP_IGNORABLES)


@functools.lru_cache(maxsize=16384)  # a join compares against every member (up to 1,000): ~8 µs each
def nick_key(nick: str) -> str:
    """The form under which two nicks are the same nick: every lookup by nick (relay, peer, app)
    compares `nick_key(a) == nick_key(b)`, never the raw strings; a uniqueness check also
    refuses a look-alike across case, whose other key (`nick_keys`, `look_alike`) meets it.

    Case, width and compatibility forms (NFKC, casefold), invisible characters (dropped) and
    look-alikes from other scripts (the Unicode TR39 confusable skeleton: Cyrillic 'а' is Latin
    'a', '0' is 'o') do not make nicks different. A key, not for display ('m' becomes 'rn').
    Idempotent: folding and skeleton are repeated until nothing changes."""
    return _skeleton_key(nick)


@functools.lru_cache(maxsize=16384)
def nick_keys(nick: str) -> frozenset[str]:
    """The keys of `nick`: two nicks look alike when their keys meet, and a nick is taken when one
    of its keys is one of a held nick's (relay sessions, registered nicks, a cluster's claims).
    `nick_key(nick)` is one of them, the one lookups use.

    One key cannot do: `nick_key` folds case before the confusable skeleton, so capital I is i
    there, while on the screen it is l ('aIice' shows as 'alice'). The other key reads the nick
    as shown first (its skeleton, case kept: 'I' is 'l', Greek 'Β' is 'B'), then folds it. So
    `aIice` is `alice` (as shown) and `aiice` (by case): both are taken while it is held."""
    shown = unicodedata.normalize("NFKC", nick[: 4 * MAX_NICK_LEN]).translate(_DROP_IGNORABLES)
    return frozenset((nick_key(nick), nick_key(unicodedata.normalize("NFD", shown).translate(_SKELETON))))


def look_alike(a: str, b: str) -> bool:
    """Do nicks `a` and `b` look alike (`nick_keys` meet)? Then they are not both held at once."""
    return nick_key(a) == nick_key(b) or not nick_keys(a).isdisjoint(nick_keys(b))


def _skeleton_key(nick: str) -> str:
    key = _fold(nick)
    for _ in range(8):
        nxt = _fold(unicodedata.normalize("NFD", key).translate(_SKELETON))
        if nxt == key:
            break
        key = nxt
    return key


def check_text(text: str, limit: int = MAX_TEXT_BYTES, what: str = "message") -> str:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise TextTooLong(f"{what} is {size} bytes of UTF-8; the limit is {limit}")
    return text


def clip_utf8(text: str, limit: int) -> str:
    """`text` cut to at most `limit` bytes of UTF-8, at a character boundary."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


def default_nick(login: str) -> str:
    """A valid nick made from a login name."""
    login = unicodedata.normalize("NFKC", login[: 4 * MAX_NICK_LEN]).translate(_DROP_IGNORABLES)
    cleaned = "".join(ch for ch in login if ch.isprintable() and not ch.isspace()).lstrip("@#")
    try:
        return check_nick(cleaned[:MAX_NICK_LEN])
    except InvalidName:
        return "guest"


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
