"""The relay's room log: one contract for MemoryLog and SqliteLog, then what only a disk can do
(restart, crash, lock, damaged file, read-only directory, full disk)."""

from __future__ import annotations

import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from udproom.protocol import frames as F
from udproom.protocol.roomlog import DAY, DB_FILE, MemoryLog, RoomLog, SqliteLog, StoreError, open_log

from .adversary import floats, texts

CHILD = Path(__file__).with_name("_roomlog_child.py")


def ev(text: str = "hi", ts: float = 1000.0, mid: int = 0, nick: str = "bob", kind: int = F.EV_MSG) -> F.Ev:
    return F.Ev(kind=kind, nick=nick, text=text, ts=ts, mid=mid)


@pytest.fixture(params=["memory", "sqlite", "jetstream"])
def make(request, tmp_path):
    """make(**kw) -> a fresh log of the parametrized kind (the same directory, or the same
    nats-server and stream prefix, each call: a second call is a restart)."""
    logs: list[RoomLog] = []
    links = []
    server = request.getfixturevalue("nats_server") if request.param == "jetstream" else None

    def factory(**kw) -> RoomLog:
        if request.param == "memory":
            log: RoomLog = MemoryLog(**kw)
        elif request.param == "sqlite":
            log = SqliteLog(tmp_path / "data", **kw)
        else:
            from udproom.protocol.jetstream import JetStreamLog, NatsLink

            link = NatsLink(server.url, reconnect_wait=0.05)
            links.append(link)
            log = JetStreamLog(link, commit_timeout=2.0, **kw)
            log._test_server = server  # type: ignore[attr-defined]  (for _break/_unbreak)
        logs.append(log)
        return log

    factory.kind = request.param  # type: ignore[attr-defined]
    yield factory
    for log in logs:
        log.close()
    for link in links:
        link.close()


def _is_js(log: RoomLog) -> bool:
    return type(log).__name__ == "JetStreamLog"


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert text and "\n" not in text, text
    return text


# ----------------------------------------------------------------------------- the contract


def test_append_numbers_each_room_from_one_and_commit_makes_it_visible(make):
    log = make()
    assert [log.append("a", ev("1")), log.append("b", ev("x")), log.append("a", ev("2"))] == [1, 1, 2]
    assert log.pending == 3
    # nothing is visible (or acknowledged) before the commit
    assert log.read("a", 1, 10) == [] and log.last_seq("a") == 0 and log.rooms() == []
    log.commit()
    assert log.pending == 0
    assert [(s, e.text) for s, e in log.read("a", 1, 10)] == [(1, "1"), (2, "2")]
    assert log.last_seq("a") == 2 and log.last_seq("b") == 1 and log.first_seq("a") == 1
    assert log.rooms() == ["a", "b"]
    assert log.append("a", ev("3")) == 3  # continues
    assert log.last_seq("nowhere") == 0 and log.first_seq("nowhere") == 1 and log.read("nowhere", 1, 9) == []


def test_events_come_back_exactly_as_appended(make):
    log = make()
    odd = [
        ev("", 0.0, 0),
        ev("x" * 1000, 1.5, (1 << 64) - 1),
        ev("é\x1b[2J\u202e", -1.0, 1 << 63),
        ev("nan", float("nan"), 7, kind=F.EV_ACTION),
        ev("inf", float("inf"), 5, nick=""),
    ]
    for e in odd:
        log.append("r", e)
    log.commit()
    got = [e for _, e in log.read("r", 1, 5)]
    assert [F.encode_ev(e) for e in got] == [F.encode_ev(e) for e in odd]  # NaN != NaN: compare bytes
    assert log.seq_of_mid("r", (1 << 64) - 1) == 2 and log.seq_of_mid("r", 1 << 63) == 3
    assert log.seq_of_mid("r", 5) == 5


def test_what_cannot_be_stored_is_refused_at_append_and_takes_no_number(make):
    log = make()
    with pytest.raises(StoreError) as bad:
        log.append("r", ev("lone \ud800 surrogate"))
    one_line(bad)
    with pytest.raises(StoreError):
        log.append("r", ev(mid=1 << 64))
    with pytest.raises(StoreError):
        log.append("r", ev(mid=-1))  # message ids are unsigned 64-bit
    with pytest.raises(StoreError):
        log.append("r", "not an event")  # type: ignore[arg-type]
    with pytest.raises(StoreError):
        log.append("lone \ud800", ev())
    with pytest.raises(StoreError):
        log.set_topic("r", "lone \udc00")
    assert log.append("r", ev()) == 1 and log.pending == 1
    log.commit()


def test_a_failed_commit_takes_its_numbers_back(make):
    log = make()
    log.append("r", ev("kept", mid=1))
    log.commit()
    assert log.append("r", ev("lost", mid=2)) == 2
    assert [log.append("s", ev("lost too" * 500)) for _ in range(8)] == list(range(1, 9))
    log.set_topic("r", "lost topic")
    _break(log)
    with pytest.raises(StoreError) as failed:
        log.commit()
    one_line(failed)
    # nothing of the group is visible, and its numbers are handed out again
    _unbreak(log)
    assert log.pending == 0 and log.last_seq("r") == 1 and log.rooms() == ["r"]
    assert log.topic("r") == "" and log.seq_of_mid("r", 2) is None
    assert [e.text for _, e in log.read("r", 1, 9)] == ["kept"]
    assert log.append("r", ev("again", mid=2)) == 2 and log.append("s", ev()) == 1
    log.commit()
    assert [e.text for _, e in log.read("r", 1, 9)] == ["kept", "again"] and log.seq_of_mid("r", 2) == 2


def test_begin_commit_reports_what_is_stored_and_what_is_not(make):
    """The relay's one code path: begin_commit() returns a handle, complete at once (memory, SQLite)
    or when the store has answered (JetStream); Results go out for `stored` only."""
    log = make()
    log.append("r", ev("one", mid=1))
    log.append("s", ev("two", mid=2))
    done = []
    handle = log.begin_commit()
    handle.add_done_callback(done.append)
    assert handle.wait(10) and done == [handle]  # the callback ran exactly once
    assert handle.error is None and handle.events == [("r", 1), ("s", 1)]
    assert handle.stored == {("r", 1), ("s", 1)} and handle.duplicates == {}
    assert log.last_seq("r") == 1 and [e.text for _, e in log.read("s", 1, 1)] == ["two"]
    late = []
    handle.add_done_callback(late.append)  # added after completion: runs at once
    assert late == [handle]
    assert log.append("r", ev("lost", mid=3)) == 2
    for _ in range(8):
        log.append("t", ev("more than a page" * 300))  # (a full disk must need a new page)
    _break(log)
    failed = log.begin_commit()
    assert failed.wait(10) and failed.error and "\n" not in failed.error and failed.stored == set()
    _unbreak(log)
    assert log.last_seq("r") == 1 and log.append("r", ev("again", mid=3)) == 2  # the number comes back
    log.commit()
    empty = log.begin_commit()  # nothing pending: complete, nothing stored
    assert empty.done() and empty.stored == set() and empty.error is None


def _break(log: RoomLog) -> None:
    if _is_js(log):  # the cluster goes away (SIGKILL of the nats-server); its store stays
        log._test_server.kill()  # type: ignore[attr-defined]
        _wait_for(lambda: not log.link.connected)  # type: ignore[attr-defined]
    elif isinstance(log, MemoryLog):
        log.fail_commits = "simulated failure"
    else:  # a full disk: no room for another page
        assert isinstance(log, SqliteLog) and log._db is not None
        pages = log._db.execute("PRAGMA page_count").fetchone()[0]
        log._db.execute(f"PRAGMA max_page_count={pages}")


def _wait_for(cond, timeout: float = 20.0) -> None:
    """A bounded poll of something another process (the nats-server, nats-py's reconnect) does."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _unbreak(log: RoomLog) -> None:
    if _is_js(log):
        log._test_server.start()  # type: ignore[attr-defined]
        _wait_for(lambda: log.link.connected)  # type: ignore[attr-defined]
    elif isinstance(log, MemoryLog):
        log.fail_commits = None
    else:
        assert isinstance(log, SqliteLog) and log._db is not None
        log._db.execute("PRAGMA max_page_count=1073741823")


def test_rollback_forgets_the_group(make):
    log = make()
    log.append("r", ev(mid=9))
    log.rollback()
    assert log.pending == 0 and log.seq_of_mid("r", 9) is None and log.append("r", ev()) == 1


def test_message_ids_are_found_pending_and_committed(make):
    log = make()
    assert log.seq_of_mid("r", 0) is None  # 0 means no id
    seq = log.append("r", ev(mid=42))
    assert log.seq_of_mid("r", 42) == seq  # a repeat inside one group is caught too
    assert log.seq_of_mid("other", 42) is None  # per room
    log.commit()
    assert log.seq_of_mid("r", 42) == seq
    assert log.seq_of_mid("r", 43) is None and log.seq_of_mid("r", -(1 << 70)) is None


def test_message_ids_are_remembered_for_the_last_window_of_events(make):
    log = make(mid_window=10)
    assert log.seq_of_mid("r", 1) is None  # loads the (empty) window
    for i in range(1, 16):
        log.append("r", ev(mid=i))
        if i % 4 == 0:
            log.commit()
    log.commit()
    assert [log.seq_of_mid("r", m) for m in (5, 6, 15)] == [None, 6, 15]
    if not isinstance(log, MemoryLog):  # after a restart: the same window, read back from the store
        log.close()
        log = make(mid_window=10)
        assert [log.seq_of_mid("r", m) for m in (5, 6, 15)] == [None, 6, 15]


def test_before_pages_back_like_chathistory(make):
    log = make()
    for i in range(1, 26):
        log.append("r", ev(str(i)))
    log.commit()
    page = log.before("r", 26, 10)
    assert [s for s, _ in page] == list(range(16, 26))
    assert [s for s, _ in log.before("r", 16, 10)] == list(range(6, 16))
    assert [s for s, _ in log.before("r", 6, 10)] == [1, 2, 3, 4, 5]
    assert log.before("r", 1, 10) == [] and log.before("r", 10**12, 0) == []
    assert [s for s, _ in log.before("r", 10**12, 3)] == [23, 24, 25]  # past the end: the tail
    assert log.before("r", -(10**12), 5) == []
    assert [s for s, _ in log.read("r", 5, 20, limit=3)] == [5, 6, 7]


def test_topics_are_kept_per_room(make):
    log = make()
    log.set_topic("r", "first")
    log.set_topic("r", "second")
    assert log.topic("r") == ""  # committed only
    log.commit()
    assert log.topic("r") == "second" and log.topic("s") == "" and "r" in log.rooms()


def test_retention_by_count_deletes_the_oldest_in_bounded_steps(make):
    log = make(keep_events=10, keep_days=None)
    for i in range(1, 36):
        log.append("r", ev(str(i)))
    log.append("s", ev())
    log.commit()
    if _is_js(log):
        # EXPECTED DIFFERENCE: JetStream enforces the cap itself (the stream's max_msgs), at once
        # and without steps; expire() reports the cut it finds, and deletes nothing
        assert _js_expired(log) == {"r": 26}
        assert log.first_seq("r") == 26 and log.last_seq("r") == 35 and log.read("r", 1, 25) == []
        assert [s for s, _ in log.read("r", 1, 99)] == list(range(26, 36)) and log.first_seq("s") == 1
        return
    assert log.expire(2000.0, budget=7) == {"r": 8}  # at most 7 per call
    assert log.first_seq("r") == 8 and log.read("r", 1, 7) == []
    steps = 1
    while log.expire(2000.0, budget=7):
        steps += 1
    assert steps == 4 and log.first_seq("r") == 26 and log.last_seq("r") == 35
    assert [s for s, _ in log.read("r", 1, 99)] == list(range(26, 36))
    assert log.first_seq("s") == 1  # under the cap: untouched


def _js_expired(log) -> dict[str, int]:
    """expire() on a JetStreamLog until it reports a cut (bounded): each call reports what the
    previous call's background look at the streams found."""
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        log.expire(0.0)
        log.wait_idle()
        cut = log.expire(0.0)
        if cut:
            return cut
    return {}


def test_retention_by_age_and_numbers_never_come_back(make):
    if make.kind == "jetstream":
        # EXPECTED DIFFERENCE: JetStream ages events by the time the server stored them, on its own
        # clock (the stream's max_age), not by the event's ts against a given now. Same outcome:
        log = make(keep_days=0.5 / DAY, keep_events=None)
        for i in range(3):
            log.append("r", ev(str(i), mid=i + 1))
        log.commit()
        assert log.last_seq("r") == 3
        assert _js_expired(log) == {"r": 4}  # all gone after half a second (a bounded poll)
        assert log.read("r", 1, 99) == [] and log.first_seq("r") == 4 and log.seq_of_mid("r", 2) is None
        assert log.last_seq("r") == 3 and log.append("r", ev()) == 4  # numbers are not reused
        log.commit()  # (this one expires half a second later too: nothing here may depend on when)
        assert log.last_seq("r") == 4 and log.read("r", 1, 3) == []
        return
    log = make(keep_days=1, keep_events=None)
    for i in range(5):
        log.append("r", ev(str(i), ts=100.0 + i, mid=i + 1))
    log.append("r", ev("new", ts=100.0 + DAY))
    log.commit()
    now = 100.0 + DAY + 2.5  # events 0, 1 and 2 are older than a day
    assert log.expire(now) == {"r": 4}
    assert log.expire(now) == {}
    assert log.seq_of_mid("r", 1) is None and log.seq_of_mid("r", 4) == 4
    assert log.expire(now + DAY) == {"r": 7}  # everything goes ...
    assert log.read("r", 1, 99) == [] and log.first_seq("r") == 7
    assert log.last_seq("r") == 6 and log.append("r", ev()) == 7  # ... but its numbers are not reused
    log.commit()
    assert log.first_seq("r") == 7


def test_closed_log_says_so(make):
    log = make()
    log.close()
    for call in (lambda: log.append("r", ev()), log.commit, lambda: log.read("r", 1, 2), log.rooms):
        with pytest.raises(StoreError):
            call()


# the same operations on both logs must give the same answers (MemoryLog is the model)
def model_ops(expire: bool = True) -> st.SearchStrategy:
    ops = [
        st.tuples(st.just("append"), st.sampled_from("abc"), st.integers(0, 5), floats()),
        st.tuples(st.just("commit")),
        st.tuples(st.just("rollback")),
        st.tuples(st.just("topic"), st.sampled_from("abc"), texts()),
        st.tuples(st.just("before"), st.sampled_from("abc"), st.integers(-2, 60), st.integers(0, 12)),
    ]
    if expire:
        ops.append(st.tuples(st.just("expire"), st.floats(0, 10 * DAY), st.integers(0, 20)))
    return st.one_of(*ops)


def same_answers(
    mem: MemoryLog, other: RoomLog, ops: list, after_commit=None, ids_once: bool = False
) -> None:
    """Apply `ops` to both logs and compare every answer after each (the test's model check).

    `ids_once`: append a message id at most once per room (the relay looks an id up with
    seq_of_mid before appending; JetStream cannot store one id twice within its duplicate window)."""
    used: set[tuple[str, int]] = set()
    for op in ops:
        if op[0] == "append":
            _, room, mid, ts = op
            if ids_once and mid and (room, mid) in used:
                continue
            used.add((room, mid))
            e = ev(f"{room}{mid}", ts=ts, mid=mid)
            assert mem.append(room, e) == other.append(room, e)
        elif op[0] == "commit":
            mem.commit()
            other.commit()
            if after_commit is not None:
                after_commit()
        elif op[0] == "rollback":
            mem.rollback()
            other.rollback()
        elif op[0] == "topic":
            try:
                mem.set_topic(op[1], op[2])
                other.set_topic(op[1], op[2])
            except StoreError:
                pass
        elif op[0] == "expire":
            assert mem.expire(op[1], op[2]).keys() <= set("abc")
            while other.expire(op[1], 1000) or mem.expire(op[1], 1000):
                pass  # round robin differs: compare once both are done
        else:
            _, room, seq, limit = op
            assert _bytes(mem.before(room, seq, limit)) == _bytes(other.before(room, seq, limit))
        for room in "abc":
            assert mem.last_seq(room) == other.last_seq(room)
            assert mem.first_seq(room) == other.first_seq(room)
            assert mem.topic(room) == other.topic(room)
            for mid in range(1, 6):
                assert mem.seq_of_mid(room, mid) == other.seq_of_mid(room, mid)
        assert mem.rooms() == other.rooms()
    for room in "abc":
        assert _bytes(mem.read(room, 0, 10**9)) == _bytes(other.read(room, 0, 10**9))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(model_ops(), max_size=60))
def test_sqlite_log_behaves_like_the_memory_log(ops):
    with tempfile.TemporaryDirectory() as tmp:
        mem = MemoryLog(keep_days=2, keep_events=8)
        disk = SqliteLog(tmp, keep_days=2, keep_events=8)
        try:
            same_answers(mem, disk, ops)
        finally:
            disk.close()


def _bytes(rows: list[tuple[int, F.Ev]]) -> list[tuple[int, bytes]]:
    return [(s, F.encode_ev(e)) for s, e in rows]


# ----------------------------------------------------------------------------- only on disk


def test_a_restart_continues_every_room_with_its_ids_topics_and_epoch(tmp_path):
    log = SqliteLog(tmp_path)
    epoch = log.epoch
    for i in range(1, 6):
        log.append("r", ev(str(i), mid=100 + i))
    log.set_topic("r", "kept")
    log.commit()
    log.append("r", ev("never committed", mid=999))
    log.close()
    log = SqliteLog(tmp_path)
    assert log.epoch == epoch and log.rooms() == ["r"] and log.topic("r") == "kept"
    assert log.last_seq("r") == 5 and log.seq_of_mid("r", 103) == 3 and log.seq_of_mid("r", 999) is None
    assert log.append("r", ev("6")) == 6
    log.close()
    other = SqliteLog(tmp_path / "elsewhere")
    assert other.epoch != epoch  # another history, another epoch
    other.close()
    # after restoring a backup, deleting the epoch makes clients start afresh (docs/storage.md)
    db = sqlite3.connect(tmp_path / DB_FILE)
    db.execute("DELETE FROM meta WHERE key = 'epoch'")
    db.commit()
    db.close()
    log = SqliteLog(tmp_path)
    assert log.epoch not in (0, epoch) and log.last_seq("r") == 5  # (6 was never committed)
    log.close()
    assert SqliteLog(tmp_path).epoch == log.epoch


def test_a_fully_expired_room_keeps_its_numbers_across_a_restart(tmp_path):
    log = SqliteLog(tmp_path, keep_events=2, keep_days=None)
    for _ in range(5):
        log.append("r", ev())
    log.commit()
    while log.expire(0.0):
        pass
    log.close()
    log = SqliteLog(tmp_path, keep_events=2, keep_days=None)
    assert log.first_seq("r") == 4 and log.last_seq("r") == 5 and log.append("r", ev()) == 6
    log.close()


def test_a_second_log_on_the_same_directory_is_refused(tmp_path):
    first = SqliteLog(tmp_path)
    with pytest.raises(StoreError) as refused:
        SqliteLog(tmp_path)
    assert "already using" in one_line(refused) and str(tmp_path) in str(refused.value)
    first.append("r", ev())
    first.commit()  # the first one is unharmed
    first.close()
    second = SqliteLog(tmp_path)  # the lock went with it
    assert second.last_seq("r") == 1
    second.close()


def test_a_file_that_is_not_a_database_is_a_clear_error_at_open(tmp_path):
    (tmp_path / DB_FILE).write_bytes(b"this is not sqlite" * 500)
    with pytest.raises(StoreError) as bad:
        SqliteLog(tmp_path)
    assert "damaged" in one_line(bad)
    SqliteLog(tmp_path / "x").close()  # and the lock was released on the way out
    with pytest.raises(StoreError) as again:
        SqliteLog(tmp_path)  # not "already in use"
    assert "damaged" in str(again.value)


def test_another_programs_database_is_refused_and_left_as_it_was(tmp_path):
    path = tmp_path / DB_FILE
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE invoices(id INTEGER PRIMARY KEY, total REAL)")
    other.execute("INSERT INTO invoices VALUES (1, 9.5)")
    other.commit()
    other.close()
    with pytest.raises(StoreError) as refused:
        SqliteLog(tmp_path)
    assert "not the room log of udproom" in one_line(refused) and "invoices" in str(refused.value)
    check = sqlite3.connect(path)
    tables = {row[0] for row in check.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    check.close()
    assert tables == {"invoices"}  # nothing of ours was added to it
    SqliteLog(tmp_path / "x").close()  # an empty directory still works, and the lock was released
    SqliteLog(tmp_path / "x").close()  # and reopening our own log is not "foreign"


def test_damaged_pages_give_store_errors_and_nothing_else(tmp_path):
    log = SqliteLog(tmp_path)
    for i in range(3000):
        log.append(f"r{i % 7}", ev("x" * 200, mid=i + 1))
        if i % 100 == 0:
            log.commit()
    log.commit()
    log.close()
    path = tmp_path / DB_FILE
    data = bytearray(path.read_bytes())
    rng = random.Random(5)
    for _ in range(40):  # scribble over pages after the header page
        at = rng.randrange(4096, len(data) - 64)
        data[at : at + 64] = bytes(rng.randrange(256) for _ in range(64))
    path.write_bytes(bytes(data))
    errors = 0
    try:
        log = SqliteLog(tmp_path)
    except StoreError as exc:
        assert "\n" not in str(exc)
        return
    try:
        for room in log.rooms():
            try:
                log.read(room, 0, 10**9)
                log.seq_of_mid(room, 17)
                log.append(room, ev())
                log.commit()
            except StoreError as exc:
                assert "\n" not in str(exc)
                errors += 1
        try:
            log.expire(10**12)
        except StoreError:
            errors += 1
    finally:
        log.close()
    assert errors, "scribbled pages went unnoticed"


def test_full_disk_refuses_the_group_and_keeps_serving(tmp_path):
    log = SqliteLog(tmp_path, max_bytes=64 * 1024)
    committed: list[int] = []
    with pytest.raises(StoreError) as full:
        for _ in range(10_000):
            seq = log.append("r", ev("y" * 500))
            log.commit()
            committed.append(seq)
    assert "full" in one_line(full)
    # still serving what it has; the refused number is handed out again
    assert [s for s, _ in log.read("r", 1, 10**9)] == committed
    assert log.last_seq("r") == committed[-1] and log.append("r", ev()) == committed[-1] + 1
    log.close()
    bigger = SqliteLog(tmp_path)
    assert bigger.last_seq("r") == committed[-1]
    bigger.append("r", ev("fits now"))
    bigger.commit()
    bigger.close()


READ_ONLY = """
import os, sys
from udproom.protocol.roomlog import SqliteLog, StoreError
from udproom.protocol import frames as F
import fcntl, sqlite3  # imported while still root: the interpreter may live where nobody can read
os.setgid(65534); os.setuid(65534)
where = sys.argv[1]
try:
    log = SqliteLog(where)
    log.append("r", F.Ev(1, "n", "x"))
    log.commit()
except StoreError as exc:
    print("StoreError:", exc)
    sys.exit(0)
print("stored in a read-only directory?")
sys.exit(3)
"""


@pytest.mark.parametrize("case", ["new", "existing", "files-writable", "database-read-only"])
def test_a_read_only_directory_is_a_clear_error(case):
    top = tempfile.mkdtemp(prefix="udproom-ro-")
    try:
        os.chmod(top, 0o755)
        where = Path(top) / "data"
        if case == "new":
            where.mkdir()
        else:
            log = SqliteLog(where)
            log.append("r", ev())
            log.commit()
            log.close()
        for path in [where, *where.iterdir()]:
            if case == "database-read-only":
                os.chmod(path, 0o777 if path.is_dir() else 0o444 if path.name == DB_FILE else 0o666)
            elif case == "files-writable":
                os.chmod(path, 0o555 if path.is_dir() else 0o666)
            else:
                os.chmod(path, 0o555 if path.is_dir() else 0o444)
        if os.geteuid() == 0:  # root writes anywhere: prove it as nobody
            r = subprocess.run(
                [sys.executable, "-c", READ_ONLY, str(where)], capture_output=True, text=True, timeout=60
            )
            assert r.returncode == 0, r.stdout + r.stderr
            lines = r.stdout.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("StoreError:"), r.stdout
            assert not r.stderr
        else:
            with pytest.raises(StoreError) as refused:
                SqliteLog(where)
            one_line(refused)
    finally:
        for root, dirs, _files in os.walk(top):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)
        subprocess.run(["rm", "-rf", top], check=False)


def _lines_of(child: subprocess.Popen) -> queue.Queue:
    """The child's stdout lines, read by a thread, so every wait for one has a deadline."""
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        assert child.stdout is not None
        with child.stdout:  # closed by this thread, at the end of what the child wrote
            for line in child.stdout:
                lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_sigkill_at_random_points_loses_nothing_committed_and_reuses_no_number(tmp_path):
    rng = random.Random(20261201)
    reported: dict[tuple[str, int], int] = {}  # (room, seq) -> mid, as the children reported
    top: dict[str, int] = {}  # the last seq each room had at each reopen
    for round_ in range(6):
        child = subprocess.Popen(
            [sys.executable, str(CHILD), str(tmp_path), str(round_)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # a traceback shows up where the test reads
            text=True,
        )
        try:
            lines = _lines_of(child)
            assert lines.get(timeout=60) == "ready\n"
            if round_ == 0:  # while it runs, a second relay on that directory is refused
                with pytest.raises(StoreError) as refused:
                    SqliteLog(tmp_path)
                assert f"pid {child.pid}" in str(refused.value)
            for _ in range(rng.randint(1, 400)):
                line = lines.get(timeout=60)  # the child ended (or hung) early: Empty, not a hang
                room, seq, mid = line.split()
                key = (room, int(seq))
                assert key not in reported, f"{key} reported twice"
                assert int(seq) > top.get(room, 0), "a number committed before the crash was reused"
                reported[key] = int(mid)
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
        log = SqliteLog(tmp_path, keep_events=None, keep_days=None)
        try:
            for room in ("a", "b", "c"):
                last = log.last_seq(room)
                rows = log.read(room, 1, last)
                assert [s for s, _ in rows] == list(range(1, last + 1))  # no gap, no duplicate
                for s, e in rows:
                    assert e.text == f"{room}/{e.mid}" and log.seq_of_mid(room, e.mid) == s
                top[room] = last
            for (room, seq), mid in reported.items():
                got = log.read(room, seq, seq)
                assert got and got[0][1].mid == mid, f"acknowledged {room}#{seq} is missing after the crash"
        finally:
            log.close()
    assert len(reported) > 6


def test_the_write_ahead_log_stays_bounded_under_a_steady_write_load(tmp_path):
    """Checkpoints run off the caller's thread, and commit() takes over when they fall behind."""
    log = SqliteLog(tmp_path, wal_limit=256 * 1024)
    wal = tmp_path / (DB_FILE + "-wal")
    biggest = 0
    for i in range(2500):
        for _ in range(10):
            log.append(f"r{i % 20}", ev("z" * 400))
        log.commit()
        biggest = max(biggest, wal.stat().st_size)
    log.checkpoint()
    log.close()
    assert biggest < 4 * 1024 * 1024  # 10+ MB went through it


def test_the_sqlite_file_is_ordinary_sqlite(tmp_path):
    """Backups and inspection with the sqlite3 tool work (docs/storage.md says so)."""
    log = SqliteLog(tmp_path)
    log.append("r", ev("hello"))
    log.commit()
    backup = sqlite3.connect(tmp_path / "backup.sqlite3")
    assert log._db is not None
    log._db.backup(backup)
    backup.close()
    log.close()
    db = sqlite3.connect(tmp_path / "backup.sqlite3")
    assert db.execute("SELECT name, last_seq FROM rooms").fetchall() == [("r", 1)]
    db.close()


def test_open_log_picks_the_relays_log(tmp_path, monkeypatch):
    monkeypatch.setenv("UDPROOM_DATA_DIR", str(tmp_path / "data"))
    memory = open_log(memory=True, keep_events=5)
    assert isinstance(memory, MemoryLog) and memory.keep_events == 5 and not (tmp_path / "data").exists()
    default = open_log(fsync=True)
    assert isinstance(default, SqliteLog) and default.fsync
    assert default.path == tmp_path / "data" / "relay" / DB_FILE
    default.close()
    chosen = open_log(tmp_path / "elsewhere", keep_days=None)
    assert (
        isinstance(chosen, SqliteLog)
        and chosen.directory == tmp_path / "elsewhere"
        and chosen.keep_days is None
    )
    chosen.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_records_are_stored_at_once_read_by_prefix_and_survive_a_restart(tmp_path, kind):
    def open_it() -> RoomLog:
        return MemoryLog() if kind == "memory" else SqliteLog(tmp_path / "data")

    log = open_it()
    assert log.record("nick/alice") is None and log.records("nick/") == {}
    log.put_record("nick/alice", b"\x01" * 32)
    log.put_record("nick/bob", b"\x02" * 32)
    log.put_record("room/#dev/ops", b"")
    log.append("r", ev())  # records do not wait for (nor join) the events' group
    log.rollback()
    assert log.records("nick/") == {"nick/alice": b"\x01" * 32, "nick/bob": b"\x02" * 32}
    log.put_record("nick/bob", None)
    log.put_record("nick/nobody", None)  # deleting what is not there is fine
    with pytest.raises(StoreError):
        log.put_record("nick/x", "text")  # type: ignore[arg-type]
    with pytest.raises(StoreError):
        log.put_record("nick/\udcff", b"x")
    assert log.record("nick/alice") == b"\x01" * 32 and log.record("nick/bob") is None
    log.close()
    with pytest.raises(StoreError):
        log.record("nick/alice")
    if kind == "sqlite":
        again = open_it()
        assert again.records("") == {"nick/alice": b"\x01" * 32, "room/#dev/ops": b""}
        assert again.last_seq("r") == 0
        again.close()


def test_a_record_on_a_full_disk_is_refused_and_not_remembered(tmp_path):
    log = SqliteLog(tmp_path / "data", max_bytes=64 * 1024)
    with pytest.raises(StoreError) as full:
        for i in range(1000):
            log.put_record(f"ban/{i}", os.urandom(512))
    assert "full" in one_line(full)
    assert f"ban/{i}" not in log.records("ban/")  # the one refused is not claimed as stored
    kept = log.records("ban/")
    log.close()
    again = SqliteLog(tmp_path / "data")
    assert again.records("ban/") == kept
    again.close()
