"""How protocol events change what the screen shows: `ChatModel.apply`, one handler per event type.

`EventFolding` is the part of `ChatModel` (a mixin, in model.py) that reads events; `_HANDLERS` maps
each event type to its handler, the way aioquic maps frame types to theirs. The connection's state
changes only through `ChatModel.set_state`.
"""

from __future__ import annotations

import time

from udproom.protocol import events as ev
from udproom.protocol.crypto import fingerprint
from udproom.protocol.names import is_direct, sanitize

from . import model as m


class EventFolding:
    """The event handlers of ChatModel."""

    # ------------------------------------------------------------------ events

    def apply(self, e) -> None:
        """Fold one protocol event into the state (one handler per event type, `_HANDLERS`)."""
        handler = _HANDLERS.get(type(e))
        if handler is not None:
            handler(self, e)

    def _on_message(self, e: ev.MessageReceived) -> None:
        room = self._room_for_event(e.room)
        if room is None:
            return
        if e.mine and not e.history and self._own_echo(room, e):
            return
        text = sanitize(e.text)
        nick = sanitize(e.nick)
        mention = (not e.mine) and (room.direct or self.is_mention(text))
        self._append(
            room,
            m.ACTION if e.action else m.MSG,
            e.ts,
            nick,
            text,
            mine=e.mine,
            mention=mention,
            seq=e.seq,
            history=e.history,
        )
        if not e.history and not e.mine:
            self._count(room, mention, True)
            if mention:
                self.changes.mention = True

    def _own_echo(self, room: m.Room, e: ev.MessageReceived) -> bool:
        """Our own post coming back: it is already on screen (pending or acknowledged). Matched by
        its local id; by text only when the core does not say which post it is (local_id 0)."""
        lid = e.local_id
        if lid:
            entry = self.pending.get(lid)
        else:
            lid, entry = next(
                (
                    (k, v)
                    for k, v in self.pending.items()
                    if v[0] == room.name and v[1].text == e.text and not v[1].echoed
                ),
                (0, None),
            )
        if entry is not None:
            rname, line = entry
            line.state = m.SENT  # delivered, even if we had given up on it
            line.cache_key = None
            line.echoed = True
            del self.pending[lid]
            self.changes.rooms.add(rname)
            self._to_room_order(self.rooms.get(rname, room), line)
            return True
        for i, line in enumerate(reversed(room.lines)):
            if i > 500:
                break
            same = (line.local_id == lid) if lid else (line.text == e.text)
            if same and line.mine and not line.echoed and line.kind <= m.ACTION:
                line.echoed = True
                self._to_room_order(room, line)
                return True
        return False

    def _on_acknowledged(self, e: ev.PostAcknowledged) -> None:
        entry = self.pending.pop(e.local_id, None)
        if entry is None:
            return
        room_name, line = entry
        line.state = m.SENT
        line.seq = e.seq
        line.cache_key = None
        self.changes.rooms.add(room_name)
        room = self.rooms.get(room_name)
        if self.stamp_order and room is not None:
            self._reposition(room, line)

    def _on_post_failed(self, e: ev.PostFailed) -> None:
        entry = self.pending.get(e.local_id)
        if entry is None:
            return
        room_name, line = entry
        refused = e.refused  # the relay said no: a retry cannot help
        reason = sanitize(e.reason)
        if refused:
            del self.pending[e.local_id]
            if self.drop_conversation(room_name, line):
                self.add_local(None, m.ERROR, f"{reason}: nothing was sent")
                self._stick(reason)
                return
        line.state = m.FAILED
        line.cache_key = None
        self.changes.rooms.add(room_name)
        room = self.rooms.get(room_name)
        if room is not None:
            again = "" if refused else " — Ctrl+R or /retry sends it again"
            self._append(room, m.ERROR, self.clock(), text=f"not delivered: {reason}{again}")

    def _member_line(self, e, kind: int, text: str = "") -> tuple[m.Room, str] | None:
        """The line of a membership event (joined, left, timed out); for a live one, the room and
        nick whose member entry the caller updates (counted as activity here)."""
        room = self._room_for_event(e.room)
        if room is None:
            return None
        nick = sanitize(e.nick)
        if kind == m.JOIN and nick == self.nick and not e.history and nick in room.members:
            return None  # our own join: "you joined" already says it
        self._append(room, kind, e.ts, nick, text, history=e.history)
        if e.history:
            return None
        self.changes.members.add(room.name)
        self._count(room, False, False)
        return room, nick

    def _on_joined(self, e: ev.MemberJoined) -> None:
        hit = self._member_line(e, m.JOIN)
        if hit is not None:
            room, nick = hit
            room.members[nick] = m.MemberState(nick, mode=e.mode)

    def _on_left(self, e: ev.MemberLeft) -> None:
        hit = self._member_line(e, m.LEAVE, sanitize(e.reason))
        if hit is not None:
            room, nick = hit
            room.members.pop(nick, None)

    def _on_timed_out(self, e: ev.MemberTimedOut) -> None:
        hit = self._member_line(e, m.TIMEOUT)
        if hit is not None:
            room, nick = hit
            member = room.members.get(nick) or room.members.setdefault(nick, m.MemberState(nick))
            member.timed_out = True
            member.timed_out_at = self.safe_ts(e.ts)

    def _on_nick(self, e: ev.NickChanged) -> None:
        room = self._room_for_event(e.room)
        if room is None:
            return
        old, new = sanitize(e.old), sanitize(e.new)
        # ours: the nick we have in this room (the core may already have told us the new
        # nick, and with several rooms the second room's event names a nick we just left)
        ours = not e.history and e.old == (room.my_nick or self.nick)
        mine = ours or (e.history and e.old == self.nick)
        self._append(room, m.NICK, e.ts, old, new, mine=mine, history=e.history)
        if e.history:
            return
        member = room.members.pop(old, None) or m.MemberState(new)
        member.nick = new
        room.members[new] = member
        self.changes.members.add(room.name)
        if ours:
            room.my_nick = e.new
            self._became(e.old, e.new)
        else:
            self._follow_rename(old, new, e.ts)
        self._count(room, False, False)

    def _on_topic(self, e: ev.TopicChanged) -> None:
        room = self._room_for_event(e.room)
        if room is None:
            return
        topic = sanitize(e.topic)
        self._append(room, m.TOPIC, e.ts, sanitize(e.nick), topic, history=e.history)
        if not e.history:
            room.topic = topic
            self.changes.topics.add(room.name)

    def _on_away(self, e: ev.AwayChanged) -> None:
        room = self._room_for_event(e.room)
        if room is None:
            return
        nick = sanitize(e.nick)
        away = sanitize(e.away)
        ours = not e.history and e.nick == (room.my_nick or self.nick)
        self._append(room, m.AWAY, e.ts, nick, away, mine=ours, history=e.history)
        if ours and self.away != (away or None):
            self.away = away or None
            self.changes.status = True
        if not e.history:
            member = room.members.get(nick) or room.members.setdefault(nick, m.MemberState(nick))
            member.away = away
            member.timed_out = False
            self.changes.members.add(room.name)

    def _on_room_joined(self, e: ev.RoomJoined) -> None:
        room = self.add_room(e.room)
        resync = room.joined  # a second RoomJoined: the session came back (reconnect)
        room.joined = True
        now = self.clock()
        room.members = {
            sanitize(x.nick): m.MemberState(sanitize(x.nick), sanitize(x.away), x.timed_out, now, x.mode)
            for x in e.members
        }
        room.topic = sanitize(e.topic)
        room.my_nick = e.nick or self.nick
        if e.nick and e.nick != self.nick:
            self.set_nick(e.nick)
        if e.room in self.auto_switch:
            self.auto_switch.discard(e.room)
            self.switch(e.room)
        here = f"{room.label} · {len(room.members)} here"
        if resync:
            self._append(room, m.INFO, now, text=f"rejoined {here}")
        else:
            topic = f" · topic: {room.topic}" if room.topic else ""
            room.join_marker = self._append(room, m.INFO, now, text=f"you joined {here}{topic}")
        self.changes.members.add(room.name)
        self.changes.topics.add(room.name)

    def _on_room_left(self, e: ev.RoomLeft) -> None:
        self.remove_room(e.room)

    def _stick(self, text: str) -> None:
        """A refusal the status line keeps until the next keystroke (or STICKY seconds)."""
        self.sticky, self.sticky_at = text, time.monotonic()
        self.changes.status = True

    def _on_refused_request(self, e: ev.RequestRefused) -> None:
        # in that room if it is open, else in the one on screen; the status line keeps it
        # until the next keystroke (a refused join has no room of its own to show it in)
        target = e.room if e.room in self.rooms else None
        self.auto_switch.discard(e.room)
        where = f" #{e.room}" if e.what == "join" and e.room and not is_direct(e.room) else ""
        text = f"{e.what}{where} refused: {sanitize(e.reason)}"
        self.add_local(target, m.ERROR, text)
        self._stick(text)

    def _on_moderated(self, e: ev.RoomModerated) -> None:
        """An operator's action: a room line naming the operator; the members pane follows."""
        room = self._room_for_event(e.room)
        if room is None:
            return
        by, target = sanitize(e.by), sanitize(e.target)
        if e.action == "mode":
            text = f"{by} set mode {target} on {room.label}"
        elif e.action == "kick":
            text = f"{by} kicked {target}" + (f" ({sanitize(e.text)})" if e.text else "")
        else:
            verb = {"ban": "banned", "unban": "unbanned", "invite": "invited"}.get(
                e.action, f"gave {e.action} to"
            )
            if e.action in ("deop", "devoice"):
                verb = f"took {e.action[2:]} from"
            text = f"{by} {verb} {target}"
        self._append(room, m.INFO, e.ts, text=text, history=e.history)
        if e.history:
            return
        member = room.members.get(target)
        if e.action == "kick":
            room.members.pop(target, None)
        elif member is not None and e.action in _MODES:
            member.mode = _MODES[e.action](member.mode)
        self.changes.members.add(room.name)
        self._count(room, False, False)

    def _on_kicked(self, e: ev.Kicked) -> None:
        label = self.rooms[e.room].label if e.room in self.rooms else f"#{e.room}"
        text = f"you were put out of {label} by {sanitize(e.by)}" + (
            f": {sanitize(e.reason)}" if e.reason else ""
        )
        self.remove_room(e.room)
        self.add_local(None, m.ERROR, text)
        self._stick(text)

    def _on_registered(self, e: ev.Registered) -> None:
        self.add_local(None, m.INFO, f"nick {sanitize(e.nick)} is registered to your key on this relay")

    def _on_notice(self, e: ev.Notice) -> None:
        target = e.room if e.room in self.rooms else None
        self.add_local(target, m.NOTICE, sanitize(e.text))

    # ------------------------------------------------------------------ connection state

    def _on_connecting(self, e: ev.Connecting) -> None:
        self.set_state(m.Conn.CONNECTING)
        self.address = e.address

    def _on_connected(self, e: ev.Connected) -> None:
        if self.outage is not None:
            room, line, since, first, _tries = self.outage
            self.outage = None
            back = f"back after {m.format_seconds(max(0.0, self.clock() - since))}"
            self._update_line(room, line, f"connection lost: {first}; {back}")
        self.set_state(m.Conn.CONNECTED, reason="")
        self.connected_once = True
        self.address = e.address
        key = e.relay_key
        self.relay_key = fingerprint(key) if isinstance(key, bytes) and key else ""
        if e.rtt is not None:
            self.rtt = e.rtt
        if e.nick and e.nick != self.nick:
            self.set_nick(e.nick)

    def _on_stalled(self, e: ev.ConnectionStalled) -> None:
        # still a session, but the relay has gone quiet: stop claiming "connected"
        self.set_state(m.Conn.STALLED)
        self.stalled_since = time.monotonic() - e.silent

    def _on_resumed(self, e: ev.ConnectionResumed) -> None:
        if self.state == m.Conn.STALLED:
            self.set_state(m.Conn.CONNECTED)
        self.changes.status = True
        if e.rtt is not None:
            self.rtt = e.rtt

    def _on_rtt(self, e: ev.RttUpdated) -> None:
        self.rtt = e.rtt
        self.changes.status = True

    def _on_lost(self, e: ev.ConnectionLost) -> None:
        reason = sanitize(e.reason)
        again = self.state == m.Conn.RECONNECTING and self.reason == reason
        # quiet since (wall clock): a stall before the loss is part of the outage
        stalled = time.monotonic() - self.stalled_since if self.state == m.Conn.STALLED else 0.0
        quiet = self.clock() - stalled
        self.set_state(m.Conn.RECONNECTING, reason)
        # (a core's delay is a few seconds: anything else is held to 0..a day, never raises)
        r = e.retry_in
        wait = min(max(r, 0.0), 86400.0) if isinstance(r, int | float) and r == r else 0.0
        self.retry_at = time.monotonic() + wait
        if self.connected_once:
            self._outage(reason, wait, quiet)
        elif not again:
            # never reached: say so once (the status line counts down each retry)
            where = f" at {self.address}" if self.address else ""
            what = f"no answer from a relay{where}" if reason.startswith("no answer") else f"{reason}{where}"
            back = "Esc goes back, " if self.esc_back else ""
            self.add_local(
                None,
                m.ERROR,
                f"{what}; retrying in {m.format_seconds(wait)} — "
                f"/connect another address, {back}Ctrl+Q quits",
            )

    def _on_refused(self, e: ev.Refused) -> None:
        self.set_state(m.Conn.REFUSED, sanitize(e.reason))
        if self.reason.startswith("cannot resolve"):  # nothing was contacted: say what happened
            text = f"{self.reason}: no relay was contacted — check the address (/connect HOST:PORT)"
        else:
            text = f"the relay refused the session: {self.reason}"
        self.add_local(None, m.ERROR, text)


#: what an operator's action does to its target's mode in the members pane
_MODES = {
    "op": lambda mode: "@",
    "deop": lambda mode: "",
    "voice": lambda mode: mode or "+",
    "devoice": lambda mode: "" if mode == "+" else mode,
}

_HANDLERS = {
    ev.MessageReceived: EventFolding._on_message,
    ev.PostAcknowledged: EventFolding._on_acknowledged,
    ev.PostFailed: EventFolding._on_post_failed,
    ev.MemberJoined: EventFolding._on_joined,
    ev.MemberLeft: EventFolding._on_left,
    ev.MemberTimedOut: EventFolding._on_timed_out,
    ev.NickChanged: EventFolding._on_nick,
    ev.TopicChanged: EventFolding._on_topic,
    ev.AwayChanged: EventFolding._on_away,
    ev.RoomJoined: EventFolding._on_room_joined,
    ev.RoomLeft: EventFolding._on_room_left,
    ev.RequestRefused: EventFolding._on_refused_request,
    ev.Notice: EventFolding._on_notice,
    ev.RoomModerated: EventFolding._on_moderated,
    ev.Kicked: EventFolding._on_kicked,
    ev.Registered: EventFolding._on_registered,
    ev.Connecting: EventFolding._on_connecting,
    ev.Connected: EventFolding._on_connected,
    ev.ConnectionStalled: EventFolding._on_stalled,
    ev.ConnectionResumed: EventFolding._on_resumed,
    ev.RttUpdated: EventFolding._on_rtt,
    ev.ConnectionLost: EventFolding._on_lost,
    ev.Refused: EventFolding._on_refused,
}
