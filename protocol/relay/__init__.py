"""The relay's sans-IO core: sessions, rooms, sequencing, fan-out, repair, presence.

No sockets, no asyncio, no clock: the runner passes `now` (monotonic seconds) to every call and
`RelayConfig.wall_offset` (wall clock minus that clock) for event timestamps.

How it works, in one page (README has the long form):
- Handshake (protocol 2, docs/security.md): a Hello without a valid cookie gets a stateless Retry
  carrying an HMAC of the sender's address and a coarse time; only a Hello with a valid cookie
  gets the relay's key exchange (a Welcome with handshake message 2, proving the relay's identity
  key), and the client's sealed Login (message 3) creates the session. Before the cookie, the
  relay never answers with more than 3x the bytes it received. Everything after is sealed.
- Requests (join, post, nick...) are numbered per session (`cseq`) and handled strictly in that
  order, exactly once; a repeated request gets its stored Result again. A post's Result (and its
  broadcast) waits until the room log has committed it: one commit per flush (storage.py). Posts
  also carry a message id (`mid`) so a post resent on a new session after a reconnect is not
  duplicated either (the log remembers ids across restarts).
- Every room event gets the room's next sequence number. Every string that can reach an event is
  bounded, so any one event fits a datagram (and `Stream.append` refuses one that would not).
  Events are kept encoded; new ones are packed into Batch frames encoded once and sealed once under
  the room's key, and every member gets the same blob behind its own tag (keyed by its session):
  no one else (another member holding the room key included) can forge the relay's datagrams to it.
- Members ack (cumulative + selective ranges) and NACK holes; the relay also probes a member whose
  ack lags after an RTO (RFC 6298 estimate per session, exponential backoff; due probes come off a
  heap, so a tick costs what is due). Events live in the room log (protocol/roomlog.py, on disk
  or in memory) behind a ring per room; a joiner is backfilled from them; a member that fell
  further behind than the log keeps (retention) gets `Gone` and skips ahead. All repair to a
  session (NACK answers, probes, backfill, repeated and stale answers, names chunks) is bounded by
  its `RepairBudget`: `repair_window` bytes per round trip.
- Nicks are unique per relay (`names.nick_keys`: look-alikes too), so a direct message has one
  recipient. Its Result waits until the recipient acks it; if the recipient drops, its
  undelivered direct messages are kept (bounded, `inbox_keep`) for whoever presents its old
  session token in `Login.resume`, and the sender is told it failed if they are thrown away.
- Sessions that send nothing (clients ping when quiet) for `timing.timeout` are timed out and the
  room is told.
"""

from .core import Relay
from .state import (
    DGRAM_HEAD,
    EVENT_OVERHEAD,
    MAX_PAGE,
    NO_ADDRESS_LIMITS,
    NOT_STORED,
    EventTooBig,
    Member,
    RelayConfig,
    Session,
    SessionClosed,
    SessionOpened,
    StoreFailed,
    StoreRecovered,
    Stream,
)

__all__ = [
    "DGRAM_HEAD",
    "EVENT_OVERHEAD",
    "MAX_PAGE",
    "NOT_STORED",
    "NO_ADDRESS_LIMITS",
    "EventTooBig",
    "Member",
    "Relay",
    "RelayConfig",
    "Session",
    "SessionClosed",
    "SessionOpened",
    "StoreFailed",
    "StoreRecovered",
    "Stream",
]
