"""A real multi-process soak of a cluster (issue 12): one `nats-server -js`, three `udproom relay
--cluster` processes, and client processes each running a few hundred sans-IO `ClientSession`s
(`RelayClient`, one real UDP socket each) with seeded loss in each client's send and receive path.
One relay is SIGKILLed halfway through the posts; its members fail over (`--join a,b,c`).

    run(Plan(...)) -> Report       # the parent: starts everything, ends every process by PID
    python -m tests.cluster.soakproc child CONFIG.json   # one client process (started by run)

Used by `benchmarks/soak_processes.py` (1,000 members) and `tests/cluster/test_soak_processes.py`
(60 members). Where the loss lives: in the client processes (`LossyCore` from
tests/net/lossy_cli.py, between each client's socket and its core), not in a proxy process: a
proxy would forward every datagram through one more Python process on a 2-core machine (the
proxy, not the relays, would be what is measured), and a client failing over must reach the other
relays' own addresses, which a proxy per relay would have to mirror. Dropping in the client
process drops each datagram both ways exactly as a lossy path would, seeded per member.

Parent and children talk in JSON lines: a child prints `ready` when all its members joined, the
parent answers `go` (senders post one line every `interval`), then `killed T` (the monotonic time
of the SIGKILL: one clock for every process on Linux), then `expect {room: {text: seq}}` (every
acknowledged post, from every child); a child waits until each of its members has them, writes
its result file and prints `done`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .natsserver import NatsServer

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Plan:
    members: int = 60
    rooms: int = 3
    procs: int = 2  # client processes
    senders: int = 3
    lines: int = 6  # per sender
    interval: float = 0.5  # between a sender's lines, seconds
    loss: float = 0.2  # each way, in the client processes
    seed: int = 7
    deadline: float = 55.0  # the whole run, seconds (everything is ended then)
    # client timing (seconds): keepalive, the relay's silence that means it is gone
    keepalive: float = 0.3
    timeout: float = 2.0
    relay_timeout: float = 3.0  # the relays' member timeout (and the cluster's presence TTL)
    #: a handshake unanswered this long moves the member on to its next relay (at 20% loss each
    #: way a handshake's three round trips need retries: 1 s made healthy relays look dead)
    handshake: float = 4.0
    join_rate: float = 25.0  # members a client process starts per second (the failover is the storm)


@dataclass
class Report:
    ok: bool = False
    problems: list[str] = field(default_factory=list)
    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds
    rss: dict[str, tuple[int, int]] = field(default_factory=dict)  # relay -> (RSS, peak) KiB
    sent: int = 0  # datagrams the clients sent (after their loss) and received (before it)
    received: int = 0
    dropped: int = 0
    deliveries: int = 0  # room messages delivered to members
    posts: int = 0
    acked: int = 0
    failover: list[float] = field(default_factory=list)  # per member of the killed relay, seconds
    moved: int = 0  # members that failed over at least once
    moved_others: int = 0  # of those, members not on the killed relay when it was killed
    #: failovers (a member may fail over more than once) while joining, while posts went on before the
    #: kill, and after it; with the reasons' first words (reason -> count)
    failovers: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)  # seconds from the start: ready, killed, ...
    refused: int = 0  # members refused (never, unless something is wrong)
    rooms: dict[str, int] = field(default_factory=dict)  # room -> members


def members_of(plan: Plan) -> list[dict]:
    """Member g: room g % rooms, first relay (g // rooms) % 3 (each room on every relay), client
    process g * procs // members (contiguous blocks: each process has every room and relay)."""
    out = [
        {
            "g": g,
            "nick": f"m{g}",
            "room": f"soak{g % plan.rooms}",
            "relay": (g // plan.rooms) % 3,
            "sender": False,
        }
        for g in range(plan.members)
    ]
    for i in range(plan.senders):  # spread over rooms and relays, one block of members each
        start = i * plan.members // plan.senders
        for m in out[start:] + out[:start]:
            if not m["sender"] and m["g"] % plan.rooms == i % plan.rooms and m["relay"] == i % 3:
                m["sender"] = True
                break
    return out


# ---------------------------------------------------------------------------------------- the parent


def _cpu(pid: int) -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def _rss(pid: int) -> tuple[int, int]:
    got = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                got[key] = int(value.split()[0])
    return got.get("VmRSS", 0), got.get("VmHWM", 0)


class _Child:
    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.lines: list[dict] = []
        self.changed = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(line))
            self.changed.set()
        self.changed.set()

    def said(self, kind: str) -> list[dict]:
        return [x for x in self.lines if x.get("type") == kind]

    async def send(self, obj: dict) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        await self.proc.stdin.drain()


async def _until(children: list[_Child], predicate, deadline: float, what: str) -> None:
    while not predicate():
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(what)
        for c in children:
            if c.proc.returncode is not None and not c.said("done"):
                raise TimeoutError(f"{what}: {c.name} exited with {c.proc.returncode}")
        for c in children:
            c.changed.clear()
        if predicate():
            return
        waits = [asyncio.create_task(c.changed.wait()) for c in children]
        await asyncio.wait(waits, timeout=min(left, 1.0), return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()


async def _relay(python: str, url: str, identity: Path, log: Path, plan: Plan, deadline: float):
    cmd = [
        python, "-m", "udproom", "relay", "--bind", "127.0.0.1:0", "--cluster", url,
        "--identity", str(identity), "--keepalive", str(plan.keepalive),
        "--timeout-member", str(plan.relay_timeout), "--give-up", "120",
        # (every member comes from 127.0.0.1: one address, where a public relay counts a NAT's users)
        "--max-sessions-per-address", "0", "--max-handshakes-per-address", "0",
        "--handshakes-per-address", "0", "--requests-per-address", "0", "--posts-per-address", "0",
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
        )
    while time.monotonic() < deadline:
        m = re.search(r"udp://127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
        if m:
            return proc, int(m.group(1))
        if proc.returncode is not None:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 0.05)  # (a bounded poll of its log file)
    raise RuntimeError(f"relay did not start: {log.read_text(errors='replace')[-1500:]}")


async def _run(plan: Plan, tmp: Path, report: Report, started: float) -> None:
    deadline = started + plan.deadline
    nats = NatsServer(tmp / "store")
    procs: dict[str, asyncio.subprocess.Process] = {}
    children: list[_Child] = []
    killed_cpu: dict[str, float] = {}
    try:
        nats.start(timeout=min(30.0, plan.deadline / 3))
        relays, ports = [], []
        for i in range(3):  # one at a time: the first makes the shared key file
            proc, port = await _relay(
                sys.executable, nats.url, tmp / "relay-key", tmp / f"relay{i}.log", plan, deadline
            )
            procs[f"relay{i}"] = proc
            relays.append(proc)
            ports.append(port)
        members = members_of(plan)
        report.rooms = {}
        for m in members:
            report.rooms[m["room"]] = report.rooms.get(m["room"], 0) + 1
            k = m["relay"]
            m["join"] = ",".join(f"127.0.0.1:{ports[(k + j) % 3]}" for j in range(3))
        for p in range(plan.procs):
            mine = [m for m in members if m["g"] * plan.procs // plan.members == p]
            config = {"plan": asdict(plan), "members": mine, "result": str(tmp / f"client{p}.json"),
                      "deadline_left": deadline - time.monotonic(), "index": p}  # fmt: skip
            path = tmp / f"client{p}.cfg.json"
            path.write_text(json.dumps(config))
            with open(tmp / f"client{p}.log", "wb") as log:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "tests.cluster.soakproc", "child", str(path),
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=ROOT,
                )  # fmt: skip
            procs[f"client{p}"] = proc
            children.append(_Child(f"client{p}", proc))
        await _until(
            children, lambda: all(c.said("ready") for c in children), deadline, "every member joined"
        )
        go = time.monotonic()
        report.phases["every member joined"] = go - started
        for c in children:
            await c.send({"type": "go", "at": go})
        # halfway through the posts: SIGKILL relay 0
        await asyncio.sleep(max(0.0, go + plan.interval * plan.lines / 2 - time.monotonic()))
        killed_cpu["relay0"] = _cpu(relays[0].pid)
        report.rss["relay0"] = _rss(relays[0].pid)
        killed = time.monotonic()
        report.phases["relay 0 killed"] = killed - started
        os.kill(relays[0].pid, signal.SIGKILL)
        await relays[0].wait()
        for c in children:
            await c.send({"type": "killed", "at": killed, "port": ports[0]})
        posts = plan.senders * plan.lines

        def settled() -> int:
            return sum(len(c.said("settled")) for c in children)

        await _until(children, lambda: settled() >= posts, deadline, "every post settled")
        report.phases["every post acknowledged"] = time.monotonic() - started
        expect: dict[str, dict[str, int]] = {}
        for c in children:
            for s in c.said("settled"):
                if s["seq"]:
                    expect.setdefault(s["room"], {})[s["text"]] = s["seq"]
                else:
                    report.problems.append(f"{s['text']!r} not acknowledged: {s['why']}")
        report.posts, report.acked = posts, sum(len(v) for v in expect.values())
        (tmp / "settled.json").write_text(json.dumps([s for c in children for s in c.said("settled")]))
        for c in children:
            await c.send({"type": "expect", "rooms": expect})
        await _until(
            children, lambda: all(c.said("done") for c in children), deadline, "every member has every post"
        )
        report.phases["every member has every post"] = time.monotonic() - started
        for i in (1, 2):
            report.cpu[f"relay{i}"] = _cpu(relays[i].pid)
            report.rss[f"relay{i}"] = _rss(relays[i].pid)
        report.cpu.update(killed_cpu)
        report.cpu["nats-server"] = _cpu(nats.proc.pid) if nats.proc else 0.0
        for c in children:
            await asyncio.wait_for(c.proc.wait(), max(1.0, deadline - time.monotonic()))
        results = [json.loads((tmp / f"client{p}.json").read_text()) for p in range(plan.procs)]
        check(results, expect, go, killed, report)
    except TimeoutError as exc:
        report.problems.append(f"not within the deadline ({plan.deadline:.0f} s): {exc}")
        for c in children:
            report.problems.append(f"{c.name}: {c.lines[-3:]}")
    finally:
        for proc in procs.values():  # every process this run started, by PID
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
        for proc in procs.values():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
        for c in children:
            c.reader.cancel()
        nats.kill()


def check(
    results: list[dict], expect: dict[str, dict[str, int]], go: float, killed: float, report: Report
) -> None:
    """Every member got every acknowledged post of its room, under its number, once; one order per
    room (the same number for the same message everywhere, and the messages two members share in
    the same order); sequence numbers rising."""
    problems = report.problems
    by_room: dict[str, list[list]] = {}
    for res in results:
        report.sent += res["stats"]["sent"]
        report.received += res["stats"]["received"]
        report.dropped += res["stats"]["dropped"]
        report.cpu[f"client{res['index']}"] = res["stats"]["cpu"]
        for m in res["members"]:
            msgs = m["msgs"]
            report.deliveries += len(msgs)
            by_room.setdefault(m["room"], []).append(msgs)
            texts = [t for _s, _n, t in msgs]
            if len(texts) != len(set(texts)):
                problems.append(f"{m['nick']}: a message delivered twice")
            if [s for s, _n, _t in msgs] != sorted(s for s, _n, _t in msgs):
                problems.append(f"{m['nick']}: numbers out of order")
            got = {t: s for s, _n, t in msgs}
            missing = [t for t, s in expect.get(m["room"], {}).items() if got.get(t) != s]
            if missing:
                problems.append(
                    f"{m['nick']} ({m['room']}): {len(missing)} acknowledged posts missing: {missing[0]!r}"
                )
            if m["refused"]:
                report.refused += 1
                problems.append(f"{m['nick']}: refused: {m['last']}")
            if m["moved"]:
                report.moved += 1
                if not m["on_killed"]:
                    report.moved_others += 1
            for t, reason in m["moved"]:
                phase = "joining" if t < go else "before the kill" if t < killed else "after the kill"
                report.failovers[phase] = report.failovers.get(phase, 0) + 1
                why = reason.split(";")[0]
                report.reasons[why] = report.reasons.get(why, 0) + 1
            if m["on_killed"]:
                after = [t for t in m["joined"] if t > killed]
                if after:
                    report.failover.append(after[0] - killed)
                else:
                    problems.append(f"{m['nick']}: never joined another relay ({m['last']}; {m['mode']})")
    for room, views in by_room.items():
        numbering: dict[str, int] = {}
        for view in views:
            for s, _n, t in view:
                if numbering.setdefault(t, s) != s:
                    problems.append(f"{room}: {t!r} numbered {s} and {numbering[t]}")
        order = sorted(numbering, key=numbering.get)
        pos = {t: i for i, t in enumerate(order)}
        for view in views:
            idx = [pos[t] for _s, _n, t in view]
            if idx != sorted(idx):
                problems.append(f"{room}: two members saw different orders")
                break
    report.ok = not problems


def run(plan: Plan, workdir: str | None = None) -> Report:
    """`workdir`: keep the logs and results there (default: a temporary directory)."""
    report = Report()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="udproom-soak-") as tmp:
        asyncio.run(_run(plan, Path(workdir or tmp), report, started))
    report.wall = time.monotonic() - started
    return report


# ---------------------------------------------------------------------------------------- a child


class _Member:
    def __init__(self, spec: dict, plan: Plan, settled: list[dict]) -> None:
        from udproom.protocol.reliability import Timing

        self.spec = spec
        self.room = spec["room"]
        timing = Timing(
            rto_initial=0.3, rto_min=0.1, rto_max=1.0, give_up=120.0, keepalive=plan.keepalive,
            timeout=plan.timeout, handshake=plan.handshake, ack_delay=0.02, reconnect_min=0.1,
            reconnect_max=1.0,
        )  # fmt: skip
        self.timing = timing
        self.plan = plan
        self.refused = 0  # times it was refused (a final answer: it stops)
        self.client = self._client()
        self.msgs: list[tuple[int, str, str]] = []
        self.joined: list[float] = []
        self.moved: list[tuple[float, str]] = []  # (when, why) it failed over
        self.on_killed = False  # on the relay that was killed, when it was
        self.last = ""  # the last reason it lost its relay or was refused
        self.posts: dict[int, str] = {}
        self.settled = settled  # (shared by the process's members, in the order they settled)
        self.task: asyncio.Task | None = None

    def _client(self):
        from udproom.protocol.net.runners import RelayClient

        from ..net.lossy_cli import LossyCore

        spec, plan = self.spec, self.plan
        client = RelayClient(spec["join"], spec["nick"], [self.room], timing=self.timing)
        seed = plan.seed * 100_003 + spec["g"]
        self.lossy = LossyCore(client.core, plan.loss, 0.0, seed=seed)
        client._driven = self.lossy  # (CoreClient drives this wrapper: the loss is ours)
        return client

    def on_event(self, e) -> None:
        from udproom.protocol import events as E

        t = type(e)
        if t is E.MessageReceived:
            if e.room == self.room:
                self.msgs.append((e.seq, e.nick, e.text))
        elif t is E.RoomJoined:
            self.joined.append(time.monotonic())
        elif t is E.PostAcknowledged and e.local_id in self.posts:
            self.settled.append(
                {"type": "settled", "room": self.room, "text": self.posts.pop(e.local_id), "seq": e.seq}
            )
        elif t is E.PostFailed and e.local_id in self.posts:
            self.settled.append(
                {
                    "type": "settled",
                    "room": self.room,
                    "text": self.posts.pop(e.local_id),
                    "seq": 0,
                    "why": e.reason,
                }
            )
        elif t is E.ConnectionLost or t is E.Refused:
            if "failing over" in e.reason:
                self.moved.append((time.monotonic(), e.reason))
            self.last = e.reason
            if t is E.Refused:
                self.refused += 1


async def _child(config: dict) -> None:
    plan = Plan(**config["plan"])
    deadline = time.monotonic() + config["deadline_left"] - 5.0  # (before the parent ends it)
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue = asyncio.Queue()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def read() -> None:
        while line := await reader.readline():
            await lines.put(json.loads(line))
        await lines.put({"type": "eof"})

    reading = asyncio.create_task(read())

    def say(obj: dict) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    settled: list[dict] = []
    members = [_Member(s, plan, settled) for s in config["members"]]
    start = time.monotonic()
    for i, m in enumerate(members):  # paced: members arrive over a while, not in one instant
        await asyncio.sleep(max(0.0, start + i / plan.join_rate - time.monotonic()))
        m.task = asyncio.create_task(m.client.run(m.on_event))
    shown = time.monotonic()
    while not all(m.joined for m in members):
        if time.monotonic() > shown + 5:
            shown = time.monotonic()
            say({"type": "joining", "joined": sum(1 for m in members if m.joined)})
        if time.monotonic() > deadline:
            late = [(m.spec["nick"], m.last) for m in members if not m.joined]
            print(f"not joined: {len(late)}, e.g. {late[:5]}", file=sys.stderr)
            return
        await asyncio.sleep(0.05)
    say({"type": "ready", "members": len(members)})
    msg = await lines.get()
    go = msg["at"]
    senders = [m for m in members if m.spec["sender"]]

    async def post_lines(m: _Member) -> None:
        for k in range(plan.lines):
            await asyncio.sleep(max(0.0, go + k * plan.interval - time.monotonic()))
            text = f"{m.spec['nick']} line {k}"
            m.posts[m.client.post(m.room, text)] = text

    posting = [asyncio.create_task(post_lines(m)) for m in senders]
    expect: dict | None = None
    told = 0
    while expect is None and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            msg = await asyncio.wait_for(lines.get(), 0.1)
            if msg["type"] == "expect":
                expect = msg["rooms"]
            elif msg["type"] == "killed":  # who was on the killed relay at that moment
                for m in members:
                    addr = m.client.core.addr
                    m.on_killed = addr is not None and addr[1] == msg["port"]
            elif msg["type"] == "eof":
                break
        for s in settled[told:]:
            say(s)
        told = len(settled)
    if expect is not None:

        def complete() -> bool:
            for m in members:
                got = {t for _s, _n, t in m.msgs}
                if not set(expect.get(m.room, {})) <= got:
                    return False
            return True

        while not complete() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    for task in posting:
        task.cancel()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    stats = {
        "sent": sum(m.client.protocol.stats["sent"] for m in members if m.client.protocol),
        "received": sum(m.client.protocol.stats["received"] for m in members if m.client.protocol),
        "dropped": sum(m.lossy.dropped for m in members),
        "cpu": usage.ru_utime + usage.ru_stime,
    }
    result = {
        "index": config["index"],
        "stats": stats,
        "members": [
            {
                "nick": m.spec["nick"],
                "room": m.room,
                "relay": m.spec["relay"],
                "msgs": m.msgs,
                "joined": m.joined,
                "moved": m.moved,
                "on_killed": m.on_killed,
                "refused": m.refused,
                "last": m.last,
                "mode": m.client.mode,
            }
            for m in members
        ],
    }
    Path(config["result"]).write_text(json.dumps(result))
    for m in members:
        m.client.close()
    await asyncio.wait([m.task for m in members if m.task], timeout=5)
    reading.cancel()
    say({"type": "done"})


def main(argv: list[str]) -> int:
    if argv[:1] != ["child"] or len(argv) != 2:
        print("usage: python -m tests.cluster.soakproc child CONFIG.json", file=sys.stderr)
        return 2
    random.seed(0)
    asyncio.run(_child(json.loads(Path(argv[1]).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
