"""`python tests/net/lossy_cli.py LOSS DUP SEED <udproom arguments>`: the real CLI, with a seeded
impairment layer (`LossyCore`) between each direct peer's socket and its core.

For the direct-mode loopback tests: an impairment proxy would be bypassed as soon as gossip
reveals the real addresses, so the loss has to live in the peer. The product only offers the hook
(`PeerClient(core_wrapper=...)`); the impairment lives here.
"""

from __future__ import annotations

import random
import sys
from typing import Any


class LossyCore:
    """Wraps a sans-IO core and drops (and duplicates) datagrams both ways, seeded.

    It has the core's surface, so `CoreProtocol` drives it unchanged."""

    def __init__(self, core: Any, loss: float = 0.0, dup: float = 0.0, seed: int | None = None) -> None:
        self.core = core
        self.loss = loss
        self.dup = dup
        self.rng = random.Random(seed)
        self.dropped = 0

    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        if self.rng.random() < self.loss:
            self.dropped += 1
            return
        self.core.receive_datagram(data, addr, now)
        if self.rng.random() < self.dup:
            self.core.receive_datagram(data, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        out = []
        for item in self.core.datagrams_to_send(now):
            if self.rng.random() < self.loss:
                self.dropped += 1
                continue
            out.append(item)
            if self.rng.random() < self.dup:
                out.append(item)
        return out

    def get_timer(self) -> float | None:
        return self.core.get_timer()

    def handle_timer(self, now: float) -> None:
        self.core.handle_timer(now)

    def next_event(self) -> Any:
        return self.core.next_event()


def main(argv: list[str]) -> int:
    loss, dup, seed = float(argv[0]), float(argv[1]), int(argv[2])
    from udproom.protocol.net import peer

    plain_init = peer.PeerClient.__init__

    def lossy_init(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["core_wrapper"] = lambda core: LossyCore(core, loss, dup, seed)
        plain_init(self, *args, **kwargs)

    peer.PeerClient.__init__ = lossy_init  # type: ignore[method-assign]
    from udproom.tui.cli import main as cli_main

    return cli_main(argv[3:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
