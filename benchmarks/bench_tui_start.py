"""App start to the first frame with a 100,000-line local chat log, against an empty log.

    python benchmarks/bench_tui_start.py [--lines 100000] [--rooms 5] [--runs 7]

The log (UDPROOM_DATA_DIR in a temporary directory) holds `--lines` lines spread over `--rooms`
rooms of one relay. The app is started on those rooms with a backend that never answers (no
network: what it shows comes from the log), headless at 120x40, and the clock stops at its first
screen update (App._display). The baseline is the same app started on an empty log, in the same
run, runs alternating. Reports medians and the ratio. Target (issue 10): under 1 s.
Figures only: this never fails on timing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from udproom.protocol import events as ev
from udproom.protocol.chatlog import ChatLog, Line
from udproom.protocol.paths import CHATLOG_FILE

T0 = 1_780_000_000.0
ADDRESS = "127.0.0.1:6000"


class Silent:
    """A backend whose relay never answers."""

    mode = f"relay {ADDRESS}"
    nick = "alice"
    address = ADDRESS

    def __init__(self, rooms: list[str]) -> None:
        self.rooms = rooms
        self._stop = asyncio.Event()

    async def run(self, emit) -> None:
        emit(ev.Connecting(ADDRESS))
        await self._stop.wait()

    def close(self) -> None:
        self._stop.set()


def build_log(directory: str, lines: int, rooms: list[str]) -> float:
    words = ["deploy", "relay", "datagram", "window", "review", "lunch", "friday", "build", "merge", "test"]
    start = time.perf_counter()
    with ChatLog(os.path.join(directory, CHATLOG_FILE)) as log:
        batch = []
        for i in range(lines):
            room = rooms[i % len(rooms)]
            text = f"{words[i % len(words)]} {words[(i * 7) % len(words)]} line {i}"
            batch.append(Line(ADDRESS, room, "message", f"user{i % 17}", text, T0 - lines + i, i + 1, 0, 5))
            if len(batch) == 5000:
                log.add(batch)
                batch = []
        log.add(batch)
    return time.perf_counter() - start


async def first_frame(directory: str, rooms: list[str]) -> tuple[float, int]:
    """Seconds from constructing the app to its first screen update; lines shown in room 1."""
    os.environ["UDPROOM_DATA_DIR"] = directory
    from udproom.tui.app import ChatApp

    start = time.perf_counter()
    app = ChatApp(backend=Silent(rooms), tz=UTC, clock=lambda: T0, save_config=False, bell=False)
    first: list[float] = []
    original = app._display

    def spy(*args, **kwargs):
        if not first:
            first.append(time.perf_counter())
        return original(*args, **kwargs)

    app._display = spy
    async with app.run_test(size=(120, 40)) as pilot:
        while not first:
            await pilot.pause()
        shown = len(app.chat.rooms[rooms[0]].lines) if rooms[0] in app.chat.rooms else 0
        app.exit()
    return first[0] - start, shown


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--rooms", type=int, default=5)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    rooms = ["lobby", "dev", "random", "ops", "music", "chat", "help", "news"][: args.rooms]
    full = tempfile.mkdtemp(prefix="udproom-bench-log-")
    empty = tempfile.mkdtemp(prefix="udproom-bench-empty-")
    built = build_log(full, args.lines, rooms)
    size = os.path.getsize(os.path.join(full, CHATLOG_FILE)) / 2**20
    print(
        f"udproom app start-up — log of {args.lines:,} lines in {len(rooms)} rooms"
        f" ({size:.0f} MB, built in {built:.1f} s)"
    )
    asyncio.run(first_frame(empty, rooms))  # warm up: imports, Textual's first app
    with_log, without = [], []
    shown = 0
    for _ in range(args.runs):
        t, shown = asyncio.run(first_frame(full, rooms))
        with_log.append(t)
        t, _ = asyncio.run(first_frame(empty, rooms))
        without.append(t)
    a, b = statistics.median(with_log), statistics.median(without)
    print(f"   empty log:        first frame p50 {b * 1000:7.1f} ms  (max {max(without) * 1000:.1f})")
    print(
        f"   {args.lines:,}-line log: first frame p50 {a * 1000:7.1f} ms  (max {max(with_log) * 1000:.1f})"
        f"   {shown} lines of #{rooms[0]} on it   ratio {a / b:.2f}x"
        f"   target < 1 s: {'ok' if a < 1 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
