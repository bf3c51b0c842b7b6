"""For every test: no DNS traffic, and a data directory of its own (never the user's)."""

import socket

import pytest


@pytest.fixture(autouse=True)
def _no_real_dns(monkeypatch):
    """Names under .invalid fail at once, without asking a resolver (no DNS traffic from tests)."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if isinstance(name, str) and name.rstrip(".").lower().endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture(autouse=True)
def _own_data_dir(monkeypatch, tmp_path_factory):
    """UDPROOM_DATA_DIR in a fresh temporary directory: an app hosting a relay, or a relay started
    without --data, keeps its log there, not in the user's data directory."""
    monkeypatch.setenv("UDPROOM_DATA_DIR", str(tmp_path_factory.mktemp("data")))
