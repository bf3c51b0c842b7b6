"""What a terminal must never be sent from others: the check the sanitizer tests share."""

from __future__ import annotations

import unicodedata

#: bidi embeddings, overrides, isolates and marks: they reorder or disguise a line
BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
_JOINERS = "\u200c\u200d"


def unsafe(text: str) -> list[str]:
    """The characters of `text` a terminal would act on, or that reorder or hide text: controls
    (C0, C1), line and paragraph separators, bidi controls, format characters other than the
    joiners, surrogates, private-use and unassigned code points."""
    bad = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in BIDI or cat in ("Cc", "Cs", "Co", "Cn", "Zl", "Zp") or (cat == "Cf" and ch not in _JOINERS):
            bad.append(ch)
    return bad
