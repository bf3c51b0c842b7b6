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
  `seq_of_mid` also sees the pending group, so a post repeated within one group is deduplicated.
- Every method raises `StoreError` and nothing else for a failure of the store (disk full,
  read-only, damaged file, closed log). Misuse (a non-Ev, a mid out of range) is a StoreError too.
- Retention: `expire(now_wall, budget)` deletes at most `budget` of the oldest events (older than
  `keep_days`, or beyond `keep_events` per room) and returns the rooms whose first kept sequence
  moved. It is meant to be called often with a small budget, so it never stalls the loop. The last
  sequence of a room survives expiry: numbers are never reused, even when every event is gone.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
from abc import ABC, abstractmethod
from collections import deque
from pathlib import Path

from . import frames as F

DAY = 86400.0
KEEP_DAYS = 30.0
KEEP_EVENTS = 100_000
DB_FILE = "relay.sqlite3"
LOCK_FILE = "relay.lock"
SCHEMA_VERSION = 1
_U63 = 1 << 63
_U64 = 1 << 64


class StoreError(Exception):
    """The log could not do what was asked. str() is one line, fit for a user."""


def _new_epoch() -> int:
    return int.from_bytes(os.urandom(6), "big") or 1


class RoomLog(ABC):
    """What the relay calls. Sequence numbers start at 1 per room and never repeat."""

    #: names this log: stays the same for as long as the history does (SqliteLog: across restarts)
    epoch: int

    def __init__(self, keep_days: float | None = KEEP_DAYS, keep_events: int | None = KEEP_EVENTS) -> None:
        if keep_days is not None and not (keep_days > 0 and math.isfinite(keep_days)):
            raise StoreError(f"keep-days must be a positive number of days, not {keep_days!r}")
        if keep_events is not None and keep_events < 1:
            raise StoreError(f"keep-events must be at least 1, not {keep_events!r}")
        self.keep_days = keep_days
        self.keep_events = keep_events
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
        if not -_U63 <= ev.mid < _U64:
            raise StoreError(f"message id {ev.mid} is out of range")
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
        self._group_topics[room] = str(topic)

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
        if not mid or not -_U63 <= mid < _U64:
            return None
        seq = self._group_mids.get((room, mid))
        return seq if seq is not None else self._stored_mid(room, mid)

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

    @abstractmethod
    def topic(self, room: str) -> str: ...

    @abstractmethod
    def rooms(self) -> list[str]:
        """Every room with a committed event or topic, sorted."""

    @abstractmethod
    def expire(self, now_wall: float, budget: int = 500) -> dict[str, int]:
        """Delete at most `budget` expired events; returns {room: its new first_seq} for rooms cut."""

    def close(self) -> None:
        """Forget the pending group (never acknowledged) and release the store."""
        self._discard()
        self._closed = True

    # ------------------------------------------------------------------ implementation hooks

    @abstractmethod
    def _last_committed(self, room: str) -> int: ...

    @abstractmethod
    def _stored_mid(self, room: str, mid: int) -> int | None: ...

    @abstractmethod
    def _write(self, group: list[tuple[str, int, F.Ev, bytes]], topics: dict[str, str]) -> None: ...

    def _cutoffs(self, now_wall: float, last: int) -> tuple[float, int]:
        """(events stamped before this wall time go, events up to this seq go)."""
        ts_cut = now_wall - self.keep_days * DAY if self.keep_days is not None else -math.inf
        seq_cut = last - self.keep_events if self.keep_events is not None else 0
        return ts_cut, seq_cut


# ============================================================================ memory


class _MemRoom:
    __slots__ = ("events", "last", "mids", "topic")

    def __init__(self) -> None:
        self.events: deque[tuple[int, F.Ev]] = deque()
        self.last = 0
        self.topic = ""
        self.mids: dict[int, int] = {}


class MemoryLog(RoomLog):
    """The log in memory: what the relay did before durable rooms. A restart forgets everything.

    `fail_commits`, when set to a message, makes every commit fail with it (tests of the relay's
    refusal path run on this, without a disk)."""

    def __init__(self, keep_days: float | None = KEEP_DAYS, keep_events: int | None = KEEP_EVENTS) -> None:
        super().__init__(keep_days, keep_events)
        self.epoch = _new_epoch()
        self._rooms: dict[str, _MemRoom] = {}
        self.fail_commits: str | None = None

    def _last_committed(self, room: str) -> int:
        r = self._rooms.get(room)
        return r.last if r is not None else 0

    def _stored_mid(self, room: str, mid: int) -> int | None:
        r = self._rooms.get(room)
        return r.mids.get(mid) if r is not None else None

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
            if ev.mid:
                r.mids.setdefault(ev.mid, seq)
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

    def topic(self, room: str) -> str:
        self._check_open()
        r = self._rooms.get(room)
        return r.topic if r is not None else ""

    def rooms(self) -> list[str]:
        self._check_open()
        return sorted(self._rooms)

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
                seq, ev = events.popleft()
                if ev.mid and r.mids.get(ev.mid) == seq:
                    del r.mids[ev.mid]
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
CREATE TABLE IF NOT EXISTS events(
    room INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts REAL,
    mid INTEGER,
    ev BLOB NOT NULL,
    PRIMARY KEY(room, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_mid ON events(room, mid) WHERE mid IS NOT NULL;
"""


def _signed(mid: int) -> int | None:
    """A message id (0..2**64-1 on the wire) as SQLite's signed 64-bit integer; 0 is none."""
    if not mid:
        return None
    return mid - _U64 if mid >= _U63 else mid


def _describe(exc: BaseException, where: Path) -> str:
    """One line for a sqlite3 or OS error on the log at `where`."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    if name.startswith("SQLITE_FULL") or "disk is full" in text:
        return f"the room log {where} is full ({text}): new posts are refused"
    if name.startswith("SQLITE_READONLY") or "readonly" in text:
        return f"the room log {where} is read-only ({text})"
    if (
        name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
        or "malformed" in text
        or "not a database" in text
    ):
        return f"the room log {where} is damaged ({text}); restore a backup or move it away"
    if name.startswith("SQLITE_CANTOPEN"):
        return f"cannot open the room log {where} ({text}): is its directory writable?"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return f"the room log {where} is busy ({text}): is another process using it?"
    if isinstance(exc, OSError):
        return f"{where}: {exc.strerror or text}"
    return f"the room log {where} failed: {text}"


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
    `max_bytes` caps the database size (SQLite's max_page_count): posts beyond it are refused."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        fsync: bool = False,
        keep_days: float | None = KEEP_DAYS,
        keep_events: int | None = KEEP_EVENTS,
        max_bytes: int | None = None,
    ) -> None:
        super().__init__(keep_days, keep_events)
        self.directory = Path(directory)
        self.path = self.directory / DB_FILE
        self._lock_fd: int | None = None
        self._db: sqlite3.Connection | None = None
        self._rooms: dict[str, _Room] = {}
        self._cursor = 0  # where the next expire() starts, round robin over rooms
        try:
            self._lock()
            self._open(fsync, max_bytes)
        except BaseException:
            self._release()
            raise

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
            raise StoreError(
                f"another relay{holder} is already using {where}; give this one --data DIR"
            ) from None
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
            if max_bytes is not None:
                page = db.execute("PRAGMA page_size").fetchone()[0]
                db.execute(f"PRAGMA max_page_count={max(1, int(max_bytes) // page)}")
            db.executescript(_SCHEMA)  # idempotent: every statement is IF NOT EXISTS
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            version = meta.get("schema")
            if version is None:
                self.epoch = _new_epoch()
                db.execute("BEGIN IMMEDIATE")
                db.executemany(
                    "INSERT INTO meta(key, value) VALUES (?, ?)",
                    [("schema", SCHEMA_VERSION), ("epoch", self.epoch)],
                )
                db.execute("COMMIT")
            elif version != SCHEMA_VERSION:
                raise StoreError(
                    f"the room log {self.path} has schema {version!r}; this udproom reads {SCHEMA_VERSION}"
                )
            else:
                self.epoch = int(meta.get("epoch") or 0) or 1
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
        except sqlite3.Error as exc:
            raise StoreError(_describe(exc, self.path)) from None
        except OSError as exc:
            raise StoreError(_describe(exc, self.path)) from None

    def _release(self) -> None:
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

    def _last_committed(self, room: str) -> int:
        r = self._rooms.get(room)
        return r.last if r is not None else 0

    def _stored_mid(self, room: str, mid: int) -> int | None:
        r = self._rooms.get(room)
        if r is None:
            return None
        row = self._query("SELECT seq FROM events WHERE room = ? AND mid = ? LIMIT 1", (r.id, _signed(mid)))
        return row[0][0] if row else None

    def _query(self, sql: str, params: tuple = ()) -> list:
        assert self._db is not None
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(_describe(exc, self.path)) from None

    def _write(self, group: list[tuple[str, int, F.Ev, bytes]], topics: dict[str, str]) -> None:
        db = self._db
        assert db is not None
        new: dict[str, _Room] = {}
        lasts: dict[str, int] = {}
        firsts: dict[str, tuple[int, float | None]] = {}
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for room in {*(g[0] for g in group), *topics}:
                    if room not in self._rooms:
                        cur = db.execute("INSERT INTO rooms(name) VALUES (?)", (room,))
                        new[room] = _Room(cur.lastrowid, 0, "")
                ids = {name: r.id for name, r in self._rooms.items()}
                ids.update((name, r.id) for name, r in new.items())
                rows = []
                for room, seq, ev, blob in group:
                    ts = ev.ts if ev.ts == ev.ts else None  # NaN has no place in a REAL column
                    rows.append((ids[room], seq, ts, _signed(ev.mid), blob))
                    lasts[room] = seq
                    firsts.setdefault(room, (seq, ts))
                db.executemany("INSERT INTO events(room, seq, ts, mid, ev) VALUES (?, ?, ?, ?, ?)", rows)
                db.executemany(
                    "UPDATE rooms SET last_seq = ? WHERE id = ?", [(s, ids[n]) for n, s in lasts.items()]
                )
                db.executemany(
                    "UPDATE rooms SET topic = ? WHERE id = ?", [(t, ids[n]) for n, t in topics.items()]
                )
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(_describe(exc, self.path)) from None
        # committed: only now does the in-memory view move
        self._rooms.update(new)
        for room, last in lasts.items():
            r = self._rooms[room]
            if r.first > r.last:  # nothing was kept: this group starts it
                r.first, r.first_ts = firsts[room]
            r.last = last
        for room, topic in topics.items():
            self._rooms[room].topic = topic

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

    def topic(self, room: str) -> str:
        self._check_open()
        r = self._rooms.get(room)
        return r.topic if r is not None else ""

    def rooms(self) -> list[str]:
        self._check_open()
        return sorted(self._rooms)

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

    def _delete_through(self, r: _Room, upto: int) -> None:
        db = self._db
        assert db is not None
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM events WHERE room = ? AND seq <= ?", (r.id, upto))
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(_describe(exc, self.path)) from None
