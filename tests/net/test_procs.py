"""The process helpers the loopback tests rely on."""

import asyncio
import os
import signal
import sys
import textwrap

from .procs import Proc

# Exits at once, leaving a child that holds its stdout and stderr open: the pipes never reach EOF
# while the test waits, so only the exit itself can wake a waiter.
ORPHANING = textwrap.dedent(
    """
    import subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    print(child.pid, flush=True)
    """
)


async def test_wait_until_wakes_when_the_process_exits():
    raw = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        ORPHANING,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    p = Proc("orphaning", raw)
    child = None
    try:
        await p.wait_until(lambda: bool(p.stdout), 60, "the child's pid")
        child = int(p.stdout[0])
        # the child keeps the pipes open for 30 s: a waiter that only wakes on output would
        # return after that (or at its deadline), with the pipes closed
        await p.wait_until(lambda: not p.running, 60, "exit")
        assert p.proc.returncode == 0
        assert not any(t.done() for t in p._readers), "woke only once the pipes closed"
    finally:
        if child is not None:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.kill()
        await p.wait(60)  # the pipes close with the child: readers and transport end here
