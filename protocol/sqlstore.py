"""What the room log and the chat log share about SQLite: their error, its one-line wording, one
transaction, and unsigned 64-bit numbers (message ids) in SQLite's signed integers."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

_U63, _U64 = 1 << 63, 1 << 64


class StoreError(Exception):
    """A log could not do what was asked. str() is one line, fit for a user."""


#: what a call into sqlite3 can raise for a bad store or a bad value: catch these, raise StoreError
#: (a str holding a lone surrogate, or an int beyond 64 bits, cannot be bound)
ERRORS = (sqlite3.Error, UnicodeEncodeError, OverflowError)


def describe(exc: BaseException, what: str, where: Path) -> str:
    """One line for a sqlite3 or OS error on `what` ("the room log") at `where`."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    if name.startswith("SQLITE_FULL") or "disk is full" in text:
        return f"{what} {where} is full ({text})"
    if name.startswith("SQLITE_READONLY") or "readonly" in text:
        return f"{what} {where} is read-only ({text})"
    if (
        name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
        or "malformed" in text
        or "not a database" in text
    ):
        return f"{what} {where} is damaged ({text}); restore a backup or move it away"
    if name.startswith("SQLITE_CANTOPEN"):
        return f"cannot open {what} {where} ({text}): is its directory writable?"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return f"{what} {where} is busy ({text}): is another process using it?"
    if isinstance(exc, UnicodeEncodeError):
        return f"{what} {where} cannot store text that is not valid Unicode ({exc.reason})"
    if isinstance(exc, OSError):
        return f"{where}: {exc.strerror or text}"
    return f"{what} {where} failed: {text}"


def refuse_foreign(db: sqlite3.Connection, what: str, where: Path) -> None:
    """Before writing anything: a database that already has tables but not udproom's `meta` with a
    schema number belongs to some other program. Refuse it rather than add our tables to it."""
    tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    if not tables:
        return  # a new file
    ours = "meta" in tables and db.execute("SELECT 1 FROM meta WHERE key = 'schema'").fetchone()
    if not ours:
        shown = ", ".join(sorted(tables)[:3]) + (", ..." if len(tables) > 3 else "")
        raise StoreError(f"{where} is not {what} of udproom (it holds other tables: {shown}): move it away")


@contextlib.contextmanager
def transaction(db: sqlite3.Connection, what: str, where: Path) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT; on any error ROLLBACK, and sqlite3 errors become StoreError."""
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
    except ERRORS as exc:
        raise StoreError(describe(exc, what, where)) from None


def to_int64(n: int) -> int:
    """0..2**64-1 (message ids on the wire) as SQLite's signed 64-bit integer."""
    if not -_U63 <= n < _U64:
        raise StoreError(f"number {n} is out of range (0 to 2**64-1)")
    return n - _U64 if n >= _U63 else n


def from_int64(n: int) -> int:
    return n + _U64 if n < 0 else n
