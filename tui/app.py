"""The udproom chat app: three panes, topic, input and status lines.

Networking runs in one async worker on Textual's own loop (`_network`). Backend events are
buffered by `_emit` and folded into the ChatModel in batches (`_flush`), at most every
`flush_interval` seconds, so a flood of messages costs one screen update per batch.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import time
from datetime import tzinfo

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Static

from udproom.protocol import events as ev
from udproom.protocol.backend import OutboxFull
from udproom.protocol.names import MAX_AWAY_BYTES, MAX_TOPIC_BYTES, NameError_, check_text, is_direct

from . import commands
from . import config as config_mod
from . import model as m
from .keys import install_alt_digits
from .palette import UdproomCommands
from .screens import ConfirmPaste, ConfirmQuit, ConnectScreen, HelpScreen, QuickSwitcher
from .session import Spec, SpecError, check
from .statusline import StatusLine, TopicLine
from .theme import DEFAULT_THEME, Palette, palette_for, theme_names
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


class NetReady(Message):
    pass


class NetFailed(Message):
    def __init__(self, spec: Spec | None, reason: str) -> None:
        super().__init__()
        self.spec = spec
        self.reason = reason


class FlushRequest(Message):
    pass


def describe_error(e: BaseException, spec: Spec | None = None) -> str:
    if isinstance(e, OSError):
        where = spec.address if spec and spec.address else "that address"
        if e.errno == errno.EADDRINUSE:
            return f"cannot listen on {where}: the port is already in use"
        if e.errno in (errno.EACCES, errno.EPERM):
            return f"cannot listen on {where}: permission denied (ports below 1024 need root)"
        if e.errno == errno.EADDRNOTAVAIL:
            return f"cannot use {where}: no interface of this machine has that address"
        if isinstance(e, __import__("socket").gaierror):
            return f"cannot resolve {where}: {e.strerror or e}"
        return f"network error: {e.strerror or e}"
    if isinstance(e, ImportError):
        return f"networking is not available: {e}"
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text


class ChatApp(App[int]):
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
    ) -> None:
        super().__init__()
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
        self.set_interval(1.0, self._tick)
        self._catch_hangup()
        if self._initial_backend is not None:
            self.start(backend=self._initial_backend)
        elif self.spec is not None:
            self.start(spec=self.spec)
        else:
            self.show_connect(self.connect_error)

    def _catch_hangup(self) -> None:
        """The terminal closed (SIGHUP) or a polite kill (SIGTERM): say goodbye like Ctrl+Q
        instead of letting the others see us time out."""
        self._signals: list[int] = []
        try:
            loop = asyncio.get_running_loop()
            for sig, handler in ((signal.SIGHUP, self._hangup), (signal.SIGTERM, self.polite_quit)):
                loop.add_signal_handler(sig, handler)
                self._signals.append(sig)
        except (AttributeError, NotImplementedError, RuntimeError, ValueError):
            pass  # no such signals (Windows) or not the main thread

    def _hangup(self) -> None:
        """The terminal is gone: say goodbye on the network, then end the process without
        touching the screen (Textual's shutdown writes to the dead terminal and blocks forever)."""
        self.run_worker(self._leave_then_exit(), group="quit")

    async def _leave_then_exit(self) -> None:
        await self._say_goodbye(1.0)
        self._exit_process()

    def _exit_process(self) -> None:
        os._exit(0)

    def on_unmount(self) -> None:
        try:
            loop = asyncio.get_running_loop()
            for sig in getattr(self, "_signals", []):
                loop.remove_signal_handler(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass

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

    # ------------------------------------------------------------------ sessions

    def show_connect(self, error: str = "", spec: Spec | None = None) -> None:
        self.push_screen(ConnectScreen(self.config, error, spec), self._connect_chosen)

    def _connect_chosen(self, spec: Spec | None) -> None:
        if spec is None:
            return
        self.start(spec=spec)
        self._from_connect = self.chat.esc_back = True

    def _remember_connected(self) -> None:
        """Save the address to "recent" only once it has connected. The nick, mode and rooms are
        remembered only when chosen on the connect screen (a run with `--nick throwaway` does not
        overwrite them); after that the nick follows the one in use (a refused one is replaced
        by the one the relay accepts)."""
        spec, self._remember = self._remember, None
        if spec is None or not self.save_config:
            return
        if self._from_connect:
            self.config.remember(spec.mode, spec.address, spec.nick, spec.rooms)
            self._keep_nick = True
        else:
            self.config.remember(self.config.mode, spec.address, self.config.nick, self.config.rooms)
        self._save_config()

    def _save_config(self) -> None:
        err = config_mod.save(self.config)
        if err:
            self.chat.add_local(None, m.ERROR, err)

    def action_back(self) -> None:
        """Esc: back to the connect screen while a session chosen there has never connected."""
        if not (self._from_connect and not self.chat.connected_once and self.spec is not None):
            return
        spec = self.spec
        self._stop()
        self.chat.set_state(m.Conn.DISCONNECTED)
        self.show_connect(f"no answer from {spec.address}" if spec.mode == "join" else "", spec)
        self.refresh_ui()

    def _stop(self) -> None:
        self._close_backend()
        self.backend = None
        self.workers.cancel_group(self, "net")

    def _close_backend(self) -> None:
        """Close the session's backend, if any: it leaves its rooms and says Bye (its worker ends)."""
        if self.backend is not None:
            try:
                self.backend.close()
            except Exception:
                pass

    def start(self, spec: Spec | None = None, backend=None, running=None, held=()) -> None:
        """Drop the current session (if any) and run a new one. `running`: the task of a backend
        already started (by /connect, which waited for it to answer); `held`: its events so far."""
        self._close_backend()
        self.backend = None
        self._from_connect = self._keep_nick = False
        self._remember = spec
        if spec is not None:
            self.chat.reset_session(spec.nick, spec.address, spec.rooms)
        else:
            self.chat.reset_session(backend.nick if backend is not None else self.chat.nick)
        self._inbox.clear()
        self.spec = spec
        self._network(spec, backend, running)
        for event in held:
            self._emit(event)
        self.refresh_ui(full=True)

    @work(exclusive=True, group="net", exit_on_error=False)
    async def _network(self, spec: Spec | None, backend, running=None) -> None:
        server = None
        try:
            if backend is None:
                from . import session

                try:
                    backend, server, share = await session.build(spec, timing=self.timing)
                except (OSError, SpecError, ImportError, ValueError) as e:
                    self.post_message(NetFailed(spec, describe_error(e, spec)))
                    return
                self.chat.share = share
                self._server = server
            self.backend = backend
            self.chat.mode = backend.mode
            # direct mode: message seq numbers are Lamport stamps; the view orders by them
            self.chat.stamp_order = str(backend.mode).startswith("direct")
            self.post_message(NetReady())
            await (running if running is not None else backend.run(self._emit))
        except asyncio.CancelledError:
            if backend is not None:
                backend.close()
            if running is not None:
                running.cancel()
            raise
        except Exception as e:
            self.post_message(NetFailed(None, describe_error(e, spec)))
        finally:
            if server is not None:
                if self._server is server:
                    self._server = None
                try:
                    await server.stop()
                except Exception:
                    pass

    def on_net_ready(self, message: NetReady) -> None:
        self.refresh_ui(full=True)

    def on_net_failed(self, message: NetFailed) -> None:
        self.chat.set_state(m.Conn.FAILED, message.reason)
        if message.spec is not None and self.screen is self.screen_stack[0]:
            # could not even start (bad address, port in use): back to the connect screen
            self.show_connect(message.reason, message.spec)
        else:
            self.chat.add_local(None, m.ERROR, message.reason)
        self.refresh_ui()

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
        apply = self.chat.apply
        for event in batch:
            apply(event)
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

    def _tick(self) -> None:
        self.chat.forget_timed_out(self.chat.clock())
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

    def error(self, text: str) -> None:
        self._errors += 1
        self.chat.add_local(None, m.ERROR, text)
        self.refresh_ui()

    def info(self, text: str) -> None:
        self.chat.add_local(None, m.INFO, text)
        self.refresh_ui()

    def _need_backend(self) -> bool:
        if self.backend is None:
            self.error("not connected yet: /connect HOST:PORT, or wait for the connection")
            return False
        return True

    def send(self, text: str, action: bool = False, room: str | None = None) -> None:
        room = room or self.chat.active
        if room is None:
            self.error("no room open: /join ROOM first")
            return
        if not self._need_backend():
            return
        try:
            lid = self.backend.post(room, text, action)
        except (NameError_, OutboxFull, ValueError) as e:
            self.error(str(e))
            return
        self.chat.add_own_post(room, text, action, lid)
        if room == self.chat.active:
            self.messages.follow = True  # what you just said is at the bottom: go there
        self.refresh_ui()

    # ------------------------------------------------------------------ commands

    def cmd_join(self, cmd: commands.Command) -> None:
        room = cmd.args[0]
        if room in self.chat.rooms:
            self.chat.switch(room)
            return
        if not self._need_backend():
            return
        self.chat.auto_switch.add(room)
        self.backend.join(room)
        self.flash(f"joining #{room}…", until_room=room)

    def cmd_part(self, cmd: commands.Command) -> None:
        room = cmd.args[0] if cmd.args else self.chat.active
        if room is None or room not in self.chat.rooms:
            self.error(f"you are not in {'#' + room if room and not is_direct(room) else room or 'a room'}")
            return
        if not is_direct(room) and self.backend is not None:
            self.backend.part(room)
        label = self.chat.rooms[room].label
        self.chat.remove_room(room)
        if self.chat.rooms:
            # about a room that is gone: not a line in the history of whichever room comes on screen
            self.flash(f"you left {label}")
        else:
            self.info(f"you left {label}; no room open — /join ROOM or Ctrl+K opens one, Ctrl+Q quits")

    def cmd_nick(self, cmd: commands.Command) -> None:
        if not self._need_backend():
            return
        self.backend.set_nick(cmd.args[0])
        if not self.chat.rooms:
            self.chat.set_nick(cmd.args[0])

    def cmd_me(self, cmd: commands.Command) -> None:
        self.send(cmd.rest, action=True)

    def cmd_msg(self, cmd: commands.Command) -> None:
        nick = cmd.args[0]
        if nick == self.chat.nick:
            self.error("that is you")
            return
        room = "@" + nick
        new = room not in self.chat.rooms
        errors = self._errors
        self.chat.add_room(room)
        self.chat.switch(room)
        if cmd.rest:
            self.send(cmd.rest, room=room)
        if new and self._errors != errors:  # refused at once (no one by that nick): no conversation
            said = [x.text for x in self.chat.rooms[room].lines if x.kind == m.ERROR]
            if self.chat.drop_conversation(room):
                for text in said:
                    self.chat.add_local(None, m.ERROR, text)

    def cmd_topic(self, cmd: commands.Command) -> None:
        room = self.chat.current
        if room is self.chat.status_room or room.direct:
            self.error("topics belong to rooms: /join ROOM first")
            return
        if not cmd.rest:
            self.info(f"topic of {room.label}: {room.topic}" if room.topic else f"{room.label} has no topic")
            return
        try:
            check_text(cmd.rest, MAX_TOPIC_BYTES, "topic")
        except NameError_ as e:
            self.error(str(e))
            return
        if self._need_backend():
            self.backend.set_topic(room.name, cmd.rest)

    def cmd_away(self, cmd: commands.Command) -> None:
        try:
            check_text(cmd.rest, MAX_AWAY_BYTES, "away message")
        except NameError_ as e:
            self.error(str(e))
            return
        if self._need_backend():
            # the relay's AwayChanged says it (once per room, as "you are marked away")
            self.backend.set_away(cmd.rest)

    def cmd_names(self, cmd: commands.Command) -> None:
        room = self.chat.current
        if room is self.chat.status_room:
            self.error("no room open: /join ROOM first")
            return
        members = room.sorted_members()
        parts = [mb.nick + ("" if mb.presence == "here" else f" ({mb.presence})") for mb in members]
        self.info(f"{len(members)} in {room.label}: " + ", ".join(parts))

    def cmd_help(self, cmd: commands.Command) -> None:
        for line in commands.help_lines():
            self.chat.add_local(None, m.INFO, line)
        self.info("F1 shows every key")

    def cmd_quit(self, cmd: commands.Command) -> None:
        self.ask_quit()

    def ask_quit(self) -> None:
        """/quit and the palette: like Ctrl+Q (hosting with others connected, ask first)."""
        self.run_worker(self.action_quit(), group="quit")

    def polite_quit(self) -> None:
        """Leave every room (the backend says Bye), then exit, without asking: SIGTERM, and the
        answer to "quit while hosting?"."""
        self.run_worker(self._quit_now(), group="quit")

    def hosted_others(self) -> list[str]:
        """Hosting: the nicks of the sessions our relay would cut off (everyone but us)."""
        server = self._server
        relay = getattr(server, "relay", None)
        if relay is None:
            return []
        me = self.backend.nick if self.backend is not None else self.chat.nick
        nicks = sorted((str(s.nick) for s in list(relay.sessions.values())), key=str.casefold)
        if me in nicks:
            nicks.remove(me)
        return nicks

    def run_command(self, cmd: commands.Command) -> None:
        """Run a parsed command as if typed (the command palette)."""
        getattr(self, f"cmd_{cmd.name}")(cmd)
        self.refresh_ui()

    def prefill(self, text: str) -> None:
        """Put the start of a command in the input for the user to finish."""
        self.input.value = text
        self.input.cursor_position = len(text)
        self.input.focus()

    def cmd_retry(self, cmd: commands.Command) -> None:
        self.action_retry()

    def cmd_connect(self, cmd: commands.Command) -> None:
        if self.spec is not None and self.spec.mode == "host" and cmd.rest != "!":
            self.error(
                "you are hosting this room: /connect would stop the relay for everyone; "
                f"/quit first, or /connect! {cmd.args[0]} to do it anyway"
            )
            return
        try:
            spec = check(Spec("join", cmd.args[0], self.chat.nick, self._wanted_rooms()))
        except SpecError as e:
            self.error(f"{e}; still on the current connection")
            return
        self.run_worker(self._connect_to(spec), group="connect", exclusive=True, exit_on_error=False)

    def _wanted_rooms(self) -> list[str]:
        """Every room to take along to another relay: those open, those being joined, or (none
        open yet) the ones this session was asked for."""
        rooms = [r for r in self.chat.room_order() if not is_direct(r)]
        rooms += [r for r in sorted(self.chat.auto_switch) if r not in rooms and not is_direct(r)]
        if not rooms and self.spec is not None:
            rooms = list(self.spec.rooms)
        return rooms or ["lobby"]

    async def _connect_to(self, spec: Spec) -> None:
        """Resolve the new address first (a typo keeps the current session), then start the new
        session beside the current one and switch only once the new relay answers."""
        from . import session

        still = "still on the current connection" + (f" ({self.chat.address})" if self.chat.address else "")
        try:
            await session.resolvable(spec.address)
        except SpecError as e:
            self.error(f"{e}; {still}")
            if not self.input.value:  # the line stays to fix the typo
                self.input.value = f"/connect {spec.address}"
                self.input.cursor_position = len(self.input.value)
            return
        if self.backend is None:
            self.start(spec=spec)
            return
        self.info(f"trying {spec.address}… ({still} until it answers)")
        try:
            backend, _server, _share = await session.build(spec, timing=self.timing)
        except (OSError, SpecError, ImportError, ValueError) as e:
            self.error(f"{describe_error(e, spec)}; {still}")
            return
        held: list = []
        adopted = False
        answer = asyncio.get_running_loop().create_future()

        def emit(event) -> None:
            if adopted:
                self._emit(event)
                return
            held.append(event)
            if not answer.done() and isinstance(event, (ev.Connected, ev.ConnectionLost, ev.Refused)):
                answer.set_result(event)

        task = asyncio.ensure_future(backend.run(emit))
        task.add_done_callback(lambda _t: answer.done() or answer.set_result(None))
        try:
            first = await answer
        except asyncio.CancelledError:
            backend.close()
            task.cancel()
            raise
        if not isinstance(first, ev.Connected):
            backend.close()
            try:
                await asyncio.wait_for(task, 1.0)
            except Exception:
                pass
            if isinstance(first, ev.Refused):
                why = f"the relay at {spec.address} refused: {first.reason}"
            else:
                why = f"no answer from a relay at {spec.address}"
            self.error(f"{why}; {still}")
            return
        active = self.chat.active
        adopted = True
        self.start(spec=spec, backend=backend, running=task, held=held)
        if active in spec.rooms:
            self.chat.auto_switch = {active}  # come back to the room that was on screen

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
        self.messages.page(direction)
        self._update_status()

    def action_scroll_bottom(self) -> None:
        self.messages.to_bottom()
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

    async def action_quit(self) -> None:
        """Ctrl+Q: leave every room cleanly (the backend says goodbye), then exit. Hosting with
        others connected, ask first: quitting stops the relay for them."""
        if isinstance(self.screen, ConfirmQuit):
            self.screen.dismiss(True)  # Ctrl+Q again
            return
        others = self.hosted_others()
        if others:
            self.push_screen(ConfirmQuit(others), lambda yes: self.polite_quit() if yes else None)
            return
        await self._quit_now()

    async def _quit_now(self) -> None:
        await self._say_goodbye(2.0)
        self.exit(0)

    async def _say_goodbye(self, patience: float) -> None:
        """Close the backend (it leaves its rooms and says Bye) and give the network worker up
        to `patience` seconds to send that."""
        if self.backend is None:
            return
        self._close_backend()
        for w in [w for w in self.workers if w.group == "net" and w.is_running]:
            try:
                await asyncio.wait_for(w.wait(), patience)
            except Exception:
                pass

    # ------------------------------------------------------------------ mouse

    @on(_ClickList.Picked)
    def _picked(self, message: _ClickList.Picked) -> None:
        if message.sender is self.room_list:
            self._switch(message.key)
        elif message.key != self.chat.nick:
            self.cmd_msg(commands.Command("msg", (message.key,)))
            self.refresh_ui()
        self.input.focus()
