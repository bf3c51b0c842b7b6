"""The relay's indexes of its sessions stay what its sessions are, whatever members do: log in
(look-alike nicks, the same address again, resuming from another address), rename themselves
(into a look-alike of their own nick or of another's), register their nick, and leave. Invariants
after every step: `_taken` holds every key of every session's nick (names.nick_keys) and nothing
else, `_nicks` every session's nick_key, no two sessions hold look-alike nicks, and
`_per_source` counts each source's sessions."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from udproom.protocol import frames as F
from udproom.protocol.cookies import source_of
from udproom.protocol.crypto import Identity
from udproom.protocol.names import look_alike, nick_key, nick_keys
from udproom.protocol.relay import Relay, RelayConfig

from .harness import HandClient, T

NICKS = ["alice", "aIice", "aiice", "Alice", "ａlice", "bob", "ΒΟΒ", "b0b", "carol"]
#: two addresses share a host (one source), one is IPv6 in the same /64 as another
ADDRS = [("10.0.0.5", 5000), ("10.0.0.5", 5001), ("10.0.0.6", 5000), ("fd00::1", 5000), ("fd00::2", 5000)]
KEYS = [Identity.generate() for _ in range(3)]

STEPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("login"), st.integers(0, len(ADDRS) - 1), st.sampled_from(NICKS), st.integers(0, 2)
        ),
        st.tuples(st.just("resume"), st.integers(0, len(ADDRS) - 1), st.integers(0, len(ADDRS) - 1)),
        st.tuples(st.just("nick"), st.integers(0, len(ADDRS) - 1), st.sampled_from(NICKS)),
        st.tuples(st.just("register"), st.integers(0, len(ADDRS) - 1)),
        st.tuples(st.just("bye"), st.integers(0, len(ADDRS) - 1)),
    ),
    min_size=8,
    max_size=40,
)


def check(relay: Relay) -> None:
    sessions = list(relay.sessions.values())
    assert relay._taken == {k: s for s in sessions for k in nick_keys(s.nick)}
    assert relay._nicks == {nick_key(s.nick): s for s in sessions}
    for i, a in enumerate(sessions):
        for b in sessions[i + 1 :]:
            assert not look_alike(a.nick, b.nick), (a.nick, b.nick)
    assert relay._per_source == Counter(source_of(s.addr) for s in sessions)
    assert relay._tokens == {s.token: s for s in sessions}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS)
def test_the_relays_nick_and_address_indexes_stay_its_sessions(steps):
    relay = Relay(RelayConfig(timing=T, max_sessions_per_address=2))
    clients: dict[int, HandClient] = {}
    cseq: dict[int, int] = {}
    now = 1.0
    for step in steps:
        now += 0.01
        op, i = step[0], step[1]
        addr = ADDRS[i]
        if op == "login" or op == "resume":
            if op == "login":
                nick, identity, resume = step[2], KEYS[step[3]], 0
            else:
                old = clients.get(step[2])
                if old is None or old.addr not in relay.sessions:
                    continue
                nick, identity, resume = relay.sessions[old.addr].nick, old.identity, old.token
            c = HandClient(relay, addr, nick, now, identity=identity, nonce=int(now * 100), resume=resume)
            if c.logged_in is not None:
                clients[i], cseq[i] = c, 1
            else:
                event(f"login refused: {c.answer[0].reason.split(' (')[0][:40]}")
        else:
            c = clients.get(i)
            if c is None or relay.sessions.get(addr) is None:
                continue
            if op == "bye":
                c.send([F.Bye("bye")], now)
            else:
                what = (
                    F.Req(cseq[i], F.OP_NICK, "", step[2])
                    if op == "nick"
                    else F.Req(cseq[i], F.OP_REGISTER, "")
                )
                c.send([what], now)
                cseq[i] += 1
        relay.datagrams_to_send(now)
        check(relay)
    event(f"sessions at the end: {len(relay.sessions)}")
