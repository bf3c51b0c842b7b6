"""`PeerNode`: one direct peer, its commands and its sans-IO surface. Each concept of the
protocol is a part of its own that PeerNode is made of (see the package docstring)."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable

from .. import events as E
from .. import frames as F
from ..addr import Addr
from ..backend import OutboxFull
from ..cookies import CookieJar, SourceLimiter
from ..names import (
    MAX_AWAY_BYTES,
    MAX_TOPIC_BYTES,
    LimitReached,
    Refused,
    canonical_room,
    check_nick,
    check_text,
    is_direct,
    nick_key,
)
from ..reliability import (
    DedupeWindow,
    Timing,
    TokenBucket,
)
from .history import History, Page
from .links import Links
from .membership import Membership
from .receiving import Receiving
from .sending import Sending
from .state import (
    DIAL_RATE,
    HELLO,
    HELLO_RATE,
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
