"""Passphrase rooms, the relay's side (docs/security.md, "Passphrase rooms (end to end)"): the
room record (salt, Argon2id parameters, key id, creator, verifier record) kept with the room
log's records, the door (a join or a history page needs the verifier), sealed bodies only, and
re-keying by the room's creator. The relay never sees a passphrase, a body key or a text.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from .. import frames as F
from ..cookies import SourceLimiter, source_of
from ..crypto import CryptoError, verifier_matches, verifier_record
from ..names import InputError, canonical_room
from ..roomlog import StoreError
from ..vault import MAX_SEALED_TEXT, MAX_SEALED_TOPIC, SHARE_BYTES, parse_proposal, sealed_topic
from .state import Session, Stream, result_frame

PREFIX = "vault/"
WEAK = "passphrase parameters weaker than this relay's"
_RECORD = struct.Struct(">B16sIQI32s32s")  # version, salt, ops, mem, kid, creator key, verifier record


class VaultRecord(NamedTuple):
    salt: bytes
    ops: int
    mem: int
    kid: int
    creator: bytes
    verifier: bytes  # verifier_record(verifier): the relay's files alone admit no one

    def pack(self) -> bytes:
        return _RECORD.pack(1, *self)

    @classmethod
    def unpack(cls, data: bytes) -> VaultRecord | None:
        if len(data) != _RECORD.size or data[0] != 1:
            return None
        return cls(*_RECORD.unpack(data)[1:])


class Vault:
    """A part of `Relay` (core.py): these methods work on the relay's state."""

    def _vault(self, name: str) -> VaultRecord | None:
        """The record of passphrase room `name`, or None for an ordinary room."""
        cache = self.__dict__.get("_vaults")
        if cache is None:
            cache = self.__dict__["_vaults"] = {}
            for key, data in self.log.records(PREFIX).items():
                rec = VaultRecord.unpack(data)
                if rec is not None:
                    cache[key[len(PREFIX) :]] = rec
        return cache.get(name)

    def _put_vault(self, name: str, rec: VaultRecord | None) -> None:
        """Store (None: delete) room `name`'s record; StoreError: refused by the caller."""
        self.log.put_record(PREFIX + name, rec.pack() if rec is not None else None)
        self._vault(name)
        if rec is not None:
            self.__dict__["_vaults"][name] = rec
        else:
            self.__dict__["_vaults"].pop(name, None)

    def _vault_door(self, session: Session, req: F.Req, now: float) -> F.Frame | None:
        """A join or a history page of a passphrase room: None lets it through (the session
        proved the current verifier, now or before); otherwise the answer (NeedPassphrase without
        a verifier, `wrong passphrase for #room` with a wrong one; both counted)."""
        try:
            name = canonical_room(req.room)
        except InputError:
            return None  # the request's own handling refuses it
        rec = self._vault(name)
        if rec is None:  # a verifier for a room without a passphrase: the client thinks it private
            return (
                None
                if not req.body
                else result_frame(req.cseq, F.RES_REFUSED, 0, f"#{name} has no passphrase", name)
            )
        if session.vault.get(name) == rec.kid:
            return None
        if not req.body:
            self.stats["passphrase_asked"] += 1
            return F.NeedPassphrase(req.cseq, name, rec.salt, rec.ops, rec.mem)
        # A wrong verifier costs its source address a token (online guessing); while it has none
        # left, nothing from it is checked. A right one costs nothing (a NAT full of members).
        guesses = self.__dict__.get("_guesses")
        if guesses is None:
            cfg = self.config
            guesses = self.__dict__["_guesses"] = SourceLimiter(
                cfg.passphrase_rate, burst=cfg.passphrase_burst
            )
        bucket = guesses.buckets.get(source_of(session.addr))
        if bucket is not None:
            bucket.take(now, 0.0)  # (refills it)
            if bucket.tokens < 1:
                self.stats["passphrase_limited"] += 1
                why = f"too many passphrase attempts for #{name}; wait"
                return result_frame(req.cseq, F.RES_REFUSED, 0, why, name)
        if not verifier_matches(rec.verifier, req.body):
            guesses.allow(session.addr, now)
            self.stats["passphrase_refused"] += 1
            return result_frame(req.cseq, F.RES_REFUSED, 0, f"wrong passphrase for #{name}", name)
        session.vault[name] = rec.kid
        return None

    def _mkprivate(self, session: Session, req: F.Req, now: float) -> F.Frame:
        """Make `room` a passphrase room (it must be new) and join it. A room that is one already
        answers NeedPassphrase: the client joins it with the passphrase instead."""
        name = canonical_room(req.room)
        cseq = req.cseq
        rec = self._vault(name)
        if rec is not None:
            return self._vault_door(session, F.Req(cseq, F.OP_JOIN, name), now) or self._join(
                session, req, now
            )
        try:
            p = parse_proposal(req.body)
        except CryptoError as exc:
            return result_frame(cseq, F.RES_REFUSED, 0, str(exc), name)
        if p.ops < self.config.argon_ops or p.mem < self.config.argon_mem:
            return result_frame(cseq, F.RES_REFUSED, 0, WEAK, name)
        if name in self.rooms or self.log.last_seq(name) > 0:
            return result_frame(
                cseq, F.RES_REFUSED, 0, f"#{name} exists and has no passphrase; pick a new room", name
            )
        if session.key is None:
            return result_frame(cseq, F.RES_REFUSED, 0, "a passphrase room needs an identity key", name)
        # What would refuse the maker's join refuses the room before its record is written...
        refused = self._rooms_full(session) or self._refuses(session, name, True)  # (rooms per key)
        if refused is not None:
            return result_frame(cseq, F.RES_REFUSED, 0, refused, name)
        rec = VaultRecord(p.salt, p.ops, p.mem, p.kid, session.key, verifier_record(p.verifier))
        try:
            self._put_vault(name, rec)
        except StoreError as exc:
            return result_frame(cseq, F.RES_REFUSED, 0, f"the relay could not store it: {exc}", name)
        session.vault[name] = rec.kid
        res = self._join(session, F.Req(cseq, F.OP_JOIN, name, arg=req.arg), now)
        if type(res) is F.Result and res.code == F.RES_REFUSED:
            # ...and one refused later (the relay full of rooms, a store or cluster failing) takes
            # it back: no passphrase room nobody is in, whose door another maker could not pass
            del session.vault[name]
            try:
                self._put_vault(name, None)
            except StoreError:
                pass  # (the record stays: the creator's key can still re-key or join it)
        return res

    def _rekey_vault(self, session: Session, req: F.Req, now: float) -> F.Frame:
        """The creator changes the passphrase: new salt, parameters, key id and verifier. Members
        in the room stay (the creator hands them the new body key, OP_KEYSHARE); anyone else must
        prove the new passphrase."""
        name = canonical_room(req.room)
        rec = self._vault(name)
        room = session.rooms.get(name)
        if rec is None or room is None:
            return result_frame(req.cseq, F.RES_REFUSED, 0, f"#{name} is not your passphrase room", name)
        if session.key != rec.creator:
            return result_frame(
                req.cseq, F.RES_REFUSED, 0, f"only the creator of #{name} changes its passphrase", name
            )
        try:
            p = parse_proposal(req.body)
        except CryptoError as exc:
            return result_frame(req.cseq, F.RES_REFUSED, 0, str(exc), name)
        if p.ops < self.config.argon_ops or p.mem < self.config.argon_mem:
            return result_frame(req.cseq, F.RES_REFUSED, 0, WEAK, name)
        new = VaultRecord(p.salt, p.ops, p.mem, p.kid, rec.creator, verifier_record(p.verifier))
        try:
            self._put_vault(name, new)
        except StoreError as exc:
            return result_frame(req.cseq, F.RES_REFUSED, 0, f"the relay could not store it: {exc}", name)
        for other in self.sessions.values():
            if other.vault.get(name) is not None:
                if name in other.rooms:
                    other.vault[name] = new.kid  # a member that stays
                else:
                    del other.vault[name]
        self.stats["passphrase_changed"] += 1
        return result_frame(req.cseq, F.RES_OK, 0, "", name)

    def _keyshare(self, session: Session, req: F.Req, now: float) -> F.Frame:
        """The re-keyer hands the new body key to one member (identity key `text`, in hex): a room
        event every member receives and only that one opens."""
        name = canonical_room(req.room)
        rec = self._vault(name)
        room = session.rooms.get(name)
        if rec is None or room is None or session.key != rec.creator:
            return result_frame(req.cseq, F.RES_REFUSED, 0, f"you cannot re-key #{name}", name)
        try:
            if len(req.body) != SHARE_BYTES or len(bytes.fromhex(req.text)) != 32:
                raise ValueError
        except ValueError:
            return result_frame(req.cseq, F.RES_REFUSED, 0, "not a key share", name)
        ev = F.Ev(kind=F.EV_KEYSHARE, nick=session.nick, text=req.text, ts=self._ts(now), body=req.body)
        seq = self._room_event(room, ev, now)
        return self._after_commit(session, result_frame(req.cseq, F.RES_OK, seq, "", name))

    def _sealed_only(self, room: Stream, req: F.Req, topic: bool = False) -> bool:
        """In a passphrase room, what a member says must be sealed: `text` empty, `body` within
        the limit. True: it is a passphrase room (and the request is fine); InputError otherwise.
        Changes nothing (a topic is set by the caller, after what may wait for the cluster)."""
        if self._vault(room.name) is None:
            return False
        limit = MAX_SEALED_TOPIC if topic else MAX_SEALED_TEXT
        if req.text or (not req.body and not topic) or len(req.body) > limit:
            raise InputError(f"#{room.name} has a passphrase: only sealed text, at most {limit} bytes")
        return True

    @staticmethod
    def _sealed_topic(req: F.Req) -> str:
        """What a passphrase room's topic is kept as (its sealed body, encoded; "" clears it)."""
        return sealed_topic(req.body) if req.body else ""
