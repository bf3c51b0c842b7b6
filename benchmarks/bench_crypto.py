"""What protocol/crypto.py costs, against baselines measured in the same run.

    python benchmarks/bench_crypto.py [--members 100] [--rounds 15] [--argon-only]

- handshake: each side's work for one session (initiator: start + finish with an identity;
  responder: respond + finish, the relay's cost per new session), against one Ed25519 verify.
- datagram: seal and open of an 1150-byte payload, the per-member room tag (`seal_room` around a
  blob sealed once) and a member's `open_room`, against msgspec encoding (and decoding) a Batch
  of the same size — the work the relay already does per batch.
- sign / verify one message, and a verification cache hit.
- Argon2id with the chosen parameters (ARGON_OPS, ARGON_MEM): what a passphrase join costs.
- relay fan-out: the sans-IO relay core with one room of `--members` members, 9 posts of ~110
  bytes per round (one ~1150-byte batch to every member), each member's datagram then sent with a
  real `sendto` to a socket on 127.0.0.1. Three variants timed in alternating rounds (best round
  each): plain (today), room key (the batch sealed once per batch, a 16-byte session tag per
  member: the design in docs/security.md), and per-member sealing (each member's datagram sealed
  under its session key). Deliveries/s of each against plain.

Figures only; nothing here passes or fails. Everything is in-process except one loopback socket
pair (port 0), closed at the end.

`bench_fanout` is long because it is one measurement read top to bottom: the three variants share
one room, one socket pair and one timing loop, so each is measured under the same conditions.
"""

from __future__ import annotations

import argparse
import gc
import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_relay_costs import _addr, _connect  # one home for a benchmark's relay sessions

from udproom.protocol import crypto as C
from udproom.protocol import frames as F
from udproom.protocol.relay import DGRAM_HEAD, Relay, RelayConfig
from udproom.protocol.reliability import Timing


def best_us(fn, n: int, rounds: int = 7) -> float:
    """Best of `rounds` of `n` calls, microseconds per call (the least disturbed on a busy box)."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def bench_handshake() -> dict:
    """Fixed ephemeral secrets make msg2 and msg3 the same every time (Ed25519 is deterministic),
    so each side's work can be timed alone, constructor (its X25519 key pair) included."""
    relay, user = C.Identity.generate(), C.Identity.generate()
    e_i, e_r = os.urandom(32), os.urandom(32)
    ini = C.Initiator(identity=user, pinned=relay.public, ephemeral=e_i)
    msg1 = ini.start()
    msg2 = C.Responder(relay, ephemeral=e_r).respond(msg1, b"welcome")
    msg3, _ = ini.finish(msg2, b"login")

    def initiator():
        C.Initiator(identity=user, pinned=relay.public, ephemeral=e_i).finish(msg2, b"login")

    def responder():
        res = C.Responder(relay, ephemeral=e_r)
        res.respond(msg1, b"welcome")
        res.finish(msg3)

    def respond_only():
        C.Responder(relay, ephemeral=e_r).respond(msg1, b"welcome")

    data = b"x" * 64
    sig = user.sign(data)
    return {
        "initiator": best_us(initiator, 200),
        "responder": best_us(responder, 200),
        "responder_respond": best_us(respond_only, 200),
        "verify": best_us(lambda: C.verify(user.public, data, sig), 500),
    }


def _batch_of(size: int) -> F.Batch:
    events = []
    k = 0
    while F.size_of(F.Batch("lobby", 1, events)) < size - 120:
        events.append(F.Ev(F.EV_MSG, f"nick{k}", "m" * 90, 1.7e9 + k, 10**12 + k))
        k += 1
    pad = size - F.size_of(F.Batch("lobby", 1, events)) - 40
    events.append(F.Ev(F.EV_MSG, "last", "p" * max(0, pad), 1.7e9, 7))
    return F.Batch("lobby", 1, events)


def bench_datagram(size: int = 1150) -> dict:
    ini = C.Initiator()
    res = C.Responder(C.Identity.generate())
    msg3, _ = ini.finish(res.respond(ini.start()))
    res.finish(msg3)
    a, b = ini.channel, res.channel
    batch = _batch_of(size)
    payload = F.encode([batch])
    n = 2000
    encode = best_us(lambda: F.encode([batch]), n)
    decode = best_us(lambda: F.decode(payload), n)
    sealed = [a.seal(payload) for _ in range(n * 7)]
    it = iter(sealed)
    seal = best_us(lambda: a.seal(payload), n)
    open_ = best_us(lambda: b.open(next(it)), n)
    key = C.RoomKey.generate()
    blob = key.seal(payload)
    digest = C.room_digest(blob)
    room_seal = best_us(lambda: C.room_digest(key.seal(payload)), n)
    tag = best_us(lambda: b.seal_room(blob, digest), n)
    packets = iter([b.seal_room(blob, digest) for _ in range(n * 7)])
    open_room = best_us(lambda: a.open_room(next(packets), key), n)
    return {
        "size": len(payload),
        "encode": encode,
        "decode": decode,
        "seal": seal,
        "open": open_,
        "room_seal": room_seal,
        "tag": tag,
        "open_room": open_room,
    }


def bench_signatures() -> dict:
    alice = C.Identity.generate()
    args = ("#lobby", F.EV_MSG, 12345, 1.7e9, b"m" * 200)
    data = C.signed_bytes(*args)
    sig = C.sign_message(alice, *args)
    cache = C.SignatureCache()
    cache.verify(alice.public, data, sig)
    return {
        "sign": best_us(lambda: C.sign_message(alice, *args), 500),
        "verify": best_us(lambda: C.verify(alice.public, data, sig), 500),
        "cache_hit": best_us(lambda: cache.verify(alice.public, data, sig), 2000),
    }


def bench_argon() -> dict:
    """A passphrase room's derivation (what a join, a creation and each guess cost), best of 3,
    against libsodium's INTERACTIVE parameters (2 passes, 64 MiB) in the same run."""
    import nacl.pwhash.argon2id as argon

    salt = C.new_salt()

    def best_of(ops: int, mem: int) -> float:
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            C.derive_passphrase("correct horse battery staple", salt, ops, mem, check=False)
            best = min(best, time.perf_counter() - t0)
        return best

    chosen = best_of(C.ARGON_OPS, C.ARGON_MEM)
    interactive = best_of(argon.OPSLIMIT_INTERACTIVE, argon.MEMLIMIT_INTERACTIVE)
    return {"ops": C.ARGON_OPS, "mem_mib": C.ARGON_MEM >> 20, "seconds": chosen, "interactive": interactive}


# --------------------------------------------------------------------------- relay fan-out


def _room(members: int) -> tuple[Relay, list, F.Sid, int]:
    cfg = RelayConfig(timing=Timing(), hello_rate=1e9)
    relay = Relay(cfg)
    now = 1.0
    addrs = []
    sid0, cseq0 = None, 0
    for i in range(members):
        addr = _addr(i)
        sid = _connect(relay, addr, f"u{i}", now)
        cseq = relay.sessions[addr].next_cseq
        relay.receive_datagram(F.encode([sid, F.Req(cseq, F.OP_JOIN, "lobby")]), addr, now)
        relay.datagrams_to_send(now)
        if i == 0:
            sid0, cseq0 = sid, cseq + 1
        addrs.append(addr)
    relay.sessions[addrs[0]].bucket.rate = 1e9  # (the request rate limit is not what is measured)
    return relay, addrs, sid0, cseq0


def bench_fanout(members: int, rounds: int) -> dict:
    relay, addrs, sid, cseq = _room(members)
    poster = addrs[0]
    channels = {}
    for addr in addrs:  # a session's channel per member (relay side of each handshake)
        ini = C.Initiator()
        res = C.Responder(C.Identity.generate())
        msg3, _ = ini.finish(res.respond(ini.start()))
        res.finish(msg3)
        channels[addr] = res.channel
    key = C.RoomKey.generate()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sink.bind(("127.0.0.1", 0))
        sink.setblocking(False)
        sender.setblocking(False)
        dst = sink.getsockname()
        sendto = sender.sendto

        def send(data: bytes) -> None:
            try:
                sendto(data, dst)
            except (BlockingIOError, OSError):
                pass  # a full buffer drops, as a real one does; the call was paid for

        def drain() -> None:
            for _ in range(100_000):  # bounded
                try:
                    sink.recv(2048)
                except BlockingIOError:
                    return

        def plain(out):
            for data, _addr in out:
                send(data)

        def room_key(out):
            last, blob, digest = None, b"", b""
            for data, addr in out:
                item = data[DGRAM_HEAD:]  # the shared batch bytes behind the member's Sid
                if item != last:  # one seal per batch (batches are consecutive in `out`)
                    last = item
                    blob = key.seal(item)
                    digest = C.room_digest(blob)
                send(channels[addr].seal_room(blob, digest))

        def per_member(out):
            for data, addr in out:
                send(channels[addr].seal(data))

        text = "m" * 100
        mid = [1]
        t = [2.0]
        state = {"cseq": cseq}

        def one_round(variant) -> tuple[float, int]:
            """9 posts -> one batch to every member; returns seconds and deliveries."""
            c = state["cseq"]
            data = [F.encode([sid, F.Req(c + k, F.OP_POST, "lobby", text, mid[0] + k)]) for k in range(9)]
            state["cseq"] = c + 9
            mid[0] += 9
            t[0] += 0.001
            now = t[0]
            gc.disable()
            t0 = time.perf_counter()
            for d in data:
                relay.receive_datagram(d, poster, now)
            out = relay.datagrams_to_send(now)
            variant(out)
            dt = time.perf_counter() - t0
            gc.enable()
            deliveries = sum(1 for d, _ in out if len(d) > 200)
            # everyone acks, so the relay keeps no backlog
            room = relay.rooms["lobby"]
            for addr in addrs:
                s = relay.sessions[addr]
                relay.receive_datagram(F.encode([s.sid, F.Ack("lobby", room.seq)]), addr, now)
            relay.datagrams_to_send(now)
            drain()
            return dt, deliveries

        variants = {"plain": plain, "room_key": room_key, "per_member": per_member}
        for v in variants.values():  # warm up
            for _ in range(3):
                one_round(v)
        per_delivery = {name: float("inf") for name in variants}
        for _ in range(rounds):
            for name, v in variants.items():
                best = float("inf")
                for _ in range(5):
                    dt, n = one_round(v)
                    best = min(best, dt / max(n, 1))
                per_delivery[name] = min(per_delivery[name], best)
        c = state["cseq"]
        for k in range(9):
            relay.receive_datagram(
                F.encode([sid, F.Req(c + k, F.OP_POST, "lobby", text, mid[0] + k)]), poster, t[0]
            )
        out_sizes = [len(d) for d, _ in relay.datagrams_to_send(t[0]) if len(d) > 200]
        batch_bytes = max(out_sizes) if out_sizes else 0
        # the core alone, for what costs what
        core = float("inf")
        for _ in range(rounds):
            dt, n = one_round(lambda out: None)
            core = min(core, dt / max(n, 1))
    finally:
        sink.close()
        sender.close()
    return {
        "members": members,
        "batch_bytes": batch_bytes,
        "core_us": core * 1e6,
        **{f"{k}_us": v * 1e6 for k, v in per_delivery.items()},
    }


def print_argon(a: dict) -> None:
    print(
        f"argon2id ops={a['ops']} mem={a['mem_mib']} MiB: {a['seconds']:.3f} s per join or guess "
        f"({a['seconds'] / a['interactive']:.1f}x libsodium's INTERACTIVE, {a['interactive']:.3f} s here)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--argon-only", action="store_true", help="only the passphrase derivation")
    args = ap.parse_args()
    print(f"load average: {os.getloadavg()[0]:.2f} (2-core machine)")
    if args.argon_only:
        print_argon(bench_argon())
        return

    h = bench_handshake()
    print(
        f"handshake: initiator {h['initiator']:.0f} us, responder {h['responder']:.0f} us "
        f"(its answer alone {h['responder_respond']:.0f} us, the rest is checking the client's identity); "
        f"one Ed25519 verify {h['verify']:.0f} us"
    )

    d = bench_datagram()
    print(
        f"datagram of {d['size']} bytes: msgspec encode {d['encode']:.2f} us, decode {d['decode']:.2f} us; "
        f"seal {d['seal']:.2f} us ({d['seal'] / d['encode']:.1f}x encode), "
        f"open {d['open']:.2f} us ({d['open'] / d['decode']:.1f}x decode)"
    )
    print(
        f"room key: seal once + digest {d['room_seal']:.2f} us per batch, per-member tag {d['tag']:.2f} us "
        f"({d['tag'] / d['seal']:.2f}x a full seal), member open_room {d['open_room']:.2f} us"
    )

    s = bench_signatures()
    print(
        f"signatures: sign {s['sign']:.1f} us, verify {s['verify']:.1f} us, "
        f"cache hit {s['cache_hit']:.2f} us "
        f"({s['verify'] / s['cache_hit']:.0f}x cheaper); 100k backfilled lines would take "
        f"{s['verify'] * 1e5 / 1e6:.1f} s to verify"
    )

    print_argon(bench_argon())

    f = bench_fanout(args.members, args.rounds)
    plain = f["plain_us"]
    print(
        f"relay fan-out, room of {f['members']}, {f['batch_bytes']}-byte datagrams, per delivery "
        f"(core + crypto + sendto, best of {args.rounds}x5 rounds):"
    )
    print(f"  relay core alone          {f['core_us']:.2f} us")
    for name, label in [
        ("plain", "plain (today)"),
        ("room_key", "room key + member tag"),
        ("per_member", "per-member seal"),
    ]:
        us = f[f"{name}_us"]
        print(f"  {label:<25} {us:.2f} us -> {1e6 / us:,.0f} deliveries/s, {plain / us:.2f}x plain")
    # The measured room-key variant also slices each member's plain datagram back apart (the core
    # builds Sid + batch today); wired in, the relay would seal straight from the batch. From parts:
    est = plain + d["tag"] + d["room_seal"] / f["members"]
    print(
        f"  {'room key, from parts':<25} {est:.2f} us -> {1e6 / est:,.0f} deliveries/s, "
        f"{plain / est:.2f}x plain (plain + one tag per delivery + one seal per batch / {f['members']})"
    )


if __name__ == "__main__":
    main()
