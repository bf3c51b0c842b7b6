"""What protocol/crypto.py costs, against baselines measured in the same run.

    python benchmarks/bench_crypto.py [--members 100] [--rounds 15] [--argon-only]

- handshake: each side's work for one session (initiator: start + finish with an identity;
  responder: respond + finish, the relay's cost per new session), against one Ed25519 verify.
- datagram: seal and open of an 1150-byte payload, the per-member room tag (`seal_room` around a
  blob sealed once) and a member's `open_room`, against msgspec encoding (and decoding) a Batch
  of the same size — the work the relay already does per batch.
- sign / verify one message, and a verification cache hit.
- Argon2id with the chosen parameters (ARGON_OPS, ARGON_MEM): what a passphrase join costs.
- relay handshake: the relay core's side of whole protocol-2 handshakes (clients' work excluded).
- relay fan-out: the sans-IO relay core as wired (protocol 2) with one room of `--members`
  members, 5 signed posts of 100 bytes per round (one ~1000-byte batch to every member), each member's
  datagram then sent with a real `sendto` to a socket on 127.0.0.1; against the same relay with
  its sealing swapped out (`_sealing`: the sessions' channels replaced by a pass-through and the
  batch left clear; only this benchmark does that, no flag of the relay can), in alternating
  rounds (best round each), with and without the sendto. Deliveries/s against that baseline.

Figures only; nothing here passes or fails. Everything is in-process except one loopback socket
pair (port 0), closed at the end.

`bench_fanout` is long because it is one measurement read top to bottom: the two variants share
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
from udproom.protocol.relay import NO_ADDRESS_LIMITS, Relay, RelayConfig
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


class _Clear:
    """In place of a session's SealedChannel: the baseline without encryption (what the relay
    does besides sealing). Only this benchmark swaps it in: no flag of the relay turns sealing off."""

    def seal(self, payload: bytes) -> bytes:
        return payload

    def open(self, packet: bytes) -> bytes:
        return packet[C.HEAD_BYTES :]

    def seal_room(self, blob: bytes, digest: bytes) -> bytes:
        return blob


_CLEAR = _Clear()
SIG = C.Identity.generate().sign(b"a post")  # (any 64 bytes: the relay carries, never checks)
POSTS = 5  # signed posts of 100 bytes per round: what one batch datagram holds
_PN1 = bytes((C.SEALED, C.KIND_SESSION)) + (1).to_bytes(8, "big")  # (a head the relay routes)


def _room(members: int) -> tuple[Relay, list, dict]:
    cfg = RelayConfig(timing=Timing(), hello_rate=1e9, posts_per_key=0, **NO_ADDRESS_LIMITS)
    relay = Relay(cfg)
    now = 1.0
    addrs = []
    sessions = {}
    for i in range(members):
        addr = _addr(i)
        hand = _connect(relay, addr, f"u{i}", now)
        cseq = relay.sessions[addr].next_cseq
        relay.receive_datagram(hand.datagram([F.Req(cseq, F.OP_JOIN, "lobby")]), addr, now)
        relay.datagrams_to_send(now)
        sessions[addr] = hand
        addrs.append(addr)
    relay.sessions[addrs[0]].bucket.rate = 1e9  # (the request rate limit is not what is measured)
    return relay, addrs, sessions


def _sealing(relay: Relay, on: bool, channels: dict) -> None:
    """The relay as wired (on), or the same relay with its sealing swapped out (the baseline)."""
    for addr, session in relay.sessions.items():
        session.channel = channels[addr] if on else _CLEAR
    for room in relay.rooms.values():
        room.fanout = None
    if on:
        relay.__dict__.pop("_seal_batch", None)
    else:
        relay._seal_batch = lambda room, payload: (payload, b"")


def bench_relay_handshake(sessions: int = 200) -> dict:
    """The relay core's side of whole handshakes (Hello, Retry, Hello with cookie, Welcome, Login,
    LoggedIn), clients' work excluded, against one post with its fan-out to nobody."""
    relay = Relay(RelayConfig(timing=Timing(), hello_rate=1e9, posts_per_key=0, **NO_ADDRESS_LIMITS))
    spent = 0.0
    now = 1.0
    user = C.Identity.generate()
    for i in range(sessions):
        addr = _addr(i)
        hs = C.Initiator(identity=user, prologue=F.hello_prologue(F.Hello(F.VERSION, "", nonce=7)))
        hello = F.encode_one(F.padded_hello(version=F.VERSION, nick="", nonce=7, kx=hs.msg1))
        t0 = time.perf_counter()
        relay.receive_datagram(hello, addr, now)
        (retry,) = F.decode(relay.datagrams_to_send(now)[0][0])
        spent += time.perf_counter() - t0
        again = F.encode_one(
            F.padded_hello(version=F.VERSION, nick="", nonce=7, kx=hs.msg1, cookie=retry.cookie)
        )
        t0 = time.perf_counter()
        relay.receive_datagram(again, addr, now)
        (welcome,) = F.decode(relay.datagrams_to_send(now)[0][0])
        spent += time.perf_counter() - t0
        msg3, _ = hs.finish(welcome.kx, F.encode_one(F.Login(f"u{i}")))
        t0 = time.perf_counter()
        relay.receive_datagram(msg3, addr, now)
        relay.datagrams_to_send(now)
        spent += time.perf_counter() - t0
    return {"sessions": sessions, "relay_us": spent / sessions * 1e6}


def bench_fanout(members: int, rounds: int) -> dict:
    """The relay as wired (each batch sealed once under the room key, a tag per member) against
    the same relay with its sealing swapped out (`_sealing`), alternating rounds in one run."""
    relay, addrs, hands = _room(members)
    channels = {addr: relay.sessions[addr].channel for addr in addrs}
    poster = addrs[0]
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sink.bind(("127.0.0.1", 0))
        sink.setblocking(False)
        sender.setblocking(False)
        dst = sink.getsockname()
        sendto = sender.sendto

        def send_all(out) -> None:
            for data, _addr in out:
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

        text = "m" * 100
        state = {"cseq": relay.sessions[poster].next_cseq, "mid": 1, "t": 2.0}

        def datagram(addr: tuple, frames: list, sealed: bool) -> bytes:
            return hands[addr].datagram(frames) if sealed else _PN1 + F.encode(frames)

        def one_round(sealed: bool, send: bool = True) -> tuple[float, int, int]:
            """POSTS posts -> one batch to every member; returns seconds, deliveries, datagram size."""
            _sealing(relay, sealed, channels)
            c, mid = state["cseq"], state["mid"]
            # (signed, as every post is: the signature travels in the batch; the relay does not check it)
            reqs = [F.Req(c + k, F.OP_POST, "lobby", text, mid + k, sig=SIG) for k in range(POSTS)]
            data = [datagram(poster, [r], sealed) for r in reqs]
            state["cseq"], state["mid"] = c + POSTS, mid + POSTS
            state["t"] += 0.001
            now = state["t"]
            gc.disable()
            t0 = time.perf_counter()
            for d in data:
                relay.receive_datagram(d, poster, now)
            out = relay.datagrams_to_send(now)
            if send:
                send_all(out)
            dt = time.perf_counter() - t0
            gc.enable()
            big = [len(d) for d, _ in out if len(d) > 200]
            # everyone acks, so the relay keeps no backlog
            seq = relay.rooms["lobby"].seq
            for addr in addrs:
                relay.receive_datagram(datagram(addr, [F.Ack("lobby", seq)], sealed), addr, now)
            relay.datagrams_to_send(now)
            drain()
            return dt, len(big), max(big, default=0)

        for _ in range(3):  # warm up
            one_round(True)
            one_round(False)
        best = {
            "plain": float("inf"),
            "encrypted": float("inf"),
            "plain_core": float("inf"),
            "encrypted_core": float("inf"),
        }
        sizes = {}
        for _ in range(rounds):
            for sealed, name in ((False, "plain"), (True, "encrypted")):
                for send, key in ((True, name), (False, f"{name}_core")):
                    for _ in range(5):
                        dt, n, size = one_round(sealed, send)
                        best[key] = min(best[key], dt / max(n, 1))
                        sizes[name] = size
        _sealing(relay, True, channels)
    finally:
        sink.close()
        sender.close()
    return {
        "members": members,
        "plain_bytes": sizes["plain"],
        "encrypted_bytes": sizes["encrypted"],
        **{f"{k}_us": v * 1e6 for k, v in best.items()},
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

    r = bench_relay_handshake()
    print(
        f"relay handshake, the relay core's side of {r['sessions']} whole handshakes (Hello, Retry, "
        f"Hello, Welcome, Login, LoggedIn): {r['relay_us']:.0f} us per session"
    )

    f = bench_fanout(args.members, args.rounds)
    plain, enc = f["plain_us"], f["encrypted_us"]
    print(
        f"relay fan-out, room of {f['members']}, {POSTS} signed posts -> one batch per member "
        f"({f['plain_bytes']} bytes plain, {f['encrypted_bytes']} sealed), per delivery, best of "
        f"{args.rounds}x5 alternating rounds:"
    )
    print(
        f"  with sendto: plain {plain:.2f} us ({1e6 / plain:,.0f}/s), encrypted {enc:.2f} us "
        f"({1e6 / enc:,.0f}/s): {plain / enc:.2f}x"
    )
    pc, ec = f["plain_core_us"], f["encrypted_core_us"]
    print(
        f"  relay core alone: plain {pc:.2f} us, encrypted {ec:.2f} us: {pc / ec:.2f}x "
        f"(sealing costs {ec - pc:.2f} us a delivery)"
    )
    m = f["members"]
    print(
        f"  what costs what, from the parts above: a member's tag {d['tag']:.2f} us, the batch's seal "
        f"{d['room_seal'] / m:.2f} us / delivery, opening the {POSTS} posts' datagrams at most "
        f"{POSTS * d['open'] / m:.2f} us / delivery ({POSTS} opens of <= {d['size']} bytes / {m} members)"
    )


if __name__ == "__main__":
    main()
