"""An in-memory backend (a test double): the app's tests, the benchmark and the snapshot tests drive it.

It behaves like a well-connected relay client with no network: joins succeed, posts are echoed
and acknowledged on the next loop turn (unless told to fail), and a test can `inject` any event
as if it came from the relay. With `direct=True` it looks like a direct-mode PeerClient instead:
its `mode` says "direct, N peers" (`peers`), own posts are not echoed, `ack` can give the
post's Lamport stamp, and a room's messages (`say`, `ack`) carry what their author "signed"
(`events.Signed`: a made-up signature and key, well formed; the app does not verify them).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable

from udproom.protocol import events as ev
from udproom.protocol.backend import OutboxFull
from udproom.protocol.names import check_text, is_direct


class FakeBackend:
    def __init__(
        self,
        nick: str = "alice",
        rooms: list[str] | None = None,
        *,
        members: dict[str, list[ev.Member]] | None = None,
        topics: dict[str, str] | None = None,
        clock: Callable[[], float] | None = None,
        address: str = "127.0.0.1:6000",
        auto_ack: bool = True,
        rtt: float = 0.012,
        direct: bool = False,
    ) -> None:
        self._nick = nick
        self.direct = direct
        self.peers = 0  # direct mode: what `mode` reports
        self.rooms = list(rooms or ["lobby"])
        self.members = members or {}
        self.topics = topics or {}
        self.address = address
        self.clock = clock or (lambda: 1_780_000_000.0)
        self.auto_ack = auto_ack
        self.rtt = rtt
        self.calls: list[tuple] = []
        self.emit: Callable[[ev.Event], None] | None = None
        self.outbox_limit = 1000
        self._next_id = 0
        self._seq: dict[str, int] = {}
        self._posts: dict[int, tuple[str, str, bool]] = {}
        self._closed: asyncio.Event | None = None
        self.running = False
        self.closed = False

    # ------------------------------------------------------------------ Backend

    @property
    def mode(self) -> str:
        if self.direct:
            return f"direct, {self.peers} peer{'' if self.peers == 1 else 's'}"
        return f"relay {self.address}"

    def addresses(self) -> list[str]:
        """Direct mode: where others can reach us (like PeerClient.addresses)."""
        return [self.address]

    @property
    def nick(self) -> str:
        return self._nick

    async def run(self, emit: Callable[[ev.Event], None]) -> None:
        self.emit = emit
        self._closed = asyncio.Event()
        self.running = True
        try:
            emit(ev.Connecting(self.address))
            emit(ev.Connected(self.address, self._nick, self.rtt))
            for room in self.rooms:
                self._joined(room)
            await self._closed.wait()
        finally:
            self.running = False

    def join(self, room: str) -> None:
        self.calls.append(("join", room))
        if room not in self.rooms:
            self.rooms.append(room)
        self._later(self._joined, room)

    def part(self, room: str) -> None:
        self.calls.append(("part", room))
        if room in self.rooms:
            self.rooms.remove(room)
        self._later(lambda: self._emit(ev.RoomLeft(room)))

    def post(self, room: str, text: str, action: bool = False) -> int:
        check_text(text)
        if len(self._posts) >= self.outbox_limit:
            raise OutboxFull("too many messages waiting for the relay; try again in a moment")
        self._next_id += 1
        lid = self._next_id
        self.calls.append(("post", room, text, action))
        self._posts[lid] = (room, text, action)
        if self.auto_ack:
            self._later(self.ack, lid)
        return lid

    def retry(self, local_id: int) -> int:
        self.calls.append(("retry", local_id))
        room, text, action = self._posts.pop(local_id)
        self._next_id += 1
        self._posts[self._next_id] = (room, text, action)
        if self.auto_ack:
            self._later(self.ack, self._next_id)
        return self._next_id

    def set_nick(self, nick: str) -> None:
        self.calls.append(("nick", nick))
        old, self._nick = self._nick, nick

        def done():
            for room in self.rooms:
                self._emit(ev.NickChanged(room, self._next_seq(room), old, nick, self.clock()))

        self._later(done)

    def set_topic(self, room: str, topic: str) -> None:
        self.calls.append(("topic", room, topic))
        self._later(
            lambda: self._emit(ev.TopicChanged(room, self._next_seq(room), self._nick, topic, self.clock()))
        )

    def set_away(self, message: str) -> None:
        self.calls.append(("away", message))

        def done():
            for room in self.rooms:
                self._emit(ev.AwayChanged(room, self._next_seq(room), self._nick, message, self.clock()))

        self._later(done)

    def moderate(self, op: int, room: str, text: str) -> None:
        self.calls.append(("moderate", op, room, text))

    def close(self) -> None:
        self.calls.append(("close",))
        self.closed = True
        if self._closed is not None:
            self._closed.set()

    # ------------------------------------------------------------------ test controls

    def inject(self, event: ev.Event) -> None:
        """Deliver an event as if the relay had sent it."""
        self._emit(event)

    def say(
        self,
        room: str,
        nick: str,
        text: str,
        *,
        action: bool = False,
        ts: float | None = None,
        history: bool = False,
    ) -> None:
        ts = self.clock() if ts is None else ts
        seq = self._next_seq(room)
        signed = self.signed_by(nick, room, seq, text, ts)
        self._emit(ev.MessageReceived(room, seq, nick, text, ts, action, history, signed=signed))

    def ack(self, local_id: int, seq: int | None = None) -> None:
        room, text, action = self._posts.pop(local_id)
        seq = self._next_seq(room) if seq is None else seq
        if not is_direct(room) and not self.direct:
            self._emit(ev.MessageReceived(room, seq, self._nick, text, self.clock(), action, mine=True))
        self._emit(ev.PostAcknowledged(local_id, room, seq, self.signed_by(self._nick, room, seq, text)))

    def fail(self, local_id: int, reason: str = "no answer from the relay") -> None:
        room, _text, _action = self._posts[local_id]
        self._emit(ev.PostFailed(local_id, room, reason))

    def signed_by(self, nick: str, room: str, seq: int, text: str, ts: float = 1.5e9) -> ev.Signed | None:
        """Direct mode, a room's message: a made-up `events.Signed` (what a PeerClient's events
        carry), the same for the same arguments."""
        if not self.direct or is_direct(room):
            return None
        said = f"{nick}\0{room}\0{seq}\0{text}".encode("utf-8", "surrogatepass")
        h = hashlib.blake2b(said, digest_size=64).digest()
        key = hashlib.blake2b(nick.encode("utf-8", "surrogatepass"), digest_size=32).digest()
        return ev.Signed(int.from_bytes(h[:8], "big") >> 1 or 1, ts, h, key)

    # ------------------------------------------------------------------ internals

    def _emit(self, event: ev.Event) -> None:
        if self.emit is not None:
            self.emit(event)

    def _later(self, fn, *args) -> None:
        asyncio.get_running_loop().call_soon(fn, *args)

    def _next_seq(self, room: str) -> int:
        self._seq[room] = self._seq.get(room, 0) + 1
        return self._seq[room]

    def _joined(self, room: str) -> None:
        members = self.members.get(room) or [ev.Member(self._nick)]
        if not any(m.nick == self._nick for m in members):
            members = [ev.Member(self._nick), *members]
        self._emit(ev.RoomJoined(room, self._nick, tuple(members), self.topics.get(room, "")))


# ---------------------------------------------------------------------------- a scripted session

DEMO_T0 = 1_780_000_000.0  # Thursday 28 May 2026, 20:26:40 UTC

DEMO_MEMBERS = {
    "lobby": [
        ev.Member("alice"),
        ev.Member("bob"),
        ev.Member("carol", away="in a meeting"),
        ev.Member("dave"),
        ev.Member("erin"),
    ],
    "dev": [ev.Member("alice"), ev.Member("bob"), ev.Member("erin")],
    "random": [ev.Member("alice"), ev.Member("carol", away="in a meeting"), ev.Member("dave")],
    "ops": [ev.Member("alice"), ev.Member("dave")],
}
DEMO_TOPICS = {
    "lobby": "Welcome to udproom · be kind · release 0.1 on Friday",
    "dev": "wire format v1 frozen; relay perf next",
    "ops": "relay at 10.0.0.5:6000",
}


def demo_backend(clock=None) -> FakeBackend:
    return FakeBackend(
        "alice",
        ["lobby", "dev", "random", "ops"],
        members=DEMO_MEMBERS,
        topics=DEMO_TOPICS,
        clock=clock or (lambda: DEMO_T0 + 1500),
    )


def play_demo(b: FakeBackend, t0: float = DEMO_T0) -> None:
    """A realistic afternoon: history in the lobby, unread messages elsewhere, a mention, a DM."""
    t = t0 - 86400 + 3600 * 2

    def at(minutes: float) -> float:
        return t0 + minutes * 60

    b.say("lobby", "bob", "anyone tried the new relay build?", ts=t, history=True)
    b.say("lobby", "erin", "yes, 250k datagrams/s on loopback here", ts=t + 60, history=True)
    b.say("lobby", "bob", "good morning all", ts=at(0))
    b.say("lobby", "erin", "morning! coffee first", ts=at(1))
    b.say("lobby", "carol", "stepping out for a meeting, back at 3", ts=at(2))
    b.inject(ev.AwayChanged("lobby", 900, "carol", "in a meeting", at(2.2)))
    b.say("lobby", "bob", "alice: did the TUI batching land? the flood test froze typing last week", ts=at(3))
    b.say(
        "lobby",
        "alice",
        "it did: events are buffered and flushed every 50 ms, one repaint per "
        "batch, so typing stays under 50 ms even at 5,000 msg/s",
        ts=at(4),
    )
    b.say("lobby", "erin", "waves at everyone", action=True, ts=at(5))
    b.inject(ev.MemberJoined("lobby", 901, "frank", at(6)))
    b.say("lobby", "frank", "hi! is this where the udp chat is?", ts=at(6.5))
    b.say("lobby", "dave", "welcome frank 👋 — /help lists the commands", ts=at(7))
    b.inject(ev.MemberTimedOut("lobby", 902, "frank", at(9)))
    b.say("dev", "bob", "pushed the ack-range fix", ts=at(8))
    b.say("dev", "erin", "reviewing", ts=at(8.5))
    b.say("dev", "bob", "@alice can you check the reconnect path in the TUI?", ts=at(9))
    b.say("random", "dave", "lunch?", ts=at(10))
    b.inject(ev.MessageReceived("@carol", 1, "carol", "got a minute after my meeting?", at(11)))


async def populate(pilot, app, backend: FakeBackend, tries: int = 400) -> None:
    """Wait for the demo rooms, play the script, and wait until it is on screen."""
    for _ in range(tries):
        if len(app.chat.rooms) >= len(backend.rooms):
            break
        await pilot.pause()
    play_demo(backend)
    for _ in range(tries):
        await pilot.pause()
        if not app.events_waiting:
            break
    app.input.cursor_blink = False
    await pilot.pause()
