"""What the slash commands do (`/join`, `/part`, `/msg`, `/connect`...), and sending a message.

`Commands` is a part of `ChatApp` (a mixin): `cmd_NAME(cmd)` runs a parsed `commands.Command`
(typed in the input or chosen in the F10 palette); errors and notes go inline (`error`, `info`).
"""

from __future__ import annotations

from udproom.protocol import frames as F
from udproom.protocol.backend import OutboxFull
from udproom.protocol.names import MAX_AWAY_BYTES, MAX_TOPIC_BYTES, InputError, check_text, is_direct

from . import commands
from . import model as m
from .session import Spec, SpecError, check


class Commands:
    """The slash commands (part of ChatApp)."""

    def error(self, text: str) -> None:
        self._errors += 1
        self.chat.add_local(None, m.ERROR, text)
        self.refresh_ui()

    def info(self, text: str) -> None:
        self.chat.add_local(None, m.INFO, text)
        self.refresh_ui()

    def _need_backend(self) -> bool:
        if self.backend is None:
            self.error("not connected yet: /connect HOST:PORT, or wait for the connection")
            return False
        return True

    def send(self, text: str, action: bool = False, room: str | None = None) -> None:
        room = room or self.chat.active
        if room is None:
            self.error("no room open: /join ROOM first")
            return
        if not self._need_backend():
            return
        try:
            lid = self.backend.post(room, text, action)
        except (InputError, OutboxFull, ValueError) as e:
            self.error(str(e))
            return
        self.chat.add_own_post(room, text, action, lid)
        if room == self.chat.active:
            self.messages.follow = True  # what you just said is at the bottom: go there
        self.refresh_ui()

    # ------------------------------------------------------------------ commands

    def cmd_join(self, cmd: commands.Command) -> None:
        room = cmd.args[0]
        if room in self.chat.rooms:
            self.chat.switch(room)
            return
        if cmd.rest == "--passphrase":
            self.join_with_passphrase(room)
            return
        if not self._need_backend():
            return
        self.chat.auto_switch.add(room)
        self.backend.join(room)
        self.flash(f"joining #{room}…", until_room=room)

    def cmd_part(self, cmd: commands.Command) -> None:
        room = cmd.args[0] if cmd.args else self.chat.active
        if room is None or room not in self.chat.rooms:
            self.error(f"you are not in {'#' + room if room and not is_direct(room) else room or 'a room'}")
            return
        if not is_direct(room) and self.backend is not None:
            self.backend.part(room)
        label = self.chat.rooms[room].label
        self.chat.remove_room(room)
        if self.chat.rooms:
            # about a room that is gone: not a line in the history of whichever room comes on screen
            self.flash(f"you left {label}")
        else:
            self.info(f"you left {label}; no room open — /join ROOM or Ctrl+K opens one, Ctrl+Q quits")

    def cmd_nick(self, cmd: commands.Command) -> None:
        if not self._need_backend():
            return
        self.backend.set_nick(cmd.args[0])
        if not self.chat.rooms:
            self.chat.set_nick(cmd.args[0])

    def cmd_me(self, cmd: commands.Command) -> None:
        self.send(cmd.rest, action=True)

    def cmd_msg(self, cmd: commands.Command) -> None:
        nick = cmd.args[0]
        if nick == self.chat.nick:
            self.error("that is you")
            return
        room = "@" + nick
        new = room not in self.chat.rooms
        errors = self._errors
        self.chat.add_room(room)
        self.chat.switch(room)
        if cmd.rest:
            self.send(cmd.rest, room=room)
        if new and self._errors != errors:  # refused at once (no one by that nick): no conversation
            said = [x.text for x in self.chat.rooms[room].lines if x.kind == m.ERROR]
            if self.chat.drop_conversation(room):
                for text in said:
                    self.chat.add_local(None, m.ERROR, text)

    def _fits(self, text: str, limit: int, what: str) -> bool:
        """`text` is a valid `what` of at most `limit` bytes; if not, say why inline."""
        try:
            check_text(text, limit, what)
        except InputError as e:
            self.error(str(e))
            return False
        return True

    def cmd_topic(self, cmd: commands.Command) -> None:
        room = self.chat.current
        if room is self.chat.status_room or room.direct:
            self.error("topics belong to rooms: /join ROOM first")
            return
        if not cmd.rest:
            self.info(f"topic of {room.label}: {room.topic}" if room.topic else f"{room.label} has no topic")
            return
        if self._fits(cmd.rest, MAX_TOPIC_BYTES, "topic") and self._need_backend():
            self.backend.set_topic(room.name, cmd.rest)

    def cmd_away(self, cmd: commands.Command) -> None:
        if self._fits(cmd.rest, MAX_AWAY_BYTES, "away message") and self._need_backend():
            # the relay's AwayChanged says it (once per room, as "you are marked away")
            self.backend.set_away(cmd.rest)

    def cmd_register(self, cmd: commands.Command) -> None:
        if self._need_backend():
            self.backend.moderate(F.OP_REGISTER, "", "")  # the relay's answer: Registered, or refused

    def _moderate(self, cmd: commands.Command) -> None:
        """An operator's command about the room on screen; the relay checks and answers (a room
        line for everyone, or a one-line refusal)."""
        room = self.chat.current
        if room is self.chat.status_room or room.direct:
            self.error(f"/{cmd.name} is about a room: switch to it first")
            return
        if self._need_backend():
            text = " ".join((*cmd.args, cmd.rest)).strip()
            self.backend.moderate(_OPS[cmd.name], room.name, text)

    cmd_kick = cmd_ban = cmd_unban = cmd_op = cmd_deop = _moderate
    cmd_voice = cmd_devoice = cmd_invite = cmd_mode = _moderate

    def cmd_names(self, cmd: commands.Command) -> None:
        room = self.chat.current
        if room is self.chat.status_room:
            self.error("no room open: /join ROOM first")
            return
        members = room.sorted_members()
        parts = [mb.nick + ("" if mb.presence == "here" else f" ({mb.presence})") for mb in members]
        self.info(f"{len(members)} in {room.label}: " + ", ".join(parts))

    def key_fingerprint(self, nick: str) -> str | None:
        """`nick`'s identity key fingerprint as the backend knows it (None: not known): in relay
        mode the key the relay announced (in the room on screen, else in any room), in direct mode
        the key `nick`'s link proved. What /whois and the members pane's detail show."""
        from udproom.protocol.crypto import fingerprint

        key_of = getattr(self.backend, "key_of", None)
        if key_of is None:
            return None
        room = self.chat.current
        key = key_of("" if room is self.chat.status_room or room.direct else room.name, nick)
        if key is None:
            key = key_of("", nick)
        return fingerprint(key) if isinstance(key, bytes) and key else None

    def cmd_whois(self, cmd: commands.Command) -> None:
        nick = cmd.args[0]
        fp = self.key_fingerprint(nick)
        if fp is None:
            self.info(f"no key known for {nick} (keys are known for members of your rooms and linked peers)")
            return
        self.info(f"{nick}: key {fp} (compare it with theirs out of band)")

    def cmd_help(self, cmd: commands.Command) -> None:
        for line in commands.help_lines():
            self.chat.add_local(None, m.INFO, line)
        self.info("F1 shows every key")

    def cmd_quit(self, cmd: commands.Command) -> None:
        self.ask_quit()

    def run_command(self, cmd: commands.Command) -> None:
        """Run a parsed command as if typed (the command palette)."""
        getattr(self, f"cmd_{cmd.name}")(cmd)
        self.refresh_ui()

    def prefill(self, text: str) -> None:
        """Put the start of a command in the input for the user to finish."""
        self.input.value = text
        self.input.cursor_position = len(text)
        self.input.focus()

    def cmd_retry(self, cmd: commands.Command) -> None:
        self.action_retry()

    def cmd_connect(self, cmd: commands.Command) -> None:
        if self.spec is not None and self.spec.mode == "host" and cmd.rest != "!":
            self.error(
                "you are hosting this room: /connect would stop the relay for everyone; "
                f"/quit first, or /connect! {cmd.args[0]} to do it anyway"
            )
            return
        try:
            spec = check(Spec("join", cmd.args[0], self.chat.nick, self._wanted_rooms()))
        except SpecError as e:
            self.error(f"{e}; still on the current connection")
            return
        self.run_worker(self._connect_to(spec), group="connect", exclusive=True, exit_on_error=False)

    def _wanted_rooms(self) -> list[str]:
        """Every room to take along to another relay: those open, those being joined, or (none
        open yet) the ones this session was asked for."""
        rooms = [r for r in self.chat.room_order() if not is_direct(r)]
        rooms += [r for r in sorted(self.chat.auto_switch) if r not in rooms and not is_direct(r)]
        if not rooms and self.spec is not None:
            rooms = list(self.spec.rooms)
        return rooms or ["lobby"]


#: each operator's command, as the request the relay gets
_OPS = {name: op for op, name in F.MODERATION_OPS.items()}
