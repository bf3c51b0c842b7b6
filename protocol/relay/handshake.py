"""The relay's side of the handshake: the stateless step for unknown addresses
(`cookies.screen_unknown`), then the checks that open a session (version, nick, room on the
relay, resume of a parked session), and what a Hello from an address that has a session means.
"""

from __future__ import annotations

import math

from .. import frames as F
from ..addr import Addr
from ..cookies import hello_padded, limited_reply, screen_unknown
from ..names import (
    InputError,
    check_nick,
    nick_key,
)
from .state import (
    Session,
    SessionOpened,
)


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
            self._reply_limited(
                addr,
                size,
                [
                    F.Refuse(
                        f"unsupported protocol version {hello.version}",
                        list(F.SUPPORTED_VERSIONS),
                        hello.nonce,
                    )
                ],
            )
            return
        try:
            nick = check_nick(hello.nick)
        except InputError as exc:
            self._reply_limited(addr, size, [F.Refuse(f"bad nick: {exc}", [], hello.nonce)])
            return
        if len(self.sessions) >= self.config.max_sessions:
            self._reply_limited(addr, size, [F.Refuse("relay is full, try later", [], hello.nonce)])
            return
        if hello.resume:
            old = self._tokens.get(hello.resume)
            if old is not None and old.addr != addr:  # the same client, from a new address
                self._drop_session(old, now, "reconnected")
        holder = self._nicks.get(nick_key(nick))
        if holder is not None:
            reason = f"nick {nick} is in use on this relay"
            refuse = F.Refuse(reason, [], hello.nonce, self._ghost_retry_ms(holder, now))
            self._reply_limited(addr, size, [refuse])
            return
        session = Session(addr, nick, hello.nonce, now, self.config)
        refused = self._claim_nick(session, nick, hello.resume)  # across a cluster's relays (cluster.py)
        if refused is not None:
            self._reply_limited(addr, size, [F.Refuse(refused, [], hello.nonce)])
            return
        if 1 <= hello.first_cseq < 1 << 62:
            session.next_cseq = hello.first_cseq
        self.sessions[addr] = session
        self._tokens[session.token] = session
        self._nicks[nick_key(nick)] = session
        self.stats["sessions_opened"] += 1
        self._events.append(SessionOpened(nick, addr))
        self._queue(session, self._welcome(session))
        parked = self._parked.pop(hello.resume, None) if hello.resume else None
        if parked is not None:
            self._parked_bytes -= parked.size
            self._unpark(session, parked, now)
        self._arm(now + min(self.timing.keepalive, self.timing.timeout) / 4)

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

    def _welcome(self, session: Session) -> F.Welcome:
        t = self.timing
        return F.Welcome(
            version=F.VERSION,
            nick=session.nick,
            epoch=self.epoch,
            keepalive_ms=int(t.keepalive * 1000),
            timeout_ms=int(t.timeout * 1000),
            token=session.token,
            nonce=session.nonce,
        )

    def _reply_limited(self, addr: Addr, received: int, frames: list[F.Frame]) -> None:
        data = limited_reply(frames, received)  # before validation: at most 3x what came in
        if data is not None:
            self._emit(data, addr)

    def _hello_from_session(self, session: Session, hello: F.Hello, size: int, now: float) -> None:
        """A Hello from an address that has a session: a retransmit (our Welcome was lost), or the
        client starting over. Only a valid cookie may end the old session: a forged Hello, which
        cannot carry one, earns a Retry and changes nothing."""
        if hello.nonce == session.nonce:
            self._queue(session, self._welcome(session))
        elif not hello_padded(size):
            self.stats["unpadded"] += 1
        elif not self._hello_limit.allow(session.addr, now):
            self.stats["rate_limited"] += 1
        elif self.cookies.check(hello.cookie, session.addr, now):
            self._drop_session(session, now, "reconnected")
            self._from_unknown([hello], session.addr, size, now)
        else:
            self._reply_limited(
                session.addr, size, [F.Retry(self.cookies.make(session.addr, now), F.VERSION)]
            )
