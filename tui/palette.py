"""udproom's commands for the F10 command palette (the only ones it offers)."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from udproom.protocol.names import InputError, canonical_room

from . import commands


class UdproomCommands(Provider):
    """Join / switch / part rooms, nick, away, topic, help and a polite quit."""

    def _commands(self) -> list[tuple[str, str, object]]:
        app = self.app
        chat = app.chat
        out: list[tuple[str, str, object]] = [
            (
                "Join a room…",
                "open the quick switcher: type a room name (or `join NAME` here)",
                app.action_quick_switch,
            ),
        ]
        for name in chat.room_order():
            if name != chat.active:
                label = chat.rooms[name].label
                out.append((f"Switch to {label}", "show this room", partial(app._switch, name)))
        room = chat.current
        if room is not chat.status_room:
            out.append(
                (
                    f"Part {room.label}",
                    "leave this room",
                    partial(app.run_command, commands.Command("part", (room.name,))),
                )
            )
            if not room.direct:
                out.append(
                    (
                        "Topic…",
                        f"set the topic of {room.label} (fills in /topic)",
                        partial(app.prefill, "/topic "),
                    )
                )
        out.append(("Nick…", "change your nick (fills in /nick)", partial(app.prefill, "/nick ")))
        if chat.away is None:
            out.append(("Away…", "mark yourself away (fills in /away)", partial(app.prefill, "/away ")))
        else:
            out.append(
                (
                    "Back",
                    "you are back (clears your away message)",
                    partial(app.run_command, commands.Command("away")),
                )
            )
        out.append(
            (
                "Search the log…",
                "search what this app logged (fills in /search)",
                partial(app.prefill, "/search "),
            )
        )
        out.append(("Help", "keys and commands (F1)", app.action_help))
        out.append(("Quit udproom", "leave every room politely (Bye) and quit (Ctrl+Q)", app.ask_quit))
        return out

    async def discover(self) -> Hits:
        for name, help_text, callback in self._commands():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        head, _, rest = query.strip().partition(" ")
        if head.lower() == "join" and rest.strip():
            try:
                room = canonical_room(rest.strip())
            except InputError:
                pass
            else:
                yield Hit(
                    1.0,
                    f"Join #{room}",
                    partial(self.app.run_command, commands.Command("join", (room,))),
                    help="join (or switch to) it",
                )
        matcher = self.matcher(query)
        for name, help_text, callback in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
