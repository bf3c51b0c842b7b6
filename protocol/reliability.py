"""Reliability primitives shared by the client session, the relay and the direct peer.

Pure state: no sockets, no asyncio, no clock. Times are floats passed in by the caller.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(slots=True)
class Timing:
    """Protocol intervals, in seconds. Tests shrink them to milliseconds."""

    rto_initial: float = 0.5
    rto_min: float = 0.1  # RFC 6298 says 1 s; chat on a LAN wants faster repair
    rto_max: float = 4.0
    give_up: float = 60.0  # a post unacknowledged this long is reported failed
    keepalive: float = 5.0  # send a Ping when quiet this long
    timeout: float = 20.0  # a peer silent this long is gone
    handshake: float = 6.0  # a Hello unanswered this long is reported (and retried with backoff)
    ack_delay: float = 0.01  # delayed acks coalesce this long
    reconnect_min: float = 0.5
    reconnect_max: float = 15.0

    @classmethod
    def fast(cls) -> Timing:
        """Intervals for tests: everything in milliseconds."""
        return cls(
            rto_initial=0.05,
            rto_min=0.02,
            rto_max=0.4,
            give_up=5.0,
            keepalive=0.1,
            timeout=0.6,
            handshake=0.3,
            ack_delay=0.005,
            reconnect_min=0.05,
            reconnect_max=0.4,
        )


class RttEstimator:
    """RFC 6298 smoothed RTT and retransmission timeout (Karn's rule is the caller's: sample only
    what was sent once)."""

    __slots__ = ("_max", "_min", "rto", "rttvar", "srtt")

    def __init__(self, timing: Timing) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = timing.rto_initial
        self._min = timing.rto_min
        self._max = timing.rto_max

    def sample(self, rtt: float) -> None:
        if not 0 <= rtt < math.inf:  # negative (clock step), NaN or infinite: no information
            return
        if self.srtt is None:
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.rto = min(self._max, max(self._min, self.srtt + max(0.001, 4 * self.rttvar)))

    def backoff(self, attempts: int) -> float:
        """Timeout before retransmission number `attempts` (1 = first retransmit)."""
        return min(self._max, self.rto * (2 ** max(0, attempts - 1)))

    @property
    def pace(self) -> float:
        """At most one NACK per this interval."""
        return self.srtt if self.srtt is not None else self.rto


def ranges_of(seqs: Iterable[int], limit: int = 16) -> list[int]:
    """Sorted integers -> flattened [lo, hi, lo, hi...] runs (at most `limit` runs)."""
    out: list[int] = []
    for s in seqs:
        if out and s == out[-1] + 1:
            out[-1] = s
        else:
            if len(out) >= 2 * limit:
                break
            out.extend((s, s))
    return out


def iter_ranges(flat: list[int], cap: int = 4096) -> Iterable[int]:
    """Flattened [lo, hi, ...] -> the integers, at most `cap` of them (hostile input is bounded)."""
    n = 0
    for i in range(0, len(flat) - 1, 2):
        lo, hi = flat[i], flat[i + 1]
        if hi < lo:
            continue
        for s in range(lo, min(hi, lo + cap - n - 1) + 1):
            yield s
            n += 1
        if n >= cap:
            return


class RecvStream:
    """Receiver side of one numbered stream: buffers out-of-order items, releases them in order
    exactly once, and knows what to ack and what to NACK."""

    __slots__ = ("ack_due", "buffer", "highest", "last_nack", "max_buffer", "next", "unacked")

    def __init__(self, first: int = 1, max_buffer: int = 8192) -> None:
        self.next = first  # next sequence to deliver
        self.buffer: dict[int, object] = {}
        self.max_buffer = max_buffer
        self.last_nack = -1e18
        self.unacked = 0  # items received since our last ack
        self.ack_due: float | None = None
        self.highest = first - 1

    def offer(self, seq: int, item: object) -> bool:
        """Store `item`; False if it is a duplicate or too far ahead."""
        if seq < self.next or seq in self.buffer:
            return False
        if seq - self.next >= self.max_buffer:
            return False
        self.buffer[seq] = item
        if seq > self.highest:
            self.highest = seq
        self.unacked += 1
        return True

    def pop_ready(self) -> list[tuple[int, object]]:
        out = []
        buf = self.buffer
        while self.next in buf:
            out.append((self.next, buf.pop(self.next)))
            self.next += 1
        return out

    def skip_to(self, first: int) -> int:
        """Give up on everything before `first`; returns how many sequences were skipped."""
        if first <= self.next:
            return 0
        skipped = first - self.next
        for s in [s for s in self.buffer if s < first]:
            del self.buffer[s]
            skipped -= 1
        self.next = first
        if self.highest < first - 1:
            self.highest = first - 1
        return skipped

    @property
    def cum(self) -> int:
        return self.next - 1

    def sack(self) -> list[int]:
        return ranges_of(sorted(self.buffer)) if self.buffer else []

    def missing(self, limit: int = 16) -> list[int]:
        """Flattened ranges of the holes below the highest sequence seen."""
        if not self.buffer:
            return []
        out: list[int] = []
        expect = self.next
        for s in sorted(self.buffer):
            if s > expect:
                out.extend((expect, s - 1))
                if len(out) >= 2 * limit:
                    break
            expect = s + 1
        return out

    def has_gap(self) -> bool:
        return bool(self.buffer)


class DedupeWindow:
    """Remembers the last `size` ids (message ids) for duplicate suppression."""

    __slots__ = ("_order", "_set", "_size")

    def __init__(self, size: int = 4096) -> None:
        self._set: dict[int, int] = {}
        self._order: deque[int] = deque()
        self._size = size

    def get(self, key: int) -> int | None:
        return self._set.get(key)

    def __contains__(self, key: int) -> bool:
        return key in self._set

    def add(self, key: int, value: int = 0) -> None:
        if key in self._set:
            return
        self._set[key] = value
        self._order.append(key)
        if len(self._order) > self._size:
            self._set.pop(self._order.popleft(), None)


class TokenBucket:
    """Per-source rate limit."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float, n: float = 1.0) -> bool:
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False


class RepairBudget:
    """Bytes of repair (retransmissions, NACK answers, backfill, history) one receiver may cause us
    to send, refilled like a congestion window: at most `window` bytes per round trip.

    Whatever a receiver asks for (NACKs, stale acks, repeated joins), what it can make us send is
    bounded by `window` bytes per `interval`, and `interval` never goes below `floor` (so a forged
    tiny RTT cannot speed the refill up). Callers take what they send and stop when `take` says no;
    the rest waits for the next probe or NACK after the refill.
    """

    __slots__ = ("floor", "stamp", "tokens", "window")

    def __init__(self, window: int, floor: float, now: float) -> None:
        self.window = window
        self.floor = floor
        self.tokens = float(window)
        self.stamp = now

    def available(self, now: float, interval: float) -> float:
        elapsed = now - self.stamp
        if elapsed > 0:
            rate = self.window / max(self.floor, interval)
            self.tokens = min(float(self.window), self.tokens + elapsed * rate)
            self.stamp = now
        return self.tokens

    def take(self, nbytes: int, now: float, interval: float) -> bool:
        """Spend `nbytes` if the budget has any left (it may go negative by one datagram)."""
        if self.available(now, interval) <= 0:
            return False
        self.tokens -= nbytes
        return True
