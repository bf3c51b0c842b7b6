"""The link handshake of a direct peer: the relay's stateless handshake, then protocol 2's key
exchange (docs/security.md, "Direct mode").

A padded Hello earns a Retry with an HMAC cookie, and only a Hello carrying a valid cookie creates
state; before that, answers are limited to 3x the bytes received. An address only gossip named is
knocked at first (a bare Sid any peer answers with a Reset), paid from the gossiping link's credit.
The Hello carries msg1 (`Hello.kx`), the Welcome msg2 (`Welcome.kx`, with the answerer's nick and
node id sealed inside), and the dialer's first sealed datagram is msg3 (its nick and node id, and
the proof of its identity key): both sides prove their identity keys (`Responder(require_identity=
True)`). From then on every datagram of the link is sealed (`crypto.SealedChannel`); clear
datagrams from a linked address count only as handshake steps (`_clear_on_link`). Of two peers
dialing each other at once, the higher node id's handshake is the one that goes on. Contacts given
by `add_peer` are retried with backoff for ever.
"""

from __future__ import annotations

import struct

from .. import events as E
from .. import frames as F
from ..addr import Addr, format_sockaddr
from ..cookies import limited_reply, screen_unknown
from ..crypto import KIND_SESSION, MSG1_BYTES, SEALED, CryptoError, Initiator, Responder
from ..names import (
    InputError,
    check_nick,
    nick_key,
)
from .state import (
    HELLO,
    KEYING,
    MAX_LINKS,
    UP,
    Link,
    LinkRoom,
    OutStream,
    random_id,
)

#: the head of a handshake's msg3: the first sealed datagram, packet number 0
MSG3_HEAD = bytes((SEALED, KIND_SESSION)) + bytes(8)


def prologue(version: int, nonce: int, node: int) -> bytes:
    """What both sides saw in the clear Hello, bound into the handshake (altered: no keys agree)."""
    mask = 2**64 - 1
    return b"udproom-v2 peer hello\0" + struct.pack(">IQQ", version & 0xFFFFFFFF, nonce & mask, node & mask)


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
        if link.initiator is None:
            link.initiator = Initiator(
                identity=self.identity, prologue=prologue(F.VERSION, link.rx_token, self.node)
            )
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
            # the nick travels sealed (msg3); the clear Hello says only what the handshake needs
            link.out.append(
                F.padded_hello(
                    version=F.VERSION,
                    nick="",
                    cookie=link.cookie,
                    nonce=link.rx_token,
                    node=self.node,
                    kx=link.initiator.msg1,
                )
            )
        link.hello_tries += 1
        link.hello_sent = now
        link.hello_at = now + self.timing.hello_backoff(link.hello_tries)

    @staticmethod
    def _new_attempt(link: Link) -> None:
        """Forget the handshake under way and the link's keys: the next Hello starts afresh."""
        link.state = HELLO
        link.cookie = b""
        link.rx_token = 0
        link.initiator = link.responder = link.channel = None
        link.msg3 = b""
        link.early = []
        link.confirmed = True
        link.hello_tries = 0
        link.out = []

    def _rehandshake(self, link: Link, now: float) -> None:
        self._new_attempt(link)
        link.started = now
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
            self._new_attempt(link)
            link.started = now + wait
            link.hello_at = now + wait
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
        refusal = self._check_hello(hello)
        if refusal is None and len(self.links) >= MAX_LINKS:
            refusal = "too many peers here"
        if refusal is not None:
            self._reply_limited(addr, size, [F.Refuse(refusal, list(F.SUPPORTED_VERSIONS), hello.nonce)])
            return
        if hello.node == self.node:
            return  # ourselves, by another address
        link = Link(addr, now, self.timing)
        link.state = KEYING
        self.links[addr] = link
        for name in self.rooms:
            link.rooms[name] = LinkRoom(name)
        if not self._answer_hello(link, hello, now):
            self.links.pop(addr, None)

    def _check_hello(self, hello: F.Hello) -> str | None:
        if hello.version not in F.SUPPORTED_VERSIONS:
            return f"unsupported protocol version {hello.version}"
        if hello.node <= 0 or hello.nonce <= 0:
            return "bad node id"
        if len(hello.kx) != MSG1_BYTES:
            return "no key exchange in the Hello"
        return None

    def _answer_hello(self, link: Link, hello: F.Hello, now: float) -> bool:
        """Our half of their handshake: msg2 in a Welcome (our nick and node id sealed inside).
        The link keeps its keys (if it has any) until their msg3 proves who they are."""
        responder = Responder(
            self.identity, prologue=prologue(hello.version, hello.nonce, hello.node), require_identity=True
        )
        try:
            msg2 = responder.respond(hello.kx, F.encode([self._welcome()]))
        except CryptoError:
            self.stats["sealed_dropped"] += 1
            return False
        link.responder, link.responder_at = responder, now
        link.hs_nonce, link.hs_node = hello.nonce, hello.node
        link.early = []
        clear = F.Welcome(
            version=F.VERSION, nick="", epoch=0, keepalive_ms=0, timeout_ms=0, nonce=hello.nonce, kx=msg2
        )
        link.welcome = F.encode([clear])
        self._raw.append((link.welcome, link.addr))
        return True

    def _linked_elsewhere(self, node: int, nick: str, addr: Addr | None) -> bool:
        key = nick_key(nick)
        return any(
            lk.state == UP and lk.node == node and lk.addr != addr and nick_key(lk.nick) == key
            for lk in self.links.values()
        )

    def _welcome(self) -> F.Welcome:
        """What our Welcome says inside msg2 (sealed): who we are here."""
        t = self.timing
        ka, to = int(t.keepalive * 1000), int(t.timeout * 1000)
        return F.Welcome(version=F.VERSION, nick=self.nick, epoch=self.node, keepalive_ms=ka, timeout_ms=to)

    def _establish(self, link: Link, node: int, nick: str, now: float) -> None:
        if link.node and link.node != node:
            self._forget(link, now, "restarted")
        first = not link.node
        link.node = node
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

    def _clear_on_link(self, link: Link, frames: list[F.Frame], size: int, now: float) -> None:
        """A clear datagram from a linked address: only handshake steps count (Hello with a valid
        cookie, and, while we dial, the Retry, Refuse, Welcome and knock answer tied to our
        nonce); anything else is counted and dropped: a linked peer seals everything."""
        first = frames[0]
        if type(first) is F.Sid and link.state == HELLO:
            # a knock from a peer we are dialing too (gossip told each of us about the other)
            if self._hello_limit.allow(link.addr, now) and not any(
                isinstance(f, (F.Bye, F.Reset)) for f in frames
            ):
                self._reply_limited(link.addr, size, [F.Reset(first.token)])
            return
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
            elif tp is F.Welcome and link.state == HELLO and link.rx_token and frame.nonce == link.rx_token:
                self._on_welcome(link, frame, now)
                return
            elif tp is F.Welcome and link.msg3 and not link.confirmed and frame.nonce == link.rx_token:
                # their Welcome again while we wait to hear from them: our msg3 did not arrive
                # (they got what we sealed after it). Say it again now, not at its timer.
                self._raw.append((link.msg3, link.addr))
                return
            else:
                self.stats["unauthenticated"] += 1

    def _on_welcome(self, link: Link, w: F.Welcome, now: float) -> None:
        """Their answer to our Hello: msg2 proves their identity key; we send msg3 proving ours
        (with our nick and node id) and the link is up, sealed from here on."""
        initiator = link.initiator
        if initiator is None or w.version not in F.SUPPORTED_VERSIONS:
            self.stats["unauthenticated"] += 1
            return
        mine = F.encode([F.Hello(version=F.VERSION, nick=self.nick, node=self.node)])
        try:
            msg3, inner = initiator.finish(w.kx, mine)
            (theirs,) = F.decode(inner)
            if type(theirs) is not F.Welcome or theirs.epoch <= 0 or theirs.epoch == self.node:
                raise ValueError("bad Welcome")
            nick = check_nick(theirs.nick)
        except (CryptoError, F.FrameError, InputError, ValueError):
            self.stats["sealed_dropped"] += 1
            link.initiator = None  # a burnt attempt: the next Hello starts another
            link.rx_token = 0
            return
        link.initiator = None
        link.channel, link.key = initiator.channel, initiator.responder_key
        link.msg3, link.confirmed = msg3, False
        self._raw.append((msg3, link.addr))  # before anything sealed after it
        sample = link.hello_tries == 1
        self._establish(link, theirs.epoch, nick, now)
        if sample:
            link.rtt.sample(now - link.hello_sent)
        link.hello_tries = 1
        link.hello_at = now + link.rtt.rto  # msg3 again then, unless they were heard from

    def _on_msg3(self, link: Link, data: bytes, now: float) -> bool:
        """Their msg3, the end of a handshake we answered: their identity key and who they are.
        False if it is not one (the caller then tries the link's keys)."""
        responder = link.responder
        try:
            payload = responder.finish(data)
            (theirs,) = F.decode(payload)
            if type(theirs) is not F.Hello or theirs.node != link.hs_node:
                raise ValueError("bad msg3")
            nick = check_nick(theirs.nick)
        except (CryptoError, F.FrameError, InputError, ValueError):
            return False
        key = responder.initiator_key
        link.responder = None
        if link.state == UP and link.key and key != link.key:
            # someone else at a linked peer's address (an on-path forger can complete a handshake,
            # with its own key): the live link stays as it is
            self.stats["key_mismatch"] += 1
            return True
        if self._linked_elsewhere(theirs.node, nick, link.addr):
            refusal = F.Refuse("already linked by another address", list(F.SUPPORTED_VERSIONS), link.hs_nonce)
            self._raw.append((responder.channel.seal(F.encode([refusal])), link.addr))
            if link.state != UP:
                self.links.pop(link.addr, None)
            return True
        link.channel, link.key, link.msg3_in = responder.channel, key, data
        link.msg3, link.confirmed = b"", True
        link.started = now
        self._establish(link, theirs.node, nick, now)
        return True

    def _hello_on_link(self, link: Link, hello: F.Hello, size: int, now: float) -> None:
        if not self.cookies.check(hello.cookie, link.addr, now):
            if self._hello_limit.allow(link.addr, now):
                self._reply_limited(link.addr, size, [F.Retry(self.cookies.make(link.addr, now), F.VERSION)])
            return
        if self._check_hello(hello) is not None or hello.node == self.node:
            return
        if hello.nonce == link.hs_nonce:
            if link.responder is not None:
                self._raw.append((link.welcome, link.addr))  # a retransmitted Hello: our Welcome was lost
            return  # (or a late copy of the Hello whose handshake completed)
        if not self._hello_limit.allow(link.addr, now):
            self.stats["rate_limited"] += 1  # each new attempt costs us a key exchange: per source
            return
        if link.state == HELLO and link.hello_tries and self.node > hello.node:
            # both of us dialed: ours goes on (higher node id) and theirs is dropped. They are
            # dialing, so they have not had ours (or it is stuck at its Retry): say it again now
            # (their Hello, with a cookie, proves they receive there) rather than at our backoff
            link.knocked = True
            self._send_hello(link, now)
            return
        # A new attempt by the address's owner (the cookie proves it receives there): it dialed us
        # while we dialed it (and we give way), restarted, or lost our link. A link that is up
        # keeps its keys until their msg3 proves the same identity key.
        if link.state == HELLO:
            link.initiator = None  # our own attempt is dropped before any key was made
            link.rx_token = 0
            link.state = KEYING
            link.out = []
        link.started = now
        self._answer_hello(link, hello, now)
