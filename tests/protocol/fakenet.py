"""A seeded, simulated network for the sans-IO cores: loss, duplication, delay/reordering, and links
that go dark for a while. Time is simulated; nothing sleeps."""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field


@dataclass
class Impairment:
    loss: float = 0.0
    dup: float = 0.0
    delay: float = 0.001  # base one-way latency
    jitter: float = 0.0  # extra random delay, which reorders
    dark: list[tuple[float, float]] = field(default_factory=list)  # (start, end) windows, all links


class FakeNet:
    def __init__(self, seed: int = 0, imp: Impairment | None = None) -> None:
        self.rng = random.Random(seed)
        self.imp = imp or Impairment()
        self.now = 0.0
        self.nodes: dict[tuple, object] = {}
        self.queue: list[tuple[float, int, bytes, tuple, tuple]] = []
        self._n = 0
        self.events: dict[tuple, list] = {}
        self.dark_links: dict[tuple, list[tuple[float, float]]] = {}  # per node address
        self.sent = 0
        self.dropped = 0
        #: called with (src, dst, data) for every datagram a node puts on the wire (an on-path
        #: observer: `Adversary.eavesdrop`)
        self.taps: list = []

    def add(self, addr: tuple, node: object) -> object:
        self.nodes[addr] = node
        self.events[addr] = []
        return node

    def remove(self, addr: tuple) -> None:
        """The node's process dies: it vanishes without a word."""
        self.nodes.pop(addr, None)

    def _dark(self, src: tuple, dst: tuple, t: float) -> bool:
        for a, b in self.imp.dark:
            if a <= t < b:
                return True
        for addr in (src, dst):
            for a, b in self.dark_links.get(addr, ()):
                if a <= t < b:
                    return True
        return False

    def flush(self, addr: tuple) -> None:
        node = self.nodes.get(addr)
        if node is None:
            return
        for data, dst in node.datagrams_to_send(self.now):
            self.sent += 1
            for tap in self.taps:
                tap(addr, dst, data)
            imp = self.imp
            if self._dark(addr, dst, self.now) or self.rng.random() < imp.loss:
                self.dropped += 1
                continue
            copies = 2 if self.rng.random() < imp.dup else 1
            for _ in range(copies):
                at = self.now + imp.delay + self.rng.random() * imp.jitter
                self._n += 1
                heapq.heappush(self.queue, (at, self._n, data, addr, dst))
        self._drain(addr)

    def _drain(self, addr: tuple) -> None:
        node = self.nodes.get(addr)
        if node is None:
            return
        sink = self.events[addr]
        while (ev := node.next_event()) is not None:
            sink.append(ev)

    def step(self) -> bool:
        """Advance to the next thing that happens. False when nothing is left to do."""
        t_next = None
        who = None
        for addr, node in self.nodes.items():
            t = node.get_timer()
            if t is not None and (t_next is None or t < t_next):
                t_next, who = t, addr
        if self.queue and (t_next is None or self.queue[0][0] <= t_next):
            self._deliver_next()
            return True
        if t_next is None:
            return False
        self.now = max(self.now, t_next)
        self.nodes[who].handle_timer(self.now)
        self.flush(who)
        return True

    def _deliver_next(self) -> None:
        """The next datagram on the wire reaches its node (if it is still there)."""
        at, _, data, src, dst = heapq.heappop(self.queue)
        self.now = max(self.now, at)
        node = self.nodes.get(dst)
        if node is not None:
            node.receive_datagram(data, src, self.now)
            self.flush(dst)

    def run_until(self, t_end: float, max_steps: int = 5_000_000) -> None:
        steps = 0
        while steps < max_steps:
            # peek the next time without doing it
            nxt = self._peek()
            if nxt is None or nxt > t_end:
                self.now = max(self.now, t_end)
                return
            self.step()
            steps += 1
        raise AssertionError("simulation did not settle within its step budget")

    def run_while(self, cond, t_limit: float, max_steps: int = 5_000_000) -> None:
        """Run while cond() holds, up to simulated time t_limit."""
        steps = 0
        while cond() and steps < max_steps:
            nxt = self._peek()
            if nxt is None or nxt > t_limit:
                return
            self.step()
            steps += 1
        if steps >= max_steps:
            raise AssertionError("simulation did not settle within its step budget")

    def _peek(self) -> float | None:
        cands = [t for n in self.nodes.values() if (t := n.get_timer()) is not None]
        if self.queue:
            cands.append(self.queue[0][0])
        return min(cands) if cands else None

    def call(self, addr: tuple, fn, *args):
        """Run a command on a node at the current time and send what it wants sent."""
        result = fn(*args, self.now) if args else fn(self.now)
        self.flush(addr)
        return result


class IndexedNet(FakeNet):
    """FakeNet with the nodes' timers in a heap: a step costs O(log nodes), not a walk over every
    node (what made a simulated cluster of 300 members cost minutes). A sans-IO core's timer moves
    only when it is called, and every call goes through `flush` (receive, timer, `call`), which
    re-reads that node's timer; a node whose timer another node's call can move (the cluster's
    stand-in, which a relay's commit schedules) is `watch`ed: re-read after every flush. Entries are
    checked against the node's timer when they come up (a stale one is dropped or moved)."""

    def __init__(self, seed: int = 0, imp: Impairment | None = None) -> None:
        super().__init__(seed, imp)
        self._timers: list[tuple[float, int, tuple]] = []
        self._armed: dict[tuple, float | None] = {}
        self._watched: list[tuple] = []

    def add(self, addr: tuple, node: object) -> object:
        super().add(addr, node)
        self._arm(addr)
        return node

    def watch(self, addr: tuple) -> None:
        self._watched.append(addr)

    def _arm(self, addr: tuple) -> None:
        node = self.nodes.get(addr)
        t = node.get_timer() if node is not None else None
        if t is not None and self._armed.get(addr) != t:
            self._armed[addr] = t
            self._n += 1
            heapq.heappush(self._timers, (t, self._n, addr))

    def flush(self, addr: tuple) -> None:
        super().flush(addr)
        self._arm(addr)
        for w in self._watched:
            self._arm(w)

    def _next_timer(self) -> tuple[float, tuple] | None:
        timers = self._timers
        while timers:
            t, _, addr = timers[0]
            node = self.nodes.get(addr)
            cur = node.get_timer() if node is not None else None
            if cur == t:
                return t, addr
            heapq.heappop(timers)
            if self._armed.get(addr) == t:
                self._armed[addr] = None
            if cur is not None:
                self._arm(addr)
        return None

    def step(self) -> bool:
        timer = self._next_timer()
        if self.queue and (timer is None or self.queue[0][0] <= timer[0]):
            self._deliver_next()
            return True
        if timer is None:
            return False
        t, who = timer
        heapq.heappop(self._timers)
        self._armed[who] = None
        self.now = max(self.now, t)
        self.nodes[who].handle_timer(self.now)
        self.flush(who)
        return True

    def _peek(self) -> float | None:
        timer = self._next_timer()
        t = timer[0] if timer is not None else None
        if self.queue and (t is None or self.queue[0][0] < t):
            t = self.queue[0][0]
        return t
