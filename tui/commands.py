"""Slash commands: parsing (with one-line errors) and Tab completion. No textual here."""

from __future__ import annotations

from dataclasses import dataclass

from udproom.protocol.names import InputError, canonical_room, check_nick, is_direct


@dataclass(frozen=True)
class Spec:
    usage: str
    help: str


COMMANDS: dict[str, Spec] = {
    "join": Spec("/join ROOM", "join a room or switch to it (--passphrase: private)"),
    "part": Spec("/part [ROOM]", "leave a room (default: this one)"),
    "nick": Spec("/nick NAME", "change your nick"),
    "me": Spec("/me ACTION", "say something in the third person"),
    "msg": Spec("/msg NICK [TEXT]", "open a direct conversation (and say TEXT there)"),
    "passphrase": Spec("/passphrase", "re-key this passphrase room (its creator)"),
    "topic": Spec("/topic [TEXT]", "show or set the room's topic"),
    "away": Spec("/away [MESSAGE]", "mark yourself away (no message: back)"),
    "names": Spec("/names", "list who is in this room"),
    "whois": Spec("/whois NICK", "show NICK's key fingerprint (compare it with theirs out of band)"),
    "retry": Spec("/retry", "send this room's undelivered messages again"),
    "search": Spec("/search WORDS", "search the chat log (prefix*, nick:bob, room:#dev); Enter jumps"),
    "connect": Spec("/connect HOST[:PORT]", "leave this relay and join another (port 6000 if none)"),
    "register": Spec("/register", "tie your nick to your key on this relay (no one else may use it)"),
    "kick": Spec("/kick NICK [REASON]", "operators: put NICK out of this room"),
    "ban": Spec("/ban NICK|KEY", "operators: keep a key (NICK's, or a fingerprint) out of this room"),
    "unban": Spec("/unban NICK|KEY", "operators: lift a ban"),
    "op": Spec("/op NICK", "operators: make NICK an operator of this room"),
    "deop": Spec("/deop NICK", "operators: NICK is an operator no more"),
    "voice": Spec("/voice NICK", "operators: NICK may speak when the room is moderated (+m)"),
    "devoice": Spec("/devoice NICK", "operators: take NICK's voice"),
    "invite": Spec("/invite NICK", "operators: NICK may join when the room is invite only (+i)"),
    "mode": Spec("/mode +MODE|-MODE", "operators: +i invite only, +t topic by operators, +m moderated"),
    "help": Spec("/help", "list commands and keys"),
    "quit": Spec("/quit", "leave every room and quit"),
}

#: the operators' commands (each a request the relay checks: protocol/relay/moderation.py)
MODERATION = ("kick", "ban", "unban", "op", "deop", "voice", "devoice", "invite", "mode")

ALIASES = {"j": "join", "leave": "part", "query": "msg", "q": "quit", "exit": "quit"}


class CommandError(ValueError):
    """A bad command line; str() is a one-line message shown inline."""


@dataclass(frozen=True)
class Command:
    name: str
    args: tuple[str, ...] = ()
    rest: str = ""  # free text after the fixed args


def parse(line: str) -> Command | None:
    """`None` for a plain message; a Command for '/...'; CommandError for a bad one.

    '//text' sends '/text' as a message (the escape IRC users expect).
    """
    if not line.startswith("/") or line.startswith("//"):
        return None
    head, _, rest = line[1:].partition(" ")
    force = head.endswith("!") and head.lower() == "connect!"  # /connect! even when hosting
    if force:
        head = head[:-1]
    name = ALIASES.get(head.lower(), head.lower())
    rest = rest.strip()
    if name not in COMMANDS:
        raise CommandError(f"unknown command /{head}; /help lists them")
    usage = COMMANDS[name].usage
    if name == "join":
        words = rest.split()
        private = "--passphrase" in words
        words = [w for w in words if w != "--passphrase"]
        if len(words) != 1:
            raise CommandError(f"usage: {usage}")
        if is_direct(words[0]):
            if private:
                raise CommandError("--passphrase is for rooms, not direct conversations")
            return Command("msg", (check_nick_(words[0][1:], usage),))
        return Command(name, (room_(words[0], usage),), rest="--passphrase" if private else "")
    if name == "part":
        if " " in rest:
            raise CommandError(f"usage: {usage}")
        if rest and is_direct(rest):
            return Command(name, (rest,))
        return Command(name, (room_(rest, usage),) if rest else ())
    if name in ("nick", "whois"):
        if not rest or " " in rest:
            raise CommandError(f"usage: {usage}")
        return Command(name, (check_nick_(rest.lstrip("@") if name == "whois" else rest, usage),))
    if name == "me":
        if not rest:
            raise CommandError(f"usage: {usage}")
        return Command(name, rest=rest)
    if name == "msg":
        nick, _, text = rest.partition(" ")
        if not nick:
            raise CommandError(f"usage: {usage}")
        nick = nick.lstrip("@")
        return Command(name, (check_nick_(nick, usage),), rest=text.strip())
    if name == "search":
        if not rest:
            raise CommandError(f"usage: {usage} (words, prefix*, nick:bob, room:#dev)")
        return Command(name, rest=rest)
    if name in ("topic", "away"):
        return Command(name, rest=rest)
    if name in MODERATION:
        word, _, reason = rest.partition(" ")
        if name == "kick" and word:
            return Command(name, (check_nick_(word.lstrip("@"), usage),), rest=reason.strip())
        if name in ("ban", "unban") and rest:
            return Command(name, (rest,))  # a nick, or a fingerprint (spaces and dashes allowed)
        if name == "mode" and rest and " " not in rest and rest[0] in "+-":
            return Command(name, (rest,))
        if name not in ("kick", "ban", "unban", "mode") and word and not reason:
            return Command(name, (check_nick_(word.lstrip("@"), usage),))
        raise CommandError(f"usage: {usage}")
    if name == "connect":
        if not rest or " " in rest:
            raise CommandError(f"usage: {usage} (port 6000 if none)")
        return Command(name, (rest,), rest="!" if force else "")
    if rest:
        raise CommandError(f"/{name} takes no arguments")
    return Command(name)


def room_(text: str, usage: str) -> str:
    try:
        return canonical_room(text)
    except InputError as e:
        raise CommandError(str(e)) from None


def check_nick_(text: str, usage: str) -> str:
    try:
        return check_nick(text)
    except InputError as e:
        raise CommandError(str(e)) from None


def help_rows() -> list[tuple[str, str]]:
    """(usage, what it does) for /help and F1: every command, then the // escape."""
    later = ("register", *MODERATION)  # (what few need comes last)
    rows = [(spec.usage, spec.help) for name, spec in COMMANDS.items() if name not in later]
    rows.append(("//text", "send a message that starts with / (//text sends /text)"))
    rows += [(COMMANDS[name].usage, COMMANDS[name].help) for name in later]
    return rows


def help_lines() -> list[str]:
    return [f"{usage:<21} {text}" for usage, text in help_rows()]


def _takes_room(line: str, start: int) -> bool:
    """The word at `start` is the ROOM of /join or /part (or an alias): complete room names."""
    head, _, _ = line.partition(" ")
    name = head[1:].lower()
    return head.startswith("/") and ALIASES.get(name, name) in ("join", "part") and start == len(head) + 1


class Completer:
    """Tab completion with cycling: repeated Tab walks through the candidates."""

    def __init__(self) -> None:
        self.state: tuple[str, int, list[str], int] | None = None  # (line, start, matches, i)
        self.last: str | None = None

    def reset(self) -> None:
        self.state = None

    def complete(self, line: str, cursor: int, nicks: list[str], rooms: list[str]) -> tuple[str, int] | None:
        """Return (new line, new cursor) or None when there is nothing to complete."""
        if self.state is not None and self.last == line:
            base, start, matches, i = self.state
            i = (i + 1) % len(matches)
        else:
            head = line[:cursor]
            start = head.rfind(" ") + 1
            word = head[start:]
            if start == 0 and word.startswith("/"):
                prefix = word[1:].lower()
                matches = ["/" + c + " " for c in COMMANDS if c.startswith(prefix)]
            elif word.startswith("#") or _takes_room(line, start):
                mark = "#" if word.startswith("#") else ""
                prefix = word[len(mark) :].lower()
                matches = [mark + r + " " for r in rooms if not is_direct(r) and r.startswith(prefix)]
            else:
                prefix = word.lstrip("@").casefold()
                found = sorted((n for n in nicks if n.casefold().startswith(prefix)), key=str.casefold)
                suffix = ": " if start == 0 else " "
                matches = [n + suffix for n in found]
            if not matches:
                return None
            base = line[:start] + "\0" + line[cursor:]
            i = 0
        self.state = (base, start, matches, i)
        before, _, after = base.partition("\0")
        new = (
            before + matches[i] + after.lstrip(" ") if after.startswith(" ") else before + matches[i] + after
        )
        self.last = new
        return new, len(before) + len(matches[i])
