"""Soak of a cluster in simulated time (issue 12): N members over 3 relay cores sharing one room
through the in-memory JetStream stand-in (tests/protocol/clustersim.py), 20% of datagrams lost each
way, 3 senders, relay 0 killed halfway. Checks the invariants (every member that stays gets every
message once, in one order; each message stored once; the dead relay's members fail over and lose
nothing) and prints them with the figures: messages, deliveries, datagrams, simulated time, CPU.

    python benchmarks/soak_cluster.py                   # 1,000 members, seed 7
    python benchmarks/soak_cluster.py --members 60 --seeds 7,11 --processes 2

Bounded: the simulation stops at its step budget and 300 simulated seconds after the last post (an
invariant that does not hold then is a failure, exit 1). `--processes N` runs the seeds in N
processes (one seed each at a time). The relays, the clients and the crypto are the real sans-IO
cores; only the network (FakeNet) and JetStream (SimStream) are simulated; real NATS is covered by
tests/cluster and tests/net/test_cluster_relays.py, and bench_cluster.py measures it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from concurrent.futures import ProcessPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _one(args: tuple[int, int, int, int, float]) -> dict:
    from tests.protocol.clustersim import soak

    members, seed, senders, lines, loss = args
    try:
        return soak(members, seed=seed, senders=senders, lines=lines, loss=loss)
    except AssertionError as exc:
        return {"members": members, "seed": seed, "failed": str(exc)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=1000)
    ap.add_argument("--seeds", default="7", help="comma-separated")
    ap.add_argument("--senders", type=int, default=3)
    ap.add_argument("--lines", type=int, default=15, help="lines per sender")
    ap.add_argument("--loss", type=float, default=0.2)
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if not (3 <= a.members <= 20_000 and 0 <= a.loss < 0.6 and 1 <= a.senders <= a.members):
        ap.error("--members 3..20000, --loss 0..0.6, --senders 1..members")
    jobs = [(a.members, int(s), a.senders, a.lines, a.loss) for s in a.seeds.split(",")]
    if a.processes > 1:
        with ProcessPoolExecutor(a.processes) as pool:
            results = list(pool.map(_one, jobs))
    else:
        results = [_one(j) for j in jobs]
    if a.json:
        print(json.dumps(results))
    else:
        print(f"# soak_cluster: Python {platform.python_version()}, {os.cpu_count()} cores")
        for r in results:
            if "failed" in r:
                print(f"members={r['members']} seed={r['seed']}: FAILED: {r['failed']}")
                continue
            print(
                f"members={r['members']} relays={r['relays']} loss={r['loss']:.0%} seed={r['seed']}: "
                f"{r['messages']} messages, {r['deliveries']:,} deliveries, "
                f"{r['datagrams']:,} datagrams ({r['dropped']:,} dropped), "
                f"simulated {r['simulated_s']} s (all joined at {r['joined_at_s']} s), "
                f"CPU {r['cpu_s']} s, wall {r['wall_s']} s; failed over: {r['failed_over']} "
                f"({r['failed_over_of_dead_relay']} of the dead relay's {r['members_of_dead_relay']})"
            )
            for inv in r["invariants"]:
                print(f"  ok: {inv}")
    return 1 if any("failed" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
