"""Reliability: the one home of loss recovery for the relay, the client session and the direct peer.

Pure state: no sockets, no asyncio, no clock. Times are floats passed in by the caller. Like
aioquic's recovery.py beside its connection, the cores only call these and send what they say:

- sender side: `SendWindow` (one receiver of one numbered stream: what it acked and SACKed, its
  probe timer with RFC 6298 backoff, what a NACK or a probe resends), `RttEstimator` (per peer),
  `RepairBudget` (bytes of repair one receiver may cause per RTT), `Deadlines` (which windows'
  probes are due, without walking them all);
- receiver side: `RecvStream` (in-order release, exactly once, bounded buffer; SACK ranges and
  holes), `AckScheduler` (delayed cumulative + selective acks, NACKs paced per RTT);
- `DedupeWindow` (message ids), `TokenBucket` (rates), `Timing` (every interval).
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import deque
from collections.abc import Callable, Iterable
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

    def hello_backoff(self, tries: int) -> float:
        """How long Hello number `tries` (1 = the first) waits for an answer before the next."""
        return min(self.rto_max, self.rto_initial * 2 ** min(tries - 1, 32))

    def reconnect_backoff(self, failures: int) -> float:
        """How long to wait before reconnecting after `failures` failed attempts in a row."""
        return min(self.reconnect_max, self.reconnect_min * 2 ** min(failures, 32))

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
    exactly once, and knows what to ack and what to NACK.

    The buffered sequences are also kept in a sorted list (insertion by bisection, never a
    re-sort), so acks, NACKs and delivery walk them in order at no sorting cost. With `max_bytes`,
    the buffer holds at most that many bytes (each `offer` says its item's size): when full, the
    items furthest ahead make room for nearer ones (the next one in order is never refused)."""

    __slots__ = (
        "_order",
        "_sizes",
        "buffer",
        "bytes",
        "highest",
        "max_buffer",
        "max_bytes",
        "next",
        "unacked",
    )

    def __init__(self, first: int = 1, max_buffer: int = 8192, max_bytes: int = 0) -> None:
        self.next = first  # next sequence to deliver
        self.buffer: dict[int, object] = {}
        self._order: list[int] = []  # the keys of `buffer`, sorted
        self._sizes: dict[int, int] = {}
        self.bytes = 0  # bytes buffered (as the callers of `offer` counted them)
        self.max_buffer = max_buffer
        self.max_bytes = max_bytes  # 0: not bounded by bytes
        self.unacked = 0  # items received since our last ack
        self.highest = first - 1

    def offer(self, seq: int, item: object, size: int = 0) -> bool:
        """Store `item` (of `size` bytes); False if it is a duplicate, too far ahead, or does not
        fit the byte bound even after dropping what is further ahead."""
        if seq < self.next or seq in self.buffer:
            return False
        if seq - self.next >= self.max_buffer:
            return False
        if self.max_bytes and seq != self.next:
            order = self._order
            while self.bytes + size > self.max_bytes and order and order[-1] > seq:
                self._remove(order.pop())
            if self.bytes + size > self.max_bytes:
                return False
        self.buffer[seq] = item
        if size:
            self._sizes[seq] = size
            self.bytes += size
        bisect.insort(self._order, seq)
        if seq > self.highest:
            self.highest = seq
        self.unacked += 1
        return True

    def offer_run(self, seq: int, n: int) -> int:
        """Take sequences seq..seq+n-1 without keeping items (a receiver that only counts, such
        as the benchmark's lean member): returns how many were new. In order with nothing
        buffered (the common case) it costs the same whatever `n` is."""
        hi = seq + n - 1
        if not self._order and seq <= self.next:
            new = max(0, hi - self.next + 1)
            if new:
                self.next = hi + 1
                if hi > self.highest:
                    self.highest = hi
                self.unacked += new
            return new
        new = sum(1 for s in range(seq, hi + 1) if self.offer(s, None))
        self.pop_ready()
        return new

    def _remove(self, seq: int) -> object:
        self.bytes -= self._sizes.pop(seq, 0)
        return self.buffer.pop(seq)

    def pop_ready(self) -> list[tuple[int, object]]:
        out = []
        order = self._order
        k = 0
        while k < len(order) and order[k] == self.next:
            out.append((self.next, self._remove(self.next)))
            self.next += 1
            k += 1
        if k:
            del order[:k]
        return out

    def skip_to(self, first: int) -> int:
        """Give up on everything before `first`; returns how many sequences were skipped."""
        if first <= self.next:
            return 0
        skipped = first - self.next
        k = bisect.bisect_left(self._order, first)
        for s in self._order[:k]:
            self._remove(s)
            skipped -= 1
        del self._order[:k]
        self.next = first
        if self.highest < first - 1:
            self.highest = first - 1
        return skipped

    @property
    def cum(self) -> int:
        return self.next - 1

    def sack(self) -> list[int]:
        return ranges_of(self._order) if self._order else []

    def missing(self, limit: int = 16) -> list[int]:
        """Flattened ranges of the holes below the highest sequence seen."""
        if not self._order:
            return []
        out: list[int] = []
        expect = self.next
        for s in self._order:
            if s > expect:
                out.extend((expect, s - 1))
                if len(out) >= 2 * limit:
                    break
            expect = s + 1
        return out

    def has_gap(self) -> bool:
        return bool(self.buffer)


class AckScheduler:
    """When a receiver acks, and what: for every stream of one sender ("" = its DM stream or the
    inbox), delayed cumulative + selective acks (at once on a gap, a duplicate or `every` new
    items; else after `delay`, coalesced) and NACKs of the holes, at most one per stream per RTT.

    The core says `want(...)` when something arrived, asks `due(now)` when it sends, and then
    `take(...)` gives the acks to send, which the core wraps in its own frames."""

    __slots__ = ("_nack_at", "at", "delay", "every", "streams")

    def __init__(self, delay: float, every: int) -> None:
        self.delay = delay
        self.every = every
        self.streams: set[str] = set()  # streams owing an ack
        self.at: float | None = None  # when they are owed (None with streams: at once)
        self._nack_at: dict[str, float] = {}

    def want(self, name: str, rx: RecvStream | None, now: float, urgent: bool) -> None:
        self.streams.add(name)
        if urgent or (rx is not None and rx.unacked >= self.every):
            self.at = now
        elif self.at is None:
            self.at = now + self.delay

    def due(self, now: float) -> bool:
        return bool(self.streams) and (self.at is None or now >= self.at)

    def next_at(self, now: float) -> float | None:
        """When the owed acks go out (None: nothing owed)."""
        if not self.streams:
            return None
        return self.at if self.at is not None else now

    def take(
        self, now: float, pace: float, stream_of: Callable[[str], tuple[RecvStream, int] | None]
    ) -> list[tuple[str, int, list[int], list[int]]]:
        """(stream, cumulative ack, SACK ranges, NACK ranges) for every stream owing an ack;
        `stream_of(name)` gives its RecvStream and the top sequence its sender announced (0 when
        the sender announces none), or None if it is gone. NACK ranges are empty unless a NACK is
        due: holes below what arrived, and the tail up to the announced top."""
        out = []
        for name in self.streams:
            found = stream_of(name)
            if found is None:
                continue
            rx, top = found
            rx.unacked = 0
            missing: list[int] = []
            tail = max(rx.highest, rx.cum)
            if (rx.has_gap() or top > tail) and now >= self._nack_at.get(name, -1e18) + pace:
                self._nack_at[name] = now
                missing = rx.missing()
                if top > tail and len(missing) < 32:
                    missing.extend((tail + 1, top))
            out.append((name, rx.cum, rx.sack(), missing))
        self.clear()
        return out

    def clear(self) -> None:
        self.streams.clear()
        self.at = None


class SendWindow:
    """Sender side of one numbered stream towards one receiver: what it acknowledged (cumulative
    point and SACKed sequences), the retransmission probe's time and backoff (RFC 6298: the RTO,
    doubled per unanswered probe), and Karn's rule (`last_retx`: no RTT sample from what may have
    been sent twice).

    The relay's room and inbox members and the peer's receivers of its streams are windows;
    `top` below is the stream's last sequence sent, `first` the oldest it still keeps."""

    __slots__ = ("acked", "attempts", "base", "last_retx", "probe_at", "sacked")

    #: SACKed sequences kept for a receiver that never advances its cumulative ack (probes resend)
    MAX_SACKED = 8192

    def __init__(self, base: int, probe_at: float = 0.0) -> None:
        self.base = base  # the receiver's first sequence of the stream
        self.acked = base - 1
        self.sacked: set[int] = set()
        self.probe_at = probe_at
        self.attempts = 0
        self.last_retx = base - 1  # anything at or below may be a retransmit

    def on_ack(self, cum: int, top: int) -> bool:
        """A cumulative ack (clipped to `top`): True if it moved the ack point (the caller then
        re-arms the probe and may sample the RTT if `cum > last_retx` held before)."""
        cum = min(cum, top)
        if cum <= self.acked:
            return False
        self.acked = cum
        self.attempts = 0
        if self.sacked:
            self.sacked = {s for s in self.sacked if s > cum}
        return True

    def on_sack(self, ranges: list[int], top: int) -> list[int]:
        """Selective-ack ranges: the sequences newly known to have arrived."""
        if len(self.sacked) > self.MAX_SACKED:
            self.sacked.clear()
        new = []
        acked, sacked = self.acked, self.sacked
        for s in iter_ranges(ranges, 1024):
            if acked < s <= top and s not in sacked:
                sacked.add(s)
                new.append(s)
        return new

    def nacked(self, ranges: list[int], top: int) -> list[int]:
        """What a NACK asks to be resent: only sequences sent and not acknowledged."""
        acked, sacked = self.acked, self.sacked
        return [s for s in iter_ranges(ranges, 512) if acked < s <= top and s not in sacked]

    def probe(self, now: float, rtt: RttEstimator) -> None:
        """The probe timer fired: back off (the caller resends `unacked(...)`)."""
        self.attempts += 1
        self.probe_at = now + rtt.backoff(self.attempts)

    def unacked(self, top: int, first: int = 1) -> list[int]:
        """What a probe resends: from the ack point (or `first`, the oldest still kept) to `top`,
        less what was SACKed."""
        sacked = self.sacked
        return [s for s in range(max(self.acked + 1, first), top + 1) if s not in sacked]

    def skip_to(self, first: int) -> None:
        """What the receiver misses is no longer kept: it starts at `first` now."""
        self.base = first
        self.acked = first - 1
        self.sacked = {s for s in self.sacked if s >= first}

    def resent(self, last: int) -> None:
        if last > self.last_retx:
            self.last_retx = last


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


class Deadlines:
    """When each of many items (e.g. one member's retransmission probe) is next due, so that a timer
    tick costs what is due rather than a walk over every item: a heap with lazy deletion.

    Each item has at most one live entry, at the earliest time it was scheduled for; `pop_due`
    returns the items whose time has come (the caller re-schedules those that still need it).
    Items must be hashable (identity is fine)."""

    __slots__ = ("_at", "_heap", "_n")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, object]] = []
        self._at: dict[object, float] = {}
        self._n = 0

    def __len__(self) -> int:
        return len(self._at)

    def schedule(self, item: object, at: float) -> None:
        cur = self._at.get(item)
        if cur is not None and cur <= at:
            return  # an earlier entry stands; the caller looks again when it comes due
        self._at[item] = at
        self._n += 1
        heapq.heappush(self._heap, (at, self._n, item))

    def cancel(self, item: object) -> None:
        self._at.pop(item, None)

    def next_at(self) -> float | None:
        heap, at = self._heap, self._at
        while heap and at.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)  # superseded or cancelled
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> list:
        heap, at = self._heap, self._at
        out = []
        while heap and heap[0][0] <= now:
            t, _, item = heapq.heappop(heap)
            if at.get(item) == t:
                del at[item]
                out.append(item)
        return out
