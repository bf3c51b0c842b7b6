"""Events the sans-IO cores hand to whoever drives them (runners, the TUI, the CLI).

Each event is a frozen fact. Room events carry the room sequence number the relay assigned
(`seq`), so every member sees them in one order; `history` is True for backfilled events that
happened before this client joined the room. `ts` is wall-clock seconds (UNIX time) as stamped by
the relay (or, in direct mode, by the sender).

Room names in events are always canonical (lower case, no leading '#'). A direct conversation is
named by the other person's nick prefixed with '@' (see `direct_room`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .crypto import KEY_BYTES, SIG_BYTES

# ----------------------------------------------------------------------------- shared values


@dataclass(frozen=True, slots=True)
class Member:
    nick: str
    away: str = ""  # away message; "" means here
    timed_out: bool = False
    mode: str = ""  # "@" an operator of the room, "+" voiced (relay mode), "" neither


def direct_room(nick: str) -> str:
    """The room key of a direct conversation with `nick`."""
    return "@" + nick


def direct_mid(room: str, nick: str, stamp: int, text: str | None = None) -> int:
    """Direct mode's name for a room event: (room, nick, Lamport stamp) (a peer's stamps only
    grow, and the stamp travels with the message, so every peer names it alike), hashed to a
    63-bit id; a peer dedupes history by it. With `text` (a message's), the name of what was said:
    the app's log dedupes messages by that, so a line relayed with other words under the same name
    (hostile history) never hides the line its author sends."""
    key = f"{room}\0{nick}\0{stamp}" if text is None else f"{room}\0{nick}\0{stamp}\0{text}"
    h = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8)
    return (int.from_bytes(h.digest(), "big") >> 1) or 1


@dataclass(frozen=True, slots=True)
class Signed:
    """Direct mode: what a room message's author signed (`crypto.signed_bytes`) beyond its room,
    kind and text, and the signature: the message id and the time it was signed with (the time
    shown may be another: a receiver checks it), the signature and the author's identity key.
    The app's log keeps it, so a peer serves the line again as its author signed it."""

    mid: int
    ts: float
    sig: bytes
    key: bytes

    def well_formed(self) -> bool:
        """Of the types and sizes a message's signature fields have (from a log, a file, anything
        may come; whether the signature holds is for the receiver to check)."""
        return (
            type(self.mid) is int
            and 0 < self.mid < 1 << 64
            and type(self.ts) is float
            and type(self.sig) is bytes
            and len(self.sig) == SIG_BYTES
            and type(self.key) is bytes
            and len(self.key) == KEY_BYTES
        )


# ----------------------------------------------------------------------------- connection


@dataclass(frozen=True, slots=True)
class Connecting:
    address: str


@dataclass(frozen=True, slots=True)
class Connected:
    address: str
    nick: str
    rtt: float | None = None  # seconds, smoothed
    #: names the relay's history: room sequence numbers are comparable only within one epoch (a
    #: new epoch means the relay's rooms started afresh); 0 in direct mode
    epoch: int = 0
    #: the relay's long-term key as it proved it in the handshake (b"" in direct mode): its
    #: fingerprint is what the status line shows and what is pinned for the address
    relay_key: bytes = b""


@dataclass(frozen=True, slots=True)
class RttUpdated:
    rtt: float


@dataclass(frozen=True, slots=True)
class ConnectionStalled:
    """Still a session, but the relay has said nothing for `silent` seconds although we asked
    (pings, posts): the UI should stop saying 'connected'. Ends with `ConnectionResumed` when it
    answers again, or `ConnectionLost` at the timeout."""

    silent: float


@dataclass(frozen=True, slots=True)
class ConnectionResumed:
    """The relay answers again after a `ConnectionStalled`, on the same session."""

    rtt: float | None = None


@dataclass(frozen=True, slots=True)
class ConnectionLost:
    """The relay stopped answering (or said goodbye); the client will retry after `retry_in` s."""

    reason: str
    retry_in: float


@dataclass(frozen=True, slots=True)
class Refused:
    """The relay refused the whole session (bad version, server full...). Not retried."""

    reason: str


# ----------------------------------------------------------------------------- room state


@dataclass(frozen=True, slots=True)
class RoomJoined:
    """We are in `room` now. `members` includes us. Backfilled history events follow."""

    room: str
    nick: str  # our nick in that room
    members: tuple[Member, ...]
    topic: str = ""


@dataclass(frozen=True, slots=True)
class RoomLeft:
    room: str


@dataclass(frozen=True, slots=True)
class RequestRefused:
    """A join, nick, topic... request was refused. `what` is the command ("join", "nick", ...)."""

    what: str
    room: str
    reason: str


# ----------------------------------------------------------------------------- sequenced room events


@dataclass(frozen=True, slots=True)
class MessageReceived:
    room: str
    seq: int
    nick: str
    text: str
    ts: float
    action: bool = False  # /me
    history: bool = False
    mine: bool = False  # posted by this session
    local_id: int = 0  # ours: the id `post()` returned for it (0: unknown or not ours)
    signed: Signed | None = None  # direct mode, a room's message: as its author signed it


@dataclass(frozen=True, slots=True)
class MemberJoined:
    room: str
    seq: int
    nick: str
    ts: float
    history: bool = False
    mode: str = ""  # "@" an operator of the room, "+" voiced (relay mode)


@dataclass(frozen=True, slots=True)
class MemberLeft:
    room: str
    seq: int
    nick: str
    ts: float
    reason: str = ""
    history: bool = False


@dataclass(frozen=True, slots=True)
class MemberTimedOut:
    room: str
    seq: int
    nick: str
    ts: float
    history: bool = False


@dataclass(frozen=True, slots=True)
class NickChanged:
    room: str
    seq: int
    old: str
    new: str
    ts: float
    history: bool = False


@dataclass(frozen=True, slots=True)
class TopicChanged:
    room: str
    seq: int
    nick: str
    topic: str
    ts: float
    history: bool = False


@dataclass(frozen=True, slots=True)
class AwayChanged:
    room: str
    seq: int
    nick: str
    away: str  # "" = back
    ts: float
    history: bool = False


@dataclass(frozen=True, slots=True)
class RoomModerated:
    """An operator's action in a room (relay mode): `by` the operator, `action` one of "kick",
    "ban", "unban", "op", "deop", "voice", "devoice", "invite", "mode"; `target` a nick or a
    fingerprint (for "mode", the change: "+i"); `text` a kick's reason."""

    room: str
    seq: int
    by: str
    action: str
    target: str
    text: str
    ts: float
    history: bool = False


@dataclass(frozen=True, slots=True)
class Kicked:
    """We were put out of `room` by operator `by` (a kick or a ban): we are no longer in it."""

    room: str
    by: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Registered:
    """The relay bound `nick` to our identity key: no one else may use it there."""

    nick: str


ROOM_EVENTS = (
    MessageReceived,
    MemberJoined,
    MemberLeft,
    MemberTimedOut,
    NickChanged,
    TopicChanged,
    AwayChanged,
)


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """An answer to `page_back(room, before, limit)`: the room's events with sequence numbers
    below `before`, oldest first (each with `history=True`). `complete` is True when the page
    reaches the start of the history the relay keeps (nothing older can be fetched)."""

    room: str
    before: int
    events: tuple = ()
    complete: bool = False


# ----------------------------------------------------------------------------- our own posts


@dataclass(frozen=True, slots=True)
class PostAcknowledged:
    """The relay (or every peer) accepted our post `local_id`; it is `seq` in the room."""

    local_id: int
    room: str
    seq: int
    signed: Signed | None = None  # direct mode, a room's message: as we signed it (for the log)


@dataclass(frozen=True, slots=True)
class PostFailed:
    """Our post `local_id` was given up on (no acknowledgement in time) or refused."""

    local_id: int
    room: str
    reason: str
    refused: bool = False  # the relay said no (no one by that nick...): sending again cannot help


@dataclass(frozen=True, slots=True)
class KeyPinned:
    """First sight of `nick`'s identity key on this relay: the driver keeps the pin (trust on first
    use, `known.KnownKeys`); a later other key for the nick is a room `Notice`."""

    nick: str
    key: bytes


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the user should read (server notice, local warning)."""

    text: str
    room: str = ""


@dataclass(frozen=True, slots=True)
class PassphraseNeeded:
    """`room` has a passphrase (protocol/vault.py): derive its keys with `vault.derive(passphrase,
    salt, ops, mem)` (a third of a second: off the event loop) and hand them to
    `ClientSession.unlock`; what asked for the room (a join, a history page) then goes again."""

    room: str
    salt: bytes
    ops: int
    mem: int


Event = (
    Connecting
    | Connected
    | RttUpdated
    | ConnectionStalled
    | ConnectionResumed
    | ConnectionLost
    | Refused
    | RoomJoined
    | RoomLeft
    | RequestRefused
    | RoomModerated
    | Kicked
    | Registered
    | MessageReceived
    | MemberJoined
    | MemberLeft
    | MemberTimedOut
    | NickChanged
    | TopicChanged
    | AwayChanged
    | PostAcknowledged
    | PostFailed
    | Notice
    | HistoryPage
    | PassphraseNeeded
)
