"""Direct messages' fate: a DM waits in the receiver's inbox until acknowledged (then its
sender hears it was delivered); a session that drops is parked for a while with its inbox, and
a client that comes back with its token gets it; what cannot be kept is reported failed.
"""

from __future__ import annotations

from .. import frames as F
from .state import (
    _DM_IN,
    Parked,
    RemoteSender,
    Session,
    result_frame,
)


class Inbox:
    """A part of `Relay` (core.py): these methods work on the relay's state."""

    def _resolve(self, sender: Session, cseq: int, res: F.Result) -> None:
        """A deferred direct message's answer, now known."""
        if type(sender) is RemoteSender:  # (it came through the cluster: its relay hears it)
            sender.answer(res)
            return
        sender.deferred.discard(cseq)
        if self._tokens.get(sender.token) is sender:  # else: it reconnected and will resend
            self._store_result(sender, cseq, res)
            self._queue(sender, res)

    def _delivered(self, session: Session, acked: int) -> None:
        waiters = session.dm_waiters
        while waiters:
            seq = next(iter(waiters))
            if seq > acked:
                break
            self._resolve(*waiters.pop(seq))

    def _overflowed(self, session: Session) -> None:
        """Direct messages that fell off a full inbox before they were delivered: say so."""
        waiters, first = session.dm_waiters, session.inbox.first
        while waiters:
            seq = next(iter(waiters))
            if seq >= first:
                break
            sender, cseq, _ = waiters.pop(seq)
            reason = f"{session.nick} has too many unread direct messages"
            self._resolve(sender, cseq, result_frame(cseq, F.RES_REFUSED, 0, reason))

    def _refuse_waiters(self, waiters: list, reason: str) -> None:
        for w in waiters:
            if w is not None:
                sender, cseq, _ = w
                self._resolve(sender, cseq, result_frame(cseq, F.RES_REFUSED, 0, reason))

    def _park(self, session: Session, now: float) -> None:
        """The session ends with direct messages not yet delivered: keep them for its owner."""
        m, inbox = session.inbox_member, session.inbox
        start = max(m.acked + 1, inbox.first)
        if start > inbox.seq:
            return
        events = [inbox.ring[s - inbox.first] for s in range(start, inbox.seq + 1)]
        waiters = [session.dm_waiters.get(s) for s in range(start, inbox.seq + 1)]
        session.dm_waiters.clear()
        if not any(waiters) and not any(F.decode_ev(e).kind in _DM_IN for e in events):
            return  # only echoes of what it sent: nothing anyone waits for
        parked = Parked(session.nick, events, waiters, now + self.config.inbox_keep)
        cfg = self.config
        while self._parked and (
            len(self._parked) >= cfg.max_parked or self._parked_bytes + parked.size > cfg.max_parked_bytes
        ):
            self._forget(next(iter(self._parked)))
        self._parked[session.token] = parked
        self._parked_bytes += parked.size

    def _forget(self, token: int) -> Parked | None:
        parked = self._parked.pop(token, None)
        if parked is not None:
            self._parked_bytes -= parked.size
            self._refuse_waiters(parked.waiters, f"{parked.nick} did not come back to receive it")
        return parked

    def _unpark(self, session: Session, parked: Parked, now: float) -> None:
        """Its owner is back (it presented the old token): its direct messages go to the new
        session's inbox, after the Welcome (the next probe sends them)."""
        inbox = session.inbox
        for data, waiter in zip(parked.events, parked.waiters, strict=True):
            seq = inbox.append(F.decode_ev(data), now)
            if waiter is not None:
                session.dm_waiters[seq] = waiter
        inbox.flushed = inbox.seq
        self._overflowed(session)
        self._set_probe(session.inbox_member, now + session.rtt.rto)
