"""A relay and clients on the simulated network, with helpers the protocol tests share."""

from __future__ import annotations

from udproom.protocol import events as E
from udproom.protocol import frames as F
from udproom.protocol.client import ClientSession, RoomKeys, _signed
from udproom.protocol.crypto import (
    KIND_ROOM,
    SESSION_OVERHEAD,
    CryptoError,
    Identity,
    Initiator,
    Responder,
    is_sealed,
)
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


def hello_datagram(
    cookie: bytes = b"",
    version: int = F.VERSION,
    pad: bool = True,
    nick: str = "",
    kx: bytes | None = None,
    nonce: int = 7,
) -> bytes:
    """A client's Hello, by default with a fresh handshake message 1."""
    if kx is None:
        kx = Initiator().msg1
    if pad:
        return F.encode_one(F.padded_hello(version=version, nick=nick, cookie=cookie, nonce=nonce, kx=kx))
    return F.encode_one(F.Hello(version=version, nick=nick, cookie=cookie, nonce=nonce, kx=kx))


class HandClient:
    """A client made by hand against a relay core: it does the protocol-2 handshake (Hello, Retry,
    Hello with the cookie, Welcome, sealed Login, LoggedIn) at `addr`, then seals what a test
    wants to send (`seal`, `send`) and opens what the relay sent it (`frames`), room batches
    included (it keeps the RoomKey frames it is given)."""

    def __init__(
        self,
        relay: Relay,
        addr: tuple,
        nick: str,
        now: float = 1.0,
        identity: Identity | None = None,
        nonce: int = 7,
        resume: int = 0,
    ) -> None:
        self.relay = relay
        self.addr = addr
        self.identity = identity or Identity.generate()
        prologue = F.hello_prologue(F.Hello(version=F.VERSION, nick="", nonce=nonce))
        self.hs = hs = Initiator(identity=self.identity, prologue=prologue)
        relay.receive_datagram(hello_datagram(kx=hs.msg1, nonce=nonce), addr, now)
        cookie = F.decode(relay.datagrams_to_send(now)[0][0])[0].cookie
        relay.receive_datagram(hello_datagram(cookie, kx=hs.msg1, nonce=nonce), addr, now)
        welcome = F.decode(relay.datagrams_to_send(now)[0][0])[0]
        assert isinstance(welcome, F.Welcome), welcome
        msg3, _ = hs.finish(welcome.kx, F.encode_one(F.Login(nick, resume, 1)))
        self.channel = hs.channel
        self.keys = RoomKeys()
        relay.receive_datagram(msg3, addr, now)
        #: what the relay answered the Login: a LoggedIn, or a Refuse (then `logged_in` is None)
        self.answer = frames = self.frames(relay.datagrams_to_send(now))
        self.logged_in = next((f for f in frames if isinstance(f, F.LoggedIn)), None)
        self.token = self.logged_in.token if self.logged_in is not None else 0

    def seal(self, frames: list[F.Frame]) -> bytes:
        return self.channel.seal(F.encode(frames))

    def send(self, frames: list[F.Frame], now: float) -> None:
        self.relay.receive_datagram(self.seal(frames), self.addr, now)

    def frames(self, out: list[tuple[bytes, tuple]]) -> list[F.Frame]:
        """The frames of the datagrams in `out` that are addressed to us (each opened)."""
        got: list[F.Frame] = []
        for data, dst in out:
            if dst != self.addr:
                continue
            if not is_sealed(data):
                got.extend(F.decode(data))
                continue
            try:
                if data[1] == KIND_ROOM:
                    payload = self.channel.open_room(data, self.keys)
                else:
                    payload = self.channel.open(data)
            except CryptoError:
                continue
            for f in F.decode(payload):
                if isinstance(f, F.RoomKey):
                    self.keys.add(f.room, f.kid, f.key)
                got.append(f)
        return got


def session_by_hand(relay: Relay, addr: tuple, nick: str, now: float = 1.0) -> HandClient:
    """Handshake `addr` with the relay by hand; returns the hand-made client."""
    return HandClient(relay, addr, nick, now)


class HandRelay:
    """A relay made by hand for one ClientSession that was told to connect: it answers the
    client's handshake (Welcome with message 2, then LoggedIn), then seals what a test wants the
    client to receive (`seal`) and opens what the client sends (`frames`)."""

    def __init__(
        self,
        c: ClientSession,
        now: float = 0.0,
        *,
        epoch: int = 9,
        keepalive_ms: int = 5000,
        timeout_ms: int = 20000,
        token: int = 77,
        identity: Identity | None = None,
    ) -> None:
        self.identity = identity or Identity.generate()
        hello = next(f for d, _ in c.datagrams_to_send(now) for f in F.decode(d) if isinstance(f, F.Hello))
        self.hs = hs = Responder(self.identity, prologue=F.hello_prologue(hello))
        msg2 = hs.respond(hello.kx)
        c.receive_datagram(F.encode_one(F.Welcome(F.VERSION, "", 0, 0, 0, 0, hello.nonce, msg2)), RELAY, now)
        (msg3,) = [d for d, _ in c.datagrams_to_send(now)]
        self.login = F.decode(hs.finish(msg3))[0]
        c.receive_datagram(
            self.seal([F.LoggedIn(self.login.nick, epoch, keepalive_ms, timeout_ms, token)]), RELAY, now
        )
        assert c.connected

    def seal(self, frames: list[F.Frame]) -> bytes:
        return self.hs.channel.seal(F.encode(frames))

    def frames(self, out: list[tuple[bytes, tuple]]) -> list[F.Frame]:
        return [f for d, _ in out for f in F.decode(self.hs.channel.open(d))]


def signed_ev(
    author: Identity, room: str, nick: str, text: str, kind: int = F.EV_MSG, mid: int = 0, ts: float = 1.0
) -> F.Ev:
    """A room message as a relay stores it: signed by `author` the way its client signs a post, with
    the author's key (what every receiver checks it against)."""
    sig = author.sign(_signed(room, kind, mid, text))
    return F.Ev(kind, nick, text, ts, mid, sig=sig, key=author.public)


def datagram_of(frames: list[F.Frame], limit: int = F.MAX_DATAGRAM) -> bytes | None:
    """The frames as one datagram, dropping from the end what does not fit `limit` bytes."""
    while frames:
        data = F.encode(frames)
        if len(data) <= limit:
            return data
        frames = frames[:-1]
    return None


def sealed_by(member: ClientSession, frames: list[F.Frame]) -> bytes:
    """What a member holding its session's keys can send the relay: `frames` (cut to what fits)
    sealed under its session (a malicious member: a test's attacker with the member's keys)."""
    payload = datagram_of(frames, F.MAX_DATAGRAM - SESSION_OVERHEAD) or F.encode([F.Ping(1)])
    return member._channel.seal(payload)


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
