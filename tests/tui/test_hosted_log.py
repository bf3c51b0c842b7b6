"""The app's --host keeps its rooms where `udproom relay` does (issue 10), under the data
directory (a temporary one in tests), and a second --host on it is refused in one line."""

import pytest


async def test_the_apps_hosted_relay_keeps_its_rooms_under_the_data_directory(tmp_path, monkeypatch):
    from pathlib import Path

    from udproom.tui import session

    monkeypatch.setenv("UDPROOM_DATA_DIR", str(tmp_path))
    spec = session.Spec("host", "127.0.0.1:0", "zoe", ["lobby"])
    _backend, server, _share = await session.build(spec)
    try:
        assert Path(server.log.path) == tmp_path / "relay" / "relay.sqlite3"
        assert server.relay.epoch == server.log.epoch
        with pytest.raises(session.SpecError, match="another relay") as second:  # a second --host on it
            await session.build(spec)
        # it says how to choose another directory, and names no flag the app does not have
        assert "UDPROOM_DATA_DIR" in str(second.value) and "--data" not in str(second.value)
    finally:
        await server.stop()
    assert (tmp_path / "relay" / "relay.sqlite3").exists()
