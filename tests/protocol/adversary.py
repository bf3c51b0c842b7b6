"""A hostile participant for the simulated network, and the invariants every core must keep.

- Strategies (hypothesis) for anything the wire format allows: every frame type, with extreme
  integers, non-finite and huge floats, max-length and multibyte strings, control characters and
  look-alike names, long lists. `datagrams()` packs them into datagrams as an attacker would (up to
  and a little over the 1200-byte limit).
- `Watched` wraps a core (relay, client or peer) on a `FakeNet` and checks, for every datagram it
  emits, that it is at most 1200 bytes, and keeps the bytes it received from and sent to every
  address, so a test can assert the anti-amplification rule towards addresses that never proved
  themselves.
- `Adversary` is a node with no timers: it records what it is sent (so it can learn what a member
  learns), overhears every link once it `eavesdrop`s (on the path of all of them), and injects
  datagrams with any source address it likes (`forge`).
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict

import msgspec
from hypothesis import strategies as st

from udproom.protocol import frames as F

# ----------------------------------------------------------------------------- hostile values

EXTREME_INTS = [0, 1, -1, 2, 2**31 - 1, 2**31, 2**32, 2**53, 2**63 - 1, -(2**63), 2**64 - 1]
EXTREME_FLOATS = [0.0, -0.0, math.nan, math.inf, -math.inf, 1e20, -1e20, 1e308, 5e-324, 1.7e9, -1.0]
#: names that look like others, with joiners, default-ignorable code points, escapes and controls
TRICKY_TEXT = [
    "",
    "alice",
    "ALICE",
    "ali\u034fce",
    "alice\u3164",
    "\u0430lice",
    "\u200balice",
    "bob\x1b[2J",
    "\x9b31m",
    "a\u202eb",
    "tab\there",
    "line\nbreak",
    "#lobby",
    "@bob",
    "lobby",
    "..",
    " ",
]


def ints() -> st.SearchStrategy[int]:
    return st.one_of(
        st.sampled_from(EXTREME_INTS),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.integers(min_value=-3, max_value=200),
    )


def floats() -> st.SearchStrategy[float]:
    return st.one_of(st.sampled_from(EXTREME_FLOATS), st.floats(allow_nan=True, allow_infinity=True))


def texts(max_bytes: int = 1200) -> st.SearchStrategy[str]:
    """Short tricky strings, random unicode, and strings at and over the protocol's byte limits."""
    big = st.sampled_from(["x", "é", "€", "😀", "\u0301"]).flatmap(
        lambda ch: st.integers(min_value=1, max_value=max(1, max_bytes // len(ch.encode()))).map(
            lambda n: ch * n
        )
    )
    return st.one_of(st.sampled_from(TRICKY_TEXT), st.text(max_size=40), big)


def _strategy_for(tp) -> st.SearchStrategy:
    origin = getattr(tp, "__origin__", None)
    if tp is int:
        return ints()
    if tp is float:
        return floats()
    if tp is str:
        return texts()
    if tp is bytes:
        return st.one_of(st.binary(max_size=40), st.binary(min_size=16, max_size=16))
    if tp is bool:
        return st.booleans()
    if origin is list:
        (inner,) = tp.__args__
        return st.lists(_strategy_for(inner), max_size=12)
    if origin is tuple:
        return st.tuples(*(_strategy_for(a) for a in tp.__args__))
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return structs(tp)
    raise TypeError(f"no strategy for {tp!r}")


def structs(cls: type) -> st.SearchStrategy:
    """Any instance of a wire Struct: every field drawn from the hostile strategies."""
    hints = msgspec.structs.fields(cls)
    return st.builds(cls, **{f.name: _strategy_for(f.type) for f in hints})


FRAME_TYPES: list[type] = [
    t for t in vars(F).values() if isinstance(t, type) and issubclass(t, F.Frame) and t is not F.Frame
]


def frames(types: list[type] | None = None) -> st.SearchStrategy[F.Frame]:
    return st.one_of(*(structs(t) for t in (types or FRAME_TYPES)))


def datagrams(
    frame_strategy: st.SearchStrategy[F.Frame] | None = None,
    prefix: st.SearchStrategy[F.Frame] | None = None,
) -> st.SearchStrategy[bytes]:
    """Encoded datagrams of 1-6 hostile frames (with `prefix`, e.g. a Sid, first). Most fit 1200
    bytes; some are a little over (the decoder must refuse those)."""
    fs = frame_strategy if frame_strategy is not None else frames()
    head = prefix if prefix is not None else st.just(None)

    def build(args) -> bytes:
        first, body = args
        items = ([first] if first is not None else []) + body
        data = F.encode(items)
        while len(data) > F.MAX_DATAGRAM + 64 and len(items) > 1:
            items.pop()
            data = F.encode(items)
        return data

    return st.tuples(head, st.lists(fs, min_size=1, max_size=6)).map(build)


# ----------------------------------------------------------------------------- the network side


class Watched:
    """A core on the FakeNet, with every datagram it emits checked and counted per address."""

    def __init__(self, core, addr: tuple) -> None:
        self.core = core
        self.addr = addr
        self.bytes_in: dict[tuple, int] = defaultdict(int)
        self.bytes_out: dict[tuple, int] = defaultdict(int)
        self.datagrams_out: dict[tuple, int] = defaultdict(int)
        self.largest = 0

    def receive_datagram(self, data: bytes, addr: tuple, now: float) -> None:
        self.bytes_in[addr] += len(data)
        self.core.receive_datagram(data, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple]]:
        out = self.core.datagrams_to_send(now)
        for data, dst in out:
            assert len(data) <= F.MAX_DATAGRAM, f"{self.addr} sent {len(data)} bytes to {dst}"
            self.bytes_out[dst] += len(data)
            self.datagrams_out[dst] += 1
            self.largest = max(self.largest, len(data))
        return out

    def get_timer(self):
        return self.core.get_timer()

    def handle_timer(self, now: float) -> None:
        self.core.handle_timer(now)

    def next_event(self):
        return self.core.next_event()

    def amplification(self, addr: tuple) -> float:
        """Bytes sent to `addr` per byte received from it (inf if it sent nothing)."""
        sent = self.bytes_out.get(addr, 0)
        got = self.bytes_in.get(addr, 0)
        if not sent:
            return 0.0
        return sent / got if got else math.inf


class Adversary:
    """A node with no timers of its own. It keeps every datagram it is sent (decoded where it can
    be) and injects datagrams from any source address into the network."""

    def __init__(self, net, addr: tuple) -> None:
        self.net = net
        self.addr = addr
        self.received: list[tuple[tuple, bytes]] = []
        self.heard: list[tuple[tuple, tuple, bytes]] = []  # on the path (`eavesdrop`)
        net.add(addr, self)

    # the FakeNet node surface
    def receive_datagram(self, data: bytes, addr: tuple, now: float) -> None:
        self.received.append((addr, data))

    def datagrams_to_send(self, now: float) -> list:
        return []

    def get_timer(self):
        return None

    def handle_timer(self, now: float) -> None:
        pass

    def next_event(self):
        return None

    def eavesdrop(self, addr: tuple | None = None) -> list[tuple[tuple, tuple, bytes]]:
        """Sit on the path next to node `addr` (None: on every path of the network): from now on
        every datagram it receives and sends (anyone sends) is recorded, as (source, destination,
        bytes), in the list returned (`self.heard`)."""
        if addr is None:
            self.net.taps.append(lambda src, dst, data: self.heard.append((src, dst, data)))
        else:
            self.net.nodes[addr] = _Tap(self.net.nodes[addr], addr, self.heard)
        return self.heard

    # acting
    def forge(self, data: bytes, dst: tuple, src: tuple | None = None, delay: float = 0.0) -> None:
        """Put `data` on the wire to `dst`, claiming to come from `src` (default: our own address)."""
        net = self.net
        net._n += 1
        heapq.heappush(net.queue, (net.now + delay, net._n, data, src or self.addr, dst))

    def frames_from(self, src: tuple | None = None) -> list[F.Frame]:
        """Every frame decoded from what we received (from `src` only, if given)."""
        out: list[F.Frame] = []
        for addr, data in self.received:
            if src is not None and addr != src:
                continue
            try:
                out.extend(F.decode(data))
            except F.FrameError:
                pass
        return out


class _Tap(Watched):
    """A node on the FakeNet with a wire tap: both directions recorded into `log`."""

    def __init__(self, core, addr: tuple, log: list) -> None:
        super().__init__(core, addr)
        self.log = log

    def receive_datagram(self, data: bytes, addr: tuple, now: float) -> None:
        self.log.append((addr, self.addr, data))
        super().receive_datagram(data, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple]]:
        out = super().datagrams_to_send(now)
        self.log.extend((self.addr, dst, data) for data, dst in out)
        return out
