"""For every test: no DNS traffic."""

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
def _data_dir(tmp_path_factory, monkeypatch):
    """Tests never touch the real data directory (the app's chat log, a relay's room log)."""
    path = tmp_path_factory.mktemp("data")
    monkeypatch.setenv("UDPROOM_DATA_DIR", str(path))
    return path
