"""TUI benchmark: ingesting a flood of messages, and typing while a flood arrives.

    python benchmarks/bench_tui.py [--messages 100000] [--rate 5000] [--keys 60]

1. Ingest: 100,000 MessageReceived events delivered to the app (headless, 120x40) in chunks of
   1,000, as the network would, until the last one is on screen. Reports messages/s, wall time,
   and peak memory (tracemalloc peak of Python allocations in a second run, and the process's
   peak RSS growth). Baselines measured in the same run: appending the same events to a plain
   list, and folding them into the ChatModel alone (no screen).
2. Latency: keypress-to-screen while 5,000 messages/s arrive: a key event is posted to the app
   and the clock stops at the first screen update (App._display) that shows the typed
   character. Baseline: the same with no flood.

Both run twice: with the app's own chat log (issue 10: every event shown is written to SQLite by
a writer thread, one transaction per quarter second; the default; for the latency, a log that
already holds `--log-lines` lines, 100,000 by default) and with `--no-log`, in the same run.
UDPROOM_DATA_DIR points at a temporary directory.

Targets (issue 3): 100,000 messages in < 2 s and < 200 MB; keypress-to-screen < 50 ms during
the flood. Figures only: this never fails on timing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import statistics
import sys
import time
import tracemalloc
from collections import deque
from datetime import UTC

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from textual import events

from tests.tui.demo import FakeBackend  # the test double of a backend
from udproom.protocol import events as ev
from udproom.tui import model as m
from udproom.tui.app import ChatApp

ROOMS = ["lobby", "dev", "random", "ops", "music"]
T0 = 1_780_000_000.0


def make_events(n: int) -> list:
    nicks = ["bob", "carol", "dave", "erin", "frank", "grace"]
    out = []
    for i in range(n):
        room = ROOMS[i % len(ROOMS)] if i % 4 == 0 else "lobby"
        text = f"message {i}: the quick brown fox jumps over the lazy dog" + (
            " alice?" if i % 997 == 0 else ""
        )
        out.append(ev.MessageReceived(room, i + 1, nicks[i % len(nicks)], text, T0 + i * 0.01))
    return out


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_app(log: bool = False):
    backend = FakeBackend("alice", ROOMS, clock=lambda: T0)
    app = ChatApp(backend=backend, tz=UTC, clock=lambda: T0, save_config=False, bell=False, log=log)
    return app, backend


def fresh_data_dir(lines: int = 0) -> None:
    """Each app run logs into an empty directory (a log written by an earlier run would be shown),
    or one whose log already holds `lines` lines of the benchmark's rooms (a log of months)."""
    import tempfile

    os.environ["UDPROOM_DATA_DIR"] = tempfile.mkdtemp(prefix="udproom-bench-")
    if lines:
        from udproom.protocol import paths
        from udproom.protocol.chatlog import ChatLog, Line

        with ChatLog(paths.chatlog_path()) as log:
            for start in range(0, lines, 10_000):
                log.add(
                    Line(
                        "127.0.0.1:6000",
                        ROOMS[i % 5],
                        "message",
                        "carol",
                        f"old {i} lorem ipsum",
                        T0 - 1e6 + i,
                        0,
                    )
                    for i in range(start, min(lines, start + 10_000))
                )


async def wait_ready(pilot, app, backend):
    for _ in range(1000):
        if len(app.chat.rooms) == len(ROOMS):
            break
        await pilot.pause()
    await pilot.pause()


async def ingest(evs: list, chunk: int = 1000, log: bool = False) -> tuple[float, int, float]:
    """Deliver `evs` to a running app; returns (seconds until the last is on screen, flushes,
    seconds more until the log has written them all)."""
    fresh_data_dir()
    app, backend = make_app(log)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ready(pilot, app, backend)
        last_text = evs[-1].text
        flushes0 = app.flushes
        gc.collect()
        start = time.perf_counter()
        emit = backend.emit
        for i in range(0, len(evs), chunk):
            for e in evs[i : i + chunk]:
                emit(e)
            await asyncio.sleep(0.001)  # the network hands over a chunk per millisecond or so
        while True:
            lines = app.chat.rooms["lobby"].lines
            if not app.events_waiting and lines and lines[-1].text == last_text:
                break
            await asyncio.sleep(0.001)
        await pilot.pause()  # and the screen has been updated
        elapsed = time.perf_counter() - start
        assert len(app.chat.rooms["lobby"].lines) == min(m.SCROLLBACK, len(app.chat.rooms["lobby"].lines))
        app.history.drain(600)
        written = time.perf_counter() - start - elapsed
        return elapsed, app.flushes - flushes0, written


async def latency(rate: int, keys: int, log: bool = False, log_lines: int = 0) -> tuple[list[float], float]:
    """Keypress-to-screen latencies (s) while `rate` messages/s arrive; and the rate achieved.
    With `log`, the app's log starts with `log_lines` lines."""
    fresh_data_dir(log_lines if log else 0)
    app, backend = make_app(log)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ready(pilot, app, backend)
        shown: list[tuple[float, int]] = []
        original = app._display

        def spy(*args, **kwargs):
            result = original(*args, **kwargs)
            shown.append((time.perf_counter(), len(app.input.value)))
            return result

        app._display = spy
        stop = asyncio.Event()
        sent = 0

        async def flood():
            nonlocal sent
            if rate <= 0:
                await stop.wait()
                return
            tick = 0.01
            per_tick = rate * tick
            start = time.perf_counter()
            i = 0
            while not stop.is_set():
                due = int((time.perf_counter() - start) * rate) + int(per_tick)
                while sent < due:
                    i += 1
                    backend.emit(
                        ev.MessageReceived(
                            ROOMS[i % 5], i, "bob", f"flood {i} lorem ipsum dolor", T0 + i * 0.001
                        )
                    )
                    sent += 1
                await asyncio.sleep(tick)

        task = asyncio.create_task(flood())
        await asyncio.sleep(0.3)  # let the flood settle in
        flood_start, sent0 = time.perf_counter(), sent
        results = []
        for k in range(keys):
            expected = len(app.input.value) + 1
            mark = len(shown)
            t0 = time.perf_counter()
            app.post_message(events.Key("x", "x"))
            while True:
                hit = next((t for t, n in shown[mark:] if n >= expected), None)
                if hit is not None:
                    results.append(hit - t0)
                    break
                if time.perf_counter() - t0 > 2:
                    results.append(float("inf"))
                    break
                await asyncio.sleep(0.0005)
            await asyncio.sleep(0.03 + (k % 5) * 0.007)  # a typist, not a machine gun
        achieved = (sent - sent0) / (time.perf_counter() - flood_start)
        stop.set()
        await task
        return results, achieved


def baseline_list(evs: list) -> float:
    start = time.perf_counter()
    out = list(evs)
    d = deque(maxlen=m.SCROLLBACK)
    for e in out:
        d.append(e)
    return time.perf_counter() - start


def baseline_model(evs: list) -> float:
    chat = m.ChatModel("alice", tz=UTC, clock=lambda: T0)
    for r in ROOMS:
        chat.apply(ev.RoomJoined(r, "alice", (ev.Member("alice"),)))
    start = time.perf_counter()
    for e in evs:
        chat.apply(e)
    chat.take_changes()
    return time.perf_counter() - start


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--keys", type=int, default=60)
    ap.add_argument("--log-lines", type=int, default=100_000, help="lines in the log before the latency run")
    args = ap.parse_args()
    n = args.messages
    evs = make_events(n)

    print(f"udproom TUI benchmark — {n:,} messages, Python {sys.version.split()[0]}, {os.cpu_count()} cores")
    # Latency first, in a fresh process state (the ingest runs leave a large heap behind).
    quiet, _ = asyncio.run(latency(0, args.keys))
    loud, achieved = asyncio.run(latency(args.rate, args.keys))
    loud_log, achieved_log = asyncio.run(latency(args.rate, args.keys, log=True, log_lines=args.log_lines))
    gc.collect()
    t_list = baseline_list(evs)
    t_model = baseline_model(evs)
    gc.collect()
    rss0 = rss_mb()
    t_app, flushes, _ = asyncio.run(ingest(evs))
    rss1 = rss_mb()
    gc.collect()
    t_log, flushes_log, t_written = asyncio.run(ingest(evs, log=True))
    gc.collect()
    tracemalloc.start()
    asyncio.run(ingest(evs))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print("\n1. ingest (until the last message is on screen)")
    print(
        f"   app (--no-log):   {t_app:7.3f} s  {n / t_app:12,.0f} msg/s  in {flushes} screen updates"
        f"   target < 2 s: {'ok' if t_app < 2 else 'MISSED'}"
    )
    print(
        f"   app with its log: {t_log:7.3f} s  {n / t_log:12,.0f} msg/s  in {flushes_log} screen updates"
        f"   log/no-log = {t_log / t_app:.2f}x; the log finished writing {t_written:.2f} s later"
        f" ({n / (t_log + t_written):,.0f} lines/s written)"
    )
    print(
        f"   baseline model:   {t_model:7.3f} s  {n / t_model:12,.0f} msg/s  (ChatModel only, no screen)"
        f"   app/model = {t_app / t_model:.1f}x"
    )
    print(
        f"   baseline list:    {t_list:7.3f} s  {n / t_list:12,.0f} msg/s  (list + deque append)"
        f"   app/list = {t_app / t_list:.0f}x"
    )
    print(
        f"   memory: tracemalloc peak {peak / 2**20:.1f} MB; process peak RSS {rss1:.0f} MB "
        f"(+{rss1 - rss0:.0f} MB over the {rss0:.0f} MB before the run)"
        f"   target < 200 MB: {'ok' if peak / 2**20 < 200 and rss1 < 200 else 'MISSED'}"
    )
    print(
        f"\n2. keypress-to-screen ({args.keys} keys; with log: {args.log_lines:,} lines logged before;"
        f" load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores)"
    )
    print(
        f"   idle:              p50 {statistics.median(quiet) * 1000:6.1f} ms"
        f"  p95 {pct(quiet, 0.95) * 1000:6.1f} ms"
        f"  max {max(quiet) * 1000:6.1f} ms"
    )
    for label, values, rate in (("--no-log", loud, achieved), ("with log", loud_log, achieved_log)):
        print(
            f"   flood {rate:,.0f} msg/s {label}: p50 {statistics.median(values) * 1000:6.1f} ms  "
            f"p95 {pct(values, 0.95) * 1000:6.1f} ms  max {max(values) * 1000:6.1f} ms"
            f"   flood/idle p50 = {statistics.median(values) / statistics.median(quiet):.1f}x"
            f"   target < 50 ms: {'ok' if pct(values, 0.95) < 0.05 else 'MISSED'} (p95)"
        )
    print(f"   with log / --no-log: p95 {pct(loud_log, 0.95) / pct(loud, 0.95):.2f}x")


if __name__ == "__main__":
    main()
