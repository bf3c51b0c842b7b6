"""Nicks: one definition of "the same nick" (`nick_key`), look-alikes, invisible characters, and
the sanitizer every string from others goes through before a terminal sees it."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from udproom.protocol import events as E
from udproom.protocol import frames as F
from udproom.protocol.names import (
    MAX_NICK_LEN,
    InvalidName,
    check_nick,
    default_nick,
    is_ignorable,
    nick_key,
    nick_keys,
    sanitize,
)
from udproom.protocol.relay import Relay, RelayConfig

from ..terminal import unsafe
from .adversary import TRICKY_TEXT
from .harness import HandClient, Room, T, client_addr

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
        nick = check_nick(fake)  # (fullwidth letters are alice itself: no look-alike to name)
        said = f"nick {nick} is in use on this relay" + (" (it looks like alice)" if nick != "alice" else "")
        assert refused and refused[0].reason == said, fake
        assert not room.clients[addr].connected
        assert not any(isinstance(e, E.RoomJoined) for e in room.events(addr))
    members = {m.session.nick for m in room.relay.rooms[room.room].members.values()}
    assert members == {"n0", "alice"}


# Look-alikes that depend on reading case before or after the confusable skeleton: capital I is
# the same letter as i (casefolding) but shows as l (the skeleton); Greek capital Beta shows as B
# (so is b) but casefolds to β (whose skeleton is "ss").
CROSS_CASE = [
    ("alice", "aIice"),  # capital I for l
    ("bob", "\u0392\u039f\u0392"),  # Greek ΒΟΒ
    ("KAI", "\u039a\u0391\u0399"),  # Greek ΚΑΙ
    ("Il", "ll"),
    ("lI", "II"),
    ("bill", "BIll"),  # (the same by case alone: one key did)
    ("ivan", "\u0406VAN"),  # Cyrillic І
]


@pytest.mark.parametrize(("held", "fake"), CROSS_CASE)
def test_the_relay_refuses_a_lookalike_across_case_either_way(held, fake):
    """`names.nick_keys`: a nick is taken when any of its readings meets one of a held nick's, so
    neither order (the look-alike first, or the plain nick first) gets two sessions, at login or
    by a nick change."""
    for first, second in ((held, fake), (fake, held)):
        relay = Relay(RelayConfig(timing=T))
        assert HandClient(relay, ("198.51.100.1", 1), first).logged_in is not None
        hand = HandClient(relay, ("198.51.100.2", 2), second)
        reasons = [f.reason for f in hand.answer if isinstance(f, F.Refuse)]
        said = f"nick {check_nick(second)} is in use on this relay (it looks like {first})"
        assert hand.logged_in is None and reasons == [said]  # (the user learns which nick it meets)
        other = HandClient(relay, ("198.51.100.3", 3), "zed")
        other.send([F.Req(1, F.OP_NICK, "", second)], 1.0)
        (res,) = [f for f in other.frames(relay.datagrams_to_send(1.0)) if isinstance(f, F.Result)]
        assert res.code == F.RES_REFUSED and res.reason == said
        assert sorted(s.nick for s in relay.sessions.values()) == sorted([first, "zed"])


# One character for another that shows like it (the confusable skeleton, case kept), or is it by
# width: a nick with some of these swapped shows as the nick.
SHOWN_ALIKE = {
    "l": ["I", "1", "\uff4c"],
    "I": ["l", "1", "\u0399", "\u0406", "\uff29"],
    "i": ["\u0456", "\uff49"],
    "o": ["\u043e", "0", "\u03bf"],
    "O": ["0", "\u041e", "\u039f"],
    "a": ["\u0430", "\uff41"],
    "A": ["\u0410", "\u0391"],
    "e": ["\u0435"],
    "E": ["\u0415", "\u0395"],
    "c": ["\u0441"],
    "C": ["\u0421"],
    "B": ["\u0392", "\u0412"],
    "K": ["\u039a", "\u041a"],
    "N": ["\u039d"],
}


@st.composite
def lookalike_family(draw):
    """(a nick, its look-alikes): each the nick in other case (the same nick), or the nick with
    characters swapped for ones shown alike, invisible joiners between non-ASCII ones."""
    letters = "abceiklnotzABCEIKLNOTZ"
    held = draw(st.text(alphabet=letters, min_size=1, max_size=MAX_NICK_LEN))
    fakes = []
    for _ in range(draw(st.integers(1, 6))):
        chars = list(held)
        if draw(st.booleans()):  # by case
            chars = [ch.swapcase() if draw(st.booleans()) else ch for ch in chars]
        else:  # as shown
            spots = [i for i, ch in enumerate(chars) if ch in SHOWN_ALIKE]
            for i in draw(st.lists(st.sampled_from(spots), unique=True)) if spots else []:
                chars[i] = draw(st.sampled_from(SHOWN_ALIKE[chars[i]]))
            inner = [i for i in range(1, len(chars)) if not chars[i - 1].isascii() and not chars[i].isascii()]
            if inner and draw(st.booleans()):
                chars.insert(draw(st.sampled_from(inner)), "\u200d")
        fakes.append("".join(chars))
    return held, fakes


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lookalike_family())
def test_property_the_relay_never_holds_two_sessions_whose_nicks_look_alike(family):
    """Whatever look-alikes of a nick log in, or rename themselves, after it: the relay holds
    exactly one session among them (the first), and every other is refused with one line."""
    base, variants = family
    variants = [v for v in variants if v != base]
    relay = Relay(RelayConfig(timing=T))
    assert HandClient(relay, ("198.51.100.1", 1), base).logged_in is not None
    for i, fake in enumerate(variants, start=2):
        hand = HandClient(relay, ("198.51.100.2", i), fake, nonce=i)
        (refuse,) = [f for f in hand.answer if isinstance(f, F.Refuse)]
        assert hand.logged_in is None and "\n" not in refuse.reason
        assert refuse.reason.startswith("bad nick") or refuse.reason.startswith(
            f"nick {check_nick(fake)} is in use on this relay"
        )
    other = HandClient(relay, ("198.51.100.3", 1), "zz-other")
    other.send([F.Req(cseq, F.OP_NICK, "", fake) for cseq, fake in enumerate(variants, start=1)], 1.0)
    codes = [f.code for f in other.frames(relay.datagrams_to_send(1.0)) if isinstance(f, F.Result)]
    assert codes == [F.RES_REFUSED] * len(variants)
    assert sorted(s.nick for s in relay.sessions.values()) == sorted([base, "zz-other"])


def test_a_registered_nick_refuses_its_lookalikes_across_case_and_counts_once():
    from udproom.protocol.crypto import Identity
    from udproom.protocol.relay.moderation import count_registered

    for registered, fakes in (("aIice", ["alice", "AIICE", "aiice", "a1ice"]), ("alice", ["aIice", "AlICE"])):
        relay = Relay(RelayConfig(timing=T))
        key = Identity.generate()
        owner = HandClient(relay, ("198.51.100.1", 1), registered, identity=key)
        owner.send([F.Req(1, F.OP_REGISTER)], 1.0)
        (res,) = [f for f in owner.frames(relay.datagrams_to_send(1.0)) if isinstance(f, F.Result)]
        assert res.code == F.RES_OK and count_registered(relay.log) == {key.public: 1}
        owner.send([F.Bye("later")], 1.0)
        for i, fake in enumerate(fakes, start=2):
            hand = HandClient(relay, ("198.51.100.2", i), fake, nonce=i)
            reasons = [f.reason for f in hand.answer if isinstance(f, F.Refuse)]
            assert reasons == [f"nick {fake} is registered on this relay"], (registered, fake)
        # its owner's key takes any of them (it looks like its own)
        assert HandClient(relay, ("198.51.100.3", 3), fakes[0], identity=key).logged_in is not None


@pytest.mark.parametrize(("held", "fake"), CROSS_CASE)
def test_nick_keys_meet_for_lookalikes_across_case(held, fake):
    assert nick_key(held) in nick_keys(held) and nick_keys(held) & nick_keys(fake)


def test_nick_keys_of_distinct_nicks_do_not_meet():
    for i, a in enumerate(DISTINCT):
        for b in DISTINCT[i + 1 :]:
            assert not nick_keys(a) & nick_keys(b), (a, b)


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
