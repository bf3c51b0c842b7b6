"""The cluster's home on NATS JetStream (issue 12): the room log as streams, nicks and room settings
in key-value buckets. See docs/cluster.md for the design and what the relay does with it.

- `NatsLink(servers)`: one nats-py connection on its own thread and asyncio loop. The relay's UDP
  loop never runs nats-py code: it hands work over (`submit`) and is told when it is done; the
  synchronous calls (`call`) block their caller with a bounded timeout and are meant for start-up,
  tests and tools: on a relay (`nonblocking`) the log and the nicks raise roomlog.Pending instead
  and answer once the round trip is done (`_Ops`).
- `JetStreamLog(link)`: a `RoomLog`. One stream per room, so the stream sequence IS the room
  sequence (contiguous, gap-free). `begin_commit()` publishes the group asynchronously with
  `Nats-Msg-Id` = the message id (JetStream's duplicate window dedupes a resend, also one made to
  another relay) and `Nats-Expected-Last-Sequence` = the number before (two relays cannot give one
  number twice: the loser's publish fails, nothing is stored twice or out of order); the returned
  `Commit` completes when JetStream has acknowledged. Retention is the stream's limits.
- `ClusterNames(link)`: nick uniqueness across relays (create-if-absent, delete by revision).
- `RoomSettings(link)`: per-room settings (the topic among them) with compare-and-set.

Only this module imports nats-py (the `cluster` extra).

One module over 600 lines because it is one adapter: the NATS link (its own thread and loop),
the room log on it and the two KV helpers share the connection, its error wording and the
async-to-sync bridge; split, each part would re-import the same private plumbing.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import hashlib
import itertools
import json
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from . import frames as F
from .names import nick_key, nick_keys
from .roomlog import (
    DAY,
    KEEP_DAYS,
    KEEP_EVENTS,
    MID_WINDOW,
    Commit,
    Pending,
    RoomLog,
    StoreError,
    _Mids,
    _new_epoch,
)

log = logging.getLogger("udproom.cluster")

__all__ = ["ClusterNames", "ClusterNicks", "JetStreamLog", "NatsLink", "RoomSettings"]

DUPLICATE_WINDOW = 120.0  # seconds: JetStream's default; a failed-over client resends well within it
READ_BATCH = 500  # events per batched direct get
_PRESENCE_KINDS = (F.EV_JOIN, F.EV_LEAVE, F.EV_TIMEOUT, F.EV_NICK, F.EV_AWAY)  # (who is in a room)
#: direct messages waiting for their recipients, kept in the cluster (ClusterNicks): all of them
#: together, what one relay remembers it kept, and how many one failed-over member's read brings
DMS_MAX_BYTES = 64 * 1024 * 1024
MAX_KEPT_DMS = 65_536
MAX_KEPT_READ = 1024
# JetStream API error codes (nats-server's errors.json)
ERR_WRONG_LAST_SEQUENCE = 10071
ERR_STREAM_NOT_FOUND = 10059
ERR_STREAM_NAME_IN_USE = 10058
#: round trips started for a relay's loop and not yet taken (`_Ops`): beyond, a request is refused
MAX_OPS = 4096
#: seconds a finished round trip's result waits for the request that started it to come back for it
RESULT_KEEP = 30.0


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def redact(url: str) -> str:
    """A server URL as it may be shown or logged: without a user and password."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url.rpartition("@")[2]
    return f"{scheme}://{rest.rpartition('@')[2]}"


def room_token(room: str) -> str:
    """A room name as a NATS token (subjects and stream names allow few characters; room names are
    any text): the first 40 hex digits of its SHA-256. The name itself travels in the stream's
    description and metadata."""
    return hashlib.sha256(room.encode("utf-8", "surrogatepass")).hexdigest()[:40]


class PublishError(Exception):
    def __init__(self, err_code: int, description: str) -> None:
        super().__init__(description)
        self.err_code = err_code


class NatsLink:
    """One NATS connection on its own thread and loop. `close()` ends both."""

    def __init__(
        self,
        servers: str | list[str],
        name: str = "udproom-relay",
        timeout: float = 5.0,
        reconnect_wait: float = 0.25,
    ) -> None:
        import nats

        self.servers = [servers] if isinstance(servers, str) else list(servers)
        self.timeout = timeout
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="udproom-nats", daemon=True)
        self._thread.start()

        self.last_error = ""
        #: coroutines functions run on the link's loop after every reconnect (followers resubscribe)
        self.on_reconnect: list[Callable[[], Coroutine[Any, Any, Any]]] = []

        async def reconnected() -> None:
            for fn in list(self.on_reconnect):
                try:
                    await fn()
                except Exception as exc:  # (logged as the link's last error; the next reconnect retries)
                    self.last_error = _one_line(exc)

        async def quiet(exc: BaseException) -> None:  # nats-py logs every reconnect failure otherwise
            self.last_error = _one_line(exc)

        async def connect() -> Any:
            nc = await nats.connect(
                servers=self.servers,
                name=name,
                connect_timeout=2,
                reconnect_time_wait=reconnect_wait,
                max_reconnect_attempts=2,  # at start: a few tries per server, then a clear error
                allow_reconnect=True,
                error_cb=quiet,
                reconnected_cb=reconnected,
            )
            nc.options["max_reconnect_attempts"] = -1  # once up: reconnect for as long as it takes
            return nc

        try:
            self.nc = self.call(connect(), timeout)
        except StoreError as exc:
            self._stop_loop()
            why = self.last_error or str(exc)
            where = ",".join(redact(s) for s in self.servers)
            raise StoreError(f"cannot reach the cluster at {where}: {why}") from None
        self.js = self.nc.jetstream(timeout=timeout)
        self._acks: dict[str, asyncio.Future] | None = None
        self._ack_prefix = ""
        self._ack_ids = itertools.count(1)

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> asyncio.Future:
        """Publish to JetStream without waiting: the future gets the ack as (seq, duplicate), or a
        PublishError. Published in call order on the one connection. (nats-py's own publish_async
        never completes a future whose ack is an API error — its reply handler raises — so a
        refused publish would only time out.)"""
        if self._acks is None:
            self._acks = {}
            self._ack_prefix = f"{self.nc.new_inbox()}."
            await self.nc.subscribe(self._ack_prefix + "*", cb=self._on_ack)
        token = f"{next(self._ack_ids)}"
        fut: asyncio.Future = self.loop.create_future()
        self._acks[token] = fut
        fut.add_done_callback(lambda _f: self._acks.pop(token, None))  # type: ignore[union-attr]
        await self.nc.publish(subject, payload, reply=self._ack_prefix + token, headers=headers)
        return fut

    async def _on_ack(self, msg: Any) -> None:
        fut = (self._acks or {}).get(msg.subject[len(self._ack_prefix) :])
        if fut is None or fut.done():
            return
        status = (msg.headers or {}).get("Status")
        if status is not None and not msg.data:  # 503: no stream listens on the subject
            fut.set_exception(PublishError(0, f"no stream answered (status {status})"))
            return
        try:
            resp = json.loads(msg.data)
            err = resp.get("error")
            if err is not None:
                fut.set_exception(PublishError(int(err.get("err_code", 0)), str(err.get("description"))))
            else:
                fut.set_result((int(resp["seq"]), bool(resp.get("duplicate", False))))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            fut.set_exception(PublishError(0, f"unreadable ack: {exc}"))

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future:
        """Run `coro` on the link's loop; returns at once."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
        """Run `coro` on the link's loop and wait (bounded) for it; any failure is a StoreError."""
        fut = self.submit(coro)
        try:
            return fut.result(self.timeout if timeout is None else timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise StoreError("the cluster did not answer in time") from None
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"the cluster: {_one_line(exc)}") from None

    def close(self) -> None:
        if self.loop.is_closed():
            return
        if self._thread.is_alive():
            try:
                self.call(self.nc.close(), 5.0)
            except (StoreError, AttributeError):
                pass
        self._stop_loop()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10.0)
        if not self._thread.is_alive():
            self.loop.close()


class _Ops:
    """Round trips started for the relay's UDP loop without waiting for them (docs/cluster.md "The
    NATS client and the UDP loop"). `get(key, start)` returns the result of the round trip under
    `key` once it is there (and forgets it: a result is used once), and otherwise starts it (if it
    is not on its way already) and raises `Pending(key)`; when it completes, `key` is reported by
    `completed()` and the link's owner is woken (`wakeup`), so the caller asks again. A failure is
    the StoreError `link.call` would have raised. Bounded: at most MAX_OPS round trips on their
    way or waiting to be taken, and a result nobody came back for within RESULT_KEEP seconds is
    dropped (`on_expire(key, value)` undoes what it holds: a subscription, a nick claim)."""

    def __init__(self, link: NatsLink, timeout: float) -> None:
        self.link = link
        self.timeout = timeout
        self.wakeup: Callable[[], None] | None = None
        self.on_expire: Callable[[Any, Any], None] | None = None
        self._ops: dict[Any, concurrent.futures.Future] = {}
        self._finished: dict[Any, float] = {}  # key -> when it completed (under the lock)
        self._done: list[Any] = []
        self._lock = threading.Lock()

    def get(self, key: Any, start: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        """The result under `key` (used once), or Pending."""
        fut = self._ops.get(key)
        if fut is None:
            self._sweep()
            if len(self._ops) >= MAX_OPS:
                raise StoreError("the relay is waiting on its cluster for too many requests; try again")
            if not self.link.connected:
                raise StoreError("the cluster is not reachable (reconnecting)")
            fut = self._ops[key] = self.link.submit(asyncio.wait_for(start(), self.timeout))
            fut.add_done_callback(lambda _f: self._complete(key))
            raise Pending(key)
        if not fut.done():
            raise Pending(key)
        del self._ops[key]
        with self._lock:
            self._finished.pop(key, None)
        try:
            return fut.result()
        except (TimeoutError, concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
            raise StoreError("the cluster did not answer in time") from None
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"the cluster: {_one_line(exc)}") from None

    def _complete(self, key: Any) -> None:  # (the NATS thread)
        with self._lock:
            self._finished[key] = time.monotonic()
            self._done.append(key)
        fn = self.wakeup
        if fn is not None:
            fn()

    def completed(self) -> list[Any]:
        """The keys whose round trip completed since the last call (and answers kept too long are
        dropped: the relay calls this at every turn of its loop)."""
        with self._lock:
            out, self._done = self._done, []
        if self._finished:
            self._sweep()
        return out

    def _sweep(self) -> None:
        cut = time.monotonic() - RESULT_KEEP
        with self._lock:
            old = [k for k, at in self._finished.items() if at < cut]
            for key in old:
                del self._finished[key]
        for key in old:
            fut = self._ops.pop(key, None)
            if fut is not None and self.on_expire is not None and not fut.cancelled() and not fut.exception():
                self.on_expire(key, fut.result())

    def __len__(self) -> int:
        return len(self._ops)


class _JRoom:
    __slots__ = ("first", "last", "stream", "subject", "topic")

    def __init__(self, stream: str, subject: str) -> None:
        self.stream = stream
        self.subject = subject
        self.first = 1
        self.last = 0
        self.topic: str | None = None  # None: never set (an empty topic set is a room's too)


class JetStreamLog(RoomLog):
    """The room log on JetStream: stream `<prefix>-room-<token>` per room, subject
    `<prefix>.room.<token>`, the event (frames.encode_ev) as the payload.

    Several JetStreamLogs (relays) may share the streams. Each keeps the rooms' last/first
    sequences it knows; a publish based on a stale number fails (expected last sequence), and that
    commit's completion carries the stream's real state, so the next append numbers right.

    Deliberate differences from SqliteLog (docs/cluster.md, and the contract tests say which):
    - a group is durable all-or-nothing per room, not across rooms (a stream per room);
    - retention is JetStream's own (max age, max messages per stream), enforced by the server on
      its clock: `expire()` only reports what the server has cut, it deletes nothing itself.
    """

    def __init__(
        self,
        link: NatsLink,
        prefix: str = "udproom",
        keep_days: float | None = KEEP_DAYS,
        keep_events: int | None = KEEP_EVENTS,
        mid_window: int = MID_WINDOW,
        replicas: int = 1,
        duplicate_window: float = DUPLICATE_WINDOW,
        commit_timeout: float = 5.0,
    ) -> None:
        super().__init__(keep_days, keep_events, mid_window)
        self.link = link
        self.prefix = prefix
        self.replicas = replicas
        self.duplicate_window = duplicate_window
        self.commit_timeout = commit_timeout
        #: number events by the stream (publish without an expected last sequence, take the number
        #: from the ack: Commit.numbers) instead of by this log. A relay that follows its rooms does:
        #: relays posting to one room at once then never refuse each other's posts (docs/cluster.md)
        self.stream_numbers = False
        self._rooms: dict[str, _JRoom] = {}
        # groups published and not yet settled: appends continue their numbers
        # (handle, group, topics, {room: (last, first)} the stream holds, filled in after a failure)
        self._inflight: deque[tuple[Commit, list, dict[str, str], dict[str, tuple[int, int]]]] = deque()
        self._inflight_last: dict[str, int] = {}
        self._inflight_mids: dict[tuple[str, int], int] = {}
        self._known_streams: set[str] = set()
        self._expired: dict[str, int] = {}
        self._refresh: concurrent.futures.Future | None = None
        self.settings = RoomSettings(link, prefix, replicas)  # (an R1 bucket dies with its node)
        # following rooms (the relay's feed): touched on the NATS thread, handed over under a lock
        self._subs: dict[str, Any] = {}  # room -> (subscribe, its push consumer) (NATS thread)
        self._fed: dict[str, int] = {}  # room -> last sequence handed over (NATS thread)
        self._feed: list[tuple[str, int, bytes]] = []
        self._feed_lock = threading.Lock()
        self._woken = False
        self._wakeup: Callable[[], None] | None = None
        self._records_kv: Any = None  # the records' bucket, once they are first read
        self._records_watch: Any = None  # its watching task on the NATS loop, and the watcher
        self._records_watcher: Any = None
        #: never block the caller on a round trip: follow, read, and record writes start it and
        #: raise roomlog.Pending until its result is there (`completed()` says when). The relay
        #: sets it (docs/cluster.md "The NATS client and the UDP loop"); tools and tests block.
        self.nonblocking = False
        self._ops = _Ops(link, link.timeout)
        self._ops.on_expire = self._op_expired
        self._following: set[str] = set()  # rooms followed through `_ops` (the caller's thread)
        self._presence: dict[str, list[F.Ev]] = {}  # room -> presence events `follow` read
        self.epoch = self._started(link)
        link.on_reconnect.append(self._resubscribe)

    # ------------------------------------------------------------------ records (the cluster's)

    # The relay's records (registered nicks, room rules, bans, passphrase-room verifiers: the
    # RoomLog's `record`/`put_record`) live in bucket `<prefix>-records`, one KV key per record
    # (base64url of its name: KV keys allow few characters). Every relay reads them all once and
    # then keeps them current with a watcher on the NATS thread, so a ban or a registration made
    # through one relay holds at every relay at once, and after restarts. A write waits for the
    # server (bounded; StoreError otherwise), as SqliteLog's does for the disk.

    def _load_records(self) -> Iterable[tuple[str, bytes]]:
        return self.link.call(self._records_start())

    async def _records_start(self) -> list[tuple[str, bytes]]:
        from nats.js.errors import NoKeysError

        kv = self._records_kv = await _bucket(self.link.js, f"{self.prefix}-records", self.replicas)
        out = []
        try:
            keys = await kv.keys()
        except NoKeysError:
            keys = []
        for token in keys:
            name = _record_name(token)
            if name is not None:
                out.append((name, bytes((await kv.get(token)).value or b"")))
        self._records_watch = asyncio.ensure_future(self._watch_records(kv))
        return out

    async def _watch_records(self, kv: Any) -> None:
        """Other relays' writes, into the cache (a dict: one item set or popped at a time)."""
        try:
            watcher = self._records_watcher = await kv.watchall(include_history=False)
            async for entry in watcher:
                if entry is None:
                    continue  # (the end of the initial values)
                name = _record_name(entry.key)
                cache = self.__dict__.get("_record_cache")
                if name is None or cache is None:
                    continue
                if entry.operation in ("DEL", "PURGE"):
                    cache.pop(name, None)
                else:
                    cache[name] = bytes(entry.value or b"")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the link reconnects; a restart reads them all again
            log.warning("the cluster's records are no longer watched: %s", _one_line(exc))

    async def _stop_records(self) -> None:
        watcher, self._records_watcher = self._records_watcher, None
        if watcher is not None:
            with contextlib.suppress(Exception):
                await watcher.stop()
        self._records_watch.cancel()

    def _write_record(self, key: str, value: bytes | None) -> None:
        self._records()  # (the bucket, and the watcher, exist from here on)
        token = _record_token(key)
        if self.nonblocking:  # (Pending until the server has it; the same write asked again takes it)
            kv = self._records_kv
            write = (lambda: kv.delete(token)) if value is None else (lambda: kv.put(token, value))
            self._ops.get(("record", key, value), write)
            return
        if value is None:
            self.link.call(self._records_kv.delete(token))
        else:
            self.link.call(self._records_kv.put(token, value))

    # ------------------------------------------------------------------ start

    def _started(self, link: NatsLink, patience: float = 30.0) -> int:
        """`_start`, tried again (bounded) while a server answers but JetStream does not yet: a
        cluster that just elected its meta leader, or lost a node, is still placing streams and
        buckets ("no response from stream"). No server at all fails at once (one line)."""
        deadline = time.monotonic() + patience
        while True:
            try:
                return link.call(self._start())
            except StoreError:
                if not link.connected or time.monotonic() >= deadline:
                    raise
            time.sleep(0.2)  # a bounded wait for the cluster's election, at start only

    async def _start(self) -> int:
        js = self.link.js
        meta = await _bucket(js, f"{self.prefix}-meta", replicas=self.replicas)
        epoch = _new_epoch()
        try:  # the first relay of a cluster names the history; the others read it
            await meta.create("epoch", str(epoch).encode())
        except _wrong_last():
            epoch = int((await meta.get("epoch")).value)
        for info in await _all_streams(js):
            cfg = info.config
            md = cfg.metadata or {}
            if not (cfg.name or "").startswith(f"{self.prefix}-room-") or "room" not in md:
                continue
            room = md["room"]
            self._known_streams.add(cfg.name)
            r = self._rooms[room] = self._jroom(room)
            r.last, r.first = _state(info.state)
        for room, settings in (await self.settings._all()).items():
            r = self._rooms.get(room) or self._rooms.setdefault(room, self._jroom(room))
            if "topic" in settings:
                r.topic = str(settings["topic"])
        return epoch

    def _jroom(self, room: str) -> _JRoom:
        token = room_token(room)
        return _JRoom(f"{self.prefix}-room-{token}", f"{self.prefix}.room.{token}")

    def _stream_config(self, room: str, r: _JRoom) -> Any:
        from nats.js import api

        return api.StreamConfig(
            name=r.stream,
            description=f"udproom room {room}"[:1000],
            metadata={"room": room},
            subjects=[r.subject],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            discard=api.DiscardPolicy.OLD,
            max_msgs=self.keep_events if self.keep_events is not None else -1,
            max_age=self.keep_days * DAY if self.keep_days is not None else 0,
            # JetStream requires the duplicate window to fit in the max age
            duplicate_window=min(self.duplicate_window, self.keep_days * DAY)
            if self.keep_days is not None
            else self.duplicate_window,
            num_replicas=self.replicas,
            allow_direct=True,
        )

    # ------------------------------------------------------------------ writing

    def append(self, room: str, ev: F.Ev) -> int:
        self._settle()
        if room not in self._group_last and room in self._inflight_last:
            # continue the numbers in flight, or what the feed showed other relays stored since
            self._group_last[room] = max(self._inflight_last[room], self._last_committed(room))
        return super().append(room, ev)

    def commit(self) -> None:
        """Commit and wait (bounded): for tools and tests. The relay uses begin_commit()."""
        handle = self.begin_commit()
        if not handle.wait(self.commit_timeout + 5.0):
            raise StoreError("the cluster did not answer in time")
        self._settle()
        if handle.error is not None:
            raise StoreError(handle.error)

    def begin_commit(self) -> Commit:
        self._check_open()
        self._settle()
        group, topics = self._group, self._group_topics
        handle = Commit([(room, seq) for room, seq, _ev, _blob in group])
        if not group and not topics:
            handle.finish()
            return handle
        for room, seq, ev, _blob in group:
            self._inflight_last[room] = seq
            if ev.mid:
                self._inflight_mids.setdefault((room, ev.mid), seq)
        self._discard()
        states: dict[str, tuple[int, int]] = {}
        self._inflight.append((handle, group, topics, states))
        if not self.link.connected:  # fail fast: nothing would be acknowledged anyway (and nothing sent)
            handle.finish(
                error="the cluster is not reachable (reconnecting): posts are refused", unsent=handle.events
            )
            return handle
        fut = self.link.submit(self._publish(handle, group, topics, states))
        fut.add_done_callback(lambda f: _finish_on_crash(f, handle))
        return handle

    async def _publish(
        self,
        handle: Commit,
        group: list[tuple[str, int, F.Ev, bytes]],
        topics: dict[str, str],
        states: dict[str, tuple[int, int]],
    ) -> None:
        js = self.link.js
        link = self.link
        rooms = {room: self._rooms.get(room) or self._jroom(room) for room, *_ in group}
        stored: list[tuple[str, int]] = []
        dups: dict[tuple[str, int], int] = {}
        numbers: dict[tuple[str, int], int] = {}
        by_stream = self.stream_numbers
        errors: list[str] = []
        # Sent or not: an event handed to nats-py may be stored even if its ack never comes (nats-py
        # flushes what it buffered when it reconnects), so only what was never handed over is
        # refused for the link; one sent without an answer in time is `unknown`, never refused.
        unsent = list(handle.events)
        unknown: dict[tuple[str, int], F.Ev] = {}
        acks: list[asyncio.Future] = []
        answered = False
        try:
            for room, r in rooms.items():  # a new room's stream (idempotent; another relay may race us)
                if r.stream not in self._known_streams:
                    await self._ensure_stream(room, r)
            for room, seq, ev, blob in group:
                hdrs = {} if by_stream else {"Nats-Expected-Last-Sequence": str(seq - 1)}
                if ev.mid:
                    hdrs["Nats-Msg-Id"] = str(ev.mid)
                if not link.connected:  # (nats-py would buffer it and send it on reconnecting)
                    raise StoreError("the cluster is not reachable (reconnecting): posts are refused")
                acks.append(await link.publish(rooms[room].subject, blob, hdrs))
                unsent.pop(0)
            if acks:
                await asyncio.wait(acks, timeout=self.commit_timeout)
            answered = True
            results: list[Any] = []
            for (room, seq, ev, _blob), ack in zip(group, acks, strict=True):
                if not ack.done():
                    ack.cancel()  # (a late ack is not waited for: the resend's answers)
                    unknown[(room, seq)] = ev
                    results.append(None)
                else:
                    results.append(ack.exception() or ack.result())
            if unknown:
                errors.append("the cluster did not acknowledge in time")
            for (room, seq, _ev, _blob), res in zip(group, results, strict=True):
                if res is None:
                    continue
                if isinstance(res, BaseException):
                    if getattr(res, "err_code", None) == ERR_WRONG_LAST_SEQUENCE:
                        errors.append(f"room {room!r} moved on at another relay")
                    else:
                        errors.append(_one_line(res))
                elif res[1]:  # duplicate: JetStream has it under its first number
                    dups[(room, seq)] = res[0]
                elif res[0] != seq and by_stream:
                    numbers[(room, seq)] = res[0]
                    stored.append((room, seq))
                elif res[0] != seq:  # cannot happen with the expected-last-sequence header
                    errors.append(f"room {room!r}: stored as {res[0]}, not {seq}")
                else:
                    stored.append((room, seq))
            for room, topic in topics.items():
                await self.settings._update(room, lambda s, t=topic: {**s, "topic": t})
        except Exception as exc:
            errors.append(_one_line(exc))
            if not answered:  # (sent before it failed: not known either way)
                for (room, seq, ev, _blob), ack in zip(group, acks, strict=False):
                    ack.cancel()
                    unknown[(room, seq)] = ev
        if errors or dups:  # what the streams really hold now, for the next numbers
            for room, r in rooms.items():
                try:
                    info = await js.stream_info(r.stream)
                    states[room] = _state(info.state)
                except Exception:
                    pass
        error = None
        if errors:
            error = f"the cluster refused the group: {errors[0]}" + (
                f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            )
        handle.finish(
            stored=stored, error=error, duplicates=dups, numbers=numbers, unsent=unsent, unknown=unknown
        )

    async def _ensure_stream(self, room: str, r: _JRoom) -> None:
        from nats.js.errors import BadRequestError

        try:
            await self.link.js.add_stream(self._stream_config(room, r))
        except BadRequestError as exc:
            if exc.err_code != ERR_STREAM_NAME_IN_USE:  # made by a relay with other limits: use it
                raise
        self._known_streams.add(r.stream)

    def _settle(self) -> None:
        """Apply the completed commits, oldest first, on the caller's thread (the only thread that
        touches the log's state)."""
        self._check_open()
        touched: set[str] = set()
        if not (self._inflight and self._inflight[0][0].done()):
            return  # (called on every append: nothing to do is the common case)
        while self._inflight and self._inflight[0][0].done():
            handle, group, topics, states = self._inflight.popleft()
            for room, seq, ev, _blob in group:
                if (room, seq) in handle.stored:
                    seq = handle.numbers.get((room, seq), seq)
                    r = self._rooms.get(room)
                    if r is None:
                        r = self._rooms[room] = self._jroom(room)
                    if r.first > r.last:
                        r.first = seq
                    r.last = max(r.last, seq)
                    w = self._mids.get(room)
                    if w is not None and ev.mid:
                        w.add(seq, ev.mid)
                    touched.add(room)
            if handle.error is None:
                for room, topic in topics.items():
                    self._rooms.setdefault(room, self._jroom(room)).topic = topic
            for room, (last, first) in states.items():
                r = self._rooms.setdefault(room, self._jroom(room))
                r.last, r.first = max(r.last, last), first
                if not self.stream_numbers:  # (a conflict: ids may have been stored elsewhere)
                    self._mids.pop(room, None)  # reload from the stream on next use
            if handle.error is not None or states:
                # numbers handed out after a failure are taken back: later groups in flight on those
                # rooms fail too (their expected last sequence no longer holds)
                for room, *_ in group:
                    self._inflight_last.pop(room, None)
        if not self._inflight:
            self._inflight_last.clear()
            self._inflight_mids.clear()
        else:
            live = {(room, ev.mid) for _h, g, _t, _s in self._inflight for room, _s, ev, _b in g if ev.mid}
            for key in [k for k in self._inflight_mids if k not in live]:
                del self._inflight_mids[key]
        for room in touched:
            w = self._mids.get(room)
            if w is not None:
                w.forget_through(self._rooms[room].last - self.mid_window)

    def _write(self, group: list[tuple[str, int, F.Ev, bytes]], topics: dict[str, str]) -> None:
        raise AssertionError("JetStreamLog commits through begin_commit()")

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait (bounded) for every commit in flight, and settle them (tools, tests)."""
        for handle, *_ in list(self._inflight):
            handle.wait(timeout)
        if self._refresh is not None:
            concurrent.futures.wait([self._refresh], timeout)
        self._settle()

    # ------------------------------------------------------------------ following rooms (the relay's feed)

    #: the relay fans out from `drain()`, not from its appends (docs/cluster.md "How a relay follows")
    follows = True

    def set_wakeup(self, fn: Callable[[], None] | None) -> None:
        """`fn()` is called (on the NATS thread) when the feed gets events while it was empty, when
        a commit completes, and when a round trip a `Pending` waits for completes: a relay on
        asyncio hops back with loop.call_soon_threadsafe."""
        self._wakeup = fn
        self._ops.wakeup = fn

    def completed(self) -> list[Any]:
        """The keys of the `Pending`s raised (nonblocking) whose round trip has completed since the
        last call: ask again, the answer is there."""
        return self._ops.completed()

    def _op_expired(self, key: Any, _value: Any) -> None:
        """A round trip's result that nobody came back for: a room followed for a join that never
        finished is not followed any more."""
        if key[0] == "follow" and key[1] not in self._following:
            self.unfollow(key[1])

    def wake(self) -> None:
        fn = self._wakeup
        if fn is not None:
            fn()

    def follow(self, room: str) -> tuple[int, int, str]:
        """Start following `room`: its stream is made if missing and read (blocks, bounded: once per
        room a relay opens), and every event stored after the last one it holds now, by any relay,
        is then handed over in order by `drain()`. Returns (last, first kept, topic)."""
        self._check_open()
        self._settle()
        if self.nonblocking:  # (Pending until the stream has been read; once read, at once)
            if room in self._following:
                r = self._rooms[room]
                return r.last, r.first, r.topic or ""
            last, first, topic, mids, presence = self._ops.get(("follow", room), lambda: self._follow(room))
            self._following.add(room)
        else:
            last, first, topic, mids, presence = self.link.call(self._follow(room))
        r = self._rooms.setdefault(room, self._jroom(room))
        r.last, r.first = max(r.last, last), max(r.first, first) if r.last else first
        if topic is not None:
            r.topic = topic
        # the message-id window now, so that a post never waits for the stream (the feed keeps it)
        self._mids[room] = _Mids(mids)
        self._presence[room] = presence
        return r.last, r.first, r.topic or ""

    def presence_window(self, room: str) -> list[F.Ev]:
        """The joins, leaves, timeouts, nick changes and aways among the room's last events, as
        `follow` read them (once): with the members bucket (which learns of a member only once its
        join is stored), who is in the room when it is opened."""
        return self._presence.pop(room, [])

    def unfollow(self, room: str) -> None:
        self._following.discard(room)
        if not self._closed and self.link.connected:
            self.link.submit(self._unsubscribe(room))

    def drain(self) -> list[tuple[str, int, bytes]]:
        """The events the followed rooms got since the last call: (room, seq, encoded event), each
        room's in order. The same (room, seq) may come twice (after a reconnect): skip what you have."""
        with self._feed_lock:
            out, self._feed = self._feed, []
            self._woken = False
        return out

    def observe(self, room: str, seq: int, ev: F.Ev) -> None:
        """An event the feed delivered (stored by us or another relay): the next append numbers
        after it, and its message id is known."""
        r = self._rooms.setdefault(room, self._jroom(room))
        if seq <= r.last:
            return
        if r.first > r.last:
            r.first = seq
        r.last = seq
        if ev.kind == F.EV_TOPIC:
            r.topic = ev.text
        w = self._mids.get(room)
        if w is not None and ev.mid:
            w.add(seq, ev.mid)
            w.forget_through(seq - self.mid_window)

    async def _follow(self, room: str) -> tuple[int, int, str | None, list[tuple[int, int]], list[F.Ev]]:
        from nats.js import api

        r = self._rooms.get(room) or self._jroom(room)
        if r.stream not in self._known_streams:
            await self._ensure_stream(room, r)
        info = await self.link.js.stream_info(r.stream)
        last, first = _state(info.state)
        settings, _rev = await self.settings.get(room)
        lo = max(first, last - self.mid_window + 1)
        mids = []
        presence = []
        for seq, data in await _direct_range(self.link.nc, r.stream, lo, last) if lo <= last else []:
            try:
                ev = F.decode_ev(data)
            except F.FrameError:
                continue
            if ev.mid:
                mids.append((seq, ev.mid))
            if ev.kind in _PRESENCE_KINDS:
                presence.append(ev)
        if room in self._subs:
            return last, first, settings.get("topic"), mids, presence
        self._fed[room] = last
        self._subs[room] = None  # (taken: a second follow of the room waits for this one)

        async def deliver(msg: Any) -> None:
            seq = int(msg.metadata.sequence.stream)
            if seq <= self._fed.get(room, seq):
                return  # (a redelivery after a reset, or the room was unfollowed)
            self._fed[room] = seq
            with self._feed_lock:
                self._feed.append((room, seq, msg.data))
                wake, self._woken = not self._woken, True
            if wake:
                self.wake()

        async def subscribe(start: int) -> Any:
            # An ephemeral push consumer without acks, like nats-py's ordered consumer but without
            # its flow control: nats-py answers flow-control requests from a task that looks every
            # 250 ms, which held deliveries back by ~100 ms (bench_cluster.py). Order is the
            # stream's; a gap (a slow consumer) is the relay's to fill from the log (cluster.py);
            # after a reconnect every room is subscribed again (_resubscribe).
            cfg = api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=start,
                ack_policy=api.AckPolicy.NONE,
                max_deliver=1,
                mem_storage=True,
                num_replicas=1,
            )
            return await self.link.js.subscribe(
                r.subject, stream=r.stream, cb=deliver, config=cfg, manual_ack=True, flow_control=False
            )

        self._subs[room] = (subscribe, await subscribe(last + 1))
        return last, first, settings.get("topic"), mids, presence

    async def _unsubscribe(self, room: str) -> None:
        entry = self._subs.pop(room, None)
        self._fed.pop(room, None)
        if entry:
            try:
                await entry[1].unsubscribe()
            except Exception:
                pass

    async def _resubscribe(self) -> None:
        """After a reconnect: every followed room again from the event after the last handed over
        (the server may have lost the ephemeral consumers; nats-py would only notice after missed
        heartbeats)."""
        for room, entry in list(self._subs.items()):
            if not entry:
                continue
            subscribe, sub = entry
            try:
                await sub.unsubscribe()
            except Exception:
                pass
            if self._subs.get(room) is entry:
                self._subs[room] = (subscribe, await subscribe(self._fed.get(room, 0) + 1))

    # ------------------------------------------------------------------ reading

    def seq_of_mid(self, room: str, mid: int) -> int | None:
        self._settle()
        if self.stream_numbers:  # (in flight: numbers not final; a resend is JetStream's duplicate)
            return super().seq_of_mid(room, mid)
        seq = self._inflight_mids.get((room, mid))
        return seq if seq is not None else super().seq_of_mid(room, mid)

    def last_seq(self, room: str) -> int:
        self._settle()
        return super().last_seq(room)

    def first_seq(self, room: str) -> int:
        self._check_open()
        self._settle()
        r = self._rooms.get(room)
        return r.first if r is not None else 1

    def read(self, room: str, lo: int, hi: int, limit: int | None = None) -> list[tuple[int, F.Ev]]:
        """Committed events lo..hi: a batched direct get from the stream (blocks, bounded)."""
        self._check_open()
        self._settle()
        r = self._rooms.get(room)
        if r is None:
            return []
        lo, hi = max(lo, r.first, 1), min(hi, r.last)
        if limit is not None:
            hi = min(hi, lo + max(limit, 0) - 1)
        if lo > hi:
            return []
        if self.nonblocking:  # (Pending until read: the same range asked again takes it)
            nc, stream = self.link.nc, r.stream
            rows = self._ops.get(("read", room, lo, hi), lambda: _direct_range(nc, stream, lo, hi))
        else:
            rows = self.link.call(_direct_range(self.link.nc, r.stream, lo, hi))
        try:
            return [(seq, F.decode_ev(data)) for seq, data in rows]
        except F.FrameError as exc:
            raise StoreError(f"room {room!r} in the cluster holds a damaged event: {exc}") from None

    def _load_mids(self, room: str, lo: int) -> Iterable[tuple[int, int]]:
        return [(seq, ev.mid) for seq, ev in self.read(room, lo, 1 << 62) if ev.mid]

    def rooms(self) -> list[str]:
        self._settle()
        return sorted(n for n, r in self._rooms.items() if r.last or r.topic is not None)

    def topic(self, room: str) -> str:
        self._settle()
        r = self._rooms.get(room)
        return (r.topic or "") if r is not None else ""

    # ------------------------------------------------------------------ retention

    def expire(self, now_wall: float, budget: int = 500) -> dict[str, int]:
        """JetStream expires by itself (max_age, max_msgs). This reports the rooms whose first kept
        sequence moved, found by a background look at the streams that the previous call started
        (never blocks). `now_wall` and `budget` do not apply: the server's clock decides."""
        self._check_open()
        self._settle()
        cut: dict[str, int] = {}
        if self._refresh is not None and self._refresh.done():
            try:
                firsts = self._refresh.result()
            except Exception:
                firsts = {}
            self._refresh = None
            for room, first in firsts.items():
                r = self._rooms.get(room)
                if r is not None and first > r.first:
                    r.first = first
                    cut[room] = first
                    w = self._mids.get(room)
                    if w is not None:
                        w.forget_through(first - 1)
        if self._refresh is None and self.link.connected:
            streams = {room: r.stream for room, r in self._rooms.items() if r.last}
            self._refresh = self.link.submit(self._firsts(streams))
        return cut

    async def _firsts(self, streams: dict[str, str]) -> dict[str, int]:
        out = {}
        for room, stream in streams.items():
            try:
                info = await self.link.js.stream_info(stream)
            except Exception:
                continue
            out[room] = _state(info.state)[1]
        return out

    def close(self) -> None:
        if self._closed:
            return
        for handle, *_ in list(self._inflight):  # never leave a caller waiting on a dead log
            handle.wait(self.commit_timeout + 1.0)
        if self._refresh is not None:  # the background look at the streams (expire)
            concurrent.futures.wait([self._refresh], self.link.timeout)
            self._refresh.cancel()
        if self._records_watch is not None and not self.link.loop.is_closed():
            with contextlib.suppress(StoreError):
                self.link.call(self._stop_records(), 2.0)
        super().close()
        self._rooms = {}


# ============================================================================ helpers


def _state(state: Any) -> tuple[int, int]:
    """(last, first kept) of a stream's state; first = last + 1 when it keeps nothing."""
    last = int(state.last_seq or 0)
    first = int(state.first_seq or 0) if state.messages else last + 1
    return last, max(first, 1)


def _finish_on_crash(fut: concurrent.futures.Future, handle: Commit) -> None:
    if not handle.done():
        exc = fut.exception() if not fut.cancelled() else None
        handle.finish(error=f"the cluster: {_one_line(exc) if exc else 'cancelled'}")


def _wrong_last() -> type[BaseException]:
    from nats.js.errors import KeyWrongLastSequenceError

    return KeyWrongLastSequenceError


async def _all_streams(js: Any) -> list[Any]:
    """Every stream: the list API answers in pages (256 here), so page until one comes back empty."""
    out: list[Any] = []
    while True:
        page = await js.streams_info(offset=len(out))
        if not page:
            return out
        out.extend(page)


async def _direct_range(nc: Any, stream: str, lo: int, hi: int) -> list[tuple[int, bytes]]:
    """Events lo..hi of a stream by batched direct get (nats-server 2.11+): one request per
    READ_BATCH events, answered by a run of messages ended by a 204 (EOB) status."""
    out: list[tuple[int, bytes]] = []
    seq = lo
    while seq <= hi:
        want = min(READ_BATCH, hi - seq + 1)
        inbox = nc.new_inbox()
        queue: asyncio.Queue = asyncio.Queue()
        sub = await nc.subscribe(inbox, cb=queue.put)
        try:
            req = json.dumps({"seq": seq, "batch": want}).encode()
            await nc.publish(f"$JS.API.DIRECT.GET.{stream}", req, reply=inbox)
            got_any = False
            while True:
                msg = await asyncio.wait_for(queue.get(), 5.0)
                status = (msg.headers or {}).get("Status")
                if status is not None:  # 204 end of batch, 404 nothing there (all expired), 408...
                    if status not in ("204", "404"):
                        raise StoreError(f"reading {stream}: status {status}")
                    break
                n = int(msg.headers["Nats-Sequence"])
                if n > hi:
                    break
                out.append((n, msg.data))
                got_any = True
                seq = n + 1
            if not got_any:
                break
        finally:
            await sub.unsubscribe()
    return out


def _record_token(name: str) -> str:
    return "r." + base64.urlsafe_b64encode(name.encode("utf-8")).decode("ascii").rstrip("=")


def _record_name(token: str) -> str | None:
    if not token.startswith("r."):
        return None
    body = token[2:]
    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None


async def _bucket(
    js: Any, name: str, replicas: int = 1, ttl: float | None = None, max_bytes: int | None = None
) -> Any:
    """A KV bucket, made if missing (idempotent across relays)."""
    from nats.js.errors import BucketNotFoundError

    try:
        return await js.key_value(name)
    except BucketNotFoundError:
        pass
    try:
        more = {} if max_bytes is None else {"max_bytes": max_bytes}
        return await js.create_key_value(bucket=name, history=1, replicas=replicas, ttl=ttl, **more)
    except Exception:
        return await js.key_value(name)  # another relay made it first


class ClusterNames:
    """Nick uniqueness across every relay: bucket `<prefix>-nicks`, one key per nick_key.

    `claim` is create-if-absent (exactly one of any number of racing claimants wins), `release`
    deletes only the claimant's own revision, `refresh` re-puts it by compare-and-set. With `ttl`,
    a claim not refreshed within it expires: the nicks of a relay that died come free by themselves.
    Async: run on the link's loop (`link.call(names.claim(...))` from other threads)."""

    def __init__(self, link: NatsLink, prefix: str = "udproom", ttl: float | None = None, replicas: int = 1):
        self.link = link
        self.bucket = f"{prefix}-nicks"
        self.ttl = ttl
        self.replicas = replicas
        self._kv: Any = None

    async def _store(self) -> Any:
        if self._kv is None:
            self._kv = await _bucket(self.link.js, self.bucket, self.replicas, self.ttl)
        return self._kv

    @staticmethod
    def key(nick: str) -> str:
        return ClusterNames.key_of(nick_key(nick))

    @staticmethod
    def key_of(k: str) -> str:
        """The KV key of one of a nick's keys (`names.nick_keys`)."""
        return hashlib.sha256(k.encode("utf-8", "surrogatepass")).hexdigest()

    async def claim(self, nick: str, owner: str) -> int | None:
        """The claim's revision, or None when the nick (as nick_key sees it) is someone else's."""
        kv = await self._store()
        value = json.dumps({"nick": nick, "owner": owner}).encode()
        try:
            return await kv.create(self.key(nick), value)
        except _wrong_last():
            return None

    async def refresh(self, nick: str, owner: str, revision: int) -> int | None:
        kv = await self._store()
        value = json.dumps({"nick": nick, "owner": owner}).encode()
        try:
            return await kv.update(self.key(nick), value, last=revision)
        except _wrong_last():
            return None

    async def release(self, nick: str, revision: int) -> bool:
        """Delete the claim if it is still this revision (a newer claimant's stays)."""
        return await self.release_key(self.key(nick), revision)

    async def release_key(self, key: str, revision: int) -> bool:
        from nats.js.errors import APIError

        kv = await self._store()
        try:
            return bool(await kv.delete(key, last=revision))
        except (APIError, _wrong_last()):
            return False

    async def owner(self, nick: str) -> tuple[str, int] | None:
        from nats.js.errors import KeyDeletedError, KeyNotFoundError

        kv = await self._store()
        try:
            entry = await kv.get(self.key(nick))
        except (KeyNotFoundError, KeyDeletedError):
            return None
        return json.loads(entry.value)["owner"], entry.revision


class RoomSettings:
    """Per-room settings (topic, and the modes when they exist) in bucket `<prefix>-rooms`: a JSON
    object per room, changed by compare-and-set on its revision."""

    def __init__(self, link: NatsLink, prefix: str = "udproom", replicas: int = 1):
        self.link = link
        self.bucket = f"{prefix}-rooms"
        self.replicas = replicas
        self._kv: Any = None

    async def _store(self) -> Any:
        if self._kv is None:
            self._kv = await _bucket(self.link.js, self.bucket, self.replicas)
        return self._kv

    async def get(self, room: str) -> tuple[dict[str, Any], int]:
        """(settings, revision); ({}, 0) for a room without any."""
        from nats.js.errors import KeyDeletedError, KeyNotFoundError

        kv = await self._store()
        try:
            entry = await kv.get(room_token(room))
        except (KeyNotFoundError, KeyDeletedError):
            return {}, 0
        data = json.loads(entry.value)
        return data.get("settings", {}), entry.revision

    async def _update(
        self, room: str, change: Callable[[dict[str, Any]], dict[str, Any]], attempts: int = 20
    ) -> int:
        """Apply `change` by compare-and-set, retrying when another relay changed it in between."""
        kv = await self._store()
        for _ in range(attempts):
            settings, rev = await self.get(room)
            value = json.dumps({"room": room, "settings": change(dict(settings))}).encode()
            try:
                if rev:
                    return await kv.update(room_token(room), value, last=rev)
                return await kv.create(room_token(room), value)
            except _wrong_last():
                continue
        raise StoreError(f"room {room!r}: its settings kept changing under us")

    update = _update

    async def _all(self) -> dict[str, dict[str, Any]]:
        from nats.js.errors import NoKeysError

        kv = await self._store()
        try:
            keys = await kv.keys()
        except NoKeysError:
            return {}
        out = {}
        for key in keys:
            try:
                data = json.loads((await kv.get(key)).value)
            except Exception:
                continue
            if isinstance(data, dict) and isinstance(data.get("room"), str):
                out[data["room"]] = data.get("settings", {})
        return out


class ClusterNicks:
    """A relay's nick claims in the cluster (ClusterNames, with a TTL), for the sans-IO relay core:
    `claim` blocks (bounded), `release` does not. A claim names the claiming session by a hash of its
    token, so a client failing over from a relay that died (it presents its old token as
    `Hello.resume`) takes its own nick over at once instead of waiting for the claim to expire.
    The relay's claims are refreshed every `ttl / 3` on the link's loop; a relay that dies stops
    refreshing, and its members' nicks come free within `ttl`.

    Presence across relays (docs/cluster.md): every `ttl / 3` the relay also puts its key in
    `<prefix>-relays` (TTL `ttl`) and lists the keys there. A relay seen before whose key has
    expired is dead: the first relay to create `reaper.<its id>` (create-if-absent: exactly one)
    reads the dead relay's members from `<prefix>-members` (one key per relay, room and nick,
    written on join, deleted on leave) and hands them over (`reaped()`), so that the room hears
    that they timed out, as their relay would have said; members whose nick is meanwhile held
    through another relay (they failed over) are not announced."""

    def __init__(
        self,
        link: NatsLink,
        relay_id: str,
        ttl: float = 20.0,
        prefix: str = "udproom",
        replicas: int = 1,
        dm_keep: float = 600.0,
    ) -> None:
        self.link = link
        self.relay_id = relay_id
        self.ttl = ttl
        self.dm_keep = dm_keep  # how long a DM waiting for its recipient is kept in the cluster
        self.names = ClusterNames(link, prefix, ttl=ttl, replicas=replicas)
        self._mine: dict[str, tuple[str, str, int]] = {}  # key -> (nick, session hash, revision): NATS thread
        self._members: dict[str, str] = {}  # session hash -> its member's identity key hash (NATS thread)
        #: session hash -> the nicks claimed for it and not released (NATS thread): a key one of them
        #: needs is kept when another is released (a nick change to a look-alike, either way round)
        self._nicks: dict[str, set[str]] = {}
        self._refresher: asyncio.Task | None = None
        self.prefix = prefix
        self.replicas = replicas
        self._relays_kv: Any = None
        self._members_kv: Any = None
        self._seen: set[str] = set()  # relays seen alive (NATS thread)
        self._missing: set[str] = set()  # of those, missing in the last round
        self._healthy = True  # the last round reached the servers
        self._down_until = 0.0  # claims fail at once until then (claim)
        self._reaped: list[tuple[str, str]] = []  # (room, nick) of dead relays' members, handed over
        self._lock = threading.Lock()
        self._wakeup: Callable[[], None] | None = None
        self._tasks: set[concurrent.futures.Future] = set()  # (reading kept DMs: until done)
        self._undoing: set[asyncio.Future] = set()  # (releasing what a cancelled claim took: until done)
        # direct messages across relays (`send_dm`, `incoming_dms`, `answer_dm`, `dm_outcomes`)
        # (origin relay, id, to nick, event, kept: read back from the cluster for a member that failed over)
        self._dm_in: list[tuple[str, int, str, bytes, bool]] = []
        self._dm_out: list[tuple[int, bool, str]] = []  # (id, delivered, reason or the nick)
        #: `claim` and `members` never block (roomlog.Pending until answered): set by the relay
        self.nonblocking = False
        self._ops = _Ops(link, min(link.timeout, 3.0))
        self._ops.on_expire = self._op_expired
        self._dms_kv: Any = None
        self._kept: OrderedDict[tuple[str, int], str] = OrderedDict()  # (origin, id) -> key in the bucket
        link.call(self._buckets())
        self._refresher = link.submit(self._refresh())  # heartbeat, claims, reaping: every ttl / 3

    def close(self) -> None:
        """Stop refreshing (the link is closed by its owner)."""
        if self._refresher is not None:
            self._refresher.cancel()
        for task in list(self._tasks):
            task.cancel()

    async def _buckets(self) -> None:
        js = self.link.js
        self._relays_kv = await _bucket(js, f"{self.prefix}-relays", self.replicas, self.ttl)
        self._members_kv = await _bucket(js, f"{self.prefix}-members", self.replicas)
        self._dms_kv = await _bucket(js, f"{self.prefix}-dms", self.replicas, self.dm_keep, DMS_MAX_BYTES)
        await self._relays_kv.put(f"relay.{self.relay_id}", b"{}")
        nc = self.link.nc  # (core subscriptions: nats-py subscribes them again after a reconnect)
        await nc.subscribe(self._dm_subject("dm", self.relay_id), cb=self._on_dm)
        await nc.subscribe(self._dm_subject("dmr", self.relay_id), cb=self._on_dm_result)

    # ------------------------------------------------------------------ direct messages across relays
    #
    # A DM to a nick held through another relay: the sender's relay reads the nick's claim (which
    # names the relay holding it) and sends the event, as its relay would have put it in the
    # recipient's inbox (signature and key unchanged), to `<prefix>.dm.<that relay>` as a request;
    # the answer only says it arrived. The recipient's relay puts it in the inbox; when the
    # recipient acknowledges it (or its inbox is thrown away) that relay publishes the outcome to
    # `<prefix>.dmr.<the sender's relay>`. Ids are the sender's relay's.
    #
    # A DM waiting in an inbox must outlive the recipient's relay: before it answers the request, that
    # relay keeps the DM in the bucket `<prefix>-dms` (key: the recipient's nick hash, the sender's
    # relay, the id; the value names the recipient's session and identity key), deleted when the
    # outcome is known. A member that fails over to another relay takes its nick's claim over there
    # (presenting its old session token, or by its key): that relay reads the DMs kept for it and
    # delivers them (the recipient's client drops a message id it has had), and answers the
    # sender's relay. Kept at most `dm_keep` (the bucket's TTL) and
    # DMS_MAX_BYTES in all; what does not fit is only in the relay's memory, as before.

    def _dm_subject(self, kind: str, relay: str) -> str:
        return f"{self.prefix}.{kind}.{hashlib.sha256(relay.encode()).hexdigest()[:32]}"

    def send_dm(self, dm_id: int, nick: str, event: bytes) -> None:
        """Route `event` (frames.encode_ev) to the relay holding `nick`; returns at once, the outcome
        comes later through `dm_outcomes()`."""
        if not self.link.connected:
            self._dm_done(dm_id, False, "the cluster is not reachable (reconnecting): not delivered")
            return
        self.link.submit(self._send_dm(dm_id, nick, event))

    async def _send_dm(self, dm_id: int, nick: str, event: bytes) -> None:
        try:
            held = await self.names.owner(nick)
        except Exception as exc:
            self._dm_done(dm_id, False, f"the cluster did not answer: {_one_line(exc)}; not delivered")
            return
        relay = str(held[0]).split("/", 1)[0] if held is not None else ""
        if not relay or relay == self.relay_id:  # (held here: its session is gone meanwhile)
            self._dm_done(dm_id, False, f"no one called {nick} is here")
            return
        body = {"from": self.relay_id, "id": dm_id, "to": nick, "ev": base64.b64encode(event).decode()}
        try:
            await self.link.nc.request(
                self._dm_subject("dm", relay), json.dumps(body).encode(), timeout=min(self.link.timeout, 3.0)
            )
        except TimeoutError:
            # no answer in time: that relay may have it all the same (it answers once the DM is kept
            # in the cluster, a KV put, slow under load), in its member's inbox or kept for it: its
            # outcome comes later, or the sender's relay gives up after its bound ("may not have been")
            return
        except Exception:  # no responders (that relay is gone): it did not get it
            self._dm_done(dm_id, False, f"the relay holding {nick} did not answer: not delivered")

    async def _on_dm(self, msg: Any) -> None:
        try:  # (from the cluster, but checked all the same: the relay checks the rest)
            body = json.loads(msg.data)
            item = (str(body["from"]), int(body["id"]), str(body["to"]), base64.b64decode(body["ev"]))
        except Exception:
            return  # (no answer: the sender's relay times out and says it was not delivered)
        await self._keep_dm(*item)  # (before the answer: the sender's relay counts on it from then)
        with self._lock:
            self._dm_in.append((*item, False))
        if msg.reply:
            await self.link.nc.publish(msg.reply, b"{}")
        if self._wakeup is not None:
            self._wakeup()

    async def _on_dm_result(self, msg: Any) -> None:
        try:
            body = json.loads(msg.data)
            self._dm_done(int(body["id"]), body["ok"] is True, str(body["why"]))
        except Exception:
            return

    def _dm_key(self, to: str, origin: str, dm_id: int) -> str:
        return f"{ClusterNames.key(to)[:32]}.{hashlib.sha256(origin.encode()).hexdigest()[:16]}.{dm_id}"

    async def _keep_dm(self, origin: str, dm_id: int, to: str, event: bytes) -> None:
        """Keep a DM for `to`, a member of ours, where another relay finds it (best effort)."""
        try:
            held = self._mine.get(ClusterNames.key(to))
        except Exception:  # (a nick nick_key refuses: the relay refuses the DM)
            return
        if held is None or not 0 <= dm_id < 1 << 63 or self._dms_kv is None:
            return  # (not ours: the relay answers "no one called ... is here")
        key = self._dm_key(to, origin, dm_id)
        value = {"from": origin, "id": dm_id, "to": to, "ev": base64.b64encode(event).decode()}
        value.update(session=held[1], member=self._members.get(held[1], ""), relay=self.relay_id)
        try:
            await self._dms_kv.put(key, json.dumps(value).encode())
        except Exception:  # (full, or not reachable: in this relay's memory only)
            return
        self._remember_kept(origin, dm_id, key)

    def _remember_kept(self, origin: str, dm_id: int, key: str) -> None:
        with self._lock:
            self._kept[(origin, dm_id)] = key
            while len(self._kept) > MAX_KEPT_DMS:  # (forgotten here: the bucket's TTL ends it)
                self._kept.popitem(last=False)

    async def _kept_dms(self, nick: str, who: str, member: str) -> None:
        """The DMs kept for session `who` (its client failed over to us, presenting that session's
        token) or for the member whose identity key hashes to `member`, as `nick`: handed over like
        DMs from the cluster (checked by the relay like them), marked kept (no one here for them
        yet: left for later, not refused)."""
        prefix = ClusterNames.key(nick)[:32]
        entries = []
        try:  # (a watch, not keys(filters=...): nats-py 2.16 finds no keys with a filter)
            watch = await self._dms_kv.watch(f"{prefix}.>", ignore_deletes=True)
            try:
                async with asyncio.timeout(self.link.timeout):
                    async for entry in watch:  # the values kept now, then None
                        if entry is None or len(entries) >= MAX_KEPT_READ:
                            break
                        entries.append(entry)
            finally:
                await watch.stop()
        except Exception:  # (not reachable, or too slow: what was read is delivered)
            pass
        found = []
        for entry in entries:
            key = entry.key
            try:
                body = json.loads(entry.value)
                origin, dm_id, to = str(body["from"]), int(body["id"]), str(body["to"])
                event = base64.b64decode(body["ev"], validate=True)
                mine = (who and body.get("session") == who) or (member and body.get("member") == member)
                if not mine or body.get("relay") == self.relay_id:
                    continue  # someone else's; or ours, which our memory has (parked)
                if not 0 <= dm_id < 1 << 63 or key != self._dm_key(to, origin, dm_id):
                    continue
            except Exception:
                continue
            self._remember_kept(origin, dm_id, key)
            found.append((origin, dm_id, to, event, True))
        if found:
            with self._lock:
                self._dm_in += found
            if self._wakeup is not None:
                self._wakeup()

    async def _forget_dm(self, key: str) -> None:
        with contextlib.suppress(Exception):
            await self._dms_kv.purge(key)

    def _dm_done(self, dm_id: int, ok: bool, why: str) -> None:
        with self._lock:
            self._dm_out.append((dm_id, ok, why))
        if self._wakeup is not None:
            self._wakeup()

    def incoming_dms(self) -> list[tuple[str, int, str, bytes, bool]]:
        """(origin relay, id, to nick, event, kept) of direct messages for members of this relay; kept:
        read back from the cluster for a member that failed over here (see `_kept_dms`)."""
        with self._lock:
            out, self._dm_in = self._dm_in, []
        return out

    def dm_outcomes(self) -> list[tuple[int, bool, str]]:
        """(id, delivered, the recipient's nick if delivered else why not) of DMs this relay sent."""
        with self._lock:
            out, self._dm_out = self._dm_out, []
        return out

    def answer_dm(self, origin: str, dm_id: int, ok: bool, why: str) -> None:
        """Tell the sender's relay what became of its DM (returns at once; if it cannot be told, the
        sender's relay gives up after its bound and says it was not delivered). The DM is no longer
        kept in the cluster."""
        with self._lock:
            key = self._kept.pop((origin, dm_id), None)
        if self.link.connected:
            body = json.dumps({"id": dm_id, "ok": ok, "why": why}).encode()
            self.link.submit(self.link.nc.publish(self._dm_subject("dmr", origin), body))
            if key is not None:
                self.link.submit(self._forget_dm(key))

    def set_wakeup(self, fn: Callable[[], None] | None) -> None:
        self._wakeup = fn
        self._ops.wakeup = fn

    def completed(self) -> list[Any]:
        """Keys of `Pending`s (nonblocking) whose round trip completed since the last call."""
        return self._ops.completed()

    def _op_expired(self, key: Any, value: Any) -> None:
        """A claim won for a Login or a nick change that never came back for it: given back."""
        if key[0] == "claim" and value:
            self.release(key[1], key[2])

    def _member_key(self, room: str, nick: str) -> str:
        return f"{self.relay_id}.{room_token(room)[:24]}.{ClusterNames.key(nick)[:24]}"

    def joined(self, room: str, nick: str) -> None:
        """A member of ours joined `room` (the cluster learns it without waiting)."""
        value = json.dumps({"room": room, "nick": nick}).encode()
        if self.link.connected:
            self.link.submit(self._members_kv.put(self._member_key(room, nick), value))

    def left(self, room: str, nick: str) -> None:
        if self.link.connected:
            self.link.submit(self._members_kv.purge(self._member_key(room, nick)))

    def members(self, room: str) -> list[str]:
        """The nicks in `room` through any relay, as the members bucket has them (once per room a
        relay opens; [] when the cluster does not answer). Blocks (bounded), or, nonblocking,
        raises Pending until read."""
        try:
            if self.nonblocking:
                return self._ops.get(("members", room), lambda: self._room_members(room))
            return self.link.call(self._room_members(room), min(self.link.timeout, 3.0))
        except StoreError:
            return []

    async def _room_members(self, room: str) -> list[str]:
        kv = self._members_kv
        token = room_token(room)[:24]
        try:
            keys = [k for k in await kv.keys() if k.split(".")[1:2] == [token]]
        except Exception:  # (nats-py: NoKeysError for an empty bucket)
            return []
        entries = await asyncio.gather(*(kv.get(k) for k in keys), return_exceptions=True)
        out = []
        for entry in entries:
            try:
                data = json.loads(entry.value)
            except Exception:
                continue
            if isinstance(data, dict) and data.get("room") == room and isinstance(data.get("nick"), str):
                out.append(data["nick"])
        return out

    def reaped(self) -> list[tuple[str, str]]:
        """(room, nick) of members of relays that died, to announce as timed out (once, here)."""
        with self._lock:
            out, self._reaped = self._reaped, []
        return out

    async def _reap(self) -> None:
        """Look for relays that died and, when this relay wins the right to, announce their members."""
        kv = self._relays_kv
        try:
            keys = await kv.keys()
        except Exception:  # (nats-py: NoKeysError when the bucket is empty)
            keys = []
        alive = {k[len("relay.") :] for k in keys if k.startswith("relay.")}
        missing = self._seen - alive - {self.relay_id}
        # dead: missing in two rounds in a row of a relay that was connected all along (after an
        # outage of our own, or of the servers, every relay needs a round to put its key again)
        dead, self._missing = missing & self._missing, missing
        self._seen |= alive
        for relay in dead:
            self._seen.discard(relay)
            try:
                await kv.create(f"reaper.{relay}", self.relay_id.encode())
            except _wrong_last():
                continue  # another relay announces them
            gone = await self._members_of(relay)
            if gone:
                with self._lock:
                    self._reaped += gone
                fn = self._wakeup
                if fn is not None:
                    fn()

    async def _members_of(self, relay: str) -> list[tuple[str, str]]:
        kv = self._members_kv
        try:
            keys = [k for k in await kv.keys() if k.startswith(relay + ".")]
        except Exception:
            return []
        out = []
        for key in keys:
            try:
                data = json.loads((await kv.get(key)).value)
                await kv.purge(key)
            except Exception:
                continue
            room, nick = data.get("room"), data.get("nick")
            if not (isinstance(room, str) and isinstance(nick, str)):
                continue
            held = await self.names.owner(nick)
            if held is not None and not held[0].startswith(relay + "/"):
                continue  # held through another relay now: it failed over, it did not time out
            out.append((room, nick))
        return out

    @staticmethod
    def _who(token: int) -> str:
        return hashlib.sha256(b"udproom-session:%d" % token).hexdigest()[:32]

    @staticmethod
    def _member(key: bytes) -> str:
        return hashlib.sha256(b"udproom-member:" + key).hexdigest()[:32] if key else ""

    def claim(self, nick: str, token: int, resume: int = 0, key: bytes = b"") -> bool:
        """Blocks (bounded), or, nonblocking, raises Pending until answered. After a claim that got
        no answer, claims fail at once for a moment: a relay cut off from NATS must not stall its
        loop for every Hello (blocking), nor park every Hello for a round trip (nonblocking).
        `key`: the member's identity key as it proved it in its handshake: a claim of the same key
        is the same member's (a handshake whose answer was lost made a claim its client never
        learnt of) and is taken over, as a claim of the session whose token the client presents
        (`resume`)."""
        if not self.link.connected:
            raise StoreError("the cluster is not reachable (reconnecting)")
        if time.monotonic() < self._down_until:
            raise StoreError("the cluster did not answer a moment ago")
        try:
            member = self._member(key)
            if self.nonblocking:  # (Pending until answered: the same claim asked again takes it)
                start = lambda: self._claim(nick, token, resume, member)  # noqa: E731
                return bool(self._ops.get(("claim", nick, token, resume, member), start))
            return bool(self.link.call(self._claim(nick, token, resume, member), min(self.link.timeout, 3.0)))
        except StoreError:
            self._down_until = time.monotonic() + min(self.ttl / 4, 2.0)
            raise

    def release(self, nick: str, token: int) -> None:
        """Returns at once. While the link is down too: the claim is no longer refreshed, and its
        delete waits for the link (or fails, and the claim's TTL ends it)."""
        if not self.link.loop.is_closed():
            self.link.submit(self._release(nick, token))

    def _value(self, nick: str, who: str) -> bytes:
        value = {"nick": nick, "owner": f"{self.relay_id}/{who}", "session": who}
        member = self._members.get(who, "")
        return json.dumps({**value, "member": member} if member else value).encode()

    async def _claim(self, nick: str, token: int, resume: int, member: str = "") -> bool:
        """Every key of the nick (`names.nick_keys`: its look-alikes' too), or none of them."""
        who, done, took_over = self._who(token), [], False
        new_member = member and who not in self._members
        if member:
            self._members[who] = member
        try:
            for key in sorted(ClusterNames.key_of(k) for k in nick_keys(nick)):
                held = self._mine.get(key)
                if held is not None and held[1] == who:  # the session's own (a nick change to a look-alike)
                    self._mine[key] = (nick, who, held[2])
                    done.append((key, held))
                    continue
                got = await self._claim_key(key, nick, who, resume, member)
                if got is None:
                    await self._release_keys(self._undo(done, who, new_member))
                    return False
                took_over = took_over or got
                done.append((key, held))
        except asyncio.CancelledError:  # (no answer in time: _Ops' wait_for, link.call) none of it stays
            task = asyncio.ensure_future(self._release_keys(self._undo(done, who, new_member)))
            self._undoing.add(task)
            task.add_done_callback(self._undoing.discard)
            raise
        self._nicks.setdefault(who, set()).add(nick)
        if resume or took_over:  # a client back, or failing over: DMs kept for it come here
            old = self._who(resume) if resume else ""
            task = self.link.submit(self._kept_dms(nick, old, member))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return True

    def _undo(self, done: list[tuple[str, Any]], who: str, new_member: bool) -> list[tuple[str, int]]:
        """Roll back what a claim took (`done`: each key with what was ours before): the keys it
        relabelled are as they were; returns those it claimed, to release (key, revision). A key
        whose claim was on its way when the claim was cancelled is not ours: its TTL ends it."""
        out = []
        for k, before in reversed(done):
            if before is not None:
                self._mine[k] = before
            elif (held := self._mine.pop(k, None)) is not None:  # (the refresh may have found it taken)
                out.append((k, held[2]))
        if new_member:
            self._members.pop(who, None)
        return out

    async def _release_keys(self, keys: list[tuple[str, int]]) -> None:
        for key, rev in keys:
            with contextlib.suppress(Exception):  # (not reachable: its TTL ends it)
                await self.names.release_key(key, rev)

    async def _claim_key(self, key: str, nick: str, who: str, resume: int, member: str) -> bool | None:
        """Claim one key: False when made afresh, True when taken over from the same client (or a
        claim of ours released meanwhile), None when it is someone else's. A claim that goes
        (released, or its dead relay's claim expiring) while we take it over is made afresh: the
        member is not refused for that (the multi-process soak hit it once in 1,000 failovers)."""
        from nats.js.errors import KeyDeletedError, KeyNotFoundError

        kv = await self.names._store()
        for _ in range(3):
            try:
                rev = await kv.create(key, self._value(nick, who))
            except _wrong_last():
                pass
            else:
                self._mine[key] = (nick, who, rev)
                return False
            try:
                entry = await kv.get(key)
            except (KeyNotFoundError, KeyDeletedError):  # gone meanwhile: make it afresh
                continue
            rev = await self._take_over(kv, key, entry, nick, who, resume, member)
            if rev is None:
                return None
            if rev > 0:
                self._mine[key] = (nick, who, rev)
                return True
        return None  # (made and gone three times over: someone else is at it)

    async def _take_over(
        self, kv: Any, key: str, entry: Any, nick: str, who: str, resume: int, member: str = ""
    ) -> int | None:
        """The claim's new revision if the holder is the same client back (failover: it presents
        its old token; or the same identity key), or a claim of ours released meanwhile; None:
        someone else's; 0: the claim went meanwhile (make it afresh). The holder's relay may re-put
        its claim (its refresh) between our read and our compare-and-set: then read it again (a
        few times)."""
        from nats.js.errors import KeyDeletedError, KeyNotFoundError

        for _ in range(3):
            try:
                held = json.loads(entry.value)
            except ValueError:
                return None
            if not isinstance(held, dict):
                return None
            ours = str(held.get("owner", "")).startswith(self.relay_id + "/") and key not in self._mine
            same = (resume and held.get("session") == self._who(resume)) or (
                member and held.get("member") == member
            )
            if not (ours or same):
                return None
            try:
                return await kv.update(key, self._value(nick, who), last=entry.revision)
            except _wrong_last():
                try:
                    entry = await kv.get(key)
                except (KeyNotFoundError, KeyDeletedError):  # gone meanwhile: made afresh
                    return 0
        return None

    async def _release(self, nick: str, token: int) -> None:
        """Give back the keys of `nick` the session's other nicks do not need (a nick change to a
        look-alike: the one they share stays, named by the nick that keeps it)."""
        who = self._who(token)
        nicks = self._nicks.get(who, set())
        nicks.discard(nick)
        needed = {ClusterNames.key_of(k): other for other in nicks for k in nick_keys(other)}
        for key in [ClusterNames.key_of(k) for k in nick_keys(nick)]:
            held = self._mine.get(key)
            if held is None or held[1] != who:
                continue
            if key in needed:
                self._mine[key] = (needed[key], who, held[2])
                continue
            del self._mine[key]
            with contextlib.suppress(Exception):  # (not reachable: its TTL ends it)
                await self.names.release_key(key, held[2])
        if not nicks:
            self._nicks.pop(who, None)
            self._members.pop(who, None)

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self._relays_kv.put(f"relay.{self.relay_id}", b"{}")  # alive
                if self._healthy:
                    await self._reap()
                self._healthy = True
            except Exception:
                self._healthy = False  # (not reachable now: the next round tries again)
                self._missing = set()
            await self._refresh_claims()

    async def _refresh_claims(self) -> None:
        """Put every claim of ours again (its TTL). A claim found taken over means its client failed
        over to another relay: every key of that session goes, not only the one found taken, so no
        key of it is put again without its member (the rest of the takeover would fail: "in use on
        another relay", for good; found by the multi-process soak). A claim released meanwhile is
        not a takeover (the session's other keys and member stay), and one released while this
        re-put it is deleted again, not brought back."""
        kv = await self.names._store()
        for key, (_nick, who, rev) in list(self._mine.items()):
            held = self._mine.get(key)
            if held is None or held[2] != rev:
                continue  # (gone meanwhile: its session was taken over, or released)
            try:
                new = await kv.update(key, self._value(held[0], who), last=rev)
            except _wrong_last():  # taken over (its client failed over to another relay), or released
                held = self._mine.get(key)
                if held is not None and held[2] == rev:
                    for k in [k for k, h in self._mine.items() if h[1] == who]:
                        del self._mine[k]
                    self._members.pop(who, None)
                    self._nicks.pop(who, None)
                continue
            except Exception:
                continue  # (not reachable now: the next round tries again)
            held = self._mine.get(key)
            if held is not None and held[2] == rev:
                self._mine[key] = (held[0], who, new)
            elif held is None:  # released while this re-put it (its delete named `rev`): not again
                await self.names.release_key(key, new)
