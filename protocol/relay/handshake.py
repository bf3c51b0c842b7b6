"""The relay's side of the handshake: the stateless step for unknown addresses
(`cookies.screen_unknown`), then the checks that open a session (version, nick, room on the
relay, resume of a parked session), and what a Hello from an address that has a session means.
"""

from __future__ import annotations

import math

from .. import frames as F
from .. import roomlog
from ..addr import Addr
from ..cookies import hello_padded, limited_reply, screen_unknown, source_of
from ..crypto import CryptoError, Responder
from ..names import (
    InputError,
    check_nick,
)
from .cluster import Unchecked
from .state import (
    TOO_MANY_WAITING,
    Pending,
    Session,
    SessionOpened,
)

#: what a protocol-1 client's Hello is told (it shows a Refuse as a one-line error)
OLD_PROTOCOL = "this relay speaks protocol 2 (encrypted); upgrade udproom"


class Handshake:
    """A part of `Relay` (core.py): these methods work on the relay's state."""

    def _from_unknown(self, frames: list[F.Frame], addr: Addr, size: int, now: float) -> None:
        if self._closing:
            return
        hello, reply = screen_unknown(
            frames, addr, size, now, self.cookies, self._hello_limit, self.stats, (F.Bye, F.Reset)
        )
        if reply is not None:
            self._emit(reply, addr)
        if hello is None:
            return
        # the address is validated from here on
        if hello.version not in F.SUPPORTED_VERSIONS:
            reason = (
                OLD_PROTOCOL if hello.version < F.VERSION else f"unsupported protocol version {hello.version}"
            )
            self._reply_limited(addr, size, [F.Refuse(reason, list(F.SUPPORTED_VERSIONS), hello.nonce)])
            return
        pending = self._pending.get(addr)
        if pending is not None and pending.nonce == hello.nonce:  # our Welcome was lost
            self._emit(pending.welcome, addr)
            return
        if pending is None and len(self.sessions) + len(self._pending) >= self.config.max_sessions:
            self._reply_limited(addr, size, [F.Refuse("relay is full, try later", [], hello.nonce)])
            return
        cap = self.config.max_handshakes_per_address
        if pending is None and cap and self._pending_per_source.get(source_of(addr), 0) >= cap:
            self.stats["handshakes_limited_address"] += 1  # (dropped: its client sends it again)
            return
        # Public-key work only for an address that proved it receives our datagrams (the cookie),
        # under the per-source handshake limit (screen_unknown).
        hs = Responder(self.identity, prologue=F.hello_prologue(hello))
        try:
            msg2 = hs.respond(hello.kx)
        except CryptoError:
            self.stats["malformed"] += 1
            return
        welcome = F.encode_one(
            F.Welcome(
                version=F.VERSION, nick="", epoch=0, keepalive_ms=0, timeout_ms=0, nonce=hello.nonce, kx=msg2
            )
        )
        fresh = Pending(addr, hello.nonce, hs, welcome, now)
        old = self._pending.get(addr)
        if old is not None and old.session is not None:  # (its Login waited for the cluster: same claim)
            fresh.claimed_as = (old.session.nick, old.session.token)
        if old is None:
            self._source_count(source_of(addr), 1, self._pending_per_source)
        self._pending[addr] = fresh
        self._emit(welcome, addr)
        self._arm(now + self.config.pending_timeout)

    def _from_pending(self, pending: Pending, data: bytes, now: float) -> None:
        """A sealed datagram from an address whose handshake waits for message 3: the Login."""
        addr = pending.addr
        try:
            payload = pending.hs.finish(data)
        except CryptoError:
            self.stats["sealed_dropped"] += 1
            return
        if pending.answer is not None:  # a repeated msg3 after a refusal: the same answer
            self._emit(pending.answer, addr)
            return
        frames = F.decode_counted(payload, self.stats)
        if frames is None:
            return
        login = frames[0]
        if type(login) is not F.Login:
            self.stats["malformed"] += 1
            return
        try:
            nick = check_nick(login.nick)
        except InputError as exc:
            self._refuse_login(pending, F.Refuse(f"bad nick: {exc}", [], pending.nonce))
            return
        here = self.sessions.get(addr)
        if here is not None:  # the client at this address started over
            self._drop_session(here, now, "reconnected")
        if login.resume:
            old = self._tokens.get(login.resume)
            if old is not None:  # the same client, from a new address
                self._drop_session(old, now, "reconnected")
        limit = self.config.max_sessions_per_address
        if limit > 0 and self._per_source.get(source_of(addr), 0) >= limit:
            self.stats["sessions_refused_address"] += 1
            reason = f"too many sessions from your address on this relay (at most {limit})"
            self._refuse_login(pending, F.Refuse(reason, [], pending.nonce))
            return
        refused = self._claim_nick(nick, pending.hs.initiator_key, None, now)  # (moderation.py)
        if refused is not None:
            self._refuse_login(pending, F.Refuse(refused, [], pending.nonce))
            return
        holder = self._nick_holder(nick)
        if holder is not None:
            reason = self._in_use(nick, holder)
            self._refuse_login(
                pending, F.Refuse(reason, [], pending.nonce, self._ghost_retry_ms(holder, now))
            )
            return
        # (the same session when the Login is done again after waiting for the cluster: same claim)
        session = pending.session
        if session is None or session.nick != nick:
            session = pending.session = Session(addr, nick, pending.nonce, now, self.config, pending.hs)
            if pending.claimed_as is not None and pending.claimed_as[0] == nick:
                # a client that started its handshake over while its Login waited: the same claim,
                # not a second one refused by the first (the token was never sent to anyone)
                session.token = pending.claimed_as[1]
        try:  # across a cluster's relays (cluster.py)
            resume = login.resume if isinstance(login.resume, int) else 0
            refused = self._claim_shared_nick(session, nick, resume)
        except roomlog.Pending as wait:  # done again when the cluster has answered
            if not self._wait_for(("login", addr), wait.key, (pending, data)):
                self._refuse_login(pending, F.Refuse(TOO_MANY_WAITING, [], pending.nonce))
            return
        if refused is not None:  # (cluster.py: could not ask: try again soon; in use elsewhere: final)
            retry = refused.retry_ms(session.token) if isinstance(refused, Unchecked) else 0
            self._refuse_login(pending, F.Refuse(str(refused), [], pending.nonce, retry))
            return
        self._forget_pending(addr)
        if isinstance(login.first_cseq, int) and 1 <= login.first_cseq < 1 << 62:
            session.next_cseq = login.first_cseq
        self.sessions[addr] = session
        self._source_count(session.source, 1)
        self._tokens[session.token] = session
        self._hold_nick(session, nick)
        self.stats["sessions_opened"] += 1
        self._events.append(SessionOpened(nick, addr))
        self._queue(session, self._logged_in(session))
        parked = self._parked.pop(login.resume, None) if login.resume else None
        if parked is not None:
            self._parked_bytes -= parked.size
            self._unpark(session, parked, now)
        self._arm(now + min(self.timing.keepalive, self.timing.timeout) / 4)
        for frame in frames[1:]:  # requests that rode with the Login
            self._session_frame(session, frame, now)

    def _refuse_login(self, pending: Pending, refuse: F.Refuse) -> None:
        """A Login refused: sealed under the handshake's keys (the reason names the nick), kept for
        a repeated msg3 until the pending handshake times out."""
        pending.answer = pending.hs.channel.seal(F.encode_one(refuse))
        self._emit(pending.answer, pending.addr)

    def _ghost_retry_ms(self, holder: Session, now: float) -> int:
        """Whether a Hello for a nick in use may try again, and in how many ms (0: final). Clients
        ping every keepalive when quiet, so a holder silent for more than 1.5 keepalives looks like
        a ghost (its client killed and restarted): try again once the timeout sweep has dropped it.
        A holder heard more recently is asked to prove it lives: try again once it should have
        been heard; a holder heard since such a doubt is alive, and the refusal is final."""
        t = self.timing
        slack = 2 * min(t.keepalive, t.timeout) / 4  # the sweep's period, twice
        ghost_after = 1.5 * t.keepalive
        doubt = holder.doubted
        if now - holder.last_heard > ghost_after:
            until = holder.last_heard + t.timeout
        elif doubt is not None and doubt < holder.last_heard and now < doubt + t.timeout:
            return 0
        else:
            holder.doubted = holder.last_heard
            until = holder.last_heard + ghost_after
        return max(1, math.ceil((until - now + slack) * 1000))

    def _logged_in(self, session: Session) -> F.LoggedIn:
        t = self.timing
        return F.LoggedIn(
            nick=session.nick,
            epoch=self.epoch,
            keepalive_ms=int(t.keepalive * 1000),
            timeout_ms=int(t.timeout * 1000),
            token=session.token,
        )

    def _reply_limited(self, addr: Addr, received: int, frames: list[F.Frame]) -> None:
        data = limited_reply(frames, received)  # before validation: at most 3x what came in
        if data is not None:
            self._emit(data, addr)

    def _hello_from_session(self, session: Session, hello: F.Hello, size: int, now: float) -> None:
        """A Hello from an address that has a session: a late copy of the one that opened it, or
        the client starting over. A valid cookie starts a new handshake; the session stays until
        that handshake's Login arrives (so a forged Hello changes nothing, and one with a cookie,
        which only an on-path attacker has, costs a handshake and nothing else)."""
        if hello.nonce == session.nonce:  # a late or replayed copy: the handshake is over
            self.stats["unauthenticated"] += 1
        elif not hello_padded(size):
            self.stats["unpadded"] += 1
        elif not self._hello_limit.allow(session.addr, now):
            self.stats["rate_limited"] += 1
        elif self.cookies.check(hello.cookie, session.addr, now):
            self._from_unknown([hello], session.addr, size, now)
        else:
            self._reply_limited(
                session.addr, size, [F.Retry(self.cookies.make(session.addr, now), F.VERSION)]
            )
