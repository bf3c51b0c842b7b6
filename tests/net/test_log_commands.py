"""`udproom search` and `udproom log` as real processes over a local chat log."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from udproom.protocol.chatlog import ChatLog, Line
from udproom.protocol.paths import CHATLOG_FILE

RELAY = "127.0.0.1:6000"
T0 = 1764600000.0  # 2025-12-01 14:40:00 UTC


def run(data_dir, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "UDPROOM_DATA_DIR": str(data_dir), "TZ": "UTC"}
    return subprocess.run(
        [sys.executable, "-m", "udproom.protocol.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        input=stdin,
    )


@pytest.fixture
def data(tmp_path):
    with ChatLog(tmp_path / CHATLOG_FILE) as chat:
        chat.add(
            [
                Line(RELAY, "dev", "join", "ann", "", T0, 1),
                Line(RELAY, "dev", "message", "ann", "deploying on friday", T0 + 60, 2),
                Line(RELAY, "dev", "message", "bob", "evil \x1b[2J\x1b]0;x\x07 deploy", T0 + 120, 3),
                Line(RELAY, "lobby", "message", "bob", "deployment is done", T0 + 180, 1),
                Line("circle-9", "@ann", "message", "ann", "direct deploy", T0 + 240, 0, mid=5),
            ]
        )
    return tmp_path


def one_line_error(r: subprocess.CompletedProcess, code: int) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_search_prints_sanitised_lines_newest_first(data):
    r = run(data, "search", "deploy")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "2025-12-01 14:44:00 @ann <ann> direct deploy",
        "2025-12-01 14:43:00 #lobby <bob> deployment is done",
        "2025-12-01 14:42:00 #dev <bob> evil \ufffd[2J\ufffd]0;x\ufffd deploy",
        "2025-12-01 14:41:00 #dev <ann> deploying on friday",
    ]
    assert "\x1b" not in r.stdout


def test_search_json_lines_and_filters(data):
    r = run(data, "search", "dep", "--room", "#DEV", "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(o["room"], o["nick"], o["ts"], o["text"]) for o in rows] == [
        # sanitised like the screen and like `listen` (JSON would escape C0 but not C1 controls)
        ("dev", "bob", T0 + 120, "evil \ufffd[2J\ufffd]0;x\ufffd deploy"),
        ("dev", "ann", T0 + 60, "deploying on friday"),
    ]
    assert "\x1b" not in r.stdout
    r = run(data, "search", "nick:BOB", "room:lobby", "--json")
    assert [json.loads(x)["text"] for x in r.stdout.splitlines()] == ["deployment is done"]
    r = run(data, "search", "direct", "--room", "@ann", "--json", "--limit", "1")
    assert [json.loads(x)["room"] for x in r.stdout.splitlines()] == ["@ann"]


def test_search_with_no_match_says_so_and_succeeds(data):
    r = run(data, "search", "zebra")
    assert r.returncode == 0 and r.stdout == "" and "nothing matches" in r.stderr


def test_log_prints_a_transcript(data):
    r = run(data, "log", "--room", "dev")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "--- Log of #dev on 127.0.0.1:6000",
        "2025-12-01 14:40:00 -!- ann has joined #dev",
        "2025-12-01 14:41:00 <ann> deploying on friday",
        "2025-12-01 14:42:00 <bob> evil \ufffd[2J\ufffd]0;x\ufffd deploy",
    ]
    r = run(data, "log", "--room", "#dev", "--since", "2025-12-01 14:41")
    assert r.stdout.splitlines()[1:] == [
        "2025-12-01 14:41:00 <ann> deploying on friday",
        "2025-12-01 14:42:00 <bob> evil \ufffd[2J\ufffd]0;x\ufffd deploy",
    ]
    assert run(data, "log", "--room", "dev", "--since", "1d").stdout == ""  # all older than a day
    r = run(data, "log", "--room", "empty")
    assert r.returncode == 0 and r.stdout == "" and "no lines of #empty" in r.stderr


def test_a_closed_pipe_ends_log_quietly(tmp_path):
    with ChatLog(tmp_path / CHATLOG_FILE) as chat:
        chat.add([Line(RELAY, "big", "message", "a", f"line {i}", T0 + i, i) for i in range(1, 20001)])
    env = {**os.environ, "UDPROOM_DATA_DIR": str(tmp_path)}
    cmd = f"{sys.executable} -m udproom.protocol.cli log --room big | head -2"
    r = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=60, env=env)
    assert len(r.stdout.splitlines()) == 2 and r.stderr == "", r.stderr


def test_a_missing_log_is_one_line_and_creates_nothing(tmp_path):
    for args in (("search", "x"), ("log", "--room", "dev")):
        err = one_line_error(run(tmp_path, *args), 1)
        assert "no chat log" in err
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_log_is_one_line(tmp_path):
    (tmp_path / CHATLOG_FILE).write_bytes(b"\x00garbage" * 1000)
    assert "damaged" in one_line_error(run(tmp_path, "search", "x"), 1)
    assert "damaged" in one_line_error(run(tmp_path, "log", "--room", "x"), 1)


@pytest.mark.parametrize(
    "args",
    [
        ("search",),
        ("search", "x", "--room", "bad room!"),
        ("search", "x", "--limit", "0"),
        ("log",),
        ("log", "--room", "dev", "--since", "yesterday-ish"),
        ("log", "--room", "@"),
    ],
)
def test_usage_errors_exit_2(data, args):
    one_line_error(run(data, *args), 2)
