"""The guards against spoofed sources: stateless cookies that expire, the 3x anti-amplification
rule towards addresses that never proved themselves, per-source handshake limits.

Every amplification test observes real replies (a Retry IS sent where one is due), so none can
pass because nothing came back; and the smallest Hello the decoder accepts (5 bytes) would earn a
22-byte Retry (4.4x), so a guard that is removed or allows 10x fails here."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from udproom.protocol import frames as F
from udproom.protocol.cookies import AMPLIFICATION, CookieJar, SourceLimiter, amplification_ok, source_of
from udproom.protocol.crypto import Initiator
from udproom.protocol.peer import PeerNode
from udproom.protocol.relay import Relay, RelayConfig

from .adversary import Adversary, Watched, datagrams, frames
from .fakenet import FakeNet
from .harness import T

SRC = ("192.0.2.9", 4444)
#: [Hello tag, version, nick]: the decoder fills in the rest from defaults
TINY_HELLO = b"\x91\x93\x01\x01\xa0"


def padded_hello(cookie: bytes = b"", nonce: int = 7, nick: str = "x", node: int = 43) -> bytes:
    kx = Initiator().msg1  # (protocol 2: the handshake's message 1)
    return F.encode_one(
        F.padded_hello(version=F.VERSION, nick=nick, cookie=cookie, nonce=nonce, node=node, kx=kx)
    )


def relay_core():
    return Relay(RelayConfig(timing=T))


def peer_core():
    node = PeerNode("p", timing=T)
    node.join("lobby", 0.0)
    return node


CORES = [pytest.param(relay_core, id="relay"), pytest.param(peer_core, id="peer")]


def exchange(w: Watched, data: bytes, src: tuple, now: float) -> list[F.Frame]:
    w.receive_datagram(data, src, now)
    out: list[F.Frame] = []
    for reply, dst in w.datagrams_to_send(now):
        if dst == src:
            out.extend(f for f in F.decode(reply) if not isinstance(f, F.Sid))
    return out


# --------------------------------------------------------------------------- the rule itself


def test_amplification_ok_is_exactly_three_times():
    assert AMPLIFICATION == 3
    assert amplification_ok(300, 100) and not amplification_ok(301, 100)
    assert amplification_ok(3, 1) and not amplification_ok(4, 1)
    assert amplification_ok(0, 0) and not amplification_ok(1, 0)


# --------------------------------------------------------------------------- cores


@pytest.mark.parametrize("make", CORES)
def test_the_decoder_accepts_the_tiny_hello(make):
    assert isinstance(F.decode(TINY_HELLO)[0], F.Hello)
    assert len(F.encode([F.Retry(CookieJar().make(SRC, 0.0), F.VERSION)])) > 4 * len(TINY_HELLO)


@pytest.mark.parametrize("make", CORES)
def test_a_tiny_hello_earns_nothing_a_padded_one_earns_a_retry(make):
    w = Watched(make(), ("10.0.0.1", 6000))
    # the tiny Hello: its Retry would be 4.4x its size, so nothing at all goes back
    assert exchange(w, TINY_HELLO, SRC, 1.0) == []
    assert w.bytes_out[SRC] <= AMPLIFICATION * w.bytes_in[SRC]
    # from another address, a padded Hello: a Retry IS sent (this test cannot pass vacuously)
    other = ("192.0.2.10", 5555)
    replies = exchange(w, padded_hello(), other, 2.0)
    assert [type(f) for f in replies] == [F.Retry]
    assert 0 < w.bytes_out[other] <= AMPLIFICATION * w.bytes_in[other]
    # and the cookie it carries validates that address (and only that one)
    cookie = replies[0].cookie
    assert F.Retry not in {type(f) for f in exchange(w, padded_hello(cookie), other, 2.1)}


@pytest.mark.parametrize("make", CORES)
def test_hellos_of_every_size_respect_three_times(make):
    w = Watched(make(), ("10.0.0.1", 6000))
    full = len(
        F.hello_padding(F.size_of((F.Hello(version=F.VERSION, nick="x", cookie=b"", pad=b"", nonce=9),)))
    )
    answered = []
    for i, pad in enumerate([0, 1, 2, 3, 5, 8, 13, 21, 40, 100, 400, 1100, full - 1, full]):
        src = (f"192.0.2.{i + 20}", 1000 + i)
        data = F.encode_one(F.Hello(version=F.VERSION, nick="x", cookie=b"", pad=bytes(pad), nonce=9))
        if exchange(w, data, src, 1.0 + i):
            answered.append(len(data))
        assert w.bytes_out[src] <= AMPLIFICATION * w.bytes_in[src], (pad, w.bytes_out[src], w.bytes_in[src])
    # only Hellos padded to the full first-flight size are answered (and those are)
    assert answered == [F.HELLO_PAD_TO]


@pytest.mark.parametrize("make", CORES)
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.lists(
        datagrams(frames([F.Hello, F.Ping, F.Sid, F.Bye, F.Reset, F.Ack])) | datagrams(), max_size=8
    )
)
def test_no_unvalidated_address_gets_more_than_three_times(make, data):
    net = FakeNet(seed=1)
    addr = ("10.0.0.1", 6000)
    w = net.add(addr, Watched(make(), addr))
    mallory = Adversary(net, ("203.0.113.66", 6666))
    victims = []
    for i, d in enumerate(data):
        # spoofed sources (nobody there answers): one gets the hostile datagram, one a tiny Hello
        for victim, payload in (
            ((f"198.51.100.{i + 1}", 40000 + i), d),
            ((f"198.51.100.{i + 101}", 1), TINY_HELLO),
        ):
            mallory.forge(payload, addr, src=victim, delay=0.01 * i)
            victims.append(victim)
    net.run_until(net.now + 5.0)
    for victim in victims:
        assert w.bytes_out.get(victim, 0) <= AMPLIFICATION * w.bytes_in[victim], victim


# --------------------------------------------------------------------------- cookies


def test_cookie_is_valid_for_one_to_two_periods_then_expires():
    jar = CookieJar(b"s" * 32, period=30.0)
    c = jar.make(SRC, 29.9)  # made at the end of period 0
    assert jar.check(c, SRC, 29.9) and jar.check(c, SRC, 30.0) and jar.check(c, SRC, 59.9)
    assert not jar.check(c, SRC, 60.0)  # two periods on: expired
    assert not jar.check(c, SRC, 1e9)
    assert not jar.check(c, SRC, 0.0 - 0.1)  # from the future (period -1): not valid either
    later = jar.make(SRC, 60.0)
    assert not jar.check(later, SRC, 59.9)  # a cookie of the next period is not valid yet
    early = jar.make(SRC, -5.0)  # a clock below zero still has whole periods
    assert jar.check(early, SRC, -5.0) and jar.check(early, SRC, 20.0) and not jar.check(early, SRC, 30.0)


def test_cookie_is_bound_to_address_secret_and_length():
    jar = CookieJar(b"s" * 32)
    c = jar.make(SRC, 5.0)
    assert len(c) == 16 and jar.check(c, SRC, 5.0)
    assert not jar.check(c, ("192.0.2.9", 4445), 5.0)
    assert not jar.check(c, ("192.0.2.90", 4444), 5.0)
    assert not CookieJar(b"t" * 32).check(c, SRC, 5.0)
    assert not jar.check(c + b"\x00", SRC, 5.0) and not jar.check(c[:15], SRC, 5.0)
    assert not jar.check(b"", SRC, 5.0) and not jar.check(bytes(16), SRC, 5.0)
    assert CookieJar().secret != CookieJar().secret and len(CookieJar().secret) == 32


def test_relay_refuses_an_expired_cookie():
    w = Watched(relay_core(), ("10.0.0.1", 6000))
    (retry,) = exchange(w, padded_hello(), SRC, 1.0)
    # replayed two cookie periods later: only another Retry, no session
    period = w.core.cookies.period
    again = exchange(w, padded_hello(retry.cookie), SRC, 1.0 + 2 * period)
    assert [type(f) for f in again] == [F.Retry] and not w.core.sessions and not w.core._pending
    # a fresh one is accepted: the handshake goes on (a Welcome)
    fresh = exchange(w, padded_hello(again[0].cookie), SRC, 2.0 + 2 * period)
    assert [type(f) for f in fresh] == [F.Welcome] and SRC in w.core._pending


def test_peer_refuses_an_expired_cookie():
    w = Watched(peer_core(), ("10.0.0.1", 6000))
    (retry,) = exchange(w, padded_hello(nonce=42), SRC, 1.0)
    period = w.core.cookies.period
    again = exchange(w, padded_hello(retry.cookie, nonce=42), SRC, 1.0 + 2 * period)
    assert [type(f) for f in again] == [F.Retry] and not w.core.links
    exchange(w, padded_hello(again[0].cookie, nonce=42), SRC, 2.0 + 2 * period)
    assert SRC in w.core.links


# --------------------------------------------------------------------------- source limits


def test_source_limiter_rate_cap_and_prune():
    lim = SourceLimiter(rate=2.0, cap=3)
    a, b = ("192.0.2.1", 1), ("192.0.2.2", 1)
    assert [lim.allow(a, 0.0) for _ in range(3)] == [True, True, False]
    assert lim.allow(b, 0.0)  # per source
    assert lim.allow(a, 0.5) and not lim.allow(a, 0.5)  # refills at `rate`
    assert lim.allow(("192.0.2.2", 2), 0.0) and not lim.allow(("192.0.2.2", 3), 0.0)  # ports share one
    for i in range(10):  # a flood of forged sources: remembered addresses stay within the cap
        assert lim.allow((f"198.51.100.{i + 1}", 1), 1.0)
        assert len(lim.buckets) <= 3
    key_a = source_of(a)
    assert key_a not in lim.buckets  # the oldest were forgotten, not everyone new refused
    lim.prune(11.5, idle=10.0)
    assert lim.buckets == {}
    lim.allow(a, 20.0)
    lim.prune(25.0, idle=10.0)
    assert key_a in lim.buckets
    lim.prune(30.0)  # the default: idle for 10 s exactly is kept, longer is forgotten
    assert key_a in lim.buckets
    lim.prune(30.01)
    assert key_a not in lim.buckets
    assert SourceLimiter(1.0).cap == 100_000
