"""The udproom chat app: three panes, topic, input and status lines.

`ChatApp` is composition, bindings and routing; what it routes to lives beside it: the session
lifecycle in `lifecycle.py` (`Sessions`), the slash commands in `handlers.py` (`Commands`), the
status and topic lines in `statusline.py`, the state in `model.py`, the app's own log, paging back
and `/search` in `history.py` and `search.py` (`LogCommands`).

Networking runs in one async worker on Textual's own loop (`_network`). Backend events are
buffered by `_emit` and folded into the ChatModel in batches (`_flush`), at most every
`flush_interval` seconds, so a flood of messages costs one screen update per batch.
"""

from __future__ import annotations

import gc
import time
from datetime import tzinfo

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Static

from udproom.protocol import events as ev
from udproom.protocol.backend import OutboxFull
from udproom.protocol.names import is_direct

from . import commands
from . import config as config_mod
from . import history as history_mod
from . import model as m
from .handlers import Commands
from .keys import install_alt_digits
from .lifecycle import Sessions
from .palette import UdproomCommands
from .screens import ConfirmPaste, HelpScreen, QuickSwitcher
from .search import LogCommands
from .session import Spec
from .statusline import StatusLine, TopicLine
from .theme import DEFAULT_THEME, Palette, palette_for, theme_names
from .vault import Vault
from .widgets import ChatInput, MemberList, MessageView, RoomList, _ClickList

NARROW = 80
PASTE_LINES = 5  # a longer multi-line paste asks before sending one message per line

# Alt+1..Alt+9 arrive as `alt+N` in real terminals too (keys.py remaps Textual's ESC+digit
# table, which would otherwise report the macOS Option characters ¡ ™ £ ¢ ∞ § ¶ • ª).
ALT_DIGITS = install_alt_digits()

KEY_NAMES = {
    "pageup": "PgUp",
    "pagedown": "PgDn",
    "up": "↑",
    "down": "↓",
    "tab": "Tab",
    "escape": "Esc",
    "enter": "Enter",
    "end": "End",
}


def key_label(key: str) -> str:
    parts = key.split("+")
    out = []
    for p in parts:
        if p in KEY_NAMES:
            out.append(KEY_NAMES[p])
        elif p in ("ctrl", "alt", "shift"):
            out.append(p.capitalize())
        else:
            out.append(p.upper() if len(p) <= 3 else p)
    return "+".join(out)


class FlushRequest(Message):
    pass


class ChatApp(Sessions, Commands, LogCommands, Vault, App[int]):
    CSS_PATH = "udproom.tcss"
    TITLE = "udproom"
    COMMAND_PALETTE_BINDING = "f10"
    ENABLE_COMMAND_PALETTE = True
    # udproom's commands only: Textual's system commands (Keys, Theme, Maximize, Screenshot...)
    # do nothing useful here (the theme is chosen with --theme) and its Quit would skip the goodbyes
    COMMANDS = {UdproomCommands}

    BINDINGS = [
        *[
            Binding(
                f"alt+{n}",
                f"goto_room({n})",
                f"Jump to room {n}",
                show=False,
                priority=True,
                key_display=f"Alt+{n}",
            )
            for n in range(1, 10)
        ],
        Binding("ctrl+n,alt+down", "next_room", "Next room", priority=True),
        Binding("ctrl+p,alt+up", "prev_room", "Previous room", priority=True),
        Binding("alt+a", "next_activity", "Next room with activity (mentions first)", priority=True),
        Binding("ctrl+k", "quick_switch", "Quick switcher: filter rooms, join a new one", priority=True),
        Binding("pageup", "scroll(-1)", "Scroll messages up a page"),
        Binding("pagedown", "scroll(1)", "Scroll messages down a page"),
        Binding(
            "ctrl+end,alt+end",
            "scroll_bottom",
            "Jump to the newest message (End too, when the input is empty)",
            priority=True,
        ),
        Binding("ctrl+r", "retry", "Send undelivered messages again", priority=True),
        Binding("f2", "toggle_rooms", "Show/hide the rooms pane"),
        Binding("f3", "toggle_members", "Show/hide the members pane"),
        Binding("f1", "help", "Help: keys and commands"),
        Binding("ctrl+q", "quit", "Leave every room and quit", priority=True),
        Binding("escape", "back", "Back to the connect screen (before the first connection)", show=False),
    ]

    def __init__(
        self,
        spec: Spec | None = None,
        *,
        backend=None,
        bell: bool | None = None,
        tz: tzinfo | None = None,
        clock=time.time,
        config: config_mod.Config | None = None,
        save_config: bool = True,
        flush_interval: float = 0.05,
        connect_error: str = "",
        timing=None,
        theme: str | None = None,
        log=None,
        identity: str = "",
    ) -> None:
        super().__init__()
        self.identity = identity  # --identity FILE: the key every session of this run uses
        self.config = config if config is not None else config_mod.load()
        wanted = theme or self.config.theme
        self.theme = wanted if wanted in theme_names() else DEFAULT_THEME
        self.save_config = save_config
        self.spec = spec
        self._initial_backend = backend
        self.connect_error = connect_error
        self.timing = timing  # protocol Timing for backends built from a spec (tests: fast presence)
        self.bell_enabled = self.config.bell if bell is None else bell
        nick = spec.nick if spec else (backend.nick if backend is not None else "")
        self.chat = m.ChatModel(nick, tz=tz, clock=clock)
        # the app's own log (history.py): `log` False = --no-log, a ChatLog = that one (tests),
        # None = the config's choice (on by default), under the data directory
        backend_of = lambda: self.backend  # noqa: E731 (paging back asks the session's backend)
        if log is None or isinstance(log, bool):
            enabled = self.config.log if log is None else log
            self.history = history_mod.History.open(self.chat, enabled, backend_of)
        else:
            self.history = history_mod.History(self.chat, log, backend_of=backend_of)
        self.backend = None
        self.flush_interval = flush_interval
        self._inbox: list = []
        self._flush_requested = False
        self._last_flush = 0.0
        self.flushes = 0  # batches applied (tests and the benchmark read it)
        self.completer = commands.Completer()
        self.show_rooms: bool | None = None  # None: by width
        self.show_members: bool | None = None
        self._narrow = False
        self._from_connect = False  # this session was chosen on the connect screen
        self._errors = 0  # inline errors shown (a submitted line that caused one stays in the input)
        self._remember: Spec | None = None  # saved to "recent" once it has connected
        self._server = None  # host mode: the relay running in this app
        self._keep_nick = False  # a connect-screen session: the saved nick follows the one in use

    @property
    def palette(self) -> Palette:
        """The colours of the current theme, for text drawn in Python."""
        return palette_for(self.current_theme)

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield TopicLine(id="topic")
        with Horizontal(id="panes"):
            with VerticalScroll(id="rooms-pane"):
                yield RoomList(self.chat, id="rooms")
            with Vertical(id="centre"):
                yield MessageView(self.chat, id="messages")
            with VerticalScroll(id="members-pane"):
                yield MemberList(self.chat, id="members")
        with Horizontal(id="input-row"):
            yield Static(id="prompt")
            yield ChatInput(id="input", placeholder="type a message, /help for commands")
        yield StatusLine(id="status")

    def on_mount(self) -> None:
        _freeze_startup()
        self.messages = self.query_one(MessageView)
        self.room_list = self.query_one(RoomList)
        self.member_list = self.query_one(MemberList)
        self.input = self.query_one(ChatInput)
        self.topic_line = self.query_one(TopicLine)
        self.status_line = self.query_one(StatusLine)
        self.input.focus()
        self._apply_panes(self.size.width)
        self.refresh_ui(full=True)
        self.theme_changed_signal.subscribe(self, lambda _theme: self.refresh_ui(full=True))
        self.set_interval(1.0, self.tick)
        self._catch_hangup()
        if self._initial_backend is not None:
            self.start(backend=self._initial_backend)
        elif self.spec is not None:
            self.start(spec=self.spec)
        else:
            self.show_connect(self.connect_error)

    def on_resize(self, event) -> None:
        self._apply_panes(event.size.width)
        self._update_status(event.size.width)  # at once: the old layout would be cut at the new width

    def _apply_panes(self, width: int) -> None:
        narrow = width < NARROW
        if narrow != self._narrow:
            self.show_rooms = self.show_members = None  # crossing the threshold resets toggles
        self._narrow = narrow
        rooms = (not narrow) if self.show_rooms is None else self.show_rooms
        members = (not narrow) if self.show_members is None else self.show_members
        self.query_one("#rooms-pane").display = rooms
        self.query_one("#members-pane").display = members
        self.set_class(narrow, "-narrow")

    def action_toggle_rooms(self) -> None:
        self.show_rooms = not self.query_one("#rooms-pane").display
        self._apply_panes(self.size.width)

    def action_toggle_members(self) -> None:
        self.show_members = not self.query_one("#members-pane").display
        self._apply_panes(self.size.width)

    # ------------------------------------------------------------------ event batching

    def _emit(self, event) -> None:
        """The backend's callback (runs on this loop): buffer, and ask for one flush."""
        self._inbox.append(event)
        if not self._flush_requested:
            self._flush_requested = True
            self.post_message(FlushRequest())

    def on_flush_request(self, message: FlushRequest) -> None:
        delay = self._last_flush + self.flush_interval - time.monotonic()
        if delay > 0:
            self.set_timer(delay, self._flush)
        else:
            self._flush()

    def _flush(self) -> None:
        self._flush_requested = False
        if not self.is_running or not hasattr(self, "messages"):
            return
        batch, self._inbox = self._inbox, []
        self._last_flush = time.monotonic()
        if not batch:
            return
        self.flushes += 1
        batch, pages = self.history.ingest(batch)  # drops what the log already showed; queues the rest
        apply = self.chat.apply
        for event in batch:
            if type(event) is ev.PassphraseNeeded:
                self.passphrase_needed(event)
                continue
            apply(event)
        self.history.after(pages)
        self._log_notice()
        if self._remember is not None and self.chat.connected_once:
            self._remember_connected()
        elif self._keep_nick and self.chat.nick != self.config.nick and self.chat.state == m.Conn.CONNECTED:
            self.config.nick = self.chat.nick  # the nick in use, not one that was refused
            self._save_config()
        backend = self.backend
        if (
            backend is not None
            and backend.nick != self.chat.nick
            and self.chat.state in (m.Conn.CONNECTED, m.Conn.STALLED)
        ):
            self.chat.set_nick(backend.nick)
        self._refresh_mode()
        self.refresh_ui()

    def _refresh_mode(self) -> bool:
        """Re-read the backend's mode ("direct, 4 peers" changes as peers come and go) and, in
        direct mode, the addresses to give others once the socket is bound. True if changed."""
        backend = self.backend
        chat = self.chat
        if backend is None:
            return False
        changed = False
        try:
            mode = str(backend.mode)
        except Exception:
            return False
        if mode != chat.mode:
            chat.mode = mode
            chat.changes.status = changed = True
        if not chat.share and mode.startswith("direct") and getattr(backend, "running", True):
            addresses = getattr(backend, "addresses", None)
            if addresses is not None:
                try:
                    chat.share = list(addresses())
                    chat.changes.status = changed = True
                except Exception:
                    pass
        return changed

    def refresh_ui(self, full: bool = False) -> None:
        if hasattr(self, "messages") and self.messages.follow:
            self.history.settle(self.chat.active)  # back at the bottom: the scrollback cap again
        changes = self.chat.take_changes()
        if not hasattr(self, "messages"):
            return
        chat = self.chat
        current = chat.current.name
        if full or changes.active_changed or current in changes.rooms:
            self.messages.rebuild()
        if full or changes.room_list or changes.active_changed:
            self.room_list.redraw()
        if full or changes.active_changed or current in changes.members or changes.status:
            self.member_list.redraw()
        if full or changes.active_changed or current in changes.topics:
            self.topic_line.show(chat)
        if full or changes.status or changes.active_changed:
            self.query_one("#prompt", Static).update(Text(f"{chat.nick} ›", f"bold {self.palette.title}"))
        self._update_status()
        if changes.mention and self.bell_enabled:
            self.bell()

    @property
    def events_waiting(self) -> bool:
        """Backend events not yet on screen (a flush is due)."""
        return bool(self._inbox) or self._flush_requested

    def tick(self) -> None:
        """Once a second: forget long-gone members, count down retries, expire notes."""
        self.chat.forget_timed_out(self.chat.clock())
        self._log_notice()
        if self.chat.changes.members:
            self.refresh_ui()
        if (
            self._refresh_mode()
            or self.chat.state in (m.Conn.RECONNECTING, m.Conn.STALLED)
            or self.status_line.note
            or self.chat.sticky
        ):
            self._update_status()

    def _update_status(self, width: int | None = None) -> None:
        if not hasattr(self, "status_line"):
            return  # not mounted yet
        follow = self.messages.follow
        new_below = 0 if follow else self.messages.new_below()
        self.status_line.show(self.chat, follow, new_below, width or self.size.width or 80)

    def flash(self, text: str, until_room: str | None = None) -> None:
        """A short-lived note in the status line: gone after a few seconds, at the next keystroke
        in the input, or (`until_room`) as soon as that room is open."""
        self.status_line.flash(text, until_room)
        self._update_status()

    @on(ChatInput.Changed, "#input")
    def _typed(self, event: ChatInput.Changed) -> None:
        if event.value and self.status_line.typed(self.chat):  # typing (not the clear after Enter)
            self._update_status()

    # ------------------------------------------------------------------ input

    @on(ChatInput.Submitted, "#input")
    def _submitted(self, event: ChatInput.Submitted) -> None:
        text = event.value  # the input is already empty (it may hold what was typed after Enter)
        self.input.remember(text)
        self.completer.reset()
        if not text.strip():
            return
        errors = self._errors
        try:
            cmd = commands.parse(text)
        except commands.CommandError as e:
            self.error(str(e))
            cmd = None
        else:
            if cmd is None:
                self.send(text[1:] if text.startswith("//") else text)
            else:
                getattr(self, f"cmd_{cmd.name}")(cmd)
        if self._errors != errors and not self.input.value:
            # refused (too long, bad command...): keep the text to fix it
            self.input.value = text
            self.input.cursor_position = len(text)
        self.refresh_ui()

    @on(ChatInput.MultiPaste)
    def _multi_paste(self, event: ChatInput.MultiPaste) -> None:
        lines = event.lines
        if len(lines) <= PASTE_LINES:
            self._send_lines(lines)
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self._send_lines(lines)
            else:
                self.input.value = " ".join(x.strip() for x in lines)
                self.input.cursor_position = len(self.input.value)

        self.push_screen(ConfirmPaste(lines, self.chat.current.label), answer)

    def _send_lines(self, lines: list[str]) -> None:
        """A pasted block: each line is its own message, in order (never a command)."""
        errors = self._errors
        for i, line in enumerate(lines):
            self.send(line)
            if self._errors != errors:
                rest = lines[i:]
                self.input.value = " ".join(x.strip() for x in rest)
                self.input.cursor_position = len(self.input.value)
                break
        self.refresh_ui()

    @on(ChatInput.Complete)
    def _complete(self) -> None:
        room = self.chat.current
        nicks = [n for n, mb in room.members.items() if n != self.chat.nick and not mb.timed_out]
        if room.direct:
            nicks = [room.name[1:]]
        result = self.completer.complete(
            self.input.value, self.input.cursor_position, nicks, list(self.chat.rooms)
        )
        if result is not None:
            value, cursor = result
            self.input.value = value
            self.input.cursor_position = cursor

    # ------------------------------------------------------------------ actions

    def action_goto_room(self, n: int) -> None:
        order = self.chat.room_order()
        if 1 <= n <= len(order):
            self._switch(order[n - 1])
        else:
            self.flash(f"no room {n}")

    def _switch(self, name: str) -> None:
        if self.chat.switch(name):
            self.completer.reset()
            self.refresh_ui()

    def _step(self, step: int) -> None:
        order = self.chat.room_order()
        if not order:
            return
        i = order.index(self.chat.active) if self.chat.active in order else -1
        self._switch(order[(i + step) % len(order)])

    def action_next_room(self) -> None:
        self._step(1)

    def action_prev_room(self) -> None:
        self._step(-1)

    def action_next_activity(self) -> None:
        order = self.chat.room_order()
        if not order:
            return
        i = order.index(self.chat.active) if self.chat.active in order else -1
        rotated = order[i + 1 :] + order[: i + 1]
        for pred in (lambda r: r.mentions > 0, lambda r: r.unread > 0):
            for name in rotated:
                if name != self.chat.active and pred(self.chat.rooms[name]):
                    self._switch(name)
                    return
        self.flash("no activity")

    def action_quick_switch(self) -> None:
        if self.screen is not self.screen_stack[0]:
            return
        rooms = [
            (n, self.chat.rooms[n].label, self.chat.rooms[n].unread, self.chat.rooms[n].mentions)
            for n in self.chat.room_order()
        ]
        self.push_screen(QuickSwitcher(rooms, self.chat.known_nicks()), self._switcher_done)

    def _switcher_done(self, choice: str | None) -> None:
        if not choice:
            return
        kind, _, name = choice.partition(":")
        if kind == "room":
            self._switch(name)
        elif is_direct(name):
            self.cmd_msg(commands.Command("msg", (name[1:],)))
            self.refresh_ui()
        else:
            self.cmd_join(commands.Command("join", (name,)))
            self.refresh_ui()

    def action_scroll(self, direction: int) -> None:
        at_top = self.messages.scroll_y <= 0  # (reaching the top posts TopReached itself)
        self.messages.page(direction)
        if direction < 0 and at_top:
            self.older()
        elif self.messages.follow:
            self.refresh_ui()  # back at the bottom: pages loaded above are trimmed (history.settle)
        self._update_status()

    def action_scroll_bottom(self) -> None:
        self.messages.to_bottom()
        self.refresh_ui()
        self._update_status()

    def action_retry(self) -> None:
        room = self.chat.active
        failed = self.chat.failed_posts(room) if room else []
        if not failed:
            self.flash("nothing to retry")
            return
        if not self._need_backend():
            return
        for line in failed:
            try:
                new_id = self.backend.retry(line.local_id)
            except (OutboxFull, KeyError, ValueError) as e:
                self.error(f"cannot retry: {e}")
                break
            self.chat.retarget_post(line.local_id, new_id)
        self.refresh_ui()

    def action_help(self) -> None:
        if self.screen is not self.screen_stack[0]:
            return
        self.push_screen(HelpScreen(self.key_help()))

    def key_help(self) -> list[tuple[str, str]]:
        """(keys, description) rows generated from the bindings."""
        rows: list[tuple[str, str]] = []
        seen_goto = False
        for b in [*self.BINDINGS, *ChatInput.BINDINGS]:
            if b.action.startswith("goto_room"):
                if not seen_goto:
                    rows.append(("Alt+1…9", "Jump to room 1…9"))
                    seen_goto = True
                continue
            keys = " / ".join(key_label(k) for k in b.key.split(","))
            rows.append((keys, b.description))
        rows.append((key_label(self.COMMAND_PALETTE_BINDING), "Command palette"))
        return rows

    # ------------------------------------------------------------------ mouse

    @on(_ClickList.Picked)
    def _picked(self, message: _ClickList.Picked) -> None:
        if message.sender is self.room_list:
            self._switch(message.key)
        elif message.key != self.chat.nick:
            self.cmd_msg(commands.Command("msg", (message.key,)))
            self.refresh_ui()
        self.input.focus()


_frozen = False
#: young objects between two collections (CPython's default is 700). A flood allocates a lot
#: (events, lines, strips), and every 100 young collections make a full one, which walks every
#: object on the UI's thread (tens of ms): at 700 that was several times a second under 5,000
#: messages/s, so a keypress often waited for one. Ten times fewer full collections; a young one
#: walks at most this many objects (a millisecond).
GC_YOUNG = 7000


def _freeze_startup() -> None:
    """Once per process, when the first app is mounted: what was built to start (modules, classes,
    styles, the widgets: tens of thousands of objects that live as long as the process) leaves
    the garbage collector's generations (gc.freeze), and collections are rarer (GC_YOUNG). A full
    collection runs on the UI's thread, between a keypress and its echo, and walks every tracked
    object: now only what the chat made since. (benchmarks/bench_tui.py: keypress latency during
    a flood.)"""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(GC_YOUNG, older, oldest)
