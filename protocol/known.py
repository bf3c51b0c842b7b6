"""Trust on first use for relays: the key each relay address proved, pinned on first connection
(docs/security.md, "The handshake"). A later connection to that address insists on the same key
(`crypto.PinMismatch` otherwise: refused, never retried silently).

The store is a TOML table in the config directory, `"HOST:PORT" = "fingerprint"`, one line a
relay, so a user can read it, compare a fingerprint out of band, and delete a line when a relay's
key really changed. Reading and writing files only: no sockets, no clock.
"""

from __future__ import annotations

import json
import os
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
        try:
            data = tomllib.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise KnownRelaysError(f"cannot read {self.path}: {exc}") from None
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
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            raise KnownRelaysError(f"cannot write {self.path}: {exc.strerror or exc}") from None
