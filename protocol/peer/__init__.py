"""The direct peer's sans-IO core: rooms with no relay.

No sockets, no asyncio, no clock: every call takes `now` (monotonic seconds); `wall_offset` (wall
clock minus that clock) stamps messages and events.

How it works (README has the long form):

- **Links.** Each pair of peers talks directly over a *link*, keyed by the address that worked.
  A link starts with the relay's stateless handshake: a padded Hello earns a Retry with an HMAC
  cookie (`cookies.CookieJar`), and only a Hello carrying a valid cookie creates state; before
  that, answers are limited to 3x the bytes received. Then protocol 2's key exchange
  (`crypto.Initiator`/`Responder`, docs/security.md): msg1 in the Hello, msg2 in the Welcome, msg3
  the dialer's first sealed datagram; both ends prove their identity keys (`Link.key`) and every
  later datagram is sealed (`Link.channel`). What does not open is counted and dropped; clear
  datagrams from a linked address count only as handshake steps (`_clear_on_link`), so no one,
  on the path or off it, can speak for a link. A new node id on a link is a restarted peer; node
  ids decide nothing else (of two peers dialing each other, the higher one's handshake goes on).
- **Identity.** Each message is signed by its author (`PeerMsg.sig`) and verified against the
  link's key, history items against the key they carry; a topic is signed by its setter
  (`PeerJoin.topic_key`, `topic_sig`: `membership._topic_signed`), whoever passes it on; the first
  key a nick proves is pinned (`pins.KeyPins`) and another key under that nick is flagged in the
  room.
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
  `Bye` give `MemberLeft`. A peer that comes back dials again (sealed data from an address
  we have no keys for is counted, `unknown_source`, and not answered: an answer could not be
  authenticated) and is announced with `MemberJoined` again.
- **History.** A peer joining through a contact (an address given to `add_peer`) asks it for
  history (`PeerJoin.history`) and gets its recent room messages as `PeerHistory`.
- **Limits.** Names and text are checked with `names.py` (bad input counts as malformed and is
  dropped), per-link token buckets, a per-link `RepairBudget` for everything resent, and caps on
  links, rooms, members and buffered data (by bytes). A message is from the link it came over.
"""

from .node import PeerNode

__all__ = ["PeerNode"]
