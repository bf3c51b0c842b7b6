"""Hostile input: random bytes and mutated valid frames. Only FrameError may escape the decoder;
the relay and the client count what they drop and keep serving."""

from __future__ import annotations

import random

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from udproom.protocol import events as E
from udproom.protocol import frames as F

from .harness import RELAY, Room, client_addr

VALID = [
    F.Hello(version=1, nick="nick", cookie=b"c" * 16, pad=b"\0" * 20, nonce=5),
    F.Retry(b"k" * 16),
    F.Welcome(version=1, nick="nick", epoch=42, keepalive_ms=5000, timeout_ms=20000),
    F.Req(cseq=1, op=F.OP_POST, room="lobby", text="hello", mid=99),
    F.Req(2, F.OP_JOIN, "lobby"),
    F.Result(1, 0, 5),
    F.Joined(
        cseq=1,
        room="lobby",
        nick="nick",
        base=1,
        join_seq=3,
        topic="topic",
        members=[F.MemberInfo("a"), F.MemberInfo("b", "away")],
        offset=0,
        total=2,
    ),
    F.Batch("lobby", 7, [F.Ev(kind=F.EV_MSG, nick="a", text="hi", ts=1.5, mid=3), F.Ev(F.EV_JOIN, "b")]),
    F.Ack("lobby", 9, [11, 12, 14, 20]),
    F.Nack("lobby", [1, 3]),
    F.Gone("lobby", 5),
    F.Ping(3),
    F.Bye("x"),
]
SAMPLES = [F.encode_one(f) for f in VALID] + [F.encode(VALID[3:6])]


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1 and b:
            del b[rng.randrange(len(b)) :]
        elif op == 2:
            b.insert(rng.randrange(len(b) + 1), rng.randrange(256))
        elif b:
            i = rng.randrange(len(b))
            b[i:i] = b[i : i + rng.randint(1, 8)]
    return bytes(b)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=1300))
def test_decoder_raises_only_frame_error_on_random_bytes(data):
    try:
        F.decode(data)
    except F.FrameError:
        pass


@pytest.mark.parametrize("seed", range(3))
def test_decoder_raises_only_frame_error_on_mutated_frames(seed):
    rng = random.Random(seed)
    decoded = 0
    for _ in range(3000):
        data = mutate(rng, rng.choice(SAMPLES))
        try:
            F.decode(data)
            decoded += 1
        except F.FrameError:
            pass
    assert decoded > 0  # some mutants are still valid frames: they reach the cores below


def test_decoder_refuses_oversize_datagrams():
    with pytest.raises(F.FrameError, match="over 1200"):
        F.decode(F.encode_one(F.Bye("x" * 1300)))


def test_relay_and_clients_survive_a_storm_of_garbage_and_keep_serving():
    room = Room(2, seed=12)
    room.wait_joined()
    rng = random.Random(5)
    relay = room.relay
    a, b = client_addr(0), client_addr(1)
    attackers = [("203.0.113.5", 1000 + i) for i in range(5)]
    for i in range(4000):
        data = mutate(rng, rng.choice(SAMPLES)) if i % 2 else rng.randbytes(rng.randint(0, 1300))
        src = rng.choice(attackers)
        relay.receive_datagram(data, src, room.net.now)
        room.clients[b].receive_datagram(data, RELAY, room.net.now)
        room.net.flush(RELAY)
        room.net.flush(b)
    assert relay.stats["malformed"] > 1000
    assert room.clients[b].stats["malformed"] > 500
    # still serving: a real conversation goes through, exactly once
    for k in range(10):
        room.net.call(a, room.clients[a].post, "lobby", f"after {k}")
    room.net.run_while(
        lambda: sum(1 for m in room.messages(b) if m[2].startswith("after")) < 10, room.net.now + 30
    )
    texts = [m[2] for m in room.messages(b) if m[2].startswith("after")]
    assert texts == [f"after {k}" for k in range(10)]
    assert all(src not in relay.sessions for src in attackers)  # garbage created no state
    assert not room.events(a, E.Refused)
