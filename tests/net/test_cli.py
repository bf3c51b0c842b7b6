"""Command-line handling of `udproom relay|listen|send`: flags, one-line errors, exit codes,
and no textual on these paths."""

import subprocess
import sys
import textwrap

import pytest

from udproom.protocol.cli import build_parser, main
from udproom.protocol.names import MAX_TEXT_BYTES

from .procs import CLI


def one_line_error(capsys, code, argv, fragment):
    assert main(argv) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    assert fragment in lines[0], lines[0]
    assert lines[0].startswith("udproom")
    return lines[0]


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["relay", "--bind", "127.0.0.1:99999"], "out of range"),
        (["relay", "--bind", "[::1"], "without ']'"),
        (["relay", "--bogus"], "unrecognized arguments: --bogus"),
        (["relay", "--log-level", "loud"], "invalid choice"),
        (["listen", "--join", "nohost:abc", "--room", "x"], "not a number"),
        (["listen", "--join", ":6000", "--room", "x"], "needs a host"),
        (["listen", "--join", "127.0.0.1:6000"], "--room"),
        (["listen", "--join", "127.0.0.1:6000", "--room", "bad room!"], "room name"),
        (["listen", "--join", "127.0.0.1:6000", "--room", "x", "--count", "0"], "at least 1"),
        (["listen", "--join", "127.0.0.1:6000", "--room", "x", "--timeout", "soon"], "not a number"),
        (["listen", "--join", "127.0.0.1:6000", "--room", "x", "--timeout", "-1"], "positive"),
        (["send", "--join", "127.0.0.1:6000", "--room", "x", "--nick", "has space", "hi"], "nick"),
        (["send", "--join", "127.0.0.1:6000", "--room", "x" * 40, "hi"], "longer than 32"),
        (["send", "--room", "x", "hi"], "--join"),
        (["send", "--join", "127.0.0.1:0", "--room", "x", "hi"], "port 0"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_usage_errors_exit_2(capsys, argv, fragment):
    one_line_error(capsys, 2, argv, fragment)


def test_oversize_text_refused(capsys, silent_port):
    text = "é" * (MAX_TEXT_BYTES // 2 + 1)
    line = one_line_error(
        capsys, 1, ["send", "--join", f"127.0.0.1:{silent_port}", "--room", "x", "--nick", "a", text], "limit"
    )
    assert str(MAX_TEXT_BYTES) in line


def test_help(capsys):
    for command in ("relay", "listen", "send"):
        assert main([command, "--help"]) == 0
        out = capsys.readouterr().out
        assert "--log-level" in out
        assert "--fast-timers" not in out and "--timeout-member" not in out  # hidden test flags
    assert main(["--help"]) == 0
    assert "relay" in capsys.readouterr().out


def test_parser_defaults():
    args = build_parser().parse_args(["relay"])
    assert args.bind == ":6000" and args.log_level == "warning"
    args = build_parser().parse_args(["send", "--join", "h:1", "--room", "r", "a", "b"])
    assert args.text == ["a", "b"] and args.timeout == 10.0


def run_cli(*args, input=None, timeout=60):
    return subprocess.run([*CLI, *args], input=input, capture_output=True, text=True, timeout=timeout)


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    """`python -c code args...` with the output captured."""
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)


def test_event_json_shapes():
    from udproom.protocol import events as E
    from udproom.protocol.cli import _event_json

    base = {"room": "lobby", "seq": 3, "ts": 1.5}
    cases = [
        (E.MessageReceived(nick="a", text="hi", **base), {"type": "message", "nick": "a", "text": "hi"}),
        (
            E.MessageReceived(nick="a", text="waves", action=True, history=True, **base),
            {"type": "message", "action": True, "history": True},
        ),
        (E.MemberJoined(nick="a", **base), {"type": "join", "nick": "a"}),
        (E.MemberLeft(nick="a", reason="quit", **base), {"type": "leave", "reason": "quit"}),
        (E.MemberTimedOut(nick="a", **base), {"type": "timeout", "nick": "a"}),
        (E.NickChanged(old="a", new="b", **base), {"type": "nick", "nick": "b", "old": "a"}),
        (E.TopicChanged(nick="a", topic="t", **base), {"type": "topic", "nick": "a", "text": "t"}),
        (E.AwayChanged(nick="a", away="lunch", **base), {"type": "away", "text": "lunch"}),
    ]
    for event, expected in cases:
        obj = _event_json(event)
        assert {"type", "room", "nick", "ts", "seq"} <= set(obj)
        assert obj["room"] == "lobby" and obj["seq"] == 3 and obj["ts"] == 1.5
        for key, value in expected.items():
            assert obj[key] == value, (event, key)
        if not getattr(event, "history", False):
            assert "history" not in obj


def test_send_without_relay_fails(silent_port):
    r = run_cli(
        "send",
        "--join",
        f"127.0.0.1:{silent_port}",
        "--room",
        "x",
        "--nick",
        "a",
        "--timeout",
        "0.5",
        "--fast-timers",
        "hello",
    )
    assert r.returncode == 1
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "no answer" in err[0], r.stderr


def test_listen_without_relay(silent_port, silent_port6):
    r = run_cli(
        "listen",
        "--join",
        f"[::1]:{silent_port6}",
        "--room",
        "x",
        "--nick",
        "a",
        "--timeout",
        "0.3",
        "--count",
        "1",
    )
    assert r.returncode == 1 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "timed out" in r.stderr
    # without --count, --timeout is a normal end
    r = run_cli(
        "listen", "--join", f"127.0.0.1:{silent_port}", "--room", "x", "--nick", "a", "--timeout", "0.3"
    )
    assert r.returncode == 0 and r.stdout == ""


NO_DNS = textwrap.dedent(
    """
    import socket, sys
    def refuse(*args, **kwargs):  # no resolver is asked: the name fails at once
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    socket.getaddrinfo = refuse
    from udproom.protocol.net import loop
    loop.loop_factory = lambda: None  # asyncio's loop resolves through socket.getaddrinfo
    from udproom.protocol.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def test_unresolvable_host():
    argv = ["send", "--join", "no-such-host.invalid:6000", "--room", "x", "--nick", "a", "hi"]
    r = run_python(NO_DNS, *argv)
    assert r.returncode == 1
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "no-such-host.invalid" in err[0], r.stderr


def test_bind_in_use():
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        r = run_cli("relay", "--bind", f"127.0.0.1:{port}")
    assert r.returncode == 1
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "already in use" in err[0], r.stderr


NO_TEXTUAL = textwrap.dedent(
    """
    import os, sys, tempfile
    os.environ["UDPROOM_DATA_DIR"] = tempfile.mkdtemp()
    from udproom.protocol.cli import main
    from udproom.protocol.chatlog import ChatLog, Line
    from udproom.protocol.paths import chatlog_path
    from udproom.protocol.roomlog import SqliteLog
    codes = [main(["relay", "--help"]), main(["send", "--join", sys.argv[1], "--room", "x",
             "--nick", "a", "--timeout", "0.2", "hi"]), main(["search", "x"])]
    with ChatLog(chatlog_path()) as chat:
        chat.add([Line("r:1", "x", "message", "a", "hello", 1.0, 1)])
    codes += [main(["search", "hello", "--json"]), main(["log", "--room", "x"])]
    SqliteLog(os.environ["UDPROOM_DATA_DIR"] + "/relay").close()
    import udproom.protocol.net.runners, udproom.protocol.net.transport
    bad = sorted(m for m in sys.modules if m.split(".")[0] == "textual" or m.startswith("udproom.tui"))
    print(codes, bad)
    sys.exit(0 if codes == [0, 1, 1, 0, 0] and not bad else 3)
    """
)


def test_headless_commands_never_import_textual(silent_port):
    """Nor do the logs: relay, listen, send, search and log run on machines without a terminal UI."""
    r = run_python(NO_TEXTUAL, f"127.0.0.1:{silent_port}")
    assert r.returncode == 0, r.stdout + r.stderr


def test_module_entry_point_help():
    r = subprocess.run(
        [sys.executable, "-m", "udproom.protocol.cli", "relay", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0 and "--bind" in r.stdout


CONSOLE_NO_TEXTUAL = textwrap.dedent(
    """
    import sys
    from udproom.__main__ import main
    codes = [main(["relay", "--help"]), main(["listen", "--help"]),
             main(["send", "--join", sys.argv[1], "--room", "x", "--nick", "a", "--timeout",
                   "0.2", "hi"])]
    bad = sorted(m for m in sys.modules if m.split(".")[0] == "textual")
    print(codes, bad)
    sys.exit(0 if codes == [0, 0, 1] and not bad else 3)
    """
)


def test_console_script_headless_commands_never_import_textual(silent_port):
    r = run_python(CONSOLE_NO_TEXTUAL, f"127.0.0.1:{silent_port}")
    assert r.returncode == 0, r.stdout + r.stderr


def test_direct_mode_refuses_an_identity_file_others_can_read(capsys, silent_port, tmp_path, monkeypatch):
    """send/listen in direct mode prove the user's identity key (in the data directory): a key
    file that others can read is bad usage (exit 2, as in relay mode): one line saying how to fix
    it, and nothing is sent."""
    from udproom.protocol import crypto, paths

    monkeypatch.setenv("UDPROOM_DATA_DIR", str(tmp_path))
    crypto.save_identity(crypto.Identity.generate(), paths.identity_path())
    paths.identity_path().chmod(0o644)
    argv = ["--listen", "127.0.0.1:0", "--peer", f"127.0.0.1:{silent_port}", "--room", "x", "--nick", "a"]
    line = one_line_error(capsys, 2, ["send", *argv, "hi"], "chmod 600")
    assert str(paths.identity_path()) in line and "unexpected" not in line
    one_line_error(capsys, 2, ["listen", *argv], "readable by others")


def test_posts_per_key_takes_a_rate_and_a_burst_and_refuses_nonsense(capsys):
    parse = build_parser().parse_args
    assert parse(["relay"]).posts_per_key == (100.0, 1000.0)
    assert parse(["relay", "--posts-per-key", "5/20"]).posts_per_key == (5.0, 20.0)
    assert parse(["relay", "--posts-per-key", "5"]).posts_per_key == (5.0, 50.0)
    assert parse(["relay", "--posts-per-key", "0"]).posts_per_key[0] == 0.0  # no limit
    for bad in ("nan", "inf", "-1", "5/0", "5/nan", "x", "1e9"):
        assert main(["relay", "--posts-per-key", bad]) == 2  # bad usage, said in one line
        err = capsys.readouterr().err
        assert "--posts-per-key" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_per_address_limits_take_a_number_or_a_rate_and_refuse_nonsense(capsys):
    parse = build_parser().parse_args
    args = parse(["relay"])
    assert (args.max_sessions_per_address, args.requests_per_address, args.posts_per_address) == (
        64,
        (10_000.0, 20_000.0),
        (200.0, 2000.0),
    )
    args = parse(["relay", "--max-sessions-per-address", "0", "--requests-per-address", "50/100"])
    assert args.max_sessions_per_address == 0 and args.requests_per_address == (50.0, 100.0)
    assert parse(["relay", "--posts-per-address", "3"]).posts_per_address == (3.0, 30.0)
    defaults = parse(["relay"])
    assert (defaults.max_handshakes_per_address, defaults.handshakes_per_address) == (32, (50.0, 200.0))
    args = parse(["relay", "--max-handshakes-per-address", "4", "--handshakes-per-address", "0"])
    assert args.max_handshakes_per_address == 4 and args.handshakes_per_address[0] == 0.0  # no limit
    bad = [
        (flag, v)
        for flag in ("--max-sessions-per-address", "--max-handshakes-per-address")
        for v in ("-1", "x", "1.5", "nan")
    ]
    bad += [
        (flag, v)
        for flag in ("--requests-per-address", "--posts-per-address", "--handshakes-per-address")
        for v in ("nan", "-1", "5/0")
    ]
    for flag, value in bad:
        assert main(["relay", flag, value]) == 2  # bad usage, said in one line
        err = capsys.readouterr().err
        assert flag in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_relays_key_file_is_given_with_identity_or_key(capsys):
    """Relays of a cluster present one key (issue 12: "given with `--key FILE`"): `relay --key
    FILE` is `relay --identity FILE`; the other commands' identity stays `--identity` only."""
    parse = build_parser().parse_args
    assert parse(["relay", "--key", "/k/relay.key"]).identity == "/k/relay.key"
    assert parse(["relay", "--identity", "/k/relay.key"]).identity == "/k/relay.key"
    assert parse(["relay"]).identity is None
    assert main(["listen", "--join", "127.0.0.1:1", "--room", "x", "--key", "/k/x"]) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --key" in err and len(err.strip().splitlines()) == 1
