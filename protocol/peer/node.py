"""`PeerNode`: one direct peer, its commands and its sans-IO surface. Each concept of the
protocol is a part of its own that PeerNode is made of (see the package docstring)."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable

from .. import events as E
from .. import frames as F
from ..addr import Addr, format_sockaddr
from ..backend import OutboxFull
from ..cookies import CookieJar, SourceLimiter
from ..crypto import SESSION_OVERHEAD, CryptoError, Identity, SignatureCache, is_sealed, signed_event
from ..names import (
    MAX_AWAY_BYTES,
    MAX_TOPIC_BYTES,
    LimitReached,
    Refused,
    canonical_room,
    check_nick,
    check_text,
    is_direct,
    look_alike,
    nick_key,
)
from ..pins import KeyPins
from ..reliability import (
    DedupeWindow,
    Timing,
    TokenBucket,
)
from .history import History, Page
from .links import MSG3_HEAD, Links
from .membership import Membership
from .receiving import Receiving
from .sending import Sending
from .state import (
    DIAL_RATE,
    EARLY,
    HELLO,
    HELLO_RATE,
    KEYING,
    LC_MAX,
    MAX_LINKS,
    MAX_OUTBOX,
    MAX_ROOMS,
    UP,
    Link,
    LinkRoom,
    OutStream,
    Room,
    random_id,
)


class PeerNode(Links, Membership, Sending, Receiving, History):
    """One peer. Commands: `add_peer`, `join`, `part`, `post`, `retry`, `set_nick`, `set_topic`,
    `set_away`, `close`; plus the sans-IO surface (`receive_datagram`, `datagrams_to_send`,
    `get_timer`, `handle_timer`, `next_event`).

    `identity` is the user's identity key (`crypto.Identity`): every link proves it and every
    message is signed with it. The app and the headless commands pass the user's
    (`paths.identity_path()`, see net/peer.py); without one a node makes a new key for this
    process only (tools and tests: a restart then looks like another person). `pins` holds the
    nick <-> key pins (trust on first use; `pins.KeyPins`, in memory unless given one kept in a
    file)."""

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
        identity: Identity | None = None,
        pins: KeyPins | None = None,
    ) -> None:
        self.nick = check_nick(nick)
        self.identity = identity if identity is not None else Identity.generate()
        self.pins = pins if pins is not None else KeyPins()
        self.sigs = SignatureCache()
        self._pins_warned = False
        self.timing = timing or Timing()
        self.wall_offset = wall_offset
        self.history = history
        self.node = node or random_id()
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
        self._pages: dict[str, Page] = {}  # room -> the page asked of its members (history.py)
        self.stats = dict.fromkeys(
            (
                "datagrams_in",
                "datagrams_out",
                "malformed",
                "unknown_source",
                "unauthenticated",
                "sealed_dropped",
                "key_mismatch",
                "bad_signature",
                "key_changed",
                "rate_limited",
                "duplicates",
                "retransmits",
                "links_opened",
                "links_timed_out",
            ),
            0,
        )

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
        self._resume_clock(name)
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
        self._tick()  # our PeerJoins sent before are older than this leave (see PeerLeave.lc)
        for link in self.links.values():
            lr = link.rooms.pop(name, None)
            if lr is not None and lr.member and link.state == UP:
                link.out.append(F.PeerLeave(name, self.nick, "left", self.lc))
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
                if look_alike(link.nick, nick):
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
        sig = self.identity.sign(signed_event(name, F.EV_TOPIC, self.lc, topic, by=nick_key(self.nick)))
        r.topic_proof = (self.identity.public, sig)
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
        out = []
        for _ in range(2):  # two datagrams, each sealed anew (a copy would be a replay)
            for link in self.links.values():
                if link.state == UP:
                    link.out.append(F.Bye("quit"))
            out += self.datagrams_to_send(now)
        self._raw.extend(out)
        self.closed = True
        self._timer_at = None

    @property
    def pending_posts(self) -> int:
        n = 0
        for r in self.rooms.values():
            n += sum(1 for m in r.out.msgs.values() if not m.done)
        for link in self.links.values():
            n += sum(1 for m in link.dm_out.msgs.values() if not m.done)
        return n

    def key_of(self, room: str, nick: str) -> bytes | None:
        """`nick`'s identity key as its link proved it in the handshake (ours for our own nick;
        None: no link has that nick). `room` is not needed: a nick is one peer across rooms."""
        if nick_key(nick) == nick_key(self.nick):
            return self.identity.public
        link = self._owner(nick)
        return link.key if link is not None and link.key else None

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
            if link.state == KEYING:
                return False
            if link.state == UP:
                for lr in link.rooms.values():
                    if not lr.member and lr.ask_at is not None:
                        return False
                    if lr.member and lr.name and not lr.gossiped:
                        return False
        return True

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        if self.closed:
            return
        st = self.stats
        st["datagrams_in"] += 1
        addr = self._key(addr)
        link = self.links.get(addr)
        if is_sealed(data):
            if link is None:
                st["unknown_source"] += 1  # keys we do not have (we restarted, or dropped them)
            else:
                self._sealed(link, data, now)
            self._schedule(now)
            return
        try:
            frames = F.decode(data)
        except F.FrameError:
            st["malformed"] += 1
            return
        if link is None:
            self._from_unknown(frames, addr, len(data), now)
        else:
            # clear: only handshake frames count, each tied to what only the real peer can
            # have (a cookie, our nonce): see _clear_on_link
            try:
                self._clear_on_link(link, frames, len(data), now)
            except (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError):
                st["malformed"] += 1
        self._schedule(now)

    def _sealed(self, link: Link, data: bytes, now: float) -> None:
        """A sealed datagram from a linked address: the msg3 of a handshake we answered, or
        frames under the link's keys. Anything that does not open is counted and dropped."""
        st = self.stats
        msg3 = link.responder is not None and data[: len(MSG3_HEAD)] == MSG3_HEAD
        if msg3 and self._on_msg3(link, data, now):
            early, link.early = link.early, []
            for d in early:  # what overtook msg3 opens now, under the keys it proved
                if self.links.get(link.addr) is link:
                    self._sealed(link, d, now)
            return
        channel = link.channel
        try:
            if channel is None or link.state != UP:
                raise CryptoError("no keys yet")
            payload = channel.open(data)
        except CryptoError:
            if link.msg3_in and data == link.msg3_in:
                link.out.append(F.Pong(0))  # their msg3 again: they have not heard us since
            elif link.responder is not None and not msg3 and len(link.early) < EARLY:
                link.early.append(data)  # perhaps sealed after a msg3 that is late or lost
                if len(link.early) == 1 and link.welcome:
                    self._raw.append((link.welcome, link.addr))  # tells the dialer to say msg3 again
            else:
                st["sealed_dropped"] += 1
            return
        link.confirmed = True
        try:
            frames = F.decode(payload)
        except F.FrameError:
            st["malformed"] += 1
            return
        self._dgram_size = len(data)
        addr = link.addr
        for frame in frames:
            try:
                self._handle(link, frame, now)
            except (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError):
                st["malformed"] += 1
            if self.links.get(addr) is not link:
                break

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
            if link.state == UP and link.channel is not None:
                seal = link.channel.seal
                for d in F.pack(frames, limit=F.MAX_DATAGRAM - SESSION_OVERHEAD):
                    out.append((seal(d), link.addr))
            else:  # before the keys, only our Hello goes (in the clear)
                for d in F.pack([f for f in frames if type(f) is F.Hello]):
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
            if link.state == KEYING:
                if now >= link.started + t.timeout:  # their msg3 never came
                    if link.contact:
                        self._rehandshake(link, now)
                    else:
                        self.links.pop(link.addr, None)
                continue
            if link.responder is not None and now >= link.responder_at + t.timeout:
                link.responder = None  # a new handshake on a live link that never finished
                link.early = []
            if link.msg3 and not link.confirmed and now >= link.hello_at:
                self._raw.append((link.msg3, link.addr))  # they have not heard our msg3 yet
                link.hello_tries += 1
                link.hello_at = now + link.rtt.backoff(link.hello_tries)
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
        self._page_timers(now)
        self._prune(now)
        self._hello_limit.prune(now)
        self._timer_at = None
        self._schedule(now)

    def next_event(self):
        return self._events.popleft() if self._events else None

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
            if link.state == KEYING:
                soon(link.started + t.timeout)
                continue
            if link.msg3 and not link.confirmed:
                soon(link.hello_at)
            if link.responder is not None:
                soon(link.responder_at + t.timeout)
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
        for page in self._pages.values():
            soon(page.deadline)
        if at is not None and at < now:
            at = now
        self._timer_at = at

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

    def _handle(self, link: Link, frame: F.Frame, now: float) -> None:
        """A frame of a datagram that opened under the link's keys."""
        tp = type(frame)
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
        elif tp is F.Refuse:
            # they will not keep this link (they have us by another address already)
            reason = frame.reason[:200]
            self._events.append(E.Notice(f"peer {format_sockaddr(link.addr)} refused: {reason}"))
            self._forget(link, now, "refused")
            self.links.pop(link.addr, None)
        elif tp is F.Bye:
            self._drop(link, now, reason=frame.reason[:200] or "quit")
