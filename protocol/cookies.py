"""Stateless address validation shared by the relay and the direct peer.

A Hello without a valid cookie earns only a Retry carrying `CookieJar.make(addr, now)`: an HMAC
over the sender's address and a coarse time bucket under a per-process secret. Nothing is stored,
so a flood of forged Hellos creates no state. A cookie stays valid for one to two periods.
Until an address is validated, answers to it are limited to 3x the bytes received from it (QUIC's
anti-amplification rule): `amplification_ok`.

Pure code: no sockets, no clock (time is a parameter).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os

from .frames import HELLO_PAD_TO, VERSION, Frame, Hello, Reset, Retry, Sid, encode
from .reliability import TokenBucket

COOKIE_PERIOD = 30.0
AMPLIFICATION = 3


class CookieJar:
    __slots__ = ("period", "secret")

    def __init__(self, secret: bytes | None = None, period: float = COOKIE_PERIOD) -> None:
        self.secret = secret or os.urandom(32)
        self.period = period

    def _mac(self, addr: tuple, bucket: int) -> bytes:
        msg = f"{addr[0]}|{addr[1]}|{bucket}".encode()
        return hmac.new(self.secret, msg, hashlib.sha256).digest()[:16]

    def make(self, addr: tuple, now: float) -> bytes:
        return self._mac(addr, int(now // self.period))

    def check(self, cookie: bytes, addr: tuple, now: float) -> bool:
        if not cookie or len(cookie) != 16:
            return False
        bucket = int(now // self.period)
        return hmac.compare_digest(cookie, self._mac(addr, bucket)) or hmac.compare_digest(
            cookie, self._mac(addr, bucket - 1)
        )


def hello_padded(datagram_size: int) -> bool:
    """Is a datagram carrying a Hello big enough to be answered at all? Clients pad their Hello to
    HELLO_PAD_TO bytes, so that a Retry (or Refuse) is never more than what came in; a smaller
    Hello is counted and dropped (relay and direct peer alike)."""
    return datagram_size >= HELLO_PAD_TO


def source_of(addr: tuple) -> object:
    """What a per-source limit counts as one source: the IPv4 address, or the IPv6 /64 (one host
    gets a whole /64 and can pick any port or interface id in it). The port never matters."""
    host = addr[0]
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except (ValueError, AttributeError):
        return host
    if ip.version == 6:
        mapped = ip.ipv4_mapped
        if mapped is not None:
            return int(mapped)
        return ("v6", int(ip) >> 64)
    return int(ip)


def amplification_ok(reply_bytes: int, received_bytes: int) -> bool:
    """May an unvalidated address be sent `reply_bytes` after sending us `received_bytes`?"""
    return reply_bytes <= AMPLIFICATION * received_bytes


def limited_reply(frames: list[Frame], received_bytes: int) -> bytes | None:
    """`frames` as one datagram, if it may go to an address not validated yet (at most
    AMPLIFICATION x the bytes that came from it); None if it may not."""
    data = encode(frames)
    return data if amplification_ok(len(data), received_bytes) else None


def screen_unknown(
    frames: list[Frame],
    addr: tuple,
    size: int,
    now: float,
    jar: CookieJar,
    limiter: SourceLimiter,
    stats: dict[str, int],
    quiet: tuple[type, ...],
) -> tuple[Hello | None, bytes | None]:
    """The stateless step for a datagram from an address we hold no state for (relay and peer).

    Returns (the Hello, None) once its cookie proves the address; else (None, the reply to send
    there, or None). A bare Sid is someone who lost us (we restarted, or dropped them): a Reset
    echoing its token tells them, so that only the real owner believes it, unless the datagram
    carries one of `quiet` (never answer a goodbye or a reset with another). Only a padded Hello
    is answered (an unpadded one could buy a Retry bigger than itself), per source at the
    limiter's rate; without a valid cookie it gets a Retry with one. Replies are limited to 3x
    the bytes received."""
    first = frames[0]
    if not isinstance(first, Hello):
        stats["unknown_source"] = stats.get("unknown_source", 0) + 1
        if type(first) is Sid and limiter.allow(addr, now) and not any(isinstance(f, quiet) for f in frames):
            return None, limited_reply([Reset(first.token)], size)
        return None, None
    if not hello_padded(size):
        stats["unpadded"] = stats.get("unpadded", 0) + 1
        return None, None
    if not limiter.allow(addr, now):
        stats["rate_limited"] = stats.get("rate_limited", 0) + 1
        return None, None
    if not jar.check(first.cookie, addr, now):
        return None, limited_reply([Retry(jar.make(addr, now), VERSION)], size)
    return first, None


class SourceLimiter:
    """Per-source token buckets for the unauthenticated path (handshakes, Resets): at most `rate`
    a second (bursts of `burst`) from one source (`source_of`: an IPv4 address or an IPv6 /64,
    whatever the port), and at most `cap` sources remembered (beyond that the oldest are
    forgotten, so a flood from forged addresses cannot lock real clients out)."""

    __slots__ = ("buckets", "burst", "cap", "rate")

    def __init__(self, rate: float, cap: int = 100_000, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else rate
        self.cap = cap
        self.buckets: dict[object, TokenBucket] = {}

    def allow(self, addr: tuple, now: float) -> bool:
        return self.take(source_of(addr), now)

    def take(self, key: object, now: float, n: float = 1.0) -> bool:
        """`n` tokens from `key`'s bucket (any hashable key: a source, an identity key)."""
        b = self.buckets.get(key)
        if b is None:
            if len(self.buckets) >= self.cap:
                # Full (a flood of forged sources): forget the oldest rather than refuse everyone
                # new. Cookies keep the handshake stateless, so admitting a little more is safe.
                while len(self.buckets) >= self.cap:  # O(1): dicts keep insertion order
                    del self.buckets[next(iter(self.buckets))]
            b = self.buckets[key] = TokenBucket(self.rate, self.burst, now)
        return b.take(now, n)

    def prune(self, now: float, idle: float = 10.0) -> None:
        for key in [k for k, b in self.buckets.items() if now - b.stamp > idle]:
            del self.buckets[key]
