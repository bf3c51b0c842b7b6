"""What a direct-mode link costs to open, and how long a mesh of peers takes to converge.

    python benchmarks/bench_peer_mesh.py [--pairs 200] [--seeds 5]

- handshake: CPU time of opening one link between two `PeerNode`s on the simulated network (both
  sides' work: Hello, Retry, Hello with cookie, Welcome and, in protocol 2, msg3 and the keys),
  until both sides are linked; against one Ed25519 signature verification measured in the same run
  (the unit the handshake's cost is made of).
- mesh: six peers in a chain (each given only the previous one, as in
  tests/protocol/test_peer_gossip.py::test_paying_for_gossip_does_not_slow_the_mesh_down), default
  timings, 10 ms one-way delay: the simulated time until every peer sees all six in the room with
  five links (deterministic per seed: round trips, not machine speed), and the CPU time of
  simulating it; with no loss, then with 10% loss and 5 ms jitter.

Figures only; nothing here passes or fails. No sockets: everything runs on tests' FakeNet.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from tests.protocol.fakenet import FakeNet, Impairment  # the simulated network of the tests
from udproom.protocol.peer import PeerNode
from udproom.protocol.reliability import Timing

try:  # protocol 2: each peer proves an identity key
    from udproom.protocol import crypto as C
except ImportError:  # pragma: no cover
    C = None

_TAKES_IDENTITY = "identity" in inspect.signature(PeerNode).parameters


def _node(nick: str, timing: Timing) -> PeerNode:
    if _TAKES_IDENTITY:
        return PeerNode(nick, timing=timing, identity=C.Identity.generate())
    return PeerNode(nick, timing=timing)


def _addr(i: int) -> tuple:
    return (f"10.0.0.{i + 1}", 7000 + i)


def bench_handshake(pairs: int) -> float:
    """CPU seconds per link opened (both sides), best of three batches."""
    best = float("inf")
    for _ in range(3):
        nets = []
        for _ in range(pairs):
            net = FakeNet(seed=1, imp=Impairment(delay=0.001))
            a = net.add(_addr(0), _node("a", Timing()))
            b = net.add(_addr(1), _node("b", Timing()))
            nets.append((net, a, b))
        t0 = time.perf_counter()
        for net, a, b in nets:
            net.call(_addr(1), b.add_peer, _addr(0))
            net.run_while(lambda a=a, b=b: a.peer_count < 1 or b.peer_count < 1, 5.0)
            assert a.peer_count == 1 and b.peer_count == 1
        best = min(best, (time.perf_counter() - t0) / pairs)
    return best


def bench_verify(n: int = 2000) -> float:
    if C is None:
        return float("nan")
    ident = C.Identity.generate()
    sig = ident.sign(b"x" * 64)
    t0 = time.perf_counter()
    for _ in range(n):
        C.verify(ident.public, b"x" * 64, sig)
    return (time.perf_counter() - t0) / n


def bench_mesh(seed: int, imp: Impairment) -> tuple[float, float]:
    """(simulated seconds to converge, CPU seconds to simulate it)"""
    net = FakeNet(seed=seed, imp=imp)
    nodes = []
    t0 = time.perf_counter()
    for i in range(6):
        node = net.add(_addr(i), _node(f"p{i}", Timing()))
        nodes.append(node)
        net.call(_addr(i), node.join, "lobby")
        if i:
            net.call(_addr(i), node.add_peer, _addr(i - 1))

    def converged() -> bool:
        return all(len(x.members("lobby")) == 6 and x.peer_count == 5 for x in nodes)

    net.run_while(lambda: not converged(), 60.0)
    cpu = time.perf_counter() - t0
    assert converged(), "the mesh did not converge in 60 simulated seconds"
    return net.now, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    print(f"protocol: {'2 (sealed links, identity keys)' if _TAKES_IDENTITY else '1 (Sid tokens)'}")
    link = bench_handshake(args.pairs)
    verify = bench_verify()
    print(f"handshake: {link * 1e6:.0f} us CPU per link (both sides, simulated network included)")
    if verify == verify:
        print(f"  one Ed25519 verify: {verify * 1e6:.0f} us -> a link costs {link / verify:.1f} verifies")
    for label, imp in (
        ("no loss", Impairment(delay=0.01)),
        ("10% loss, 5 ms jitter", Impairment(delay=0.01, loss=0.1, jitter=0.005)),
    ):
        runs = [bench_mesh(seed, imp) for seed in range(1, args.seeds + 1)]
        sim = [r[0] for r in runs]
        cpu = [r[1] for r in runs]
        print(
            f"6-peer mesh, {label}: converged in {statistics.median(sim) * 1000:.0f} ms simulated "
            f"(median of {len(runs)} seeds; min {min(sim) * 1000:.0f}, max {max(sim) * 1000:.0f}), "
            f"{statistics.median(cpu) * 1000:.1f} ms CPU to simulate"
        )


if __name__ == "__main__":
    main()
