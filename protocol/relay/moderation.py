"""Registered nicks and room moderation (docs/security.md, "Registered nicks and moderation").

Everything is decided by identity keys, the ones sessions proved in their handshake
(`Session.key`), never by nick alone:

- A registered nick (`OP_REGISTER`) is bound to its owner's key: a Login or nick change to it with
  another key is refused; its owner always gets it (a session holding it is ended, `TAKEN_OVER`).
- A room's rules (`RoomRules`): its owner (the first member with a registered nick to make it),
  operators, voiced members, bans and invitations, all by key fingerprint (`crypto.fingerprint`:
  a ban by fingerprint needs no key), and its modes: +i invite only, +t only operators set the
  topic, +m only voiced members and operators speak. Relay operators (`RelayConfig.admin_keys`)
  are operators in every room.

Both live in the room log's records (`RoomLog.put_record`, durable when it returns): "nick/" +
nick_key -> the owner's public key (and "nick-alias/" + each other key of `names.nick_keys`, so
that a look-alike across case is refused too), "room/" + room -> the rules as JSON. A change is stored before
it is answered; a store that fails refuses the request with its reason. Each operator action is a
room event naming the operator (frames.EV_KICK ...); a kick or a ban puts the member out, tells it
in its inbox (EV_KICKED) and rotates the room's key at once.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, replace

from .. import frames as F
from ..crypto import CryptoError, fingerprint, parse_fingerprint
from ..names import (
    MAX_REASON_BYTES,
    InputError,
    canonical_room,
    check_nick,
    clip_utf8,
    nick_key,
    nick_keys,
    sanitize,
)
from ..roomlog import RoomLog, StoreError
from .state import Session, Stream, result_frame

NICK_RECORD = "nick/"
NICK_ALIAS = "nick-alias/"  # a registered nick's other keys (names.nick_keys): not counted
ROOM_RECORD = "room/"
#: the modes a room can have, as `/mode` spells them
MODES = {"i": "invite only", "m": "moderated", "t": "topic by operators"}
_MODE_RE = re.compile(r"[+-][a-z]{1,8}")


@dataclass(frozen=True, slots=True)
class RoomRules:
    """Who runs a room and how, by key fingerprint. `creator` made it (what `max_rooms_per_key`
    counts); `owner` is the creator if it had a registered nick then, and can never be deopped."""

    owner: str = ""
    creator: str = ""
    ops: frozenset[str] = frozenset()
    voiced: frozenset[str] = frozenset()
    bans: frozenset[str] = frozenset()
    invited: frozenset[str] = frozenset()
    modes: str = ""  # sorted letters of MODES

    def encode(self) -> bytes:
        return json.dumps(
            {
                "owner": self.owner,
                "creator": self.creator,
                "ops": sorted(self.ops),
                "voiced": sorted(self.voiced),
                "bans": sorted(self.bans),
                "invited": sorted(self.invited),
                "modes": self.modes,
            }
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> RoomRules:
        d = json.loads(data)
        return cls(
            owner=str(d.get("owner", "")),
            creator=str(d.get("creator", "")),
            ops=frozenset(map(str, d.get("ops", ()))),
            voiced=frozenset(map(str, d.get("voiced", ()))),
            bans=frozenset(map(str, d.get("bans", ()))),
            invited=frozenset(map(str, d.get("invited", ()))),
            modes="".join(sorted(set(str(d.get("modes", ""))) & set(MODES))),
        )


def load_rules(log: RoomLog) -> dict[str, RoomRules]:
    """Every room's rules kept in `log` (this also loads the registered nicks into its cache).
    StoreError for a damaged one: a relay that forgot a ban would let the banned in."""
    rules = {}
    for key, value in log.records(ROOM_RECORD).items():
        try:
            rules[key[len(ROOM_RECORD) :]] = RoomRules.decode(value)
        except (ValueError, TypeError, AttributeError):
            raise StoreError(f"the relay's record {key!r} is damaged") from None
    return rules


def fp_of(session: Session) -> str:
    """The fingerprint of the key the session proved ("" for none)."""
    return fingerprint(session.key) if session.key else ""


class Moderation:
    """A part of `Relay` (core.py): these methods work on the relay's state (`self.rules`, loaded
    from the log's records when the relay starts, `self._made`, rooms made per key, and
    `self._registered`, nicks registered per key)."""

    # ------------------------------------------------------------------ registered nicks

    def _nick_owner(self, nick: str) -> bytes | None:
        """The key `nick` itself is registered to (a lookup: its nick_key)."""
        return self.log.record(NICK_RECORD + nick_key(nick))

    def _nick_owners(self, nick: str) -> set[bytes]:
        """The keys of the registered nicks `nick` looks like (`names.nick_keys`): a registration
        is kept under each of its keys, its nick_key counted, the others as aliases."""
        owners = set()
        for k in nick_keys(nick):
            for prefix in (NICK_RECORD, NICK_ALIAS):
                owner = self.log.record(prefix + k)
                if owner is not None:
                    owners.add(owner)
        return owners

    def _claim_nick(self, nick: str, key: bytes | None, me: Session | None, now: float) -> str | None:
        """Why `key` may not have `nick` (None: it may). A registered nick (or a look-alike of one)
        is its owner's: another session holding a look-alike (a ghost of the owner's, or anyone)
        is ended first."""
        owners = self._nick_owners(nick)
        if not owners:
            return None
        if owners != {key}:
            return f"nick {nick} is registered on this relay"
        while (holder := self._nick_holder(nick, me)) is not None:
            self._send_now(holder, [F.Bye(F.TAKEN_OVER)])
            self._drop_session(holder, now, "reconnected")
        return None

    def _register(self, session: Session, req: F.Req) -> F.Result:
        if session.key is None:
            return result_frame(req.cseq, F.RES_REFUSED, 0, "registering a nick needs an identity key")
        if self._nick_owners(session.nick) - {session.key}:  # (a Login could not have had it)
            return result_frame(req.cseq, F.RES_REFUSED, 0, f"nick {session.nick} is registered already")
        if self._nick_owner(session.nick) is None:
            had = self._registered[session.key]
            if had >= self.config.max_nicks_per_key:
                reason = f"your key has registered {had} nicks on this relay, the most one key may"
                return result_frame(req.cseq, F.RES_REFUSED, 0, reason)
            canonical = nick_key(session.nick)  # StoreError: refused (aliases first: the count last)
            for k in sorted(nick_keys(session.nick) - {canonical}):
                self.log.put_record(NICK_ALIAS + k, session.key)
            self.log.put_record(NICK_RECORD + canonical, session.key)
            self._registered[session.key] += 1
        return result_frame(req.cseq, F.RES_OK, 0, "", "")

    # ------------------------------------------------------------------ ranks and checks

    def _rank(self, room: str, fp: str) -> int:
        """3 a relay operator, 2 the room's owner, 1 an operator, 0 anyone else."""
        if not fp:
            return 0
        if fp in self.config.admin_keys:
            return 3
        rules = self.rules.get(room)
        if rules is None:
            return 0
        return 2 if fp == rules.owner else 1 if fp in rules.ops else 0

    def _mode_of(self, room: str, session: Session) -> str:
        """What the members pane shows before the nick: "@" an operator, "+" voiced."""
        rules = self.rules.get(room)
        if rules is None and not self.config.admin_keys:
            return ""
        fp = fp_of(session)
        if self._rank(room, fp):
            return "@"
        return "+" if rules is not None and fp in rules.voiced else ""

    def _forbids(self, session: Session, room: Stream, mode: str) -> str | None:
        """Why the room's mode `mode` ("m": speak, "t": set the topic) forbids this session (None:
        it does not)."""
        rules = self.rules.get(room.name)
        if rules is None or mode not in rules.modes:
            return None
        fp = fp_of(session)
        if self._rank(room.name, fp) or (mode == "m" and fp in rules.voiced):
            return None
        if mode == "m":
            return f"#{room.name} is moderated (+m): only voiced members speak"
        return f"only operators set the topic of #{room.name} (+t)"

    def _admit(self, session: Session, name: str, new: bool) -> str | None:
        """Why `session` may not join room `name` (None: it may). A room `new` to the relay gets its
        creator (and owner) recorded first."""
        refused = self._refuses(session, name, new)
        if refused is not None or not new or name in self.rules:
            return refused
        fp = fp_of(session)
        limit = self.config.max_rooms_per_key
        owner = fp if fp and self._nick_owner(session.nick) == session.key else ""
        if owner or limit:
            self._set_rules(name, RoomRules(owner=owner, creator=fp))  # StoreError: refused
            self._made[fp] += 1
        return None

    def _refuses(self, session: Session, name: str, new: bool) -> str | None:
        """What `_admit` would say, changing nothing (a passphrase room asks before its record)."""
        fp = fp_of(session)
        rules = self.rules.get(name)
        if rules is not None and fp not in self.config.admin_keys:
            if fp in rules.bans or (rules.bans and not fp):
                return f"you are banned from #{name}"
            if "i" in rules.modes and fp not in rules.invited and not self._rank(name, fp):
                return f"#{name} is invite only (+i)"
        if not new or rules is not None:
            return None
        limit = self.config.max_rooms_per_key
        if limit and not fp:
            return "making a room on this relay needs an identity key"
        if limit and self._made[fp] >= limit:
            return f"you have made {self._made[fp]} rooms on this relay, the most one key may"
        return None

    def _set_rules(self, name: str, rules: RoomRules) -> None:
        """Store a room's rules (durable when this returns; StoreError: nothing changed)."""
        self.log.put_record(ROOM_RECORD + name, rules.encode())
        self.rules[name] = rules

    # ------------------------------------------------------------------ operator requests

    def _moderate(self, session: Session, req: F.Req, now: float) -> F.Frame:
        """A moderation request (frames.MODERATION_OPS). InputError and StoreError become
        one-line refusals (requests.py)."""
        op, cseq = req.op, req.cseq
        if op == F.OP_REGISTER:
            return self._register(session, req)
        name = canonical_room(req.room)
        room = self.rooms.get(name)
        if room is None:
            return result_frame(cseq, F.RES_REFUSED, 0, f"#{name} is not open on this relay", name)
        fp = fp_of(session)
        rank = self._rank(name, fp)
        if not rank:
            return result_frame(cseq, F.RES_REFUSED, 0, f"you are not an operator of #{name}", name)
        rules = self.rules.get(name) or RoomRules()
        if op == F.OP_MODE:
            return self._set_mode(session, room, rules, req.text, cseq, now)
        text = req.text if len(req.text) <= 4 * F.MAX_TEXT else ""
        word, rest = [*text.split(maxsplit=1), "", ""][:2]
        label, target_fp, target = self._target(word, text if op in (F.OP_BAN, F.OP_UNBAN) else "")
        if op in (F.OP_KICK, F.OP_BAN, F.OP_DEOP) and self._rank(name, target_fp) > rank:
            return result_frame(cseq, F.RES_REFUSED, 0, f"{label} outranks you in #{name}", name)
        if op == F.OP_KICK:
            if target is None or target.addr not in room.members:
                return result_frame(cseq, F.RES_REFUSED, 0, f"{label} is not in #{name}", name)
            self._put_out(room, [target], session.nick, clip_utf8(rest.strip(), MAX_REASON_BYTES), now)
            return self._after_commit(session, result_frame(cseq, F.RES_OK, room.seq, "", name))
        if op == F.OP_BAN:
            new, kind = (
                replace(
                    rules,
                    owner="" if rules.owner == target_fp else rules.owner,  # (a relay operator's ban)
                    bans=rules.bans | {target_fp},
                    ops=rules.ops - {target_fp},
                    voiced=rules.voiced - {target_fp},
                    invited=rules.invited - {target_fp},
                ),
                F.EV_BAN,
            )
        elif op == F.OP_UNBAN:
            new, kind = replace(rules, bans=rules.bans - {target_fp}), F.EV_UNBAN
        elif op == F.OP_OP:
            new, kind = replace(rules, ops=rules.ops | {target_fp}), F.EV_OP
        elif op == F.OP_DEOP:
            if target_fp == rules.owner:
                return result_frame(cseq, F.RES_REFUSED, 0, f"{label} owns #{name}", name)
            new, kind = replace(rules, ops=rules.ops - {target_fp}), F.EV_DEOP
        elif op == F.OP_VOICE:
            new, kind = replace(rules, voiced=rules.voiced | {target_fp}), F.EV_VOICE
        elif op == F.OP_DEVOICE:
            new, kind = replace(rules, voiced=rules.voiced - {target_fp}), F.EV_DEVOICE
        else:  # OP_INVITE
            new, kind = replace(rules, invited=rules.invited | {target_fp}), F.EV_INVITE
        if new == rules:  # nothing changes: nothing to store or say
            return result_frame(cseq, F.RES_OK, 0, "", name)
        self._set_rules(name, new)  # stored before anything is said (StoreError: refused)
        seq = self._room_event(room, F.Ev(kind=kind, nick=session.nick, text=label, ts=self._ts(now)), now)
        if op == F.OP_BAN:
            out = [m.session for m in room.members.values() if fp_of(m.session) == target_fp]
            if out:
                self._put_out(room, out, session.nick, "banned", now)
        return self._after_commit(session, result_frame(cseq, F.RES_OK, seq, "", name))

    def _target(self, word: str, ban: str) -> tuple[str, str, Session | None]:
        """(what events call the target, its fingerprint, its session here or None) for a nick
        `word` (of someone here, or registered) or, for a ban, the fingerprint `ban` (spaces and
        dashes allowed). InputError: neither."""
        try:
            nick = check_nick(word)
        except InputError:
            nick = ""
        if nick:
            target = self._nicks.get(nick_key(nick))
            if target is not None:
                if target.key is None:
                    raise InputError(f"{target.nick} has no identity key")
                return target.nick, fp_of(target), target
            owner = self._nick_owner(nick)
            if owner is not None:
                return nick, fingerprint(owner), None
        if ban:
            try:
                fp = parse_fingerprint(ban[:100])
            except CryptoError:
                pass
            else:
                return fp, fp, None
            raise InputError(
                f"no one called {sanitize(clip_utf8(word, 40))} is here, and it is not a fingerprint"
            )
        raise InputError(f"no one called {sanitize(clip_utf8(word, 40))} is here")

    def _set_mode(
        self, session: Session, room: Stream, rules: RoomRules, change: str, cseq: int, now: float
    ) -> F.Frame:
        name = room.name
        change = change.strip()
        if not _MODE_RE.fullmatch(change):
            reason = (
                "usage: /mode +i|-i|+t|-t|+m|-m (" + ", ".join(f"{k} {v}" for k, v in MODES.items()) + ")"
            )
            return result_frame(cseq, F.RES_REFUSED, 0, reason, name)
        unknown = [c for c in change[1:] if c not in MODES]
        if unknown:
            return result_frame(
                cseq, F.RES_REFUSED, 0, f"unknown mode {unknown[0]}: /mode +i, +t or +m", name
            )
        modes = set(rules.modes)
        modes = modes | set(change[1:]) if change[0] == "+" else modes - set(change[1:])
        new = "".join(sorted(modes))
        if new == rules.modes:
            return result_frame(cseq, F.RES_OK, 0, "", name)
        self._set_rules(name, replace(rules, modes=new))
        said = change[0] + "".join(sorted(set(change[1:])))
        seq = self._room_event(
            room, F.Ev(kind=F.EV_MODE, nick=session.nick, text=said, ts=self._ts(now)), now
        )
        return self._after_commit(session, result_frame(cseq, F.RES_OK, seq, "", name))

    def _put_out(self, room: Stream, sessions: list[Session], by: str, reason: str, now: float) -> None:
        """Kick: each member leaves the room (an EV_KICK for the others, an EV_KICKED in its own
        inbox), and the room's key changes at once (it had the old one)."""
        ts = self._ts(now)
        for target in sessions:
            self._room_event(
                room, F.Ev(kind=F.EV_KICK, nick=target.nick, text=f"{by} {reason}".rstrip(), ts=ts), now
            )
            self._unseat(target, room)
            target.inbox.append(
                F.Ev(kind=F.EV_KICKED, nick=by, text=f"{room.name} {reason}".rstrip(), ts=ts), now
            )
            self._overflowed(target)
            self._flush_inbox(target, now)
        self._rekey(room, now)


def count_registered(log: RoomLog) -> Counter[bytes]:
    """Nicks registered per key, as the log's records say."""
    return Counter(log.records(NICK_RECORD).values())


def count_made(rules: dict[str, RoomRules]) -> Counter[str]:
    """Rooms made per key fingerprint, as the rules record them."""
    return Counter(r.creator for r in rules.values() if r.creator)
