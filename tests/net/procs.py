"""Real `udproom relay|listen|send` processes for the loopback tests (asyncio subprocesses).

Every wait has a deadline; processes are ended by PID (`Proc.kill` / `terminate`), and the
`procs` fixture in conftest kills whatever a test left running.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time

#: The real entry point (`python -m udproom` = the `udproom` console script), which dispatches
#: relay|listen|send to udproom.protocol.cli.
CLI = [sys.executable, "-m", "udproom"]
#: The same CLI with seeded loss/duplication under each direct peer's socket: LOSSY_CLI(loss, dup,
#: seed) (see lossy_cli.py).
LOSSY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lossy_cli.py")


def lossy_cli(loss: float, dup: float, seed: int) -> list[str]:
    return [sys.executable, LOSSY, str(loss), str(dup), str(seed)]


#: Timing flags for tests: fast repair, but a member timeout that tolerates a loaded 2-core box.
FAST = ["--fast-timers", "--keepalive", "0.2", "--timeout-member", "3", "--give-up", "30"]

_ADDR_RE = re.compile(r"udp://(\[[^\]]+\]|[^\s:]+):(\d+)")


class Proc:
    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.pid = proc.pid
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.changed = asyncio.Condition()
        self._readers = [
            asyncio.create_task(self._read(proc.stdout, self.stdout)),
            asyncio.create_task(self._read(proc.stderr, self.stderr)),
        ]
        # wakes every waiter when the process exits (its pipes may close before the exit status
        # is known, or stay open in a child): `wait_until(lambda: not p.running, ...)` returns then
        self._exit_watch = asyncio.create_task(self._watch_exit())

    async def _watch_exit(self) -> None:
        # Process.wait() itself waits for the pipes too (Python 3.11), so watch the exit status
        while self.proc.returncode is None:
            await asyncio.sleep(0.02)
        async with self.changed:
            self.changed.notify_all()

    async def _read(self, stream: asyncio.StreamReader | None, into: list[str]) -> None:
        if stream is None:
            return
        while True:
            line = await stream.readline()
            if not line:
                break
            into.append(line.decode("utf-8", "replace").rstrip("\n"))
            async with self.changed:
                self.changed.notify_all()
        async with self.changed:
            self.changed.notify_all()

    @property
    def json(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout if line.startswith("{")]

    def of_type(self, kind: str) -> list[dict]:
        return [obj for obj in self.json if obj.get("type") == kind]

    def messages(self) -> list[tuple[str, str]]:
        return [(m["nick"], m["text"]) for m in self.of_type("message")]

    async def wait_until(self, predicate, timeout: float, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        async with self.changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{self.name}: timed out waiting for {what}\n"
                        f"stdout: {self.stdout[-20:]}\nstderr: {self.stderr[-20:]}"
                    )
                try:
                    await asyncio.wait_for(self.changed.wait(), left)
                except TimeoutError:
                    pass

    async def wait_json(self, predicate, timeout: float, what: str = "a line") -> dict:
        found: list[dict] = []

        def check() -> bool:
            for obj in self.json:
                if predicate(obj):
                    found.append(obj)
                    return True
            return False

        await self.wait_until(check, timeout, what)
        return found[0]

    async def wait(self, timeout: float) -> int:
        try:
            rc = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"{self.name} (pid {self.pid}) did not exit within {timeout}s\n"
                f"stdout: {self.stdout[-20:]}\nstderr: {self.stderr[-20:]}"
            ) from None
        await asyncio.wait_for(asyncio.gather(*self._readers), 5)
        return rc

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    def signal(self, sig: int) -> None:
        if self.proc.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.signal(signal.SIGTERM)

    async def write(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        await self.proc.stdin.drain()

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def __repr__(self) -> str:
        return f"<Proc {self.name} pid={self.pid} rc={self.proc.returncode}>"


async def bound_port(p: Proc, what: str) -> int:
    """The port `p` says it is bound to (its `udp://HOST:PORT` line on stderr)."""
    found: list[int] = []

    def started() -> bool:
        for line in p.stderr:
            m = _ADDR_RE.search(line)
            if m:
                found.append(int(m.group(2)))
                return True
        return not p.running

    await p.wait_until(started, 15, f"the {what}'s udp:// line")
    assert found, f"{what} did not start: {p.stderr}"
    return found[0]


class Procs:
    """Starts processes and remembers them so the fixture can kill leftovers by PID."""

    def __init__(self) -> None:
        self.all: list[Proc] = []

    async def start(self, name: str, *args: str, stdin: bool = False, cli: list[str] | None = None) -> Proc:
        proc = await asyncio.create_subprocess_exec(
            *(cli or CLI),
            *args,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        p = Proc(name, proc)
        self.all.append(p)
        return p

    async def relay(self, bind: str, *extra: str, name: str = "relay") -> tuple[Proc, int]:
        """A relay; in memory (`--memory`) unless `extra` says `--data DIR`. Its key is the test's
        (one file in the test's data directory, made on first use), so a relay restarted in the
        test is the same relay to the clients that pinned it, as one with a data directory is (and
        the relays of a test's cluster present one key, as a cluster's relays must)."""
        if "--data" not in extra and "--cluster" not in extra:
            extra = ("--memory", *extra)
        if "--identity" not in extra:
            extra = ("--identity", os.path.join(os.environ["UDPROOM_DATA_DIR"], "relay-identity"), *extra)
        p = await self.start(name, "relay", "--bind", bind, *extra)
        return p, await bound_port(p, "relay")

    async def listen(self, name: str, join: str, room: str, *extra: str) -> Proc:
        return await self.start(name, "listen", "--join", join, "--room", room, "--nick", name, *extra)

    async def send(self, name: str, join: str, room: str, *extra: str, stdin: bool = False) -> Proc:
        return await self.start(
            name, "send", "--join", join, "--room", room, "--nick", name, *extra, stdin=stdin
        )

    async def cleanup(self) -> None:
        for p in self.all:
            p.kill()
        for p in self.all:
            try:
                await asyncio.wait_for(p.proc.wait(), 5)
            except TimeoutError:
                pass
            for t in (*p._readers, p._exit_watch):
                t.cancel()
