"""A small TOML config: the nick, recent addresses, last mode and rooms, the bell, the theme.

Lives in the platform's config dir (platformdirs), or in $UDPROOM_CONFIG_DIR when set (tests set
it so they never touch the real one). A missing or broken file gives the defaults.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from udproom.protocol.paths import CONFIG_ENV, config_dir

ENV = CONFIG_ENV  # the variable that overrides the config directory

MAX_RECENT = 8


@dataclass
class Config:
    nick: str = ""
    mode: str = "join"  # host / join / direct
    recent: list[str] = field(default_factory=list)  # addresses, newest first
    rooms: list[str] = field(default_factory=lambda: ["lobby"])
    bell: bool = True
    log: bool = True  # keep the app's own chat log (--no-log turns it off for a run)
    theme: str = ""  # a Textual theme's name (`--theme`); "" is udproom's default

    def remember(self, mode: str, address: str, nick: str, rooms: list[str]) -> None:
        self.mode = mode
        self.nick = nick
        self.rooms = list(rooms)
        if address:
            self.recent = [address] + [a for a in self.recent if a != address]
            del self.recent[MAX_RECENT:]


def config_path() -> Path:
    return config_dir() / "config.toml"


def load() -> Config:
    try:
        data = tomllib.loads(config_path().read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return Config()
    cfg = Config()
    if isinstance(data.get("nick"), str):
        cfg.nick = data["nick"]
    if data.get("mode") in ("host", "join", "direct"):
        cfg.mode = data["mode"]
    if isinstance(data.get("recent"), list):
        cfg.recent = [a for a in data["recent"] if isinstance(a, str)][:MAX_RECENT]
    if isinstance(data.get("rooms"), list):
        cfg.rooms = [r for r in data["rooms"] if isinstance(r, str)] or ["lobby"]
    if isinstance(data.get("bell"), bool):
        cfg.bell = data["bell"]
    if isinstance(data.get("log"), bool):
        cfg.log = data["log"]
    if isinstance(data.get("theme"), str):
        cfg.theme = data["theme"]
    return cfg


def save(cfg: Config) -> str | None:
    """Write the config; returns a one-line error instead of raising."""
    import tomli_w

    from udproom.protocol.paths import replace_file

    path = config_path()
    try:
        replace_file(path, tomli_w.dumps(asdict(cfg)))
    except OSError as e:
        return f"could not save {path}: {e.strerror or e}"
    return None
