"""The client session's sans-IO core: handshake, requests, ordered delivery, presence, reconnects.

No sockets, no asyncio, no clock: every call takes `now` (monotonic seconds); `wall_offset`
(wall clock minus that clock) stamps nothing here but is kept for symmetry with the relay.

The session keeps what the user wants (rooms, nick, away, unacknowledged posts) apart from what
the relay has confirmed, so when the relay goes away and comes back (or restarts with a new epoch)
the session says Hello again, rejoins the rooms and resends what was never acknowledged; message ids
(`mid`) make those resends idempotent at the relay and at every receiver.

It is one module (over 600 lines) because it is one state machine: the handshake, the requests
in flight, delivery and acks (`reliability.AckScheduler`) and reconnecting all read and reset the
same session state, and splitting them would only pass that state around.
"""

from __future__ import annotations

import os
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from . import events as E
from . import frames as F
from . import vault as V
from .addr import Addr, format_sockaddr
from .backend import OutboxFull
from .crypto import (
    KID_BYTES,
    KIND_ROOM,
    SESSION_OVERHEAD,
    CryptoError,
    Identity,
    Initiator,
    PassphraseKeys,
    PinMismatch,
    RoomKey,
    RoomKeyring,
    SealedChannel,
    SignatureCache,
    check_kdf_params,
    fingerprint,
    is_sealed,
)
from .crypto import signed_event as _signed
from .names import (
    MAX_AWAY_BYTES,
    MAX_TOPIC_BYTES,
    Refused,
    canonical_room,
    check_nick,
    check_text,
    is_direct,
    nick_key,
)
from .pins import KeyPins
from .reliability import AckScheduler, DedupeWindow, RecvStream, RttEstimator, Timing

IDLE, HANDSHAKE, CONNECTED, WAITING, CLOSED = "idle", "handshake", "connected", "waiting", "closed"

MAX_INFLIGHT = 256
MAX_PAGE = 100  # events per history page (the relay's bound too)
MAX_OUTBOX = 5000
OWN_MIDS = 8192  # our recent posts whose copy from the relay is matched to the local id
ACK_EVERY = 128  # or after ack_delay; gaps and duplicates are acked at once
#: changed keys said in the rooms (nick, fingerprint): beyond, one more line says the rest are not
#: (a hostile relay can sign history under pinned nicks with as many new keys as it likes)
MAX_KEY_WARNINGS = 1024
MAX_REFUSE_WAIT = 300.0  # at most this long (s) before a Hello after a Refuse that says "try later"


@dataclass(slots=True)
class Request:
    op: int
    room: str = ""
    text: str = ""
    mid: int = 0
    arg: int = 0
    local_id: int = 0
    created: float = 0.0
    cseq: int = 0
    sent_at: float = 0.0
    due: float = 0.0
    attempts: int = 0
    failed: bool = False
    n: int = 0  # OP_HISTORY: the most events wanted
    got: dict | None = None  # OP_HISTORY: the page's events received so far, by sequence
    body: bytes = b""  # passphrase rooms: a sealed body, a verifier, a proposal (frames.Req.body)
    sig: bytes = b""  # a room post's signature by our identity key

    def frame(self) -> F.Req:
        return F.Req(
            cseq=self.cseq,
            op=self.op,
            room=self.room,
            text=self.text,
            mid=self.mid,
            arg=self.arg,
            n=self.n,
            body=self.body,
            sig=self.sig,
        )


class RoomState:
    __slots__ = (
        "collecting",
        "early",
        "history_below",
        "join_seq",
        "keys",
        "members",
        "name",
        "ready",
        "rx",
        "topic",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.rx: RecvStream | None = None
        self.join_seq = 0
        self.history_below = 0
        self.members: dict[str, E.Member] = {}
        self.keys: dict[str, bytes] = {}  # identity keys of the members, as the relay says
        self.topic = ""
        self.collecting: list[F.MemberInfo] = []
        self.early: dict[int, F.Ev] = {}
        self.ready = False


class RoomKeys:
    """The keys the relay sealed our rooms' batches with (`F.RoomKey` frames): the newest two of
    each room (a rotation leaves the old one for batches already in flight). `open` finds the key
    by its id and says which room it belongs to (`room`), so a batch of one room can never be
    taken for another's."""

    __slots__ = ("rings", "room")

    def __init__(self) -> None:
        self.rings: dict[str, RoomKeyring] = {}
        self.room = ""

    def add(self, room: str, kid: int, key: bytes) -> None:
        self.rings.setdefault(room, RoomKeyring(keep=2)).add(RoomKey(key, kid))

    def open(self, blob: bytes, aad: bytes = b"") -> bytes:
        kid = int.from_bytes(blob[:KID_BYTES], "big")
        for room, ring in self.rings.items():
            if kid in ring.keys:
                self.room = room
                return ring.open(blob, aad)
        raise CryptoError("unknown room key id")


class ClientSession:
    def __init__(
        self,
        nick: str,
        timing: Timing | None = None,
        wall_offset: float = 0.0,
        *,
        identity: Identity | None = None,
        pinned: bytes | str | None = None,
        kdf_check: Callable[[int, int], None] = check_kdf_params,
        key_pins: KeyPins | None = None,
    ) -> None:
        """`identity`: the user's key, proven to the relay in every handshake (None: one made for
        this session). `pinned`: the relay's key (or its fingerprint) this session insists on; a
        relay proving another is refused (`E.Refused`, never retried). None: trust on first use,
        and the key the relay proved is in `E.Connected.relay_key` for the caller to pin.
        `kdf_check`: what Argon2id parameters a passphrase room may ask for (tests only loosen it).
        `key_pins`: members' keys pinned on this relay (`pins.KeyPins` of its address; None: in
        memory for this session): a nick met with no pin is pinned, `E.KeyPinned`; with another
        key, a room `Notice` says so."""
        self._my_nicks: set[str] = set()  # nick_keys we had this session: what a DM to us names
        self.nick = check_nick(nick)
        self.identity = identity if identity is not None else Identity.generate()
        self.pinned = pinned
        self.key_pins = key_pins if key_pins is not None else KeyPins()
        self._key_warned: set[tuple[str, str]] = set()
        self._pins_full_said = False
        self._key_warnings_full = False
        self._unchecked_live: set[str] = set()  # rooms told that messages without a key are not shown
        self._pin_checked: set[tuple[str, bytes]] = set()  # (nick, key) of messages held against pins
        self.relay_key: bytes | None = None  # as proven in the last handshake
        self.pin_refused = False  # the relay proved a key other than the pinned one
        self._hs: Initiator | None = None  # the handshake under way
        self._channel: SealedChannel | None = None  # the session's, once logged in
        self._room_keys = RoomKeys()
        self.vault = V.VaultKeys()  # passphrase rooms' body keys (protocol/vault.py), memory only
        self.kdf_check = kdf_check
        self._locked: dict[str, list[Request]] = {}  # requests waiting for a room's passphrase
        self._rekeys: dict[str, tuple[PassphraseKeys, bytes]] = {}  # our /passphrase under way
        self._sharing: dict[str, tuple[PassphraseKeys, list[F.MemberInfo]]] = {}  # ...its names
        self._clear: list[F.Frame] = []  # Hellos: the only frames we send in the clear
        self._raw: list[bytes] = []  # handshake message 3, sent as it is
        self.timing = t = timing or Timing()
        self.wall_offset = wall_offset
        self.rtt = RttEstimator(t)
        self.state = IDLE
        self.addr: Addr | None = None
        #: the relays of a cluster to fail over to (addr among them): the next one when ours stops
        #: answering; the cluster's epoch makes it a resume there (no gap, no duplicate)
        self.relays: list[Addr] = []
        self.failed_from = ""  # the relay we last failed over from (the status line says so)
        self.epoch: int | None = None
        self.rooms: OrderedDict[str, RoomState] = OrderedDict()  # wanted rooms, in join order
        self.away = ""
        self.inbox: RecvStream = RecvStream(1)
        self._events: deque = deque()
        self._frames: list[F.Frame] = []  # queued for the next datagrams_to_send
        self._outbox: deque[Request] = deque()  # not yet numbered
        self._inflight: OrderedDict[int, Request] = OrderedDict()  # cseq -> request
        self._failed: dict[int, Request] = {}
        self._next_cseq = 1
        self._next_local = 1
        self._own_mids: OrderedDict[int, int] = OrderedDict()  # our posts: mid -> local id (newest)
        self._seen_mids = DedupeWindow(16384)
        self._nonce = 0
        self._cookie = b""
        self._hello_at = 0.0
        self._hello_tries = 0
        self._handshake_started = 0.0
        self._wait_until = 0.0
        self._reconnects = 0
        self._last_heard = 0.0
        self._last_sent = 0.0
        self._ping_token = 0
        self._ping_sent: dict[int, float] = {}
        self._acks_due = AckScheduler(self.timing.ack_delay, ACK_EVERY)  # rooms, "" = the inbox
        self._retx_at: float | None = None
        self._token = 0
        self._hello_sent = 0.0
        self._last_ping = 0.0
        self._first_cseq = 1
        self._resume = 0
        self._stalled = False
        self._renaming = ""  # the nick a /nick asked for, until the relay answers
        self.stats = {
            "malformed": 0,
            "duplicates": 0,
            "retransmits": 0,
            "unauthenticated": 0,
            "sealed_dropped": 0,
            "bad_signature": 0,
            "unsigned": 0,
        }
        self._signatures = SignatureCache()
        self._keepalive = t.keepalive

    # ------------------------------------------------------------------ commands

    @property
    def nick(self) -> str:
        return self._nick

    @nick.setter
    def nick(self, value: str) -> None:
        self._nick = value
        self._my_nicks.add(nick_key(value))

    @property
    def pending_posts(self) -> int:
        n = sum(1 for r in self._outbox if r.op in (F.OP_POST, F.OP_ACTION, F.OP_DIRECT))
        return n + sum(1 for r in self._inflight.values() if r.op in (F.OP_POST, F.OP_ACTION, F.OP_DIRECT))

    @property
    def connected(self) -> bool:
        return self.state == CONNECTED

    def connect(self, addr: Addr, now: float) -> None:
        self.addr = addr
        self._start_handshake(now)

    def join(self, room: str, now: float) -> None:
        name = canonical_room(room)
        if name in self.rooms:
            return
        self.rooms[name] = RoomState(name)
        self._enqueue(Request(F.OP_JOIN, name, body=self._verifier(name)), now)

    def create_private(self, room: str, proposal: bytes, keys: PassphraseKeys, now: float) -> None:
        """Join `room` as a new passphrase room (`vault.create`: its salt and keys). If the relay
        says it has a passphrase already, an `E.PassphraseNeeded` asks to derive with its salt."""
        name = canonical_room(room)
        if name in self.rooms:
            raise Refused(f"you are in #{name} already")
        self.rooms[name] = RoomState(name)
        self.vault.pending[name] = (keys, proposal)
        self._enqueue(Request(F.OP_MKPRIVATE, name, body=proposal), now)

    def unlock(self, room: str, keys: PassphraseKeys, now: float) -> None:
        """The keys derived for `room` after an `E.PassphraseNeeded`: what waited goes again with
        the verifier (a wrong passphrase: `E.RequestRefused(..., 'wrong passphrase for #room')`)."""
        name = canonical_room(room)
        self.vault.pending[name] = (keys, b"")
        for req in self._locked.pop(name, []):
            op = F.OP_JOIN if req.op == F.OP_MKPRIVATE else req.op
            self._outbox.append(Request(op, name, arg=req.arg, n=req.n, body=keys.verifier, created=now))

    def change_passphrase(self, room: str, proposal: bytes, keys: PassphraseKeys, now: float) -> None:
        """Re-key passphrase room `room` (its creator): the relay takes the new verifier, then the
        members get the new body key from us (OP_KEYSHARE), sealed to each one's identity key."""
        name = canonical_room(room)
        state = self.rooms.get(name)
        if state is None or not state.ready or not self.vault.private(name):
            raise Refused(f"#{name} is not a passphrase room you are in")
        self._rekeys[name] = (keys, proposal)
        self._enqueue(Request(F.OP_PASSPHRASE, name, body=proposal), now)

    def _rejoin(self, name: str, resume: int, now: float) -> Request:
        """The request that (re)joins `name` on a new session: a passphrase room not made yet
        is made (its proposal), one we proved is joined with the verifier."""
        got = self.vault.pending.get(name)
        if got is not None and got[1] and not self.vault.private(name):
            return Request(F.OP_MKPRIVATE, name, arg=resume, body=got[1], created=now)
        return Request(F.OP_JOIN, name, arg=resume, body=self._verifier(name), created=now)

    def _verifier(self, name: str) -> bytes:
        got = self.vault.pending.get(name)
        return got[0].verifier if got is not None else b""

    def part(self, room: str, now: float) -> None:
        name = canonical_room(room)
        if self.rooms.pop(name, None) is None:
            return
        self._room_keys.rings.pop(name, None)
        self.vault.forget(name)
        self._locked.pop(name, None)
        # drop queued requests for that room that were never sent
        self._outbox = deque(r for r in self._outbox if r.room != name or r.op == F.OP_PART)
        self._enqueue(Request(F.OP_PART, name), now)
        self._events.append(E.RoomLeft(name))

    def post(self, room: str, text: str, now: float, action: bool = False) -> int:
        check_text(text)
        if len(self._outbox) + len(self._inflight) >= MAX_OUTBOX:
            raise OutboxFull(f"{MAX_OUTBOX} messages are waiting for the relay; wait a moment")
        if is_direct(room):
            target = check_nick(room[1:])
            req = Request(F.OP_DIRECT, target, text, arg=1 if action else 0)
        else:
            name = canonical_room(room)
            if name not in self.rooms:
                raise Refused(f"you are not in #{name}")
            req = Request(F.OP_ACTION if action else F.OP_POST, name, text)
            self._seal(req)
        req.mid = int.from_bytes(os.urandom(8), "big") >> 1 or 1
        self._sign(req)  # (room posts and direct messages alike)
        return self._own(req.mid, self._enqueue(req, now))

    def _sign(self, req: Request) -> None:
        """A post (and a topic, message id 0) is signed by our identity key (what receivers
        verify, `_verified`): in a room, over the room; a direct message over its recipient ("@" +
        its nick_key) and the kind the recipient receives."""
        if req.op in (F.OP_POST, F.OP_ACTION, F.OP_TOPIC):
            kind = {F.OP_TOPIC: F.EV_TOPIC, F.OP_ACTION: F.EV_ACTION}.get(req.op, F.EV_MSG)
            req.sig = self.identity.sign(_signed(req.room, kind, req.mid, req.text, req.body))
        elif req.op == F.OP_DIRECT:
            kind = F.EV_DM_ACTION if req.arg == 1 else F.EV_DM
            req.sig = self.identity.sign(_signed("@" + nick_key(req.room), kind, req.mid, req.text))

    def retry(self, local_id: int, now: float) -> int:
        old = self._failed.pop(local_id, None)
        if old is None:
            raise Refused("that message is not waiting for a retry")
        # same mid: if the first attempt did land after all, the relay answers with its seq
        req = Request(old.op, old.room, old.text, old.mid, old.arg, body=old.body, sig=old.sig)
        return self._own(req.mid, self._enqueue(req, now))

    def _own(self, mid: int, local_id: int) -> int:
        """Remember that `mid` is our post `local_id` (its copy from the relay carries it)."""
        own = self._own_mids
        own[mid] = local_id
        own.move_to_end(mid)
        if len(own) > OWN_MIDS:
            own.popitem(last=False)
        return local_id

    def set_nick(self, nick: str, now: float) -> None:
        check_nick(nick)
        self._renaming = nick
        self._enqueue(Request(F.OP_NICK, "", nick), now)

    def set_topic(self, room: str, topic: str, now: float) -> None:
        name = canonical_room(room)
        check_text(topic, MAX_TOPIC_BYTES, "topic")
        req = Request(F.OP_TOPIC, name, topic)
        self._seal(req, MAX_TOPIC_BYTES, "topic")
        self._sign(req)
        self._enqueue(req, now)

    def _seal(self, req: Request, limit: int = V.MAX_TEXT_BYTES, what: str = "message") -> None:
        """In a passphrase room the text goes sealed end to end (`body`), never in the clear."""
        name = req.room
        if name in self.vault.pending and not self.vault.private(name):
            raise Refused(f"#{name} is waiting for its passphrase")
        key = self.vault.current(name)
        if key is not None:
            kind = {F.OP_TOPIC: F.EV_TOPIC, F.OP_ACTION: F.EV_ACTION}.get(req.op, F.EV_MSG)
            sealed = req.text or req.op != F.OP_TOPIC  # (an empty topic clears it)
            req.body = V.seal_text(key, name, kind, req.text, limit, what) if sealed else b""
            req.text = ""

    def set_away(self, text: str, now: float) -> None:
        check_text(text, MAX_AWAY_BYTES, "away message")
        self.away = text
        self._enqueue(Request(F.OP_AWAY, "", text), now)

    def moderate(self, op: int, room: str, text: str, now: float) -> None:
        """A moderation request (`frames.MODERATION_OPS`: kick, ban, mode...) about `room`; `text`
        is its target (and a kick's reason after a space), or the mode change. OP_REGISTER binds
        our nick to our identity key (room and text unused). The relay says no with one line
        (`RequestRefused`); what it does shows as room events (`RoomModerated`)."""
        if op not in F.MODERATION_OPS:
            raise ValueError(f"not a moderation request: {op}")
        name = canonical_room(room) if op != F.OP_REGISTER else ""
        self._enqueue(Request(op, name, text if op != F.OP_REGISTER else self.nick), now)

    def page_back(self, room: str, before: int, limit: int, now: float) -> None:
        """Ask the relay for up to `limit` (at most MAX_PAGE) events of `room` with sequence
        numbers below `before` (0: the newest). The answer is one `E.HistoryPage` (oldest first,
        every event `history=True`); a refusal is a `RequestRefused("history", ...)`."""
        name = canonical_room(room)
        limit = max(1, min(int(limit), MAX_PAGE))
        req = Request(F.OP_HISTORY, name, arg=max(0, int(before)), n=limit, body=self._verifier(name))
        self._enqueue(req, now)

    def close(self, now: float) -> None:
        if self.state == CONNECTED:
            if self._acks_due.streams:  # what we delivered is acknowledged before we go (a DM's
                self._frames.extend(self._acks(now))  # sender waits for it)
            self._frames.append(F.Bye("quit"))
        self.state = CLOSED

    # ------------------------------------------------------------------ sans-IO surface

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        if self.state == CLOSED or addr != self.addr:
            return
        if len(data) > F.MAX_DATAGRAM:
            self.stats["malformed"] += 1
            return
        if not is_sealed(data):
            self._clear_datagram(data, now)
            return
        # Sealed: under the session's keys (or, while logging in, the handshake's).
        hs = self._hs
        channel = self._channel if self.state == CONNECTED else None
        if channel is None and self.state == HANDSHAKE and hs is not None:
            channel = hs.channel
        if channel is None:
            self.stats["sealed_dropped"] += 1
            return
        room = None
        try:
            if len(data) > 1 and data[1] == KIND_ROOM:
                payload = channel.open_room(data, self._room_keys)
                room = self._room_keys.room
            else:
                payload = channel.open(data)
        except CryptoError:
            self.stats["sealed_dropped"] += 1
            return
        with self.key_pins.batch():  # (a page of members, a batch of renames: the pin file written once)
            self._sealed_frames(payload, room, now)

    def _sealed_frames(self, payload: bytes, room: str | None, now: float) -> None:
        frames = F.decode_counted(payload, self.stats)
        if frames is None:
            return
        if room is not None and any(type(f) is not F.Batch or f.room != room for f in frames):
            self.stats["malformed"] += 1  # a room's key seals that room's batches, nothing else
            return
        self._last_heard = now
        if self._stalled:
            self._stalled = False
            self._events.append(E.ConnectionResumed(self.rtt.srtt))
        for frame in frames:
            try:
                self._handle(frame, now)
            except (ValueError, TypeError, KeyError, IndexError, OverflowError):
                self.stats["malformed"] += 1
            if self.state == CLOSED:
                return

    def _clear_datagram(self, data: bytes, now: float) -> None:
        """Only the handshake travels in the clear: Retry, Welcome, Refuse (answers to our Hello,
        echoing its nonce) and Reset (a hint: a new handshake, our session kept until it is done)."""
        try:
            frames = F.decode(data)
        except F.FrameError:
            self.stats["malformed"] += 1
            return
        if any(type(f) not in _SESSIONLESS for f in frames) or (
            self.state == CONNECTED and self._hs is None and any(type(f) is not F.Reset for f in frames)
        ):
            # (on a session only a Reset means anything in the clear: a late or replayed answer
            # to a handshake that is over is not believed either)
            self.stats["unauthenticated"] += 1
            return
        for frame in frames:
            tp = type(frame)
            try:
                if tp is F.Reset:
                    if self.state == CONNECTED and self._hs is None:
                        self._start_handshake(now, background=True)
                elif tp is F.Retry:
                    if self._hs is not None and self._hs.channel is None:
                        self._cookie = frame.cookie if isinstance(frame.cookie, bytes) else b""
                        self._hello_tries = 0
                        self._send_hello(now)
                elif tp is F.Welcome:
                    self._on_welcome(frame, now)
                elif tp is F.Refuse and self._hs is not None and self._hs.channel is None:
                    self._on_refuse(frame, now)
            except (ValueError, TypeError, KeyError, IndexError, OverflowError):
                self.stats["malformed"] += 1
            if self.state == CLOSED:
                return

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        if self.addr is None:
            return []
        frames = self._frames
        self._frames = []
        if self.state == CONNECTED:
            if self._acks_due.due(now):
                frames.extend(self._acks(now))
            self._send_requests(now, frames)
            if not frames and now >= self._ping_due():
                frames.append(self._ping(now))
        addr = self.addr
        out = [(d, addr) for d in self._raw]
        self._raw = []
        if self._clear:
            out.extend((d, addr) for d in F.pack(self._clear))
            self._clear = []
        channel = self._channel
        if frames and channel is not None and self.state in (CONNECTED, CLOSED):
            out.extend((channel.seal(d), addr) for d in F.pack(frames, F.MAX_DATAGRAM - SESSION_OVERHEAD))
        if out:
            self._last_sent = now
        return out

    def get_timer(self) -> float | None:
        t = self.timing
        st = self.state
        if st == HANDSHAKE:
            return self._hello_at
        if st == WAITING:
            return self._wait_until
        if st != CONNECTED:
            return None
        at = min(self._ping_due(), self._last_heard + t.timeout)
        if not self._stalled and self._last_heard + self._stall_after() < at:
            at = self._last_heard + self._stall_after()
        ack_at = self._acks_due.at
        if self._acks_due.streams and ack_at is not None and ack_at < at:
            at = ack_at
        if self._inflight:
            if self._retx_at is not None and self._retx_at < at:
                at = self._retx_at
            # only posts give up (and only once): the oldest post still hoping sets the deadline
            for req in self._inflight.values():
                if req.op in _POSTS and not req.failed:
                    if req.created + t.give_up < at:
                        at = req.created + t.give_up
                    break
        if self._hs is not None and self._hello_at < at:  # a handshake in the background (a Reset)
            at = self._hello_at
        if self._outbox and len(self._inflight) < MAX_INFLIGHT:
            return min(at, self._last_sent)
        return at

    def handle_timer(self, now: float) -> None:
        t = self.timing
        st = self.state
        if st == HANDSHAKE:
            if now >= self._hello_at:
                if now >= self._handshake_started + min(t.handshake, t.timeout):
                    self._lost("no answer from the relay", now, failover=True)
                else:
                    self._send_hello(now)
            self._expire_outbox(now)
            return
        if st == WAITING:
            if now >= self._wait_until:
                self._start_handshake(now)
            self._expire_outbox(now)
            return
        if st != CONNECTED:
            return
        if now >= self._last_heard + t.timeout:
            self._lost("the relay stopped answering", now, failover=True)
            return
        if not self._stalled and now >= self._last_heard + self._stall_after():
            self._stalled = True
            self._events.append(E.ConnectionStalled(now - self._last_heard))
        if self._hs is not None and now >= self._hello_at:  # the background handshake
            if now >= self._handshake_started + min(t.handshake, t.timeout):
                self._hs = None  # no relay answered it: the session carries on as it was
            else:
                self._send_hello(now)
        # retransmit what is due
        for req in self._inflight.values():
            if req.due <= now:
                req.attempts += 1
                req.sent_at = now
                req.due = now + self.rtt.backoff(req.attempts + 1)
                self._frames.append(req.frame())
                self.stats["retransmits"] += 1
            if (
                not req.failed
                and now >= req.created + t.give_up
                and req.op in (F.OP_POST, F.OP_ACTION, F.OP_DIRECT)
            ):
                req.failed = True
                self._fail(req, "the relay did not acknowledge it in time")
        self._retx_at = min((r.due for r in self._inflight.values()), default=None)

    def next_event(self):
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ connection

    def _start_handshake(self, now: float, background: bool = False) -> None:
        """Say Hello with a fresh handshake. `background`: while connected (a Reset said the relay
        lost our session: a hint anyone could forge), the session stays until the relay proves
        its key in the new handshake's answer."""
        if not background:
            self.state = HANDSHAKE
            self._stalled = False
            self._events.append(E.Connecting(format_sockaddr(self.addr)))
        self._cookie = b""
        self._nonce = int.from_bytes(os.urandom(6), "big")
        prologue = F.hello_prologue(F.Hello(version=F.VERSION, nick="", nonce=self._nonce))
        # (in the background, the relay we have a session with: no one else may take it over)
        pinned = self.pinned if self.pinned is not None or not background else self.relay_key
        self._hs = Initiator(pinned=pinned, identity=self.identity, prologue=prologue)
        self._handshake_started = now
        self._hello_tries = 0
        self._send_hello(now)

    def _send_hello(self, now: float) -> None:
        hs = self._hs
        if hs.channel is not None:  # logging in: our message 3 again, the same bytes
            self._raw.append(hs.msg3)
        else:
            # Only what the handshake needs travels in the clear: no nick, no token.
            self._clear.append(
                F.padded_hello(version=F.VERSION, nick="", cookie=self._cookie, nonce=self._nonce, kx=hs.msg1)
            )
        self._hello_tries += 1
        self._hello_sent = now
        self._hello_at = now + self.timing.hello_backoff(self._hello_tries)

    def _on_welcome(self, w: F.Welcome, now: float) -> None:
        """The relay's answer to our Hello: its key, proven (handshake message 2). We answer with
        message 3, carrying our Login, sealed; the session exists once LoggedIn comes back."""
        hs = self._hs
        if hs is None or hs.channel is not None or w.nonce != self._nonce:
            return
        if w.version != F.VERSION or not w.kx:
            self._fail_handshake(self._old_relay(w.version))
            return
        if self._token:
            self._resume = self._token  # lets the relay end our old session (at any address)
        # A random first request number per session: a late Result from an earlier session can
        # never answer one of this session's requests.
        self._first_cseq = int.from_bytes(os.urandom(4), "big") | 1
        login = F.encode_one(F.Login(self.nick, self._resume, self._first_cseq))
        try:
            hs.finish(w.kx, login)
        except PinMismatch as exc:
            if self.state == CONNECTED:  # a background handshake: our session (with the pinned
                self._hs = None  # relay) stays; whoever answered with another key is ignored
                self.stats["sealed_dropped"] += 1
                return
            self.pin_refused = True
            self._fail_handshake(
                f"relay {format_sockaddr(self.addr)}: {exc}: not connecting (check the fingerprint)"
            )
            return
        except CryptoError:
            self.stats["sealed_dropped"] += 1  # not the relay's answer (forged, or altered)
            return
        self.relay_key = hs.responder_key
        if self.state == CONNECTED:  # a background handshake: the relay proved itself, switch
            self.state = HANDSHAKE
            self._events.append(E.ConnectionLost("the relay forgot this session", 0.0))
            self._events.append(E.Connecting(format_sockaddr(self.addr)))
        self._token = 0
        if self._hello_tries == 1:  # Karn: only an answer to a Hello sent once is a sample
            self.rtt.sample(now - self._hello_sent)
        self._hello_tries = 0
        self._send_hello(now)

    def _old_relay(self, version: object) -> str:
        """What a protocol-2 client says of a relay that speaks an older protocol (never a fallback)."""
        return f"{format_sockaddr(self.addr)} speaks protocol {version}, without encryption: not connecting"

    def _fail_handshake(self, reason: str) -> None:
        """Refused for good: one line for the user, and no retry (never a fallback to cleartext)."""
        self.state = CLOSED
        self._hs = None
        self._events.append(E.Refused(reason))

    def _on_refuse(self, frame: F.Refuse, now: float) -> None:
        if frame.nonce != self._nonce or self._hs is None:
            return
        versions = frame.versions if isinstance(frame.versions, list) else []
        if versions and F.VERSION not in versions and max(versions) < F.VERSION:
            self._fail_handshake(self._old_relay(max(versions)))
            return
        if self.state == CONNECTED:  # refused a background handshake: our session stays
            self._hs = None
            return
        if isinstance(frame.retry_ms, int) and frame.retry_ms > 0:  # passes (a ghost's nick): try again
            delay = min(max(frame.retry_ms / 1000, self.timing.reconnect_min), MAX_REFUSE_WAIT)
            self._lost(frame.reason, now, delay)
            return
        self.state = CLOSED
        self._hs = None
        self._events.append(E.Refused(frame.reason))

    def _lost(self, reason: str, now: float, delay: float | None = None, failover: bool = False) -> None:
        self._stalled = False
        others = failover and len(self.relays) > 1 and self.addr in self.relays
        if delay is None:
            # with other relays to try, the backoff grows once per round of them
            delay = self.timing.reconnect_backoff(self._reconnects // (len(self.relays) if others else 1))
            self._reconnects += 1
        if others:
            self.failed_from = format_sockaddr(self.addr)
            self.addr = self.relays[(self.relays.index(self.addr) + 1) % len(self.relays)]
            reason += f"; failing over to {format_sockaddr(self.addr)}"
        self.state = WAITING
        self._wait_until = now + delay
        self._frames = []
        self._hs = None
        self._channel = None
        self._events.append(E.ConnectionLost(reason, delay))

    def _on_logged_in(self, w: F.LoggedIn, now: float) -> None:
        hs = self._hs
        if self.state != HANDSHAKE or hs is None or hs.channel is None:
            return
        new_epoch = self.epoch is not None and w.epoch != self.epoch
        self._channel = hs.channel
        self._hs = None
        self._room_keys = RoomKeys()
        self.epoch = w.epoch
        self._token = w.token
        # the relay may want to hear from us more often than we planned
        self._keepalive = min(self.timing.keepalive, max(0.001, w.keepalive_ms / 1000))
        self.state = CONNECTED
        self._reconnects = 0
        self.nick = w.nick
        self._last_heard = now
        # Rebuild the request stream for the new session: rooms first, then what was unsent.
        old = list(self._inflight.values()) + list(self._outbox)
        self._inflight.clear()
        self._outbox.clear()
        self._next_cseq = self._first_cseq
        self.inbox = RecvStream(1)
        self._acks_due.clear()
        for room in self.rooms.values():
            room.ready = False
            room.collecting = []
            room.early = {}
            if new_epoch:
                room.rx = None
            # Same relay run: ask to resume where we were rather than from the backfill window.
            resume = room.rx.next if room.rx is not None else 0
            self._outbox.append(self._rejoin(room.name, resume, now))
        if self.away:
            self._outbox.append(Request(F.OP_AWAY, "", self.away, created=now))
        for req in old:
            if req.op in (F.OP_JOIN, F.OP_NAMES, F.OP_PART, F.OP_AWAY, F.OP_MKPRIVATE):
                continue
            req.cseq = 0
            req.attempts = 0
            if new_epoch:
                req.got = None  # parts of a history page from another history
            self._outbox.append(req)
        self._events.append(
            E.Connected(
                format_sockaddr(self.addr), self.nick, self.rtt.srtt, self.epoch or 0, self.relay_key or b""
            )
        )

    def _stall_after(self) -> float:
        """Silence (while we keep asking) after which we say the relay is not answering: past a
        keepalive and its unanswered probes, well before the timeout."""
        return min(self.timing.timeout / 2, self._keepalive + 4 * self.rtt.rto)

    def _ping_due(self) -> float:
        """Ping when quiet for a keepalive; while a ping goes unanswered, probe faster, so one
        lost datagram does not let the session drift towards a timeout."""
        if self._last_heard >= self._last_ping:
            return self._last_sent + self._keepalive
        return self._last_ping + max(self.rtt.rto, self._keepalive / 5)

    def _ping(self, now: float) -> F.Ping:
        self._last_ping = now
        self._ping_token += 1
        self._ping_sent = {self._ping_token: now}
        return F.Ping(self._ping_token)

    # ------------------------------------------------------------------ requests

    def _enqueue(self, req: Request, now: float) -> int:
        req.local_id = self._next_local
        self._next_local += 1
        req.created = now
        self._outbox.append(req)
        return req.local_id

    def _send_requests(self, now: float, frames: list[F.Frame]) -> None:
        outbox = self._outbox
        inflight = self._inflight
        due = now + self.rtt.rto
        while outbox and len(inflight) < MAX_INFLIGHT:
            req = outbox.popleft()
            req.cseq = self._next_cseq
            self._next_cseq += 1
            req.sent_at = now
            req.due = due
            inflight[req.cseq] = req
            frames.append(req.frame())
        if inflight and (self._retx_at is None or self._retx_at > due):
            self._retx_at = due

    def _expire_outbox(self, now: float) -> None:
        """While disconnected, posts older than give_up fail (and leave the queue)."""
        limit = now - self.timing.give_up
        if not self._outbox and not self._inflight:
            return
        keep: deque[Request] = deque()
        for req in list(self._inflight.values()) + list(self._outbox):
            if req.op in (F.OP_POST, F.OP_ACTION, F.OP_DIRECT) and req.created < limit:
                if not req.failed:
                    self._fail(req, "no connection to the relay")
                else:
                    self._failed.setdefault(req.local_id, req)
            else:
                keep.append(req)
        self._inflight.clear()
        for req in keep:
            req.cseq = 0
        self._outbox = keep

    def _fail(self, req: Request, reason: str) -> None:
        self._failed[req.local_id] = req
        room = "@" + req.room if req.op == F.OP_DIRECT else req.room
        self._events.append(E.PostFailed(req.local_id, room, reason))

    def _done(self, cseq: int, now: float) -> Request | None:
        req = self._inflight.pop(cseq, None)
        if req is not None and req.attempts == 0:
            self.rtt.sample(now - req.sent_at)
        return req

    def _on_result(self, res: F.Result, now: float) -> None:
        req = self._done(res.cseq, now)
        if req is None:
            return
        op = req.op
        if op in (F.OP_POST, F.OP_ACTION, F.OP_DIRECT):
            room = "@" + req.room if op == F.OP_DIRECT else req.room
            self._failed.pop(req.local_id, None)
            if res.code == F.RES_REFUSED:
                self._events.append(E.PostFailed(req.local_id, room, res.reason, refused=True))
            else:
                self._events.append(E.PostAcknowledged(req.local_id, room, res.seq))
            return
        if res.code == F.RES_STALE and op == F.OP_HISTORY:
            # too old for the relay to remember (it forgets old answers): the page is still wanted
            req.cseq, req.attempts = 0, 0
            self._outbox.appendleft(req)
            return
        if res.code == F.RES_STALE and op in (F.OP_JOIN, F.OP_NAMES, F.OP_MKPRIVATE):
            # Too old for the relay to remember, and its answer never reached us: a join must
            # complete whatever happened to it, so ask again with a fresh request.
            room = self.rooms.get(req.room)
            if room is not None and not room.ready:
                resume = room.rx.next if room.rx is not None else 0
                self._outbox.appendleft(self._rejoin(req.room, resume, now))
            return
        if res.code != F.RES_REFUSED:
            if op == F.OP_NICK:
                self.nick = req.text  # what the next Hello (after a reconnect) asks for
            elif op == F.OP_REGISTER and res.code == F.RES_OK:
                self._events.append(E.Registered(req.text))
            elif op == F.OP_PASSPHRASE and res.code == F.RES_OK and req.room in self._rekeys:
                # taken: who is in the room now, with their keys (a names snapshot), gets the key
                self._sharing[req.room] = (self._rekeys.pop(req.room)[0], [])
                self._outbox.appendleft(Request(F.OP_NAMES, req.room, created=now))
            return
        what = {
            F.OP_JOIN: "join",
            F.OP_PART: "part",
            F.OP_NICK: "nick",
            F.OP_TOPIC: "topic",
            F.OP_AWAY: "away",
            F.OP_NAMES: "names",
            F.OP_HISTORY: "history",
            **F.MODERATION_OPS,
        }.get(op, "request")
        if op in (F.OP_JOIN, F.OP_MKPRIVATE):
            self.rooms.pop(req.room, None)
            self.vault.forget(req.room)
        if op == F.OP_PASSPHRASE:
            self._rekeys.pop(req.room, None)
            what = "passphrase"
        elif op == F.OP_MKPRIVATE:
            what = "join"
        self._events.append(E.RequestRefused(what, res.room or req.room, res.reason))

    def _on_joined(self, j: F.Joined, now: float) -> None:
        self._done(j.cseq, now)
        room = self.rooms.get(j.room)
        if room is not None and room.ready and j.room in self._sharing:
            self._names_for_shares(j, now)
            return
        if room is None or room.ready:
            return
        if j.offset == 0:
            room.collecting = []
        if j.offset != len(room.collecting):
            return
        room.collecting.extend(j.members)
        if len(room.collecting) < j.total and j.members:
            self._outbox.appendleft(Request(F.OP_NAMES, j.room, arg=len(room.collecting), created=now))
            return
        self.nick = j.nick
        room.members = {m.nick: E.Member(m.nick, m.away, mode=_mode(m.mode)) for m in room.collecting}
        room.keys = {}
        for m in room.collecting:
            self._learn_key(room, m.nick, m.key)
        room.collecting = []
        derived = self.vault.pending.get(j.room)
        if derived is not None and not self.vault.private(j.room):  # the relay took our verifier:
            self.vault.add(j.room, derived[0].room)  # the body key is ours (a rejoin keeps the ring)
        room.topic = self._topic(j.room, j.topic) if self._topic_verified(room, j) else ""
        rx = room.rx
        if rx is not None and j.base <= rx.next <= j.join_seq + 1:
            pass  # same relay run: carry on from where we were, nothing lost, nothing repeated
        else:
            missed = rx is not None and rx.next < j.base
            room.rx = rx = RecvStream(j.base)
            # first join: what came before us is history; a rejoin: all of it is news to us
            room.history_below = j.base if room.join_seq else j.join_seq
            if missed:
                self._events.append(E.Notice("some events were missed while disconnected", j.room))
        room.join_seq = j.join_seq
        room.ready = True
        self._events.append(E.RoomJoined(j.room, j.nick, tuple(room.members.values()), room.topic))
        if room.early:
            for seq, ev in sorted(room.early.items()):
                rx.offer(seq, ev)
            room.early = {}
            self._deliver(room, now)
            self._want_ack(j.room, now, urgent=True)  # else the relay resends the backfill

    # ------------------------------------------------------------------ incoming frames

    def _handle(self, frame: F.Frame, now: float) -> None:
        tp = type(frame)
        if tp is F.Batch:
            self._on_batch(frame, now)
        elif tp is F.Result:
            self._on_result(frame, now)
        elif tp is F.Joined:
            self._on_joined(frame, now)
        elif tp is F.History:
            self._on_history(frame, now)
        elif tp is F.Pong:
            sent = self._ping_sent.pop(frame.token, None)
            if sent is not None:
                self.rtt.sample(now - sent)
                self._events.append(E.RttUpdated(self.rtt.srtt or 0.0))
        elif tp is F.Gone:
            self._on_gone(frame, now)
        elif tp is F.NeedPassphrase:
            self._on_need_passphrase(frame, now)
        elif tp is F.RoomKey:
            if frame.room in self.rooms:
                self._room_keys.add(frame.room, frame.kid, frame.key)
        elif tp is F.LoggedIn:
            self._on_logged_in(frame, now)
        elif tp is F.Bye:
            if frame.reason == F.TAKEN_OVER:  # our registered nick, taken by a login with our key
                self._fail_handshake(F.TAKEN_OVER)
                self._channel = None
            elif self.state == CONNECTED:
                self._lost(frame.reason or "the relay said goodbye", now, self.timing.reconnect_min)
        elif tp is F.Refuse and self.state == HANDSHAKE:  # sealed: our Login refused (the nick)
            self._on_refuse(frame, now)

    def _on_need_passphrase(self, n: F.NeedPassphrase, now: float) -> None:
        """The relay wants the verifier of passphrase room `n.room` for request `n.cseq` (a join,
        a history page): that request waits for `unlock`; the caller is asked to derive, once the
        parameters pass `kdf_check` (a relay asking for no work or all the memory is refused)."""
        req = self._inflight.get(n.cseq)
        if req is None or req.op not in (F.OP_JOIN, F.OP_MKPRIVATE, F.OP_HISTORY) or n.room != req.room:
            return
        self._done(n.cseq, now)
        waiting = self._locked.setdefault(req.room, [])
        if len(waiting) < 64:
            waiting.append(req)
        try:
            if len(n.salt) != V.SALT_BYTES:
                raise CryptoError(f"a salt of {len(n.salt)} bytes")
            self.kdf_check(n.ops, n.mem)
        except CryptoError as exc:
            self._locked.pop(req.room, None)
            reason = f"#{req.room}: the relay asks for unusable passphrase parameters ({exc})"
            self._refuse_locked(req, reason)
            return
        self._events.append(E.PassphraseNeeded(req.room, n.salt, n.ops, n.mem))

    def _refuse_locked(self, req: Request, reason: str) -> None:
        what = "history" if req.op == F.OP_HISTORY else "join"
        if what == "join":
            self.rooms.pop(req.room, None)
        self.vault.forget(req.room)
        self._events.append(E.RequestRefused(what, req.room, reason))

    def _on_history(self, h: F.History, now: float) -> None:
        """A part of a history page: the page is answered once every event lo..hi is in. Parts of
        an earlier try of the same request count (a sequence names one event within an epoch)."""
        req = self._inflight.get(h.cseq)
        if req is None or req.op != F.OP_HISTORY or h.room != req.room:
            return
        if not (0 < h.lo <= h.hi + 1 and h.hi - h.lo < MAX_PAGE and h.lo <= h.seq):
            self.stats["malformed"] += 1
            return
        if (req.arg > 0 and h.hi >= req.arg) or h.hi - h.lo + 1 > req.n:
            self.stats["malformed"] += 1  # not what we asked for (above `before`, or more than n)
            return
        got = req.got if req.got is not None else {}
        req.got = got
        for i, ev in enumerate(h.events):
            seq = h.seq + i
            if h.lo <= seq <= h.hi:
                got[seq] = ev
        if any(s not in got for s in range(h.lo, h.hi + 1)):
            return  # more parts to come (or the request is sent again)
        self._done(h.cseq, now)
        derived = self.vault.pending.get(h.room)
        if derived is not None and not self.vault.private(h.room):  # the relay took our verifier
            self.vault.add(h.room, derived[0].room)
        room = self.rooms.get(h.room)  # (None: a room we are not in; its messages are checked all the same)
        unsigned = self.stats["unsigned"]
        mids: set[int] = set()  # a message is in a page once (a relay repeating it under another number)
        events = tuple(
            self._as_event(h.room, s, got[s], True)
            for s in range(h.lo, h.hi + 1)
            if (got[s].kind not in _SIGNED_KINDS or self._verified(h.room, got[s], room, True))
            and self._first_in_page(got[s], mids)
        )
        before = req.arg if req.arg > 0 else h.hi + 1
        self._unchecked_notice(h.room, self.stats["unsigned"] - unsigned, True)
        self._events.append(E.HistoryPage(h.room, before, tuple(e for e in events if e), h.complete))

    def _first_in_page(self, ev: F.Ev, mids: set[int]) -> bool:
        """Is this the first time a page holds this message (its message id)? A repeat is counted
        (`duplicates`), as live."""
        if ev.kind not in _POST_KINDS or not ev.mid:
            return True
        if ev.mid in mids:
            self.stats["duplicates"] += 1
            return False
        mids.add(ev.mid)
        return True

    def _on_gone(self, g: F.Gone, now: float) -> None:
        if g.room == "":
            rx = self.inbox
        else:
            room = self.rooms.get(g.room)
            if room is None or room.rx is None:
                return
            rx = room.rx
        skipped = rx.skip_to(g.first)
        if skipped:
            self._events.append(E.Notice(f"{skipped} older events were no longer available", g.room))
            if g.room:
                self._deliver(self.rooms[g.room], now)
            else:
                self._deliver_inbox(now)
        self._want_ack(g.room, now, urgent=True)

    def _on_batch(self, b: F.Batch, now: float) -> None:
        if self.state != CONNECTED:
            return
        room = None
        if b.room == "":
            rx = self.inbox
        else:
            room = self.rooms.get(b.room)
            if room is None:
                return
            if not room.ready:  # kept until the Joined says where the room starts for us
                if len(room.early) < 8192:
                    for i, ev in enumerate(b.events):
                        room.early[b.seq + i] = ev
                return
            rx = room.rx
        fresh = False
        for i, ev in enumerate(b.events):
            fresh |= rx.offer(b.seq + i, ev)
        if not fresh:
            self.stats["duplicates"] += 1
        if room is None:
            self._deliver_inbox(now)
        else:
            self._deliver(room, now)
        self._want_ack(b.room, now, urgent=not fresh or rx.has_gap())

    def _want_ack(self, name: str, now: float, urgent: bool) -> None:
        self._acks_due.want(name, self.inbox if name == "" else self.rooms[name].rx, now, urgent)

    def _acks(self, now: float) -> list[F.Frame]:
        def stream_of(name: str) -> tuple[RecvStream, int] | None:
            if name == "":
                return self.inbox, 0
            room = self.rooms.get(name)
            return None if room is None or room.rx is None else (room.rx, 0)

        out: list[F.Frame] = []
        for name, cum, sack, missing in self._acks_due.take(now, self.rtt.pace, stream_of):
            out.append(F.Ack(name, cum, sack))
            if missing:
                out.append(F.Nack(name, missing))
        return out

    def _deliver(self, room: RoomState, now: float) -> None:
        ready = room.rx.pop_ready()
        if not ready:
            return
        name = room.name
        emit = self._events.append
        members = room.members
        unsigned = {True: 0, False: 0}  # (history, live)
        for seq, ev in ready:
            hist = seq < room.history_below
            kind = ev.kind
            if kind == F.EV_MSG or kind == F.EV_ACTION or kind == F.EV_TOPIC:
                if not self._verified(name, ev, room, hist):
                    unsigned[hist] += not (isinstance(ev.key, bytes) and len(ev.key) == 32)
                    continue
                if kind == F.EV_TOPIC:
                    if not hist:
                        room.topic = self._text(name, ev)
                elif ev.mid:
                    if ev.mid in self._seen_mids:
                        self.stats["duplicates"] += 1
                        continue
                    self._seen_mids.add(ev.mid)
            elif hist:
                pass
            elif kind == F.EV_JOIN:
                members[ev.nick] = E.Member(ev.nick, mode=_mode(ev.text))
                self._learn_key(room, ev.nick, ev.key)
            elif kind == F.EV_LEAVE or kind == F.EV_TIMEOUT or kind == F.EV_KICK:
                members.pop(ev.nick, None)
                room.keys.pop(ev.nick, None)
            elif kind in _MODE_CHANGES:
                was = members.get(ev.text)
                if was is not None:
                    members[ev.text] = replace(was, mode=_MODE_CHANGES[kind](was.mode))
            elif kind == F.EV_NICK:
                old = members.pop(ev.nick, None)
                members[ev.text] = E.Member(ev.text, old.away if old else "", mode=old.mode if old else "")
                key = room.keys.pop(ev.nick, None)
                if key is not None:
                    self._learn_key(room, ev.text, key)
                if ev.nick == self.nick and self._renaming == ev.text:
                    self.nick = ev.text  # ours: true from this event on, not only from the Result
            elif kind == F.EV_KEYSHARE:
                self._take_share(name, ev)
            elif kind == F.EV_AWAY:
                was = members.get(ev.nick)
                members[ev.nick] = E.Member(ev.nick, ev.text, mode=was.mode if was else "")
            event = self._as_event(name, seq, ev, hist)
            if event is not None:
                emit(event)
        for hist, n in unsigned.items():
            self._unchecked_notice(name, n, hist)

    def _unchecked_notice(self, name: str, n: int, hist: bool) -> None:
        """Say in the room that `n` messages came without their author's key (`unsigned`) and are
        not shown: history as it comes (a log written before relays kept the key), live ones once
        per room (a relay older than this client)."""
        if n <= 0:
            return
        if hist:
            what = (
                f"{n} older messages could not be checked and are"
                if n > 1
                else "1 older message could not be checked and is"
            )
            said = f"{what} not shown"
        elif name not in self._unchecked_live:
            self._unchecked_live.add(name)
            said = "messages without their author's key are not shown (is the relay older than this client?)"
        else:
            return
        self._events.append(E.Notice(said, name))

    def _dm_verified(self, ev: F.Ev) -> bool:
        """A direct message to us: signed by the key the relay says its sender has (held against
        the sender's pin), over one of the nicks we had this session. One that fails is counted
        and never shown; one without its sender's key (an older relay) passes unchecked."""
        key = ev.key
        if not isinstance(key, bytes) or len(key) != 32:
            return True
        self._check_pin(ev.nick, key, E.direct_room(ev.nick))
        for mine in self._my_nicks:
            if self._signatures.verify(key, _signed("@" + mine, ev.kind, ev.mid, ev.text), ev.sig):
                return True
        self.stats["bad_signature"] += 1
        return False

    def _learn_key(self, room: RoomState, nick: str, key: bytes) -> None:
        """The relay says `nick` in `room` has identity `key`: remember it (its messages are checked
        against it) and hold it against the nick's pin on this relay (trust on first use)."""
        if not isinstance(key, bytes) or len(key) != 32:
            return
        room.keys[nick] = key
        self._check_pin(nick, key, room.name)

    def _check_pin(self, nick: str, key: bytes, where: str) -> None:
        """Pin `nick` to `key` on first sight; another key than the pinned one is said in `where`."""
        k, fp = nick_key(nick), fingerprint(key)
        pinned = self.key_pins.get(k)
        if pinned is None:
            if self.key_pins.pin(k, fp):
                self._events.append(E.KeyPinned(nick, key))
            elif self.key_pins.full and not self._pins_full_said:
                self._pins_full_said = True  # (said once: every nick met after it would say it again)
                self._events.append(E.Notice(f"{nick} is not pinned: {self.key_pins.full}", where))
        elif pinned != fp and (k, fp) not in self._key_warned:
            if len(self._key_warned) >= MAX_KEY_WARNINGS:
                if not self._key_warnings_full:
                    self._key_warnings_full = True
                    self._events.append(
                        E.Notice(
                            f"more than {MAX_KEY_WARNINGS} changed keys seen: the rest are not said", where
                        )
                    )
                return
            self._key_warned.add((k, fp))
            self._events.append(
                E.Notice(
                    f"{nick}'s key changed: was {pinned}, now {fp}; messages are shown as from {fp}", where
                )
            )

    def key_of(self, room: str, nick: str) -> bytes | None:
        """`nick`'s identity key in `room`, as the relay announced it (None: not known)."""
        state = self.rooms.get(room) if room else None
        if state is not None:
            return state.keys.get(nick)
        return next((r.keys[nick] for r in self.rooms.values() if nick in r.keys), None)

    def _verified(self, name: str, ev: F.Ev, room: RoomState | None, hist: bool) -> bool:
        """Is this message (a post, an action, a topic; live, backfill or a history page) signed by
        the key it carries (`ev.key`: its author's, as the relay saw it proven), and is that key
        the one pinned for its nick (docs/security.md, "Message signatures")? A message without a
        key is counted (`unsigned`), one whose signature fails (`bad_signature`); neither is shown.
        Live, a member's message must carry the key the relay announced for the member (it cannot
        be another's now). History is shown as from the key that signed it: a key other than the
        nick's pin is said in the room once (`_check_pin`: the nick changed hands since, or the
        relay lies about who said it)."""
        key = ev.key
        if not isinstance(key, bytes) or len(key) != 32:
            self.stats["unsigned"] += 1
            return False
        known = room.keys.get(ev.nick) if room is not None else None
        if (known is not None and known != key and not hist) or not self._signatures.verify(
            key, _signed(name, ev.kind, ev.mid, ev.text, ev.body), ev.sig
        ):
            self.stats["bad_signature"] += 1
            return False
        if known != key and (ev.nick, key) not in self._pin_checked:  # (a member's key was, when announced)
            if len(self._pin_checked) >= 4096:
                self._pin_checked.clear()
            self._pin_checked.add((ev.nick, key))  # (a second check would change nothing, say nothing)
            self._check_pin(ev.nick, key, name)
        return True

    def _topic_verified(self, room: RoomState, j: F.Joined) -> bool:
        """Is the topic a Joined gives signed by the key the relay says set it (docs/security.md,
        "Signed topics")? One that fails is counted and not applied; one without a signature (a
        relay that restarted since, an older relay) passes unchecked, like history from an author
        who left."""
        key, sig = j.topic_key, j.topic_sig
        if not j.topic or not isinstance(key, bytes) or len(key) != 32 or not sig:
            return True
        text, body = j.topic, b""
        if room.name in self.vault.rings:  # (a passphrase room's topic is its sealed body)
            body, text = V.topic_body(j.topic), ""
        if self._signatures.verify(key, _signed(room.name, F.EV_TOPIC, 0, text, body), sig):
            return True
        self.stats["bad_signature"] += 1
        return False

    def _as_event(self, name: str, seq: int, ev: F.Ev, hist: bool) -> E.Event | None:
        """The app's event for a room event (None for a kind rooms do not have)."""
        kind = ev.kind
        if kind == F.EV_MSG or kind == F.EV_ACTION:
            local_id = self._own_mids.get(ev.mid, 0)
            own = ev.mid in self._own_mids
            action = kind == F.EV_ACTION
            text = self._text(name, ev)
            return E.MessageReceived(name, seq, ev.nick, text, ev.ts, action, hist, own, local_id)
        if kind == F.EV_JOIN:
            return E.MemberJoined(name, seq, ev.nick, ev.ts, hist, _mode(ev.text))
        if kind == F.EV_LEAVE:
            return E.MemberLeft(name, seq, ev.nick, ev.ts, ev.text, hist)
        if kind == F.EV_TIMEOUT:
            return E.MemberTimedOut(name, seq, ev.nick, ev.ts, hist)
        if kind == F.EV_NICK:
            return E.NickChanged(name, seq, ev.nick, ev.text, ev.ts, hist)
        if kind == F.EV_TOPIC:
            return E.TopicChanged(name, seq, ev.nick, self._text(name, ev), ev.ts, hist)
        if kind == F.EV_AWAY:
            return E.AwayChanged(name, seq, ev.nick, ev.text, ev.ts, hist)
        if kind == F.EV_KICK:  # nick: the member put out; text: "OPERATOR[ REASON]"
            by, _, reason = ev.text.partition(" ")
            return E.RoomModerated(name, seq, by, "kick", ev.nick, reason, ev.ts, hist)
        action = _MODERATION_EVENTS.get(kind)
        if action is not None:
            return E.RoomModerated(name, seq, ev.nick, action, ev.text, "", ev.ts, hist)
        return None

    # ------------------------------------------------------------------ passphrase rooms

    def _text(self, name: str, ev: F.Ev) -> str:
        """What a member said: opened with the room's body key in a passphrase room (a body that
        does not open, or text in the clear there, is shown as `vault.UNREADABLE`)."""
        ring = self.vault.rings.get(name)
        if ring is None:
            return V.UNREADABLE if ev.body else ev.text
        if not ev.body:
            return "" if ev.kind == F.EV_TOPIC and not ev.text else V.UNREADABLE
        return V.open_text(ring, name, ev.kind, ev.body)

    def _topic(self, name: str, topic: str) -> str:
        ring = self.vault.rings.get(name)
        return topic if ring is None else V.open_topic(ring, name, F.EV_TOPIC, topic)

    def _take_share(self, name: str, ev: F.Ev) -> None:
        """A re-key's share for us (`ev.text`: the recipient's identity key in hex): the new body
        key, if it opens under the room's current one and the sealed box to our key."""
        ring = self.vault.rings.get(name)
        if ring is None or ev.text != self.identity.public.hex():
            return
        try:
            keys = V.unwrap_share(self.identity, ring, name, ev.body)
        except CryptoError:
            self.stats["bad_shares"] = self.stats.get("bad_shares", 0) + 1
            return
        self.vault.add(name, keys.room)
        self.vault.pending[name] = (keys, b"")  # the verifier a rejoin presents from now on
        said = f"{ev.nick} changed the passphrase of #{name}; you have the new key"
        self._events.append(E.Notice(said, name))

    def _names_for_shares(self, j: F.Joined, now: float) -> None:
        keys, got = self._sharing[j.room]
        if j.offset != len(got):
            return
        got.extend(j.members)
        if len(got) < j.total and j.members:
            self._outbox.appendleft(Request(F.OP_NAMES, j.room, arg=len(got), created=now))
            return
        del self._sharing[j.room]
        self._share_keys(j.room, keys, got, now)

    def _share_keys(self, name: str, keys: PassphraseKeys, members: list[F.MemberInfo], now: float) -> None:
        """Our re-key was taken: each member the relay lists (with its identity key) gets the new
        body key, sealed to that key and under the current body key; then we seal with the new one
        (posts queued after the shares are sequenced after them)."""
        old = self.vault.current(name)
        if name not in self.rooms or old is None:
            return
        for key in sorted({m.key for m in members if m.key}):
            if key == self.identity.public:
                continue
            try:
                share = V.wrap_share(self.identity, old, key, name, keys)
            except CryptoError:
                continue  # not a key a box can be sealed to: that member must type the passphrase
            self._outbox.append(Request(F.OP_KEYSHARE, name, key.hex(), body=share, created=now))
        self.vault.pending[name] = (keys, b"")
        self.vault.add(name, keys.room)
        said = f"the passphrase of #{name} is changed; members in it keep reading"
        self._events.append(E.Notice(said, name))

    def _deliver_inbox(self, now: float) -> None:
        for seq, ev in self.inbox.pop_ready():
            if ev.kind == F.EV_KICKED:  # put out of a room: nick the operator, text "ROOM[ REASON]"
                room, _, reason = ev.text.partition(" ")
                if self.rooms.pop(room, None) is not None:
                    self._room_keys.rings.pop(room, None)
                    self._events.append(E.Kicked(room, ev.nick, reason))
                continue
            if ev.mid:
                if ev.mid in self._seen_mids:
                    continue
                self._seen_mids.add(ev.mid)
            kind = ev.kind
            sent = kind in (F.EV_DM_SENT, F.EV_DM_ACTION_SENT)
            if not sent and not self._dm_verified(ev):
                continue
            action = kind in (F.EV_DM_ACTION, F.EV_DM_ACTION_SENT)
            self._events.append(
                E.MessageReceived(
                    E.direct_room(ev.nick),
                    seq,
                    self.nick if sent else ev.nick,
                    ev.text,
                    ev.ts,
                    action,
                    False,
                    sent,
                    self._own_mids.get(ev.mid, 0) if sent else 0,
                )
            )


def _mode(text: str) -> str:
    """A member's mode as the relay said it ("@", "+"; anything else: none)."""
    return text if text in ("@", "+") else ""


#: what an operator's event does to its target's mode in the members list
_MODE_CHANGES = {
    F.EV_OP: lambda mode: "@",
    F.EV_DEOP: lambda mode: "",
    F.EV_VOICE: lambda mode: mode or "+",
    F.EV_DEVOICE: lambda mode: "" if mode == "+" else mode,
}
_MODERATION_EVENTS = {
    F.EV_BAN: "ban",
    F.EV_UNBAN: "unban",
    F.EV_OP: "op",
    F.EV_DEOP: "deop",
    F.EV_VOICE: "voice",
    F.EV_DEVOICE: "devoice",
    F.EV_INVITE: "invite",
    F.EV_MODE: "mode",
}

_POSTS = (F.OP_POST, F.OP_ACTION, F.OP_DIRECT)
#: room events that are their author's words, signed: shown only once checked (`_verified`)
_SIGNED_KINDS = (F.EV_MSG, F.EV_ACTION, F.EV_TOPIC)
#: room events that are posts: a message id names one (never shown twice)
_POST_KINDS = (F.EV_MSG, F.EV_ACTION)


_SESSIONLESS = (F.Retry, F.Welcome, F.Refuse, F.Reset)
