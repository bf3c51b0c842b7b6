"""The pin files (protocol/known.py) when two udproom processes of one user write at once."""

from __future__ import annotations

import os

from udproom.protocol import known, paths
from udproom.protocol.crypto import fingerprint


def test_two_writers_at_once_each_move_a_whole_file_into_place(tmp_path, monkeypatch):
    """A `listen` and a `send` of one user pin keys at the same moment: the second writes its file
    between the first's write and its move into place. Both succeed and the file is whole (with one
    temporary name for all, the first found its file gone, or moved the other's half-written one:
    `udproom send: cannot read known_keys.toml`, seen in the cluster tests)."""
    path = tmp_path / "known_keys.toml"
    first, second = known.KnownKeys(path), known.KnownKeys(path)
    fp_a, fp_b = fingerprint(b"a" * 32), fingerprint(b"b" * 32)
    real_replace = os.replace
    nested = []

    def replace(src, dst):
        if not nested:  # the other process writes now, before this one's move
            nested.append(True)
            second.remember("127.0.0.1:6000", "bob", fp_b)
        real_replace(src, dst)

    monkeypatch.setattr(paths.os, "replace", replace)  # (paths.replace_file: every writer's one way)
    first.remember("127.0.0.1:6000", "alice", fp_a)
    pins = known.KnownKeys(path).for_relay("127.0.0.1:6000")
    assert nested  # (the other writer did write in between)
    assert pins == {"alice": known.parse_fingerprint(fp_a)}  # the last move wins, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["known_keys.toml"]  # no temporary left
