"""The connect screen, the quick switcher (Ctrl+K) and the help screen (F1)."""

from __future__ import annotations

from rich.padding import Padding
from rich.table import Table
from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Input, Label, OptionList, RadioButton, RadioSet, Static
from textual.widgets.option_list import Option

from udproom.protocol.names import InputError, canonical_room, is_direct

from . import commands
from .config import Config
from .session import Spec, SpecError, check
from .theme import Palette

MODES = [
    ("host", "Host a room", "bind address, e.g. :6000 (all interfaces)"),
    ("join", "Join a relay", "relay address, e.g. 192.168.1.5:6000"),
    ("direct", "Direct (peers)", "listen address, e.g. :6001 (optional)"),
]


class ConnectScreen(Screen[Spec]):
    """Host or join (or direct), address, nick, rooms. Dismisses with a checked Spec."""

    BINDINGS = [
        Binding("escape", "app.quit", "Quit"),
        Binding("ctrl+q", "app.quit", "Quit", priority=True),
        Binding("down", "to_recent", "Recent addresses", show=False),
    ]

    def __init__(self, config: Config, error: str = "", spec: Spec | None = None) -> None:
        super().__init__()
        self.config = config
        self.error = error
        self.initial = spec

    def compose(self) -> ComposeResult:
        p = self.app.palette
        cfg = self.config
        spec = self.initial
        mode = spec.mode if spec else cfg.mode
        with Vertical(id="connect-box"):
            yield Static(
                Text.assemble(("udproom", f"bold {p.title}"), ("  chat over reliable UDP", p.muted)),
                id="connect-title",
            )
            with RadioSet(id="mode"):
                for key, label, _ in MODES:
                    yield RadioButton(
                        self._mode_label(label, key == mode), value=(key == mode), id=f"mode-{key}"
                    )
            yield Label("Address", classes="field-label")
            address = spec.address if spec else (cfg.recent[0] if cfg.recent and mode == "join" else "")
            yield Input(address, placeholder=self._placeholder(mode), id="address")
            yield Label("Peers (direct mode, comma separated)", classes="field-label", id="peers-label")
            yield Input(", ".join(spec.peers) if spec else "", placeholder="host:port, host:port", id="peers")
            with Horizontal(id="nick-rooms"):
                with Vertical():
                    yield Label("Nick", classes="field-label")
                    from .session import login_nick

                    yield Input((spec.nick if spec else cfg.nick) or login_nick(), id="nick")
                with Vertical():
                    yield Label("Rooms", classes="field-label")
                    yield Input(", ".join(spec.rooms if spec else cfg.rooms), placeholder="lobby", id="rooms")
            if cfg.recent:
                yield Label("Recent (↓ from the address, Enter or click to use)", classes="field-label")
                yield OptionList(
                    *[Option(a, id=f"recent-{i}") for i, a in enumerate(cfg.recent)], id="recent"
                )
            yield Static(self.error, id="connect-error", classes="error" if self.error else "")
            with Horizontal(id="connect-buttons"):
                yield Button("Connect", variant="primary", id="connect")
                yield Button("Quit", id="quit")
            yield Static("Enter connects · Esc quits", id="connect-hint")

    def on_mount(self) -> None:
        self._show_peers(self._mode())
        self.query_one("#address", Input).focus()
        # the highlight starts on the chosen mode (Textual starts it on the first button, so
        # Shift+Tab then Space/Enter would switch to "Host a room" by accident)
        rs = self.query_one("#mode", RadioSet)
        if rs.pressed_index >= 0 and hasattr(rs, "_selected"):
            rs._selected = rs.pressed_index

    @staticmethod
    def _mode_label(label: str, selected: bool) -> Text:
        """The chosen mode is marked by a check mark and bold, not by colour alone."""
        return Text.assemble(("✓ ", "bold"), (label, "bold")) if selected else Text(label)

    def action_to_recent(self) -> None:
        """↓ in the address field moves to the recent addresses (↑/↓, Enter picks one)."""
        recent = self.query("#recent")
        if recent and self.focused is self.query_one("#address", Input):
            ol = recent.first(OptionList)
            ol.focus()
            if ol.highlighted is None and ol.option_count:
                ol.highlighted = 0

    @staticmethod
    def _placeholder(mode: str) -> str:
        return next(p for k, _, p in MODES if k == mode)

    def _mode(self) -> str:
        rs = self.query_one("#mode", RadioSet)
        pressed = rs.pressed_button
        return pressed.id.removeprefix("mode-") if pressed and pressed.id else "join"

    def _show_peers(self, mode: str) -> None:
        direct = mode == "direct"
        self.query_one("#peers").display = direct
        self.query_one("#peers-label").display = direct

    @on(RadioSet.Changed, "#mode")
    def _mode_changed(self, event: RadioSet.Changed) -> None:
        mode = self._mode()
        self.query_one("#address", Input).placeholder = self._placeholder(mode)
        self._show_peers(mode)
        self.show_error("")  # an error about the other mode's address no longer applies
        for key, label, _ in MODES:
            self.query_one(f"#mode-{key}", RadioButton).label = self._mode_label(label, key == mode)

    @on(OptionList.OptionSelected, "#recent")
    def _recent(self, event: OptionList.OptionSelected) -> None:
        self.query_one("#address", Input).value = str(event.option.prompt)
        self.query_one("#mode-join", RadioButton).value = True
        self.query_one("#address", Input).focus()

    @on(Button.Pressed, "#quit")
    def _quit(self) -> None:
        self.app.exit()

    @on(Button.Pressed, "#connect")
    @on(Input.Submitted)
    def submit(self) -> None:
        mode = self._mode()
        split = lambda s: [x.strip() for x in s.replace(",", " ").split() if x.strip()]  # noqa: E731
        spec = Spec(
            mode=mode,
            address=self.query_one("#address", Input).value.strip(),
            nick=self.query_one("#nick", Input).value.strip(),
            rooms=split(self.query_one("#rooms", Input).value) or ["lobby"],
            peers=split(self.query_one("#peers", Input).value) if mode == "direct" else [],
        )
        try:
            spec = check(spec)
        except SpecError as e:
            self.show_error(str(e))
            return
        self.dismiss(spec)

    def show_error(self, text: str) -> None:
        err = self.query_one("#connect-error", Static)
        err.update(text)
        err.set_class(bool(text), "error")


class QuickSwitcher(ModalScreen[str | None]):
    """Ctrl+K: type to filter rooms; Enter opens the highlighted one or joins a new room."""

    BINDINGS = [
        Binding("escape", "dismiss_none", "Close"),
        Binding("down", "move(1)", "Next", show=False),
        Binding("up", "move(-1)", "Previous", show=False),
    ]

    def __init__(self, rooms: list[tuple[str, str, int, int]], nicks: list[str] = ()) -> None:
        """rooms: (key, label, unread, mentions) in pane order; nicks: people we know of."""
        super().__init__()
        self.rooms = rooms
        self.nicks = list(nicks)

    def compose(self) -> ComposeResult:
        with Vertical(id="switcher"):
            yield Static("Go to a room · type to filter · Enter opens · Esc closes", id="switcher-title")
            yield Input(placeholder="room or @nick", id="switcher-input")
            yield Static(id="switcher-why")  # why what was typed cannot be opened
            yield OptionList(id="switcher-list")

    def on_mount(self) -> None:
        self.why = ""
        self._refilter("")
        self._fit(self.app.size.height)
        self.query_one("#switcher-input").focus()

    def on_resize(self, event: events.Resize) -> None:
        self._fit(event.size.height)

    def _fit(self, height: int) -> None:
        """On a short screen: less room above, fewer rows of the list (it scrolls)."""
        top = 3 if height >= 24 else 1 if height >= 16 else 0
        inner = max(min(60, self.app.size.width) - 4, 1)
        fixed = 2 + 1 + 3 + -(-len(self.why) // inner)  # frame, title, input, the why lines
        self.query_one("#switcher").styles.margin = (top, 0, 0, 0)
        self.query_one("#switcher-list").styles.max_height = max(min(12, height - top - fixed), 1)

    def matches(self, text: str) -> list[Option]:
        self.why = ""
        p = self.app.palette
        q = text.strip().lstrip("#").casefold()
        scored = []
        for key, label, unread, mentions in self.rooms:
            name = key.casefold()
            if not q:
                score = 0
            elif name.startswith(q) or name.lstrip("@").startswith(q):
                score = 1
            elif q in name:
                score = 2
            elif _subsequence(q, name):
                score = 3
            else:
                continue
            prompt = Text(label, "bold" if unread else "")
            if unread:
                prompt.append(f"  {unread}{'!' if mentions else ''}", p.warn if mentions else p.ok)
            scored.append((score, Option(prompt, id="room:" + key)))
        scored.sort(key=lambda x: x[0])
        options = [o for _, o in scored]
        raw = text.strip()
        if is_direct(raw):
            # people we know (from our rooms) whose nick starts with what was typed
            have = {k.casefold() for k, *_ in self.rooms}
            prefix = raw[1:].casefold()
            for nick in self.nicks:
                if nick.casefold().startswith(prefix) and "@" + nick.casefold() not in have:
                    options.append(
                        Option(Text.assemble(("message ", p.muted), ("@" + nick, "bold")), id="new:@" + nick)
                    )
            if any(o.id == "new:" + raw for o in options):
                return options
        if raw and not any(k.casefold() == raw.lstrip("#").casefold() for k, *_ in self.rooms):
            try:
                if is_direct(raw):
                    from udproom.protocol.names import check_nick

                    target = "@" + check_nick(raw[1:])
                    options.append(
                        Option(Text.assemble(("message ", p.muted), (target, "bold")), id="new:" + target)
                    )
                else:
                    room = canonical_room(raw)
                    options.append(
                        Option(Text.assemble(("join ", p.muted), ("#" + room, "bold")), id="new:" + room)
                    )
            except InputError as e:
                if not options:
                    self.why = str(e)
        return options

    def _refilter(self, text: str) -> None:
        ol = self.query_one("#switcher-list", OptionList)
        ol.clear_options()
        ol.add_options(self.matches(text))
        if ol.option_count:
            ol.highlighted = 0
        why = self.query_one("#switcher-why", Static)
        why.update(self.why)
        why.display = bool(self.why)
        self._fit(self.app.size.height)

    @on(Input.Changed, "#switcher-input")
    def _changed(self, event: Input.Changed) -> None:
        self._refilter(event.value)

    def action_move(self, step: int) -> None:
        ol = self.query_one("#switcher-list", OptionList)
        if ol.option_count:
            ol.highlighted = ((ol.highlighted or 0) + step) % ol.option_count

    def action_dismiss_none(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted, "#switcher-input")
    def _submit(self) -> None:
        ol = self.query_one("#switcher-list", OptionList)
        if ol.highlighted is None or not ol.option_count:
            return
        self.dismiss(ol.get_option_at_index(ol.highlighted).id)

    @on(OptionList.OptionSelected, "#switcher-list")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)


def _subsequence(q: str, s: str) -> bool:
    it = iter(s)
    return all(ch in it for ch in q)


class HelpScreen(ModalScreen[None]):
    """F1: the keys (generated from the bindings) and the commands."""

    BINDINGS = [Binding("escape,f1,q", "dismiss_help", "Close")]

    def __init__(self, keys: list[tuple[str, str]]) -> None:
        super().__init__()
        self.keys = keys

    @staticmethod
    def _table(rows: list[tuple[str, str]], first: int, style: str, p: Palette) -> Table:
        """Two columns: a wrapped description stays indented under its own column."""
        table = Table.grid(padding=(0, 2))
        table.add_column(width=first, no_wrap=True, style=style)
        table.add_column(style=p.text, overflow="fold")
        for left, right in rows:
            table.add_row(left, right)
        return table

    def compose(self) -> ComposeResult:
        p = self.app.palette
        rows = commands.help_rows()
        width = max(len(k) for k, _ in [*self.keys, *rows])
        keys = Padding(self._table(self.keys, width, f"bold {p.title}", p), (0, 0, 0, 2))
        cmds = Padding(self._table(rows, width, f"bold {p.ok}", p), (0, 0, 0, 2))
        with VerticalScroll(id="help"):
            yield Static(Text("udproom — keys and commands", f"bold {p.title}"), id="help-title")
            yield Static(Text("Keys", f"bold {p.warn}"), classes="help-head")
            yield Static(keys)
            yield Static(Text("Commands", f"bold {p.warn}"), classes="help-head")
            yield Static(cmds)
            yield Static(Text("Esc or F1 closes this screen", p.muted), classes="help-head")

    def action_dismiss_help(self) -> None:
        self.dismiss(None)


class ConfirmPaste(ModalScreen[bool]):
    """A long multi-line paste: send every line as its own message, or put it back."""

    BINDINGS = [
        Binding("escape,n", "answer(False)", "Do not send"),
        Binding("enter,y", "answer(True)", "Send"),
    ]

    def __init__(self, lines: list[str], room: str) -> None:
        super().__init__()
        self.lines = lines
        self.room = room

    def compose(self) -> ComposeResult:
        p = self.app.palette
        preview = Text()
        for line in self.lines[:3]:
            preview.append(f"  {line[:70]}\n", p.text)
        if len(self.lines) > 3:
            preview.append(f"  … and {len(self.lines) - 3} more\n", p.muted)
        with Vertical(id="confirm-paste"):
            yield Static(
                Text(f"Send {len(self.lines)} lines to {self.room}, one message each?", f"bold {p.warn}")
            )
            yield Static(preview)
            yield Static(Text("Enter or y sends · Esc or n puts the text back in the input", p.muted))

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class ConfirmQuit(ModalScreen[bool]):
    """Quitting while hosting stops the relay: say who will be cut off and ask first."""

    BINDINGS = [
        Binding("escape,n", "answer(False)", "Stay"),
        Binding("enter,y", "answer(True)", "Quit"),
    ]

    def __init__(self, others: list[str]) -> None:
        super().__init__()
        self.others = others

    def compose(self) -> ComposeResult:
        p = self.app.palette
        n = len(self.others)
        who = ", ".join(self.others[:5]) + (f" and {n - 5} more" if n > 5 else "")
        with Vertical(id="confirm-quit"):
            yield Static(
                Text(
                    f"You are hosting: quitting stops the relay and disconnects "
                    f"{n} {'person' if n == 1 else 'people'} ({who}).",
                    f"bold {p.warn}",
                )
            )
            yield Static(Text("Enter or y (or Ctrl+Q again) quits · Esc or n stays", p.muted))

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class PassphraseScreen(ModalScreen[str | None]):
    """The passphrase of a passphrase room, masked (docs/security.md, "Passphrase rooms"):
    Enter gives it (never shown, never saved: the app keeps only the key derived from it, in
    memory), Esc gives None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, room: str, why: str) -> None:
        super().__init__()
        self.room = room
        self.why = why

    def compose(self) -> ComposeResult:
        p = self.app.palette
        with Vertical(id="passphrase"):
            yield Static(Text(self.why, f"bold {p.warn}"))
            yield Input(password=True, placeholder="passphrase", id="passphrase-input")
            yield Static(Text("Enter gives it · Esc cancels · it is never shown nor saved", p.muted))

    def on_mount(self) -> None:
        self.query_one("#passphrase-input", Input).focus()

    @on(Input.Submitted, "#passphrase-input")
    def _submit(self, event: Input.Submitted) -> None:
        if event.value:
            self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)
