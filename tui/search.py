"""`/search WORDS`: the results view (room, time, nick, text; newest first). Enter jumps to the line
in its room (the app pages back to it, `History.jump`), Esc returns. `LogCommands`: the app's
side of its log (`/search`, paging back when the view reaches the top, the log's one notice)."""

from __future__ import annotations

from datetime import datetime, tzinfo

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from udproom.protocol.chatlog import Line
from udproom.protocol.names import sanitize

from .render import cut


def _when(ts: float, tz: tzinfo | None) -> str:
    try:
        return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M")
    except (OverflowError, OSError, ValueError):
        return "????-??-?? ??:??"


def result_text(line: Line, tz: tzinfo | None) -> Text:
    """One result row: `#dev  2026-12-01 15:53  <bob> text` (everything sanitised)."""
    room = sanitize(line.room) if line.room.startswith("@") else "#" + sanitize(line.room)
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(cut(room, 12).ljust(13), "bold #7aa2f7")
    t.append(_when(line.ts, tz) + "  ", "#737aa2")
    nick = sanitize(line.nick)
    if line.kind == "action":
        t.append(f"* {nick} ", "#bb9af7")
    elif line.kind == "message":
        t.append(f"<{nick}> ", "bold #9ece6a")
    else:
        t.append(f"-!- {nick} {line.kind} ", "#737aa2")
    t.append(sanitize(line.text), "#c0caf5")
    return t


class SearchScreen(ModalScreen[int | None]):
    """Results of `/search`; dismisses with the chosen line's log position (or None)."""

    BINDINGS = [Binding("escape", "close", "Back")]
    DEFAULT_CSS = """
    SearchScreen { align: center middle; background: #1a1b26 60%; }
    #search {
        width: 110; max-width: 100%; height: 80%;
        background: #1f2335; border: round #7aa2f7; padding: 0 1;
    }
    #search-title { height: 1; }
    #search-help { height: 1; }
    #search-results { height: 1fr; max-height: 100%; border: none; padding: 0; background: #1f2335; }
    #search-results:focus { border: none; background-tint: #1f2335 0%; }
    #search-results > .option-list--option-highlighted,
    #search-results:focus > .option-list--option-highlighted {
        background: #364a82; color: #c0caf5; text-style: none;
    }
    """

    def __init__(self, query: str, results: list[Line], tz: tzinfo | None = None) -> None:
        super().__init__()
        self.words = query
        self.results = results
        self.tz = tz

    def compose(self) -> ComposeResult:
        n = len(self.results)
        title = Text(f"search: {sanitize(self.words)}", "bold #7aa2f7")
        title.append(
            f"  ·  {n} result{'' if n == 1 else 's'}, newest first" if n else "  ·  nothing matches",
            "#737aa2",
        )
        with Vertical(id="search"):
            yield Static(title, id="search-title")
            yield OptionList(
                *[Option(result_text(x, self.tz), id=str(x.pos)) for x in self.results], id="search-results"
            )
            yield Static(
                Text("↑/↓ choose · Enter jumps to the line in its room · Esc returns", "#737aa2"),
                id="search-help",
            )

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(int(event.option.id))

    def action_close(self) -> None:
        self.dismiss(None)


class LogCommands:
    """ChatApp's handlers for its log (history.py): a mixin like `handlers.Commands`."""

    def cmd_search(self, cmd) -> None:
        from udproom.protocol.sqlstore import StoreError

        try:
            results = self.history.search(cmd.rest)
        except StoreError as e:
            self.error(f"cannot search: {e}")
            return
        self.push_screen(SearchScreen(cmd.rest, results, self.chat.tz), self._jump)

    def _jump(self, pos: int | None) -> None:
        """Enter on a search result: that line in its room, with the lines around it."""
        if pos is None:
            return
        found = self.history.jump(pos)
        if isinstance(found, str):
            self.error(found)
            return
        room, line = found
        self.chat.switch(room)
        self.refresh_ui()
        self.messages.show_line(line)
        # which line it was: the status line names it (a third of the way down the view)
        self.flash(f"found: {_when(line.ts, self.chat.tz)[11:]} <{line.nick}> {cut(line.text, 60)}")

    def on_message_view_top_reached(self) -> None:
        self.older()

    def older(self) -> None:
        """Scrolled up past the top of the room's lines: the previous page (history.py)."""
        if self.chat.active is not None and self.history.older(self.chat.active):
            self.refresh_ui()

    def _log_notice(self) -> None:
        """A log that cannot be opened or written: one line in the room and in the status line."""
        text = self.history.take_notice()
        if text:
            from . import model as m

            self.chat.add_local(None, m.ERROR, text)
            self.flash("chat log off: " + text.split(";")[0])
