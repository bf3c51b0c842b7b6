"""The direct peer's sans-IO core: rooms with no relay.

No sockets, no asyncio, no clock: every call takes `now` (monotonic seconds); `wall_offset` (wall
clock minus that clock) stamps messages and events.

How it works (README has the long form):

- **Links.** Each pair of peers talks directly over a *link*, keyed by the address that worked.
  A link starts with the relay's stateless handshake: a padded Hello earns a Retry with an HMAC
  cookie (`cookies.CookieJar`), and only a Hello carrying a valid cookie creates state; before
  that, answers are limited to 3x the bytes received. Hello's `nonce` is a secret per attempt and
  its `node` the sender's node id (random per process); Welcome echoes the nonce and carries the
  answerer's node id (`epoch`) and token. Every later datagram on the link starts with
  `Sid(receiver's token)`; without it only handshake steps tied to a secret count (see
  `_unauthenticated`), so an off-path forger who knows an address cannot speak for a link. A
  new node id on a link is a restarted peer; node ids decide nothing else.
- **Membership by gossip.** A peer in a room sends `PeerJoin(room, ...)` to every linked peer
  (`ask=True`, retried with backoff until answered; a non-member answers `PeerLeave`). A member
  is confirmed only by its own PeerJoin. Members send each other `PeerList` (the other members,
  with the address as the sender sees each one), so joining through any one member links you to
  all of them, and every pair then talks directly. Gossip only names addresses to dial: at a
  bounded rate, unicast only, each knocked at first (`_send_hello`) with knocks paid from the
  gossiping link's credit (`MAX_DIAL_CREDIT`).
- **Streams.** Each sender numbers its own messages per room (`PeerMsg.seq`); the DM stream of a
  pair is room "". The PeerJoin a sender gives a receiver names the first sequence that receiver
  will get (`base`): a new member gets the sender's messages of the last two keepalives (and
  anything still unacknowledged), which closes the race between sending and learning of a new
  member (those sent before the sender knew of the receiver are flagged `history`).
  Receivers deliver each sender's stream in order (`RecvStream`), ack it (cumulative + SACK
  ranges, delayed `ack_delay`), NACK holes (paced per RTT); senders
  retransmit on an RFC 6298 RTO with backoff. Message ids (`mid`) suppress duplicates across
  retransmits, re-links and history. A post is acknowledged (`PostAcknowledged`) once every peer
  that was in the room when it was sent (or joined within the window) acked it, or left; after
  `timing.give_up` it is reported failed (`PostFailed`) but still retransmitted.
- **Order.** A Lamport clock (`lc`) stamps every message: bumped on post, max-merged on receipt
  (stamps from the wire checked against the same sender's earlier ones: `_wire_lc`).
  The room's *final order* is by `(lc, nick)`; it is the same on every peer because the stamp
  travels with the message. Messages are delivered as soon as they are in order for their sender
  (a chat cannot wait for the slowest peer), so `MessageReceived.seq` carries `lc` in direct mode
  and `PostAcknowledged.seq` carries our own message's `lc`: a display that inserts each line at
  its `(seq, nick)` position shows the same order everywhere once traffic settles.
- **Presence.** Every `keepalive` each link refreshes its PeerJoins (nick, away, topic, clock,
  stream top) and gossip; a link that has been quiet longer than 1.5 keepalives is pinged.
  A link silent for `timeout` is dropped and its rooms get `MemberTimedOut`; `PeerLeave` and
  `Bye` give `MemberLeft`. A peer that comes back re-handshakes (a `Reset` answers data from an
  unknown address) and is announced with `MemberJoined` again.
- **History.** A peer joining through a contact (an address given to `add_peer`) asks it for
  history (`PeerJoin.history`) and gets its recent room messages as `PeerHistory`.
- **Limits.** Names and text are checked with `names.py` (bad input counts as malformed and is
  dropped), per-link token buckets, a per-link `RepairBudget` for everything resent, and caps on
  links, rooms, members and buffered data (by bytes). A message is from the link it came over.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections import OrderedDict, deque
from collections.abc import Callable

from . import events as E
from . import frames as F
from .addr import Addr, format_sockaddr, unmapped
from .backend import OutboxFull
from .cookies import AMPLIFICATION, CookieJar, SourceLimiter, hello_padded, limited_reply
from .names import (
    MAX_AWAY_BYTES,
    MAX_TEXT_BYTES,
    MAX_TOPIC_BYTES,
    InputError,
    InvalidName,
    LimitReached,
    Refused,
    canonical_room,
    check_nick,
    check_text,
    is_direct,
    nick_key,
)
from .reliability import (
    AckScheduler,
    DedupeWindow,
    RecvStream,
    RepairBudget,
    RttEstimator,
    SendWindow,
    Timing,
    TokenBucket,
)

HELLO, UP = "hello", "up"

MAX_LINKS = 256
MAX_ROOMS = 50
MAX_MEMBERS = 64
MAX_OUTBOX = 5000
MAX_KEPT = 2048  # own messages kept per stream for retransmission / late members
ASK_TRIES = 8
ACK_EVERY = 32
REPAIR_WINDOW = 24_000  # bytes of repair (retransmits, NACK answers, history) per link per RTT
GOSSIP_ENTRIES = 80  # entries of one PeerList we act on
MSG_RATE = 2000.0  # frames per second per link
MSG_BURST = 4000.0
HELLO_RATE = 20.0
#: Lamport stamps from the wire are checked against what the same sender said before, never
#: against our own clock (so every honest peer decides alike and the order stays one): each later
#: than its previous, at most LC_STEP beyond it (2**64-1 would pin a line or a topic for ever),
#: and no clock ever passes LC_MAX
LC_STEP = 1 << 32
LC_MAX = 1 << 62
TS_SKEW = 86_400.0  # a wire timestamp further than this from our clock is replaced by ours
MAX_RX_BYTES = 256 * 1024  # out-of-order messages buffered per link (all its streams)
RX_ITEM_BYTES = 448  # what one buffered message costs besides its text (measured: tracemalloc)
MAX_RX_ITEMS = 2048  # ... and per stream
#: dialing addresses learned from gossip: at most this many new links a second, and the knocks
#: sent to an address that never answered are paid from the gossiping link's credit, which
#: grows by AMPLIFICATION x the bytes of each gossip datagram it sent us (and is capped)
DIAL_RATE = 20.0
MAX_DIAL_CREDIT = 64 * 1200
SID_ROOM = 24  # a datagram's array header and its Sid frame, with room to spare

_ROOM_KINDS = (F.EV_MSG, F.EV_ACTION)
_DM_KINDS = (F.EV_DM, F.EV_DM_ACTION)


def _rand63() -> int:
    return int.from_bytes(os.urandom(8), "big") >> 1 or 1


class OwnMsg:
    __slots__ = ("created", "done", "failed", "frame", "local_id", "room", "waiting")

    def __init__(self, frame: F.PeerMsg, local_id: int, created: float, waiting: set[int], room: str) -> None:
        self.frame = frame
        self.local_id = local_id
        self.created = created
        self.waiting = waiting
        self.failed = False
        self.done = False
        self.room = room  # as the app names it ("lobby" or "@nick")


class OutStream:
    """Our numbered messages in one room (or in one pair's DM stream)."""

    __slots__ = ("msgs", "name", "seq")

    def __init__(self, name: str) -> None:
        self.name = name
        self.seq = 0
        self.msgs: OrderedDict[int, OwnMsg] = OrderedDict()

    def first(self) -> int:
        return next(iter(self.msgs), self.seq + 1)


class Target(SendWindow):
    """One receiver of one of our streams: its send window, and since when (no RTT sample from a
    message sent before it was a receiver)."""

    __slots__ = ("since",)

    def __init__(self, base: int, now: float) -> None:
        super().__init__(base, probe_at=now)
        self.since = now


class LinkRoom:
    """What one link shares about one room ("" = the pair's DM stream)."""

    __slots__ = (
        "ask_at",
        "ask_tries",
        "gossiped",
        "hidden",
        "history_sent",
        "history_until",
        "history_want",
        "join_lc",
        "join_sent",
        "join_top",
        "lc_last",
        "live_from",
        "member",
        "name",
        "rx",
        "rx_base",
        "since",
        "target",
        "top",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.member = False  # confirmed by their PeerJoin
        self.target: Target | None = None  # our stream -> them
        self.rx: RecvStream | None = None  # their stream -> us
        self.rx_base = 0  # where their stream to us started (earlier = history)
        self.ask_at: float | None = None  # next PeerJoin(ask) while unconfirmed
        self.ask_tries = 0
        self.history_want = False
        self.history_until = 0.0
        self.history_sent = -1e18
        self.top = 0
        self.gossiped = False  # their member list for this room arrived
        #: a member whose nick another member (or we) already has: never announced; the later
        #: joiner of the two refuses itself and leaves (see PeerNode._on_join)
        self.hidden = False
        self.since = 0.0  # when they joined the room (their clock), from their PeerJoin
        #: their clock as their PeerJoins told it: every message after `join_top` is stamped later
        #: than `join_lc` (a sender's clock never goes back), and each later than the one before
        self.join_top = 0
        self.join_lc = 0
        self.lc_last = 0
        #: first sequence of their stream sent after they knew of us: anything before is the join
        #: window (history), decided by what we know and not by their clock
        self.live_from = 0
        self.join_sent = -1e18  # our last PeerJoin answering theirs (answers are paced per RTT)


class Link:
    def __init__(self, addr: Addr, now: float, timing: Timing) -> None:
        self.addr = addr
        self.state = HELLO
        self.node = 0
        self.nick = ""
        self.nick_at = (
            now  # since when it has had this nick (of two links with one nick, the earlier owns it)
        )
        self.away = ""
        self.cookie = b""
        self.hello_tries = 0
        self.hello_at = now
        self.hello_sent = now
        self.started = now
        self.contact = False  # given by add_peer: retried forever, asked for history
        #: Every datagram on an established link starts with Sid(token of its receiver): ours
        #: (`rx_token`, our Hello's nonce, or what our Welcome gave) is checked on everything that
        #: arrives, theirs (`tx_token`) goes on everything we send. An off-path forger who knows
        #: the address (gossip tells it) cannot speak for the link.
        self.rx_token = 0
        self.tx_token = 0
        self.answered = False  # a handshake with this address completed once
        self.knocked = False  # a gossiped address answered our knock (see PeerNode._send_hello)
        self.via: Addr | None = None  # learned from this link's gossip: it pays our Hellos
        self.credit = 0.0  # bytes we may send to addresses its gossip named
        self.repair = RepairBudget(REPAIR_WINDOW, timing.rto_min, now)
        self.fails = 0
        self.last_heard = now
        self.last_sent = now
        self.refresh_at = now
        self.ping_at = 0.0
        self.rtt = RttEstimator(timing)
        self.bucket = TokenBucket(MSG_RATE, MSG_BURST, now)
        self.rooms: dict[str, LinkRoom] = {}
        self.out: list[F.Frame] = []
        self.acks = AckScheduler(timing.ack_delay, ACK_EVERY)
        self.dm_out = OutStream("")
        self.ping_token = 0
        self.ping_sent: dict[int, float] = {}


class Room:
    __slots__ = ("history", "joined_at", "joined_ts", "name", "out", "topic", "topic_key")

    def __init__(self, name: str, history: int, joined_ts: float = 0.0, joined_at: float = 0.0) -> None:
        self.name = name
        self.joined_ts = joined_ts
        self.joined_at = joined_at  # our clock (monotonic)
        self.out = OutStream(name)
        self.topic = ""
        self.topic_key: tuple[int, str] = (0, "")
        self.history: deque[F.PeerMsg] = deque(maxlen=max(1, history))


class PeerNode:
    """One peer. Commands: `add_peer`, `join`, `part`, `post`, `retry`, `set_nick`, `set_topic`,
    `set_away`, `close`; plus the sans-IO surface (`receive_datagram`, `datagrams_to_send`,
    `get_timer`, `handle_timer`, `next_event`)."""

    def __init__(
        self,
        nick: str,
        timing: Timing | None = None,
        wall_offset: float = 0.0,
        history: int = 100,
        *,
        secret: bytes | None = None,
        node: int | None = None,
        addr_map: Callable[[str, int], Addr | None] | None = None,
    ) -> None:
        self.nick = check_nick(nick)
        self.timing = timing or Timing()
        self.wall_offset = wall_offset
        self.history = history
        self.node = node or _rand63()
        #: turns a gossiped (host, port) into an address this node's socket can send to
        self.addr_map = addr_map or (lambda host, port: (host, port))
        self.cookies = CookieJar(secret)
        self.away = ""
        self.lc = 0
        self.rooms: OrderedDict[str, Room] = OrderedDict()
        self.links: dict[Addr, Link] = {}
        self.closed = False
        self._events: deque = deque()
        self._raw: list[tuple[bytes, Addr]] = []
        self._hello_limit = SourceLimiter(HELLO_RATE)
        self._hints: dict[Addr, tuple[float, int]] = {}  # addr -> (not before, failures)
        self._dials = TokenBucket(DIAL_RATE, DIAL_RATE, 0.0)
        self._dgram_size = 0  # of the datagram being handled
        self._seen = DedupeWindow(65536)
        self._next_local = 1
        self._failed: dict[int, tuple[str, str, bool]] = {}
        self._timer_at: float | None = None
        self.stats = dict.fromkeys(
            (
                "datagrams_in",
                "datagrams_out",
                "malformed",
                "unknown_source",
                "unauthenticated",
                "rate_limited",
                "duplicates",
                "retransmits",
                "links_opened",
                "links_timed_out",
            ),
            0,
        )

    # ------------------------------------------------------------------ commands

    def add_peer(self, addr: Addr, now: float) -> None:
        """Contact `addr` (a peer given on the command line): retried until it answers."""
        addr = self._key(addr)
        link = self.links.get(addr)
        if link is None:
            link = self._new_link(addr, now, contact=True)
            if link is None:
                raise LimitReached(f"too many peers ({MAX_LINKS})")
        link.contact = True
        self._schedule(now)

    def join(self, room: str, now: float) -> None:
        name = canonical_room(room)
        if name in self.rooms:
            return
        if len(self.rooms) >= MAX_ROOMS:
            raise LimitReached(f"you are in {len(self.rooms)} rooms already")
        self.rooms[name] = Room(name, self.history, self._ts(now), now)
        self._events.append(E.RoomJoined(name, self.nick, (E.Member(self.nick, self.away),), ""))
        for link in self.links.values():
            lr = link.rooms.setdefault(name, LinkRoom(name))
            lr.history_want = link.contact
            if link.state == UP:
                self._ask(link, lr, now)
        self._schedule(now)

    def part(self, room: str, now: float) -> None:
        name = canonical_room(room)
        if self.rooms.pop(name, None) is None:
            return
        for link in self.links.values():
            lr = link.rooms.pop(name, None)
            if lr is not None and lr.member and link.state == UP:
                link.out.append(F.PeerLeave(name, self.nick, "left"))
        self._events.append(E.RoomLeft(name))
        self._schedule(now)

    def post(self, room: str, text: str, now: float, action: bool = False) -> int:
        check_text(text)
        if self.pending_posts >= MAX_OUTBOX:
            raise OutboxFull(f"{MAX_OUTBOX} messages are waiting for peers; wait a moment")
        if is_direct(room):
            target = check_nick(room[1:])
            link = self._owner(target)
            if link is None:
                raise Refused(f"no one called {target} is here")
            local_id = self._send_msg(
                link.dm_out, "@" + target, [link], F.EV_DM_ACTION if action else F.EV_DM, text, now
            )
        else:
            name = canonical_room(room)
            r = self.rooms.get(name)
            if r is None:
                raise Refused(f"you are not in #{name}")
            local_id = self._send_msg(
                r.out, name, self._members(name), F.EV_ACTION if action else F.EV_MSG, text, now
            )
        self._failed.pop(local_id, None)
        self._schedule(now)
        return local_id

    def retry(self, local_id: int, now: float) -> int:
        entry = self._failed.pop(local_id, None)
        if entry is None:
            raise Refused("that message is not waiting for a retry")
        room, text, action = entry
        return self.post(room, text, now, action)

    def set_nick(self, nick: str, now: float) -> None:
        nick = check_nick(nick)
        if nick == self.nick:
            return
        for name in self.rooms:
            for link in self._members(name):
                if nick_key(link.nick) == nick_key(nick):
                    self._events.append(E.RequestRefused("nick", name, f"nick {nick} is taken in #{name}"))
                    return
        old, self.nick = self.nick, nick
        ts = self._ts(now)
        for name in self.rooms:
            self._events.append(E.NickChanged(name, self.lc, old, nick, ts))
        self._refresh_all(now)

    def set_topic(self, room: str, topic: str, now: float) -> None:
        name = canonical_room(room)
        check_text(topic, MAX_TOPIC_BYTES, "topic")
        r = self.rooms.get(name)
        if r is None:
            raise Refused(f"you are not in #{name}")
        self._tick()
        r.topic, r.topic_key = topic, (self.lc, self.nick)
        self._events.append(E.TopicChanged(name, self.lc, self.nick, topic, self._ts(now)))
        self._refresh_all(now)

    def set_away(self, text: str, now: float) -> None:
        check_text(text, MAX_AWAY_BYTES, "away message")
        self.away = text
        ts = self._ts(now)
        for name in self.rooms:
            self._events.append(E.AwayChanged(name, self.lc, self.nick, text, ts))
        self._refresh_all(now)

    def close(self, now: float) -> None:
        """Say goodbye to every peer (twice: a lost Bye only delays the news to a timeout)."""
        if self.closed:
            return
        for link in self.links.values():
            if link.state == UP:
                link.out.append(F.Bye("quit"))
        out = self.datagrams_to_send(now)
        self._raw.extend(out + out)
        self.closed = True
        self._timer_at = None

    # ------------------------------------------------------------------ queries

    @property
    def pending_posts(self) -> int:
        n = 0
        for r in self.rooms.values():
            n += sum(1 for m in r.out.msgs.values() if not m.done)
        for link in self.links.values():
            n += sum(1 for m in link.dm_out.msgs.values() if not m.done)
        return n

    def members(self, room: str) -> list[str]:
        """Nicks of the confirmed members of `room`, us included."""
        name = canonical_room(room)
        shown = [lk.nick for lk in self._members(name) if not lk.rooms[name].hidden]
        return sorted([self.nick, *shown], key=str.casefold)

    @property
    def peer_count(self) -> int:
        return sum(1 for lk in self.links.values() if lk.state == UP)

    def settled(self) -> bool:
        """No handshake under way and no room question unanswered: membership has converged
        as far as this node can tell."""
        for link in self.links.values():
            if link.state == HELLO and ((link.contact and link.fails == 0) or not link.contact):
                return False
            if link.state == UP:
                for lr in link.rooms.values():
                    if not lr.member and lr.ask_at is not None:
                        return False
                    if lr.member and lr.name and not lr.gossiped:
                        return False
        return True

    # ------------------------------------------------------------------ sans-IO surface

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        if self.closed:
            return
        st = self.stats
        st["datagrams_in"] += 1
        try:
            frames = F.decode(data)
        except F.FrameError:
            st["malformed"] += 1
            return
        addr = self._key(addr)
        link = self.links.get(addr)
        if link is None:
            self._from_unknown(frames, addr, len(data), now)
            self._schedule(now)
            return
        first = frames[0]
        if type(first) is not F.Sid:
            # Without the link's token only handshake frames count, each tied to what only the
            # real peer knows (a cookie, our nonce, our token): see _unauthenticated.
            try:
                self._unauthenticated(link, frames, len(data), now)
            except (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError):
                st["malformed"] += 1
            self._schedule(now)
            return
        if not link.rx_token or first.token != link.rx_token:
            # forged, or from a peer that lost our link (restarted, timed us out, or we started
            # over): tell it, echoing its token, so that only the real sender believes the Reset
            st["unauthenticated"] += 1
            if self._hello_limit.allow(addr, now) and not any(
                isinstance(f, (F.Bye, F.Reset)) for f in frames
            ):
                self._reply_limited(addr, len(data), [F.Reset(first.token)])
            self._schedule(now)
            return
        self._dgram_size = len(data)
        for frame in frames[1:]:
            try:
                self._handle(link, frame, now)
            except (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError):
                st["malformed"] += 1
            if self.links.get(addr) is not link:
                break
        self._schedule(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out, self._raw = self._raw, []
        if self.closed:
            self.stats["datagrams_out"] += len(out)
            return out
        for link in self.links.values():
            frames = link.out
            if link.state == UP and link.acks.due(now):
                frames.extend(self._acks(link, now))
            if not frames:
                continue
            link.out = []
            link.last_sent = now
            sid = F.Sid(link.tx_token) if link.state == UP and link.tx_token else None
            for d in F.pack(frames, prefix=sid):
                out.append((d, link.addr))
        self.stats["datagrams_out"] += len(out)
        self._schedule(now)
        return out

    def get_timer(self) -> float | None:
        return self._timer_at

    def handle_timer(self, now: float) -> None:
        if self.closed:
            self._timer_at = None
            return
        t = self.timing
        for link in list(self.links.values()):
            if link.state == HELLO:
                self._tick_hello(link, now)
                continue
            if now >= link.last_heard + t.timeout:
                self.stats["links_timed_out"] += 1
                self._drop(link, now, timed_out=True)
                continue
            if now >= link.refresh_at:
                self._refresh(link, now)
            if now >= link.last_heard + 1.5 * t.keepalive and now >= link.ping_at:
                link.ping_token += 1
                link.ping_sent = {link.ping_token: now}
                link.out.append(F.Ping(link.ping_token))
                link.ping_at = now + max(link.rtt.rto, t.keepalive / 4)
            for name, lr in link.rooms.items():
                if not lr.member:
                    if lr.ask_at is not None and now >= lr.ask_at:
                        self._ask(link, lr, now)
                    continue
                tg = lr.target
                out = self._stream(link, name)
                if tg is not None and out is not None and tg.acked < out.seq and now >= tg.probe_at:
                    self._probe(link, lr, out, now)
        self._give_up(now)
        self._prune(now)
        self._hello_limit.prune(now)
        self._timer_at = None
        self._schedule(now)

    def next_event(self):
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ timers

    def _schedule(self, now: float) -> None:
        if self.closed:
            self._timer_at = None
            return
        t = self.timing
        at = None

        def soon(x: float | None) -> None:
            nonlocal at
            if x is not None and (at is None or x < at):
                at = x

        for link in self.links.values():
            if link.state == HELLO:
                soon(link.hello_at)
                continue
            soon(link.last_heard + t.timeout)
            soon(link.refresh_at)
            soon(max(link.last_heard + 1.5 * t.keepalive, link.ping_at))
            soon(link.acks.next_at(now))
            for name, lr in link.rooms.items():
                if not lr.member:
                    soon(lr.ask_at)
                    continue
                tg = lr.target
                if tg is not None:
                    out = self._stream(link, name)
                    if out is not None and tg.acked < out.seq:
                        soon(tg.probe_at)
            for m in link.dm_out.msgs.values():
                if not m.done and not m.failed:
                    soon(m.created + t.give_up)
                    break
        for r in self.rooms.values():
            for m in r.out.msgs.values():
                if not m.done and not m.failed:
                    soon(m.created + t.give_up)
                    break
        if at is not None and at < now:
            at = now
        self._timer_at = at

    # ------------------------------------------------------------------ helpers

    def _ts(self, now: float) -> float:
        return round(now + self.wall_offset, 3)

    @staticmethod
    def _key(addr: Addr) -> Addr:
        return (addr[0], addr[1])

    def _members(self, name: str) -> list[Link]:
        return [
            lk
            for lk in self.links.values()
            if lk.state == UP and (lr := lk.rooms.get(name)) is not None and lr.member
        ]

    def _stream(self, link: Link, name: str) -> OutStream | None:
        if name == "":
            return link.dm_out
        r = self.rooms.get(name)
        return r.out if r is not None else None

    def _bump(self, lc: int) -> None:
        if lc > self.lc:
            self.lc = min(lc, LC_MAX)

    def _tick(self) -> int:
        self.lc = min(self.lc + 1, LC_MAX)
        return self.lc

    def _new_link(
        self, addr: Addr, now: float, contact: bool = False, via: Addr | None = None
    ) -> Link | None:
        if len(self.links) >= MAX_LINKS:
            return None
        link = Link(addr, now, self.timing)
        link.contact = contact
        link.via = via
        self.links[addr] = link
        for name in self.rooms:
            link.rooms[name] = LinkRoom(name)
        self._send_hello(link, now)
        return link

    def _send_hello(self, link: Link, now: float) -> None:
        if not link.rx_token:
            link.rx_token = _rand63()  # this attempt's secret: their Welcome must come with it
        if not link.contact and not link.answered and not link.knocked:
            # An address only gossip named: first a knock, a bare Sid of our nonce that any peer
            # answers with a Reset echoing it (the address hosts a willing peer: now the padded
            # Hello). Knocks are paid from the gossiping link's credit (see MAX_DIAL_CREDIT), so
            # gossip cannot make us send much to addresses that never answer.
            payer = self.links.get(link.via) if link.via is not None else None
            knock = F.encode([F.Sid(link.rx_token)])
            if payer is None or payer.credit < len(knock):
                link.hello_at = now + max(link.rtt.rto, self.timing.keepalive / 2)
                return
            payer.credit -= len(knock)
            self._raw.append((knock, link.addr))
        else:
            link.out.append(
                F.padded_hello(
                    version=F.VERSION, nick=self.nick, cookie=link.cookie, nonce=link.rx_token, node=self.node
                )
            )
        link.hello_tries += 1
        link.hello_sent = now
        link.hello_at = now + self.timing.hello_backoff(link.hello_tries)

    def _rehandshake(self, link: Link, now: float) -> None:
        link.state = HELLO
        link.cookie = b""
        link.rx_token = link.tx_token = 0
        link.hello_tries = 0
        link.started = now
        link.out = []
        link.acks.clear()
        self._send_hello(link, now)

    def _tick_hello(self, link: Link, now: float) -> None:
        t = self.timing
        if now < link.hello_at:
            return
        if now < link.started + t.timeout:
            self._send_hello(link, now)
            return
        # no answer: give up on this attempt
        if any(lr.member for lr in link.rooms.values()):
            self._drop(link, now, timed_out=True)
            if not link.contact:
                return
            link = self.links.get(link.addr) or link
        link.fails += 1
        if link.contact:
            wait = t.reconnect_backoff(link.fails)
            link.state = HELLO
            link.cookie = b""
            link.rx_token = link.tx_token = 0
            link.hello_tries = 0
            link.started = now + wait
            link.hello_at = now + wait
            link.out = []
            self.links[link.addr] = link
            if now >= link.hello_at:
                self._send_hello(link, now)
        else:
            self.links.pop(link.addr, None)
            _, fails = self._hints.get(link.addr, (0.0, 0))
            self._hints[link.addr] = (now + min(60.0, t.timeout * 2 ** min(fails, 6)), fails + 1)
            if len(self._hints) > 4096:
                self._hints.pop(next(iter(self._hints)))

    def _reply_limited(self, addr: Addr, received: int, frames: list[F.Frame]) -> None:
        data = limited_reply(frames, received)  # before validation: at most 3x what came in
        if data is not None:
            self._raw.append((data, addr))

    # ------------------------------------------------------------------ handshake

    def _from_unknown(self, frames: list[F.Frame], addr: Addr, size: int, now: float) -> None:
        hello = frames[0]
        if not isinstance(hello, F.Hello):
            self.stats["unknown_source"] += 1
            # a peer of a link we do not have (we restarted, or dropped it): tell it, with the
            # token it sent, so that only the real owner of that link believes us
            if (
                type(hello) is F.Sid
                and self._hello_limit.allow(addr, now)
                and not any(isinstance(f, (F.Bye, F.Reset, F.Refuse, F.Retry, F.Welcome)) for f in frames)
            ):
                self._reply_limited(addr, size, [F.Reset(hello.token)])
            return
        if not hello_padded(size):  # an unpadded Hello could buy a Retry bigger than itself
            self.stats["unpadded"] = self.stats.get("unpadded", 0) + 1
            return
        if not self._hello_limit.allow(addr, now):
            self.stats["rate_limited"] += 1
            return
        if not self.cookies.check(hello.cookie, addr, now):
            self._reply_limited(addr, size, [F.Retry(self.cookies.make(addr, now), F.VERSION)])
            return
        # validated from here on
        refusal = self._check_hello(hello, addr)
        if refusal is None and len(self.links) >= MAX_LINKS:
            refusal = "too many peers here"
        if refusal is not None:
            self._reply_limited(addr, size, [F.Refuse(refusal, list(F.SUPPORTED_VERSIONS), hello.nonce)])
            return
        if hello.node == self.node:
            return  # ourselves, by another address
        link = Link(addr, now, self.timing)
        link.rx_token = _rand63()
        self.links[addr] = link
        for name in self.rooms:
            link.rooms[name] = LinkRoom(name)
        self._establish(link, hello.node, hello.nick, now, hello.nonce)
        link.out.insert(0, self._welcome(link))

    def _check_hello(self, hello: F.Hello, addr: Addr) -> str | None:
        if hello.version not in F.SUPPORTED_VERSIONS:
            return f"unsupported protocol version {hello.version}"
        try:
            check_nick(hello.nick)
        except InputError as exc:
            return f"bad nick: {exc}"
        if hello.node <= 0 or hello.nonce <= 0:
            return "bad node id"
        # Node ids are claims, so a node id alone decides nothing (refusing a second link with
        # one would let a newcomer copying an id lock its owner out). The same id *and* nick at
        # another address is the same peer reached twice (or one whose nick clash hides it anyway).
        if self._linked_elsewhere(hello.node, hello.nick, addr):
            return "already linked by another address"
        return None

    def _linked_elsewhere(self, node: int, nick: str, addr: Addr | None) -> bool:
        key = nick_key(nick)
        return any(
            lk.state == UP and lk.node == node and lk.addr != addr and nick_key(lk.nick) == key
            for lk in self.links.values()
        )

    def _welcome(self, link: Link) -> F.Welcome:
        t = self.timing
        ka, to = int(t.keepalive * 1000), int(t.timeout * 1000)
        return F.Welcome(
            version=F.VERSION,
            nick=self.nick,
            epoch=self.node,
            keepalive_ms=ka,
            timeout_ms=to,
            token=link.rx_token,
            nonce=link.tx_token,
        )

    def _establish(self, link: Link, node: int, nick: str, now: float, tx_token: int) -> None:
        if link.node and link.node != node:
            self._forget(link, now, "restarted")
        first = not link.node
        link.node = node
        link.tx_token = tx_token
        link.answered = True
        link.out = [f for f in link.out if type(f) is not F.Hello]
        link.state = UP
        link.fails = 0
        link.last_heard = now
        link.refresh_at = now + self.timing.keepalive
        if first:
            link.nick, link.nick_at = nick, now
            self.stats["links_opened"] += 1
        elif nick != link.nick:
            self._renamed(link, nick, now)
        self._hints.pop(link.addr, None)
        link.rooms.setdefault("", LinkRoom(""))
        for name in [*list(self.rooms), ""]:
            lr = link.rooms.setdefault(name, LinkRoom(name))
            lr.target = None  # a fresh base for them (they may have lost our stream)
            if lr.member:
                self._send_join(link, lr, now, ask=True)
            else:
                lr.history_want = lr.history_want or (link.contact and name != "")
                lr.ask_tries = 0
                self._ask(link, lr, now)

    def _forget(self, link: Link, now: float, reason: str) -> None:
        """The node behind `link` is gone (left, timed out, restarted): tell the rooms."""
        ts = self._ts(now)
        gone: list[str] = []
        for name, lr in link.rooms.items():
            if lr.member and name and not lr.hidden:
                if reason == "timeout":
                    self._events.append(E.MemberTimedOut(name, self.lc, link.nick, ts))
                else:
                    self._events.append(E.MemberLeft(name, self.lc, link.nick, ts, reason))
                gone.append(name)
            if lr.member:
                out = self._stream(link, name)
                if out is not None:
                    self._unwait(out, link.node, now)
        # direct messages to a node that is gone cannot be delivered any more
        for m in link.dm_out.msgs.values():
            if not m.done and not m.failed:
                m.failed = True
                self._failed[m.local_id] = (m.room, m.frame.text, m.frame.kind == F.EV_DM_ACTION)
                self._events.append(E.PostFailed(m.local_id, m.room, f"{link.nick} is gone"))
        link.rooms = {name: LinkRoom(name) for name in self.rooms}
        link.dm_out = OutStream("")
        link.node = 0
        for name in gone:
            self._unhide(name, link.nick, now)

    def _drop(self, link: Link, now: float, timed_out: bool = False, reason: str = "") -> None:
        self._forget(link, now, "timeout" if timed_out else (reason or "quit"))
        if link.contact and not self.closed:
            self._rehandshake(link, now)
            link.fails = 1
        else:
            self.links.pop(link.addr, None)

    # ------------------------------------------------------------------ frames from links

    def _handle(self, link: Link, frame: F.Frame, now: float) -> None:
        """A frame of a datagram that carried our token for this link."""
        tp = type(frame)
        if link.state == HELLO:
            # the answer to our Hello: it came with our nonce (the Sid), so it is theirs
            if (
                tp is F.Welcome
                and frame.version in F.SUPPORTED_VERSIONS
                and frame.epoch > 0
                and frame.epoch != self.node
                and frame.token > 0
                and frame.nonce == link.rx_token
            ):
                check_nick(frame.nick)
                sample = link.hello_tries == 1
                self._establish(link, frame.epoch, frame.nick, now, frame.token)
                if sample:
                    link.rtt.sample(now - link.hello_sent)
            return
        link.last_heard = now
        if tp is F.PeerMsg:
            self._on_msg(link, frame, now)
        elif tp is F.PeerAck:
            self._on_ack(link, frame, now)
        elif tp is F.Nack:
            self._on_nack(link, frame, now)
        elif tp is F.PeerJoin:
            self._on_join(link, frame, now)
        elif tp is F.PeerList:
            self._on_list(link, frame, now)
        elif tp is F.PeerLeave:
            self._on_leave(link, frame, now)
        elif tp is F.PeerHistory:
            self._on_history(link, frame, now)
        elif tp is F.Ping:
            link.out.append(F.Pong(frame.token))
        elif tp is F.Pong:
            sent = link.ping_sent.pop(frame.token, None)
            if sent is not None:
                link.rtt.sample(now - sent)
        elif tp is F.Welcome:
            # both of us dialed at once and they answered our Hello too: their token may be new
            if frame.nonce == link.rx_token and frame.epoch == link.node and frame.token > 0:
                link.tx_token = frame.token
        elif tp is F.Bye:
            self._drop(link, now, reason=frame.reason[:200] or "quit")

    def _unauthenticated(self, link: Link, frames: list[F.Frame], size: int, now: float) -> None:
        """A datagram from a linked address without the link's token: only the handshake counts,
        each step tied to something an off-path forger cannot know."""
        for frame in frames:
            tp = type(frame)
            if tp is F.Hello:
                self._hello_on_link(link, frame, size, now)  # needs a valid cookie
            elif tp is F.Retry and link.state == HELLO:
                if frame.cookie and len(frame.cookie) <= 64 and frame.cookie != link.cookie:
                    link.cookie = frame.cookie
                    link.hello_tries = 0
                    self._send_hello(link, now)
            elif tp is F.Refuse and link.state == HELLO and link.rx_token and frame.nonce == link.rx_token:
                reason = frame.reason[:200]
                self._events.append(E.Notice(f"peer {format_sockaddr(link.addr)} refused: {reason}"))
                self.links.pop(link.addr, None)
                return
            elif tp is F.Reset and link.state == HELLO and link.rx_token and frame.token == link.rx_token:
                if not link.knocked:  # our knock was answered: a peer lives there
                    link.knocked = True
                    link.hello_tries = 0
                    self._send_hello(link, now)
                return
            elif tp is F.Reset and link.state == UP and link.tx_token and frame.token == link.tx_token:
                # they have no state for our link (restarted, or timed us out), and it echoes the
                # token only they were sent: handshake again quietly
                self._rehandshake(link, now)
                return
            else:
                self.stats["unauthenticated"] += 1

    def _hello_on_link(self, link: Link, hello: F.Hello, size: int, now: float) -> None:
        if not self.cookies.check(hello.cookie, link.addr, now):
            if self._hello_limit.allow(link.addr, now):
                self._reply_limited(link.addr, size, [F.Retry(self.cookies.make(link.addr, now), F.VERSION)])
            return
        if self._check_hello(hello, link.addr) is not None or hello.node == self.node:
            return
        if link.state == UP and hello.nonce == link.tx_token:
            link.out.append(self._welcome(link))  # a retransmitted Hello: our Welcome was lost
            return
        # A new attempt by the address's owner (the cookie proves it receives there): it
        # restarted, lost our link, or dialed us while we dialed it. Our token stays ours (in a
        # simultaneous open it is the nonce of our own Hello, so both answers agree).
        if not link.rx_token:
            link.rx_token = _rand63()
        link.started = now
        self._establish(link, hello.node, hello.nick, now, hello.nonce)
        link.out.insert(0, self._welcome(link))

    def _renamed(self, link: Link, nick: str, now: float) -> None:
        old, link.nick, link.nick_at = link.nick, nick, now
        ts = self._ts(now)
        for name, lr in link.rooms.items():
            if name and lr.member:
                taken = self._taken(name, nick, link)
                if lr.hidden:
                    if not taken:  # it took another nick: now it can be announced
                        lr.hidden = False
                        self._events.append(E.MemberJoined(name, self.lc, nick, ts))
                elif taken:
                    # renamed to a nick someone here has (a race, or an impersonation): from now
                    # on it says nothing here until one of the two goes or renames
                    lr.hidden = True
                    self._events.append(E.MemberLeft(name, self.lc, old, ts, f"took the nick {nick}"))
                    self._unhide(name, old, now)
                else:
                    self._events.append(E.NickChanged(name, self.lc, old, nick, ts))

    def _owner(self, nick: str) -> Link | None:
        """The link that has `nick`: of two with one nick, the one that had it first."""
        key = nick_key(nick)
        links = [lk for lk in self.links.values() if lk.state == UP and nick_key(lk.nick) == key]
        return min(links, key=lambda lk: lk.nick_at, default=None)

    def _taken(self, name: str, nick: str, link: Link) -> bool:
        """Is `nick` ours, or a shown member's other than `link`, in room `name`?"""
        key = nick_key(nick)
        if key == nick_key(self.nick):
            return True
        return any(
            other is not link and nick_key(other.nick) == key and not other.rooms[name].hidden
            for other in self._members(name)
        )

    def _unhide(self, name: str, nick: str, now: float) -> None:
        """`nick` left `name`: a member hidden for having the same nick can be announced now."""
        if nick_key(nick) == nick_key(self.nick):
            return
        for other in self._members(name):
            lr = other.rooms[name]
            if lr.hidden and nick_key(other.nick) == nick_key(nick):
                lr.hidden = False
                self._events.append(E.MemberJoined(name, self.lc, other.nick, self._ts(now)))
                return

    # ------------------------------------------------------------------ membership

    def _join_frame(self, link: Link, lr: LinkRoom, now: float, ask: bool) -> F.PeerJoin | None:
        name = lr.name
        out = self._stream(link, name)
        if out is None:
            return None
        if lr.target is None:
            lr.target = Target(self._base_for(out, link.node, now), now)
        r = self.rooms.get(name)
        topic, (tlc, tby) = (r.topic, r.topic_key) if r is not None else ("", (0, ""))
        since = r.joined_ts if r is not None else 0.0
        return F.PeerJoin(
            room=name,
            nick=self.nick,
            node=self.node,
            base=lr.target.base,
            top=out.seq,
            lc=self.lc,
            away=self.away,
            topic=topic,
            topic_lc=tlc,
            topic_by=tby,
            ask=ask,
            history=lr.history_want,
            since=since,
        )

    def _send_join(self, link: Link, lr: LinkRoom, now: float, ask: bool) -> None:
        frame = self._join_frame(link, lr, now, ask)
        if frame is not None:
            link.out.append(frame)

    def _ask(self, link: Link, lr: LinkRoom, now: float) -> None:
        if lr.ask_tries >= ASK_TRIES:
            lr.ask_at = None
            return
        lr.ask_tries += 1
        lr.ask_at = now + link.rtt.backoff(lr.ask_tries)
        self._send_join(link, lr, now, ask=True)

    def _base_for(self, out: OutStream, node: int, now: float) -> int:
        """First of our messages a (re)joining receiver gets: anything still waiting for it, and
        everything sent within the last two keepalives (it may have joined while we sent them,
        before gossip told us about it)."""
        since = now - 2 * self.timing.keepalive
        for seq, m in out.msgs.items():
            if m.created >= since or (not m.done and node in m.waiting):
                return seq
        return out.seq + 1

    def _refresh(self, link: Link, now: float) -> None:
        link.refresh_at = now + self.timing.keepalive
        for name, lr in link.rooms.items():
            if lr.member:
                self._send_join(link, lr, now, ask=False)
                if name:
                    link.out.extend(self._gossip(name, link))

    def _refresh_all(self, now: float) -> None:
        for link in self.links.values():
            if link.state == UP:
                for lr in link.rooms.values():
                    if lr.member:
                        self._send_join(link, lr, now, ask=False)
        self._schedule(now)

    def _gossip(self, name: str, to: Link, only: Link | None = None) -> list[F.Frame]:
        links = [only] if only is not None else self._members(name)
        entries, ids = [], []
        for lk in links:
            if lk is to or not lk.node:
                continue
            host = unmapped(str(lk.addr[0]))
            entries.append((lk.nick, host, int(lk.addr[1])))
            ids.append(lk.node)
        if not entries and only is None:
            return [F.PeerList(name, [], [])]  # "nobody else": lets the receiver know it is settled
        # chunked by encoded size (IPv6 addresses and long nicks), each one datagram with its Sid
        limit = F.MAX_DATAGRAM - SID_ROOM - F.size_of(F.PeerList(name, [], []))
        out: list[F.Frame] = []
        start, size = 0, 0
        for i, (entry, node) in enumerate(zip(entries, ids, strict=True)):
            n = F.size_of(entry) + F.size_of(node) + 6  # the two lists' headers may grow
            if i > start and size + n > limit:
                out.append(F.PeerList(name, entries[start:i], ids[start:i]))
                start, size = i, 0
            size += n
        out.append(F.PeerList(name, entries[start:], ids[start:]))
        return out

    def _on_join(self, link: Link, j: F.PeerJoin, now: float) -> None:
        """Their PeerJoin: who they are in the room, their stream's window, their clock, away
        text and topic; the first one confirms them as a member."""
        name = j.room
        nick = self._checked_join(link, j)
        if name and name not in self.rooms:
            if j.ask:
                link.out.append(F.PeerLeave(room=name, nick=self.nick, reason="not here"))
            return
        lr0 = link.rooms.get(name)
        prev = max(lr0.join_lc, lr0.lc_last) if lr0 is not None else 0
        jlc = min(j.lc, prev + LC_STEP, LC_MAX)  # their clock jumps no further than that
        self._bump(jlc)
        if nick != link.nick:
            self._renamed(link, nick, now)
        lr = link.rooms.get(name)
        if lr is None:
            lr = link.rooms[name] = LinkRoom(name)
        first = not lr.member
        if first and name and len(self._members(name)) >= MAX_MEMBERS:
            link.out.append(F.PeerLeave(room=name, nick=self.nick, reason="room full"))
            return
        self._their_window(link, lr, j, jlc, now)
        self._their_away(link, j.away, first, now)
        r = self.rooms.get(name)
        if r is not None and 0 < j.topic_lc <= jlc and self._topic_ok(r, link, j):
            check_nick(j.topic_by)
            r.topic, r.topic_key = j.topic, (j.topic_lc, j.topic_by)
            self._events.append(E.TopicChanged(name, j.topic_lc, j.topic_by, j.topic, self._ts(now)))
        if first and not self._confirm(link, lr, j.since, now):
            return  # we were the later of two with one nick, and left
        if first or (j.ask and now >= lr.join_sent + link.rtt.pace):
            lr.join_sent = now
            self._send_join(link, lr, now, ask=False)
        if j.history and name and r is not None and now >= lr.history_sent + link.rtt.pace:
            lr.history_sent = now
            self._send_history(link, r, now)

    @staticmethod
    def _checked_join(link: Link, j: F.PeerJoin) -> str:
        """The PeerJoin's nick, once every field is checked (raises on anything hostile)."""
        if j.room and canonical_room(j.room) != j.room:
            raise InvalidName("bad room")
        nick = check_nick(j.nick)
        check_text(j.away, MAX_AWAY_BYTES)
        check_text(j.topic, MAX_TOPIC_BYTES)
        if j.node != link.node or not (1 <= j.base < 1 << 62) or not (0 <= j.top < 1 << 62):
            raise ValueError("inconsistent PeerJoin")
        if not (0 <= j.lc < 1 << 63) or not math.isfinite(j.since):
            raise ValueError("bad clock in PeerJoin")
        return nick

    def _their_window(self, link: Link, lr: LinkRoom, j: F.PeerJoin, jlc: int, now: float) -> None:
        """Their stream to us: where it starts (or skips to), how far it goes, their clock then."""
        name = lr.name
        if lr.rx is None:
            lr.rx = RecvStream(j.base, MAX_RX_ITEMS, MAX_RX_BYTES)
            lr.rx_base = j.base
            # what they sent before they knew of us is the join window: history, if we are new
            # in the room; for a peer that comes back to a room we were in, it is live
            r0 = self.rooms.get(name)
            recent = r0 is not None and now - r0.joined_at < self.timing.timeout
            lr.live_from = j.top + 1 if name and recent else j.base
        elif j.base > lr.rx.next + MAX_KEPT or j.top > lr.rx.next + 8 * MAX_KEPT:
            raise ValueError("PeerJoin skips too far")  # forged or broken: never jump blindly
        elif j.base > lr.rx.next:
            lr.rx.skip_to(j.base)
            self._deliver(link, lr, now)
        if j.top > lr.top:
            lr.top = j.top
        if j.top >= lr.join_top:
            lr.join_top, lr.join_lc = j.top, max(lr.join_lc, jlc)
        if lr.top >= lr.rx.next:
            self._want_ack(link, name, now, urgent=True)

    def _their_away(self, link: Link, away: str, first: bool, now: float) -> None:
        if away == link.away:
            return
        link.away = away
        if not first:
            ts = self._ts(now)
            for n, other in link.rooms.items():
                if n and other.member:
                    self._events.append(E.AwayChanged(n, self.lc, link.nick, away, ts))

    def _confirm(self, link: Link, lr: LinkRoom, since: float, now: float) -> bool:
        """Their first PeerJoin in the room: a member now. Our waiting messages wait for them
        too; the room hears of them (unless their nick is taken) and they get our member list.
        False if it is we who must leave (see `_nick_clash`)."""
        name = lr.name
        lr.member = True
        lr.ask_at = None
        if lr.target is None:
            self._join_frame(link, lr, now, ask=False)
        tg = lr.target
        out = self._stream(link, name)
        for seq, m in out.msgs.items():
            if seq >= tg.base and not m.done:
                m.waiting.add(link.node)
        tg.probe_at = now
        if not name:
            return True
        lr.since = since
        if self._nick_clash(link, lr, now):
            return False
        if not lr.hidden:
            self._events.append(E.MemberJoined(name, self.lc, link.nick, self._ts(now)))
            if link.away:
                self._events.append(E.AwayChanged(name, self.lc, link.nick, link.away, self._ts(now)))
        link.out.extend(self._gossip(name, link))
        for other in self._members(name):
            if other is not link:
                other.out.extend(self._gossip(name, other, only=link))
        return True

    def _nick_clash(self, link: Link, lr: LinkRoom, now: float) -> bool:
        """One nick, two peers: the later joiner of the room is refused, as a relay refuses a
        taken nick, and nobody ever announces the second one, so no screen shows two people as
        one. Their `since` is their claim: it counts only while we are new in the room
        ourselves; one who appears long after we joined came later, whatever it says. True if
        we are the later one (we leave the room); otherwise the new member may be hidden."""
        name = lr.name
        r = self.rooms.get(name)
        if nick_key(link.nick) == nick_key(self.nick) and r is not None:
            settled_here = now - r.joined_at >= self.timing.timeout
            if not settled_here and (r.joined_ts, self.node) > (lr.since, link.node):  # we came later
                self.part(name, now)
                self._events.append(E.RequestRefused("join", name, f"nick {self.nick} is already in #{name}"))
                return True
            lr.hidden = True
        elif self._taken(name, link.nick, link):
            lr.hidden = True  # one of the two will leave; announced then if it stays
        return False

    def _send_history(self, link: Link, r: Room, now: float) -> None:
        """Our recent messages of the room, as far as the link's repair budget allows."""
        for frame in self._history_frames(r):
            if not link.repair.take(F.size_of(frame), now, link.rtt.pace):
                break
            link.out.append(frame)

    def _topic_ok(self, r: Room, link: Link, j: F.PeerJoin) -> bool:
        """Does the topic in `j` replace ours? A newer stamp from its setter itself, or one relayed
        by another member while we know none; and a setter's own word about the topic it set
        replaces whatever others said it set (gossip never overrides a peer about itself)."""
        key = (j.topic_lc, j.topic_by)
        own = nick_key(j.topic_by) == nick_key(link.nick)
        if own and nick_key(r.topic_key[1]) == nick_key(link.nick):
            return key != r.topic_key or j.topic != r.topic
        if key <= r.topic_key:
            return False
        return own or r.topic_key[0] == 0

    def _on_list(self, link: Link, pl: F.PeerList, now: float) -> None:
        name = pl.room
        lr = link.rooms.get(name)
        if not name or name not in self.rooms or lr is None or not lr.member:
            return
        lr.gossiped = True
        # Gossip names addresses to dial: the bytes we send to those that never answer are paid
        # from this link's credit, earned by the gossip it sends (AMPLIFICATION x its bytes), and
        # new links open at a bounded rate. Node ids in gossip are claims about others: they
        # decide nothing (an address is dialed, the handshake says who is there).
        if pl.peers and self._dgram_size:
            link.credit = min(MAX_DIAL_CREDIT, link.credit + AMPLIFICATION * self._dgram_size)
            self._dgram_size = 0  # one datagram earns once, whatever it carries
        for i, entry in enumerate(pl.peers[:GOSSIP_ENTRIES]):
            nick, host, port = entry
            if not (0 < port < 65536) or not isinstance(host, str) or len(host) > 64 or not _dialable(host):
                continue
            if i < len(pl.ids) and self._linked_elsewhere(pl.ids[i], nick, None):
                continue  # someone we have, by another address (its id and nick both match)
            try:
                addr = self.addr_map(host, port)
            except (ValueError, TypeError, OSError):
                addr = None
            if addr is None:
                continue
            addr = self._key(addr)
            existing = self.links.get(addr)
            if existing is not None:
                continue
            hint = self._hints.get(addr)
            if hint is not None and now < hint[0]:
                continue
            if not self._dials.take(now):
                break  # the rest waits for the next gossip
            self._new_link(addr, now, via=link.addr)

    def _on_leave(self, link: Link, pl: F.PeerLeave, now: float) -> None:
        name = pl.room
        lr = link.rooms.get(name)
        if not name or lr is None:
            return
        if lr.member:
            if not lr.hidden:
                self._events.append(E.MemberLeft(name, self.lc, link.nick, self._ts(now), pl.reason[:200]))
                lr.member = False
                self._unhide(name, link.nick, now)
            r = self.rooms.get(name)
            if r is not None:
                self._unwait(r.out, link.node, now)
        if name in self.rooms:
            link.rooms[name] = fresh = LinkRoom(name)  # they may join again later
            fresh.ask_at = None
        else:
            link.rooms.pop(name, None)

    # ------------------------------------------------------------------ our messages

    def _send_msg(
        self, out: OutStream, app_room: str, targets: list[Link], kind: int, text: str, now: float
    ) -> int:
        self._tick()
        out.seq += 1
        mid = _rand63()
        frame = F.PeerMsg(
            room=out.name,
            seq=out.seq,
            lc=self.lc,
            kind=kind,
            nick=self.nick,
            text=text,
            ts=self._ts(now),
            mid=mid,
        )
        local_id = self._next_local
        self._next_local += 1
        waiting = set()
        for link in targets:
            lr = link.rooms.get(out.name)
            if lr is None or lr.target is None:
                continue
            waiting.add(link.node)
            tg = lr.target
            if tg.acked >= out.seq - 1:  # was caught up: this starts its retransmission clock
                tg.probe_at = now + link.rtt.rto
                tg.attempts = 0
            link.out.append(frame)
        msg = OwnMsg(frame, local_id, now, waiting, app_room)
        out.msgs[out.seq] = msg
        self._seen.add(mid)
        if out.name:
            self.rooms[out.name].history.append(frame)
        if not waiting:
            msg.done = True
            self._events.append(E.PostAcknowledged(local_id, app_room, frame.lc))
        return local_id

    def _unwait(self, out: OutStream, node: int, now: float) -> None:
        for m in out.msgs.values():
            if not m.done and node in m.waiting:
                self._acked_by(m, node)

    def _acked_by(self, m: OwnMsg, node: int) -> None:
        m.waiting.discard(node)
        if not m.waiting and not m.done:
            m.done = True
            self._failed.pop(m.local_id, None)
            self._events.append(E.PostAcknowledged(m.local_id, m.room, m.frame.lc))

    def _on_ack(self, link: Link, ack: F.PeerAck, now: float) -> None:
        lr = link.rooms.get(ack.room)
        if lr is None or lr.target is None or not lr.member:
            return
        out = self._stream(link, ack.room)
        if out is None:
            return
        tg = lr.target
        cum = min(ack.cum, out.seq)
        node = link.node
        before, fresh = tg.acked, cum > tg.last_retx  # Karn: sampled only if nothing was resent
        if tg.on_ack(cum, out.seq):
            m = out.msgs.get(cum)
            if fresh and m is not None and m.created >= tg.since:
                link.rtt.sample(now - m.created)
            tg.probe_at = now + link.rtt.rto
            for s in range(before + 1, cum + 1):
                m = out.msgs.get(s)
                if m is not None and not m.done:
                    self._acked_by(m, node)
        if ack.ranges:
            for s in tg.on_sack(ack.ranges, out.seq):
                m = out.msgs.get(s)
                if m is not None and not m.done:
                    self._acked_by(m, node)

    def _on_nack(self, link: Link, nack: F.Nack, now: float) -> None:
        lr = link.rooms.get(nack.room)
        if lr is None or lr.target is None or not lr.member:
            return
        out = self._stream(link, nack.room)
        if out is None:
            return
        tg = lr.target
        seqs = tg.nacked(nack.ranges, out.seq)
        if seqs:
            self._resend(link, lr, out, seqs, now)

    def _probe(self, link: Link, lr: LinkRoom, out: OutStream, now: float) -> None:
        tg = lr.target
        tg.probe(now, link.rtt)
        first = out.first()
        if tg.acked + 1 < first:
            # what they miss is no longer kept: move their base (the PeerJoin tells them to skip)
            tg.skip_to(first)
            self._send_join(link, lr, now, ask=False)
        seqs = tg.unacked(out.seq)
        if seqs:
            self._resend(link, lr, out, seqs, now)

    def _resend(self, link: Link, lr: LinkRoom, out: OutStream, seqs: list[int], now: float) -> None:
        """Retransmit (timer or NACK): whatever they ask, at most the link's repair budget per RTT."""
        tg = lr.target
        for s in seqs:
            m = out.msgs.get(s)
            if m is None:
                continue
            if not link.repair.take(F.size_of(m.frame), now, link.rtt.pace):
                break
            link.out.append(m.frame)
            self.stats["retransmits"] += 1
            tg.resent(s)

    def _give_up(self, now: float) -> None:
        limit = now - self.timing.give_up
        streams = [r.out for r in self.rooms.values()] + [lk.dm_out for lk in self.links.values()]
        for out in streams:
            for m in out.msgs.values():
                if m.created > limit:
                    break
                if not m.done and not m.failed:
                    m.failed = True
                    self._failed[m.local_id] = (
                        m.room,
                        m.frame.text,
                        m.frame.kind in (F.EV_ACTION, F.EV_DM_ACTION),
                    )
                    self._events.append(
                        E.PostFailed(m.local_id, m.room, "not every peer acknowledged it in time")
                    )

    def _prune(self, now: float) -> None:
        since = now - self.timing.timeout
        streams = [r.out for r in self.rooms.values()] + [lk.dm_out for lk in self.links.values()]
        for out in streams:
            msgs = out.msgs
            while msgs:
                seq, m = next(iter(msgs.items()))
                if (m.done and m.created < since) or len(msgs) > MAX_KEPT:
                    del msgs[seq]
                else:
                    break

    # ------------------------------------------------------------------ their messages

    def _on_msg(self, link: Link, m: F.PeerMsg, now: float) -> None:
        name = m.room
        lr = link.rooms.get(name)
        if lr is None or lr.rx is None:
            if name and name not in self.rooms:
                link.out.append(F.PeerLeave(name, self.nick, "not here"))
            elif lr is not None:
                self._send_join(link, lr, now, ask=True)  # we need their PeerJoin first
            return
        if not link.bucket.take(now):
            self.stats["rate_limited"] += 1
            return
        if m.kind not in (_DM_KINDS if name == "" else _ROOM_KINDS) or not (1 <= m.seq < 1 << 62):
            raise ValueError("bad message kind")
        # m.nick is not read: a message is from the link it came over (see _deliver)
        check_text(m.text, MAX_TEXT_BYTES)
        if m.seq > lr.top:
            lr.top = m.seq
        rx = lr.rx
        if m.seq != rx.next:  # what this link may buffer, over all its streams
            used = sum(x.rx.bytes for x in link.rooms.values() if x.rx is not None)
            rx.max_bytes = max(1, MAX_RX_BYTES - (used - rx.bytes))
        fresh = rx.offer(m.seq, m, RX_ITEM_BYTES + len(m.text.encode()))
        if not fresh:
            self.stats["duplicates"] += 1
        self._deliver(link, lr, now)
        self._want_ack(link, name, now, urgent=not fresh or lr.rx.has_gap())

    def _deliver(self, link: Link, lr: LinkRoom, now: float) -> None:
        name = lr.name
        r = self.rooms.get(name)
        for _seq, m in lr.rx.pop_ready():
            # the join window (sent before they knew of us) is history, by its place in their stream
            history = bool(name) and m.seq < lr.live_from
            lc = self._wire_lc(lr, m)
            if m.mid in self._seen:
                self.stats["duplicates"] += 1
                continue
            self._seen.add(m.mid)
            # from the link it came over, whatever it says; its numbers checked
            m = F.PeerMsg(
                room=m.room,
                seq=m.seq,
                lc=lc,
                kind=m.kind,
                nick=link.nick,
                text=m.text,
                ts=self._wire_ts(m.ts, now, history),
                mid=m.mid,
            )
            if name == "":
                if self._owner(link.nick) is not link or nick_key(link.nick) == nick_key(self.nick):
                    continue  # a DM from a second holder of a nick would look like the first's
                self._events.append(
                    E.MessageReceived(
                        E.direct_room(link.nick), m.lc, m.nick, m.text, m.ts, m.kind == F.EV_DM_ACTION
                    )
                )
            elif r is not None and not lr.hidden:  # a refused double of a nick says nothing
                r.history.append(m)
                self._events.append(
                    E.MessageReceived(
                        name, m.lc, m.nick, m.text, m.ts, m.kind == F.EV_ACTION, history=history
                    )
                )

    def _wire_lc(self, lr: LinkRoom, m: F.PeerMsg) -> int:
        """The Lamport stamp of a message of their stream, delivered in order: later than their
        previous one and than the clock their PeerJoin showed before it (an honest clock never
        goes back) and at most LC_STEP beyond what they said before. Merged into our clock. (How far
        back a live line may land on screen is the display's bound.)"""
        lo = lr.lc_last + 1
        if m.seq > lr.join_top:
            lo = max(lo, lr.join_lc + 1)
        lc = min(max(lo, min(m.lc, max(lr.lc_last, lr.join_lc) + LC_STEP)), LC_MAX)
        lr.lc_last = lc
        self._bump(lc)
        return lc

    def _wire_ts(self, ts: float, now: float, history: bool) -> float:
        """A timestamp from the wire, or the receive time if it is not plausible (not finite,
        more than TS_SKEW ahead, or, live, as far behind)."""
        wall = self._ts(now)
        if (
            not math.isfinite(ts)
            or ts > wall + TS_SKEW
            or (not history and ts < wall - TS_SKEW)
            or ts < -TS_SKEW
        ):
            return wall
        return ts

    def _want_ack(self, link: Link, name: str, now: float, urgent: bool) -> None:
        lr = link.rooms.get(name)
        link.acks.want(name, lr.rx if lr is not None else None, now, urgent)

    def _acks(self, link: Link, now: float) -> list[F.Frame]:
        def stream_of(name: str) -> tuple[RecvStream, int] | None:
            lr = link.rooms.get(name)
            return None if lr is None or lr.rx is None else (lr.rx, lr.top)

        out: list[F.Frame] = []
        for name, cum, sack, missing in link.acks.take(now, link.rtt.pace, stream_of):
            out.append(F.PeerAck(room=name, sender=link.nick, cum=cum, ranges=sack))
            if missing:
                out.append(F.Nack(name, missing))
        return out

    # ------------------------------------------------------------------ history

    def _history_frames(self, r: Room) -> list[F.Frame]:
        """PeerHistory frames, each fitting one datagram with its Sid. An item too big for that
        goes without its room name (the frame names it); one too big even then (only hostile
        numbers can make it) is left out."""
        items = sorted(r.history, key=lambda m: (m.lc, m.nick))
        limit = F.MAX_DATAGRAM - SID_ROOM - F.size_of(F.PeerHistory(r.name, [])) - 4
        frames: list[F.Frame] = []
        cur: list[F.PeerMsg] = []
        size = 0
        for m in items:
            n = F.size_of(m)
            if n > limit:
                m = F.PeerMsg(
                    room="", seq=m.seq, lc=m.lc, kind=m.kind, nick=m.nick, text=m.text, ts=m.ts, mid=m.mid
                )
                n = F.size_of(m)
                if n > limit:
                    continue
            if cur and size + n > limit:
                frames.append(F.PeerHistory(r.name, cur))
                cur, size = [], 0
            cur.append(m)
            size += n
        frames.append(F.PeerHistory(r.name, cur))
        return frames

    def _on_history(self, link: Link, h: F.PeerHistory, now: float) -> None:
        lr = link.rooms.get(h.room)
        r = self.rooms.get(h.room)
        if lr is None or r is None or not lr.member:
            return
        if lr.history_want:
            lr.history_want = False
            lr.history_until = now + self.timing.timeout
        elif now > lr.history_until:
            return
        items = []
        for m in h.items[: self.history]:
            if m.kind not in _ROOM_KINDS or m.room not in (h.room, ""):
                continue
            try:
                check_nick(m.nick)
                check_text(m.text, MAX_TEXT_BYTES)
            except InputError:
                self.stats["malformed"] += 1
                continue
            # relayed by the contact: who said it is its word (history is shown as such); the
            # numbers are checked like any from the wire
            lc = max(0, min(m.lc, self.lc + LC_STEP, LC_MAX))
            items.append(
                F.PeerMsg(
                    room=h.room,
                    seq=m.seq,
                    lc=lc,
                    kind=m.kind,
                    nick=m.nick,
                    text=m.text,
                    ts=self._wire_ts(m.ts, now, True),
                    mid=m.mid,
                )
            )
        items.sort(key=lambda m: (m.lc, m.nick))
        # a member's messages from where its stream to us starts arrive live: not history
        live = {
            nick_key(lk.nick): lk.rooms[h.room].rx_base
            for lk in self._members(h.room)
            if lk.rooms[h.room].rx is not None
        }
        for m in items:
            if m.mid in self._seen or m.seq >= live.get(nick_key(m.nick), 1 << 62):
                continue
            self._seen.add(m.mid)
            self._bump(m.lc)
            r.history.append(m)
            self._events.append(
                E.MessageReceived(h.room, m.lc, m.nick, m.text, m.ts, m.kind == F.EV_ACTION, history=True)
            )


def _dialable(host: str) -> bool:
    """A literal unicast address: never multicast, broadcast or unspecified (loopback and private
    addresses are fine: that is a LAN, or a test)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # gossip carries literal addresses only
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return True
    return not (ip.is_multicast or ip.is_unspecified or ip.is_reserved)  # 240/4 holds the broadcast
