"""Relays of a cluster and their clients in one event loop, on a real nats-server (tests)."""

from __future__ import annotations

import asyncio
import os
import time

from udproom.protocol import events as E
from udproom.protocol.jetstream import ClusterNicks, JetStreamLog, NatsLink
from udproom.protocol.net.runners import RelayClient, RelayServer
from udproom.protocol.relay import RelayConfig
from udproom.protocol.reliability import Timing

from ..net.test_runners import Recorder as _Recorder


class Recorder(_Recorder):
    """tests/net/test_runners.py's, waiting for any condition, not only for one event."""

    async def until(self, predicate, timeout: float = 30.0, what: str = "event") -> None:
        """Wait (bounded) until `predicate()` holds."""
        if not predicate():
            await self.wait(lambda _e: predicate(), timeout, what)


async def cluster_relay(url: str, commit_timeout: float = 5.0, names_url: str = "") -> RelayServer:
    """A relay on the cluster at `url`; its nick claims and member lists through `names_url` (a
    connection of their own, made slow by a test) if given."""
    timing = Timing.fast()
    link = NatsLink(url, timeout=3.0)
    log = JetStreamLog(link, commit_timeout=commit_timeout)
    names_link = NatsLink(names_url, timeout=3.0) if names_url else link
    names = ClusterNicks(names_link, os.urandom(4).hex(), ttl=timing.timeout)
    server = RelayServer("127.0.0.1:0", RelayConfig(timing=timing), log=log, names=names)
    await server.start()
    return server


async def stop_relay(server: RelayServer) -> None:
    link = server.log.link
    server.names.close()
    await server.stop()
    link.close()
    if server.names.link is not link:
        server.names.link.close()


class Client:
    def __init__(self, server: RelayServer, nick: str) -> None:
        self.backend = RelayClient(f"127.0.0.1:{server.port}", nick, ["lobby"], timing=Timing.fast())
        self.rec = Recorder()
        self.task = asyncio.create_task(self.backend.run(self.rec))
        self.texts: dict[int, str] = {}

    async def joined(self) -> None:
        await self.rec.until(lambda: self.rec.of(E.RoomJoined), what="RoomJoined")

    def post(self, text: str) -> int:
        local = self.backend.post("lobby", text)
        self.texts[local] = text
        return local

    def settled(self, ids) -> bool:
        done = {e.local_id for e in self.rec.of(E.PostAcknowledged)} | {
            e.local_id for e in self.rec.of(E.PostFailed)
        }
        return set(ids) <= done

    def acked(self) -> dict[str, int]:
        return {
            self.texts[e.local_id]: e.seq for e in self.rec.of(E.PostAcknowledged) if e.local_id in self.texts
        }

    def received(self) -> list[tuple[int, str]]:
        return [(e.seq, e.text) for e in self.rec.of(E.MessageReceived)]

    async def close(self) -> None:
        self.backend.close()
        await asyncio.wait_for(self.task, 10)


def one_order(clients, acked: dict[str, int]) -> None:
    """Every acknowledged post reached every client once, under its acknowledged number, and all
    clients saw one order."""
    views = [c.received() for c in clients]
    for view in views:
        texts = [t for _s, t in view]
        assert len(texts) == len(set(texts)), "a message delivered twice"
        assert [s for s, _t in view] == sorted(s for s, _t in view)
        got = {t: s for s, t in view}
        for text, seq in acked.items():
            assert got.get(text) == seq, (text, seq, got.get(text))
    common = set.intersection(*(set(v) for v in views))
    assert all([x for x in v if x in common] == sorted(common) for v in views)


async def post_until_served(client: Client, prefix: str, step: float, limit: float = 30.0) -> None:
    """Post every `step` seconds until one post is acknowledged (a relay serving again), bounded."""
    sent: list[int] = []
    deadline = time.monotonic() + limit
    while not any(e.local_id in sent for e in client.rec.of(E.PostAcknowledged)):
        assert time.monotonic() < deadline, f"the relay never served {client.backend.nick} again"
        sent.append(client.post(f"{prefix}{len(sent)}"))
        try:
            await client.rec.until(lambda: client.settled(sent), step)
        except AssertionError:
            pass


async def everyone_has(clients: list[Client], texts) -> None:
    """Wait until every client received every one of `texts`."""
    for c in clients:
        await c.rec.until(lambda c=c: {t for _s, t in c.received()} >= set(texts), what=f"{texts} at {c}")


async def shutdown(clients: list[Client], relays: list[RelayServer]) -> None:
    for c in clients:
        await c.close()
    for r in relays:
        await stop_relay(r)
