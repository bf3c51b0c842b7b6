"""Issue 9, the input line, the panes and rendering: each test failed before its fix.

Keys go through the real input path where Pilot would not be faithful: the bytes a terminal
sends are decoded and parsed by Textual's own XTermParser, and the events are handed to the
driver from another thread in one burst, exactly as the Linux driver's input thread does.
"""

from __future__ import annotations

import asyncio
from codecs import getincrementaldecoder

from textual._xterm_parser import XTermParser

from .conftest import make_app, ready, settle, until


async def terminal(app, data: bytes) -> None:
    """Feed `data` as one read from the terminal: decode, parse, post (the driver's thread)."""
    decode = getincrementaldecoder("utf-8")().decode
    parser = XTermParser()

    def read() -> None:
        for event in parser.feed(decode(data)):
            app._driver.process_message(event)

    await asyncio.to_thread(read)


def posts(backend) -> list[str]:
    return [c[2] for c in backend.calls if c[0] == "post"]


async def test_type_ahead_keeps_line_boundaries():
    """tmux `send-keys "one" Enter "two" Enter "three" Enter`: three messages, in order, once each."""
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await terminal(app, b"one\rtwo\rthree\r")
        await until(pilot, lambda: len(posts(backend)) >= 3, "three posts")
        await settle(pilot, app)
        assert posts(backend) == ["one", "two", "three"]
        assert app.input.value == ""
        # editing keys in a burst apply where they were typed: "ab", Backspace, "c" is "ac"
        await terminal(app, b"ab\x7fc\rx\x7f\x7fyz\r")
        await until(pilot, lambda: len(posts(backend)) >= 5, "two more posts")
        await settle(pilot, app)
        assert posts(backend)[3:] == ["ac", "yz"]


async def test_typing_keeps_the_zero_width_joiner():
    """👩‍👧 typed: the terminal sends its UTF-8 bytes (woman, ZWJ, girl) as keys, not a paste."""
    family = "\U0001f469\u200d\U0001f467"
    app, backend = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app, backend)
        await terminal(app, family.encode() + b"\r")
        await until(pilot, lambda: posts(backend), "a post")
        assert posts(backend) == [family]
