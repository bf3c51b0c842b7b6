"""Storage benchmark: the relay's room log and the app's chat log, with baselines in the same run.

    python benchmarks/bench_store.py             # 1,000,000-line search corpus (~3-6 min here)
    python benchmarks/bench_store.py --quick     # 100,000 lines, shorter runs

1. Room log group commit: events appended to 20 rooms and committed in groups of 1, 10 and 100
   (the relay commits once per flush of its loop, so a group is whatever arrived in one turn),
   SqliteLog with synchronous=NORMAL and with FULL (--fsync), against MemoryLog in the same run.
   Events/s, the ratio to MemoryLog, and the p50/p99 time of one commit() (the loop stalls that
   long per flush).
2. /search over N logged lines (default 1,000,000; 20 rooms, 50 nicks, words drawn from a Zipf
   vocabulary): p50/p99 per kind of query (rare word, common word, two words, prefix, nick:,
   room:), against a LIKE '%word%' scan of the same table (what a log without FTS5 does).
3. Start-up read: open a 100,000-line chat log and read recent(100) for 20 rooms — what the app
   does before its first frame — p50/p99 over fresh opens.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from udproom.protocol import frames as F
from udproom.protocol.chatlog import ChatLog, Line
from udproom.protocol.roomlog import MemoryLog, RoomLog, SqliteLog

ROOMS = [f"room{i}" for i in range(20)]
NICKS = [f"user{i}" for i in range(50)]
CIRCLE = "relay.example:6000"


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


# ----------------------------------------------------------------------------- 1. room log


def make_events(n: int, rng: random.Random) -> list[tuple[str, F.Ev]]:
    words = [f"w{i}" for i in range(500)]
    out = []
    for i in range(n):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(4, 16)))
        out.append(
            (
                ROOMS[i % len(ROOMS)],
                F.Ev(
                    kind=F.EV_MSG,
                    nick=rng.choice(NICKS),
                    text=text,
                    ts=1.7e9 + i * 0.01,
                    mid=rng.getrandbits(63) or 1,
                ),
            )
        )
    return out


def run_log(
    log: RoomLog, events: list[tuple[str, F.Ev]], group: int, seconds: float
) -> tuple[float, list[float]]:
    """(events/s, commit times) appending `events` in groups until done or out of time."""
    commits: list[float] = []
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    i = 0
    while i < len(events):
        for room, ev in events[i : i + group]:
            # what the relay does per post: dedupe lookup, then append
            log.seq_of_mid(room, ev.mid)
            log.append(room, ev)
        i += group
        t = time.perf_counter()
        log.commit()
        commits.append(time.perf_counter() - t)
        done = min(i, len(events))
        if t > deadline:
            break
    return done / (time.perf_counter() - start), commits


def bench_roomlog(quick: bool) -> None:
    print("== 1. room log: append + group commit (20 rooms, ~60-byte messages) ==")
    rng = random.Random(1)
    n = 50_000 if quick else 200_000
    events = make_events(n, rng)
    seconds = 2.0 if quick else 5.0
    for group in (1, 10, 100):
        base, _ = run_log(MemoryLog(), events, group, seconds)
        row = [f"group {group:>3}: memory {base:>9,.0f} ev/s"]
        for fsync in (False, True):
            with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
                log = SqliteLog(tmp, fsync=fsync)
                rate, commits = run_log(log, events, group, seconds)
                log.close()
            name = "FULL" if fsync else "NORMAL"
            row.append(
                f"sqlite/{name} {rate:>8,.0f} ev/s ({rate / base:.2f}x), commit p50 {ms(pct(commits, 50))}"
                f" p99 {ms(pct(commits, 99))}"
            )
        print("  " + "\n    ".join(row))


def bench_paced(quick: bool) -> None:
    """A relay-like load: 1,000 events/s offered, one commit per 1 ms loop turn with whatever came."""
    print("== 1b. room log at a paced 1,000 events/s, one commit per 1 ms turn: commit time ==")
    rng = random.Random(2)
    seconds = 3.0 if quick else 10.0
    events = make_events(int(seconds * 1000) + 10, rng)
    logs: list[tuple[str, RoomLog]] = [("memory", MemoryLog())]
    tmps = [tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) for _ in range(2)]
    logs += [("sqlite/NORMAL", SqliteLog(tmps[0].name)), ("sqlite/FULL", SqliteLog(tmps[1].name, fsync=True))]
    for name, log in logs:
        commits: list[float] = []
        start = time.perf_counter()
        i = 0
        while i < len(events):
            now = time.perf_counter() - start
            due = min(len(events), int(now * 1000) + 1)
            for room, ev in events[i:due]:
                log.seq_of_mid(room, ev.mid)
                log.append(room, ev)
            i = max(i, due)
            t = time.perf_counter()
            log.commit()
            commits.append(time.perf_counter() - t)
            nxt = start + (int(now * 1000) + 1) / 1000
            while time.perf_counter() < nxt:  # a loop turn per millisecond
                pass
        log.close()
        print(
            f"  {name:<14} commit p50 {ms(pct(commits, 50))}  p99 {ms(pct(commits, 99))}"
            f"  p99.9 {ms(pct(commits, 99.9))}  max {ms(max(commits))}"
        )
    for tmp in tmps:
        tmp.cleanup()


# ----------------------------------------------------------------------------- 2. search


def zipf_words(rng: random.Random, vocab: int) -> tuple[list[str], list[float]]:
    syll = ["ka", "lo", "mi", "ne", "ru", "ta", "po", "si", "de", "ga", "vo", "zu", "be", "fi", "ho"]
    words: set[str] = set()
    while len(words) < vocab:
        words.add("".join(rng.choice(syll) for _ in range(rng.randint(2, 4))))
    ordered = sorted(words)
    rng.shuffle(ordered)
    weights = [1 / (r + 1) for r in range(vocab)]
    return ordered, weights


def build_chatlog(path: Path, lines: int, seed: int = 7) -> tuple[float, list[str]]:
    """Fill a chat log with `lines` lines; returns (lines/s of add(), vocabulary by frequency)."""
    rng = random.Random(seed)
    vocab, weights = zipf_words(rng, 20_000)
    # one cumulative table, many draws: random.choices is fast enough for millions of words
    cum = []
    total = 0.0
    for w in weights:
        total += w
        cum.append(total)
    seqs = dict.fromkeys(ROOMS, 0)
    t0 = time.perf_counter()
    with ChatLog(path) as chat:
        batch: list[Line] = []
        for i in range(lines):
            room = ROOMS[rng.randrange(len(ROOMS))]
            seqs[room] += 1
            text = " ".join(rng.choices(vocab, cum_weights=cum, k=rng.randint(3, 14)))
            batch.append(Line(CIRCLE, room, "message", rng.choice(NICKS), text, 1.7e9 + i, seqs[room]))
            if len(batch) == 5000:
                chat.add(batch)
                batch = []
        if batch:
            chat.add(batch)
    return lines / (time.perf_counter() - t0), vocab


def bench_search(quick: bool, lines: int) -> None:
    print(f"== 2. /search over {lines:,} logged lines ==")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        path = Path(tmp) / "chat.sqlite3"
        rate, vocab = build_chatlog(path, lines)
        size = sum(f.stat().st_size for f in Path(tmp).iterdir()) / 1e6
        print(f"  built with add() in batches of 5,000: {rate:,.0f} lines/s; {size:.0f} MB on disk")
        rare, mid, common = vocab[15_000], vocab[300], vocab[0]
        queries = {
            "rare word": rare,
            "mid-frequency word": mid,
            "most common word": common,
            "two words": f"{mid} {vocab[40]}",
            "prefix": vocab[500][:3] + "*",
            "nick: + word": f"nick:user7 {mid}",
            "room: + common word": f"room:#room3 {common}",
            "nick: only": "nick:user3",
        }
        reps = 20 if quick else 50
        all_times: list[float] = []
        with ChatLog.open_read_only(path) as chat:
            for name, q in queries.items():
                times = []
                hits = 0
                for _ in range(reps):
                    t = time.perf_counter()
                    hits = len(chat.search(q, limit=50))
                    times.append(time.perf_counter() - t)
                all_times += times
                p50, p99 = ms(pct(times, 50)), ms(pct(times, 99))
                print(f"  {name:<20} {q!r:<26} {hits:>2} hits  p50 {p50:>10}  p99 {p99:>10}")
        print(f"  all queries: p50 {ms(pct(all_times, 50))}, p99 {ms(pct(all_times, 99))} (target < 50 ms)")
        # baseline: the same newest-50 answer without FTS5
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        like = []
        for word in (rare, mid):
            for _ in range(3):
                t = time.perf_counter()
                db.execute(
                    "SELECT id FROM lines WHERE text LIKE ? ORDER BY id DESC LIMIT 50", (f"%{word}%",)
                ).fetchall()
                like.append(time.perf_counter() - t)
        db.close()
        fts, scan = statistics.median(all_times), statistics.median(like)
        print(f"  baseline LIKE scan (rare/mid word): median {ms(scan)} = {scan / fts:.0f}x the FTS5 median")


# ----------------------------------------------------------------------------- 3. start-up read


def bench_startup(quick: bool) -> None:
    print("== 3. app start-up read: open + recent(100) for 20 rooms, 100,000-line log ==")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        path = Path(tmp) / "chat.sqlite3"
        build_chatlog(path, 100_000, seed=3)
        times = []
        opens = []
        for _ in range(10 if quick else 30):
            t = time.perf_counter()
            chat = ChatLog(path)
            opened = time.perf_counter()
            got = sum(len(chat.recent(CIRCLE, room, 100)) for room in ROOMS)
            times.append(time.perf_counter() - t)
            opens.append(opened - t)
            chat.close()
            assert got == 2000
        print(
            f"  open + 2,000 lines: p50 {ms(pct(times, 50))}, p99 {ms(pct(times, 99))}"
            f" (of which open p50 {ms(pct(opens, 50))}); target well under 1 s"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--lines", type=int, help="search corpus size (default 1,000,000; 100,000 with --quick)")
    ap.add_argument("--only", choices=["roomlog", "search", "startup"])
    args = ap.parse_args()
    lines = args.lines or (100_000 if args.quick else 1_000_000)
    print(
        f"python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs,"
        f" temp dir {os.environ.get('BENCH_DIR') or tempfile.gettempdir()}"
    )
    if args.only in (None, "roomlog"):
        bench_roomlog(args.quick)
        bench_paced(args.quick)
    if args.only in (None, "search"):
        bench_search(args.quick, lines)
    if args.only in (None, "startup"):
        bench_startup(args.quick)


if __name__ == "__main__":
    main()
