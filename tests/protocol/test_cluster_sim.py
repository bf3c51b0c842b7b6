"""Relays of a cluster in simulated time (issue 12's soak, at a size CI affords): three relay cores
share their rooms through `SimStream`, an in-memory stand-in for JetStream (one sequencer per room,
message-id dedupe, commits and deliveries that complete later, as the NATS thread's do), members
spread across them on a network losing 20% of datagrams each way. Every member gets every message
once in one order; a relay that dies mid-conversation loses nothing: its members fail over to the
next relay and resume. What the stand-in does not have (NATS itself) the real-server tests cover
(tests/cluster, tests/net/test_cluster_relays.py)."""

from __future__ import annotations

import random

import pytest

from udproom.protocol import events as E
from udproom.protocol import frames as F
from udproom.protocol.client import ClientSession
from udproom.protocol.relay import Relay, RelayConfig
from udproom.protocol.reliability import Timing
from udproom.protocol.roomlog import Commit, RoomLog, _Mids

from .fakenet import FakeNet, Impairment

T = Timing.fast()
LATENCY = 0.002  # a publish's ack, and the push of a stored event to every follower
MEMBERS = 60  # (300 take 6 min of CPU here: the simulated network walks every node per step)


class SimStream:
    """The cluster's store, a node on the FakeNet (its timer runs what is due)."""

    def __init__(self, net: FakeNet) -> None:
        self.net = net
        self.rooms: dict[str, list[tuple[int, bytes, int]]] = {}  # room -> [(seq, blob, mid)]
        self.mids: dict[tuple[str, int], int] = {}  # the duplicate window (the whole run here)
        self.topics: dict[str, str] = {}
        self.logs: dict[tuple, SimLog] = {}  # relay address -> its log
        self.due: list[tuple[float, object]] = []
        self.epoch = 42

    # a FakeNet node
    def receive_datagram(self, data, addr, now) -> None: ...

    def datagrams_to_send(self, now) -> list:
        return []

    def next_event(self):
        return None

    def get_timer(self) -> float | None:
        return min((at for at, _ in self.due), default=None)

    def handle_timer(self, now: float) -> None:
        due = [item for item in self.due if item[0] <= now]
        self.due = [item for item in self.due if item[0] > now]
        for _at, work in due:
            work()

    # the cluster
    def later(self, work) -> None:
        self.due.append((self.net.now + LATENCY, work))

    def run_through(self, handle: Commit) -> None:
        """What a relay waiting for a commit (a join) sees: the cluster works until it is done."""
        while not handle.done() and self.due:
            _at, work = self.due.pop(0)
            work()

    def store(self, handle: Commit, group: list, topics: dict[str, str], origin: tuple) -> None:
        stored, dups, numbers, fresh = [], {}, {}, []
        for room, seq, ev, blob in group:
            if ev.mid and (room, ev.mid) in self.mids:
                dups[(room, seq)] = self.mids[(room, ev.mid)]
                continue
            events = self.rooms.setdefault(room, [])
            final = len(events) + 1
            events.append((final, blob, ev.mid))
            if ev.mid:
                self.mids[(room, ev.mid)] = final
            stored.append((room, seq))
            if final != seq:
                numbers[(room, seq)] = final
            fresh.append((room, final, blob))
        self.topics.update(topics)
        if origin in self.logs:  # (a relay that died hears nothing)
            handle.finish(stored=stored, duplicates=dups, numbers=numbers)
        for log in self.logs.values():
            got = [(room, seq, blob) for room, seq, blob in fresh if room in log.following]
            if got:
                log.feed += got
        # the relays' runners, woken, flush (soon: never inside a relay's own call, as a thread's
        # call_soon_threadsafe never is)
        self.due.append((self.net.now, self.wake_relays))

    def wake_relays(self) -> None:
        for addr in list(self.logs):
            self.net.flush(addr)


class SimCommit(Commit):
    __slots__ = ("cluster",)

    def wait(self, timeout: float | None = None) -> bool:
        self.cluster.run_through(self)
        return self.done()


class SimLog(RoomLog):
    """One relay's room log on the SimStream: what JetStreamLog is on JetStream."""

    follows = True

    def __init__(self, cluster: SimStream, addr: tuple) -> None:
        super().__init__(keep_days=None, keep_events=None)
        self.cluster = cluster
        self.addr = addr
        self.epoch = cluster.epoch
        self.stream_numbers = False
        self.following: set[str] = set()
        self.feed: list[tuple[str, int, bytes]] = []
        cluster.logs[addr] = self

    def set_wakeup(self, fn) -> None: ...

    def begin_commit(self) -> Commit:
        group, topics = self._group, self._group_topics
        handle = SimCommit([(room, seq) for room, seq, _ev, _blob in group])
        handle.cluster = self.cluster
        self._discard()
        if not group and not topics:
            handle.finish()
            return handle
        self.cluster.later(lambda: self.cluster.store(handle, group, topics, self.addr))
        return handle

    def _last_committed(self, room: str) -> int:
        r = self._rooms.get(room)
        return r if r is not None else 0

    def last_seq(self, room: str) -> int:
        return self._rooms.get(room, 0)

    def follow(self, room: str) -> tuple[int, int, str]:
        self.following.add(room)
        last = len(self.cluster.rooms.get(room, []))
        self._rooms[room] = max(self._rooms.get(room, 0), last)
        self._mids[room] = _Mids(self._load_mids(room, last - self.mid_window + 1))
        return self._rooms[room], 1, self.cluster.topics.get(room, "")

    def unfollow(self, room: str) -> None:
        self.following.discard(room)

    def drain(self) -> list:
        out, self.feed = self.feed, []
        return out

    def observe(self, room: str, seq: int, ev: F.Ev) -> None:
        if seq > self._rooms.get(room, 0):
            self._rooms[room] = seq
            w = self._mids.get(room)
            if w is not None and ev.mid:
                w.add(seq, ev.mid)

    def topic(self, room: str) -> str:
        return self.cluster.topics.get(room, "")

    def first_seq(self, room: str) -> int:
        return 1

    def read(self, room: str, lo: int, hi: int, limit: int | None = None) -> list[tuple[int, F.Ev]]:
        hi = min(hi, self._rooms.get(room, 0))
        rows = [(s, F.decode_ev(b)) for s, b, _m in self.cluster.rooms.get(room, [])[max(lo, 1) - 1 : hi]]
        return rows[:limit] if limit is not None else rows

    def _load_mids(self, room: str, lo: int):
        return [(s, m) for s, _b, m in self.cluster.rooms.get(room, [])[max(lo, 1) - 1 :] if m]

    def expire(self, now_wall: float, budget: int = 500) -> dict[str, int]:
        return {}

    def _write(self, group, topics) -> None:
        raise AssertionError("commits go through begin_commit")


def relay_addr(i: int) -> tuple:
    return (f"10.0.0.{i + 1}", 6000)


def member_addr(i: int) -> tuple:
    return (f"10.1.{i // 250}.{i % 250 + 1}", 5000)


@pytest.mark.parametrize("seed", [7, 11])
def test_members_spread_over_three_relays_with_loss_one_order_and_a_relay_dies(seed):
    members, senders, lines = MEMBERS, 3, 15
    net = FakeNet(seed=seed, imp=Impairment(loss=0.2, delay=0.001, jitter=0.002))
    cluster = net.add(("10.0.9.9", 4222), SimStream(net))
    relays = [relay_addr(i) for i in range(3)]
    for addr in relays:
        net.add(addr, Relay(RelayConfig(timing=T), SimLog(cluster, addr)))
    clients: dict[tuple, ClientSession] = {}
    for i in range(members):
        addr = member_addr(i)
        c = net.add(addr, ClientSession(f"m{i}", T))
        first = i % 3
        c.relays = relays[first:] + relays[:first]  # its own relay first, then the others
        clients[addr] = c
        net.call(addr, c.connect, c.relays[0])
        net.call(addr, c.join, "lobby")

    def joined() -> bool:
        return all(any(isinstance(e, E.RoomJoined) for e in net.events[a]) for a in clients)

    net.run_while(lambda: not joined(), 60.0)
    assert joined()
    rng = random.Random(seed)
    texts = []
    for k in range(lines):
        for s in range(senders):
            addr = member_addr(s * 7 + 1)  # senders on different relays (7 % 3 == 1)
            text = f"s{s} line {k}"
            texts.append(text)
            net.call(addr, clients[addr].post, "lobby", text)
        net.run_until(net.now + rng.random() * 0.05)
        if k == lines // 2:  # relay 0 dies mid-conversation: its members fail over
            net.remove(relays[0])
            del cluster.logs[relays[0]]

    def messages(addr: tuple) -> list[tuple[int, str]]:
        return [(e.seq, e.text) for e in net.events[addr] if isinstance(e, E.MessageReceived)]

    def pending() -> bool:
        return any(len(messages(a)) < len(texts) for a in clients)

    net.run_while(pending, net.now + 120.0)
    views = {a: messages(a) for a in clients}
    assert not pending(), sorted(len(v) for v in views.values())[:5]
    orders = set()
    for addr, view in views.items():
        assert len(view) == len(texts) and {t for _s, t in view} == set(texts), addr  # each once
        assert [s for s, _t in view] == sorted(s for s, _t in view)
        orders.add(tuple(view))
    assert len(orders) == 1, "members saw different orders"
    stored = [F.decode_ev(b).text for _s, b, _m in cluster.rooms["lobby"]]
    assert sorted(t for t in stored if t in texts) == sorted(texts), "a message stored twice or lost"
    moved = [a for a, c in clients.items() if c.failed_from]
    assert moved and all(clients[a].addr != relays[0] for a in clients)
