"""Socket addresses as the cores see them, and how they are written for people.

Pure (no sockets): the sans-IO cores name peers by the address tuple the transport hands them, and
net/address.py (parsing, resolving) builds on the formatting here.
"""

from __future__ import annotations

#: A socket address as the transport gives it: (host, port), or (host, port, flow, scope) for IPv6.
Addr = tuple


def unmapped(host: str) -> str:
    """An IPv4 peer as seen on a dual-stack socket ('::ffff:a.b.c.d') -> 'a.b.c.d'."""
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host


def format_address(host: str, port: int) -> str:
    """(host, port) -> 'host:port', with IPv6 in brackets: '[::1]:6000'."""
    host = unmapped(host)
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def format_sockaddr(addr: Addr | None) -> str:
    """A socket address tuple -> 'host:port' ('' for None)."""
    if addr is None:
        return ""
    return format_address(str(addr[0]), int(addr[1]))
