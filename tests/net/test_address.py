import socket

import pytest

from udproom.protocol.net.address import (
    AddressError,
    format_address,
    local_addresses,
    parse_address,
    resolve,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("127.0.0.1:6000", ("127.0.0.1", 6000)),
        ("localhost:7", ("localhost", 7)),
        ("example.org", ("example.org", 6000)),
        ("[::1]:6001", ("::1", 6001)),
        ("[::1]", ("::1", 6000)),
        ("::1", ("::1", 6000)),
        ("fe80::1%eth0", ("fe80::1%eth0", 6000)),
        ("udp://127.0.0.1:6002", ("127.0.0.1", 6002)),
        ("udp://[::1]:6003/", ("::1", 6003)),
        ("  10.0.0.1:80 ", ("10.0.0.1", 80)),
    ],
)
def test_parse(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        (":6000", ("", 6000)),
        (":0", ("", 0)),
        ("6001", ("", 6001)),
        ("*:6002", ("", 6002)),
        ("0.0.0.0:5", ("0.0.0.0", 5)),
        ("[::]:0", ("::", 0)),
    ],
)
def test_parse_bind(text, expected):
    assert parse_address(text, allow_empty_host=True) == expected


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty"),
        ("   ", "empty"),
        (":6000", "needs a host"),
        ("host:", "empty port"),
        ("host:abc", "not a number"),
        ("host:70000", "out of range"),
        ("host:0", "port 0"),
        ("host:-1", "not a number"),
        ("[::1", "without ']'"),
        ("[::1]x", "expected ':PORT'"),
        ("[]:5", "empty []"),
        ("[abc]:5", "not an IPv6"),
        ("ho st:5", "spaces"),
        ("zz::qq", "not an IPv6"),
        ("a/b:5", "not a host:port"),
        ("host:٣", "not a number"),
    ],
)
def test_parse_errors(text, fragment):
    with pytest.raises(AddressError) as info:
        parse_address(text)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
    assert isinstance(info.value, ValueError)


def test_format():
    assert format_address("127.0.0.1", 6000) == "127.0.0.1:6000"
    assert format_address("::1", 6000) == "[::1]:6000"
    assert format_address("::ffff:127.0.0.1", 5) == "127.0.0.1:5"
    for text in ("127.0.0.1:6000", "[::1]:6000", "example.org:1"):
        assert format_address(*parse_address(text)) == text


async def test_resolve():
    assert await resolve("127.0.0.1", 6000) == ("127.0.0.1", 6000)
    addr = await resolve("::1", 6000)
    assert addr[:2] == ("::1", 6000) and len(addr) == 4
    addr = await resolve("localhost", 6000)
    assert addr[1] == 6000


async def test_resolve_failure_is_one_line():
    with pytest.raises(AddressError) as info:
        await resolve("no-such-host.invalid", 6000)
    assert "no-such-host.invalid" in str(info.value) and "\n" not in str(info.value)


def test_local_addresses():
    assert local_addresses("127.0.0.1", 6000) == ["127.0.0.1:6000"]
    assert local_addresses("::1", 6000) == ["[::1]:6000"]
    every = local_addresses("", 6000)
    assert "127.0.0.1:6000" in every
    for item in every:
        assert parse_address(item)[1] == 6000
    v4 = local_addresses("0.0.0.0", 7)
    assert "127.0.0.1:7" in v4 and not any(a.startswith("[") for a in v4)
    # no duplicates, loopback last
    assert len(set(every)) == len(every)
    assert every[-1] in ("127.0.0.1:6000", "[::1]:6000")


def test_local_addresses_without_network(monkeypatch):
    def broken(*a, **k):
        raise OSError("network is down")

    monkeypatch.setattr(socket, "getaddrinfo", broken)
    monkeypatch.setattr(socket.socket, "connect", broken)
    out = local_addresses("", 6000)
    assert out[0] == "127.0.0.1:6000"
