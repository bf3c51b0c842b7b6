"""`udproom relay --workers N|auto`: N relay processes on one UDP port (SO_REUSEPORT), sharing
rooms through the cluster (`--cluster`), so that one machine uses all its cores.

The kernel hashes each client's address to one worker, so a session stays on its worker; the
workers are ordinary relays of the cluster (one order per room, the cluster's epoch, nicks unique
across them). This parent only starts them (the same command without `--workers`, with
`--reuse-port` and the port fixed), passes SIGINT/SIGTERM on by PID, and starts again a worker
that dies (its clients time out and resume on the worker the hash gives them next); a worker that
keeps dying ends the whole relay with exit 1.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable

from .address import format_address
from .transport import bind_socket

#: a worker dying more often than this ends the relay (it would only die again)
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0


def worker_count(text: str) -> int:
    """`--workers`: a positive number, or 'auto' (one per core this process may use)."""
    if text == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover (not Linux)
            return max(1, os.cpu_count() or 1)
    n = int(text)  # (ValueError: argparse says so in one line)
    if not 1 <= n <= 256:
        raise ValueError(f"between 1 and 256, not {n}")
    return n


def worker_argv(argv: list[str], bind: str) -> list[str]:
    """The relay's own command line for one worker: without --workers and --bind, with the port
    fixed and --reuse-port."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--workers", "--bind"):
            skip = True
            continue
        if arg.startswith(("--workers=", "--bind=")):
            continue
        out.append(arg)
    return [*out, "--bind", bind, "--reuse-port"]


def pick_port(host: str, port: int) -> int:
    """Port 0 means any free port: the workers must share one, so it is chosen here (AddressError
    when it cannot be bound)."""
    if port:
        return port
    sock = bind_socket(host, 0, reuse_port=True)
    try:
        return sock.getsockname()[1]
    finally:
        sock.close()


async def run_workers(
    n: int, argv: list[str], host: str, port: int, say: Callable[[str], None], stop: asyncio.Event
) -> int:
    """Run `n` workers until `stop` is set; returns the exit code."""
    port = pick_port(host, port)
    bind = format_address(host, port)
    cmd = [sys.executable, "-m", "udproom", "relay", *worker_argv(argv, bind)]
    procs: dict[int, asyncio.subprocess.Process] = {}
    deaths: list[float] = []

    async def start(slot: int) -> None:
        procs[slot] = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.DEVNULL)

    for slot in range(n):
        await start(slot)
    say(f"{n} workers on udp://{bind} (pids {', '.join(str(p.pid) for p in procs.values())})")
    code = 0
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            waits = {asyncio.ensure_future(p.wait()): slot for slot, p in procs.items()}
            done, _ = await asyncio.wait([stopping, *waits], return_when=asyncio.FIRST_COMPLETED)
            for fut in waits:
                if fut not in done:
                    fut.cancel()
            if stop.is_set():
                break
            for fut in done:
                slot = waits.get(fut)
                if slot is None:
                    continue
                now = time.monotonic()
                deaths[:] = [t for t in deaths if now - t < RESTART_WINDOW] + [now]
                rc = procs[slot].returncode
                if len(deaths) > MAX_RESTARTS:
                    say(f"worker {procs[slot].pid} exited with {rc}, {len(deaths)}x in a minute: stopping")
                    code = 1
                    stop.set()
                    break
                say(f"worker {procs[slot].pid} exited with {rc}: starting it again")
                await start(slot)
    finally:
        stopping.cancel()
        for p in procs.values():
            if p.returncode is None:
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in procs.values():
            try:
                await asyncio.wait_for(p.wait(), 15)
            except TimeoutError:
                os.kill(p.pid, signal.SIGKILL)
                await p.wait()
    return code
