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
import os

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


def amplification_ok(reply_bytes: int, received_bytes: int) -> bool:
    """May an unvalidated address be sent `reply_bytes` after sending us `received_bytes`?"""
    return reply_bytes <= AMPLIFICATION * received_bytes


class SourceLimiter:
    """Per-source token buckets for the unauthenticated path (handshakes, Resets): at most `rate`
    a second from one address, and at most `cap` addresses remembered (beyond that the oldest are
    forgotten, so a flood from forged addresses cannot lock real clients out)."""

    __slots__ = ("buckets", "cap", "rate")

    def __init__(self, rate: float, cap: int = 100_000) -> None:
        self.rate = rate
        self.cap = cap
        self.buckets: dict[tuple, TokenBucket] = {}

    def allow(self, addr: tuple, now: float) -> bool:
        b = self.buckets.get(addr)
        if b is None:
            if len(self.buckets) >= self.cap:
                # Full (a flood of forged sources): forget the oldest rather than refuse everyone
                # new. Cookies keep the handshake stateless, so admitting a little more is safe.
                while len(self.buckets) >= self.cap:  # O(1): dicts keep insertion order
                    del self.buckets[next(iter(self.buckets))]
            b = self.buckets[addr] = TokenBucket(self.rate, self.rate, now)
        return b.take(now)

    def prune(self, now: float, idle: float = 10.0) -> None:
        for key in [k for k, b in self.buckets.items() if now - b.stamp > idle]:
            del self.buckets[key]
