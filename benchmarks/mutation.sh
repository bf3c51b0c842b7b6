#!/usr/bin/env bash
# Mutation testing (mutmut 3) of the security-relevant pure code: protocol/reliability.py,
# protocol/cookies.py and, in protocol/names.py, sanitize() and nick_key() (its helpers
# _skeleton_key and _fold: nick_key itself is only a cache).
# Slow (minutes): not run in CI. Usage: bash benchmarks/mutation.sh [extra mutmut run args]
#
# mutmut names a mutant after the module path of the file it mutates, and the tests import
# `udproom.protocol...`, which the editable install maps onto protocol/. So the script stages a
# copy laid out as the import names say (mutants-stage/udproom/{protocol,tui}), writes the mutmut
# and pytest configuration there, and runs mutmut inside it; mutmut's own copy is
# mutants-stage/mutants/. Both are in .gitignore. Results: `mutmut results` inside mutants-stage
# (or the summary this script prints), `mutmut show NAME` for one mutant's diff.
#
# The amplification guards in relay.py and peer.py are covered by tests/protocol/test_guards.py
# (which fails with the check removed or the factor at 10); cookies.AMPLIFICATION and
# amplification_ok are mutated here.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
stage="$root/mutants-stage"

rm -rf "$stage"
mkdir -p "$stage/udproom"
cp "$root"/launcher/*.py "$stage/udproom/"
cp -r "$root/protocol" "$stage/udproom/protocol"
cp -r "$root/tui" "$stage/udproom/tui"
cp -r "$root/tests" "$stage/tests"
find "$stage" -name __pycache__ -prune -exec rm -rf {} +

# The fast tests that exercise the mutated code (no real processes).
cat > "$stage/pyproject.toml" <<'TOML'
[tool.pytest.ini_options]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "function"
addopts = "-p no:cacheprovider -q"

[tool.mutmut]
source_paths = ["udproom/"]
only_mutate = ["udproom/protocol/reliability.py", "udproom/protocol/cookies.py", "udproom/protocol/names.py"]
pytest_add_cli_args_test_selection = [
    "tests/protocol/test_reliability.py",
    "tests/protocol/test_guards.py",
    "tests/protocol/test_names.py",
    "tests/protocol/test_relay_core.py",
    "tests/protocol/test_peer.py",
    "tests/protocol/test_hardening.py",
    "tests/protocol/test_delivery.py",
    "tests/net/test_cli_sanitize.py::test_json_lines_carry_no_terminal_controls",
    "tests/net/test_cli_sanitize.py::test_error_and_log_lines_carry_no_terminal_controls",
    "tests/tui/test_order.py",
]
# mutmut's trampolines import more than the cores may (socket via multiprocessing): that check
# is about the real modules, not mutants
pytest_add_cli_args = ["--deselect", "tests/protocol/test_peer.py::test_core_imports_no_io"]
TOML

# Same hypothesis examples on every run (a mutant is killed or not, not sometimes), and no
# per-example deadline (mutmut's trampolines make every call slower).
cat >> "$stage/tests/conftest.py" <<'PY'

from hypothesis import settings

settings.register_profile("mutation", derandomize=True, deadline=None, database=None)
settings.load_profile("mutation")


@pytest.fixture(autouse=True)
def _uncached_nick_keys():
    # mutmut forks each mutant's run from a process that already ran the tests: keys cached
    # there would hide the mutant
    from udproom.protocol.names import nick_key

    nick_key.cache_clear()
PY

cd "$stage"
mutmut=("$python" -m mutmut)
# Only sanitize and nick_key (_skeleton_key, _fold) of names.py; all of reliability.py and cookies.py.
"${mutmut[@]}" run "$@" \
    "udproom.protocol.reliability.*" \
    "udproom.protocol.cookies.*" \
    "udproom.protocol.names.x_sanitize__mutmut_*" \
    "udproom.protocol.names.x__skeleton_key__mutmut_*" \
    "udproom.protocol.names.x__fold__mutmut_*" || true
echo
echo "== surviving mutants (mutmut show NAME in $stage for the diff)"
"${mutmut[@]}" results 2>/dev/null | grep -E "reliability|cookies|names\.x_(sanitize|_skeleton_key|_fold)" || echo "none"
