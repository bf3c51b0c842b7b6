"""The layers stay apart: the sans-IO core imports no sockets, asyncio, clocks or textual."""

from __future__ import annotations

import subprocess
import sys

#: the sans-IO core: modules, and packages (relay/, peer/) whose every module counts
CORE = [
    "frames",
    "reliability",
    "relay",
    "peer",
    "client",
    "events",
    "names",
    "backend",
    "cookies",
    "addr",
    "crypto",
]


def test_sans_io_core_imports_no_io_or_ui():
    code = (
        "import sys\n"
        + "".join(f"import udproom.protocol.{m}\n" for m in CORE)
        + "bad = [m for m in ('asyncio', 'socket', 'textual', 'udproom.tui', 'selectors')"
        " if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_only_the_wire_module_imports_msgspec():
    import pathlib

    import udproom.protocol as p

    root = pathlib.Path(p.__file__).parent
    users = sorted(str(f.relative_to(root)) for f in root.rglob("*.py") if "import msgspec" in f.read_text())
    assert users == ["frames.py"]


def test_sans_io_core_modules_import_no_clock_directly():
    import ast
    import pathlib

    import udproom.protocol as p

    root = pathlib.Path(p.__file__).parent
    files = []
    for name in CORE:
        package = root / name
        files += sorted(package.glob("*.py")) if package.is_dir() else [root / f"{name}.py"]
    assert len(files) > len(CORE)  # the packages were found and read
    for path in files:
        name = str(path.relative_to(root))
        tree = ast.parse(path.read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
        assert not imported & {"time", "datetime", "asyncio", "socket", "textual", "threading"}, name


def test_files_written_by_several_processes_at_once_are_always_whole(tmp_path):
    """known_keys.toml, known_relays.toml, known_peers.toml and config.toml are each rewritten
    whole by whichever process pins a key: `listen` and `send` in one config directory at once
    (found in the suite: a `send` read a half-written known_keys.toml). Every read sees one
    writer's whole text, never a mix, and no temporary file is left behind."""
    import multiprocessing

    from udproom.protocol.paths import replace_file

    path = tmp_path / "known_keys.toml"
    texts = [f"# writer {i}\n" + f"k{i} = '{'x' * 4000}'\n" for i in range(4)]
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_rewrite, args=(replace_file, path, t)) for t in texts]
    for p in procs:
        p.start()
    seen = set()
    while any(p.is_alive() for p in procs):
        if path.exists():
            seen.add(path.read_text())
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    seen.add(path.read_text())
    assert seen <= set(texts) and seen
    assert [q.name for q in tmp_path.iterdir()] == ["known_keys.toml"]


def _rewrite(replace_file, path, text):
    for _ in range(300):
        replace_file(path, text)
