"""Nicks: one definition of "the same nick" (`nick_key`), look-alikes, invisible characters, and
the sanitizer every string from others goes through before a terminal sees it."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from udproom.protocol import events as E
from udproom.protocol.names import (
    MAX_NICK_LEN,
    InvalidName,
    check_nick,
    default_nick,
    is_ignorable,
    nick_key,
    sanitize,
)

from ..terminal import unsafe
from .adversary import TRICKY_TEXT
from .harness import Room, client_addr

LOOKALIKES_OF_ALICE = [
    "alice",
    "Alice",
    "ALICE",
    "ali\u034fce",  # combining grapheme joiner
    "alice\u3164",  # Hangul filler
    "\u200balice",  # zero-width space
    "al\u00adice",  # soft hyphen
    "alice\ufe0f",  # variation selector
    "\u0430lice",  # Cyrillic а
    "\u0430l\u0456c\u0435",  # Cyrillic а, і, е
    "ａｌｉｃｅ",  # fullwidth
    "\U0001d41a\U0001d425\U0001d422\U0001d41c\U0001d41e",  # mathematical bold
    "ali\u0441e",  # Cyrillic с
    "al\u0131ce",  # dotless ı
]

DISTINCT = [
    "alice",
    "alicia",
    "alice2",
    "bob",
    "bobby",
    "carol",
    "Иван",
    "Ольга",
    "Дмитрий",
    "李雷",
    "韩梅梅",
    "محمد",
    "أحمد",
    "Νίκος",
    "Αλέξανδρος",
    "ʻIolani",
    "Zoë",
    "Zoe1",
]

# Characters that are invisible or format-only: what a hostile nick hides inside a familiar one.
IGNORABLES = [chr(c) for c in (0xAD, 0x34F, 0x61C, 0x115F, 0x180E, 0x200B, 0x200D, 0x2060, 0x3164, 0xFEFF)]
IGNORABLES += ["\ufe0f", "\U000e0001", "\U000e0100", "\ufff0", "\u202e"]


@pytest.mark.parametrize("nick", LOOKALIKES_OF_ALICE)
def test_lookalikes_collide(nick):
    assert nick_key(nick) == nick_key("alice")


def test_ordinary_distinct_nicks_stay_distinct():
    keys = [nick_key(n) for n in DISTINCT]
    assert len(set(keys)) == len(DISTINCT), [n for n in DISTINCT if keys.count(nick_key(n)) > 1]


def test_digits_that_look_like_letters_collide():
    assert nick_key("b0b") == nick_key("bob")
    assert nick_key("al1ce") == nick_key("allce") != nick_key("alice")


nicks = st.one_of(st.sampled_from(TRICKY_TEXT + LOOKALIKES_OF_ALICE + DISTINCT), st.text(max_size=30))


@given(nicks)
def test_nick_key_is_idempotent(nick):
    key = nick_key(nick)
    assert nick_key(key) == key


@given(nicks)
def test_nick_key_ignores_case_and_width(nick):
    key = nick_key(nick)
    if _case_stable(nick):
        assert nick_key(nick.upper()) == nick_key(nick.lower()) == key
    assert nick_key(unicodedata.normalize("NFKC", nick)) == key
    assert nick_key(unicodedata.normalize("NFKD", nick)) == key
    assert nick_key(unicodedata.normalize("NFC", nick)) == key


def _case_stable(nick: str) -> bool:
    # upper() is not invertible for every script (e.g. 'ß' -> 'SS', final sigma): compare only where
    # casefolding the upper-cased form gives the casefolded form back
    return nick.upper().casefold() == nick.casefold() == nick.lower().casefold()


@given(nicks, st.lists(st.tuples(st.integers(0, 40), st.sampled_from(IGNORABLES)), max_size=5))
def test_nick_key_ignores_invisible_characters(nick, inserts):
    s = nick
    for pos, ch in inserts:
        i = pos % (len(s) + 1)
        s = s[:i] + ch + s[i:]
    assert nick_key(s) == nick_key(nick)
    assert not any(is_ignorable(ch) for ch in nick_key(s))


@given(
    st.text(alphabet="abcdefghijkprstuvwxyz", min_size=1, max_size=12),
    st.text(alphabet="abcdefghijkprstuvwxyz", min_size=1, max_size=12),
)
def test_distinct_plain_latin_nicks_stay_distinct(a, b):
    # letters that no other lowercase ASCII letter (or pair) is a look-alike of
    if a != b:
        assert nick_key(a) != nick_key(b)


@pytest.mark.parametrize(
    "nick", ["ali\u034fce", "alice\u3164", "\u200balice", "al\u00adice", "a\u202eb", "bob\u2060"]
)
def test_check_nick_refuses_invisible_characters(nick):
    with pytest.raises(InvalidName, match="invisible"):
        check_nick(nick)


def test_check_nick_normalises_and_keeps_joiners_inside_scripts():
    assert check_nick("ａｌｉｃｅ") == "alice"
    assert check_nick("می\u200cخواهم") == "می\u200cخواهم"  # Persian ZWNJ inside a word
    assert check_nick("👩\u200d💻") == "👩\u200d💻"  # emoji ZWJ sequence
    with pytest.raises(InvalidName):
        check_nick("ali\u200dce")  # a joiner between Latin letters hides nothing legitimate
    with pytest.raises(InvalidName, match="longer"):
        check_nick("\ufdfa" * 2)  # NFKC expands this to 18 characters each
    with pytest.raises(InvalidName):
        check_nick("a\u00a0b")  # no-break space is a space
    with pytest.raises(InvalidName, match="longer"):
        check_nick("x" * 10_000)


@given(st.text(max_size=200))
def test_check_nick_output_is_a_fixed_point(nick):
    try:
        out = check_nick(nick)
    except InvalidName:
        return
    assert check_nick(out) == out
    assert 0 < len(out) <= MAX_NICK_LEN
    assert sanitize(out) == out


@given(st.text(max_size=200))
def test_default_nick_is_always_valid(login):
    assert check_nick(default_nick(login)) == default_nick(login)


# --------------------------------------------------------------------------- the relay uses it


def test_relay_refuses_a_lookalike_of_a_member():
    room = Room(1, seed=5)
    room.add_client(1, nick="alice")
    room.wait_joined()
    for i, fake in enumerate(["\u0430lice", "ALICE", "ａｌｉｃｅ"], start=2):
        addr = client_addr(i)
        room.add_client(i, nick=fake)
        room.settle(2.0)
        # nicks are unique per relay: the look-alike is refused at its Hello, before any room
        refused = room.events(addr, E.Refused)
        assert refused and refused[0].reason == f"nick {check_nick(fake)} is in use on this relay", fake
        assert not room.clients[addr].connected
        assert not any(isinstance(e, E.RoomJoined) for e in room.events(addr))
    members = {m.session.nick for m in room.relay.rooms[room.room].members.values()}
    assert members == {"n0", "alice"}


# --------------------------------------------------------------------------- sanitize


@pytest.mark.parametrize(
    "raw, shown",
    [
        ("plain text, ünïcödé, 中文, 😀", "plain text, ünïcödé, 中文, 😀"),
        ("a\tb", "a b"),  # a tab is a space
        ("a\nb\r\n", "a⏎ b⏎ ⏎ "),  # line breaks are visible, never real
        ("\x1b[2Jx\x07", "\ufffd[2Jx\ufffd"),  # Cc (C0)
        ("\x9b31m\x85", "\ufffd31m\ufffd"),  # Cc (C1: CSI, NEL)
        ("a\u202eb\u2066c", "a\ufffdb\ufffdc"),  # bidi overrides and isolates
        ("a\u200bb\u2060c", "a\ufffdb\ufffdc"),  # Cf
        ("a\ud800b", "a\ufffdb"),  # Cs: a lone surrogate
        ("a\ue000b", "a\ufffdb"),  # Co: private use
        ("a\u0378b", "a\ufffdb"),  # Cn: unassigned
        ("a\u2028b\u2029c", "a\ufffdb\ufffdc"),  # Zl, Zp
        ("👩\u200d💻 می\u200cخواهم", "👩\u200d💻 می\u200cخواهم"),  # joiners stay
        ("a\u00a0b\u3000c", "a\u00a0b\u3000c"),  # other spaces stay
    ],
)
def test_sanitize_exactly(raw, shown):
    assert sanitize(raw) == shown


@given(st.text())
def test_sanitize_output_is_safe_and_stable(text):
    out = sanitize(text)
    assert sanitize(out) == out
    assert not unsafe(out), [hex(ord(c)) for c in unsafe(out)]
