"""A relay and clients on the simulated network, with helpers the protocol tests share."""

from __future__ import annotations

from udproom.protocol import events as E
from udproom.protocol import frames as F
from udproom.protocol.client import ClientSession
from udproom.protocol.relay import Relay, RelayConfig
from udproom.protocol.reliability import Timing

from .adversary import Watched
from .fakenet import FakeNet, Impairment

RELAY = ("10.0.0.1", 6000)
T = Timing.fast()


def client_addr(i: int) -> tuple:
    return (f"10.0.1.{i}", 5000 + i)


class Room:
    """One relay, n clients, all in one room."""

    def __init__(
        self,
        n: int,
        seed: int = 0,
        imp: Impairment | None = None,
        room: str = "lobby",
        timing: Timing = T,
        history: int = 100,
    ) -> None:
        self.net = FakeNet(seed, imp)
        self.timing = timing
        self.relay = self.net.add(RELAY, Relay(RelayConfig(timing=timing, history=history)))
        self.room = room
        self.clients: dict[tuple, ClientSession] = {}
        for i in range(n):
            self.add_client(i)

    def add_client(self, i: int, nick: str | None = None, join: bool = True) -> ClientSession:
        addr = client_addr(i)
        c = self.net.add(addr, ClientSession(nick or f"n{i}", self.timing))
        self.clients[addr] = c
        self.net.call(addr, c.connect, RELAY)
        if join:
            self.net.call(addr, c.join, self.room)
        return c

    def events(self, addr: tuple, kind=None) -> list:
        evs = self.net.events[addr]
        return [e for e in evs if kind is None or isinstance(e, kind)]

    def wait_joined(self, limit: float = 30.0) -> None:
        def pending() -> bool:
            return not all(
                any(isinstance(e, E.RoomJoined) and e.room == self.room for e in self.net.events[a])
                for a in self.clients
            )

        self.net.run_while(pending, self.net.now + limit)
        assert not pending(), "not every client joined"

    def messages(self, addr: tuple, room: str | None = None) -> list[tuple[int, str, str]]:
        room = room or self.room
        return [
            (e.seq, e.nick, e.text)
            for e in self.net.events[addr]
            if isinstance(e, E.MessageReceived) and e.room == room
        ]

    def room_log(self, addr: tuple) -> list:
        """Every sequenced room event this client delivered, as comparable tuples."""
        out = []
        for e in self.net.events[addr]:
            if isinstance(e, E.ROOM_EVENTS) and e.room == self.room:
                out.append(
                    (
                        e.seq,
                        type(e).__name__,
                        getattr(e, "nick", getattr(e, "old", "")),
                        getattr(e, "text", ""),
                    )
                )
        return out

    def wait_messages(self, count: int, limit: float = 120.0, addrs=None) -> None:
        addrs = list(addrs or self.clients)

        def pending() -> bool:
            return any(len(self.messages(a)) < count for a in addrs)

        self.net.run_while(pending, self.net.now + limit)
        assert not pending(), [len(self.messages(a)) for a in addrs]

    def wait_settled(self, limit: float = 60.0) -> None:
        """Until every client has delivered the whole room log and has nothing in flight."""

        def pending() -> bool:
            head = self.relay.rooms[self.room].seq
            return any(
                c._inflight
                or c._outbox
                or c.rooms[self.room].rx is None
                or c.rooms[self.room].rx.next != head + 1
                for c in self.clients.values()
            )

        self.net.run_while(pending, self.net.now + limit)
        assert not pending()

    def settle(self, seconds: float) -> None:
        self.net.run_until(self.net.now + seconds)


def hello_datagram(cookie: bytes = b"", version: int = F.VERSION, pad: bool = True, nick: str = "x") -> bytes:
    if pad:
        return F.encode_one(F.padded_hello(version=version, nick=nick, cookie=cookie, nonce=7))
    return F.encode_one(F.Hello(version=version, nick=nick, cookie=cookie, nonce=7))


def session_by_hand(relay: Relay, addr: tuple, nick: str, now: float = 1.0) -> int:
    """Handshake `addr` with the relay by hand; returns the session token."""
    relay.receive_datagram(hello_datagram(nick=nick), addr, now)
    cookie = F.decode(relay.datagrams_to_send(now)[0][0])[0].cookie
    relay.receive_datagram(hello_datagram(cookie, nick=nick), addr, now)
    frames = F.decode(relay.datagrams_to_send(now)[0][0])
    return next(f for f in frames if isinstance(f, F.Welcome)).token


def datagram_of(frames: list[F.Frame]) -> bytes | None:
    """The frames as one datagram, dropping from the end what does not fit 1200 bytes."""
    while frames:
        data = F.encode(frames)
        if len(data) <= F.MAX_DATAGRAM:
            return data
        frames = frames[:-1]
    return None


def post_reaches_everyone(room: Room, sender: tuple, text: str, addrs: list[tuple]) -> None:
    room.net.call(sender, room.clients[sender].post, room.room, text)

    def missing() -> bool:
        return any(text not in [m[2] for m in room.messages(a)] for a in addrs)

    room.net.run_while(missing, room.net.now + 10)
    assert not missing(), "a post after the attack did not reach everyone"


def watched_relay(room: Room) -> Watched:
    """Check every datagram the relay emits from now on (<= 1200 bytes) and count bytes per peer."""
    w = Watched(room.relay, RELAY)
    room.net.nodes[RELAY] = w
    return w
