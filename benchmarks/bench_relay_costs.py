"""What the relay's core costs per timer tick, per request and per room (sans-IO, no sockets).

    python benchmarks/bench_relay_costs.py [--sessions 1000] [--rooms 20]

- tick: `--sessions` sessions, each a member of `--rooms` rooms (out of 5x that many, so rooms
  have sessions*rooms/(5*rooms) members), one event posted in every room, everyone acks it
  except 1% of the sessions (they lag); then the cost of one `handle_timer` call every 50 ms of
  simulated time, as a relay with laggards sees it. Reported against the cost of one post
  (`post`), measured in the same run, so the ratio survives a busy machine.
- request: a direct message to a nick no one has (`dm-absent`), and a post to a room of members
  including its fan-out (`post`): microseconds per request.
- memory per room: a room's ring filled with 4,096 chat events (nick 8 chars, text 20-80 chars),
  its real size (tracemalloc) against what the relay counts against `ring_bytes` (Stream.bytes).

Runs on any version of the relay that has the same sans-IO surface (main's included): this is how
the before/after figures in README were made, back to back on the same machine.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
import tracemalloc

from udproom.protocol import crypto as C
from udproom.protocol import frames as F
from udproom.protocol.relay import NO_ADDRESS_LIMITS, Relay, RelayConfig, Stream
from udproom.protocol.reliability import Timing


def _hello(kx: bytes, cookie: bytes = b"") -> bytes:
    return F.encode_one(F.padded_hello(version=F.VERSION, nick="", cookie=cookie, nonce=7, kx=kx))


def _addr(i: int) -> tuple:
    return (f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}", 5000)


class HandSession:
    """A client session with the relay core, made by hand (protocol 2's handshake: Hello, Retry,
    Hello with the cookie, Welcome, the sealed Login): `datagram(frames)` seals what to send."""

    __slots__ = ("channel",)

    def __init__(self, channel: C.SealedChannel) -> None:
        self.channel = channel

    def datagram(self, frames: list[F.Frame]) -> bytes:
        return self.channel.seal(F.encode(frames))


def _connect(relay: Relay, addr: tuple, nick: str, now: float) -> HandSession:
    hs = C.Initiator(identity=_USER, prologue=F.hello_prologue(F.Hello(F.VERSION, "", nonce=7)))
    relay.receive_datagram(_hello(hs.msg1), addr, now)
    (retry,) = F.decode(relay.datagrams_to_send(now)[0][0])
    relay.receive_datagram(_hello(hs.msg1, retry.cookie), addr, now)
    (welcome,) = F.decode(relay.datagrams_to_send(now)[0][0])
    msg3, _ = hs.finish(welcome.kx, F.encode_one(F.Login(nick)))
    relay.receive_datagram(msg3, addr, now)
    relay.datagrams_to_send(now)  # (its LoggedIn)
    return HandSession(hs.channel)


_USER = C.Identity.generate()  # (one key for every hand-made session: each proves it once)


def build(sessions: int, rooms_each: int) -> tuple[Relay, dict, float]:
    cfg = RelayConfig(
        timing=Timing(),
        max_rooms_per_session=rooms_each,
        hello_rate=1e9,
        posts_per_key=0,
        **NO_ADDRESS_LIMITS,
    )
    relay = Relay(cfg)
    now = 1.0
    total_rooms = 5 * rooms_each
    sids: dict[tuple, tuple[HandSession, int, list[str]]] = {}
    for i in range(sessions):
        addr = _addr(i)
        sid = _connect(relay, addr, f"u{i}", now)
        names = [f"r{(i + k) % total_rooms}" for k in range(rooms_each)]
        cseq = relay.sessions[addr].next_cseq
        reqs = [F.Req(cseq + k, F.OP_JOIN, name) for k, name in enumerate(names)]
        for k in range(0, len(reqs), 40):
            relay.receive_datagram(sid.datagram([*reqs[k : k + 40]]), addr, now)
        relay.datagrams_to_send(now)
        sids[addr] = (sid, cseq + len(reqs), names)
        now += 0.0001
    return relay, sids, now


def ack_all(relay: Relay, sids: dict, now: float, skip: set) -> None:
    for addr, (sid, _cseq, names) in sids.items():
        if addr in skip:
            continue
        acks = [F.Ack(name, relay.rooms[name].seq) for name in names]
        relay.receive_datagram(sid.datagram([*acks]), addr, now)
    relay.datagrams_to_send(now)


def bench_tick(sessions: int, rooms_each: int) -> dict:
    relay, sids, now = build(sessions, rooms_each)
    addrs = list(sids)
    poster = addrs[0]
    sid, cseq, names = sids[poster]
    # one event in every room a session is in (the poster is in rooms_each of them; the rest get a
    # topic from someone who is in them)
    for addr in addrs:
        s_sid, s_cseq, s_names = sids[addr]
        todo = [n for n in s_names if relay.rooms[n].seq == relay.rooms[n].flushed]
        reqs = [F.Req(cseq=s_cseq + k, op=F.OP_TOPIC, room=n, text="t") for k, n in enumerate(todo)]
        if reqs:
            relay.receive_datagram(s_sid.datagram([*reqs]), addr, now)
            sids[addr] = (s_sid, s_cseq + len(reqs), s_names)
        relay.datagrams_to_send(now)
    lagging = set(addrs[1::100])  # 1% of the sessions never ack: they lag
    ack_all(relay, sids, now, lagging)
    # warm up for 2 s of simulated time (what setting up left due is done), then measure ticks
    # every 50 ms for 1 s: the laggards are probed when their RTO is due, the rest acked everything
    t = now
    for _ in range(40):
        t += 0.05
        relay.handle_timer(t)
        relay.datagrams_to_send(t)
        for addr in addrs:
            relay.sessions[addr].last_heard = t
    gc.collect()
    times = []
    for _ in range(20):
        t += 0.05
        # the sessions that are not lagging keep talking, so nobody times out
        t0 = time.perf_counter()
        relay.handle_timer(t)
        relay.datagrams_to_send(t)
        times.append(time.perf_counter() - t0)
        for addr in addrs:
            relay.sessions[addr].last_heard = t
    tick = sum(times) / len(times)  # (mean: the ticks that probe someone are the point)
    median = sorted(times)[len(times) // 2]
    # per request: DM to an absent nick, and a post (with fan-out) in one of the poster's rooms;
    # the best of 20 rounds (the machine is shared: the minimum is the least disturbed)
    sid, cseq, names = sids[poster]
    relay.sessions[poster].bucket.rate = 1e9  # (the request rate limit is not what is measured)
    n, rounds = 100, 20

    def per_request(datagrams: list[bytes]) -> float:
        best = float("inf")
        for r in range(rounds):
            t0 = time.perf_counter()
            for data in datagrams[r * n : (r + 1) * n]:
                relay.receive_datagram(data, poster, t)
                relay.datagrams_to_send(t)
            best = min(best, (time.perf_counter() - t0) / n)
        return best

    dm = [
        sid.datagram([F.Req(cseq=cseq + k, op=F.OP_DIRECT, room="nobody", text="hi", mid=k + 1)])
        for k in range(rounds * n)
    ]
    gc.collect()
    dm_cost = per_request(dm)
    cseq += rounds * n
    members = len(relay.rooms[names[0]].members)
    posts = [
        sid.datagram([F.Req(cseq=cseq + k, op=F.OP_POST, room=names[0], text="hello there", mid=10**6 + k)])
        for k in range(rounds * n)
    ]
    post_cost = per_request(posts)
    return {
        "memberships": sum(len(r.members) for r in relay.rooms.values()),
        "lagging": len(lagging),
        "tick_us": tick * 1e6,
        "tick_median_us": median * 1e6,
        "dm_absent_us": dm_cost * 1e6,
        "post_us": post_cost * 1e6,
        "post_members": members,
        "tick_per_post": tick / post_cost,
    }


def bench_memory(events: int = 4096) -> dict:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        room = Stream("lobby", events, 1 << 30)
        for k in range(events):
            text = "chat message " + "x" * (7 + k % 60)
            room.append(
                F.Ev(
                    kind=F.EV_MSG,
                    nick=f"nick{k % 97:04d}",
                    text=text,
                    ts=1.7e9 + k / 10,
                    mid=(k * 2654435761) % 2**63,
                ),
                k,
            )
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    real = sum(s.size_diff for s in after.compare_to(before, "filename"))
    return {
        "events": events,
        "real_kib": real / 1024,
        "counted_kib": room.bytes / 1024,
        "real_per_counted": real / room.bytes,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--rooms", type=int, default=20, help="rooms each session is in")
    args = ap.parse_args()
    import udproom.protocol.relay as relay_mod

    print(f"relay: {relay_mod.__file__}")
    print(f"load average: {os.getloadavg()[0]:.2f} (2-core machine)")
    t = bench_tick(args.sessions, args.rooms)
    print(
        f"tick ({args.sessions} sessions x {args.rooms} rooms = {t['memberships']} memberships, "
        f"{t['lagging']} lagging): {t['tick_us']:.0f} us/tick on average, median {t['tick_median_us']:.0f} us"
    )
    print(
        f"request: dm to an absent nick {t['dm_absent_us']:.1f} us; "
        f"post to {t['post_members']} members {t['post_us']:.1f} us"
    )
    print(f"tick / post: {t['tick_per_post']:.2f}")
    m = bench_memory()
    print(
        f"room memory ({m['events']} events): real {m['real_kib']:.0f} KiB, "
        f"counted {m['counted_kib']:.0f} KiB "
        f"(real/counted {m['real_per_counted']:.2f})"
    )


if __name__ == "__main__":
    main()
