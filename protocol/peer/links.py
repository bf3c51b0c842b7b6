"""The link handshake of a direct peer: the relay's stateless handshake, between two peers.

A padded Hello earns a Retry with an HMAC cookie, and only a Hello carrying a valid cookie creates
state; before that, answers are limited to 3x the bytes received. An address only gossip named is
knocked at first (a bare Sid any peer answers with a Reset), paid from the gossiping link's credit.
Every later datagram starts with Sid(receiver's token); without it only the handshake steps tied to
a secret count (`_unauthenticated`). Contacts given by `add_peer` are retried with backoff for ever.
"""

from __future__ import annotations

from .. import events as E
from .. import frames as F
from ..addr import Addr, format_sockaddr
from ..cookies import limited_reply, screen_unknown
from ..names import (
    InputError,
    check_nick,
    nick_key,
)
from .state import (
    HELLO,
    MAX_LINKS,
    UP,
    Link,
    LinkRoom,
    OutStream,
    random_id,
)


class Links:
    """A part of `PeerNode` (node.py): these methods work on the node's state."""

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
            link.rx_token = random_id()  # this attempt's secret: their Welcome must come with it
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

    def _from_unknown(self, frames: list[F.Frame], addr: Addr, size: int, now: float) -> None:
        quiet = (F.Bye, F.Reset, F.Refuse, F.Retry, F.Welcome)  # handshake answers are never reset
        hello, reply = screen_unknown(
            frames, addr, size, now, self.cookies, self._hello_limit, self.stats, quiet
        )
        if reply is not None:
            self._raw.append((reply, addr))
        if hello is None:
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
        link.rx_token = random_id()
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
            link.rx_token = random_id()
        link.started = now
        self._establish(link, hello.node, hello.nick, now, hello.nonce)
        link.out.insert(0, self._welcome(link))
