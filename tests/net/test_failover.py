"""Clients with several relays (issue 12): `--join a:6000,b:6000` and a name with several
addresses; a relay that does not answer is left for the next, and the status line says so."""

from __future__ import annotations

import asyncio
import socket

import pytest

from udproom.protocol import events as E
from udproom.protocol.net.address import AddressError, parse_addresses
from udproom.protocol.net.runners import RelayClient, RelayServer
from udproom.protocol.relay import RelayConfig
from udproom.protocol.reliability import Timing

from .test_runners import Recorder


def test_parse_addresses_reads_a_relay_list_each_once():
    assert parse_addresses("a.example:6000,b.example,[::1]:7000, a.example:6000") == [
        ("a.example", 6000),
        ("b.example", 6000),
        ("::1", 7000),
    ]
    for bad in ("a:6000,", ",a", "a:6000,,b", "a:99999,b", ""):
        with pytest.raises(AddressError):
            parse_addresses(bad)


@pytest.mark.parametrize("how", ["list", "name"])
async def test_a_client_fails_over_to_the_relay_that_answers(how, silent_port, monkeypatch):
    async with RelayServer("127.0.0.1:0", RelayConfig(timing=Timing.fast())) as server:
        if how == "list":
            join = f"127.0.0.1:{silent_port},127.0.0.1:{server.port}"
        else:  # one name, two addresses: the silent one first
            real = socket.getaddrinfo

            def getaddrinfo(host, port, *args, **kwargs):
                if host == "relays.test":
                    udp = (socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP, "")
                    return [(*udp, ("127.0.0.1", silent_port)), (*udp, ("127.0.0.1", server.port))]
                return real(host, port, *args, **kwargs)

            monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
            join = "relays.test:6000"
        client = RelayClient(join, "alice", ["lobby"], timing=Timing.fast())
        rec = Recorder()
        task = asyncio.create_task(client.run(rec))
        try:
            await rec.wait(lambda e: isinstance(e, E.RoomJoined), what="joined through the second relay")
            lost = rec.of(E.ConnectionLost)
            assert lost and f"failing over to 127.0.0.1:{server.port}" in lost[0].reason, lost
            assert client.mode == f"relay 127.0.0.1:{server.port} (failed over from 127.0.0.1:{silent_port})"
        finally:
            client.close()
            await asyncio.wait_for(task, 5)
