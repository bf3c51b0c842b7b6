"""The app's side of durable rooms: its own log (`protocol/chatlog.py`) behind the chat model.

No textual here. `History` is what the app calls:

- `begin(spec, backend)` when a session starts: which circle (relay or direct-mode circle) the
  lines belong to (`circle_of`), and each room's previous lines from the log, shown at once (dim,
  as history, above "you joined"), before any network.
- `ingest(batch)` in every flush, before the model applies the batch: drops events already shown
  (from the log, or a backfill/page seen before: deduplicated by (epoch, room sequence) in relay
  mode, by a message id in direct mode), takes `HistoryPage`s out, and queues the room events
  for the log. `after(pages)` then puts pages and early backfill at the top of their rooms.
- Writes go to a writer thread: one transaction per flush (several when it is behind), never on
  the UI's loop. A write that fails (disk full, read-only) is one notice; the app then runs
  without the log.
- `older(room)`: the user scrolled up past the top: the previous page comes from the log first,
  then from the relay (`backend.page_back`), with a "loading older messages…" line meanwhile;
  "start of #room's history" when there is nothing older.
- `search(words)` / `jump(pos)`: `/search` and Enter on a result.

Scrollback: a room keeps `model.SCROLLBACK` (2,000) lines. Pages loaded while scrolled up are
kept on top of that (the room may exceed the cap while the view is scrolled up); when the view
returns to the bottom (`settle`), the room is trimmed back to the newest 2,000 lines and paging
starts again from there.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Iterator

from udproom.protocol import events as ev
from udproom.protocol import paths
from udproom.protocol.chatlog import ChatLog, Line, line_of, peer_history
from udproom.protocol.events import direct_mid
from udproom.protocol.names import nick_key
from udproom.protocol.sqlstore import StoreError

from . import model as m

LOAD = 200  # lines of each room shown at start (more than a relay's backfill of 100)
PAGE = 200  # lines per page from the log
RELAY_PAGE = 100  # events per page asked of the relay (its bound: protocol.client.MAX_PAGE)
JUMP_PAGES = 50  # a search result further back than this many log pages is not paged to
ROOM_EVENTS = frozenset(ev.ROOM_EVENTS)
_BIG = (1 << 63) - 1
#: a StoreError saying this is about the log, not about one line (sqlstore.describe's wording)
_STORE_BROKEN = (" is full", " is read-only", " is damaged", "cannot open", " is busy", " is closed")


#: the log's writer gathers events this long (seconds), or this many, into one transaction
GATHER = float(os.environ.get("UDPROOM_LOG_GATHER", "0.25"))
MAX_GATHER = 2000  # (a transaction holds the log for the app's reads: PgUp, a peer asking history)
#: how long /search waits for the log's writer to store what is already on screen (seconds)
SEARCH_WAIT = 3.0


def circle_of(spec, backend) -> str:
    """The circle lines are logged under: a relay's address as given (`--join`); for the relay the
    app hosts, the address its own client joins (`--host :6000` → `127.0.0.1:6000`, the same as
    `--join 127.0.0.1:6000`); in direct mode `direct ADDRESS` (the listen address) or
    `direct PEER,PEER` (the sorted initial peers, when listening on any port)."""
    if spec is not None:
        if spec.mode == "join":
            return spec.address
        if spec.mode == "host":  # where our own client reaches it: `--join` there finds the same
            from udproom.protocol.net.address import format_address as fmt_addr

            from .session import SpecError, connect_host_for, parse_addr

            try:
                host, port = parse_addr(spec.address, bind=True)
            except SpecError:
                return spec.address
            return fmt_addr(connect_host_for(host), port)
        return "direct " + (spec.address or ",".join(sorted(spec.peers)))
    return str(getattr(backend, "address", "") or getattr(backend, "mode", ""))


def _nick(e) -> str:
    return e.old if type(e) is ev.NickChanged else e.nick


def _event_mid(e) -> int:
    """A direct-mode event's id in the log: `events.direct_mid` (a message's with its text)."""
    text = e.text if type(e) is ev.MessageReceived else None
    return direct_mid(e.room, _nick(e), e.seq, text)


def event_of(line: Line, mine: bool, direct: bool):
    """The history event a logged line stands for (so the model draws it as it draws a backfill)."""
    # direct mode: the Lamport stamp places the line in the room's order (-1: a line logged
    # before stamps were kept, placed where it comes)
    seq = (line.lc or -1) if direct else line.seq
    r, nick, text, ts = line.room, line.nick, line.text, line.ts
    kind = line.kind
    if kind in ("message", "action"):
        return ev.MessageReceived(r, seq, nick, text, ts, kind == "action", True, mine)
    if kind == "join":
        return ev.MemberJoined(r, seq, nick, ts, True)
    if kind == "leave":
        return ev.MemberLeft(r, seq, nick, ts, text, True)
    if kind == "timeout":
        return ev.MemberTimedOut(r, seq, nick, ts, True)
    if kind == "nick":
        return ev.NickChanged(r, seq, nick, text, ts, True)
    if kind == "topic":
        return ev.TopicChanged(r, seq, nick, text, ts, True)
    return ev.AwayChanged(r, seq, nick, text, ts, True)


class _Writer:
    """Writes queued events to the log on its own thread. A take gathers what arrives for up to
    `gather` seconds (or MAX_GATHER events) into one transaction: SQLite's commit and FTS5's
    segment per transaction are what a flood costs, and the fewer of them, the less the writer
    takes from the UI (keypress latency with the log on). Anyone waiting for the writer (`drain`:
    /search, quitting, tests) ends the gathering at once."""

    def __init__(self, log: ChatLog, lock: threading.Lock, gather: float | None = None) -> None:
        self.log = log
        self.lock = lock
        self.gather = GATHER if gather is None else gather
        self.queue: list[tuple[str, int, bool, list]] = []
        self.queued = 0  # events in the queue
        self.cv = threading.Condition()
        self.busy = False
        self.stopped = False
        self.waiting = 0  # callers of drain(): write now
        self.error = ""  # the first failure (then nothing more is written)
        self.thread = threading.Thread(target=self._run, name="udproom-chatlog", daemon=True)
        self.thread.start()

    def put(self, circle: str, epoch: int, direct: bool, events: list) -> None:
        with self.cv:
            first = not self.queue
            self.queue.append((circle, epoch, direct, events))
            self.queued += len(events)
            if first or self.queued >= MAX_GATHER:  # (waking it for every flush costs the UI)
                self.cv.notify()

    def _take(self) -> list | None:
        """The next batch (None: stopped, and nothing is left)."""
        with self.cv:
            while not self.queue and not self.stopped:
                self.cv.wait()
            if not self.queue:
                return None
            until = time.monotonic() + self.gather
            while not self.stopped and not self.waiting and self.queued < MAX_GATHER:
                left = until - time.monotonic()
                if left <= 0:
                    break
                self.cv.wait(left)
            work, self.queue, self.queued = self.queue, [], 0
            self.busy = True
            return work

    def _run(self) -> None:
        try:  # background priority (Linux: per thread): the UI's thread comes first for the CPU
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass
        while True:
            work = self._take()
            if work is None:
                return
            try:
                if not self.error:
                    self._add(work)
            except StoreError as exc:
                self.error = str(exc)
            except Exception as exc:  # never let the thread die silently
                self.error = f"the chat log failed: {exc}"
            finally:
                with self.cv:
                    self.busy = False
                    self.cv.notify_all()

    @staticmethod
    def _lines(work: list) -> Iterator[Line]:
        """The log's lines for queued events, made one at a time as the log stores them."""
        for circle, epoch, direct, events in work:
            for e in events:
                line = line_of(e, circle, epoch, _event_mid(e) if direct else 0, direct)
                if line is not None:
                    yield line

    def _add(self, work: list) -> None:
        count = sum(len(events) for *_, events in work)
        try:
            with self.lock:
                self.log.add(self._lines(work), count)
        except StoreError as exc:
            if any(word in str(exc) for word in _STORE_BROKEN):
                raise
            # one line the log cannot take (text that is not valid Unicode, a number beyond 64
            # bits): the others are kept, that one is skipped; it does not turn the log off
            for line in self._lines(work):
                try:
                    with self.lock:
                        self.log.add([line])
                except StoreError as one:
                    if any(word in str(one) for word in _STORE_BROKEN):
                        raise

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued is written (tests, quitting)."""
        with self.cv:
            self.waiting += 1
            self.cv.notify_all()
            try:
                return self.cv.wait_for(lambda: not self.queue and not self.busy, timeout)
            finally:
                self.waiting -= 1

    def stop(self, timeout: float = 2.0) -> None:
        with self.cv:
            self.stopped = True
            self.cv.notify_all()
        self.thread.join(timeout)


class History:
    def __init__(
        self, chat: m.ChatModel, log: ChatLog | None = None, notice: str = "", backend_of=lambda: None
    ) -> None:
        self.chat = chat
        self.log = log
        self.lock = threading.Lock()
        self.writer = _Writer(log, self.lock) if log is not None else None
        self._notice = notice  # one line for the user, shown once (`take_notice`)
        self._told = False
        self.backend_of = backend_of  # the session's backend now (the app builds it after begin())
        self.circle = ""
        self.epoch = 0
        self.direct = False
        self._reset()

    @classmethod
    def open(cls, chat: m.ChatModel, enabled: bool = True, backend_of=lambda: None) -> History:
        """The app's log under the data directory (`UDPROOM_DATA_DIR`), or none (`--no-log`,
        or it cannot be opened: one notice, and the app runs without it)."""
        if not enabled:
            return cls(chat, backend_of=backend_of)  # no log; paging back still asks the relay
        try:
            return cls(chat, ChatLog(paths.chatlog_path()), backend_of=backend_of)
        except StoreError as e:
            return cls(chat, None, f"{e}; running without the chat log", backend_of)

    def _reset(self) -> None:
        self.seen: dict[str, set] = {}  # room -> keys of lines shown from the log, backfill, pages
        self.low: dict[str, int] = {}  # room -> lowest relay sequence shown under self.epoch
        self.loaded_low: dict[str, int] = {}  # room -> lowest sequence read from the log (this epoch)
        self.cursor: dict[str, Line] = {}  # room -> oldest line read from the log: paging goes on there
        self.pos_of: dict[int, int] = {}  # model line serial -> its position in the log
        self.key_of: dict[int, tuple] = {}  # model line serial -> its dedupe key (log lines, pages)
        self.loading: dict[str, m.Line] = {}  # room -> its "loading older messages…" line
        self.complete: set[str] = set()  # rooms showing the start of their history
        self.starts: dict[str, m.Line] = {}  # room -> its "start of #room's history" line
        self._early: dict[str, list] = {}  # backfill older than what came from the log
        self.loaded: set[str] = set()  # rooms whose previous lines were read from the log
        self._joined: dict[str, list[Line]] = {}  # read at a RoomJoined, shown after the batch

    @property
    def enabled(self) -> bool:
        return self.writer is not None and not self.writer.error

    def take_notice(self) -> str:
        """A one-line problem with the log, once (it could not be opened, or a write failed)."""
        if self._told:
            return ""
        text = self._notice or (
            f"{self.writer.error}; the app keeps running without the chat log"
            if self.writer is not None and self.writer.error
            else ""
        )
        if text:
            self._told = True
        return text

    # ------------------------------------------------------------------ a session starts

    def begin(self, spec, backend, rooms: list[str]) -> None:
        """A new session: its circle, and each room's previous lines from the log, at once."""
        self._reset()
        self.circle = circle_of(spec, backend)
        self.direct = (spec is not None and spec.mode == "direct") or bool(getattr(backend, "direct", False))
        # direct mode orders a room by Lamport stamp: so are the logged lines shown now (the
        # session sets it again once its backend runs)
        self.chat.stamp_order = self.direct
        self.epoch = 0
        if not self.enabled:
            return
        for name in rooms:
            lines = self._recent(name)
            if lines:
                self.chat.add_room(name)
                self._show_log_lines(name, lines)

    def _recent(self, name: str) -> list[Line]:
        self.loaded.add(name)
        try:
            with self.lock:
                return self.log.recent(self.circle, name, LOAD)
        except StoreError:
            return []

    def _key(self, e):
        """The dedupe key of a room event (as `_line_key` of its line in the log)."""
        if self.direct:
            return ("m", _event_mid(e))
        return ("s", self.epoch, e.seq) if e.seq > 0 else ("m", 0)

    def _line_key(self, line: Line):
        if self.direct or line.seq <= 0:
            return ("m", line.mid)
        return ("s", line.epoch, line.seq)

    def _show_log_lines(self, room: str, lines: list[Line]) -> list[m.Line]:
        """Put lines read from the log (oldest first, older than what the room shows) at its top."""
        return self._show(room, self._claim(room, lines))

    def _claim(self, room: str, lines: list[Line]) -> list[Line]:
        """The lines (read from the log) not shown yet, now counted as shown: an event with the
        same id that comes later (a backfill) is dropped."""
        seen = self.seen.setdefault(room, set())
        fresh = [x for x in lines if self._line_key(x) not in seen]
        for x in fresh:
            seen.add(self._line_key(x))
            if not self.direct and x.seq > 0 and x.epoch == self.epoch:
                self._lower(room, x.seq)
        if lines:
            self.cursor[room] = lines[0]
        if not self.direct:
            for x in fresh:
                if x.seq > 0:
                    low = self.loaded_low.get((room, x.epoch))
                    if low is None or x.seq < low:
                        self.loaded_low[(room, x.epoch)] = x.seq
        return fresh

    def _show(self, room: str, fresh: list[Line]) -> list[m.Line]:
        me = nick_key(self.chat.nick)
        events = [event_of(x, nick_key(x.nick) == me, self.direct) for x in fresh]
        shown = self._prepend(room, events)
        for line, x in zip(shown, fresh, strict=False):
            self.pos_of[line.serial] = x.pos
            self.key_of[line.serial] = self._line_key(x)
        return shown

    def _lower(self, room: str, seq: int) -> None:
        low = self.low.get(room)
        if low is None or seq < low:
            self.low[room] = seq

    # ------------------------------------------------------------------ each flush

    def ingest(self, batch: list) -> tuple[list, list]:
        """(what the model should apply, the HistoryPages to put in place after it). Queues the
        room events shown for the log."""
        keep: list = []
        pages: list = []
        logged: list = []
        seen_of = self.seen
        low = self.low
        direct = self.direct
        for e in batch:
            t = type(e)
            if t in ROOM_EVENTS:
                room = e.room
                if e.history:
                    key = self._key(e)
                    seen = seen_of.get(room)
                    if seen is None:
                        seen = seen_of[room] = set()
                    elif key in seen:
                        continue  # shown already (from the log, or an earlier backfill)
                    seen.add(key)
                    if not direct and 0 < e.seq < self.loaded_low.get((room, self.epoch), 0):
                        self._early.setdefault(room, []).append(e)  # older than the log's lines
                        logged.append(e)
                        continue
                if not direct and e.seq > 0:
                    current = low.get(room)
                    if current is None or e.seq < current:
                        low[room] = e.seq
                logged.append(e)
            elif t is ev.HistoryPage:
                pages.append(e)
                continue
            elif t is ev.PostAcknowledged and direct:
                own = self._own_post(e)  # no peer echoes it back in direct mode: logged as sent
                if own is not None:
                    logged.append(own)
            elif t is ev.Connected:
                if not direct and self.circle.endswith(":0") and isinstance(e.address, str) and e.address:
                    self.circle = e.address  # a relay hosted on any free port: the port it got
                    # (not a direct-mode circle: `direct :0` stays the circle, found again next time)
                self._connected(e.epoch)
            elif t is ev.RequestRefused and e.what == "history":
                self._unload(e.room)  # refused (the model says why): PgUp may ask again
            elif t is ev.ConnectionLost and self.loading:
                for room in list(self.loading):
                    self._unload(room)  # no answer is coming on this session
            elif t is ev.RoomJoined and e.room not in self.loaded and self.enabled:
                # a room joined later (/join): its previous lines too, above its backfill
                self._joined[e.room] = self._claim(e.room, self._recent(e.room))
            keep.append(e)
        if logged and self.enabled:
            self.writer.put(self.circle, self.epoch, direct, logged)
        return keep, pages

    def _own_post(self, e: ev.PostAcknowledged):
        """Direct mode: our post, acknowledged with its Lamport stamp, as the event peers got
        (with what we signed: a peer serves it again from the log as we signed it)."""
        entry = self.chat.pending.get(e.local_id)
        if entry is None or not isinstance(e.seq, int) or e.seq <= 0:
            return None
        name, line = entry
        return ev.MessageReceived(
            name, e.seq, line.nick, line.text, line.ts, line.kind == m.ACTION, mine=True, signed=e.signed
        )

    def serve(self, backend) -> None:
        """Direct mode: the session's peer answers history (and pages) from this log too."""
        serve = getattr(backend, "serve_history", None)
        if self.direct and self.enabled and serve is not None:
            serve(peer_history(self.log, self.circle, self.lock))

    def _connected(self, epoch) -> None:
        epoch = epoch if isinstance(epoch, int) and epoch >= 0 else 0
        if epoch == self.epoch:
            return
        self.epoch = epoch
        self.low.clear()  # (in place: ingest holds it)
        for room, keys in self.seen.items():
            seqs = [k[2] for k in keys if k[0] == "s" and k[1] == epoch]
            if seqs:
                self.low[room] = min(seqs)

    def after(self, pages: list) -> None:
        """After the model applied a batch: early backfill and relay pages go on top of their rooms."""
        joined, self._joined = self._joined, {}
        for room, fresh in joined.items():
            self._show(room, fresh)
        early, self._early = self._early, {}
        for room, events in early.items():
            events.sort(key=lambda e: e.seq)
            self._prepend(room, events)
        for page in pages:
            self._page(page)

    # ------------------------------------------------------------------ paging back

    def older(self, name: str) -> str:
        """Load the page before the top of room `name`: "log", "relay" (asked; a HistoryPage
        will answer), "start" (nothing older) or "" (nothing to do now)."""
        room = self.chat.rooms.get(name)
        if room is None or name in self.loading or name in self.complete:
            return ""
        if self.enabled:
            cursor = self.cursor.get(name) or self._top_key(room)
            if cursor is not None:
                for _ in range(5):  # pages that were all shown already: the next one
                    try:
                        with self.lock:
                            lines = self.log.before(cursor, PAGE)
                    except StoreError:
                        break
                    if not lines:
                        break
                    if self._show_log_lines(name, lines):
                        return "log"
                    cursor = lines[0]
        page_back = getattr(self.backend_of(), "page_back", None)
        # below the oldest room sequence shown (relay), or the oldest Lamport stamp (direct mode:
        # the peers answer from their logs)
        low = self._stamp_low(room) if self.direct else self.low.get(name)
        if (
            page_back is not None
            and low is not None
            and low > 1
            and self.chat.state in ("connected", "stalled")
        ):
            try:
                page_back(name, low, RELAY_PAGE)
            except Exception:
                pass
            else:
                self.loading[name] = line = self._local("loading older messages…", room)
                room.lines = deque([line, *room.lines], maxlen=max(m.SCROLLBACK, len(room.lines) + 1))
                self.chat.changes.rooms.add(name)
                return "relay"
        self._start(name)
        return "start"

    @staticmethod
    def _stamp_low(room: m.Room) -> int | None:
        """Direct mode: the lowest Lamport stamp of a message the room shows."""
        stamps = [x.seq for x in room.lines if x.kind <= m.ACTION and x.seq > 0]
        return min(stamps) if stamps else None

    def _unload(self, name: str) -> None:
        """Take a room's "loading older messages…" line away: no page is coming."""
        line = self.loading.pop(name, None)
        room = self.chat.rooms.get(name)
        if line is not None and room is not None and line in room.lines:
            room.lines.remove(line)
            self.chat.changes.rooms.add(name)

    def _top_key(self, room: m.Room) -> Line | None:
        """A log key just below the oldest room event the room shows (for a room none of whose
        lines came from the log: paging the log starts there)."""
        for x in room.lines:
            if x.kind <= m.AWAY and x.nick:
                seq = x.seq if (x.seq > 0 and not self.direct) else 0
                return Line(self.circle, room.name, "message", "", "", x.ts, seq, 0, self.epoch, _BIG)
        return None

    def _page(self, page: ev.HistoryPage) -> None:
        name = page.room
        room = self.chat.rooms.get(name)
        if name not in self.loading or room is None:
            return  # not asked for (or the room is gone): ignore
        self._unload(name)
        before = page.before if isinstance(page.before, int) else 0
        seen = self.seen.setdefault(name, set())
        events = []
        for e in page.events if isinstance(page.events, tuple | list) else ():
            if type(e) not in ROOM_EVENTS or e.room != name or not isinstance(e.seq, int):
                continue
            if not 0 < e.seq < before:
                continue
            key = self._key(e)
            if key in seen:
                continue
            seen.add(key)
            if not e.history:
                e = _as_history(e)
            events.append(e)
        events.sort(key=lambda e: (e.seq, _nick(e)))
        if events:
            if not self.direct:
                self._lower(name, events[0].seq)
            for line, e in zip(self._prepend(name, events), events, strict=False):
                self.key_of[line.serial] = self._key(e)
            if self.enabled:
                self.writer.put(self.circle, self.epoch, self.direct, events)
        # nothing older: the relay said so (or sent nothing); peers said so (an empty page that
        # is not complete is peers that did not answer in time: PgUp may ask again)
        if page.complete is True or (events and events[0].seq <= 1) or (not events and not self.direct):
            self._start(name)
        self.chat.changes.rooms.add(name)

    def _start(self, name: str) -> None:
        room = self.chat.rooms.get(name)
        if room is None or name in self.complete:
            return
        self.complete.add(name)
        line = self.starts[name] = self._local(f"start of {room.label}'s history", room)
        room.lines = deque([line, *room.lines], maxlen=max(m.SCROLLBACK, len(room.lines) + 1))
        self.chat.changes.rooms.add(name)

    def _local(self, text: str, room: m.Room) -> m.Line:
        chat = self.chat
        ts = room.lines[0].ts if room.lines else chat.clock()
        chat._serial += 1
        return m.Line(chat._serial, m.INFO, ts, text=text, day=chat.day_of(ts), history=True)

    def _prepend(self, name: str, events: list) -> list[m.Line]:
        """Model lines for history `events` (oldest first), put at the top of room `name`. The
        model makes them as it makes a backfill's lines (in a scratch room)."""
        chat = self.chat
        room = chat.rooms.get(name)
        if room is None or not events:
            return []
        scratch = m.Room(name, deque())
        scratch.joined = room.joined
        chat.rooms[name] = scratch
        try:
            for e in events:
                chat.apply(e)
        finally:
            chat.rooms[name] = room
        new = list(scratch.lines)
        old = list(room.lines)
        marks = (self.loading.get(name), self.starts.get(name))
        top = 0
        while top < len(old) and old[top] in marks:
            top += 1  # "loading…" and "start of history" stay on top
        room.lines = deque([*old[:top], *new, *old[top:]], maxlen=max(m.SCROLLBACK, len(old) + len(new)))
        chat.changes.rooms.add(name)
        return new

    def settle(self, name: str | None) -> None:
        """The view is at the bottom again: a room that grew past the scrollback while scrolled up
        is trimmed back to its newest lines (and paging starts again from there)."""
        room = self.chat.rooms.get(name) if name else None
        if room is None or room.lines.maxlen in (None, m.SCROLLBACK) or name in self.loading:
            return
        if len(room.lines) > m.SCROLLBACK:
            self.cursor.pop(name, None)
            self.complete.discard(name)
            self.starts.pop(name, None)
            cut = len(room.lines) - m.SCROLLBACK
            seen = self.seen.get(name, set())
            for x in list(room.lines)[:cut]:  # trimmed: paging may bring them back
                key = self.key_of.pop(x.serial, None)
                self.pos_of.pop(x.serial, None)
                seen.discard(key)
            room.lines = deque(room.lines, maxlen=m.SCROLLBACK)
            if not self.direct:  # the relay pages from the new top
                seqs = [
                    x.seq
                    for x in room.lines
                    if x.seq > 0
                    and x.kind <= m.AWAY
                    and self.key_of.get(x.serial, ("s", self.epoch))[1] == self.epoch
                ]
                if seqs:
                    self.low[name] = min(seqs)
        else:
            room.lines = deque(room.lines, maxlen=m.SCROLLBACK)
        self.chat.changes.rooms.add(name)

    # ------------------------------------------------------------------ search

    def search(self, words: str, limit: int = 200) -> list[Line]:
        """Lines of this circle matching `words` (`nick:`, `room:`, prefixes), newest first."""
        if self.log is None:
            raise StoreError("there is no chat log (--no-log, or it could not be opened)")
        # what is on screen may still be on its way to the disk: let the writer finish first (a
        # search for a line that arrived a moment ago must find it); a stuck disk costs at most
        # SEARCH_WAIT, then the search reads what is stored
        self.drain(SEARCH_WAIT)
        with self.lock:
            return self.log.search(words, limit, circle=self.circle)

    def jump(self, pos: int) -> tuple[str, m.Line] | str:
        """The room and the model line of the log's line at `pos`, the room open on it with the
        lines around it (pages loaded from the log as needed); or a one-line reason."""
        if self.log is None:
            return "there is no chat log"
        try:
            with self.lock:
                target = self.log.at(pos)
        except StoreError as e:
            return str(e)
        if target is None:
            return "that line is no longer in the log"
        name = target.room
        room = self.chat.rooms.get(name)
        if room is None:
            room = self.chat.add_room(name)
            try:
                with self.lock:
                    around = self.log.around(pos, 20)  # the line with context on each side
            except StoreError as e:
                return str(e)
            self._show_log_lines(name, around)
        for _ in range(JUMP_PAGES):
            found = self._find(room := self.chat.rooms[name], target)
            if found is not None:
                return name, found
            if self.older(name) != "log":
                break
        found = self._find(self.chat.rooms[name], target)
        return (name, found) if found is not None else "that line is too far back to show here"

    def _find(self, room: m.Room, target: Line) -> m.Line | None:
        pos_of = self.pos_of
        for x in room.lines:
            if pos_of.get(x.serial) == target.pos:
                return x
        key = self._line_key(target)
        for x in room.lines:  # shown live (not read from the log): the same event
            if x.kind <= m.AWAY and x.ts == target.ts:
                if key[0] == "s" and x.seq == target.seq and target.epoch == self.epoch:
                    return x
                if self.direct and target.mid in (
                    direct_mid(room.name, target.nick, x.seq, x.text),
                    direct_mid(room.name, target.nick, x.seq),
                ):
                    return x
        return None

    # ------------------------------------------------------------------ the end

    def drain(self, timeout: float = 5.0) -> bool:
        return self.writer.drain(timeout) if self.writer is not None else True

    def close(self) -> None:
        if self.writer is not None:
            self.writer.drain(2.0)
            self.writer.stop()
        if self.log is not None:
            with self.lock:
                self.log.close()


def _as_history(e):
    import dataclasses

    return dataclasses.replace(e, history=True)
