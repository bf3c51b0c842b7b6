"""Trust on first use: the key each relay address proved, pinned on first connection
(docs/security.md, "The handshake"), and on each relay the key each nick showed (`KnownKeys`,
"Message signatures"). A later connection to that address insists on the same key
(`crypto.PinMismatch` otherwise: refused, never retried silently); a nick met with another key is
said in the room.

Each store is a TOML file in the config directory — `"HOST:PORT" = "fingerprint"` for relays, a
table per relay address of `"nick" = "fingerprint"` for nicks — so a user can read it, compare a
fingerprint out of band, and delete a line when a key really changed. Reading and writing files
only: no sockets, no clock.
"""

from __future__ import annotations

import json
import os
import tempfile
import tomllib
from pathlib import Path

from .crypto import CryptoError, parse_fingerprint


class KnownRelaysError(Exception):
    """The store cannot be read or written; the message is one line for the user."""


class KnownRelays:
    """`get(address)` -> the pinned fingerprint or None; `remember(address, fingerprint)`."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def _load(self) -> dict[str, str]:
        data = _read(self.path)
        pins = {}
        for address, fp in data.items():
            try:
                pins[address] = parse_fingerprint(fp) if isinstance(fp, str) else None
            except CryptoError:
                pins[address] = None
            if pins[address] is None:
                raise KnownRelaysError(
                    f"{self.path}: {address} has no valid fingerprint; fix or delete that line"
                )
        return pins

    def get(self, address: str) -> str | None:
        return self._load().get(address)

    def remember(self, address: str, fingerprint: str) -> None:
        """Pin `address` to `fingerprint` (written whole to a new file, then moved into place)."""
        pins = self._load()
        pins[address] = parse_fingerprint(fingerprint)
        lines = [
            "# udproom: relay keys pinned on first connection (trust on first use).",
            "# Delete a line only when you know that relay's key changed.",
            "",
        ]
        lines += [f"{json.dumps(a)} = {json.dumps(fp)}" for a, fp in sorted(pins.items())]
        _write(self.path, lines)


def _read(path: Path) -> dict:
    """The file's TOML (empty when there is no file yet); KnownRelaysError when unreadable."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise KnownRelaysError(f"cannot read {path}: {exc}") from None


def _write(path: Path, lines: list[str]) -> None:
    """The whole file anew, then moved into place (a reader never sees half of it). The temporary
    file is this writer's own: two udproom processes of one user writing at once (a `listen` and a
    `send`) each move a whole file into place, never one made of both."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        tmp = Path(name)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise KnownRelaysError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


class KnownKeys:
    """Per relay address, each nick's key as first seen there (`nick_key(nick)` -> fingerprint):
    `for_relay(address)` -> the pins, `remember(address, nick, fingerprint)`."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def _load(self) -> dict[str, dict[str, str]]:
        data = _read(self.path)
        return {
            a: {n: fp for n, fp in t.items() if isinstance(fp, str)}
            for a, t in data.items()
            if isinstance(t, dict)
        }

    def for_relay(self, address: str) -> dict[str, str]:
        return dict(self._load().get(address, {}))

    def remember(self, address: str, nick: str, fingerprint: str) -> None:
        from .names import nick_key

        pins = self._load()
        pins.setdefault(address, {})[nick_key(nick)] = parse_fingerprint(fingerprint)
        lines = ["# udproom: members' keys per relay, pinned on first sight (trust on first use).", ""]
        for where, table in sorted(pins.items()):
            lines.append(f"[{json.dumps(where)}]")
            lines += [f"{json.dumps(n)} = {json.dumps(fp)}" for n, fp in sorted(table.items())]
            lines.append("")
        _write(self.path, lines)
