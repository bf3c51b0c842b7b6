"""A cluster of relays in simulated time: three (or any number of) relay cores share their rooms
through `SimStream`, an in-memory stand-in for JetStream (one sequencer per room, message-id dedupe,
commits and deliveries that complete later, as the NATS thread's do), members spread across them on
a network that loses datagrams. `soak()` runs issue 12's scenario at any size and checks its
invariants; tests/protocol/test_cluster_sim.py runs it at a size CI affords, and
benchmarks/soak_cluster.py at the issue's (1,000 members over 3 relays, 20% loss). What the stand-in
does not have (NATS itself) the real-server tests cover (tests/cluster,
tests/net/test_cluster_relays.py)."""

from __future__ import annotations

import random
import time

from udproom.protocol import events as E
from udproom.protocol import frames as F
from udproom.protocol.client import ClientSession
from udproom.protocol.names import nick_key, nick_keys
from udproom.protocol.relay import Relay, RelayConfig
from udproom.protocol.reliability import Timing
from udproom.protocol.roomlog import Commit, RoomLog, _Mids

from .fakenet import Impairment, IndexedNet

T = Timing.fast()
LATENCY = 0.002  # a publish's ack, and the push of a stored event to every follower


class SimStream:
    """The cluster's store, a node on the FakeNet (its timer runs what is due)."""

    def __init__(self, net: IndexedNet) -> None:
        self.net = net
        self.rooms: dict[str, list[tuple[int, bytes, int]]] = {}  # room -> [(seq, blob, mid)]
        self.mids: dict[tuple[str, int], int] = {}  # the duplicate window (the whole run here)
        self.topics: dict[str, str] = {}
        self.logs: dict[tuple, SimLog] = {}  # relay address -> its log
        self.due: list[tuple[float, object]] = []
        self.epoch = 42
        self.names: dict[tuple, SimNames] = {}  # relay address -> its nick claims (when given)
        self.claims: dict[str, tuple[tuple, int, str]] = {}  # nick_keys -> (relay, session token, nick)

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


class SimNames:
    """One relay's ClusterNicks on the SimStream: nick claims across relays and direct messages
    routed to the relay holding a nick (what ClusterNicks does through KV and core NATS)."""

    def __init__(self, cluster: SimStream, addr: tuple) -> None:
        self.cluster = cluster
        self.addr = addr
        self.dms_in: list = []
        self.dms_out: list = []
        self.received = 0  # direct messages that came to this relay through the cluster
        cluster.names[addr] = self

    def claim(self, nick: str, token: int, resume: int = 0, key: bytes = b"") -> bool:
        """Every key of the nick (names.nick_keys), or none, as ClusterNicks claims them."""
        keys = nick_keys(nick)
        for k in keys:
            held = self.cluster.claims.get(k)
            if held is not None and held[1] not in (token, resume) and held[0] in self.cluster.names:
                return False
        for k in keys:
            self.cluster.claims[k] = (self.addr, token, nick)
        return True

    def release(self, nick: str, token: int) -> None:
        for key in nick_keys(nick):  # (a key the session's new nick shares stays its own)
            if self.cluster.claims.get(key) == (self.addr, token, nick):
                del self.cluster.claims[key]

    def set_wakeup(self, fn) -> None: ...

    def joined(self, room: str, nick: str) -> None: ...

    def left(self, room: str, nick: str) -> None: ...

    def members(self, room: str) -> list[str]:
        return []

    def reaped(self) -> list:
        return []

    def send_dm(self, dm_id: int, nick: str, event: bytes) -> None:
        def route() -> None:
            held = self.cluster.claims.get(nick_key(nick))
            there = self.cluster.names.get(held[0]) if held is not None else None
            if there is None or there is self:
                self._done(dm_id, False, f"no one called {nick} is here")
                return
            there.received += 1
            there.dms_in.append((self.addr, dm_id, nick, event, False))  # (not kept: the sim keeps none)
            self.cluster.net.flush(there.addr)

        self.cluster.later(route)

    def _done(self, dm_id: int, ok: bool, why: str) -> None:
        self.dms_out.append((dm_id, ok, why))
        self.cluster.net.flush(self.addr)

    def answer_dm(self, origin: tuple, dm_id: int, ok: bool, why: str) -> None:
        def back() -> None:
            there = self.cluster.names.get(origin)
            if there is not None:  # (a relay that died hears nothing)
                there._done(dm_id, ok, why)

        self.cluster.later(back)

    def incoming_dms(self) -> list:
        out, self.dms_in = self.dms_in, []
        return out

    def dm_outcomes(self) -> list:
        out, self.dms_out = self.dms_out, []
        return out


def relay_addr(i: int) -> tuple:
    return (f"10.0.0.{i + 1}", 6000)


def member_addr(i: int) -> tuple:
    return (f"10.1.{i // 250}.{i % 250 + 1}", 5000)


def soak(
    members: int, seed: int = 7, relays: int = 3, senders: int = 3, lines: int = 15, loss: float = 0.2
) -> dict:
    """`members` spread over `relays` relay cores, `senders` of them posting `lines` each, `loss` of
    the datagrams lost each way; relay 0 dies halfway through. Asserts (AssertionError) every member
    gets every message once, in one order, and each is stored once; relay 0's members fail over.
    Returns the figures."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    net = IndexedNet(seed=seed, imp=Impairment(loss=loss, delay=0.001, jitter=0.002))
    cluster_addr = ("10.0.9.9", 4222)
    cluster = net.add(cluster_addr, SimStream(net))
    net.watch(cluster_addr)  # (a relay's commit schedules the stand-in's work)
    raddrs = [relay_addr(i) for i in range(relays)]
    for addr in raddrs:
        net.add(addr, Relay(RelayConfig(timing=T, max_sessions=max(1024, members)), SimLog(cluster, addr)))
    clients: dict[tuple, ClientSession] = {}
    for i in range(members):
        addr = member_addr(i)
        c = net.add(addr, ClientSession(f"m{i}", T))
        first = i % relays
        c.relays = raddrs[first:] + raddrs[:first]  # its own relay first, then the others
        clients[addr] = c
        net.call(addr, c.connect, c.relays[0])
        net.call(addr, c.join, "lobby")

    seen = dict.fromkeys(clients, 0)  # how far each member's events were looked at
    joined: set[tuple] = set()
    got = dict.fromkeys(clients, 0)  # messages each member received

    def scan() -> None:
        for a in clients:
            evs = net.events[a]
            for ev in evs[seen[a] :]:
                if isinstance(ev, E.MessageReceived):
                    got[a] += 1
                elif isinstance(ev, E.RoomJoined):
                    joined.add(a)
            seen[a] = len(evs)

    def run(done, limit: float) -> None:
        """Run until done() (looked at every 50 ms of simulated time) or `limit`."""
        scan()
        while not done() and net.now < limit:
            net.run_until(min(limit, net.now + 0.05), max_steps=50_000_000)
            scan()

    run(lambda: len(joined) == members, 120.0)
    assert len(joined) == members, f"{members - len(joined)} members never joined"
    t_joined = net.now
    rng = random.Random(seed)
    texts = []
    for k in range(lines):
        for s in range(senders):
            addr = member_addr((s * 7 + 1) % members)  # senders on different relays (7 % 3 == 1)
            text = f"s{s} line {k}"
            texts.append(text)
            net.call(addr, clients[addr].post, "lobby", text)
        net.run_until(net.now + rng.random() * 0.05, max_steps=50_000_000)
        if k == lines // 2:  # relay 0 dies mid-conversation: its members fail over
            net.remove(raddrs[0])
            del cluster.logs[raddrs[0]]
    total = len(texts)
    run(lambda: min(got.values()) >= total, net.now + 300.0)

    def messages(addr: tuple) -> list[tuple[int, str]]:
        return [(e.seq, e.text) for e in net.events[addr] if isinstance(e, E.MessageReceived)]

    views = {a: messages(a) for a in clients}
    short = sorted(len(v) for v in views.values())[:5]
    assert all(len(v) >= total for v in views.values()), f"members short of messages: {short}"
    orders = set()
    for addr, view in views.items():
        assert len(view) == total and {t for _s, t in view} == set(texts), f"{addr}: not each once"
        assert [s for s, _t in view] == sorted(s for s, _t in view), f"{addr}: out of order"
        orders.add(tuple(view))
    assert len(orders) == 1, "members saw different orders"
    stored = [F.decode_ev(b).text for _s, b, _m in cluster.rooms["lobby"]]
    assert sorted(t for t in stored if t in texts) == sorted(texts), "a message stored twice or lost"
    moved = [a for a, c in clients.items() if c.failed_from]
    of_dead = [a for a in clients if clients[a].relays[0] == raddrs[0]]
    assert set(of_dead) <= set(moved), "a member of the dead relay did not fail over"
    assert all(clients[a].addr != raddrs[0] for a in clients), "a member stayed on the dead relay"
    return {
        "members": members,
        "relays": relays,
        "loss": loss,
        "seed": seed,
        "messages": total,
        "deliveries": sum(len(v) for v in views.values()),
        "failed_over": len(moved),
        "failed_over_of_dead_relay": len(set(moved) & set(of_dead)),
        "members_of_dead_relay": len(of_dead),
        "datagrams": net.sent,
        "dropped": net.dropped,
        "simulated_s": round(net.now, 3),
        "joined_at_s": round(t_joined, 3),
        "cpu_s": round(time.process_time() - cpu0, 2),
        "wall_s": round(time.perf_counter() - wall0, 2),
        "invariants": [
            "every member got every message exactly once",
            "all members saw one order (the same numbers, the same lines)",
            "each message stored once in the room's stream",
            f"relay 0 died halfway; its {len(of_dead)} members failed over and lost nothing",
        ],
    }
