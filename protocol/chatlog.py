"""The app's own log: every room event it showed, in SQLite under the user data directory.

UI-free: the app (and `udproom search` / `udproom log`) call it. One database for every circle (a
relay's address, or a direct-mode circle's id) and room. What arrived is stored as it arrived
(nothing sanitised on the way in); text that reaches a terminal goes through `names.sanitize` on
the way out (`transcript`, `format_line`) — `Line` objects themselves carry the raw text, and a UI
that draws them sanitises them as it draws everything else.

- Deduplicated: a line with a room sequence (`seq`, from a relay) is stored once per
  (circle, room, epoch, seq); a line with a message id once per (circle, room, mid). Adding the
  same events again (a backfill after a restart, a page fetched twice) changes nothing.
- Ordered within a room by (ts, seq, pos); `pos` is the row's position, stable, for "jump to".
- Direct mode: a line keeps its Lamport stamp (`lc`), the order every peer shows, and a room's
  message what its author signed (`signed`: message id, time, signature, key); a peer asked for
  history answers with those lines, as signed, from here (`stamped`, read through `peer_history`).
- Searched with SQLite FTS5 (an external-content table kept in sync by triggers): words, `dep*`
  prefixes (and an implicit prefix on the last word), `nick:bob` and `room:#dev` filters.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import itertools
import json
import os
import sqlite3
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import events as E
from .names import nick_key, sanitize
from .sqlstore import ERRORS, StoreError, describe, from_int64, refuse_foreign, to_int64, transaction

#: the kinds of line, named as `udproom listen` names its JSON objects' "type"
KINDS = ("message", "action", "join", "leave", "timeout", "nick", "topic", "away")
MAX_RESULTS = 1000


@dataclass(frozen=True, slots=True)
class Line:
    circle: str  # a relay's address, or a direct-mode circle's id
    room: str  # canonical room name, or "@nick" for a direct conversation
    kind: str  # one of KINDS
    nick: str  # who did it (for "nick": the old nick; `text` is the new one)
    text: str = ""  # message, action, leave reason, new nick, topic, away message
    ts: float = 0.0  # wall clock seconds, as stamped by the relay (or the sending peer)
    seq: int = 0  # the room's sequence at the relay; 0 when there is none (direct mode)
    mid: int = 0  # message id; 0 when unknown
    epoch: int = 0  # the relay's epoch: room sequences are only comparable within one
    pos: int = 0  # the line's position in the log (set when read back)
    lc: int = 0  # direct mode: the event's Lamport stamp (its place in the room's order); 0: none
    signed: E.Signed | None = None  # direct mode, a room's message: as its author signed it


def line_of(ev: object, circle: str, epoch: int = 0, mid: int = 0, direct: bool = False) -> Line | None:
    """The Line for a room event from `events` (None for anything that is not one).

    `direct`: the event comes from direct mode, where `seq` is a Lamport clock (two peers can
    share one), not a room sequence: the line keeps it as `lc` and dedupes by `mid` only."""
    if isinstance(ev, E.MessageReceived):
        kind, nick, text = ("action" if ev.action else "message"), ev.nick, ev.text
    elif isinstance(ev, E.MemberJoined):
        kind, nick, text = "join", ev.nick, ""
    elif isinstance(ev, E.MemberLeft):
        kind, nick, text = "leave", ev.nick, ev.reason
    elif isinstance(ev, E.MemberTimedOut):
        kind, nick, text = "timeout", ev.nick, ""
    elif isinstance(ev, E.NickChanged):
        kind, nick, text = "nick", ev.old, ev.new
    elif isinstance(ev, E.TopicChanged):
        kind, nick, text = "topic", ev.nick, ev.topic
    elif isinstance(ev, E.AwayChanged):
        kind, nick, text = "away", ev.nick, ev.away
    else:
        return None
    if direct:
        lc = ev.seq if isinstance(ev.seq, int) and 0 < ev.seq < _U63 else 0
        signed = getattr(ev, "signed", None)  # (a room's message)
        signed = signed if isinstance(signed, E.Signed) and signed.well_formed() else None
        return Line(circle, ev.room, kind, nick, text, ev.ts, 0, mid, epoch, 0, lc, signed)
    return Line(circle, ev.room, kind, nick, text, ev.ts, ev.seq, mid, epoch)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chans(
    id INTEGER PRIMARY KEY,
    circle TEXT NOT NULL,
    room TEXT NOT NULL,
    UNIQUE(circle, room)
);
CREATE TABLE IF NOT EXISTS lines(
    id INTEGER PRIMARY KEY,
    chan INTEGER NOT NULL,
    epoch INTEGER NOT NULL DEFAULT 0,
    seq INTEGER NOT NULL DEFAULT 0,
    mid INTEGER NOT NULL DEFAULT 0,
    ts REAL NOT NULL,
    kind INTEGER NOT NULL,
    nick TEXT NOT NULL,
    text TEXT NOT NULL,
    lc INTEGER NOT NULL DEFAULT 0,
    signed TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS lines_order ON lines(chan, ts, seq);
CREATE UNIQUE INDEX IF NOT EXISTS lines_seq ON lines(chan, epoch, seq) WHERE seq != 0;
CREATE UNIQUE INDEX IF NOT EXISTS lines_mid ON lines(chan, mid) WHERE mid != 0;
CREATE INDEX IF NOT EXISTS lines_nick ON lines(nick);
CREATE TABLE IF NOT EXISTS nicks(nick TEXT PRIMARY KEY) WITHOUT ROWID;
"""
#: direct-mode lines by Lamport stamp (a peer answering history reads the newest below a stamp)
_LC_INDEX = "CREATE INDEX IF NOT EXISTS lines_lc ON lines(chan, lc) WHERE lc != 0"
#: 2: lines.lc; 3: lines.signed (an older log gains the columns when opened for writing; read-only,
#: they read as 0 and '')
SCHEMA_VERSION = 3
#: the columns each schema version added, as added to an older log
_ADDED = {
    2: ("lc", "ALTER TABLE lines ADD COLUMN lc INTEGER NOT NULL DEFAULT 0", "0"),
    3: ("signed", "ALTER TABLE lines ADD COLUMN signed TEXT NOT NULL DEFAULT ''", "''"),
}
#: lines.signed: base64 of the message id (8 bytes, big-endian), the time as signed (the 8 bytes of
#: its IEEE 754 double: any float, NaN included, comes back bit for bit), the signature and the key
_SIGNED = struct.Struct(">Qd64s32s")
WHAT = "the chat log"
#: lines per full-text shard. FTS5 reads a term's whole list of rows to return the newest ones
#: first, so one index over everything makes a search for a very common word cost as much as the
#: whole log has of it. Shards by position bound that: the newest shard answers most searches.
SHARD_ROWS = 200_000
#: shard k indexes lines with lo <= id < hi; triggers keep it in sync (external content)
_SHARD = (
    """CREATE VIRTUAL TABLE IF NOT EXISTS lines_fts{k} USING fts5(
        text, content='lines', content_rowid='id', tokenize='unicode61 remove_diacritics 2')""",
    """CREATE TRIGGER IF NOT EXISTS lines_fts{k}_ai AFTER INSERT ON lines
    WHEN new.text != '' AND new.id >= {lo} AND new.id < {hi} BEGIN
        INSERT INTO lines_fts{k}(rowid, text) VALUES (new.id, new.text);
    END""",
    """CREATE TRIGGER IF NOT EXISTS lines_fts{k}_ad AFTER DELETE ON lines
    WHEN old.text != '' AND old.id >= {lo} AND old.id < {hi} BEGIN
        INSERT INTO lines_fts{k}(lines_fts{k}, rowid, text) VALUES ('delete', old.id, old.text);
    END""",
    """CREATE TRIGGER IF NOT EXISTS lines_fts{k}_au AFTER UPDATE OF text ON lines
    WHEN old.id >= {lo} AND old.id < {hi} BEGIN
        INSERT INTO lines_fts{k}(lines_fts{k}, rowid, text)
            SELECT 'delete', old.id, old.text WHERE old.text != '';
        INSERT INTO lines_fts{k}(rowid, text) SELECT new.id, new.text WHERE new.text != '';
    END""",
)
#: one statement stores a batch: its rows as a JSON array of arrays (ChatLog.add), in order
_INSERT_ROWS = "INSERT OR IGNORE INTO lines(chan, epoch, seq, mid, ts, kind, nick, text, lc, signed)"
_INSERT = _INSERT_ROWS + " SELECT " + ", ".join(f"json_extract(value, '$[{i}]')" for i in range(10))
_INSERT += " FROM json_each(?)"
_INSERT_ROWS += " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INFINITIES = (float("inf"), float("-inf"))
_COLS = (
    "lines.id, chans.circle, chans.room, lines.kind, lines.nick, lines.text, lines.ts, lines.seq,"
    " lines.mid, lines.epoch"
)
_U63, _U64 = 1 << 63, 1 << 64


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed search: the FTS5 expression (None when only filters were given) and filters."""

    match: str | None
    nick: str | None = None
    room: str | None = None


def parse_query(text: str) -> Query:
    """'deploy fri nick:bob room:#dev' -> words (each a quoted FTS5 phrase; `word*` is a prefix and
    so is the last word), a nick and a room. Nothing the user types is FTS5 syntax."""
    words: list[str] = []
    nick = room = None
    for token in text.split():
        low = token.lower()
        if low.startswith("nick:") and len(token) > 5:
            nick = token[5:]
        elif low.startswith("room:") and len(token) > 5:
            raw = token[5:]
            room = raw if raw.startswith("@") else raw.lstrip("#").lower()
        elif any(ch.isalnum() for ch in token):
            words.append(token)
    parts = []
    for i, word in enumerate(words):
        star = word.endswith("*") or i == len(words) - 1
        core = word.rstrip("*")
        if any(ch.isalnum() for ch in core):
            parts.append('"' + core.replace('"', '""') + '"' + ("*" if star else ""))
    return Query(" ".join(parts) or None, nick, room)


class ChatLog:
    """The app's log. `ChatLog.open_read_only(path)` for commands that only read."""

    def __init__(self, path: str | os.PathLike[str], read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._chans: dict[tuple[str, str], int] = {}
        self._shards = 0  # full-text shards that exist: lines_fts0 .. lines_fts{n-1}
        self._db: sqlite3.Connection | None = None
        self._version = SCHEMA_VERSION  # an older one only read-only (its later columns read as defaults)
        self._cols = _COLS
        try:
            if read_only:
                if not self.path.exists():
                    raise StoreError(
                        f"there is no chat log at {self.path} yet (the app writes it as you chat)"
                    )
                self._db = self._open_read_only()
            else:
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"cannot create {self.path.parent}: {exc.strerror or exc}") from None
                db = self._db = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False, timeout=2.0
                )
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                refuse_foreign(db, WHAT, self.path)
                db.executescript(_SCHEMA)
                db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
                self._upgrade(db)
            has_meta = self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone()
            version = has_meta and self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            older = version and type(version[0]) is int and 1 <= version[0] < SCHEMA_VERSION
            if older and read_only:
                self._version = version[0]  # a log from before stamps (1) or signatures (2) were kept
            elif not version or version[0] != SCHEMA_VERSION:
                raise StoreError(f"{self.path} is not a udproom chat log this version can read")
            # what `_rows` reads: a column the log's version does not have reads as its default
            added = [f"lines.{c}" if v <= self._version else d for v, (c, _, d) in _ADDED.items()]
            self._cols = ", ".join([_COLS, *added])
            for cid, circle, room in self._db.execute("SELECT id, circle, room FROM chans"):
                self._chans[(circle, room)] = cid
            shards = self._db.execute("SELECT value FROM meta WHERE key = 'shards'").fetchone()
            self._shards = int(shards[0]) if shards else 0
        except ERRORS as exc:
            self.close()
            raise StoreError(describe(exc, WHAT, self.path)) from None
        except BaseException:
            self.close()
            raise

    def _upgrade(self, db: sqlite3.Connection) -> None:
        """An older log gains the columns added since (`_ADDED`): a version-1 log `lines.lc`, a
        version-2 log `lines.signed`; lines logged before keep the defaults (0: no stamp; '': no
        signature, so not served to peers)."""
        with transaction(db, WHAT, self.path):
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is not None and type(row[0]) is int and 1 <= row[0] < SCHEMA_VERSION:
                for version in range(row[0] + 1, SCHEMA_VERSION + 1):
                    db.execute(_ADDED[version][1])
                db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (SCHEMA_VERSION,))
        db.execute(_LC_INDEX)

    def _open_read_only(self) -> sqlite3.Connection:
        uri = self.path.resolve().as_uri() + "?mode=ro"
        db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            # A WAL database in a directory we may not write to: SQLite cannot make its -shm
            # file. No one can be writing there through us either; read the file as it is.
            if os.access(self.path.parent, os.W_OK):
                raise
            db.close()
            db = sqlite3.connect(
                uri + "&immutable=1", uri=True, isolation_level=None, check_same_thread=False
            )
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db

    @classmethod
    def open_read_only(cls, path: str | os.PathLike[str]) -> ChatLog:
        return cls(path, read_only=True)

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    def __enter__(self) -> ChatLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writing

    def add(self, lines: Iterable[Line], count: int | None = None) -> int:
        """Store lines in one transaction; those already stored are skipped. Returns how many were new.

        `lines` may be an iterator, with `count` the most it gives: each line then becomes its row
        as it comes (the app's writer: a batch is held as plain rows, not as Line objects). The rows go to
        SQLite as one JSON array in one statement (`json_each`): one step for the whole batch, so
        the thread holds Python's lock once, not once per row (per row, the writer's thread took
        the lock from the UI's thread thousands of times a second), and 2-3x less CPU per line.
        An empty batch is a transaction that stores nothing."""
        if count is None:
            lines = list(lines)
            count = len(lines)
        db = self._conn()
        nicks: set[str] = set()
        new_chans: dict[tuple[str, str], int] = {}
        chans = self._chans
        rows = []
        with transaction(db, WHAT, self.path):
            for line in itertools.islice(lines, count):
                key = (line.circle, line.room)
                cid = chans.get(key) or new_chans.get(key)
                if cid is None:
                    cur = db.execute("INSERT INTO chans(circle, room) VALUES (?, ?)", key)
                    cid = new_chans[key] = cur.lastrowid
                try:
                    kind = KINDS.index(line.kind)
                except ValueError:
                    raise StoreError(f"unknown kind of line {line.kind!r}") from None
                nicks.add(line.nick)
                # a timestamp that is not a number is kept as 0 (the order needs one)
                ts = float(line.ts) if line.ts == line.ts else 0.0
                rows.append(
                    (
                        cid,
                        to_int64(line.epoch),
                        to_int64(line.seq),
                        to_int64(line.mid),
                        ts,
                        kind,
                        line.nick,
                        line.text,
                        to_int64(line.lc),
                        _pack(line.signed),
                    )
                )
            top = db.execute("SELECT max(id) FROM lines").fetchone()[0] or 0
            self._ensure_shards(db, top + len(rows))
            if any(r[4] in _INFINITIES or "\0" in r[6] or "\0" in r[7] for r in rows):
                # what JSON cannot carry (an infinite time; NUL, which SQLite's JSON cuts text
                # at): row by row, as they are
                added = db.executemany(_INSERT_ROWS, rows).rowcount
            else:
                added = db.execute(_INSERT, (json.dumps(rows, ensure_ascii=False),)).rowcount
            db.executemany("INSERT OR IGNORE INTO nicks(nick) VALUES (?)", [(n,) for n in nicks])
        self._chans.update(new_chans)
        return max(added, 0)

    def _ensure_shards(self, db: sqlite3.Connection, upto: int) -> None:
        """Full-text shards for every id up to `upto` (inside the caller's transaction)."""
        need = upto // SHARD_ROWS + 1
        if need <= self._shards:
            return
        for k in range(self._shards, need):
            for stmt in _SHARD:
                db.execute(stmt.format(k=k, lo=k * SHARD_ROWS, hi=(k + 1) * SHARD_ROWS))
        db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('shards', ?)", (need,))
        self._shards = need

    # ------------------------------------------------------------------ reading a room

    def rooms(self, circle: str | None = None) -> list[tuple[str, str]]:
        """(circle, room) pairs the log has lines for."""
        return sorted(k for k in self._chans if circle is None or k[0] == circle)

    def recent(self, circle: str, room: str, n: int = 100) -> list[Line]:
        """The last `n` lines of a room, oldest first."""
        cid = self._chans.get((circle, room))
        return self._page(cid, None, True, n)

    def before(self, line: Line, limit: int = 100) -> list[Line]:
        """Up to `limit` lines of `line`'s room just before it (it must come from this log), oldest first."""
        return self._page(self._chans.get((line.circle, line.room)), self._key(line), True, limit)

    def after(self, line: Line, limit: int = 100) -> list[Line]:
        """Up to `limit` lines of `line`'s room just after it, oldest first."""
        return self._page(self._chans.get((line.circle, line.room)), self._key(line), False, limit)

    def _page(self, cid: int | None, bound: tuple | None, older: bool, limit: int) -> list[Line]:
        """Up to `limit` lines of a room on one side of `bound` (a (ts, seq, pos) key; None: from
        the newest or the oldest end), oldest first. Walks the (chan, ts, seq) index."""
        if cid is None or limit <= 0:
            return []
        cmp, order = ("<", " DESC") if older else (">", "")
        where = f" AND (lines.ts, lines.seq, lines.id) {cmp} (?, ?, ?)" if bound is not None else ""
        rows = self._rows(
            f"SELECT {self._cols} FROM lines JOIN chans ON chans.id = lines.chan WHERE lines.chan = ?{where}"
            f" ORDER BY lines.ts{order}, lines.seq{order}, lines.id{order} LIMIT ?",
            (cid, *(bound or ()), limit),
        )
        if older:
            rows.reverse()
        return rows

    def stamped(
        self, circle: str, room: str, before: int = 0, limit: int = 100, signed: bool = False
    ) -> list[Line]:
        """Direct mode: up to `limit` of the room's messages and actions with a Lamport stamp
        below `before` (0: the newest), the latest of them, in stamp order; with `signed`, only
        those logged with their author's signature. What a peer asked for history answers from
        (see `peer_history`)."""
        cid = self._chans.get((circle, room))
        if cid is None or limit <= 0 or self._version < (3 if signed else 2):
            return []
        bound = to_int64(before) if 0 < before < _U63 else _U63 - 1
        rows = self._rows(
            f"SELECT {self._cols} FROM lines JOIN chans ON chans.id = lines.chan WHERE lines.chan = ?"
            " AND lines.lc != 0 AND lines.lc < ? AND lines.kind IN (0, 1)"
            + (" AND lines.signed != ''" if signed else "")
            + " ORDER BY lines.lc DESC, lines.nick DESC LIMIT ?",
            (cid, bound, limit),
        )
        rows.reverse()
        return rows

    def at(self, pos: int) -> Line | None:
        if not 0 < pos < _U63:
            return None
        rows = self._rows(
            f"SELECT {self._cols} FROM lines JOIN chans ON chans.id = lines.chan WHERE lines.id = ?", (pos,)
        )
        return rows[0] if rows else None

    def around(self, pos: int, context: int = 20) -> list[Line]:
        """ "Jump to": the line at `pos` with up to `context` lines of its room on each side."""
        line = self.at(pos)
        if line is None:
            return []
        return [*self.before(line, context), line, *self.after(line, context)]

    def last_seq(self, circle: str, room: str, epoch: int) -> int:
        """The highest room sequence logged for (circle, room) under `epoch` (0 if none)."""
        cid = self._chans.get((circle, room))
        if cid is None:
            return 0
        row = self._fetch(
            "SELECT max(seq) FROM lines WHERE chan = ? AND epoch = ? AND seq != 0", (cid, to_int64(epoch))
        )
        return from_int64(row[0][0]) if row and row[0][0] is not None else 0

    @staticmethod
    def _key(line: Line) -> tuple[float, int, int]:
        ts = line.ts if line.ts == line.ts else 0.0
        return ts, to_int64(line.seq), line.pos

    # ------------------------------------------------------------------ search

    def search(
        self, query: str | Query, limit: int = 50, circle: str | None = None, room: str | None = None
    ) -> list[Line]:
        """Lines matching `query`, most recently logged first. `room` (and `room:` in the query)
        filter by room, `nick:` by nick (compared with names.nick_key)."""
        q = query if isinstance(query, Query) else parse_query(query)
        room = q.room if q.room is not None else room
        if q.match is None and q.nick is None:
            return []
        limit = max(0, min(limit, MAX_RESULTS))
        where, params = [], []
        chans = [
            cid
            for (c, r), cid in self._chans.items()
            if (circle is None or c == circle) and (room is None or r == room)
        ]
        if not chans:
            return []
        if circle is not None or room is not None:
            where.append(f"lines.chan IN ({','.join('?' * len(chans))})")
            params.extend(chans)
        if q.nick is not None:
            key = nick_key(q.nick)
            nicks = [n for (n,) in self._fetch("SELECT nick FROM nicks") if nick_key(n) == key]
            if not nicks:
                return []
            where.append(f"lines.nick IN ({','.join('?' * len(nicks))})")
            params.extend(nicks)
        if q.match is not None:
            found: list[Line] = []
            for k in reversed(range(self._shards)):  # newest first: most searches end in one shard
                fts = f"lines_fts{k}"
                sql = (
                    f"SELECT {self._cols} FROM {fts} JOIN lines ON lines.id = {fts}.rowid"
                    f" JOIN chans ON chans.id = lines.chan WHERE {fts} MATCH ?"
                    + "".join(" AND " + w for w in where)
                    + f" ORDER BY {fts}.rowid DESC LIMIT ?"
                )
                found += self._rows(sql, (q.match, *params, limit - len(found)))
                if len(found) >= limit:
                    break
            return found
        sql = (
            f"SELECT {self._cols} FROM lines JOIN chans ON chans.id = lines.chan WHERE "
            + " AND ".join(where)
            + " ORDER BY lines.id DESC LIMIT ?"
        )
        return self._rows(sql, (*params, limit))

    # ------------------------------------------------------------------ transcript

    def transcript(self, room: str, since: float | None = None, circle: str | None = None) -> Iterator[str]:
        """The room's lines as a plain-text log (irssi/WeeChat style), sanitised for a terminal.
        One section per circle the room was seen in."""
        for (c, r), cid in sorted(self._chans.items()):
            if r != room or (circle is not None and c != circle):
                continue
            header = f"--- Log of {_room_label(r)} on {sanitize(c)}"  # only above lines
            key = None if since is None else (since, -_U63, -1)
            while True:  # in pages, so a huge room never sits in memory at once
                rows = self._page(cid, key, False, 1000)
                if rows and header:
                    yield header
                    header = ""
                for line in rows:
                    yield format_line(line)
                if len(rows) < 1000:
                    break
                key = self._key(rows[-1])

    # ------------------------------------------------------------------ internals

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("the chat log is closed")
        return self._db

    def _fetch(self, sql: str, params: tuple | list = ()) -> list:
        try:
            return self._conn().execute(sql, params).fetchall()
        except ERRORS as exc:
            raise StoreError(describe(exc, WHAT, self.path)) from None

    def _rows(self, sql: str, params: tuple | list = ()) -> list[Line]:
        return [
            Line(
                circle,
                room,
                KINDS[kind] if 0 <= kind < len(KINDS) else "message",
                nick,
                text,
                ts,
                from_int64(seq),
                from_int64(mid),
                from_int64(epoch),
                pos,
                from_int64(lc),
                _unpack(signed),
            )
            for pos, circle, room, kind, nick, text, ts, seq, mid, epoch, lc, signed in self._fetch(
                sql, params
            )
        ]


def _pack(signed: object) -> str:
    """`lines.signed` for a line's `events.Signed` ('' for none, or for one not of the sizes a
    message's signature fields have: nothing a peer could serve)."""
    if not isinstance(signed, E.Signed) or not signed.well_formed():
        return ""
    return base64.b64encode(_SIGNED.pack(signed.mid, signed.ts, signed.sig, signed.key)).decode("ascii")


def _unpack(text: object) -> E.Signed | None:
    """The `events.Signed` a `lines.signed` holds (None: none, or not one: the file was altered)."""
    if not text or not isinstance(text, str):
        return None
    try:
        signed = E.Signed(*_SIGNED.unpack(base64.b64decode(text, validate=True)))
    except (binascii.Error, struct.error, ValueError):
        return None
    return signed if signed.well_formed() else None


def _room_label(room: str) -> str:
    return sanitize(room) if room.startswith("@") else "#" + sanitize(room)


def format_line(line: Line, clock: bool = True, room: bool = False) -> str:
    """One transcript line, sanitised: '2026-12-01 15:53:09 <bob> hello' (local time); with
    `room`, the room follows the time: '2026-12-01 15:53:09 #dev <bob> hello'."""
    stamp = ""
    if clock:
        try:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S ", time.localtime(line.ts))
        except (OverflowError, OSError, ValueError):
            stamp = "????-??-?? ??:??:?? "
    if room:
        stamp += _room_label(line.room) + " "
    nick, text, where = sanitize(line.nick), sanitize(line.text), _room_label(line.room)
    kind = line.kind
    if kind == "message":
        body = f"<{nick}> {text}"
    elif kind == "action":
        body = f" * {nick} {text}"
    elif kind == "join":
        body = f"-!- {nick} has joined {where}"
    elif kind == "leave":
        body = f"-!- {nick} has left {where}" + (f" [{text}]" if text else "")
    elif kind == "timeout":
        body = f"-!- {nick} has timed out"
    elif kind == "nick":
        body = f"-!- {nick} is now known as {text}"
    elif kind == "topic":
        body = f"-!- {nick} changed the topic of {where} to: {text}"
    elif kind == "away":
        body = f"-!- {nick} is away: {text}" if text else f"-!- {nick} is back"
    else:
        body = f"<{nick}> {text}"
    return stamp + body


def search_dicts(lines: Iterable[Line]) -> Iterator[dict]:
    """Search results as the JSON objects `udproom search --json` prints (raw text: JSON escapes it)."""
    for line in lines:
        yield {
            "room": line.room,
            "nick": line.nick,
            "ts": line.ts,
            "text": line.text,
            "kind": line.kind,
            "circle": line.circle,
            "pos": line.pos,
        }


def peer_history(log: ChatLog, circle: str, lock: contextlib.AbstractContextManager | None = None):
    """The read function a direct peer answers history from (`PeerNode.serve_history`): for
    (room, before, n), the room's latest `n` signed messages stamped below `before` (0: the
    newest) in this circle, as (lc, nick, text, action, signed) tuples in stamp order, `signed`
    the `events.Signed` the line was logged with. Lines logged without a signature (before
    signatures were kept) are not served: a receiver would drop them. A log that cannot be read
    gives nothing (the peer answers from what it holds in memory)."""

    def read(room: str, before: int, n: int) -> list[tuple[int, str, str, bool, E.Signed]]:
        try:
            with lock if lock is not None else contextlib.nullcontext():
                lines = log.stamped(circle, room, before, n, signed=True)
        except StoreError:
            return []
        return [(x.lc, x.nick, x.text, x.kind == "action", x.signed) for x in lines if x.signed is not None]

    return read
