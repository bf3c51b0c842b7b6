"""Limits per source address at the relay (issue 11: "a relay operator can set limits per key and
per address"): sessions open at once (`RelayConfig.max_sessions_per_address`, `relay
--max-sessions-per-address`), requests and posts a second from all of an address's sessions
together (`requests_per_address`, `posts_per_address`). An address is what `cookies.source_of`
says: an IPv4 address, or an IPv6 /64, whatever the port."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from udproom.protocol import frames as F
from udproom.protocol.cookies import source_of
from udproom.protocol.crypto import Identity, Initiator
from udproom.protocol.relay import NO_ADDRESS_LIMITS, Relay, RelayConfig

from .harness import HandClient, T

REFUSED = "too many sessions from your address on this relay"


def refusal(hand: HandClient) -> str | None:
    """The reason of the Refuse the relay answered `hand`'s Login with (None: it logged in)."""
    reasons = [f.reason for f in hand.answer if isinstance(f, F.Refuse)]
    assert (hand.logged_in is None) == bool(reasons), hand.answer
    return reasons[0] if reasons else None


def timed_out(relay: Relay, now: float, until: float) -> float:
    """Run the relay's timers from `now` to `until` (everyone silent); returns the time reached."""
    while now < until:
        now += 0.25
        relay.handle_timer(now)
        relay.datagrams_to_send(now)
    return now


def test_sessions_beyond_an_addresss_cap_are_refused_and_a_freed_slot_admits_again():
    relay = Relay(RelayConfig(timing=T, max_sessions_per_address=2))
    ip = "198.51.100.7"
    a, b = HandClient(relay, (ip, 1), "a"), HandClient(relay, (ip, 2), "b")
    assert refusal(a) is None and refusal(b) is None
    c = HandClient(relay, (ip, 3), "c")  # another port is the same address
    reason = refusal(c)
    assert reason is not None and reason.startswith(REFUSED) and "\n" not in reason
    assert (ip, 3) not in relay.sessions and relay.stats["sessions_refused_address"] == 1
    assert refusal(HandClient(relay, ("198.51.100.8", 3), "d")) is None  # another address: its own cap
    # a goodbye frees a slot
    a.send([F.Bye("later")], 1.1)
    assert refusal(HandClient(relay, (ip, 4), "e", now=1.2)) is None
    assert refusal(HandClient(relay, (ip, 5), "f", now=1.2)) is not None
    # and so does a timeout (everyone here falls silent)
    now = timed_out(relay, 1.2, 1.2 + T.timeout + T.keepalive)
    assert not relay.sessions and relay.stats["sessions_timed_out"] == 3  # b, d, e
    assert relay._per_source == {}  # nothing kept for an address without sessions
    assert refusal(HandClient(relay, (ip, 6), "g", now=now)) is None
    assert refusal(HandClient(relay, (ip, 7), "h", now=now)) is None
    assert b.addr not in relay.sessions


def test_a_client_starting_over_or_resuming_at_the_cap_is_not_refused():
    """The session a Login replaces (the same address starting over, or `Login.resume` from a new
    port after a NAT rebinding) frees its slot before the cap is checked."""
    relay = Relay(RelayConfig(timing=T, max_sessions_per_address=1))
    ip = "198.51.100.7"
    first = HandClient(relay, (ip, 1), "ann")
    again = HandClient(relay, (ip, 1), "ann", now=1.1, nonce=8)  # the client at this port started over
    assert refusal(again) is None and len(relay.sessions) == 1
    assert relay._per_source == {source_of((ip, 1)): 1} and first.token != again.token
    moved = HandClient(relay, (ip, 2), "ann", now=1.2, nonce=9, resume=again.token)  # a new port
    assert refusal(moved) is None and list(relay.sessions) == [(ip, 2)]
    assert relay._per_source == {source_of((ip, 1)): 1}
    other = HandClient(relay, (ip, 3), "bob", now=1.3)  # and anyone else from there still is
    assert refusal(other) is not None


def test_addresses_in_one_ipv6_64_share_a_cap_and_other_64s_do_not():
    relay = Relay(RelayConfig(timing=T, max_sessions_per_address=2))
    one = [("2001:db8:1:2::1", 1), ("2001:db8:1:2:ffff:ffff:ffff:fffe", 1), ("2001:db8:1:2:abcd::9", 9)]
    got = [refusal(HandClient(relay, addr, f"n{i}")) for i, addr in enumerate(one)]
    assert got[:2] == [None, None] and got[2] is not None and got[2].startswith(REFUSED)
    assert refusal(HandClient(relay, ("2001:db8:1:3::1", 1), "other")) is None  # the next /64
    assert refusal(HandClient(relay, ("198.51.100.7", 1), "v4")) is None


def test_no_cap_when_the_limit_is_zero():
    relay = Relay(RelayConfig(timing=T, **NO_ADDRESS_LIMITS))
    for port in range(1, 81):
        assert refusal(HandClient(relay, ("198.51.100.7", port), f"n{port}")) is None
    assert len(relay.sessions) == 80


ops = st.lists(
    st.tuples(st.sampled_from(["open", "bye", "silence"]), st.integers(0, 3), st.integers(0, 5)),
    max_size=14,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_property_an_address_never_holds_more_sessions_than_its_cap(steps):
    """Whatever order sessions open, leave and time out in, from addresses and /64s that share or
    not: no address ever holds more than its cap, a login is refused only at the cap, and the
    relay's count per address is exactly its sessions (no slot leaks, nothing left behind)."""
    cap = 2
    relay = Relay(RelayConfig(timing=T, max_sessions_per_address=cap))
    hosts = ["198.51.100.1", "198.51.100.2", "2001:db8::1", "2001:db8::2"]  # the last two: one /64
    now, nick = 1.0, 0
    hands: dict = {}
    for what, host, port in steps:
        addr = (hosts[host], 1000 + port)
        if what == "open":
            nick += 1
            before = sum(source_of(s.addr) == source_of(addr) for a, s in relay.sessions.items() if a != addr)
            hand = HandClient(relay, addr, f"n{nick}", now=now, nonce=nick)
            assert (refusal(hand) is None) == (before < cap)
            hands[addr] = hand
        elif what == "bye" and addr in relay.sessions:
            hands[addr].send([F.Bye("bye")], now)
            assert addr not in relay.sessions
        elif what == "silence":
            now = timed_out(relay, now, now + T.timeout + T.keepalive)
        counts: dict = {}
        for s in relay.sessions.values():
            counts[source_of(s.addr)] = counts.get(source_of(s.addr), 0) + 1
        assert relay._per_source == counts and all(n <= cap for n in counts.values())
        now += 0.01


def _join(hand: HandClient, now: float) -> None:
    hand.send([F.Req(1, F.OP_JOIN, "lobby")], now)
    hand.frames(hand.relay.datagrams_to_send(now))


def _posts(hand: HandClient, first: int, n: int, now: float) -> list[tuple[bytes, tuple]]:
    """`n` posts from `hand` (cseq `first`...), sent in datagrams that fit; what the relay sent."""
    port = hand.addr[1]
    reqs = [
        F.Req(first + i, F.OP_POST, "lobby", f"{port}:{first + i}", port << 20 | first + i) for i in range(n)
    ]
    for i in range(0, n, 20):
        hand.send(reqs[i : i + 20], now)
    return hand.relay.datagrams_to_send(now)


def test_a_flood_from_one_address_is_limited_and_another_addresss_member_still_posts():
    """Three sessions from one address, each under its own fresh key (keys cost nothing, so the
    per-key limit alone would not hold them), flood the room: their posts beyond the address's
    bucket are refused with one line (never acknowledged, never stored), their requests beyond
    its request bucket are dropped and counted, and a member at another address posts, is
    answered and is delivered to the room as if nothing happened."""
    cfg = RelayConfig(
        timing=T,
        posts_per_key=0,
        posts_per_address=5.0,
        posts_per_address_burst=10.0,
        requests_per_address=40.0,
        requests_per_address_burst=60.0,
    )
    relay = Relay(cfg)
    mallory = [
        HandClient(relay, ("203.0.113.66", p), f"m{p}", identity=Identity.generate()) for p in (1, 2, 3)
    ]
    bob = HandClient(relay, ("198.51.100.2", 22), "bob")
    carol = HandClient(relay, ("198.51.100.3", 33), "carol")
    for hand in (*mallory, bob, carol):
        _join(hand, 1.1)
    answers = [f for m in mallory for f in m.frames(_posts(m, 2, 40, 1.1)) if isinstance(f, F.Result)]
    ok = [r for r in answers if r.code == F.RES_OK]
    refused = [r for r in answers if r.code == F.RES_REFUSED]
    assert len(ok) == 10  # the address's burst, whatever its three keys
    assert refused and all(r.reason.startswith("too many messages from your address") for r in refused)
    assert all("\n" not in r.reason for r in refused)
    # the request bucket's burst (60, the joins' 3 included) answered; the rest were dropped and
    # counted (or wait behind the dropped one, in order): their clients send them again
    assert len(answers) == 60 - 3 and relay.stats["requests_limited_address"] >= 1
    assert relay.stats["posts_refused_address"] == len(refused)
    # bob, at another address, posts meanwhile: answered, and delivered to carol
    out = _posts(bob, 2, 1, 1.1)
    assert [r.code for r in bob.frames(out) if isinstance(r, F.Result)] == [F.RES_OK]
    delivered = [
        ev.text for f in carol.frames(out) if isinstance(f, F.Batch) for ev in f.events if ev.kind == F.EV_MSG
    ]
    assert "22:2" in delivered
    stored = [e.text for e in relay.rooms["lobby"].events() if e.kind == F.EV_MSG]
    assert len(stored) == 10 + 1 and "22:2" in stored
    # the buckets refill at their rates: a second later, five more posts from the address
    later = [f for f in mallory[0].frames(_posts(mallory[0], 42, 8, 2.1)) if isinstance(f, F.Result)]
    assert [r.code for r in later].count(F.RES_OK) == 5


def test_a_hostile_address_costs_bounded_memory_and_idle_buckets_are_forgotten():
    """What the per-address limits keep: one count per address with sessions, and one bucket per
    address heard from lately; a flood from one address grows none of it, and once everyone has
    left and the buckets are full again, nothing is kept at all."""
    relay = Relay(RelayConfig(timing=T, posts_per_address=5.0, posts_per_address_burst=10.0))
    mallory = HandClient(relay, ("203.0.113.66", 1), "mallory")
    _join(mallory, 1.0)
    for round_ in range(20):
        _posts(mallory, 2 + 40 * round_, 40, 1.0 + round_ * 0.01)
    sizes = (len(relay._per_source), len(relay._request_limit.buckets), len(relay._source_post_limit.buckets))
    assert sizes == (1, 1, 1)
    others = [HandClient(relay, (f"198.51.100.{i}", 100 + i), f"n{i}", now=1.5) for i in range(1, 21)]
    for hand in others:
        _join(hand, 1.5)
        _posts(hand, 2, 1, 1.5)
    assert len(relay._request_limit.buckets) == len(relay._source_post_limit.buckets) == 21
    for hand in [mallory, *others]:
        hand.send([F.Bye("bye")], 2.0)
    assert relay._per_source == {}
    timed_out(relay, 2.0, 2.0 + 10.0)  # (the post buckets are full after burst / rate = 2 s)
    assert relay._source_post_limit.buckets == {}
    timed_out(relay, 12.0, 14.0)  # and the request buckets after 20000 / 10000 = 2 s idle
    assert relay._request_limit.buckets == {}


def half_open(relay: Relay, addr: tuple, now: float) -> bool:
    """A Hello with its cookie from `addr` and no Login after it: True if the relay answered it
    (a Welcome: the handshake now waits for its Login)."""
    from .harness import hello_datagram

    hs = Initiator(identity=Identity.generate(), prologue=F.hello_prologue(F.Hello(F.VERSION, "", 7)))
    relay.receive_datagram(hello_datagram(kx=hs.msg1, nonce=7), addr, now)
    cookie = F.decode(relay.datagrams_to_send(now)[0][0])[0].cookie
    relay.receive_datagram(hello_datagram(cookie, kx=hs.msg1, nonce=7), addr, now)
    return any(isinstance(f, F.Welcome) for data, _ in relay.datagrams_to_send(now) for f in F.decode(data))


def test_half_open_handshakes_from_one_address_are_bounded_and_cannot_fill_the_relay():
    """An address's handshakes waiting for their Login count (`max_handshakes_per_address`): a Hello
    beyond the cap is dropped and counted, others' handshakes and logins go on, and a slot frees
    when one times out. Before, one address could hold hundreds of half-open handshakes, and a few
    addresses filled `max_sessions` ("relay is full") for everyone."""
    relay = Relay(RelayConfig(timing=T, max_sessions=20, max_handshakes_per_address=4, hello_burst=100))
    ip6 = "2001:db8:1:2::"
    answered = [half_open(relay, (f"{ip6}{i:x}", 1000 + i, 0, 0), 1.0) for i in range(12)]
    assert answered == [True] * 4 + [False] * 8  # one /64: at most 4 wait at once
    assert relay.stats["handshakes_limited_address"] == 8
    assert half_open(relay, ("2001:db8:1:3::1", 1, 0, 0), 1.0)  # another /64 has its own
    assert refusal(HandClient(relay, ("198.51.100.9", 1), "ann")) is None  # logins go on
    now = timed_out(relay, 1.0, 1.0 + relay.config.pending_timeout + 0.5)
    assert relay._pending_per_source == {}  # nothing kept once they timed out
    assert half_open(relay, (f"{ip6}99", 2000, 0, 0), now)
    assert refusal(HandClient(relay, (f"{ip6}aa", 2001, 0, 0), "bob", now=now)) is None
    assert relay._pending_per_source == {source_of((f"{ip6}99", 2000, 0, 0)): 1}  # (bob's Login freed his)
