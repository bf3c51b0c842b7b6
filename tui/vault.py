"""Passphrase rooms in the app (docs/security.md, "Passphrase rooms (end to end)"): `/join ROOM
--passphrase` makes or opens one, a room that asks for its passphrase (`PassphraseNeeded`)
gets a masked prompt, `/passphrase` re-keys. The passphrase goes from the prompt to the backend,
which derives the room's key off the loop; neither is shown, logged or saved by the app.

`Vault` is a part of `ChatApp` (a mixin)."""

from __future__ import annotations

from udproom.protocol import events as ev

from . import commands
from .screens import PassphraseScreen


class Vault:
    """Passphrase rooms (part of ChatApp)."""

    def _passphrase_backend(self) -> bool:
        if not self._need_backend():
            return False
        if not hasattr(self.backend, "join_private"):
            self.error("passphrase rooms need a relay: direct mode has none")
            return False
        return True

    def join_with_passphrase(self, room: str) -> None:
        """`/join ROOM --passphrase`: made a passphrase room if new, else opened with it."""
        if not self._passphrase_backend():
            return

        def given(passphrase: str | None) -> None:
            if passphrase is None:
                self.info(f"not joining #{room}")
                return
            self.chat.auto_switch.add(room)
            self.backend.join_private(room, passphrase)
            self.flash(f"deriving the key of #{room}…", until_room=room)

        self.push_screen(PassphraseScreen(room, f"Passphrase for #{room}"), given)

    def passphrase_needed(self, e: ev.PassphraseNeeded) -> None:
        """The relay says #room has a passphrase (a /join, a rejoin, a history page): ask."""

        def given(passphrase: str | None) -> None:
            if self.backend is None:
                return
            if passphrase is None:
                self.chat.auto_switch.discard(e.room)
                self.backend.part(e.room)
                self.info(f"not joining #{e.room}: it has a passphrase")
                return
            self.backend.unlock(e.room, passphrase, e.salt, e.ops, e.mem)
            self.flash(f"deriving the key of #{e.room}…", until_room=e.room)

        self.push_screen(PassphraseScreen(e.room, f"#{e.room} has a passphrase"), given)

    def cmd_passphrase(self, cmd: commands.Command) -> None:
        room = self.chat.current
        if room is self.chat.status_room or room.direct:
            self.error("passphrases belong to rooms: /join ROOM --passphrase first")
            return
        if not self._passphrase_backend():
            return

        def given(passphrase: str | None) -> None:
            if passphrase is not None and self.backend is not None:
                self.backend.change_passphrase(room.name, passphrase)
                self.info(f"changing the passphrase of {room.label}…")

        self.push_screen(PassphraseScreen(room.name, f"New passphrase for {room.label}"), given)
