"""ClusterNicks' bookkeeping when its heartbeat (`_refresh`), a release and an expired claim meet,
against a real nats-server. The moments are made certain by holding one KV round trip of the
refresh (a gate in the bucket's `update`): no sleeps. And a direct message whose relay-to-relay
request is answered late (the recipient's relay keeps it in the cluster first)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from udproom.protocol import jetstream
from udproom.protocol.jetstream import ClusterNames, ClusterNicks, NatsLink
from udproom.protocol.roomlog import Pending, StoreError

from .test_jetstream import wait_for
from .test_nonblocking import until_completed


class Gate:
    """Hold the refresh's `update` of one nick's claim (before or after it reaches the server) until
    opened; `seen(nick)` is set when the refresh's update of that nick has returned."""

    def __init__(self, nicks: ClusterNicks, hold: str, after: bool) -> None:
        self.link = nicks.link
        self.kv = self.link.call(nicks.names._store())
        self.hold = ClusterNames.key(hold)
        self.after = after
        self.held = threading.Event()
        self.returned: dict[str, threading.Event] = {}
        self._open = self.link.call(self._event())
        real = self.kv.update

        async def update(key, value, last=None):
            if key == self.hold and not self.held.is_set() and not self.after:
                self.held.set()
                await self._open.wait()
            try:
                return await real(key, value, last=last)
            finally:
                if key == self.hold and not self.held.is_set() and self.after:
                    self.held.set()
                    await self._open.wait()
                if key in self.returned:
                    self.returned[key].set()

        self.kv.update = update

    @staticmethod
    async def _event() -> asyncio.Event:
        return asyncio.Event()

    def seen(self, nick: str) -> threading.Event:
        return self.returned.setdefault(ClusterNames.key(nick), threading.Event())

    def open(self) -> None:
        self.link.loop.call_soon_threadsafe(self._open.set)


def released_by(nicks: ClusterNicks) -> threading.Event:
    """Set when a release (`_release`, on the NATS thread) has finished."""
    done = threading.Event()
    real = nicks._release

    async def tracked(nick: str, token: int) -> None:
        try:
            await real(nick, token)
        finally:
            done.set()

    nicks._release = tracked
    return done


def nonblocking(nicks: ClusterNicks) -> threading.Event:
    """`nicks` as on a relay (Pending until answered); the event is set when an answer comes."""
    woken = threading.Event()
    nicks.set_wakeup(woken.set)
    nicks.nonblocking = True
    return woken


def release_while_held(gate: Gate, nicks: ClusterNicks, nick: str, token: int) -> None:
    """`nicks` releases `nick` (and has done so) while `gate` holds its update; then it opens."""
    assert gate.held.wait(10), "the update to hold never came"
    done = released_by(nicks)
    nicks.release(nick, token)
    assert done.wait(10)
    gate.open()


@pytest.fixture
def relays(nats_server):
    """relays(timeout) -> two ClusterNicks (relay0, relay1), each on its own link; closed after."""
    made: list = []

    def make(timeout: float = 5.0) -> list[ClusterNicks]:
        links = [NatsLink(nats_server.url, timeout=timeout) for _ in range(2)]
        made.extend(links)
        nicks = [ClusterNicks(link, f"relay{i}", ttl=6.0) for i, link in enumerate(links)]
        made[:0] = nicks
        return nicks

    try:
        yield make
    finally:
        for part in made:
            part.close()


@pytest.fixture
def two(relays):
    return relays()


def test_a_claim_released_while_the_refresh_re_puts_it_is_not_brought_back(two):
    """The refresh's compare-and-set of bob's claim reached the server (a new revision) when bob
    left: the release's delete names the old revision and fails. Before the fix the refresh's answer
    was dropped (bob is no longer ours) and the claim stayed in the bucket until its TTL, held for
    nobody: another relay was refused 'bob' ('in use on another relay', for good). Failed so."""
    a, b = two
    assert a.claim("bob", 1) and a.claim("carol", 2)  # (refreshed in this order: bob, then carol)
    gate = Gate(a, "bob", after=True)
    carol = gate.seen("carol")
    release_while_held(gate, a, "bob", 1)
    assert carol.wait(10)  # (the refresh is past bob)
    assert b.link.call(b.names.owner("bob")) is None
    assert b.claim("bob", 3)
    assert not a.claim("bob", 4)  # (the claim is b's: nothing of a's was left to take it over)


def test_a_release_before_the_refresh_re_puts_it_keeps_the_sessions_key_for_its_new_nick(two):
    """alice (identity key K) renames herself bob; the relay releases 'alice' while the refresh is
    about to re-put it: its compare-and-set then fails, as for a claim taken over by another relay.
    Before the fix the refresh forgot the session's member key then, though the session holds bob,
    and re-put bob's claim without it: when her client failed over to another relay with no token
    to present (its Welcome lost), the claim of 'bob' by her key was refused. Failed so."""
    a, b = two
    key = b"k" * 32
    assert a.claim("alice", 1, key=key) and a.claim("bob", 1, key=key)
    gate = Gate(a, "alice", after=False)
    bob = gate.seen("bob")
    release_while_held(gate, a, "alice", 1)
    assert bob.wait(10)  # (the refresh re-put bob's claim)
    assert b.claim("bob", 7, key=key)  # the same member, failing over


def test_a_look_alike_nick_change_nobody_came_back_for_leaves_the_nick_the_session_has(two, monkeypatch):
    """alice renames herself aIice (capital I: a look-alike, they share a key); the claim's answer is
    never taken (the request was refused meanwhile: too many waiting, or a check on this relay) and
    is dropped after RESULT_KEEP, which gives back what it claimed. Before the fix that released
    every key of 'aIice', the one 'alice' shares too: alice still had her nick, but another relay
    could claim 'alice'. Failed so."""
    a, b = two
    woken = nonblocking(a)
    with pytest.raises(Pending) as login:
        a.claim("alice", 1)
    until_completed(a, login.value.key, woken)
    assert a.claim("alice", 1)
    with pytest.raises(Pending) as change:
        a.claim("aIice", 1)
    until_completed(a, change.value.key, woken)
    done = released_by(a)
    monkeypatch.setattr(jetstream, "RESULT_KEEP", 0.0)
    a.completed()  # (the relay's loop: answers kept too long are dropped)
    assert done.wait(10)
    assert b.link.call(b.names.owner("aiice")) is None  # what only 'aIice' had is free
    assert not b.claim("alice", 2)  # alice's nick is still hers
    left = released_by(a)
    a.release("alice", 1)  # (she leaves: then it is free)
    assert left.wait(10)
    assert b.claim("alice", 2)


def test_a_take_over_whose_claim_was_released_meanwhile_makes_it_afresh(two):
    """bob's client fails over to relay1 (the same identity key) while relay0 releases bob's claim
    (its session timed out there): relay1 read the claim, and its compare-and-set then finds it
    deleted. The nick is free: relay1 claims it. Before the fix the take-over gave up ('in use on
    another relay', final, with nobody holding it). Failed so."""
    a, b = two
    key = b"k" * 32
    assert a.claim("bob", 1, key=key)
    woken = nonblocking(b)
    gate = Gate(b, "bob", after=False)
    with pytest.raises(Pending) as failover:
        b.claim("bob", 2, key=key)
    release_while_held(gate, a, "bob", 1)
    until_completed(b, failover.value.key, woken)
    assert b.claim("bob", 2, key=key)
    assert b.link.call(b.names.owner("bob"))[0].startswith("relay1/")


def test_a_claim_that_times_out_between_a_nicks_two_keys_leaves_neither(relays):
    """'Ian' has two keys ('ian', and 'lan' as shown: capital I looks like l). Its claim got the first
    and its round trip for the second did not come back in time (a stalled server, a failover
    storm): the claim is cancelled (asyncio.wait_for in _Ops) and the Login refused with a retry.
    Before the fix the first key stayed in the relay's claims, refreshed for good, for a session that
    never was: no one else could ever have 'Ian' (nor 'ian' nor 'lan'). Failed so."""
    a, b = relays(timeout=1.0)
    kv = a.link.call(a.names._store())
    real, creates = kv.create, []

    async def create(key, value, *args, **kwargs):
        creates.append(key)
        if len(creates) == 2:  # the second key's answer never comes
            await asyncio.Event().wait()
        return await real(key, value, *args, **kwargs)

    kv.create = create
    woken = nonblocking(a)
    with pytest.raises(Pending) as login:
        a.claim("Ian", 1)
    until_completed(a, login.value.key, woken)
    with pytest.raises(StoreError):
        a.claim("Ian", 1)
    assert len(creates) == 2 and not a._mine
    wait_for(lambda: b.link.call(b.names.owner("ian")) is None and b.link.call(b.names.owner("lan")) is None)
    assert b.claim("Ian", 2)


def test_a_direct_message_whose_arrival_is_answered_late_is_not_called_undelivered(relays):
    """relay1 holds bob; relay0 sends it a DM. relay1 keeps it in the cluster (KV) before it answers
    the request, and that put is slow (a loaded cluster): the answer comes after relay0's 1 s
    request timeout. The DM is in bob's inbox all the same and is delivered; relay0 must not have
    said 'not delivered' first (its relay answers the sender with the first outcome). Failed so:
    (1, False, 'the relay holding bob did not answer: not delivered') came before (1, True, 'bob')."""
    a, b = relays(timeout=1.0)
    assert b.claim("bob", 1)
    asked, gate = threading.Event(), b.link.call(Gate._event())
    real_keep, real_request = b._keep_dm, a.link.nc.request

    async def slow_keep(*args):
        await gate.wait()  # (the KV put of a loaded cluster)
        await real_keep(*args)

    async def request(subject, *args, **kwargs):
        try:
            return await real_request(subject, *args, **kwargs)
        finally:
            if subject.startswith("udproom.dm."):  # (not the KV's own requests)
                asked.set()

    b._keep_dm, a.link.nc.request = slow_keep, request
    a.send_dm(1, "bob", b"the event")
    assert asked.wait(10)  # relay0's request is over (no answer in time)
    b.link.loop.call_soon_threadsafe(gate.set)
    wait_for(lambda: b._dm_in)
    assert [(o, i, to) for o, i, to, _ev, _kept in b.incoming_dms()] == [(a.relay_id, 1, "bob")]
    b.answer_dm(a.relay_id, 1, True, "bob")  # (bob acknowledged it)
    outcomes: list = []
    wait_for(lambda: outcomes.extend(a.dm_outcomes()) or any(ok for _i, ok, _w in outcomes))
    assert outcomes == [(1, True, "bob")]


def test_a_nick_released_while_the_link_is_down_is_not_refreshed_for_good(relays, nats_server):
    """bob leaves while his relay's link to NATS is down (a server restart, a network blip). Before
    the fix `release` did nothing then: the claim stayed in the relay's claims and its refresh put it
    again every ttl/3 once the link was back, for good: no one else could have 'bob' while that relay
    ran. Failed so (relay1 refused 'bob' until the bound)."""
    a, b = relays()
    assert a.claim("bob", 1)
    nats_server.kill()
    wait_for(lambda: not a.link.connected)
    a.release("bob", 1)  # (bob's session ends meanwhile)
    nats_server.start()  # the same port and store directory
    wait_for(lambda: a.link.connected and b.link.connected)

    def free() -> bool:
        try:
            return b.claim("bob", 2)
        except StoreError:  # (b's link back a moment ago)
            return False

    wait_for(free, timeout=3 * a.ttl)  # (the claim's TTL, three refreshes of a's)
    assert not a._mine
