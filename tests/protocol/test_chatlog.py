"""The app's own log: dedupe, order, paging, FTS5 search and the plain transcript."""

from __future__ import annotations

import math
import os
import sqlite3
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from udproom.protocol import events as E
from udproom.protocol.chatlog import (
    SCHEMA_VERSION,
    ChatLog,
    Line,
    format_line,
    line_of,
    parse_query,
    peer_history,
)
from udproom.protocol.roomlog import StoreError

from .adversary import floats, ints, texts

RELAY = "127.0.0.1:6000"


@pytest.fixture
def log(tmp_path):
    with ChatLog(tmp_path / "chat.sqlite3") as chat:
        yield chat


def msg(seq: int, text: str, nick: str = "bob", room: str = "lobby", ts: float | None = None, **kw) -> Line:
    return Line(
        kw.pop("circle", RELAY),
        room,
        kw.pop("kind", "message"),
        nick,
        text,
        1000.0 + seq if ts is None else ts,
        seq,
        **kw,
    )


def texts_of(lines: list[Line]) -> list[str]:
    return [x.text for x in lines]


def fts_in_sync(chat: ChatLog) -> None:
    assert chat._db is not None and chat._shards
    for k in range(chat._shards):  # raises if a shard is out of step with the lines
        chat._db.execute(f"INSERT INTO lines_fts{k}(lines_fts{k}) VALUES ('integrity-check')")


def test_the_same_events_twice_are_stored_once(log):
    batch = [msg(i, f"m{i}") for i in range(1, 6)]
    assert log.add(batch) == 5
    assert log.add(batch) == 0  # a backfill after a restart, a page fetched twice
    assert log.add([msg(3, "the same seq, another text")]) == 0
    # another epoch of the relay: its numbers started again, so these are new lines
    assert log.add([msg(1, "after a fresh relay", epoch=7, ts=5000.0)]) == 1
    # direct mode: no room sequence, the message id dedupes
    direct = [Line("circle-1", "dev", "message", "ann", "hi", 10.0, 0, mid=(1 << 64) - 1)] * 2
    assert log.add(direct) == 1 and log.add(direct) == 0
    # lines with neither are all kept (presence in direct mode)
    assert log.add([Line("circle-1", "dev", "join", "ann", "", 11.0)] * 2) == 2
    assert texts_of(log.recent(RELAY, "lobby", 10)) == ["m1", "m2", "m3", "m4", "m5", "after a fresh relay"]
    assert log.recent("circle-1", "dev")[0].mid == (1 << 64) - 1
    assert log.last_seq(RELAY, "lobby", 0) == 5 and log.last_seq(RELAY, "lobby", 7) == 1
    assert log.last_seq(RELAY, "nowhere", 0) == 0
    assert log.rooms() == [("127.0.0.1:6000", "lobby"), ("circle-1", "dev")]
    fts_in_sync(log)


def test_recent_is_in_room_order_whatever_order_lines_arrived_in(log):
    log.add([msg(i, f"m{i}") for i in range(101, 201)])  # live lines first ...
    log.add([msg(i, f"m{i}") for i in range(1, 101)])  # ... then an older page
    log.add([msg(i, "other room", room="dev") for i in range(1, 50)])
    assert texts_of(log.recent(RELAY, "lobby", 3)) == ["m198", "m199", "m200"]
    page = log.recent(RELAY, "lobby", 100)
    assert [x.seq for x in page] == list(range(101, 201))
    older = log.before(page[0], 100)
    assert [x.seq for x in older] == list(range(1, 101))
    assert log.before(older[0], 100) == []
    assert [x.seq for x in log.after(older[-1], 2)] == [101, 102]
    assert log.recent(RELAY, "nowhere") == [] and log.recent(RELAY, "lobby", 0) == []


def test_jump_to_a_line_gives_its_room_around_it(log):
    log.add([msg(i, f"m{i}") for i in range(1, 60)])
    log.add([msg(i, f"dev{i}", room="dev") for i in range(1, 60)])
    (hit,) = log.search("m30")
    around = log.around(hit.pos, 3)
    assert texts_of(around) == ["m27", "m28", "m29", "m30", "m31", "m32", "m33"]
    assert log.at(hit.pos) == hit and log.around(10**9) == []
    assert log.at(10**30) is None and log.around(-(10**30)) == []  # never an OverflowError


def test_search_words_prefixes_nick_and_room(log):
    log.add(
        [
            msg(1, "deploying the release on friday", "Bob"),
            msg(2, "deployment failed again", "ann"),
            msg(3, "the café is open", "bob"),
            msg(4, "friday deploy for dev", "carl", room="dev"),
            msg(5, "unrelated chatter", "bob"),
            Line("other:6000", "lobby", "action", "BOB", "deploys elsewhere", 9.0, 1),
        ]
    )
    assert texts_of(log.search("friday")) == ["friday deploy for dev", "deploying the release on friday"]
    # implicit prefix on the last word, explicit with *
    assert len(log.search("deploy")) == 4 and len(log.search("dep*")) == 4
    assert texts_of(log.search("dep* fri")) == ["friday deploy for dev", "deploying the release on friday"]
    assert texts_of(log.search("deploy* failed")) == ["deployment failed again"]
    assert texts_of(log.search("cafe")) == ["the café is open"]  # diacritics folded
    # nick: compares as names.nick_key does (casefold today)
    assert texts_of(log.search("nick:bob dep")) == ["deploys elsewhere", "deploying the release on friday"]
    assert len(log.search("nick:BOB")) == 4 and log.search("nick:nobody") == []
    assert texts_of(log.search("room:#dev dep")) == ["friday deploy for dev"]
    assert texts_of(log.search("dep", room="dev")) == ["friday deploy for dev"]
    assert texts_of(log.search("dep", circle="other:6000")) == ["deploys elsewhere"]
    hit = log.search("café")[0]
    assert (hit.room, hit.nick, hit.ts, hit.circle) == ("lobby", "bob", 1003.0, RELAY) and hit.pos
    assert log.search("") == [] and log.search("room:dev") == [] and log.search("!!!") == []
    assert len(log.search("dep", limit=2)) == 2


def test_search_runs_newest_first_across_full_text_shards(tmp_path, monkeypatch):
    from udproom.protocol import chatlog

    monkeypatch.setattr(chatlog, "SHARD_ROWS", 10)
    path = tmp_path / "chat.sqlite3"
    with ChatLog(path) as chat:
        for start in range(1, 95, 7):  # batches that straddle shard boundaries
            chat.add([msg(i, f"word{i % 3} n{i}") for i in range(start, min(start + 7, 95))])
        assert chat._shards == 10
        fts_in_sync(chat)
        hits = chat.search("word1", limit=12)
        assert [x.seq for x in hits] == list(range(94, 0, -1))[:36:3][:12]
        assert [x.seq for x in chat.search("n5 word2")] == [5]  # found in the oldest shard
        assert [x.seq for x in chat.search("word*", limit=1000)] == list(range(94, 0, -1))
    with ChatLog.open_read_only(path) as ro:  # the shards are found again
        assert [x.seq for x in ro.search("n93 word0")] == [93]


@pytest.mark.parametrize(
    "query",
    [
        '"',
        '""',
        "a OR b",
        "NEAR(a b)",
        "-x",
        "text:x",
        "^x",
        "x AND",
        "(",
        "*",
        "a*b*",
        "'",
        "nick:",
        "\x00",
        "\ud800",
    ],
)
def test_nothing_typed_is_fts_syntax(log, query):
    log.add([msg(1, "a OR b and x")])
    log.search(query)  # never an error


@settings(max_examples=60, deadline=None)
@given(query=texts())
def test_any_query_is_answered_or_refused_with_a_store_error(tmp_path_factory, query):
    with ChatLog(tmp_path_factory.mktemp("q") / "c.sqlite3") as chat:
        chat.add([msg(1, "hello world")])
        try:
            chat.search(query)
        except StoreError as exc:
            assert "\n" not in str(exc)


def test_parse_query():
    q = parse_query('deploy "fri nick:Bob room:#Dev')
    assert q.nick == "Bob" and q.room == "dev"
    assert q.match == '"deploy" """fri"*'
    assert parse_query("a* b").match == '"a"* "b"*'
    assert parse_query("room:@Ann x").room == "@Ann"
    assert parse_query("nick:bob").match is None


def test_what_arrived_is_stored_raw_and_sanitised_on_the_way_out(log):
    evil = "\x1b]0;pwned\x07\x1b[2Jhi\u202eevil\nnext"
    log.add([msg(1, evil, nick="m\x1b[31mallory"), msg(2, "nan time", ts=math.nan)])
    (hit,) = log.search("next")
    assert hit.text == evil and hit.nick == "m\x1b[31mallory"  # stored as it came
    out = "\n".join(log.transcript("lobby"))
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert out.count("\n") == 2  # header + two lines: the newline inside the message is flattened
    assert log.recent(RELAY, "lobby")[0].ts == 0.0  # a timestamp that is not a number is kept as 0


def test_transcript_reads_like_an_irc_log(log, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    import time

    time.tzset()
    t = 1764600000.0  # 2025-12-01 14:40:00 UTC
    log.add(
        [
            Line(RELAY, "dev", "join", "ann", "", t, 1),
            Line(RELAY, "dev", "message", "ann", "hello", t + 1, 2),
            Line(RELAY, "dev", "action", "ann", "waves", t + 2, 3),
            Line(RELAY, "dev", "topic", "ann", "releases", t + 3, 4),
            Line(RELAY, "dev", "nick", "ann", "anna", t + 4, 5),
            Line(RELAY, "dev", "away", "anna", "lunch", t + 5, 6),
            Line(RELAY, "dev", "away", "anna", "", t + 6, 7),
            Line(RELAY, "dev", "leave", "anna", "bye", t + 7, 8),
            Line(RELAY, "dev", "timeout", "bob", "", t + 8, 9),
            Line("other:1", "dev", "message", "zed", "elsewhere", t, 1),
        ]
    )
    assert list(log.transcript("dev", circle=RELAY)) == [
        "--- Log of #dev on 127.0.0.1:6000",
        "2025-12-01 14:40:00 -!- ann has joined #dev",
        "2025-12-01 14:40:01 <ann> hello",
        "2025-12-01 14:40:02  * ann waves",
        "2025-12-01 14:40:03 -!- ann changed the topic of #dev to: releases",
        "2025-12-01 14:40:04 -!- ann is now known as anna",
        "2025-12-01 14:40:05 -!- anna is away: lunch",
        "2025-12-01 14:40:06 -!- anna is back",
        "2025-12-01 14:40:07 -!- anna has left #dev [bye]",
        "2025-12-01 14:40:08 -!- bob has timed out",
    ]
    assert list(log.transcript("dev", since=t + 7, circle=RELAY))[1:] == [
        "2025-12-01 14:40:07 -!- anna has left #dev [bye]",
        "2025-12-01 14:40:08 -!- bob has timed out",
    ]
    assert len(list(log.transcript("dev"))) == 12  # both circles, one section each
    assert list(log.transcript("nowhere")) == []


def test_transcript_pages_through_a_big_room(log):
    log.add([msg(i, f"m{i}", ts=1000.0 + i // 3) for i in range(1, 2600)])  # equal timestamps too
    lines = list(log.transcript("lobby"))
    assert len(lines) == 2600 and lines[1].endswith("<bob> m1") and lines[-1].endswith("<bob> m2599")


def test_line_of_every_room_event():
    cases = [
        (E.MessageReceived("r", 1, "a", "hi", 5.0), ("message", "a", "hi")),
        (E.MessageReceived("r", 1, "a", "waves", 5.0, action=True), ("action", "a", "waves")),
        (E.MemberJoined("r", 1, "a", 5.0), ("join", "a", "")),
        (E.MemberLeft("r", 1, "a", 5.0, "bye"), ("leave", "a", "bye")),
        (E.MemberTimedOut("r", 1, "a", 5.0), ("timeout", "a", "")),
        (E.NickChanged("r", 1, "a", "b", 5.0), ("nick", "a", "b")),
        (E.TopicChanged("r", 1, "a", "t", 5.0), ("topic", "a", "t")),
        (E.AwayChanged("r", 1, "a", "gone", 5.0), ("away", "a", "gone")),
    ]
    for ev, (kind, nick, text) in cases:
        line = line_of(ev, RELAY, epoch=3)
        assert line is not None and (line.kind, line.nick, line.text) == (kind, nick, text)
        assert (line.circle, line.room, line.seq, line.ts, line.epoch) == (RELAY, "r", 1, 5.0, 3)
    assert line_of(E.Notice("x"), RELAY) is None
    # direct mode: seq is a Lamport clock two peers can share; only message ids dedupe there
    a = line_of(E.MessageReceived("r", 7, "ann", "one", 5.0), "circle", direct=True, mid=1)
    b = line_of(E.MessageReceived("r", 7, "bob", "two", 5.0), "circle", direct=True, mid=2)
    assert a is not None and b is not None and a.seq == b.seq == 0


def test_hostile_numbers_are_refused_or_kept_exactly(log):
    with pytest.raises(StoreError):
        log.add([msg(1, "x", mid=1 << 64)])
    with pytest.raises(StoreError):
        log.add([msg(1, "x", kind="bogus")])
    assert log.recent(RELAY, "lobby") == []  # the failed batch left nothing
    log.add([msg((1 << 64) - 1, "top", ts=math.inf), msg(1, "one", ts=-math.inf)])
    assert [x.seq for x in log.recent(RELAY, "lobby")] == [1, (1 << 64) - 1]
    assert format_line(log.recent(RELAY, "lobby")[1]).startswith("????")


def test_reading_needs_no_write_and_a_missing_log_is_an_error(tmp_path):
    path = tmp_path / "chat.sqlite3"
    with pytest.raises(StoreError) as missing:
        ChatLog.open_read_only(path)
    assert "no chat log" in str(missing.value) and not path.exists()
    with ChatLog(path) as chat:
        chat.add([msg(1, "hello")])
    with ChatLog.open_read_only(path) as ro:
        assert texts_of(ro.search("hello")) == ["hello"]
        with pytest.raises(StoreError) as refused:
            ro.add([msg(2, "no")])
        assert "read-only" in str(refused.value)


def test_a_damaged_log_is_a_one_line_error(tmp_path):
    path = tmp_path / "chat.sqlite3"
    path.write_bytes(os.urandom(8192))
    for opener in (ChatLog, ChatLog.open_read_only):
        with pytest.raises(StoreError) as bad:
            opener(path)
        assert "\n" not in str(bad.value)
    sqlite3.connect(tmp_path / "plain.sqlite3").execute("CREATE TABLE t(x)").connection.close()
    with pytest.raises(StoreError) as foreign:
        ChatLog.open_read_only(tmp_path / "plain.sqlite3")
    assert "not a udproom chat log" in str(foreign.value)


SEARCH_AS_NOBODY = """
import os, sys
from udproom.protocol.chatlog import ChatLog
from udproom.protocol.sqlstore import StoreError
import sqlite3, encodings.idna  # imported while still root: the interpreter may live where nobody can read
if os.geteuid() == 0:
    os.setgid(65534); os.setuid(65534)
with ChatLog.open_read_only(sys.argv[1]) as chat:
    print([line.text for line in chat.search("hello")])
"""


def test_a_log_in_a_directory_we_cannot_write_can_still_be_searched():
    """`udproom search` over a log someone else keeps (or on a read-only mount): SQLite cannot
    make the WAL's -shm file there, so the log is read as the file stands."""
    top = tempfile.mkdtemp(prefix="udproom-ro-")
    try:
        os.chmod(top, 0o755)
        where = Path(top) / "data"
        with ChatLog(where / "chat.sqlite3") as chat:
            chat.add([msg(1, "hello there")])
        for path in [where, *where.iterdir()]:
            os.chmod(path, 0o555 if path.is_dir() else 0o444)
        r = subprocess.run(
            [sys.executable, "-c", SEARCH_AS_NOBODY, str(where / "chat.sqlite3")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0 and r.stdout.strip() == "['hello there']", r.stdout + r.stderr
    finally:
        subprocess.run(["chmod", "-R", "u+w", top], check=False)
        subprocess.run(["rm", "-rf", top], check=False)


def test_text_that_is_not_unicode_is_a_store_error(log):
    """Python strings can hold lone surrogates (nothing decoded from the wire does)."""
    log.add([msg(1, "hello")])
    for call in (
        lambda: log.search("a\ud800"),
        lambda: log.add([msg(2, "bad \ud800")]),
        lambda: log.add([msg(3, "ok", nick="\udc00")]),
    ):
        with pytest.raises(StoreError):
            call()
    assert texts_of(log.recent(RELAY, "lobby")) == ["hello"]


def test_another_programs_database_is_refused_and_left_as_it_was(tmp_path):
    import sqlite3

    path = tmp_path / "chat.sqlite3"
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE notes(body TEXT)")
    other.commit()
    other.close()
    with pytest.raises(StoreError) as refused:
        ChatLog(path)
    assert "not the chat log of udproom" in str(refused.value) and "\n" not in str(refused.value)
    check = sqlite3.connect(path)
    assert [row[0] for row in check.execute("SELECT name FROM sqlite_master")] == ["notes"]
    check.close()


def test_a_batch_is_stored_exactly_whatever_its_text_and_times(log):
    """Batches go to SQLite as one JSON array; what JSON cannot carry (NUL, which SQLite's JSON
    cuts text at; infinite times) is stored row by row, exactly as well."""
    odd = ["a\x00b", '\u2028 "q" \\ \U0001f600 é', "", "x" * 4000, "\ufeff\u202e"]
    log.add([msg(i + 1, t, nick=f"n{i}\x00" if i == 0 else f"n{i}") for i, t in enumerate(odd)])
    log.add([msg(10 + i, t) for i, t in enumerate(odd[1:])])
    got = log.recent(RELAY, "lobby", 100)
    assert [x.text for x in got] == odd + odd[1:]
    assert got[0].nick == "n0\x00"
    assert [x.ts for x in got] == [1000.0 + x.seq for x in got]
    fts_in_sync(log)


# ---------------------------------------------------------------------------- direct mode: signed lines

DIRECT = "direct :7000"
ANY_FLOAT = st.integers(0, (1 << 64) - 1).map(lambda bits: struct.unpack(">d", bits.to_bytes(8, "big"))[0])
SIGNED = st.builds(
    E.Signed,
    st.integers(1, (1 << 64) - 1),
    st.one_of(ANY_FLOAT, floats()),
    st.binary(min_size=64, max_size=64),
    st.binary(min_size=32, max_size=32),
)


def _bits(s: E.Signed | None):
    """A Signed as bytes (NaN != NaN: the time compared bit for bit)."""
    return None if s is None else (s.mid, struct.pack(">d", s.ts), s.sig, s.key)


def signed_line(lc: int, text: str, signed: E.Signed | None, nick: str = "bob", ts: float = 1000.0) -> Line:
    return line_of(
        E.MessageReceived("lobby", lc, nick, text, ts, signed=signed),
        DIRECT,
        mid=E.direct_mid("lobby", nick, lc, text),
        direct=True,
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(texts(900), SIGNED), min_size=1, max_size=8), st.booleans())
def test_a_direct_line_gives_back_exactly_what_its_author_signed(log, said, row_by_row):
    """What a peer serves must verify: the log gives back the message id, the time as signed (bit
    for bit, whatever the float, NaN included; not the time shown), the signature and the key, in
    a batch as one JSON array or row by row (a NUL in a nick sends the batch that way)."""
    nick = "bob\x00" if row_by_row else "bob"
    start = (log.stamped(DIRECT, "lobby", 0, 1)[-1:] or [Line("", "", "message", "")])[0].lc
    lines = [signed_line(start + k + 1, t, s, nick, ts=1.7e9) for k, (t, s) in enumerate(said)]
    assert all(x.signed is not None for x in lines)
    log.add(lines)
    got = log.stamped(DIRECT, "lobby", start + len(said) + 1, len(said), signed=True)
    assert [(x.lc, x.nick, x.text, _bits(x.signed)) for x in got] == [
        (x.lc, nick, x.text, _bits(x.signed)) for x in lines
    ]
    assert all(x.ts == 1.7e9 for x in got)  # the time shown is its own column


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.none(),
        st.builds(E.Signed, ints(), floats(), st.binary(max_size=80), st.binary(max_size=40)),
        st.builds(E.Signed, st.just(5), st.integers(0, 3), st.just(b"s" * 64), st.just(b"k" * 32)),
        st.builds(E.Signed, st.just(True), st.just(1.0), st.just(b"s" * 64), st.just(b"k" * 32)),
        texts(100),
    )
)
def test_a_line_with_no_or_a_malformed_signature_is_logged_and_never_served(log, signed):
    """An event whose signature fields are missing or not of a signature's types and sizes (from
    a hostile or broken core): the line is logged and shown, never served to peers."""
    lc = (log.stamped(DIRECT, "lobby", 0, 1)[-1:] or [Line("", "", "message", "")])[0].lc + 1
    line = signed_line(lc, "unsigned", signed)
    assert line.signed is None
    assert log.add([line]) == 1
    assert log.stamped(DIRECT, "lobby", 0, 1)[-1].text == "unsigned"  # logged (and shown)
    assert all(x.signed is not None for x in log.stamped(DIRECT, "lobby", 0, 1000, signed=True))
    assert all(r[4] is not None for r in peer_history(log, DIRECT)("lobby", 0, 1000))
    assert "unsigned" not in [r[2] for r in peer_history(log, DIRECT)("lobby", 0, 1000)]


def test_peer_history_serves_signed_lines_only_and_a_damaged_signature_column_is_not_served(tmp_path):
    path = tmp_path / "chat.sqlite3"
    ok = E.Signed(7, 1.5e9, b"s" * 64, b"k" * 32)
    with ChatLog(path) as log:
        log.add([signed_line(1, "old", None), signed_line(2, "signed", ok), signed_line(3, "damaged", ok)])
    with sqlite3.connect(path) as db:
        db.execute("UPDATE lines SET signed = 'not base64!' WHERE text = 'damaged'")
    with ChatLog(path) as log:
        assert [x.text for x in log.stamped(DIRECT, "lobby")] == ["old", "signed", "damaged"]
        assert peer_history(log, DIRECT)("lobby", 0, 100) == [(2, "bob", "signed", False, ok)]


def _older(path: Path, version: int) -> None:
    """Make the log at `path` as a version-`version` log had it (the columns added since dropped)."""
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE lines DROP COLUMN signed")
        if version == 1:
            db.execute("DROP INDEX lines_lc")
            db.execute("ALTER TABLE lines DROP COLUMN lc")
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (version,))


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_log_is_read_as_it_is_and_gains_the_signature_column_when_opened_for_writing(
    tmp_path, version
):
    path = tmp_path / "chat.sqlite3"
    with ChatLog(path) as log:
        log.add([msg(1, "relay line"), signed_line(4, "direct line", None)])
    _older(path, version)
    with ChatLog.open_read_only(path) as log:  # `udproom search`, `udproom log`: nothing written
        assert [x.text for x in log.recent(RELAY, "lobby")] == ["relay line"]
        (direct,) = log.recent(DIRECT, "lobby")
        assert direct.signed is None and direct.lc == (4 if version == 2 else 0)
        assert log.stamped(DIRECT, "lobby", signed=True) == []
        assert [x.text for x in log.search("line")] == ["direct line", "relay line"]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (version,)
    ok = E.Signed(9, 1.5e9, b"s" * 64, b"k" * 32)
    with ChatLog(path) as log:  # the app: the columns are added, the lines kept
        assert [x.text for x in log.recent(DIRECT, "lobby")] == ["direct line"]
        log.add([signed_line(5, "signed line", ok)])
        assert peer_history(log, DIRECT)("lobby", 0, 100) == [(5, "bob", "signed line", False, ok)]
        fts_in_sync(log)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (SCHEMA_VERSION,)
