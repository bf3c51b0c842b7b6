"""Headless output is sanitized like the screen: whatever the network says (message text, nicks,
refusal reasons, notices), `listen` and `send` write no terminal controls (C0, C1 such as U+009B
CSI, bidi overrides, line separators) to stdout or stderr."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import socket

from hypothesis import given
from hypothesis import strategies as st

from udproom.protocol import frames as F
from udproom.protocol.cli import _Output, _SafeFormatter, _say

from ..terminal import BIDI, unsafe
from .conftest import hostport
from .procs import FAST

HOSTILE = [
    "\x9b31mred",  # C1 CSI: a terminal reads an escape sequence
    "\x1b[2Jcleared",
    "\x85next line",  # C1 NEL
    "a\u202eevil\u202cb",  # right-to-left override
    "\u2066isolate\u2069",
    "line\u2028separator",
    "bell\x07",
    "tab\there",
    "new\nline",
    "nul\x00",
]
hostile_text = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x3000), max_size=40),
    st.text(alphabet=st.sampled_from(sorted(BIDI) + [chr(c) for c in range(0x80, 0xA0)] + ["x", "\n"])),
)


@given(hostile_text)
def test_json_lines_carry_no_terminal_controls(text):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        _Output(lambda: None).write({"type": "joined", "nick": text, "members": [text, "b"], "topic": text})
    out = buf.getvalue()
    assert out.endswith("\n") and out.count("\n") == 1
    assert not unsafe(out[:-1]), (text, out)
    obj = json.loads(out)
    for value in (obj["nick"], obj["topic"], *obj["members"]):
        assert not unsafe(value)


@given(hostile_text)
def test_error_and_log_lines_carry_no_terminal_controls(text):
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        _say("send", f"refused: {text}")
    err = buf.getvalue()
    assert err.count("\n") == 1 and not unsafe(err[:-1]), (text, err)
    record = logging.LogRecord("udproom", logging.WARNING, __file__, 1, "%s%s", ("#lobby: ", text), None)
    line = _SafeFormatter("%(levelname)s %(message)s").format(record)
    assert "\n" not in line and not unsafe(line), (text, line)


async def test_listen_prints_hostile_text_sanitized(procs):
    relay, port = await procs.relay("127.0.0.1:0", *FAST)
    addr = hostport("127.0.0.1", port)
    lst = await procs.listen("watch", addr, "lobby", "--count", "1", "--timeout", "60", *FAST)
    await lst.wait_json(lambda o: o["type"] == "joined", 30, "joined")
    text = [t for t in HOSTILE if "\x00" not in t]  # argv cannot carry NUL
    sender = await procs.send("mallory", addr, "lobby", "--timeout", "60", *FAST, *text)
    assert await sender.wait(60) == 0, sender.stderr
    assert await lst.wait(60) == 0, lst.stderr
    assert len(lst.messages()) == 1
    for line in lst.stdout + lst.stderr:
        assert not unsafe(line), line
    (msg,) = lst.of_type("message")
    assert "\ufffd31mred" in msg["text"] and "evil" in msg["text"]  # replaced, not silently dropped
    relay.terminate()
    assert await relay.wait(30) == 0


async def _answer_hellos(sock: socket.socket, reply) -> None:
    loop = asyncio.get_running_loop()
    while True:
        data, src = await loop.sock_recvfrom(sock, 2048)
        hello = next((f for f in F.decode(data) if isinstance(f, F.Hello)), None)
        if hello is not None:
            await loop.sock_sendto(sock, F.encode([reply(hello)]), src)


async def test_refusal_reasons_from_the_network_are_sanitized(procs):
    reason = "".join(HOSTILE)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fake:
        fake.bind(("127.0.0.1", 0))
        fake.setblocking(False)
        port = fake.getsockname()[1]
        # a "relay" that refuses every Hello with a hostile reason
        answer = asyncio.create_task(
            _answer_hellos(fake, lambda h: F.Refuse(reason, list(F.SUPPORTED_VERSIONS), h.nonce))
        )
        try:
            s = await procs.send("a", hostport("127.0.0.1", port), "lobby", "--timeout", "60", *FAST, "hi")
            assert await s.wait(60) == 1
            assert len(s.stderr) == 1 and "refused" in s.stderr[0], s.stderr
            assert not unsafe(s.stderr[0]), s.stderr
            # a direct-mode "peer" refusing us: its reason reaches stderr through the log
            lst = await procs.start(
                "b",
                "listen",
                "--listen",
                "127.0.0.1:0",
                "--peer",
                hostport("127.0.0.1", port),
                "--room",
                "lobby",
                "--nick",
                "b",
                "--timeout",
                "60",
                *FAST,
            )
            await lst.wait_until(lambda: any("refused" in line for line in lst.stderr), 60, "the refusal")
            for line in lst.stderr + lst.stdout:
                assert not unsafe(line), line
        finally:
            answer.cancel()


async def test_listen_prints_direct_messages_to_it_sanitized(procs):
    """A direct message to a headless listener is printed (room '@sender'), not acknowledged by the
    relay and then dropped because its room is not the one `listen` joined."""
    from udproom.protocol import events as E
    from udproom.protocol.net.runners import RelayClient
    from udproom.protocol.reliability import Timing

    from .test_runners import Recorder

    relay, port = await procs.relay("127.0.0.1:0", *FAST)
    addr = hostport("127.0.0.1", port)
    lst = await procs.listen("bob", addr, "lobby", "--count", "1", "--timeout", "60", *FAST)
    await lst.wait_json(lambda o: o["type"] == "joined", 30, "joined")
    client = RelayClient(addr, "mallory", [], timing=Timing.fast())
    rec = Recorder()
    task = asyncio.create_task(client.run(rec))
    await rec.wait(lambda e: isinstance(e, E.Connected), 30, "connected")
    client.post("@bob", "psst \x9b31mred a\u202eevil")
    await rec.wait(lambda e: isinstance(e, E.PostAcknowledged), 30, "acknowledged")
    assert await lst.wait(60) == 0, lst.stderr  # --count 1: the direct message
    (msg,) = lst.of_type("message")
    assert msg["room"] == "@mallory" and msg["nick"] == "mallory" and msg["text"].startswith("psst")
    assert "\ufffd31mred" in msg["text"] and "evil" in msg["text"]
    for line in lst.stdout:
        assert not unsafe(line), line
    client.close()
    await asyncio.wait_for(task, 30)
    relay.terminate()
    assert await relay.wait(30) == 0


async def test_send_says_which_line_was_not_stored_and_how_many_were(procs, tmp_path):
    """A relay whose disk fills up refuses posts: `send` names the line that failed and how many
    were acknowledged, so a script knows what got through (it said 'message N' counted from the
    acknowledgements, and nothing about the rest)."""
    import re

    from udproom.protocol.net.runners import RelayServer
    from udproom.protocol.relay import RelayConfig
    from udproom.protocol.reliability import Timing
    from udproom.protocol.roomlog import SqliteLog

    log = SqliteLog(tmp_path, max_bytes=96 * 1024)  # a disk that fills up
    server = RelayServer("127.0.0.1:0", RelayConfig(timing=Timing.fast()), log=log)
    _host, port = await server.start()
    try:
        s = await procs.send(
            "filler", hostport("127.0.0.1", port), "lobby", "--timeout", "60", *FAST, stdin=True
        )
        await s.write("".join(f"{k:04d} " + "x" * 700 + "\n" for k in range(400)))
        s.close_stdin()
        assert await s.wait(60) == 1
        (err,) = [line for line in s.stderr if "not delivered" in line]
        m = re.search(r"line (\d+) was not delivered: .*full.*\((\d+) acknowledged", err)
        assert m, err
        failed, acked = int(m.group(1)), int(m.group(2))
        assert 0 < acked < failed <= 400
        stored = {ev.text[:4] for _s, ev in log.read("lobby", 1, 10**6) if ev.text}
        assert len(stored) >= acked  # everything acknowledged is stored
        assert f"{failed - 1:04d}" not in stored  # and the line said to have failed is not
    finally:
        await server.stop()
