import socket

import pytest

from .procs import Procs


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


#: Detected once. This project's machines have ::1: tests marked `ipv6` run, and where ::1 is
#: missing they fail with that reason (never a silent skip counted as a pass).
HAS_IPV6 = _has_ipv6_loopback()

FAMILIES = [
    pytest.param("127.0.0.1", id="ipv4"),
    pytest.param("::1", id="ipv6", marks=pytest.mark.ipv6),
]


def pytest_collection_modifyitems(items):
    for item in items:  # a test whose parameters use ::1 needs it, marked or not
        callspec = getattr(item, "callspec", None)
        if callspec and any(isinstance(v, str) and "::1" in v for v in callspec.params.values()):
            item.add_marker(pytest.mark.ipv6)


@pytest.fixture(autouse=True)
def _require_ipv6(request):
    if request.node.get_closest_marker("ipv6") and not HAS_IPV6:
        pytest.fail("this test needs the IPv6 loopback ::1, and this machine has none (cannot bind ::1)")


@pytest.fixture
def silent_port6():
    """The same on ::1."""
    if not HAS_IPV6:
        pytest.fail("this test needs the IPv6 loopback ::1, and this machine has none")
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::1", 0))
        yield s.getsockname()[1]


@pytest.fixture
async def procs():
    p = Procs()
    try:
        yield p
    finally:
        await p.cleanup()


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
