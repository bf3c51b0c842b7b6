"""Relay fan-out benchmark: udproom's relay against a naive relay, measured in the same run.

    python benchmarks/bench_relay.py            # ~100 s
    python benchmarks/bench_relay.py --quick    # ~25 s
    python benchmarks/bench_relay.py --disk     # also the relay with its room log on disk

A room of 100 members on 127.0.0.1. Each relay runs in its own process and faces the same load,
one after the other:

- udproom: the real relay (`RelayServer`, uvloop, per-key and per-address limits off: cookies, per-session
  request order and rate limit, acks, probes/retransmits all on). Senders are real `ClientSession`
  cores posting `Req` frames (cseq, 256 in flight, retransmits); they are members too. The other
  members are lean protocol members (fanout_workers.LeanMember): they do the handshake and the
  join, and ack every Batch like ClientSession does (delayed cumulative + selective acks, NACKs on
  holes), but skip building UI events — a full ClientSession costs ~22 us per 8-event Batch, and
  96 of them would need more CPU than this machine has.
- naive: recvfrom, then sendto every member, on uvloop (a DatagramProtocol whose
  datagram_received calls transport.sendto for each member). `--naive-blocking` runs a blocking
  recvfrom/sendto loop instead: here it delivered ~15% less per CPU-second than the uvloop one.
  Senders send raw datagrams of the same chat text, keeping at most 256 unechoed (their own echo
  is their ack), so both relays see a full-speed, windowed load.
- disk (with `--disk`): the same udproom relay with its room log in SQLite (`udproom relay --data
  DIR`, synchronous=NORMAL; `--fsync` for FULL): every post is committed (one transaction per
  flush of the loop) before its Result and its Batch leave. Compared with the udproom relay on
  `--memory` in the same run (issue 10's target: >= 0.7x deliveries/s).

A delivery is one message arriving at one member (a 9-event Batch to 100 members = 900), counted
by the members themselves, duplicates excluded. Then end-to-end latency at a paced 1,000
messages/s: senders stamp `time.monotonic_ns()` into the text, members subtract it on arrival
(CLOCK_MONOTONIC is one clock for every process on Linux).

Every process is ended by PID (also on error and Ctrl+C); every worker also exits by itself
when its stdin closes or its time runs out.

`run_scenario` (one round: start the workers, run the load, collect) and `main` (rounds, then the
report) are long because each is one sequence read top to bottom; the parts they share are
functions of their own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from array import array

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "fanout_workers.py")
CLK_TCK = os.sysconf("SC_CLK_TCK")


class WorkerError(RuntimeError):
    pass


class Worker:
    """One worker process; its stdout lines arrive in a queue (a reader thread per process)."""

    def __init__(
        self, name: str, argv: list[str], registry: list[Worker], cpus: set[int] | None = None
    ) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, WORKER, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,  # Ctrl+C reaches only us; we end them by PID
        )
        self.pid = self.proc.pid
        registry.append(self)
        if cpus:
            try:
                os.sched_setaffinity(self.pid, cpus)
            except OSError:
                pass
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, kind: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerError(f"{self.name} (pid {self.pid}): no '{kind}' line within {timeout:.0f} s")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise WorkerError(
                    f"{self.name} (pid {self.pid}) exited (code {self.proc.wait()}) before its '{kind}' line"
                )
            if line.startswith(kind + " "):
                return json.loads(line[len(kind) + 1 :])

    def send(self, line: str) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def cpu_seconds(self) -> float | None:
        try:
            with open(f"/proc/{self.pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
        except (OSError, IndexError, ValueError):
            return None

    def end(self) -> None:
        """Terminate by PID, then kill if it lingers."""
        p = self.proc
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(1.5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(1.0)
            except ProcessLookupError:
                pass
        for f in (p.stdin, p.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    try:
        with open("/proc/stat") as fh:
            vals = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return (0.0, 0.0)
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return (sum(vals) - idle, sum(vals))


def percentile(sorted_vals: array | list, q: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, round(q / 100 * (len(sorted_vals) - 1))))
    return sorted_vals[k]


def run_scenario(
    kind: str, mode: str, opts: argparse.Namespace, warmup: float, duration: float, workdir: str
) -> dict:
    """One relay (udproom or naive), its members and senders; returns the figures."""
    workers: list[Worker] = []
    proto = "naive" if kind == "naive" else "udproom"  # "disk" is the udproom relay on a room log
    relays: list[Worker] = []
    try:
        relay_argv = [f"relay-{proto}"]
        if kind in ("cluster", "workers"):  # on NATS JetStream (bench_cluster.py starts the server)
            prefix = f"b{time.monotonic_ns()}"  # a fresh room per run
            relay_argv += ["--cluster", opts.cluster_url, "--cluster-prefix", prefix]
            if kind == "workers":
                relay_argv.append("--reuse-port")
        if kind == "disk":
            relay_argv += ["--data", os.path.join(workdir, f"data-{mode}-{time.monotonic_ns()}")]
            if opts.fsync:
                relay_argv.append("--fsync")
        if kind == "naive" and not opts.naive_blocking:
            relay_argv.append("--uvloop")
        if kind == "udproom" and opts.profile and mode == "throughput":
            relay_argv += ["--profile", opts.profile]
        ncpu = os.cpu_count() or 1
        pin_relay = {0} if opts.pin and ncpu > 1 else None
        pin_load = set(range(1, ncpu)) if opts.pin and ncpu > 1 else None
        relay = Worker(f"relay-{kind}", relay_argv, workers, pin_relay)
        info = relay.expect("ready", 15)
        port = info["port"]
        relays.append(relay)
        for i in range(1, getattr(opts, "workers", 2) if kind == "workers" else 1):  # on the same port
            more = Worker(f"relay-{kind}-{i}", [*relay_argv, "--port", str(port)], workers, pin_relay)
            more.expect("ready", 15)
            relays.append(more)
        senders_n = opts.senders
        members_n = opts.members - senders_n
        groups = opts.member_procs
        common = [
            "--port",
            str(port),
            "--mode",
            mode,
            "--text-bytes",
            str(opts.text_bytes),
            "--rate",
            str(opts.rate),
            "--window",
            str(opts.window),
        ]
        if opts.ack_every and proto == "udproom":
            common += ["--ack-every", str(opts.ack_every)]
        member_workers = []
        first = senders_n
        for g in range(groups):
            n = members_n // groups + (1 if g < members_n % groups else 0)
            lat = os.path.join(workdir, f"lat-{kind}-{g}.bin")
            w = Worker(
                f"members-{kind}-{g}",
                [f"members-{proto}", "--first", str(first), "--count", str(n), "--lat-file", lat, *common],
                workers,
                pin_load,
            )
            w.lat_file = lat  # type: ignore[attr-defined]
            first += n
            member_workers.append(w)
        for w in member_workers:
            w.expect("ready", 30)
        senders = Worker(
            f"senders-{kind}",
            [f"senders-{proto}", "--first", "0", "--count", str(senders_n), *common],
            workers,
            pin_load,
        )
        senders.expect("ready", 30)
        t_go = time.monotonic() + 0.1
        t0 = t_go + warmup
        t1 = t0 + duration
        for w in [*member_workers, senders]:
            w.send(f"go {t_go} {t0} {t1}")
        time.sleep(max(0.0, t0 - time.monotonic()))
        if opts.profile and kind == "udproom" and mode == "throughput":
            relay.send("profile-on")
        cpu0 = {w.name: w.cpu_seconds() for w in workers}
        busy0 = machine_busy()
        wall0 = time.monotonic()
        time.sleep(max(0.0, t1 - time.monotonic()))
        cpu1 = {w.name: w.cpu_seconds() for w in workers}
        busy1 = machine_busy()
        wall = time.monotonic() - wall0
        results = [w.expect("result", 20) for w in member_workers]
        sres = senders.expect("result", 20)
        for r in relays:
            r.send("stop")
        rres = relay.expect("result", 10)
        for r in relays[1:]:
            more_stats = r.expect("result", 10)["stats"]
            for key, value in more_stats.items():
                rres["stats"][key] = rres["stats"].get(key, 0) + value

        def cpu_of(names: list[str]) -> float:
            tot = 0.0
            for n in names:
                if cpu0.get(n) is not None and cpu1.get(n) is not None:
                    tot += cpu1[n] - cpu0[n]
            return tot / wall

        deliveries = sum(r["deliveries"] for r in results) + sres["deliveries"]
        out = {
            "kind": kind,
            "mode": mode,
            "relay_mode": info.get("mode", "uvloop" if info.get("uvloop") else "asyncio"),
            "deliveries": deliveries,
            "rate": deliveries / duration,
            "relay_cpu": cpu_of([r.name for r in relays]),
            "members_cpu": cpu_of([w.name for w in member_workers]),
            "senders_cpu": cpu_of([senders.name]),
            # share of all CPUs busy (anything on the machine, not only us)
            "machine_busy": (busy1[0] - busy0[0]) / max(1.0, busy1[1] - busy0[1]),
            "ours": cpu_of([w.name for w in workers]) / (os.cpu_count() or 1),
            "senders": sres,
            "members": results,
            "relay": rres,
        }
        if mode == "latency":
            samples = {}
            for suffix in ("", ".app"):
                lat = array("q")
                for w in member_workers:
                    path = w.lat_file + suffix  # type: ignore[attr-defined]
                    if os.path.exists(path):
                        with open(path, "rb") as fh:
                            lat.frombytes(fh.read())
                        os.unlink(path)
                samples[suffix or "kernel"] = lat
            out["_samples"] = samples
        return out
    finally:
        for w in reversed(workers):
            w.end()


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short run (under 30 s)")
    p.add_argument("--seconds", type=float, help="measured seconds per throughput run")
    p.add_argument("--rounds", type=int, help="throughput rounds (udproom, naive alternating)")
    p.add_argument("--members", type=int, default=100, help="room size, senders included")
    p.add_argument("--senders", type=int, default=4)
    p.add_argument("--member-procs", type=int, default=2, help="processes hosting the members")
    p.add_argument("--text-bytes", type=int, default=80, help="chat line length in bytes")
    p.add_argument("--window", type=int, default=256, help="unacknowledged messages per sender")
    p.add_argument("--rate", type=float, default=1000.0, help="paced rate for the latency runs")
    p.add_argument(
        "--naive-blocking",
        action="store_true",
        help="naive relay as a blocking recvfrom/sendto loop instead of uvloop (slower per CPU)",
    )
    p.add_argument("--pin", action="store_true", help="relay on CPU 0, every load process on the other CPUs")
    p.add_argument("--only", choices=["udproom", "naive"], help="run one relay only (profiling)")
    p.add_argument("--disk", action="store_true", help="also the udproom relay with its room log on disk")
    p.add_argument("--fsync", action="store_true", help="--disk: synchronous=FULL (udproom relay --fsync)")
    p.add_argument("--no-latency", action="store_true")
    p.add_argument("--profile", help="cProfile the udproom relay during the window; write stats here")
    p.add_argument(
        "--ack-every",
        type=int,
        default=0,
        help="experiment: udproom members ack after this many new events (ClientSession: 32)",
    )
    p.add_argument("--json", action="store_true", help="also print all figures as one JSON line")
    opts = p.parse_args()

    if opts.quick:
        warmup, duration, lat_s, rounds = 1.0, 4.0, 3.0, 1
    else:
        warmup, duration, lat_s, rounds = 2.0, 10.0, 6.0, 2
    duration = opts.seconds or duration
    rounds = opts.rounds or rounds
    kinds = [opts.only] if opts.only else ["udproom", "naive"]
    if opts.disk:
        kinds.insert(kinds.index("udproom") + 1 if "udproom" in kinds else 0, "disk")

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    import msgspec

    try:
        import uvloop

        uv = uvloop.__version__
    except ImportError:
        uv = "missing"
    print(
        f"udproom relay fan-out benchmark: {opts.members} members in one room "
        f"({opts.senders} of them senders), {opts.text_bytes}-byte chat lines, 127.0.0.1"
    )
    print(
        f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, uvloop {uv}, "
        f"msgspec {msgspec.__version__}; {duration:g} s windows after {warmup:g} s warm-up"
    )
    print()
    all_runs: list[dict] = []
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="udproom-bench-") as workdir:
            thr: dict[str, list[dict]] = {k: [] for k in kinds}
            lat: dict[str, dict] = {}
            for r in range(rounds):
                for kind in kinds:
                    res = run_scenario(kind, "throughput", opts, warmup, duration, workdir)
                    thr[kind].append(res)
                    all_runs.append(res)
                    extra = ""
                    if kind in ("udproom", "disk"):
                        s = res["relay"]["stats"]
                        extra = (
                            f"; posts acked {res['senders']['acked_in_window'] / duration:,.0f}/s, "
                            f"relay retransmitted {s.get('retransmitted', 0):,} events, "
                            f"rate-limited {s.get('rate_limited', 0):,}"
                        )
                    else:
                        extra = f"; relay: {res['relay_mode']}"
                    print(
                        f"  round {r + 1} {kind:8s} {fmt_rate(res['rate']):>11s} deliveries/s   "
                        f"CPU: relay {res['relay_cpu']:.0%}, members {res['members_cpu']:.0%}, "
                        f"senders {res['senders_cpu']:.0%}; machine {res['machine_busy']:.0%} busy, "
                        f"{max(0.0, res['machine_busy'] - res['ours']):.0%} of it not ours{extra}",
                        flush=True,
                    )
                if not opts.no_latency:
                    for kind in kinds:
                        res = run_scenario(kind, "latency", opts, 1.0, lat_s, workdir)
                        all_runs.append(res)
                        pooled = lat.setdefault(kind, {"kernel": array("q"), ".app": array("q"), "cpu": []})
                        pooled["kernel"].extend(res["_samples"]["kernel"])
                        pooled[".app"].extend(res["_samples"][".app"])
                        pooled["cpu"].append(res["relay_cpu"])
                        k = sorted(res["_samples"]["kernel"])
                        print(
                            f"  round {r + 1} {kind:8s} latency at {opts.rate:,.0f} msg/s: "
                            f"p50 {percentile(k, 50) / 1000:.0f} us, p99 {percentile(k, 99) / 1000:.0f} us; "
                            f"machine {res['machine_busy']:.0%} busy, "
                            f"{max(0.0, res['machine_busy'] - res['ours']):.0%} of it not ours",
                            flush=True,
                        )
                        del res["_samples"]
    except KeyboardInterrupt:
        print("\ninterrupted; every worker was ended", file=sys.stderr)
        return 130
    except WorkerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    def best(kind: str) -> float:
        return max(r["rate"] for r in thr[kind])

    def mean(kind: str) -> float:
        return sum(r["rate"] for r in thr[kind]) / len(thr[kind])

    print()
    print("Throughput (senders at full speed):")
    eff: dict[str, float] = {}
    for kind in kinds:
        runs = thr[kind]
        cpu = sum(r["relay_cpu"] for r in runs) / len(runs)
        per_cpu = mean(kind) / cpu if cpu else float("nan")
        eff[kind] = per_cpu
        label = {
            "udproom": "udproom relay (--memory)",
            "disk": f"udproom relay (--data{', --fsync' if opts.fsync else ''})",
        }.get(kind, f"naive relay ({runs[0]['relay_mode']})")
        print(
            f"  {label:34s} {fmt_rate(mean(kind)):>11s} deliveries/s "
            f"(mean of {len(runs)}, best {fmt_rate(best(kind))}); relay CPU {cpu:.0%} of a core, "
            f"{fmt_rate(per_cpu)} deliveries per relay CPU-second"
        )
    for a, b, label, target in (
        ("disk", "udproom", "disk/memory", 0.7),
        ("udproom", "naive", "udproom/naive", 0.8),
    ):
        if a in kinds and b in kinds:
            ratio = mean(a) / mean(b)
            print(
                f"  ratio {label}: {ratio:.2f}x deliveries/s  (target >= {target}x: "
                f"{'met' if ratio >= target else 'NOT met'}); "
                f"{eff[a] / eff[b]:.2f}x per relay CPU-second"
            )
    if lat:
        print()
        print(
            f"End-to-end latency at a paced {opts.rate:,.0f} messages/s, sender's post -> arrival in the "
            "member's socket (kernel timestamp) [and after the member decoded it]:"
        )
        for kind, pooled in lat.items():
            k = sorted(pooled["kernel"])
            a = sorted(pooled[".app"])
            cpu = sum(pooled["cpu"]) / len(pooled["cpu"])
            print(
                f"  {kind:8s} p50 {percentile(k, 50) / 1000:6.0f} us  p99 {percentile(k, 99) / 1000:6.0f} us"
                f"   [p50 {percentile(a, 50) / 1000:.0f} us, p99 {percentile(a, 99) / 1000:.0f} us]"
                f"   ({len(k):,} deliveries, all rounds; relay CPU {cpu:.0%})"
            )
    print()
    where = (
        "the relay is pinned to CPU 0 and the load to the others"
        if opts.pin
        else "the relay never has a core to itself"
    )
    print(
        f"Notes: {os.cpu_count()} cores are shared by the relay and the load ({opts.member_procs} member "
        f"processes, 1 sender process); {where}. Both relays face the "
        "same load, so the ratio is fair. udproom members are lean protocol members (real handshake, "
        "join and delayed cumulative/selective acks, no UI events); udproom senders are real "
        "ClientSession cores. The naive relay does no acks, ordering or repair: what it drops is lost. "
        f"Total time {time.monotonic() - started:.0f} s."
    )
    foreign = max(max(0.0, r["machine_busy"] - r["ours"]) for r in all_runs)
    if foreign > 0.10:
        print(
            f"Warning: other processes used up to {foreign:.0%} of the machine during a run; "
            "figures are noisier than usual (alternating rounds keep the comparison even)."
        )
    if opts.json:
        print(json.dumps({"runs": all_runs}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
