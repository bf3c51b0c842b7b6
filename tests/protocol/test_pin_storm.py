"""The client's pin file (pins.KeyPins scoped to its relay) against what members and a relay can make
it do: every nick met is pinned on first sight, and nicks cost nothing, so the file's size and the
work of writing it must stay bounded however many nicks go by. Found in review: a member renaming
itself (a relay allows 5,000 requests a second) made every member of its rooms re-read and rewrite
the whole file once per new nick, in the client's loop (85 ms a pin at 4,000 pins on this machine,
the file growing without end), and joining a room of n members wrote it n times."""

from __future__ import annotations

import tomllib

from udproom.protocol import events as E
from udproom.protocol import frames as F
from udproom.protocol import pins as P
from udproom.protocol.client import ClientSession
from udproom.protocol.crypto import Identity
from udproom.protocol.pins import KeyPins

from .harness import RELAY, HandRelay, T

ROOM = "lobby"
SCOPE = "10.0.0.1:6000"


def joined_client(tmp_path, members: list[F.MemberInfo], limit: int | None = None):
    """ann, with a file-backed pin store (at most `limit` pins), in ROOM whose member list (one
    Joined) is `members`."""
    path = tmp_path / "known_keys.toml"
    pins = KeyPins(path, SCOPE) if limit is None else KeyPins(path, SCOPE, limit)
    c = ClientSession("ann", T, key_pins=pins)
    c.connect(RELAY, 0.0)
    relay = HandRelay(c, 0.1)
    c.join(ROOM, 0.1)
    join = next(f for f in relay.frames(c.datagrams_to_send(0.1)) if type(f) is F.Req and f.op == F.OP_JOIN)
    everyone = [F.MemberInfo("ann", key=c.identity.public), *members]
    c.receive_datagram(
        relay.seal([F.Joined(join.cseq, ROOM, "ann", 2, 1, "", everyone, 0, len(everyone))]), RELAY, 0.2
    )
    assert c.rooms[ROOM].ready
    return c, relay, pins


def count_writes(monkeypatch) -> list[int]:
    writes = [0]
    real = P._PinFile._write

    def counted(self, pins):
        writes[0] += 1
        real(self, pins)

    monkeypatch.setattr(P._PinFile, "_write", counted)
    return writes


def file_pins(tmp_path) -> dict[str, str]:
    return tomllib.loads((tmp_path / "known_keys.toml").read_text())[SCOPE]


def test_a_member_list_is_pinned_with_one_write_of_the_file(tmp_path, monkeypatch):
    writes = count_writes(monkeypatch)
    keys = [Identity.generate().public for _ in range(20)]
    _, _, pins = joined_client(tmp_path, [F.MemberInfo(f"m{i}", key=k) for i, k in enumerate(keys)])
    assert len(file_pins(tmp_path)) == len(pins) == 21  # every member, ann too
    assert writes[0] == 1  # (before: 21, one per member, each re-reading the whole file)


def test_a_rename_storm_leaves_the_pin_file_bounded_and_says_so_once(tmp_path, monkeypatch):
    """A member renaming itself again and again: at most `limit` nicks are pinned (in memory and in
    the file), the file is written at most once per datagram, the room is told once that new nicks
    are no longer pinned, and no KeyPinned is claimed for a nick that was not pinned."""
    limit, renames, per_datagram = 30, 120, 6
    mallory = Identity.generate().public
    c, relay, pins = joined_client(tmp_path, [F.MemberInfo("m0", key=mallory)], limit)
    writes = count_writes(monkeypatch)
    seq, datagrams = 2, 0
    for first in range(0, renames, per_datagram):
        evs = [
            F.Ev(F.EV_NICK, f"m{i}", f"m{i + 1}", 1.0)
            for i in range(first, min(first + per_datagram, renames))
        ]
        c.receive_datagram(relay.seal([F.Batch(ROOM, seq, evs)]), RELAY, 0.3)
        seq += len(evs)
        datagrams += 1
    assert len(pins) == limit and len(file_pins(tmp_path)) == limit
    assert writes[0] <= datagrams
    events = []
    while (e := c.next_event()) is not None:
        events.append(e)
    pinned = [e.nick for e in events if isinstance(e, E.KeyPinned)]
    assert len(pinned) == limit  # (ann, m0 and the first renames)
    full = [e.text for e in events if isinstance(e, E.Notice) and "not pinned" in e.text]
    assert len(full) == 1 and f"{limit} nicks are pinned here already" in full[0], full
    assert c.rooms[ROOM].keys[f"m{renames}"] == mallory  # the member is still known by its key
