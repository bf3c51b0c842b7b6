"""Worker processes for bench_relay.py: the two relays, the members and the senders.

Run as `python benchmarks/fanout_workers.py ROLE [options]`; bench_relay.py starts and ends them.
Conversation with the orchestrator, one line each on stdin/stdout:

    worker -> "ready {json}"      once it is set up (relays: the port; members: all joined)
    orch   -> "go T_GO T0 T1"     monotonic seconds: start the load at T_GO, count in [T0, T1)
    worker -> "result {json}"     after T1 (members, senders); relays after "stop" or stdin EOF

Every loop is bounded by `--max-seconds`, and every worker exits when its stdin closes, so nothing
outlives the orchestrator. All sockets are on 127.0.0.1. Scheduling uses `time.monotonic()` (Linux
CLOCK_MONOTONIC: one clock for every process). Latency stamps use `time.time_ns()` (CLOCK_REALTIME,
also one clock for the machine) because that is the clock of the kernel's SO_TIMESTAMPNS receive
stamps: a sender's stamp in the text and the kernel's arrival stamp at the member's socket give
the one-way latency without the member's own processing; the stamp after processing is kept too.

Roles
  relay-udproom   the real relay: `RelayServer` on uvloop, RelayConfig(posts_per_key=0, **NO_ADDRESS_LIMITS)
  relay-naive     recvfrom, then sendto every member (blocking socket, or --uvloop)
  members-udproom many lean protocol members on their own sockets (see LeanMember)
  members-naive   many counting sockets registered with the naive relay
  senders-udproom ClientSession cores (real clients) posting through the protocol
  senders-naive   raw datagrams of the same text, windowed by their own echoes

Each role's function is that process's whole main loop (setup, the timed window, the result), so
the long ones (`members_udproom`, `senders_udproom`, `relay_naive`, `senders_naive`) are kept
whole: their hot loops bind attributes to locals, and their timing is what is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import struct
import sys
import time
from array import array

import msgspec

from udproom.protocol import frames as F
from udproom.protocol.reliability import AckScheduler, RecvStream

ROOM = "bench"
NACK_PACE = 0.02  # a lean member keeps no RTT estimate: one NACK per 20 ms at most
HOST = "127.0.0.1"
RCVBUF = 4 << 20


#: Linux SO_TIMESTAMPNS / SCM_TIMESTAMPNS (Python 3.11's socket module lacks the names): the kernel
#: stamps each datagram (CLOCK_REALTIME) as it lands in the member's socket.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TS = struct.Struct("qq")


def enable_timestamps(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)


def kernel_ns(ancdata: list) -> int:
    for level, kind, blob in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(blob) >= 16:
            sec, nsec = _TS.unpack_from(blob)
            return sec * 1_000_000_000 + nsec
    return time.time_ns()


def emit(kind: str, obj: dict) -> None:
    sys.stdout.write(f"{kind} {json.dumps(obj)}\n")
    sys.stdout.flush()


class Control:
    """Non-blocking reader of the orchestrator's lines on stdin."""

    def __init__(self) -> None:
        self.fd = sys.stdin.fileno()
        os.set_blocking(self.fd, False)
        self.buf = b""
        self.eof = False

    def lines(self) -> list[str]:
        out = []
        while True:
            try:
                chunk = os.read(self.fd, 4096)
            except BlockingIOError:
                break
            if not chunk:
                self.eof = True
                break
            self.buf += chunk
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            out.append(line.decode())
        return out

    def wait_go(self, deadline: float) -> tuple[float, float, float]:
        sel = selectors.DefaultSelector()
        sel.register(self.fd, selectors.EVENT_READ)
        try:
            while time.monotonic() < deadline:
                for line in self.lines():
                    if line.startswith("go "):
                        _, a, b, c = line.split()
                        return float(a), float(b), float(c)
                if self.eof:
                    sys.exit(0)
                sel.select(0.2)
        finally:
            sel.unregister(self.fd)
            sel.close()
        sys.exit(2)


def member_socket(port: int, rcvbuf: int = RCVBUF) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    s.bind((HOST, 0))
    s.connect((HOST, port))
    return s


def chat_text(prefix: str, size: int) -> str:
    """The chat line both relays carry: `prefix` padded to `size` bytes."""
    return prefix + "." * max(0, size - len(prefix))


def write_latencies(path: str | None, lat_ns: array, app_ns: array) -> None:
    """Kernel-arrival latencies to `path`, after-processing latencies to `path`.app."""
    if path:
        with open(path, "wb") as fh:
            lat_ns.tofile(fh)
        with open(path + ".app", "wb") as fh:
            app_ns.tofile(fh)


# =============================================================================== relays


def relay_udproom(args: argparse.Namespace) -> None:
    import asyncio
    import resource

    from udproom.protocol.net import loop as uloop
    from udproom.protocol.net.runners import RelayServer

    prof = None
    if args.profile:
        import cProfile

        prof = cProfile.Profile()

    async def main() -> None:
        room_log = names = None
        if args.data:  # the room log on disk (udproom relay --data DIR), else in memory (--memory)
            from udproom.protocol.roomlog import SqliteLog

            room_log = SqliteLog(args.data, fsync=args.fsync)
        if args.cluster:  # udproom relay --cluster URL (and, with --reuse-port, one of --workers)
            from udproom.protocol.jetstream import ClusterNicks, JetStreamLog, NatsLink

            link = NatsLink(args.cluster)
            room_log = JetStreamLog(link, prefix=args.cluster_prefix)
            names = ClusterNicks(link, os.urandom(4).hex(), prefix=args.cluster_prefix)
        from udproom.protocol.relay import NO_ADDRESS_LIMITS, RelayConfig

        # (a benchmark's few senders post far beyond anyone's rate, and all its clients come from
        # one address: the per-key and per-address limits are off, as with `relay --posts-per-key 0
        # --max-sessions-per-address 0 ...`; everything else is the default RelayConfig)
        config = RelayConfig(posts_per_key=0, **NO_ADDRESS_LIMITS)
        server = RelayServer(
            f"{HOST}:{args.port}", config, log=room_log, names=names, reuse_port=args.reuse_port
        )
        await server.start()
        lp = asyncio.get_running_loop()
        emit("ready", {"port": server.port, "uvloop": uloop.using_uvloop(), "pid": os.getpid()})
        done = asyncio.Event()
        ctl = Control()

        def on_stdin() -> None:
            for line in ctl.lines():
                if line.strip() == "stop":
                    done.set()
                    if prof is not None:
                        prof.disable()
                elif line.strip() == "profile-on" and prof is not None:
                    prof.enable()
            if ctl.eof:
                done.set()

        lp.add_reader(ctl.fd, on_stdin)
        try:
            await asyncio.wait_for(done.wait(), args.max_seconds)
        except TimeoutError:
            pass
        lp.remove_reader(ctl.fd)
        stats = server.stats
        await server.stop()
        if names is not None:
            names.close()
            room_log.link.close()
        ru = resource.getrusage(resource.RUSAGE_SELF)
        emit("result", {"stats": stats, "cpu": ru.ru_utime + ru.ru_stime})

    uloop.run(main)
    if prof is not None:
        prof.dump_stats(args.profile)


def relay_naive(args: argparse.Namespace) -> None:
    """recvfrom, then sendto every member. The first datagram from an address registers it."""
    import resource

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, RCVBUF)
    sock.bind((HOST, 0))
    port = sock.getsockname()[1]
    members: list[tuple] = []
    known: set[tuple] = set()
    stats = {"received": 0, "sent": 0, "send_errors": 0}
    ctl = Control()
    deadline = time.monotonic() + args.max_seconds

    if args.uvloop:
        import asyncio

        import uvloop

        class Naive(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.t = transport

            def datagram_received(self, data: bytes, addr: tuple) -> None:
                stats["received"] += 1
                if addr not in known:
                    known.add(addr)
                    members.append(addr)
                    self.t.sendto(b"OK", addr)
                    return
                sendto = self.t.sendto
                for m in members:
                    sendto(data, m)
                stats["sent"] += len(members)

        async def main() -> None:
            lp = asyncio.get_running_loop()
            sock.setblocking(False)
            await lp.create_datagram_endpoint(Naive, sock=sock)
            emit("ready", {"port": port, "mode": "uvloop DatagramProtocol", "pid": os.getpid()})
            done = asyncio.Event()

            def on_stdin() -> None:
                for line in ctl.lines():
                    if line.strip() == "stop":
                        done.set()
                if ctl.eof:
                    done.set()

            lp.add_reader(ctl.fd, on_stdin)
            try:
                await asyncio.wait_for(done.wait(), args.max_seconds)
            except TimeoutError:
                pass

        uvloop.run(main())
    else:
        # Blocking socket, the tightest loop Python has: one recvfrom, then a sendto per member.
        sock.settimeout(0.2)
        emit("ready", {"port": port, "mode": "blocking socket", "pid": os.getpid()})
        recvfrom = sock.recvfrom
        sendto = sock.sendto
        received = sent = errors = 0
        checked = time.monotonic()
        while True:
            try:
                data, addr = recvfrom(2048)
            except TimeoutError:
                data = None
            if data is not None:
                received += 1
                if addr in known:
                    for m in members:
                        try:
                            sendto(data, m)
                        except OSError:
                            errors += 1
                    sent += len(members)
                else:
                    known.add(addr)
                    members.append(addr)
                    sendto(b"OK", addr)
            if data is None or received & 1023 == 0:
                t = time.monotonic()
                if data is None or t - checked > 0.2:
                    checked = t
                    if any(line.strip() == "stop" for line in ctl.lines()) or ctl.eof or t > deadline:
                        break
        stats.update(received=received, sent=sent, send_errors=errors)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    emit("result", {"stats": stats, "members": len(members), "cpu": ru.ru_utime + ru.ru_stime})


# =============================================================================== udproom members


def _lean_decoder():
    """A decoder that reads a Batch datagram's room, first seq and event count only.

    A room datagram from the relay opens (`SealedChannel.open_room`) to `[[20, room, seq, [ev,
    ...]]]` (one Batch).
    The events are kept as raw MessagePack (msgspec.Raw, no parsing), so counting costs ~0.5 us a
    datagram instead of ~1.4 us for the full typed decode (and ~22 us through ClientSession).
    """
    return msgspec.msgpack.Decoder(tuple[LeanBatch]).decode


def _tag(frame_type) -> int:
    return frame_type.__struct_config__.tag


class LeanBatch(msgspec.Struct, array_like=True, frozen=True, tag=_tag(F.Batch)):
    room: str
    seq: int
    events: list[msgspec.Raw]


#: the head of a sealed room datagram (protocol 2): what `lean_decode` reads, once opened
ROOM_PREFIX = bytes((0xC1, 2))


class LeanMember:
    """A room member that does what ClientSession does for the relay, without the UI work.

    Handshake (protocol 2: padded Hello, cookie Retry, Hello with cookie, Welcome, sealed Login,
    LoggedIn; its identity key is made per process), join (Req cseq 1), then
    for every Batch: count new events in a `RecvStream` (`offer_run`: no items kept) and ack
    through the same `AckScheduler` as ClientSession (delayed ack of `ack_delay`, at once after
    ACK_EVERY new events, on a duplicate or a gap; SACK ranges; a paced NACK for holes); Gone
    skips ahead; a Ping when quiet. What it skips is building MessageReceived events and the
    per-message dedupe by mid.
    """

    __slots__ = ("acks", "channel", "count", "dups", "keys", "last_sent", "nick", "rx", "sock")

    def __init__(self, sock: socket.socket, nick: str, ack_delay: float, ack_every: int) -> None:
        self.sock = sock
        self.nick = nick
        self.rx = RecvStream()
        self.acks = AckScheduler(ack_delay, ack_every)
        self.count = 0
        self.last_sent = 0.0
        self.dups = 0
        self.channel = None  # the session's SealedChannel, from the handshake
        self.keys = None  # the room's keys (RoomKey frames)

    def handshake(self, identity, timeout: float = 5.0) -> None:
        from udproom.protocol import crypto as C
        from udproom.protocol import frames as F
        from udproom.protocol.client import RoomKeys

        sock = self.sock
        sock.settimeout(0.3)
        deadline = time.monotonic() + timeout
        nonce = int.from_bytes(os.urandom(6), "big")
        hs = C.Initiator(identity=identity, prologue=F.hello_prologue(F.Hello(F.VERSION, "", nonce=nonce)))
        self.keys = RoomKeys()
        cookie = b""
        early: list = []
        state = "hello"

        def send_state() -> None:
            if state == "hello":
                sock.send(
                    F.encode_one(
                        F.padded_hello(version=F.VERSION, nick="", cookie=cookie, nonce=nonce, kx=hs.msg1)
                    )
                )
            elif state == "login":
                sock.send(hs.msg3)
            else:
                sock.send(self.seal([F.Req(1, F.OP_JOIN, ROOM)]))

        send_state()
        while time.monotonic() < deadline:
            try:
                data = sock.recv(2048)
            except TimeoutError:
                send_state()
                continue
            if C.is_sealed(data):
                if hs.channel is None:
                    continue
                try:
                    payload = hs.channel.open_room(data, self.keys) if data[1] == 2 else hs.channel.open(data)
                except C.CryptoError:
                    continue
                frames = F.decode(payload)
            else:
                frames = F.decode(data)
            for fr in frames:
                tp = type(fr)
                if tp is F.Retry and state == "hello":
                    cookie = fr.cookie
                    send_state()
                elif tp is F.Welcome and state == "hello" and fr.nonce == nonce:
                    hs.finish(fr.kx, F.encode_one(F.Login(self.nick)))
                    self.channel = hs.channel
                    state = "login"
                    send_state()
                elif tp is F.LoggedIn and state == "login":
                    state = "join"
                    send_state()
                elif tp is F.RoomKey:
                    self.keys.add(fr.room, fr.kid, fr.key)
                elif tp is F.Batch and fr.room == ROOM:
                    early.append((fr.seq, len(fr.events)))
                elif tp is F.Joined and fr.room == ROOM:
                    self.rx = RecvStream(fr.base)
                    for seq, n in early:
                        self.offer(seq, n)
                    self.count = 0
                    sock.setblocking(False)
                    self.last_sent = time.monotonic()
                    return
        raise RuntimeError(f"{self.nick}: no join within {timeout} s")

    def seal(self, frames) -> bytes:
        from udproom.protocol import frames as F

        return self.channel.seal(F.encode(frames))

    def open(self, data: bytes) -> tuple[bytes, bool]:
        """(payload, is a room datagram); CryptoError if it does not open."""
        if data[:2] == ROOM_PREFIX:
            return self.channel.open_room(data, self.keys), True
        return self.channel.open(data), False

    def offer(self, seq: int, n: int) -> tuple[int, bool]:
        """Take events seq..seq+n-1; returns (new events, urgent ack?)."""
        rx = self.rx
        new = rx.offer_run(seq, n)
        if new == 0:
            self.dups += 1
            return 0, True
        return new, bool(rx.buffer)  # a gap

    def skip_to(self, first: int) -> None:
        self.rx.skip_to(first)
        self.rx.pop_ready()

    def want_ack(self, now: float, urgent: bool) -> None:
        self.acks.want(ROOM, self.rx, now, urgent)

    def ack_frames(self, now: float) -> list:
        out: list = []
        for name, cum, sack, missing in self.acks.take(now, NACK_PACE, lambda _name: (self.rx, 0)):
            out.append(F.Ack(name, cum, sack))
            if missing:
                out.append(F.Nack(name, missing))
        return out


def members_udproom(args: argparse.Namespace) -> None:
    from udproom.protocol import frames as F
    from udproom.protocol.client import ACK_EVERY
    from udproom.protocol.reliability import Timing

    if args.ack_every:  # experiment: what a different ClientSession.ACK_EVERY would cost the relay
        ACK_EVERY = args.ack_every

    timing = Timing()
    ack_delay = timing.ack_delay
    keepalive = timing.keepalive
    lean_decode = _lean_decoder()
    full_decode = F.decode
    from udproom.protocol.crypto import CryptoError, Identity

    identity = Identity.generate()  # (one key for this process's members: each proves it once)
    members = []
    for i in range(args.count):
        m = LeanMember(member_socket(args.port), f"m{args.first + i:03d}", ack_delay, ACK_EVERY)
        m.handshake(identity)
        members.append(m)
    emit("ready", {"members": len(members)})
    ctl = Control()
    _t_go, t0, t1 = ctl.wait_go(time.monotonic() + args.max_seconds)
    latency = args.mode == "latency"
    lat_ns = array("q")
    app_ns = array("q")
    sel = selectors.EpollSelector()
    for m in members:
        sel.register(m.sock, selectors.EVENT_READ, m)
        if latency:
            enable_timestamps(m.sock)
    pending: dict[LeanMember, None] = dict.fromkeys(members)  # owe an ack
    counted_at_t0 = None
    end = t1 + 0.3
    errors = 0
    next_keepalive = time.monotonic() + 1.0
    while True:
        now = time.monotonic()
        if now >= t0 and counted_at_t0 is None:
            counted_at_t0 = sum(m.count for m in members)
        if now >= end:
            break
        wait = 0.01
        if pending:
            soonest = min(m.acks.next_at(now) or now for m in pending)
            wait = max(0.0, min(wait, soonest - now))
        ready = sel.select(wait)
        now = time.monotonic()
        in_window = t0 <= now < t1
        for key, _ in ready:
            m = key.data
            recv = m.sock.recv
            recvmsg = m.sock.recvmsg
            for _ in range(64):
                try:
                    if latency:
                        data, anc, _flags, _addr = recvmsg(2048, 64)
                        k_ns = kernel_ns(anc)
                    else:
                        data = recv(2048)
                except BlockingIOError:
                    break
                except OSError:
                    errors += 1
                    break
                try:
                    data, room_dgram = m.open(data)
                except CryptoError:
                    errors += 1
                    continue
                b = None
                if not latency and room_dgram:
                    try:
                        b = lean_decode(data)[0]
                    except msgspec.ValidationError:
                        b = None  # the full decode below
                if b is not None:
                    new, urgent = m.offer(b.seq, len(b.events))
                else:
                    try:
                        frames = full_decode(data)
                    except F.FrameError:
                        errors += 1
                        continue
                    new, urgent = 0, False
                    for fr in frames:
                        tp = type(fr)
                        if tp is F.Batch and fr.room == ROOM:
                            if latency:
                                before = m.rx.cum
                                buf_before = set(m.rx.buffer)
                            n, u = m.offer(fr.seq, len(fr.events))
                            new += n
                            urgent |= u
                            if latency and n and in_window:
                                t_ns = time.time_ns()
                                for i, ev in enumerate(fr.events):
                                    s = fr.seq + i
                                    if (
                                        s > before
                                        and s not in buf_before
                                        and ev.kind == F.EV_MSG
                                        and ev.text.startswith("L")
                                    ):
                                        sent = int(ev.text[1:].split(" ", 1)[0])
                                        lat_ns.append(k_ns - sent)
                                        app_ns.append(t_ns - sent)
                        elif tp is F.Gone:
                            m.skip_to(fr.first)
                            urgent = True
                        elif tp is F.RoomKey:
                            m.keys.add(fr.room, fr.kid, fr.key)
                        elif tp in (F.Bye, F.Reset):
                            errors += 1
                m.count += new
                if urgent or new:
                    m.want_ack(now, urgent)
                    pending[m] = None
        if pending:
            done = [m for m in pending if m.acks.due(now)]
            for m in done:
                del pending[m]
                try:
                    m.sock.send(m.seal(m.ack_frames(now)))
                    m.last_sent = now
                except OSError:
                    errors += 1
        if now >= next_keepalive:
            next_keepalive = now + 1.0
            for m in members:
                if now - m.last_sent >= keepalive:
                    try:
                        m.sock.send(m.seal([F.Ping(1)]))
                        m.last_sent = now
                    except OSError:
                        errors += 1
    total = sum(m.count for m in members)
    in_window_count = total - (counted_at_t0 if counted_at_t0 is not None else total)
    write_latencies(args.lat_file, lat_ns, app_ns)
    emit(
        "result",
        {
            "deliveries": in_window_count,
            "total": total,
            "errors": errors,
            "dups": sum(m.dups for m in members),
            "latencies": len(lat_ns),
        },
    )
    for m in members:  # say goodbye so the relay does not time them out
        try:
            m.sock.send(m.seal([F.Bye("bench done")]))
        except OSError:
            pass
        m.sock.close()


# =============================================================================== naive members


def register_naive(sock: socket.socket, timeout: float = 5.0) -> None:
    sock.settimeout(0.3)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.send(b"JOIN")
        try:
            if sock.recv(2048) == b"OK":
                sock.setblocking(False)
                return
        except TimeoutError:
            continue
    raise RuntimeError("the naive relay did not register us")


def members_naive(args: argparse.Namespace) -> None:
    socks = []
    for _ in range(args.count):
        s = member_socket(args.port)
        register_naive(s)
        socks.append(s)
    emit("ready", {"members": len(socks)})
    ctl = Control()
    _t_go, t0, t1 = ctl.wait_go(time.monotonic() + args.max_seconds)
    latency = args.mode == "latency"
    lat_ns = array("q")
    app_ns = array("q")
    sel = selectors.EpollSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ, s)
        if latency:
            enable_timestamps(s)
    count = 0
    at_t0 = None
    end = t1 + 0.3
    while True:
        now = time.monotonic()
        if now >= t0 and at_t0 is None:
            at_t0 = count
        if now >= end:
            break
        ready = sel.select(0.01)
        in_window = t0 <= time.monotonic() < t1
        for key, _ in ready:
            recv = key.data.recv
            recvmsg = key.data.recvmsg
            for _ in range(64):
                try:
                    if latency:
                        data, anc, _flags, _addr = recvmsg(2048, 64)
                    else:
                        data = recv(2048)
                except BlockingIOError:
                    break
                count += 1
                if latency and in_window and data[:1] == b"L":
                    sent = int(data[1 : data.index(b" ")])
                    lat_ns.append(kernel_ns(anc) - sent)
                    app_ns.append(time.time_ns() - sent)
    write_latencies(args.lat_file, lat_ns, app_ns)
    emit(
        "result",
        {
            "deliveries": count - (at_t0 if at_t0 is not None else count),
            "total": count,
            "latencies": len(lat_ns),
        },
    )
    for s in socks:
        s.close()


# =============================================================================== senders


def senders_udproom(args: argparse.Namespace) -> None:
    """Real ClientSession cores (window, cseq, retransmits, acks), one socket each."""
    from udproom.protocol import events as E
    from udproom.protocol.client import ClientSession

    relay = (HOST, args.port)
    cores = []
    sel = selectors.EpollSelector()
    now = time.monotonic()
    for i in range(args.count):
        core = ClientSession(f"s{args.first + i:03d}")
        sock = member_socket(args.port)
        sock.setblocking(False)
        core.connect(relay, now)
        core.join(ROOM, now)
        cores.append([core, sock, 0, 0, 0])  # core, sock, posted, acked, delivered
        sel.register(sock, selectors.EVENT_READ, core)

    def pump(now: float) -> None:
        for c in cores:
            core = c[0]
            while (ev := core.next_event()) is not None:
                tp = type(ev)
                if tp is E.MessageReceived:
                    if not ev.history:
                        c[4] += 1
                elif tp is E.PostAcknowledged:
                    c[3] += 1
            at = core.get_timer()
            if at is not None and at <= now:
                core.handle_timer(now)
            for data, _ in core.datagrams_to_send(now):
                try:
                    c[1].send(data)
                except OSError:
                    pass

    def receive(timeout: float) -> float:
        ready = sel.select(timeout)
        now = time.monotonic()
        for key, _ in ready:
            core = key.data
            recv = key.fileobj.recv
            for _ in range(64):
                try:
                    data = recv(2048)
                except BlockingIOError:
                    break
                except OSError:
                    break
                core.receive_datagram(data, relay, now)
        return now

    deadline = time.monotonic() + 10
    while not all(c[0].connected and c[0].rooms[ROOM].ready for c in cores):
        if time.monotonic() > deadline:
            raise RuntimeError("senders could not join")
        pump(time.monotonic())
        receive(0.005)
    emit("ready", {"senders": len(cores)})
    ctl = Control()
    t_go, t0, t1 = ctl.wait_go(time.monotonic() + args.max_seconds)
    latency = args.mode == "latency"
    text = chat_text("", args.text_bytes)
    window = args.window
    interval = len(cores) / args.rate if latency else 0.0
    next_post = [t_go + i * interval / len(cores) for i in range(len(cores))]
    delivered_t0 = posted_t0 = acked_t0 = None
    end = t1 + 0.3
    now = time.monotonic()
    while now < end:
        if now >= t0 and delivered_t0 is None:
            delivered_t0 = sum(c[4] for c in cores)
            acked_t0 = sum(c[3] for c in cores)
            posted_t0 = sum(c[2] for c in cores)
        if t_go <= now < t1:
            for i, c in enumerate(cores):
                core = c[0]
                if latency:
                    while next_post[i] <= now:
                        core.post(ROOM, chat_text(f"L{time.time_ns()} ", args.text_bytes), now)
                        c[2] += 1
                        next_post[i] += interval
                else:
                    n = c[2]
                    # keep the outbox fed: ClientSession itself caps what is in flight (256)
                    while n - c[3] < window + 256:
                        core.post(ROOM, f"{i:02d}:{n:09d} " + text[13:], now)
                        n += 1
                    c[2] = n
        pump(now)
        timeout = 0.002
        if latency and now < t1:
            timeout = max(0.0, min(min(next_post) - now, timeout))
        now = receive(timeout)
    total_d = sum(c[4] for c in cores)
    res = {
        "deliveries": total_d - (delivered_t0 or total_d),
        "acked_in_window": sum(c[3] for c in cores) - (acked_t0 or 0),
        "posted": sum(c[2] for c in cores),
        "acked": sum(c[3] for c in cores),
        "retransmits": sum(c[0].stats["retransmits"] for c in cores),
        "posted_t0": posted_t0,
    }
    emit("result", res)
    now = time.monotonic()
    for c in cores:
        c[0].close(now)
    pump(now)


def senders_naive(args: argparse.Namespace) -> None:
    """Raw datagrams of the same chat text. Each sender is a member too (it gets its own echo),
    and keeps at most `window` of its messages unechoed, like a ClientSession's in-flight window;
    a window that sees no echo for 0.5 s counts what is outstanding as lost and reopens."""
    socks = []
    for _ in range(args.count):
        s = member_socket(args.port)
        register_naive(s)
        socks.append(s)
    emit("ready", {"senders": len(socks)})
    ctl = Control()
    t_go, t0, t1 = ctl.wait_go(time.monotonic() + args.max_seconds)
    latency = args.mode == "latency"
    text = chat_text("", args.text_bytes).encode()
    sel = selectors.EpollSelector()
    state = []
    for i, s in enumerate(socks):
        st = {
            "i": i,
            "sock": s,
            "sent": 0,
            "out": 0,
            "echo_at": t_go,
            "delivered": 0,
            "lost": 0,
            "tag": f"{i:02d}:".encode(),
        }
        state.append(st)
        sel.register(s, selectors.EVENT_READ, st)
    interval = len(socks) / args.rate if latency else 0.0
    next_post = [t_go + i * interval / len(socks) for i in range(len(socks))]
    window = args.window
    d_t0 = None
    end = t1 + 0.3
    now = time.monotonic()
    while now < end:
        if now >= t0 and d_t0 is None:
            d_t0 = sum(st["delivered"] for st in state)
        if t_go <= now < t1:
            for st in state:
                s = st["sock"]
                if latency:
                    i = st["i"]
                    while next_post[i] <= now:
                        s.send(chat_text(f"L{time.time_ns()} ", args.text_bytes).encode())
                        st["sent"] += 1
                        next_post[i] += interval
                    continue
                if st["out"] and now - st["echo_at"] > 0.5:
                    st["lost"] += st["out"]
                    st["out"] = 0
                    st["echo_at"] = now
                tag = st["tag"]
                n = st["sent"]
                while st["out"] < window:
                    try:
                        s.send(tag + b"%09d " % n + text[13:])
                    except BlockingIOError:
                        break
                    n += 1
                    st["out"] += 1
                st["sent"] = n
        timeout = 0.002
        if latency and now < t1:
            timeout = max(0.0, min(min(next_post) - now, timeout))
        ready = sel.select(timeout)
        now = time.monotonic()
        for key, _ in ready:
            st = key.data
            recv = st["sock"].recv
            tag = st["tag"]
            for _ in range(64):
                try:
                    data = recv(2048)
                except BlockingIOError:
                    break
                st["delivered"] += 1
                if data[:3] == tag:
                    st["echo_at"] = now
                    if st["out"]:
                        st["out"] -= 1
    total = sum(st["delivered"] for st in state)
    emit(
        "result",
        {
            "deliveries": total - (d_t0 if d_t0 is not None else total),
            "posted": sum(st["sent"] for st in state),
            "lost_window": sum(st["lost"] for st in state),
        },
    )


# =============================================================================== main


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument(
        "role",
        choices=[
            "relay-udproom",
            "relay-naive",
            "members-udproom",
            "members-naive",
            "senders-udproom",
            "senders-naive",
        ],
    )
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--first", type=int, default=0, help="index of the first member (for nicks)")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--mode", choices=["throughput", "latency"], default="throughput")
    p.add_argument("--rate", type=float, default=1000.0, help="latency mode: messages/s in all")
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--text-bytes", type=int, default=80)
    p.add_argument("--lat-file")
    p.add_argument("--ack-every", type=int, default=0, help="members-udproom: override ACK_EVERY")
    p.add_argument("--uvloop", action="store_true", help="relay-naive: uvloop instead of blocking")
    p.add_argument("--profile", help="relay-udproom: write cProfile stats here")
    p.add_argument("--data", help="relay-udproom: keep the room log in SQLite under this directory")
    p.add_argument("--fsync", action="store_true", help="relay-udproom --data: synchronous=FULL")
    p.add_argument("--cluster", help="relay-udproom: the room log on NATS JetStream at this URL")
    p.add_argument("--cluster-prefix", default="udproom", help="relay-udproom --cluster: stream names")
    p.add_argument("--reuse-port", action="store_true", help="relay-udproom: SO_REUSEPORT (a worker)")
    p.add_argument("--max-seconds", type=float, default=150.0)
    args = p.parse_args()
    fn = {
        "relay-udproom": relay_udproom,
        "relay-naive": relay_naive,
        "members-udproom": members_udproom,
        "members-naive": members_naive,
        "senders-udproom": senders_udproom,
        "senders-naive": senders_naive,
    }[args.role]
    try:
        fn(args)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
