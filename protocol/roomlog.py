"""The relay's room log: every room's numbered events, its topic, and its message ids.

One interface (`RoomLog`), two homes: `MemoryLog` (today's behaviour: gone with the process; for
tests and `--memory`) and `SqliteLog` (stdlib sqlite3 in WAL mode under a data directory). The
sans-IO relay calls it synchronously; nothing here knows about sockets or clocks (`expire` takes
the wall time as a parameter).

The contract, for both:

- `append(room, ev)` hands out the room's next sequence number at once, but the event is only
  *pending*: `commit()` makes every pending event (and topic) durable in ONE transaction (group
  commit: the relay calls it once per flush of its loop, before it sends any Result, ack or Batch
  for what it appended). If `commit()` fails it raises `StoreError` (a one-line message), nothing
  of the group is visible, and the sequence numbers it handed out are taken back: the next
  `append` to that room gets the same number again. The relay then refuses those posts and must
  forget the events it kept for them.
- Reads (`read`, `before`, `last_seq`, `first_seq`, `topic`, `rooms`) see committed data only.
  `seq_of_mid` also sees the pending group, so a post repeated within one group is deduplicated;
  it remembers the message ids of each room's last `mid_window` events (4096 by default, as the
  relay's in-memory window did), across restarts.
- Every method raises `StoreError` and nothing else for a failure of the store (disk full,
  read-only, damaged file, closed log). Misuse (a non-Ev, a mid out of range) is a StoreError too.
- Retention: `expire(now_wall, budget)` deletes at most `budget` of the oldest events (older than
  `keep_days`, or beyond `keep_events` per room) and returns the rooms whose first kept sequence
  moved. It is meant to be called often with a small budget, so it never stalls the loop. The last
  sequence of a room survives expiry: numbers are never reused, even when every event is gone.

One module over 600 lines because it is one contract with its two homes side by side: the
interface, `MemoryLog` and `SqliteLog` must agree on every point above, and reading them together
is how that is checked (the contract tests run on both).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import frames as F
from .sqlstore import ERRORS, StoreError, describe, from_int64, refuse_foreign, to_int64, transaction

__all__ = ["Commit", "MemoryLog", "Pending", "RoomLog", "SqliteLog", "StoreError", "open_log"]

DAY = 86400.0


class Pending(Exception):
    """A log (or the cluster's nicks) started a round trip whose answer is not there yet: the
    caller parks what it was doing under `key` and does it again once `key` is reported complete
    (`completed()`); the call then answers from the result, without a second round trip. Raised
    before any side effect of the call. Only a log on a remote store raises it (a JetStreamLog of
    a relay, docs/cluster.md "The NATS client and the UDP loop"); MemoryLog and SqliteLog never do."""

    def __init__(self, key: Any) -> None:
        super().__init__(f"waiting for the cluster ({key!r})")
        self.key = key


KEEP_DAYS = 30.0
KEEP_EVENTS = 100_000
MID_WINDOW = 4096
WHAT = "the room log"
DB_FILE = "relay.sqlite3"
LOCK_FILE = "relay.lock"
SCHEMA_VERSION = 1
_U63 = 1 << 63
_U64 = 1 << 64


def _check_unicode(text: str) -> str:
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise StoreError(f"text that is not valid Unicode cannot be logged ({exc.reason})") from None
    return text


def _new_epoch() -> int:
    return int.from_bytes(os.urandom(6), "big") or 1


class LogInUse(StoreError):
    """Another process holds the log's directory (its lock). The caller adds how to choose another."""


class _Mids:
    """Message ids of a room's latest committed events (those above a sliding floor)."""

    __slots__ = ("order", "seqs")

    def __init__(self, pairs: Iterable[tuple[int, int]] = ()) -> None:
        self.seqs: dict[int, int] = {}
        self.order: deque[tuple[int, int]] = deque()
        for seq, mid in pairs:
            self.add(seq, mid)

    def add(self, seq: int, mid: int) -> None:
        if mid not in self.seqs:  # the first event with an id keeps it
            self.seqs[mid] = seq
            self.order.append((seq, mid))

    def forget_through(self, floor: int) -> None:
        order, seqs = self.order, self.seqs
        while order and order[0][0] <= floor:
            seq, mid = order.popleft()
            if seqs.get(mid) == seq:
                del seqs[mid]


class Commit:
    """The outcome of one group commit (`RoomLog.begin_commit()`), complete at once (MemoryLog,
    SqliteLog) or later (JetStreamLog: when JetStream has acknowledged the group's publishes).

    `events` are the group's (room, seq) in append order. Once `done()`: `stored` holds those that
    are durable (the relay sends their Results, acks and Batches), `duplicates` maps those the store
    already had under the same message id to the sequence they have there (acknowledge that one),
    and `error` is a one-line StoreError message when anything was not stored (refuse the rest).
    `numbers` maps stored events the store numbered itself (a JetStreamLog numbering by the stream,
    as a relay of a cluster does) to their final sequence; the others keep the appended one.
    SQLite and memory store a group entirely or not at all; JetStream all-or-nothing per room only
    (each room is its own stream), and within a room a prefix of the group's events.

    Only a remote store (JetStreamLog) has the last two: `unsent` are events never handed to the
    store (it was known unreachable: refuse them, they cannot appear later), and `unknown` maps
    events sent whose answer did not come in time to the event: they may be stored yet (a late
    ack, a buffer flushed on reconnect), so they are neither acknowledged nor refused; send them
    again with the same message id (the store's duplicate window answers) until an answer."""

    __slots__ = (
        "_callbacks",
        "_done",
        "_lock",
        "duplicates",
        "error",
        "events",
        "numbers",
        "stored",
        "unknown",
        "unsent",
    )

    def __init__(self, events: list[tuple[str, int]]) -> None:
        self.events = events
        self.stored: set[tuple[str, int]] = set()
        self.duplicates: dict[tuple[str, int], int] = {}
        self.error: str | None = None
        self.numbers: dict[tuple[str, int], int] = {}
        self.unsent: set[tuple[str, int]] = set()
        self.unknown: dict[tuple[str, int], F.Ev] = {}
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Any] = []

    def done(self) -> bool:
        return self._done.is_set()

    def finish(
        self,
        stored: Iterable[tuple[str, int]] = (),
        error: str | None = None,
        duplicates: dict[tuple[str, int], int] | None = None,
        numbers: dict[tuple[str, int], int] | None = None,
        unsent: Iterable[tuple[str, int]] = (),
        unknown: dict[tuple[str, int], F.Ev] | None = None,
    ) -> None:
        """Called once by the log, on whatever thread completes the group."""
        self.stored = set(stored)
        self.unsent = set(unsent)
        self.unknown = unknown or {}
        self.duplicates = duplicates or {}
        self.numbers = numbers or {}
        self.error = error
        with self._lock:
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            fn(self)

    def add_done_callback(self, fn: Any) -> None:
        """`fn(commit)` once done: at once if it is, else on the thread that completes it (a relay on
        asyncio hops back with loop.call_soon_threadsafe)."""
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(fn)
                return
        fn(self)

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)


class RoomLog(ABC):
    """What the relay calls. Sequence numbers start at 1 per room and never repeat."""

    #: names this log: stays the same for as long as the history does (SqliteLog: across restarts)
    epoch: int

    def __init__(
        self,
        keep_days: float | None = KEEP_DAYS,
        keep_events: int | None = KEEP_EVENTS,
        mid_window: int = MID_WINDOW,
    ) -> None:
        if keep_days is not None and not (keep_days > 0 and math.isfinite(keep_days)):
            raise StoreError(f"keep-days must be a positive number of days, not {keep_days!r}")
        if keep_events is not None and keep_events < 1:
            raise StoreError(f"keep-events must be at least 1, not {keep_events!r}")
        self.keep_days = keep_days
        self.keep_events = keep_events
        self.mid_window = max(1, mid_window)
        #: committed state per room, each with at least `.last` (seq) and `.topic`
        self._rooms: dict[str, Any] = {}
        self._mids: dict[str, _Mids] = {}  # loaded per room on first use
        self._closed = False
        # the pending group: (room, seq, event, encoded event), in append order
        self._group: list[tuple[str, int, F.Ev, bytes]] = []
        self._group_last: dict[str, int] = {}
        self._group_mids: dict[tuple[str, int], int] = {}
        self._group_topics: dict[str, str] = {}

    # ------------------------------------------------------------------ writing

    def append(self, room: str, ev: F.Ev) -> int:
        """Give `ev` the room's next sequence number; durable only once `commit()` returns."""
        self._check_open()
        if type(ev) is not F.Ev or type(room) is not str:
            raise StoreError("only events (frames.Ev) can be logged, under a room name")
        _check_unicode(room)
        if not 0 <= ev.mid < _U64:
            raise StoreError(f"message id {ev.mid} is out of range (0 to 2**64-1)")
        try:
            blob = F.encode_ev(ev)
        except Exception as exc:  # e.g. a lone surrogate in a str built in Python
            raise StoreError(f"event cannot be encoded: {exc}") from None
        last = self._group_last.get(room)
        seq = (self._last_committed(room) if last is None else last) + 1
        self._group.append((room, seq, ev, blob))
        self._group_last[room] = seq
        if ev.mid:
            self._group_mids.setdefault((room, ev.mid), seq)
        return seq

    def set_topic(self, room: str, topic: str) -> None:
        """The room's topic, committed with the group."""
        self._check_open()
        self._group_topics[_check_unicode(room)] = _check_unicode(str(topic))

    @property
    def pending(self) -> int:
        """Events appended and not yet committed."""
        return len(self._group)

    def commit(self) -> None:
        """Make the pending group durable in one transaction, or raise StoreError and take it back."""
        self._check_open()
        if not self._group and not self._group_topics:
            return
        group, topics = self._group, self._group_topics
        self._discard()
        self._write(group, topics)  # raises StoreError: the group is gone either way
        windows = self._mids
        touched = set()
        for room, seq, ev, _blob in group:
            w = windows.get(room)
            if w is not None:  # (a window not loaded yet will read these from the store)
                if ev.mid:
                    w.add(seq, ev.mid)
                touched.add(room)
        for room in touched:
            windows[room].forget_through(self._last_committed(room) - self.mid_window)

    def begin_commit(self) -> Commit:
        """Start committing the pending group without waiting for it: the relay's one code path.

        Here (memory, SQLite) the commit happens now and the handle is complete when returned; a
        networked log (JetStreamLog) returns at once and completes the handle when the store has
        answered. The next group may be appended meanwhile (its numbers continue the pending ones)."""
        handle = Commit([(room, seq) for room, seq, _ev, _blob in self._group])
        try:
            self.commit()
        except StoreError as exc:
            handle.finish(error=str(exc))
        else:
            handle.finish(stored=handle.events)
        return handle

    def rollback(self) -> None:
        """Take back the pending group (its sequence numbers will be handed out again)."""
        self._discard()

    def _discard(self) -> None:
        self._group = []
        self._group_last = {}
        self._group_mids = {}
        self._group_topics = {}

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the room log is closed")

    # ------------------------------------------------------------------ reading

    def seq_of_mid(self, room: str, mid: int) -> int | None:
        """The sequence a message id was logged under (pending or committed), if it still is."""
        self._check_open()
        if not 0 < mid < _U64:
            return None
        seq = self._group_mids.get((room, mid))
        if seq is not None:
            return seq
        w = self._mids.get(room)
        if w is None:
            last = self._last_committed(room)
            w = self._mids[room] = _Mids(self._load_mids(room, last - self.mid_window + 1))
        seq = w.seqs.get(mid)
        return seq if seq is not None and seq >= self.first_seq(room) else None

    def last_seq(self, room: str) -> int:
        """The room's last committed sequence (0 for a room never written)."""
        self._check_open()
        return self._last_committed(room)

    @abstractmethod
    def first_seq(self, room: str) -> int:
        """The room's first kept sequence; last_seq + 1 when nothing is kept."""

    @abstractmethod
    def read(self, room: str, lo: int, hi: int, limit: int | None = None) -> list[tuple[int, F.Ev]]:
        """Committed events lo..hi (inclusive) that are still kept, oldest first, at most `limit`."""

    def before(self, room: str, seq: int, limit: int) -> list[tuple[int, F.Ev]]:
        """CHATHISTORY BEFORE: the last `limit` kept events with a sequence below `seq`, oldest first."""
        self._check_open()
        if limit <= 0:
            return []
        hi = min(seq - 1, self._last_committed(room))
        lo = max(self.first_seq(room), hi - limit + 1)
        return self.read(room, lo, hi) if lo <= hi else []

    def topic(self, room: str) -> str:
        self._check_open()
        r = self._rooms.get(room)
        return r.topic if r is not None else ""

    def rooms(self) -> list[str]:
        """Every room with a committed event or topic, sorted."""
        self._check_open()
        return sorted(self._rooms)

    @abstractmethod
    def expire(self, now_wall: float, budget: int = 500) -> dict[str, int]:
        """Delete at most `budget` expired events; returns {room: its new first_seq} for rooms cut."""

    def close(self) -> None:
        """Forget the pending group (never acknowledged) and release the store."""
        self._discard()
        self._mids = {}
        self._closed = True

    # ------------------------------------------------------------------ records

    # The relay's small durable facts that are not events: registered nicks, room owners and modes,
    # bans, passphrase-room verifiers... Each is a key (text) -> bytes, written at once in its own
    # transaction (they are rare: a /register, a /ban), read back after a restart. The one home of
    # such facts; callers choose the keys ("nick/<nick_key>", "room/<room>/ops" ...). Memory: a dict.

    def record(self, key: str) -> bytes | None:
        self._check_open()
        return self._records().get(key)

    def records(self, prefix: str) -> dict[str, bytes]:
        """Every record whose key starts with `prefix`."""
        self._check_open()
        return {k: v for k, v in self._records().items() if k.startswith(prefix)}

    def put_record(self, key: str, value: bytes | None) -> None:
        """Store (None: delete) a record; durable when this returns, else StoreError."""
        self._check_open()
        _check_unicode(key)
        if value is not None and type(value) is not bytes:
            raise StoreError("a record's value is bytes")
        self._write_record(key, value)
        if value is None:
            self._records().pop(key, None)
        else:
            self._records()[key] = value

    def _records(self) -> dict[str, bytes]:
        """The records as loaded (a log keeps them all in memory: they are few and small)."""
        got = self.__dict__.get("_record_cache")
        if got is None:
            got = self.__dict__["_record_cache"] = dict(self._load_records())
        return got

    def _load_records(self) -> Iterable[tuple[str, bytes]]:
        return ()

    def _write_record(self, key: str, value: bytes | None) -> None:
        """Memory: nothing to write (the cache is the store)."""
        return None

    # ------------------------------------------------------------------ implementation hooks

    def _last_committed(self, room: str) -> int:
        r = self._rooms.get(room)
        return r.last if r is not None else 0

    @abstractmethod
    def _load_mids(self, room: str, lo: int) -> Iterable[tuple[int, int]]:
        """(seq, mid) of the room's committed events from `lo` on that have an id, oldest first."""

    @abstractmethod
    def _write(self, group: list[tuple[str, int, F.Ev, bytes]], topics: dict[str, str]) -> None: ...

    def _cutoffs(self, now_wall: float, last: int) -> tuple[float, int]:
        """(events stamped before this wall time go, events up to this seq go)."""
        ts_cut = now_wall - self.keep_days * DAY if self.keep_days is not None else -math.inf
        seq_cut = last - self.keep_events if self.keep_events is not None else 0
        return ts_cut, seq_cut


# ============================================================================ memory


class _MemRoom:
    __slots__ = ("events", "last", "topic")

    def __init__(self) -> None:
        self.events: deque[tuple[int, F.Ev]] = deque()
        self.last = 0
        self.topic = ""


class MemoryLog(RoomLog):
    """The log in memory: what the relay did before durable rooms. A restart forgets everything.

    `fail_commits`, when set to a message, makes every commit fail with it (tests of the relay's
    refusal path run on this, without a disk)."""

    def __init__(
        self,
        keep_days: float | None = KEEP_DAYS,
        keep_events: int | None = KEEP_EVENTS,
        mid_window: int = MID_WINDOW,
    ) -> None:
        super().__init__(keep_days, keep_events, mid_window)
        self.epoch = _new_epoch()
        self._rooms: dict[str, _MemRoom] = {}
        self.fail_commits: str | None = None

    def _load_mids(self, room: str, lo: int) -> Iterable[tuple[int, int]]:
        r = self._rooms.get(room)
        if r is None or not r.events:
            return []
        events = r.events
        start = max(0, lo - events[0][0])
        return [(seq, ev.mid) for seq, ev in itertools.islice(events, start, None) if ev.mid]

    def _write(self, group: list[tuple[str, int, F.Ev, bytes]], topics: dict[str, str]) -> None:
        if self.fail_commits is not None:
            raise StoreError(self.fail_commits)
        rooms = self._rooms
        for room, seq, ev, _blob in group:
            r = rooms.get(room)
            if r is None:
                r = rooms[room] = _MemRoom()
            r.events.append((seq, ev))
            r.last = seq
        for room, topic in topics.items():
            r = rooms.get(room)
            if r is None:
                r = rooms[room] = _MemRoom()
            r.topic = topic

    def first_seq(self, room: str) -> int:
        self._check_open()
        r = self._rooms.get(room)
        if r is None:
            return 1
        return r.events[0][0] if r.events else r.last + 1

    def read(self, room: str, lo: int, hi: int, limit: int | None = None) -> list[tuple[int, F.Ev]]:
        self._check_open()
        r = self._rooms.get(room)
        if r is None or not r.events:
            return []
        first = r.events[0][0]  # kept events are consecutive: index = seq - first
        lo, hi = max(lo, first), min(hi, r.last)
        if limit is not None:
            hi = min(hi, lo + max(limit, 0) - 1)
        events = r.events
        return [events[s - first] for s in range(lo, hi + 1)]

    def expire(self, now_wall: float, budget: int = 500) -> dict[str, int]:
        self._check_open()
        cut: dict[str, int] = {}
        for name, r in self._rooms.items():
            if budget <= 0:
                break
            ts_cut, seq_cut = self._cutoffs(now_wall, r.last)
            events = r.events
            n = 0
            while events and n < budget and (events[0][0] <= seq_cut or events[0][1].ts < ts_cut):
                events.popleft()
                n += 1
            if n:
                budget -= n
                cut[name] = events[0][0] if events else r.last + 1
        return cut

    def close(self) -> None:
        super().close()
        self._rooms = {}


# ============================================================================ sqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rooms(
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    last_seq INTEGER NOT NULL DEFAULT 0,
    topic TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS records(key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events(
    room INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts REAL,
    mid INTEGER,
    ev BLOB NOT NULL,
    PRIMARY KEY(room, seq)
) WITHOUT ROWID;
"""


class _Room:
    __slots__ = ("first", "first_ts", "id", "last", "topic")

    def __init__(self, rid: int, last: int, topic: str) -> None:
        self.id = rid
        self.last = last
        self.topic = topic
        self.first = last + 1  # first kept seq
        self.first_ts: float | None = None  # its timestamp (None: nothing kept, or no valid ts)


class SqliteLog(RoomLog):
    """The log in SQLite under `directory` (created if needed): relay.sqlite3, WAL mode.

    Durability (see docs/storage.md): with `fsync=False` (synchronous=NORMAL) a committed group
    survives a crash of the process (SIGKILL), but a power loss or OS crash can lose the groups
    committed since the last checkpoint (never corrupting the file). With `fsync=True`
    (synchronous=FULL) each commit waits for the disk, and a power loss loses nothing committed.

    A lock (flock on relay.lock, held until close()) keeps a second relay off the same directory.
    `max_bytes` caps the database size (SQLite's max_page_count): posts beyond it are refused.

    Checkpoints (copying the WAL into the database, with the fsyncs that takes) run on a helper
    thread with its own connection, not inside commit(): a commit only appends to the WAL, so the
    caller's loop never waits for a checkpoint. Should the WAL still outgrow `wal_limit` (a write
    load the helper cannot keep up with), commit() checkpoints it itself."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        fsync: bool = False,
        keep_days: float | None = KEEP_DAYS,
        keep_events: int | None = KEEP_EVENTS,
        max_bytes: int | None = None,
        mid_window: int = MID_WINDOW,
        wal_limit: int = 64 << 20,
    ) -> None:
        super().__init__(keep_days, keep_events, mid_window)
        self.directory = Path(directory)
        self.path = self.directory / DB_FILE
        self.fsync = fsync
        self.wal_limit = wal_limit
        self._wal = self.directory / (DB_FILE + "-wal")
        self._lock_fd: int | None = None
        self._db: sqlite3.Connection | None = None
        self._rooms: dict[str, _Room] = {}
        self._cursor = 0  # where the next expire() starts, round robin over rooms
        self._commits = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._helper: threading.Thread | None = None
        try:
            self._lock()
            self._open(fsync, max_bytes)
        except BaseException:
            self._release()
            raise
        self._helper = threading.Thread(target=self._checkpoints, name="udproom-checkpoint", daemon=True)
        self._helper.start()

    def _checkpoints(self) -> None:
        """The helper thread: a PASSIVE checkpoint after commits, at most four a second."""
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=1.0)
            db.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}")
        except sqlite3.Error:
            return  # commit() keeps the WAL bounded by itself
        try:
            while True:
                self._wake.wait()
                if self._stop.is_set():
                    return
                self._wake.clear()
                with contextlib.suppress(sqlite3.Error):
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                if self._stop.wait(0.25):
                    return
        finally:
            db.close()

    def checkpoint(self) -> None:
        """Copy the WAL into the database now (e.g. before copying the file for a backup)."""
        self._check_open()
        self._query("PRAGMA wal_checkpoint(TRUNCATE)")

    # ------------------------------------------------------------------ opening

    def _lock(self) -> None:
        import fcntl

        where = self.directory
        try:
            where.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the data directory {where}: {exc.strerror or exc}") from None
        lock = where / LOCK_FILE
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise StoreError(f"cannot write to the data directory {where}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                holder = f" (pid {int(os.pread(fd, 32, 0).split()[0])})"
            os.close(fd)
            raise LogInUse(f"another relay{holder} is already using {where}") from None
        self._lock_fd = fd
        with contextlib.suppress(OSError):  # who holds it, for the message above
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def _open(self, fsync: bool, max_bytes: int | None) -> None:
        try:
            db = self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=0.5
            )
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"the room log {self.path} cannot use WAL mode (got {mode})")
            db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
            db.execute("PRAGMA wal_autocheckpoint=0")  # the helper thread does it
            db.execute(f"PRAGMA journal_size_limit={int(self.wal_limit)}")
            if max_bytes is not None:
                page = db.execute("PRAGMA page_size").fetchone()[0]
                db.execute(f"PRAGMA max_page_count={max(1, int(max_bytes) // page)}")
            refuse_foreign(db, WHAT, self.path)
            db.executescript(_SCHEMA)  # idempotent: every statement is IF NOT EXISTS
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            version = meta.get("schema", SCHEMA_VERSION)
            if version != SCHEMA_VERSION:
                raise StoreError(
                    f"the room log {self.path} has schema {version!r}; this udproom reads {SCHEMA_VERSION}"
                )
            epoch = meta.get("epoch")
            if type(epoch) is int and epoch > 0:
                self.epoch = epoch
            else:  # a new log, or one whose epoch was deleted after restoring a backup
                self.epoch = _new_epoch()
                db.execute("BEGIN IMMEDIATE")
                db.executemany(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                    [("schema", SCHEMA_VERSION), ("epoch", self.epoch)],
                )
                db.execute("COMMIT")
            # rooms.last_seq is written in the same transaction as the events, so it is the truth
            # even when retention has deleted every event of a room
            for rid, name, last, topic in db.execute(
                "SELECT id, name, last_seq, topic FROM rooms"
            ).fetchall():
                r = self._rooms[name] = _Room(rid, last, topic)
                row = db.execute(
                    "SELECT seq, ts FROM events WHERE room = ? ORDER BY seq LIMIT 1", (rid,)
                ).fetchone()
                if row is not None:
                    r.first, r.first_ts = row
        except ERRORS as exc:
            raise StoreError(describe(exc, WHAT, self.path)) from None
        except OSError as exc:
            raise StoreError(describe(exc, WHAT, self.path)) from None

    def _release(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._helper is not None:
            self._helper.join(10.0)
            self._helper = None
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def close(self) -> None:
        super().close()
        self._release()

    # ------------------------------------------------------------------ hooks

    def _load_mids(self, room: str, lo: int) -> Iterable[tuple[int, int]]:
        r = self._rooms.get(room)
        if r is None:
            return []
        rows = self._query(
            "SELECT seq, mid FROM events WHERE room = ? AND seq >= ? AND mid IS NOT NULL ORDER BY seq",
            (r.id, lo),
        )
        return [(seq, from_int64(mid)) for seq, mid in rows]

    def _query(self, sql: str, params: tuple = ()) -> list:
        assert self._db is not None
        try:
            return self._db.execute(sql, params).fetchall()
        except ERRORS as exc:
            raise StoreError(describe(exc, WHAT, self.path)) from None

    def _room_id(self, db: sqlite3.Connection, room: str, new: dict[str, _Room]) -> int:
        r = self._rooms.get(room) or new.get(room)
        if r is None:
            cur = db.execute("INSERT INTO rooms(name) VALUES (?)", (room,))
            r = new[room] = _Room(cur.lastrowid or 0, 0, "")
        return r.id

    def _write(self, group: list[tuple[str, int, F.Ev, bytes]], topics: dict[str, str]) -> None:
        db = self._db
        assert db is not None
        new: dict[str, _Room] = {}
        lasts: dict[str, int] = {}
        firsts: dict[str, tuple[int, float | None]] = {}
        with transaction(db, WHAT, self.path):
            ids: dict[str, int] = {}
            rows = []
            for room, seq, ev, blob in group:
                rid = ids.get(room)
                if rid is None:
                    rid = ids[room] = self._room_id(db, room, new)
                    firsts[room] = (seq, ev.ts if ev.ts == ev.ts else None)
                # NaN has no place in a REAL column (it would read back as NULL anyway)
                rows.append(
                    (rid, seq, ev.ts if ev.ts == ev.ts else None, to_int64(ev.mid) if ev.mid else None, blob)
                )
                lasts[room] = seq
            for room in topics:
                if room not in ids:
                    ids[room] = self._room_id(db, room, new)
            if rows:
                db.executemany("INSERT INTO events(room, seq, ts, mid, ev) VALUES (?, ?, ?, ?, ?)", rows)
                db.executemany(
                    "UPDATE rooms SET last_seq = ? WHERE id = ?", [(s, ids[n]) for n, s in lasts.items()]
                )
            if topics:
                db.executemany(
                    "UPDATE rooms SET topic = ? WHERE id = ?", [(t, ids[n]) for n, t in topics.items()]
                )
        # committed: only now does the in-memory view move
        self._rooms.update(new)
        for room, last in lasts.items():
            r = self._rooms[room]
            if r.first > r.last:  # nothing was kept: this group starts it
                r.first, r.first_ts = firsts[room]
            r.last = last
        for room, topic in topics.items():
            self._rooms[room].topic = topic
        self._wake.set()
        self._commits += 1
        if self._commits % 32 == 0:
            try:
                big = self._wal.stat().st_size > self.wal_limit
            except OSError:
                big = False
            if big:  # the helper is not keeping up: checkpoint here, the next commit restarts the WAL
                with contextlib.suppress(sqlite3.Error):
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    # ------------------------------------------------------------------ reading

    def first_seq(self, room: str) -> int:
        self._check_open()
        r = self._rooms.get(room)
        return r.first if r is not None else 1

    def read(self, room: str, lo: int, hi: int, limit: int | None = None) -> list[tuple[int, F.Ev]]:
        self._check_open()
        r = self._rooms.get(room)
        if r is None:
            return []
        lo, hi = max(lo, r.first), min(hi, r.last)
        if limit is not None:
            hi = min(hi, lo + max(limit, 0) - 1)
        if lo > hi:
            return []
        rows = self._query(
            "SELECT seq, ev FROM events WHERE room = ? AND seq BETWEEN ? AND ? ORDER BY seq", (r.id, lo, hi)
        )
        try:
            return [(seq, F.decode_ev(blob)) for seq, blob in rows]
        except F.FrameError as exc:
            raise StoreError(f"the room log {self.path} is damaged: {exc}") from None

    # ------------------------------------------------------------------ retention

    def expire(self, now_wall: float, budget: int = 500) -> dict[str, int]:
        self._check_open()
        cut: dict[str, int] = {}
        names = list(self._rooms)
        if not names or budget <= 0:
            return cut
        start = self._cursor % len(names)
        for name in names[start:] + names[:start]:
            if budget <= 0:
                break
            r = self._rooms[name]
            if r.first > r.last:
                continue
            ts_cut, seq_cut = self._cutoffs(now_wall, r.last)
            if not (r.first <= seq_cut or (r.first_ts is not None and r.first_ts < ts_cut)):
                continue
            # the oldest `budget` events: how far the expired run goes
            upto = r.first - 1
            rows = self._query(
                "SELECT seq, ts FROM events WHERE room = ? AND seq >= ? ORDER BY seq LIMIT ?",
                (r.id, r.first, budget),
            )
            for seq, ts in rows:
                if not (seq <= seq_cut or (ts is not None and ts < ts_cut)):
                    break
                upto = seq
            if upto < r.first:
                continue
            self._delete_through(r, upto)
            budget -= upto - r.first + 1
            nxt = self._query(
                "SELECT seq, ts FROM events WHERE room = ? AND seq > ? ORDER BY seq LIMIT 1", (r.id, upto)
            )
            r.first, r.first_ts = nxt[0] if nxt else (r.last + 1, None)
            cut[name] = r.first
        self._cursor = start + 1
        return cut

    def _load_records(self) -> Iterable[tuple[str, bytes]]:
        return [(k, bytes(v)) for k, v in self._query("SELECT key, value FROM records")]

    def _write_record(self, key: str, value: bytes | None) -> None:
        db = self._db
        assert db is not None
        with transaction(db, WHAT, self.path):
            if value is None:
                db.execute("DELETE FROM records WHERE key = ?", (key,))
            else:
                db.execute("INSERT OR REPLACE INTO records(key, value) VALUES (?, ?)", (key, value))

    def _delete_through(self, r: _Room, upto: int) -> None:
        db = self._db
        assert db is not None
        with transaction(db, WHAT, self.path):
            db.execute("DELETE FROM events WHERE room = ? AND seq <= ?", (r.id, upto))


def open_log(
    data: str | os.PathLike[str] | None = None,
    memory: bool = False,
    fsync: bool = False,
    keep_days: float | None = KEEP_DAYS,
    keep_events: int | None = KEEP_EVENTS,
) -> RoomLog:
    """The room log a relay runs on: `udproom relay [--data DIR] [--memory] [--fsync]` and the
    app's --host. Without `data`, the user data directory's relay/ (paths.relay_data_dir)."""
    if memory:
        return MemoryLog(keep_days, keep_events)
    if data is None:
        from .paths import relay_data_dir

        data = relay_data_dir()
    return SqliteLog(data, fsync=fsync, keep_days=keep_days, keep_events=keep_events)
