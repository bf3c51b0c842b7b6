"""Trust on first use for direct mode: which identity key each nick had when first met.

The first key a peer proves under a nick (in its link handshake) is pinned to that nick
(`names.nick_key`, so look-alikes are one nick); a later peer that shows up with, or renames into,
that nick under another key is flagged in the room (protocol/peer/membership.py) and the pin keeps
the first key. Pins are kept in memory, or in `known_peers.toml` in the config directory
(`paths.known_peers_path()`; one line per nick, written through on each new pin) when the app or a
headless command opens it with `KeyPins.load(path)`. To accept a friend's new key, delete its line
from that file.

No sockets and no clock: the peer core calls `get` and `pin`; only `load` and `pin` of a file-backed
instance touch the disk.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from .crypto import KEY_BYTES
from .names import nick_key

_HEADER = "# udproom direct mode: the identity key first seen for each nick (trust on first use)\n"


class PinFileError(Exception):
    """A pin file that cannot be read; the message is one line for the user."""


class KeyPins:
    """nick -> identity key (32 bytes), by `nick_key`."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._keys: dict[str, bytes] = {}
        self._nicks: dict[str, str] = {}  # nick_key -> the nick as first seen (for the file)
        self.write_error = ""  # the last failure to write the file (pins stay in memory)

    @classmethod
    def load(cls, path: str | os.PathLike) -> KeyPins:
        pins = cls(path)
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return pins
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise PinFileError(f"cannot read {os.fspath(path)}: {exc}") from None
        table = data.get("nicks", {})
        if not isinstance(table, dict):
            raise PinFileError(f"{os.fspath(path)}: [nicks] is not a table")
        for nick, hexkey in table.items():
            try:
                key = bytes.fromhex(hexkey) if isinstance(hexkey, str) else b""
            except ValueError:
                key = b""
            if len(key) == KEY_BYTES:
                pins._keys[nick_key(nick)] = key
                pins._nicks[nick_key(nick)] = nick
        return pins

    def get(self, nick: str) -> bytes | None:
        return self._keys.get(nick_key(nick))

    def pin(self, nick: str, key: bytes) -> bool:
        """Pin `key` to `nick` unless it has a pin already; True if this pinned it."""
        k = nick_key(nick)
        if k in self._keys or len(key) != KEY_BYTES:
            return False
        self._keys[k] = key
        self._nicks[k] = nick
        self._save()
        return True

    def __len__(self) -> int:
        return len(self._keys)

    def _save(self) -> None:
        if self.path is None:
            return
        import tomli_w

        table = {self._nicks[k]: key.hex() for k, key in self._keys.items()}
        text = _HEADER + tomli_w.dumps({"nicks": table})
        from .paths import replace_file

        try:
            replace_file(self.path, text)
            self.write_error = ""
        except OSError as exc:
            self.write_error = f"cannot write {self.path}: {exc.strerror}"
