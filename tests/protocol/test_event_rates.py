"""What a member makes the relay store and send to everyone is bounded by its key's and its
address's post limits, whatever kind of room event it is. Found in review: posts, `/me` and direct
messages took a token (`posts_per_key`, `posts_per_address`), but a nick change, an away text or
a topic, each stored and fanned out to every member of each of the member's rooms as a post is,
was bounded only by the request rate (5,000 a second a session, 10,000 an address): a rename
storm was a post flood around the post limits (and it makes every receiver pin a new nick)."""

from __future__ import annotations

import pytest

from udproom.protocol import frames as F
from udproom.protocol.relay import Relay, RelayConfig

from .harness import HandClient, T

ROOMS = ["lobby", "den"]
BURST = 5


def member(relay: Relay, addr: tuple, nick: str, now: float) -> HandClient:
    c = HandClient(relay, addr, nick, now)
    c.send([F.Req(1 + i, F.OP_JOIN, room) for i, room in enumerate(ROOMS)], now)
    relay.datagrams_to_send(now)
    assert all(addr in relay.rooms[r].members for r in ROOMS)
    return c


def change(op: int, i: int, cseq: int) -> F.Req:
    if op == F.OP_NICK:
        return F.Req(cseq, op, "", f"mallory{i}")
    if op == F.OP_AWAY:
        return F.Req(cseq, op, "", f"away {i}")
    return F.Req(cseq, op, ROOMS[0], f"topic {i}")


@pytest.mark.parametrize("op", [F.OP_NICK, F.OP_AWAY, F.OP_TOPIC])
@pytest.mark.parametrize("limit", ["posts_per_key", "posts_per_address"])
def test_room_events_a_member_makes_take_from_its_post_limits(op, limit):
    cfg = RelayConfig(timing=T, **{limit: 1.0, f"{limit}_burst": float(BURST)})
    relay = Relay(cfg)
    now = 1.0
    c = member(relay, ("10.0.0.5", 5000), "mallory", now)
    before = {r: relay.rooms[r].seq for r in ROOMS}
    tries = 4 * BURST
    c.send([change(op, i, 1 + len(ROOMS) + i) for i in range(tries)], now)
    results = [f for f in c.frames(relay.datagrams_to_send(now)) if isinstance(f, F.Result)]
    assert len(results) == tries
    made = sum(relay.rooms[r].seq - before[r] for r in ROOMS)
    # each change is one event in each room it shows in (a topic: one room); at most BURST in all
    assert made <= BURST, made
    refused = [r for r in results if r.code == F.RES_REFUSED]
    assert refused and all("too many" in r.reason and "wait a moment" in r.reason for r in refused)
    assert "\n" not in refused[0].reason
