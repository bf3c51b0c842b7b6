"""Membership and gossip: who is in which room, and how everyone finds everyone.

A member is confirmed only by its own PeerJoin (`_on_join`); PeerJoins are refreshed every
keepalive and carry the sender's stream window, clock, away text and topic. Members send each other
PeerList (the other members' addresses), dialed at a bounded rate. Of two peers with one nick, the
later joiner refuses itself and nobody announces it (`_nick_clash`).
"""

from __future__ import annotations

import ipaddress
import math

from .. import events as E
from .. import frames as F
from ..addr import unmapped
from ..cookies import AMPLIFICATION
from ..crypto import fingerprint, signed_event
from ..names import (
    MAX_AWAY_BYTES,
    MAX_TOPIC_BYTES,
    InvalidName,
    canonical_room,
    check_nick,
    check_text,
    look_alike,
    nick_key,
)
from ..reliability import (
    RecvStream,
)
from .state import (
    ASK_TRIES,
    GOSSIP_ENTRIES,
    LC_MAX,
    LC_STEP,
    MAX_DIAL_CREDIT,
    MAX_KEPT,
    MAX_MEMBERS,
    MAX_RX_BYTES,
    MAX_RX_ITEMS,
    SID_ROOM,
    UP,
    Link,
    LinkRoom,
    OutStream,
    Room,
    Target,
)


class Membership:
    """A part of `PeerNode` (node.py): these methods work on the node's state."""

    def _join_frame(self, link: Link, lr: LinkRoom, now: float, ask: bool) -> F.PeerJoin | None:
        name = lr.name
        out = self._stream(link, name)
        if out is None:
            return None
        if lr.target is None:
            lr.target = Target(self._base_for(out, link.node, now), now)
        r = self.rooms.get(name)
        topic, (tlc, tby), (tkey, tsig) = ("", (0, ""), (b"", b""))
        if r is not None:
            topic, (tlc, tby), (tkey, tsig) = r.topic, r.topic_key, r.topic_proof
        since = r.joined_ts if r is not None else 0.0
        lc = min(self.lc, lr.said_lc + LC_STEP, LC_MAX)  # never further than they take (state.py)
        lr.said_lc = max(lr.said_lc, lc)
        return F.PeerJoin(
            room=name,
            nick=self.nick,
            node=self.node,
            base=lr.target.base,
            top=out.seq,
            lc=lc,
            away=self.away,
            topic=topic,
            topic_lc=tlc,
            topic_by=tby,
            ask=ask,
            history=lr.history_want,
            since=since,
            topic_key=tkey,
            topic_sig=tsig,
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
                link.out.append(F.PeerLeave(room=name, nick=self.nick, reason="not here", lc=self.lc))
            return
        lr0 = link.rooms.get(name)
        if lr0 is not None and not lr0.member and j.lc < lr0.left_lc:
            return  # sent before their PeerLeave, and overtaken by it
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
            link.out.append(F.PeerLeave(room=name, nick=self.nick, reason="room full", lc=self.lc))
            return
        self._their_window(link, lr, j, jlc, now)
        self._their_away(link, j.away, first, now)
        r = self.rooms.get(name)
        if r is not None and 0 < j.topic_lc <= jlc and self._topic_ok(r, link, j):
            check_nick(j.topic_by)
            if not self._topic_signed(link, j):
                self.stats["bad_signature"] += 1  # not applied, not passed on
            else:
                r.topic, r.topic_key = j.topic, (j.topic_lc, j.topic_by)
                r.topic_proof = (j.topic_key, j.topic_sig)  # passed on with it
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
            self._check_pin(link, [name])
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
        if look_alike(link.nick, self.nick) and r is not None:
            settled_here = now - r.joined_at >= self.timing.timeout
            if not settled_here and (r.joined_ts, self.node) > (lr.since, link.node):  # we came later
                self.part(name, now)
                self._events.append(E.RequestRefused("join", name, f"nick {self.nick} is already in #{name}"))
                return True
            lr.hidden = True
        elif self._taken(name, link.nick, link):
            lr.hidden = True  # one of the two will leave; announced then if it stays
        return False

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

    def _topic_signed(self, link: Link, j: F.PeerJoin) -> bool:
        """Did the topic's setter sign the topic in `j` (docs/security.md, "Signed topics"), whoever
        passes it on? Its key must have signed the room, the topic's stamp, its text and its
        setter's nick (so no text is altered, no old topic comes back re-stamped, and none is
        said to be another's), and be the setter's: the link's own key when the link is the
        setter; else the key of the member linked under that nick (or ours); and the nick's pin if
        it has one. A setter we never met is taken at its key's word, as relayed history is (its
        nick is the claim of whoever signed)."""
        key, sig, by = j.topic_key, j.topic_sig, nick_key(j.topic_by)
        if not self.sigs.verify(key, signed_event(j.room, F.EV_TOPIC, j.topic_lc, j.topic, by=by), sig):
            return False
        if by == nick_key(self.nick):
            return key == self.identity.public
        owner = link if by == nick_key(link.nick) else self._owner(j.topic_by)
        if owner is not None and owner.key and owner.key != key:
            return False
        pinned = self.pins.get(j.topic_by)
        return pinned is None or pinned == fingerprint(key)

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
            fresh.left_lc = max(lr.left_lc, min(pl.lc, LC_MAX)) if isinstance(pl.lc, int) else lr.left_lc
        else:
            link.rooms.pop(name, None)

    def _renamed(self, link: Link, nick: str, now: float) -> None:
        old, link.nick, link.nick_at = link.nick, nick, now
        ts = self._ts(now)
        shown: list[str] = []
        for name, lr in link.rooms.items():
            if name and lr.member:
                taken = self._taken(name, nick, link)
                if lr.hidden:
                    if not taken:  # it took another nick: now it can be announced
                        lr.hidden = False
                        self._events.append(E.MemberJoined(name, self.lc, nick, ts))
                        shown.append(name)
                elif taken:
                    # renamed to a nick someone here has (a race, or an impersonation): from now
                    # on it says nothing here until one of the two goes or renames
                    lr.hidden = True
                    self._events.append(E.MemberLeft(name, self.lc, old, ts, f"took the nick {nick}"))
                    self._unhide(name, old, now)
                else:
                    self._events.append(E.NickChanged(name, self.lc, old, nick, ts))
                    shown.append(name)
        if shown:
            self._check_pin(link, shown)

    def _check_pin(self, link: Link, rooms: list[str]) -> None:
        """Trust on first use: the first identity key a nick proves (in a link handshake) is
        pinned to it. A peer showing up with, or renaming into, a pinned nick under another key
        is flagged with a line in each room it shows up in, every time; it is not refused (a
        friend who lost their key file would be locked out) and the pin keeps the first key."""
        if not link.key:
            return
        pinned = self.pins.get(link.nick)
        if pinned is None:
            pinned = self.pins.pin(link.nick, link.key)
            said = self.pins.write_error if pinned else self.pins.full
            if said and not self._pins_warned:
                self._pins_warned = True  # said once
                what = "nick pins kept in memory only" if pinned else f"{link.nick} is not pinned"
                self._events.append(E.Notice(f"{what}: {said}"))
            return
        if pinned == fingerprint(link.key):
            return
        self.stats["key_changed"] += 1
        text = (
            f"{link.nick}'s key changed: was {pinned}, now {fingerprint(link.key)} "
            f"(another person, or {link.nick} with a new key: check with them)"
        )
        for name in rooms:
            self._events.append(E.Notice(text, name))

    def _owner(self, nick: str) -> Link | None:
        """The link that has `nick`: of two with one nick (or look-alikes), the one that had it first."""
        links = [lk for lk in self.links.values() if lk.state == UP and look_alike(lk.nick, nick)]
        return min(links, key=lambda lk: lk.nick_at, default=None)

    def _taken(self, name: str, nick: str, link: Link) -> bool:
        """Is `nick` (or a look-alike) ours, or a shown member's other than `link`, in room `name`?"""
        if look_alike(nick, self.nick):
            return True
        return any(
            other is not link and look_alike(other.nick, nick) and not other.rooms[name].hidden
            for other in self._members(name)
        )

    def _unhide(self, name: str, nick: str, now: float) -> None:
        """`nick` left `name`: a member hidden for having the same nick can be announced now."""
        if look_alike(nick, self.nick):
            return
        for other in self._members(name):
            lr = other.rooms[name]
            if lr.hidden and look_alike(other.nick, nick):
                lr.hidden = False
                self._events.append(E.MemberJoined(name, self.lc, other.nick, self._ts(now)))
                return


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
