"""Where udproom keeps its data: the one home of the data-directory rule.

The relay's room log (`relay/` under it) and the app's own chat log (`chatlog.sqlite3`) live in
the platform's user data directory (`platformdirs.user_data_dir("udproom")`, e.g.
~/.local/share/udproom on Linux), or in $UDPROOM_DATA_DIR when that is set (tests set it so they
never touch the real one), the way $UDPROOM_CONFIG_DIR overrides the config directory.
Nothing here creates a directory: whoever writes creates it, whoever only reads does not.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

ENV = "UDPROOM_DATA_DIR"
#: the relay's room log, under the data directory (a `udproom relay` and the app's `--host`)
RELAY_SUBDIR = "relay"
#: the app's own log of what it showed, under the data directory
CHATLOG_FILE = "chatlog.sqlite3"
#: the user's Ed25519 identity key (docs/security.md), under the data directory; a relay's is the
#: same file name in its own data directory
IDENTITY_FILE = "identity"
#: direct mode's nick <-> identity key pins (trust on first use, protocol/pins.py), under the config
#: directory
KNOWN_PEERS_FILE = "known_peers.toml"
#: the relays' keys met so far, per address (trust on first use), under the config directory
KNOWN_RELAYS_FILE = "known_relays.toml"
#: members' keys met on each relay, per nick (trust on first use), under the config directory
KNOWN_KEYS_FILE = "known_keys.toml"


CONFIG_ENV = "UDPROOM_CONFIG_DIR"


def _user_dir(env: str, kind: str) -> Path:
    """$env when set, else the platform's user directory of that kind ("data" or "config")."""
    value = os.environ.get(env)
    if value:
        return Path(value)
    import platformdirs

    return Path(getattr(platformdirs, f"user_{kind}_dir")("udproom", appauthor=False))


def data_dir() -> Path:
    return _user_dir(ENV, "data")


def config_dir() -> Path:
    """Where the app keeps `config.toml` ($UDPROOM_CONFIG_DIR overrides it)."""
    return _user_dir(CONFIG_ENV, "config")


def relay_data_dir() -> Path:
    """The default `--data` of a relay."""
    return data_dir() / RELAY_SUBDIR


def chatlog_path() -> Path:
    return data_dir() / CHATLOG_FILE


def identity_path() -> Path:
    """The default `--identity` of the app and the headless commands (made on first use)."""
    return data_dir() / IDENTITY_FILE


def known_peers_path() -> Path:
    """Where the app and the headless commands keep direct mode's nick <-> key pins."""
    return config_dir() / KNOWN_PEERS_FILE


def relay_identity_path(data: str | os.PathLike | None = None) -> Path:
    """The default `--identity` of a relay keeping its rooms in `data` (None: the default one)."""
    return (Path(data) if data is not None else relay_data_dir()) / IDENTITY_FILE


def known_relays_path() -> Path:
    return config_dir() / KNOWN_RELAYS_FILE


def known_keys_path() -> Path:
    return config_dir() / KNOWN_KEYS_FILE


def replace_file(path: Path, text: str) -> None:
    """Write `path` anew: a temporary file of its own in the same directory, moved into place, so
    a reader never sees half of it and two processes writing at once never mix their bytes (the
    last one wins whole). Raises OSError."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
