#!/usr/bin/env python3
"""Replay issue 9's afternoon in real terminals (tmux) and check the screens. Not run in CI.

Three users on 127.0.0.1 (alice hosts, bob and carol join), each app in its own tmux session on
a private tmux server (`tmux -L udproom-afternoon-PID`, so nobody else's tmux is touched):
a flood (`udproom send` piping 2,000 lines), a resize to 70 columns, a bracketed paste of three
lines, a refused nick, a direct conversation across a nick change, Ctrl+Q on the host (asks),
then the host killed by PID (the others show the outage once, presence unknown) and a relay
started again on that address (they reconnect). Every check reads the screen with
`capture-pane -p` and asserts on its text; a failed check prints the screen and exits 1.
`afternoon` is one long function on purpose: it is the afternoon's script, step after step.

    python benchmarks/tmux_afternoon.py            # prints one line per check, with timings
    python benchmarks/tmux_afternoon.py --show     # ...and the screens at the interesting moments

Everything it starts (tmux server, relay, flood sender) is ended by PID / its own socket.
Takes about a minute and a half (the dying host is noticed after the default 20 s timeout).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UDPROOM = str(ROOT / ".venv" / "bin" / "udproom")
if not os.path.exists(UDPROOM):
    UDPROOM = shutil.which("udproom") or "udproom"
SOCK = f"udproom-afternoon-{os.getpid()}"
SHOW = False


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", "-L", SOCK, *args], check=True, capture_output=True, text=True).stdout


def screen(name: str) -> str:
    return tmux("capture-pane", "-p", "-t", name)


def status_line(name: str) -> str:
    rows = [r for r in screen(name).splitlines() if r.strip()]
    return rows[-1] if rows else ""


def flat(text: str) -> str:
    """The messages pane's text as one string, wrapped lines joined (a notice that wraps before
    'after' still reads 'back after')."""
    parts = []
    for row in text.splitlines():
        if "▕" in row and "▏" in row:
            row = row[row.index("▕") + 1 : row.rindex("▏")]
        parts.append(re.sub(r"\s*[│┃]\s*", " ", row).strip())
    return re.sub(r"\s+", " ", " ".join(parts))


class CheckFailed(AssertionError):
    pass


def wait_for(name: str, pred, what: str, timeout: float = 20.0) -> float:
    """Poll the screen of `name` until `pred(text)` holds; returns the seconds it took."""
    start = time.monotonic()
    while True:
        text = screen(name)
        if pred(text):
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise CheckFailed(f"{name}: timed out after {timeout:.0f} s waiting for {what}\n{text}")
        time.sleep(0.05)


def ok(what: str, took: float | None = None) -> None:
    print(f"ok   {what}" + (f"  ({took:.2f} s)" if took is not None else ""), flush=True)


def show(name: str, why: str) -> None:
    if SHOW:
        print(f"---- {name}: {why} ----\n{screen(name).rstrip()}\n", flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(name: str, args: str, config_dir: str, width: int = 120, height: int = 35) -> int:
    """A udproom app in its own tmux session; returns its PID (the pane's process: exec)."""
    tmux(
        "new-session",
        "-d",
        "-s",
        name,
        "-x",
        str(width),
        "-y",
        str(height),
        f"exec env UDPROOM_CONFIG_DIR={config_dir} {UDPROOM} {args}",
    )
    return int(tmux("display-message", "-p", "-t", name, "#{pane_pid}").strip())


def keys(name: str, *k: str) -> None:
    tmux("send-keys", "-t", name, *k)


def type_line(name: str, text: str) -> None:
    tmux("send-keys", "-t", name, "-l", text)
    tmux("send-keys", "-t", name, "Enter")


def afternoon() -> None:
    port = free_port()
    addr = f"127.0.0.1:{port}"
    tmp = tempfile.mkdtemp(prefix="udproom-afternoon-")
    relay: subprocess.Popen | None = None
    try:
        # ---------------------------------------------------------------- three users
        alice_pid = start_app("alice", f"--host {addr} --nick alice --room lobby", f"{tmp}/a")
        took = wait_for("alice", lambda s: "others join:" in s and "#lobby" in s, "alice hosting")
        ok(f"alice hosts {addr} (pid {alice_pid})", took)
        start_app("bob", f"--join {addr} --nick bob --room lobby", f"{tmp}/b")
        start_app("carol", f"--join {addr} --nick carol --room lobby", f"{tmp}/c")
        took = wait_for("alice", lambda s: "MEMBERS 3/3" in s, "three members")
        ok("bob and carol joined: alice's members pane says MEMBERS 3/3", took)
        type_line("bob", "hello from bob")
        took = wait_for("carol", lambda s: "hello from bob" in s, "bob's message at carol")
        ok("a message typed by bob is on carol's screen", took)

        # ---------------------------------------------------------------- flood
        lines = "".join(f"flood line {i}\n" for i in range(2000))
        t0 = time.monotonic()
        sender = subprocess.run(
            [UDPROOM, "send", "--join", addr, "--room", "lobby", "--nick", "flood", "--timeout", "60"],
            input=lines,
            capture_output=True,
            text=True,
            timeout=90,
        )
        if sender.returncode != 0:
            raise CheckFailed(f"udproom send exited {sender.returncode}: {sender.stderr}")
        sent = time.monotonic() - t0
        took = wait_for("bob", lambda s: "flood line 1999" in s, "the last flood line at bob", 60)
        ok(f"2,000 lines piped through `udproom send` (all acknowledged in {sent:.2f} s)")
        ok("the last flood line is on bob's screen", took)
        type_line("bob", "still typing after the flood")
        took = wait_for("alice", lambda s: "still typing after the flood" in s, "bob after the flood")
        ok("bob types after the flood and alice sees it", took)

        # ---------------------------------------------------------------- resize
        tmux("resize-window", "-t", "bob", "-x", "70", "-y", "30")
        took = wait_for(
            "bob",
            lambda s: (
                len(s.splitlines()[0].rstrip()) <= 70
                and "#lobby" in [r for r in s.splitlines() if r.strip()][-1]
            ),
            "the 70-column status line with the room",
            5,
        )
        status = status_line("bob")
        if "F1 help" not in status:
            raise CheckFailed(f"bob's status line at 70 columns lost 'F1 help': {status!r}")
        ok(f"bob resized to 70 columns: status line {status.strip()!r}", took)
        show("bob", "70 columns")
        tmux("resize-window", "-t", "bob", "-x", "120", "-y", "35")

        # ---------------------------------------------------------------- paste
        tmux("set-buffer", "-b", "p", "paste one\npaste two\npaste three")
        tmux("paste-buffer", "-p", "-b", "p", "-t", "carol")  # bracketed paste
        took = wait_for("alice", lambda s: "paste three" in s, "the pasted lines at alice")
        rows = screen("alice").splitlines()
        at = [next(i for i, r in enumerate(rows) if f"paste {w}" in r) for w in ("one", "two", "three")]
        if at != sorted(at) or sum("paste two" in r for r in rows) != 1:
            raise CheckFailed(f"pasted lines out of order or repeated on alice's screen:\n{screen('alice')}")
        ok("a bracketed paste of three lines from carol arrives as three messages, in order, once each", took)

        # ---------------------------------------------------------------- a refusal fades
        type_line("carol", "/nick ALICE")
        took = wait_for(
            "carol", lambda s: "is in use" in s.splitlines()[-1], "the refusal in the status line"
        )
        ok(f"carol's /nick ALICE refused: {status_line('carol').strip()!r}", took)
        took = wait_for("carol", lambda s: "is in use" not in s.splitlines()[-1], "the refusal to fade", 15)
        ok("the refusal left the status line by itself", took)

        # ---------------------------------------------------------------- a DM across a nick change
        type_line("alice", "/msg bob hi bob")
        wait_for("bob", lambda s: "@alice" in s, "alice's DM at bob")
        type_line("bob", "/nick robert")
        wait_for("alice", lambda s: "robert" in s, "the rename at alice")
        keys("bob", "M-2")
        type_line("bob", "hello again")
        took = wait_for("alice", lambda s: "hello again" in s, "robert's reply")
        text = screen("alice")
        if "@bob" in text or "@robert" not in text or "bob is now known as robert" not in text:
            raise CheckFailed(f"alice's conversation did not follow the nick change:\n{text}")
        type_line("alice", "got it robert")
        wait_for("bob", lambda s: "got it robert" in s, "alice's answer at robert")
        ok(
            "alice's @bob became @robert (same history, 'bob is now known as robert'); writing there works",
            took,
        )
        show("alice", "the DM after the rename")

        # ---------------------------------------------------------------- nobody by that nick
        type_line("carol", "/msg nobodyhere hi")
        took = wait_for(
            "carol", lambda s: "no one called nobodyhere is here: nothing was sent" in flat(s), "the answer"
        )
        if "@nobodyhere" in screen("carol"):
            raise CheckFailed(f"a dead conversation was opened:\n{screen('carol')}")
        ok(
            "/msg nobodyhere hi: 'no one called nobodyhere is here: nothing was sent', nothing opened",
            took,
        )

        # ---------------------------------------------------------------- /connect to a dead address
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dead:
            dead.bind(("127.0.0.1", 0))  # nothing answers there
            keys("bob", "M-1")
            type_line("bob", f"/connect 127.0.0.1:{dead.getsockname()[1]}")
            took = wait_for(
                "bob", lambda s: "no answer from a relay at" in flat(s), "the dead address reported", 30
            )
        text = screen("bob")
        if "connected" not in text.splitlines()[-1] or "#lobby" not in text.splitlines()[-1]:
            raise CheckFailed(f"bob lost his session or his room:\n{text}")
        type_line("bob", "still on the old relay")
        wait_for("carol", lambda s: "still on the old relay" in s, "bob's message after the failed /connect")
        ok(
            "bob's /connect to a dead address: 'no answer …; still on the current connection', #lobby kept",
            took,
        )

        # ---------------------------------------------------------------- a name that does not resolve
        start_app("dora", "--join nonsense.invalid:6000 --nick dora", f"{tmp}/d")
        took = wait_for("dora", lambda s: "cannot resolve" in s, "the resolve error on the connect screen")
        text = screen("dora")
        if "refused" in text or "no relay was contacted" not in flat(text):
            raise CheckFailed(f"the resolve error does not say what happened:\n{text}")
        ok("--join nonsense.invalid: 'cannot resolve …: no relay was contacted — check the address'", took)
        show("dora", "unresolvable relay")
        keys("dora", "Escape")

        # ---------------------------------------------------------------- Ctrl+Q on the host asks
        keys("alice", "C-q")
        took = wait_for("alice", lambda s: "disconnects 2 people" in flat(s), "the question")
        ok(
            "Ctrl+Q on the host asks: 'quitting stops the relay and disconnects 2 people (carol, robert)'",
            took,
        )
        show("alice", "Ctrl+Q while hosting")
        keys("alice", "Escape")
        wait_for("alice", lambda s: "disconnects 2 people" not in s, "the question to close")
        ok("Esc keeps hosting")

        # ---------------------------------------------------------------- the host dies
        keys("carol", "M-1")
        os.kill(alice_pid, signal.SIGKILL)
        t0 = time.monotonic()
        for name in ("bob", "carol"):
            wait_for(name, lambda s: "connection lost" in s, "the outage notice", 40)
        ok("alice killed by PID (SIGKILL): bob and carol say 'connection lost'", time.monotonic() - t0)
        # let the retries run: the notice says "(try N)", but it stays one notice
        wait_for("carol", lambda s: re.search(r"\(try [3-9]\)", s) is not None, "two more tries", 40)
        for name in ("bob", "carol"):
            text = screen(name)
            if text.count("connection lost") != 1:
                raise CheckFailed(f"{name} shows the outage more than once:\n{text}")
        if "MEMBERS ?/" not in screen("carol"):
            raise CheckFailed(f"carol's members pane still claims presence:\n{screen('carol')}")
        ok("after retries: one outage notice per screen, updated in place; carol's members say MEMBERS ?/N")
        type_line("carol", "typed while the host was down")  # waits in carol's session for a relay
        show("carol", "host dead, retrying")

        # ---------------------------------------------------------------- a relay again
        relay = subprocess.Popen(
            [UDPROOM, "relay", "--bind", addr], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        t0 = time.monotonic()
        for name in ("bob", "carol"):
            wait_for(
                name,
                lambda s: "back after" in flat(s) and "connected" in s.splitlines()[-1],
                "reconnected",
                40,
            )
        took = time.monotonic() - t0
        ok(f"a relay on {addr} again (pid {relay.pid}): bob and carol reconnect, 'back after' said", took)
        wait_for("carol", lambda s: "MEMBERS 2/2" in s, "presence known again")
        ok("carol's members pane shows presence again (MEMBERS 2/2)")
        # what carol typed while disconnected went out after the reconnect: on her screen too it
        # now sits below the reconnect notices, where bob sees it
        for name in ("bob", "carol"):
            wait_for(name, lambda s: "typed while the host was down" in s, "carol's message", 20)
            rows = screen(name).splitlines()
            rejoined = next(i for i, r in enumerate(rows) if "rejoined #lobby" in r)
            typed = next(i for i, r in enumerate(rows) if "typed while the host was down" in r)
            if not rejoined < typed:
                raise CheckFailed(f"{name}: carol's message is above the reconnect notice:\n{screen(name)}")
        ok("carol's message typed during the outage is below 'rejoined #lobby' on her screen and on bob's")
        show("carol", "back")
        for name in ("bob", "carol"):
            keys(name, "C-q")
    finally:
        if relay is not None and relay.poll() is None:
            relay.send_signal(signal.SIGTERM)
            try:
                relay.wait(5)
            except subprocess.TimeoutExpired:
                relay.kill()
        try:
            subprocess.run(["tmux", "-L", SOCK, "kill-server"], capture_output=True, timeout=10)
        except Exception:
            pass
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    global SHOW
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show", action="store_true", help="print the screens at the interesting moments")
    SHOW = parser.parse_args().show
    if shutil.which("tmux") is None:
        print("tmux is not installed", file=sys.stderr)
        return 2
    try:
        afternoon()
    except CheckFailed as e:
        print(f"FAIL {e}", file=sys.stderr)
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
