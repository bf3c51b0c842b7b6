"""Alt+digit in real terminals.

A terminal sends Alt+1 as ESC followed by "1". Textual's sequence table maps ESC+digit to the
character macOS types for Option+digit ("\\x1b1" -> "¡", "\\x1b2" -> "™", "\\x1b3" -> "£", ...),
so without help Alt+3 arrives as a `pound_sign` key — indistinguishable from someone typing a
real "£" on a UK keyboard. `install_alt_digits()` changes those table entries so the parser yields
keys named `alt+0` … `alt+9` (with no character, so nothing is typed). Real "£", "§", "¢" …
then arrive as themselves and are typed into the input like any other character.

It is guarded: if a future Textual moves or reshapes the table, or stops turning a tuple entry into
`events.Key(entry.value, None)`, the table is left (or put back) as it was and the app runs with
Textual's own behaviour.
"""

from __future__ import annotations

import logging

log = logging.getLogger("udproom.tui")

DIGITS = "0123456789"


class _KeyName:
    """Stands in for a `textual.keys.Keys` member: the parser only reads `.value`."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"<key {self.value}>"


_installed: bool | None = None


def parse_keys(data: str) -> list[str]:
    """The key names Textual's terminal parser yields for raw terminal input `data`."""
    from textual import events
    from textual._xterm_parser import XTermParser

    parser = XTermParser()
    out = list(parser.feed(data))
    out.extend(parser.feed(""))  # end of input: flushes a lone ESC
    return [e.key for e in out if isinstance(e, events.Key)]


def install_alt_digits() -> bool:
    """Make ESC+digit parse as `alt+N`. Idempotent; returns whether it is in effect."""
    global _installed
    if _installed is not None:
        return _installed
    _installed = False
    try:
        from textual import _ansi_sequences

        table = _ansi_sequences.ANSI_SEQUENCES_KEYS
        saved = {d: table.get("\x1b" + d) for d in DIGITS}
        for d in DIGITS:
            table["\x1b" + d] = (_KeyName(f"alt+{d}"),)  # type: ignore[index]
    except Exception as e:
        log.warning("cannot remap Alt+digits (%s); Alt+N may arrive as Option characters", e)
        return False
    try:
        ok = parse_keys("\x1b2") == ["alt+2"] and parse_keys("£") == ["pound_sign"]
    except Exception:
        ok = False
    if not ok:
        for d, value in saved.items():
            if value is None:
                table.pop("\x1b" + d, None)  # type: ignore[attr-defined]
            else:
                table["\x1b" + d] = value  # type: ignore[index]
        log.warning("Textual's parser did not accept the Alt+digit remap; left as it was")
        return False
    _installed = True
    return True
