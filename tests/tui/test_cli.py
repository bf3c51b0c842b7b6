"""The command line: flags, errors, and staying away from textual for headless commands."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from udproom import __version__
from udproom.tui import cli


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"udproom {__version__}"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--join", "nope:99999"], "port 99999 in 'nope:99999' is out of range (1-65535)"),
        (["--join"], "argument --join: expected one argument"),
        (["--host", ":1", "--join", "a:1"], "not allowed with argument"),
        (["--host", ":6000", "--peer", "a:1"], "--peer is for direct mode"),
        (["--join", "a:1", "--nick", "#x"], "nick may not start with '@' or '#'"),
        (["--join", "a:1", "--room", "no way"], "may only use letters"),
        (["--nick", "a b"], "nick may only use printable characters without spaces"),
        (["--peer", "bad host:1"], "contains spaces"),
        (["--theme", "nope"], "no theme called 'nope'; one of: "),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("udproom: error: ")
    assert message in err
    assert "Traceback" not in err


def test_flags_make_a_spec():
    spec, _ = cli.parse(["--host", ":7000", "--nick", "zoe", "--room", "#Dev", "--room", "lobby"])
    assert (spec.mode, spec.address, spec.nick, spec.rooms) == ("host", ":7000", "zoe", ["dev", "lobby"])
    spec, _ = cli.parse(["--join", "10.0.0.1"])
    assert spec.mode == "join" and spec.rooms == ["lobby"] and spec.nick
    spec, _ = cli.parse(["--peer", "10.0.0.1:6001", "--peer", "10.0.0.2:6001"])
    assert spec.mode == "direct" and spec.peers == ["10.0.0.1:6001", "10.0.0.2:6001"]
    spec, args = cli.parse(["--no-bell"])
    assert spec is None and args.no_bell


@pytest.mark.parametrize("sub", ["relay", "send", "listen"])
def test_headless_subcommands_are_handed_over(sub, monkeypatch):
    seen = []
    fake = types.ModuleType("udproom.protocol.cli")
    fake.main = lambda argv: seen.append(argv) or 7
    monkeypatch.setitem(sys.modules, "udproom.protocol.cli", fake)
    assert cli.main([sub, "--x", "1"]) == 7
    assert seen == [[sub, "--x", "1"]]


def test_help_and_version_do_not_import_textual():
    code = (
        "import sys, io, contextlib\n"
        "from udproom.__main__ import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['--help']) == 0\n"
        "    assert main(['--version']) == 0\n"
        "    assert main(['--join', 'bad:0']) == 2\n"
        "bad = [m for m in sys.modules if m.startswith(('textual', 'rich'))]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("argv", [["--host", "127.0.0.1:0"], []])
def test_without_a_terminal_it_says_so_and_exits(argv):
    """nohup, cron, a service unit, a script: stdin at end of file, output to a pipe. One line on
    stderr pointing at the headless commands, a non-zero exit, no escape codes (it used to write
    them into the pipe and then spin forever)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "udproom", *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("still running without a terminal after 30 s")
    assert proc.returncode != 0
    assert out == b""
    lines = err.decode().splitlines()
    assert len(lines) == 1 and "needs a terminal" in lines[0], lines
    assert all(f"udproom {sub}" in lines[0] for sub in ("listen", "send", "relay"))


def test_a_theme_is_used_and_remembered_for_the_next_run(monkeypatch):
    from udproom.tui import config
    from udproom.tui.app import ChatApp

    used = []
    monkeypatch.setattr(cli, "_have_terminal", lambda: True)
    monkeypatch.setattr(ChatApp, "run", lambda self: used.append(self.theme) or 0)
    assert cli.main(["--theme", "textual-light"]) == 0
    assert config.load().theme == "textual-light"
    assert cli.main([]) == 0  # no flag: the remembered one
    assert used == ["textual-light", "textual-light"]
    assert ChatApp(config=config.Config(theme="no-such-theme")).theme == "tokyo-night"
