"""Trust on first use, in one home: the key each nick showed (per relay, or in direct mode) and the
key each relay address proved (docs/security.md, "Identity keys and fingerprints").

`KeyPins` is nick -> key pins in one scope: a relay's address (`known_keys.toml`: the keys the
relay announced for its members, `ClientSession._check_pin`) or direct mode (`DIRECT`,
`known_peers.toml`: the keys peers proved in their link handshakes, `peer/membership.py`). Nicks
compare by `names.nick_key`, so look-alikes are one nick; the first key seen for a nick stays
pinned, and a later one is said in the room (never refused: a friend who lost their key file would
be locked out). `KnownRelays` is address -> key (`known_relays.toml`): a later connection to that
address insists on the same key (`crypto.PinMismatch` otherwise: refused, never retried).

Every pin is a fingerprint (`crypto.fingerprint`), kept in a TOML file in the config directory
that a user can read, compare out of band, and edit: delete a line when a key really changed.

    known_keys.toml, known_peers.toml        known_relays.toml
    ["127.0.0.1:6000"]                       "127.0.0.1:6000" = "x4dp-3744-..."
    "alice" = "x4dp-3744-..."
    [direct]
    "bob" = "k3pq-7x2m-..."

Files of earlier versions are read as they are: known_peers.toml's `[nicks]` table of hex keys is
direct mode's scope (rewritten in the form above with the next pin). A file that cannot be read,
or has a line that is not a fingerprint, is refused with one line naming the file (`PinFileError`)
and never rewritten (nothing a user wrote is lost).

Two processes of one user (the app and a headless `send` in one config directory) pin at once:
each new pin re-reads the file, adds to it and replaces it while holding a lock (`flock` on the
config directory), so neither loses the other's pins; of two keys pinned to one nick at once, the
first written stays (and this process adopts it).

No sockets and no clock: only loading and a new pin touch the disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

from .crypto import KEY_BYTES, CryptoError, fingerprint, parse_fingerprint
from .names import nick_key

#: direct mode's scope: the table of `known_peers.toml`
DIRECT = "direct"
#: the table earlier versions kept direct mode's pins in (hex keys): read as DIRECT
_OLD_DIRECT = "nicks"

_NICK_HEADER = (
    "# udproom: members' keys, pinned on first sight (trust on first use), per relay address, and\n"
    "# [direct] for direct mode. Delete a line only when you know that nick's key changed.\n"
)
_RELAY_HEADER = (
    "# udproom: relay keys pinned on first connection (trust on first use).\n"
    "# Delete a line only when you know that relay's key changed.\n"
)


class PinFileError(Exception):
    """A pin file that cannot be read or written; the message is one line for the user."""


def _as_fingerprint(value: object) -> str | None:
    """A pin's value as a canonical fingerprint: a fingerprint, or (earlier direct-mode files) a
    public key in hex. None if it is neither."""
    if not isinstance(value, str):
        return None
    with contextlib.suppress(CryptoError):
        return parse_fingerprint(value)
    try:
        key = bytes.fromhex(value)
    except ValueError:
        return None
    return fingerprint(key) if len(key) == KEY_BYTES else None


class _PinFile:
    """One TOML file of pins: `scoped` ones hold a table per scope of name -> fingerprint, the
    others name -> fingerprint at the top. Read whole; written whole under the lock."""

    def __init__(self, path: str | os.PathLike, scoped: bool) -> None:
        self.path = Path(path)
        self.scoped = scoped

    def read(self) -> dict[str, dict[str, str]]:
        """{scope: {name: fingerprint}} ("" the only scope of an unscoped file); PinFileError."""
        try:
            data = tomllib.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise PinFileError(f"cannot read {self.path}: {_why(exc)}") from None
        if not self.scoped:
            return {"": self._table(data, "")}
        pins: dict[str, dict[str, str]] = {}
        for scope, table in data.items():
            if not isinstance(table, dict):
                raise PinFileError(
                    f"{self.path}: {json.dumps(scope)} is not a [table] of nicks; fix or delete that line"
                )
            merged = pins.setdefault(DIRECT if scope == _OLD_DIRECT else scope, {})
            for name, fp in self._table(table, scope).items():
                merged.setdefault(name, fp)
        return pins

    def _table(self, table: dict, scope: str) -> dict[str, str]:
        out = {}
        for name, value in table.items():
            fp = _as_fingerprint(value)
            if fp is None:
                where = f"[{json.dumps(scope)}] {json.dumps(name)}" if scope else json.dumps(name)
                raise PinFileError(f"{self.path}: {where} has no valid fingerprint; fix or delete that line")
            out[name] = fp
        return out

    def add(
        self, scope: str, new: dict[str, str], key: Callable[[str], str] = str, limit: int | None = None
    ) -> dict[str, str]:
        """Pin each name of `new` to its fingerprint in `scope` unless the file pins it already
        (or a name with the same `key`), while the scope holds fewer than `limit` pins; returns
        the file's pins of that scope afterwards. Re-read, merged and replaced under the lock (once
        for all of `new`), so a pin another process wrote meanwhile is kept. PinFileError if the
        file cannot be read or written."""
        with self._locked():
            pins = self.read()
            table = pins.setdefault(scope, {})
            held = {key(n) for n in table}
            added = False
            for name, fp in new.items():
                if key(name) not in held and (limit is None or len(table) < limit):
                    table[name] = fp
                    held.add(key(name))
                    added = True
            if added:
                self._write(pins)
            return dict(table)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold an exclusive lock on the file's directory (the file itself is replaced, never
        rewritten in place, so it cannot carry the lock). Without fcntl (Windows): no lock."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on this project's platforms
            yield
            return
        where = self.path.parent
        try:
            where.mkdir(parents=True, exist_ok=True)
            fd = os.open(where, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise PinFileError(f"cannot write {self.path}: {_why(exc)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # (closing releases the lock)

    def _write(self, pins: dict[str, dict[str, str]]) -> None:
        from .paths import replace_file

        if self.scoped:
            lines = [_NICK_HEADER]
            for scope, table in sorted(pins.items()):
                if table:
                    lines.append(f"[{json.dumps(scope)}]")
                    lines += [f"{json.dumps(n)} = {json.dumps(fp)}" for n, fp in sorted(table.items())]
                    lines.append("")
        else:
            lines = [_RELAY_HEADER]
            lines += [f"{json.dumps(a)} = {json.dumps(fp)}" for a, fp in sorted(pins.get("", {}).items())]
        try:
            replace_file(self.path, "\n".join(lines).rstrip("\n") + "\n")
        except OSError as exc:
            raise PinFileError(f"cannot write {self.path}: {_why(exc)}") from None


def _why(exc: BaseException) -> str:
    """An exception's reason on one line."""
    return " ".join(str(getattr(exc, "strerror", None) or exc).split())


#: the most nicks pinned in one scope (a relay's address, direct mode): nicks cost a member nothing
#: (a rename storm would grow the file, and the work of each write, without end); beyond it a nick
#: is not pinned, and `KeyPins.full` says so
MAX_PINS = 4096


class KeyPins:
    """nick -> identity key pins (fingerprints) in one scope: a relay's address, or `DIRECT`.
    In memory only without a path. Reads like a dict keyed by nick (`get`, `in`, `len`, `[]`);
    `pin(nick, key)` and `pins[nick] = fingerprint` add a pin (kept, if the nick has none yet and
    the scope holds fewer than `limit`). Pins made inside `with pins.batch():` are written
    together at its end (one read and one write of the file for a room's member list)."""

    def __init__(
        self, path: str | os.PathLike | None = None, scope: str = DIRECT, limit: int = MAX_PINS
    ) -> None:
        self._file = _PinFile(path, scoped=True) if path is not None else None
        self.scope = scope
        self.limit = limit
        self._pins: dict[str, str] = {}  # nick_key -> fingerprint
        self._nicks: dict[str, str] = {}  # nick_key -> the nick as first seen (for the file)
        self._unwritten: dict[str, str] = {}  # nick -> fingerprint: pinned, to write at the batch's end
        self._batches = 0
        self.write_error = ""  # the last failure to write the file (pins stay in memory)

    @property
    def full(self) -> str:
        """Why a new nick is not pinned ("": it would be)."""
        if len(self._pins) < self.limit:
            return ""
        where = f" ({self.path})" if self.path is not None else ""
        return f"{self.limit} nicks are pinned here already{where}, the most kept: new nicks are not pinned"

    @classmethod
    def load(cls, path: str | os.PathLike, scope: str = DIRECT, limit: int = MAX_PINS) -> KeyPins:
        """The pins of `scope` in the file at `path` (none if there is no file); PinFileError."""
        pins = cls(path, scope, limit)
        pins._absorb(pins._file.read().get(scope, {}))  # type: ignore[union-attr]
        return pins

    @property
    def path(self) -> Path | None:
        return self._file.path if self._file is not None else None

    def _absorb(self, table: dict[str, str]) -> None:
        for nick, fp in table.items():
            k = nick_key(nick)
            if k not in self._pins:
                self._pins[k], self._nicks[k] = fp, nick

    def get(self, nick: str, default: str | None = None) -> str | None:
        """The fingerprint pinned to `nick` (any nick with its `nick_key`), or `default`."""
        return self._pins.get(nick_key(nick), default)

    def __contains__(self, nick: object) -> bool:
        return isinstance(nick, str) and nick_key(nick) in self._pins

    def __getitem__(self, nick: str) -> str:
        return self._pins[nick_key(nick)]

    def __setitem__(self, nick: str, fp: str) -> None:
        self.pin(nick, fp)

    def __len__(self) -> int:
        return len(self._pins)

    def __eq__(self, other: object) -> bool:  # (to compare with a plain {nick_key: fingerprint})
        if isinstance(other, KeyPins):
            return self._pins == other._pins
        if isinstance(other, dict):
            return self._pins == {nick_key(n): fp for n, fp in other.items()}
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def items(self) -> list[tuple[str, str]]:
        """(nick as first seen, fingerprint) pairs."""
        return [(self._nicks[k], fp) for k, fp in self._pins.items()]

    def pin(self, nick: str, key: bytes | str) -> bool:
        """Pin `key` (a public key, or its fingerprint) to `nick` unless it has a pin already (or
        the scope is `full`); True if this pinned it. A file-backed store writes it through, at
        the end of the `batch` it is made in if any (a pin another process wrote to the file
        first wins, and is adopted then); a failure is kept in `write_error`."""
        k = nick_key(nick)
        fp = fingerprint(key) if isinstance(key, bytes) and len(key) == KEY_BYTES else None
        if isinstance(key, str):
            with contextlib.suppress(CryptoError):
                fp = parse_fingerprint(key)
        if k in self._pins or fp is None or self.full:
            return False
        self._pins[k], self._nicks[k] = fp, nick
        if self._file is None:
            return True
        self._unwritten[nick] = fp
        if not self._batches:
            self._write()
        return self._pins[k] == fp

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Pins made inside are written to the file together when it ends (nested: the outer)."""
        self._batches += 1
        try:
            yield
        finally:
            self._batches -= 1
            if not self._batches and self._unwritten:
                self._write()

    def _write(self) -> None:
        new, self._unwritten = self._unwritten, {}
        try:
            self._absorb_file(self._file.add(self.scope, new, key=nick_key, limit=self.limit))  # type: ignore[union-attr]
            self.write_error = ""
        except PinFileError as exc:
            self.write_error = str(exc)

    def _absorb_file(self, table: dict[str, str]) -> None:
        """The file's pins after a write: other processes' new ones are ours too, and theirs wins
        for a nick both pinned at once."""
        for nick, fp in table.items():
            k = nick_key(nick)
            self._pins[k] = fp
            self._nicks.setdefault(k, nick)

    def __repr__(self) -> str:
        return f"KeyPins({self.scope!r}, {len(self)} pins)"


class KnownRelays:
    """address -> the relay key's fingerprint pinned there: `get(address)`, `remember(address, fp)`
    (the first pin of an address stays). Read from the file each time (a pin another process
    wrote counts at once)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self._file = _PinFile(path, scoped=False)

    @property
    def path(self) -> Path:
        return self._file.path

    def get(self, address: str) -> str | None:
        return self._file.read().get("", {}).get(address)

    def remember(self, address: str, fp: str) -> None:
        self._file.add("", {address: parse_fingerprint(fp)})
