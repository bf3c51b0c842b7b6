"""JetStreamLog and ClusterNicks on a relay (`nonblocking`): a call that needs a round trip starts
it and raises roomlog.Pending(key) at once, also while the server is stopped (SIGSTOP); the key is
reported by `completed()` (and the wakeup called) when the answer is there; the call asked again
takes it, once, without a second round trip. An answer nobody comes back for is dropped after
RESULT_KEEP, with what it held undone: a nick claimed for a Login that never returned is free again."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from udproom.protocol import frames as F
from udproom.protocol import jetstream
from udproom.protocol.jetstream import ClusterNicks, JetStreamLog, NatsLink
from udproom.protocol.roomlog import Pending


def until_completed(part, key, woken: threading.Event) -> None:
    """Wait (bounded, woken by the part) for `key` among the completed ones."""
    got: list = []
    for _ in range(100):
        woken.clear()
        got += part.completed()
        if key in got:
            return
        assert woken.wait(10), "no wakeup"
    raise AssertionError(f"{key} never completed: {got}")


def test_follow_read_and_a_claim_never_wait_for_a_stopped_server(nats_server):
    link = NatsLink(nats_server.url, timeout=5.0)
    log = JetStreamLog(link)
    names = ClusterNicks(link, "relay-a", ttl=30.0)
    woken = threading.Event()
    log.set_wakeup(woken.set)
    names.set_wakeup(woken.set)
    log.nonblocking = names.nonblocking = True
    try:
        log.stream_numbers = True
        log.append("r", F.Ev(kind=F.EV_MSG, nick="a", text="one", ts=1.0, mid=7))
        log.commit()
        os.kill(nats_server.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(Pending) as follow:
                log.follow("r")
            with pytest.raises(Pending) as claim:
                names.claim("alice", 1)
            with pytest.raises(Pending) as again:  # (asked again meanwhile: the same round trip)
                log.follow("r")
            assert again.value.key == follow.value.key and len(log._ops) == 1
        finally:
            os.kill(nats_server.proc.pid, signal.SIGCONT)
        until_completed(log, follow.value.key, woken)
        assert log.follow("r") == (1, 1, "")
        assert log.follow("r") == (1, 1, "")  # (followed: at once from now on)
        until_completed(names, claim.value.key, woken)
        assert names.claim("alice", 1) is True
        with pytest.raises(Pending) as read:
            log.read("r", 1, 1)
        until_completed(log, read.value.key, woken)
        assert [(s, e.text) for s, e in log.read("r", 1, 1)] == [(1, "one")]
        assert len(log._ops) == 0 and len(names._ops) == 0  # (each answer used once)
    finally:
        names.close()
        log.close()
        link.close()


def test_a_claim_nobody_came_back_for_is_released(nats_server, monkeypatch):
    link = NatsLink(nats_server.url, timeout=5.0)
    names = ClusterNicks(link, "relay-a", ttl=30.0)
    woken = threading.Event()
    names.set_wakeup(woken.set)
    names.nonblocking = True
    try:
        with pytest.raises(Pending) as first:
            names.claim("bob", 1)  # a Login whose client never comes back for the answer
        until_completed(names, first.value.key, woken)
        monkeypatch.setattr(jetstream, "RESULT_KEEP", 0.0)
        with pytest.raises(Pending) as second:  # (starting another sweeps the old answer out)
            names.claim("bob", 2)
        monkeypatch.setattr(jetstream, "RESULT_KEEP", 30.0)  # (the second's answer is kept)
        until_completed(names, second.value.key, woken)
        # the first claim was released (on the NATS thread, before the second's round trip)
        assert names.claim("bob", 2) is True
    finally:
        names.close()
        link.close()
