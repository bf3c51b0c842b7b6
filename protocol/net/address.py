"""Addresses: parsing what people type, resolving it, and listing where a relay can be reached.

Accepted forms (`udp://` in front is allowed and ignored, so a relay's start line can be pasted):

    host:port    example.org:6000, 192.168.1.5:6000
    host         port defaults (6000)
    :port        all interfaces (only where an empty host is allowed, e.g. `--bind`)
    port         same as :port
    [v6]:port    [::1]:6000
    [v6] / v6    [::1], ::1, fe80::1%eth0   (a bare IPv6 address takes the default port)
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from ..addr import format_address, format_sockaddr

__all__ = [
    "ANY_HOSTS",
    "AddressError",
    "format_address",
    "format_sockaddr",
    "local_addresses",
    "parse_address",
    "resolve",
]

DEFAULT_PORT = 6000

#: Hosts that mean "every interface" when binding.
ANY_HOSTS = ("", "0.0.0.0", "::", "*")


class AddressError(ValueError):
    """An address that cannot be used; str() is a one-line explanation."""


def _port(text: str, original: str, allow_zero: bool) -> int:
    if not text:
        raise AddressError(f"address {original!r} has an empty port")
    if not text.isdigit() or not text.isascii():
        raise AddressError(f"port {text!r} in {original!r} is not a number")
    port = int(text)
    if port > 65535:
        raise AddressError(f"port {port} in {original!r} is out of range (1-65535)")
    if port == 0 and not allow_zero:
        raise AddressError(f"port 0 in {original!r} is not a port one can reach (1-65535)")
    return port


def _check_host(host: str, original: str) -> str:
    if any(ch.isspace() or not ch.isprintable() for ch in host):
        raise AddressError(f"host in {original!r} contains spaces or control characters")
    if "/" in host or "@" in host or "[" in host or "]" in host:
        raise AddressError(f"{original!r} is not a host:port address")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            where = f"{host!r}" if host == original else f"{host!r} in {original!r}"
            raise AddressError(
                f"{where} is not an IPv6 address (write IPv6 as [ADDR]:PORT, e.g. [::1]:6000)"
            ) from None
    elif len(host) > 253:
        raise AddressError(f"host name in {original!r} is too long")
    return host


def parse_address(
    text: str,
    default_port: int = DEFAULT_PORT,
    allow_empty_host: bool = False,
    *,
    allow_zero_port: bool | None = None,
) -> tuple[str, int]:
    """Parse `text` into (host, port). Raises AddressError with a one-line reason.

    `allow_empty_host` is for binding (":6000" = every interface); `allow_zero_port` (by default
    the same as `allow_empty_host`) lets port 0 through, meaning "pick a free port".
    """
    if allow_zero_port is None:
        allow_zero_port = allow_empty_host
    original = text
    if not isinstance(text, str):
        raise AddressError("address must be text")
    text = text.strip()
    if text.lower().startswith("udp://"):
        text = text[6:]
    text = text.rstrip("/")
    if not text:
        raise AddressError("address is empty")

    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise AddressError(f"address {original!r} has '[' without ']'")
        host = text[1:end]
        rest = text[end + 1 :]
        if not host:
            raise AddressError(f"address {original!r} has an empty [] host")
        if rest:
            if not rest.startswith(":"):
                raise AddressError(f"address {original!r}: expected ':PORT' after ']'")
            port = _port(rest[1:], original, allow_zero_port)
        else:
            port = default_port
        if ":" not in host:
            raise AddressError(f"{host!r} in {original!r} is not an IPv6 address")
    elif text.count(":") >= 2:
        host, port = text, default_port  # bare IPv6 address
    elif ":" in text:
        host, _, port_text = text.partition(":")
        port = _port(port_text, original, allow_zero_port)
    elif text.isdigit():
        host, port = "", _port(text, original, allow_zero_port)
    else:
        host, port = text, default_port

    if host == "*":
        host = ""
    if not host and not allow_empty_host:
        raise AddressError(f"address {original!r} needs a host (e.g. 127.0.0.1:{port})")
    if host:
        _check_host(host, original)
    return host, port


def parse_addresses(text: str, default_port: int = DEFAULT_PORT) -> list[tuple[str, int]]:
    """Several relays of one cluster, `a.example:6000,b.example:6000` (`--join`): each entry as
    `parse_address` reads it, in order, each once. Raises AddressError with a one-line reason."""
    if not isinstance(text, str):
        raise AddressError("address must be text")
    out: list[tuple[str, int]] = []
    for part in text.split(","):
        if not part.strip():
            raise AddressError(f"address list {text!r} has an empty entry")
        hp = parse_address(part, default_port)
        if hp not in out:
            out.append(hp)
    return out


async def resolve(host: str, port: int) -> tuple:
    """Resolve `host` for UDP to one socket address (IPv4 preferred when a name has both).

    Raises AddressError with a one-line reason.
    """
    return (await resolve_all(host, port))[0]


async def resolve_all(host: str, port: int) -> list[tuple]:
    """Every socket address `host` has for UDP, IPv4 first, each once (a name with several
    addresses: the relays of a cluster). Raises AddressError with a one-line reason."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM, proto=socket.IPPROTO_UDP)
    except socket.gaierror as exc:
        raise AddressError(f"cannot resolve {host!r}: {exc.strerror or exc}") from None
    except (OSError, UnicodeError) as exc:
        raise AddressError(f"cannot resolve {host!r}: {exc}") from None
    infos = [i for i in infos if i[0] in (socket.AF_INET, socket.AF_INET6)]
    if not infos:
        raise AddressError(f"cannot resolve {host!r}: no IPv4 or IPv6 address")
    infos.sort(key=lambda i: 0 if i[0] == socket.AF_INET else 1)
    out: list[tuple] = []
    for info in infos:
        if info[4] not in out:
            out.append(info[4])
    return out


def _probe(family: int, target: str) -> str | None:
    """The local address the kernel would use towards `target` (no packet is sent)."""
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((target, 9))
            return s.getsockname()[0]
    except OSError:
        return None


def _is_useful(addr: str) -> bool:
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_unspecified or ip.is_multicast or ip.is_link_local)


def local_addresses(bind_host: str, port: int) -> list[str]:
    """Addresses others can use to reach a socket bound to `bind_host`:`port`, as 'host:port'.

    A specific host is returned as is. For every-interface binds: this machine's non-loopback
    addresses (the outbound address per family, plus what the host name resolves to), then
    loopback. Never raises; works with no network at all (then only loopback).
    """
    if bind_host not in ANY_HOSTS:
        return [format_address(bind_host, port)]
    v6 = bind_host in ("", "::", "*") and socket.has_ipv6
    found: list[str] = []

    def add(addr: str | None) -> None:
        if addr and _is_useful(addr) and addr not in found:
            found.append(addr)

    # A UDP connect() picks the route without sending anything; documentation-range targets.
    add(_probe(socket.AF_INET, "192.0.2.1"))
    if v6:
        add(_probe(socket.AF_INET6, "2001:db8::1"))
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        infos = []
    for family, *_rest, sockaddr in infos:
        if family == socket.AF_INET or (v6 and family == socket.AF_INET6):
            add(sockaddr[0])
    found.sort(key=lambda a: 1 if ":" in a else 0)
    out = [format_address(a, port) for a in found]
    out.append(format_address("127.0.0.1", port))
    if v6:
        out.append(format_address("::1", port))
    return out
