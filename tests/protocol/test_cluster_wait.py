"""The relay core never waits for its cluster (issue 12: the NATS client must not stall the UDP
loop). A log or nick store that needs a round trip raises `roomlog.Pending(key)`; the relay parks
the request (or Login) and does it again when `key` completes. Here the round trips are gates the
test opens (`GatedLog`, `GatedNames` on clustersim's stand-in for JetStream), so what happens while
they are shut is exact: other members are served, the parked request is answered once, in order,
and a member cannot make the relay hold more than one request of its own, nor more than MAX_PARKED
in all. Real NATS, slowed down: tests/cluster/test_relay_stall.py."""

from __future__ import annotations

from udproom.protocol import events as E
from udproom.protocol.client import CONNECTED, ClientSession
from udproom.protocol.relay import Relay, RelayConfig
from udproom.protocol.relay import cluster as relay_cluster
from udproom.protocol.relay.state import TOO_MANY_WAITING
from udproom.protocol.roomlog import Pending

from .clustersim import SimLog, SimNames, SimStream, T, member_addr, relay_addr
from .fakenet import Impairment, IndexedNet


class Gates:
    """Round trips that complete when the test says so: key -> open?"""

    def __init__(self) -> None:
        self.started: dict[tuple, bool] = {}
        self.shut: set = set()  # what (room, nick) waits while shut
        self.done: list[tuple] = []
        self.count: dict[tuple, int] = {}  # round trips started per key

    def get(self, key: tuple) -> None:
        """Return when `key`'s round trip is done (and forget it), else raise Pending."""
        if key[1] not in self.shut and key not in self.started:
            return
        state = self.started.get(key)
        if state is None:
            self.started[key] = False
            self.count[key] = self.count.get(key, 0) + 1
            raise Pending(key)
        if not state:
            raise Pending(key)
        del self.started[key]

    def open(self, what) -> None:
        self.shut.discard(what)
        for key, state in self.started.items():
            if key[1] == what and not state:
                self.started[key] = True
                self.done.append(key)

    def completed(self) -> list[tuple]:
        out, self.done = self.done, []
        return out


class GatedLog(SimLog):
    nonblocking = True

    def __init__(self, cluster, addr, gates: Gates) -> None:
        super().__init__(cluster, addr)
        self.gates = gates

    def follow(self, room: str):
        if room not in self.following:
            self.gates.get(("follow", room))
        return super().follow(room)

    def read(self, room: str, lo: int, hi: int, limit: int | None = None):
        self.gates.get(("read", room))
        return super().read(room, lo, hi, limit)

    def seq_of_mid(self, room: str, mid: int):
        self.gates.get(("mids", f"mids/{room}"))  # (the room's message-id window, read from the stream)
        return super().seq_of_mid(room, mid)

    def _write_record(self, key: str, value: bytes | None) -> None:
        self.gates.get(("record", key))
        super()._write_record(key, value)

    def completed(self) -> list[tuple]:
        return self.gates.completed()


class GatedNames(SimNames):
    def __init__(self, cluster, addr, gates: Gates) -> None:
        super().__init__(cluster, addr)
        self.gates = gates

    def claim(self, nick: str, token: int, resume: int = 0, key: bytes = b"") -> bool:
        self.gates.get(("claim", nick))
        return super().claim(nick, token, resume, key)

    def members(self, room: str) -> list[str]:
        return []


def world(max_parked: int | None = None):
    net = IndexedNet(seed=1, imp=Impairment(loss=0.0, delay=0.001))
    cluster = net.add(("10.0.9.9", 4222), SimStream(net))
    net.watch(("10.0.9.9", 4222))
    gates = Gates()
    relay = net.add(
        relay_addr(0),
        Relay(
            RelayConfig(timing=T),
            GatedLog(cluster, relay_addr(0), gates),
            names=GatedNames(cluster, relay_addr(0), gates),
        ),
    )
    return net, gates, relay


def member(net, i: int, nick: str, *rooms: str) -> ClientSession:
    c = ClientSession(nick, T)
    net.add(member_addr(i), c)
    net.call(member_addr(i), c.connect, relay_addr(0))
    for room in rooms:
        net.call(member_addr(i), c.join, room)
    return c


def of(net, i: int, kind) -> list:
    return [e for e in net.events[member_addr(i)] if isinstance(e, kind)]


def joined(net, i: int) -> list[str]:
    return [e.room for e in of(net, i, E.RoomJoined)]


def test_a_join_waiting_for_the_cluster_does_not_stop_the_relay_and_is_answered_once_in_order():
    net, gates, relay = world()
    alice = member(net, 0, "alice", "lobby")
    net.run_while(lambda: joined(net, 0) != ["lobby"], 10.0)
    gates.shut.add("slow")
    bob = member(net, 1, "bob", "slow", "lobby")  # (lobby asked after slow: answered after it)
    net.run_while(lambda: bob.state != CONNECTED or not gates.started, net.now + 10.0)
    assert list(gates.started) == [("follow", "slow")]
    # while bob's join waits (and his client retransmits it, many times): alice is served
    posted = net.call(member_addr(0), alice.post, "lobby", "still here")
    net.run_while(
        lambda: not (of(net, 0, E.PostAcknowledged) and of(net, 0, E.MessageReceived)), net.now + 10.0
    )
    assert [e.local_id for e in of(net, 0, E.PostAcknowledged)] == [posted]
    assert "still here" in [e.text for e in of(net, 0, E.MessageReceived)]
    net.run_until(net.now + 20 * T.rto_min)  # bob's join is retransmitted meanwhile
    assert joined(net, 1) == [] and gates.count == {("follow", "slow"): 1}
    assert relay._n_waiting == 1
    gates.open("slow")
    net.flush(relay_addr(0))  # (the runner is woken when a round trip completes)
    net.run_while(lambda: len(joined(net, 1)) < 2, net.now + 10.0)
    net.run_until(net.now + 10 * T.rto_min)
    assert joined(net, 1) == ["slow", "lobby"]  # once each, in the order asked
    assert gates.count == {("follow", "slow"): 1}  # one round trip, its answer taken once
    assert relay._n_waiting == 0 and not relay._waiting
    assert [m.nick for m in of(net, 0, E.MemberJoined)].count("bob") == 1  # its join event once


def test_a_login_waiting_for_its_nick_claim_does_not_stop_the_relay():
    net, gates, relay = world()
    alice = member(net, 0, "alice", "lobby")
    net.run_while(lambda: joined(net, 0) != ["lobby"], 10.0)
    gates.shut.add("bob")
    bob = member(net, 1, "bob", "lobby")
    net.run_while(lambda: not gates.started, net.now + 10.0)
    posted = net.call(member_addr(0), alice.post, "lobby", "hello")
    net.run_while(lambda: not of(net, 0, E.PostAcknowledged), net.now + 10.0)
    assert [e.local_id for e in of(net, 0, E.PostAcknowledged)] == [posted]
    net.run_until(net.now + 20 * T.rto_min)  # the Login (handshake message 3) is retransmitted
    assert bob.state != CONNECTED and gates.count == {("claim", "bob"): 1}
    gates.open("bob")
    net.flush(relay_addr(0))
    net.run_while(lambda: joined(net, 1) != ["lobby"], net.now + 10.0)
    assert bob.state == CONNECTED and len(relay.sessions) == 2
    assert gates.count == {("claim", "bob"): 1}


def test_a_member_asking_for_many_rooms_holds_one_request_and_the_relay_holds_at_most_max_parked(
    monkeypatch,
):
    """A hostile member (or 10,000 of its requests) cannot grow what the relay keeps waiting: its
    requests are done in order, so one waits and the rest queue (MAX_PENDING_REQUESTS); over all
    sessions, beyond MAX_PARKED a request is refused at once with a clear reason."""
    monkeypatch.setattr(relay_cluster, "MAX_PARKED", 2)
    net, gates, relay = world()
    rooms = [f"r{i}" for i in range(40)]
    gates.shut.update(rooms)
    greedy = member(net, 0, "greedy", *rooms)
    net.run_while(lambda: greedy.state != CONNECTED or not gates.started, 10.0)
    net.run_until(net.now + 20 * T.rto_min)
    assert relay._n_waiting == 1 and len(gates.started) == 1
    member(net, 1, "b", "r1")
    net.run_while(lambda: len(gates.started) < 2, net.now + 10.0)
    member(net, 2, "c", "r2")
    net.run_while(lambda: not of(net, 2, E.RequestRefused), net.now + 10.0)
    (refused,) = of(net, 2, E.RequestRefused)
    assert refused.room == "r2" and TOO_MANY_WAITING in refused.reason
    assert relay._n_waiting == 2
    for room in rooms:
        gates.open(room)
        net.flush(relay_addr(0))
    net.run_while(lambda: len(joined(net, 0)) < len(rooms), net.now + 60.0)
    assert joined(net, 0) == rooms  # every one once, in order
    assert all(n == 1 for key, n in gates.count.items() if key != ("follow", "r1"))
    net.run_while(lambda: joined(net, 1) != ["r1"], net.now + 10.0)
    assert relay._n_waiting == 0


def test_a_history_page_and_a_topic_waiting_for_the_cluster_do_not_stop_the_relay():
    """A page back read from the stream (bob), and a topic whose signature record is written to the
    cluster (alice), wait for their round trips; meanwhile the room's posts (carol's) are stored
    and delivered. Each is answered once, after its round trip, and the topic is set once."""
    net, gates, relay = world()
    alice = member(net, 0, "alice", "lobby")
    bob = member(net, 1, "bob", "lobby")
    carol = member(net, 2, "carol", "lobby")
    net.run_while(lambda: any(joined(net, i) != ["lobby"] for i in range(3)), 10.0)
    gates.shut.update({"lobby", "topic/lobby"})
    net.call(member_addr(1), bob.page_back, "lobby", 0, 20)
    net.call(member_addr(0), alice.set_topic, "lobby", "new topic")
    net.run_while(lambda: len(gates.started) < 2, net.now + 10.0)
    assert set(gates.started) == {("read", "lobby"), ("record", "topic/lobby")}
    posted = net.call(member_addr(2), carol.post, "lobby", "meanwhile")
    net.run_while(
        lambda: (
            "meanwhile" not in [e.text for e in of(net, 0, E.MessageReceived)]
            or not of(net, 2, E.PostAcknowledged)
        ),
        net.now + 10.0,
    )
    assert [e.local_id for e in of(net, 2, E.PostAcknowledged)] == [posted]
    net.run_until(net.now + 20 * T.rto_min)  # both requests are retransmitted meanwhile
    assert not of(net, 1, E.HistoryPage) and not of(net, 0, E.TopicChanged)
    assert gates.count == {("read", "lobby"): 1, ("record", "topic/lobby"): 1}
    gates.open("lobby")
    gates.open("topic/lobby")
    net.flush(relay_addr(0))
    net.run_while(lambda: not of(net, 1, E.HistoryPage) or not of(net, 1, E.TopicChanged), net.now + 10.0)
    net.run_until(net.now + 10 * T.rto_min)
    assert len(of(net, 1, E.HistoryPage)) == 1
    assert [e.topic for e in of(net, 1, E.TopicChanged)] == ["new topic"]
    assert gates.count == {("read", "lobby"): 1, ("record", "topic/lobby"): 1}
    assert relay._n_waiting == 0


def test_a_post_waiting_for_its_rooms_message_ids_is_acknowledged_once_and_others_are_served():
    """A post whose room's message-id window must be read from the stream first (is it a resend?)
    waits for it; the relay stores and delivers the other members' posts meanwhile, then stores
    this one once and acknowledges it once."""
    net, gates, relay = world()
    alice = member(net, 0, "alice", "lobby", "side")
    bob = member(net, 1, "bob", "side")
    net.run_while(lambda: joined(net, 0) != ["lobby", "side"] or joined(net, 1) != ["side"], 10.0)
    gates.shut.add("mids/lobby")
    mine = net.call(member_addr(0), alice.post, "lobby", "mine")
    net.run_while(lambda: not gates.started, net.now + 10.0)
    theirs = net.call(member_addr(1), bob.post, "side", "theirs")
    net.run_while(lambda: "theirs" not in [e.text for e in of(net, 0, E.MessageReceived)], net.now + 10.0)
    net.run_until(net.now + 20 * T.rto_min)  # alice's post is retransmitted meanwhile
    assert not of(net, 0, E.PostAcknowledged) and [e.local_id for e in of(net, 1, E.PostAcknowledged)] == [
        theirs
    ]
    gates.open("mids/lobby")
    net.flush(relay_addr(0))
    net.run_while(lambda: not of(net, 0, E.PostAcknowledged), net.now + 10.0)
    net.run_until(net.now + 10 * T.rto_min)
    assert [e.local_id for e in of(net, 0, E.PostAcknowledged)] == [mine]
    assert [e.text for e in of(net, 0, E.MessageReceived)].count("mine") == 1
    assert gates.count == {("mids", "mids/lobby"): 1} and relay._n_waiting == 0
