"""Direct mode, protocol 2 (issue 11): every link keyed and sealed, identities proven, messages
signed, nicks pinned to keys on first use.

An `Adversary` on the path of every link (`eavesdrop`) reads nothing and, having seen everything,
still cannot speak for a link (protocol 1's weakness: the `Sid` token it saw was all it took). A
tampered, replayed or reordered datagram is counted and dropped; history relayed by a contact is
shown only as its authors signed it; a nick that shows up with another key is flagged."""

from __future__ import annotations

import msgspec
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from udproom.protocol import crypto as C
from udproom.protocol import events as E
from udproom.protocol import frames as F
from udproom.protocol.peer import PeerNode
from udproom.protocol.peer import state as P
from udproom.protocol.pins import KeyPins

from .adversary import Adversary
from .fakenet import FakeNet, Impairment
from .peers import FORGER, MALLORY, addr, build, of, send_as, settle_room, signed, timing, trio

SECRET = "the eagle lands at midnight"


def _chat(net, nodes, texts):
    for i, node in enumerate(nodes):
        for t in texts:
            net.call(addr(i), node.post, "lobby", f"{node.nick}: {t}")
    net.run_while(lambda: any(n.pending_posts for n in nodes), net.now + 10)
    net.run_until(net.now + 0.3)


def _shown(net, i, room="lobby"):
    return [(e.nick, e.text) for e in of(net, i, E.MessageReceived) if e.room == room]


def test_an_eavesdropper_on_every_link_reads_no_text_nor_nick():
    """From before the first Hello: messages, a direct message, a topic, an away text, a rename,
    the nicks themselves and the identity keys never cross the wire in the clear; the only clear
    datagrams are the handshake's (Hello, Retry, Welcome, knock and its Reset)."""
    net = FakeNet(seed=21, imp=Impairment(jitter=0.002))
    adv = Adversary(net, FORGER)
    adv.eavesdrop()
    nicks = ("alicia", "bartholomew", "cordelia")
    nodes = []
    for i, nick in enumerate(nicks):
        node = net.add(addr(i), PeerNode(nick, timing=timing()))
        nodes.append(node)
        net.call(addr(i), node.join, "lobby")
        if i:
            net.call(addr(i), node.add_peer, addr(i - 1))  # the third is met through gossip
    settle_room(net, nodes)
    _chat(net, nodes, [SECRET])
    net.call(addr(0), nodes[0].post, "@cordelia", "psst " + SECRET)
    net.call(addr(1), nodes[1].set_topic, "lobby", "topic " + SECRET)
    net.call(addr(2), nodes[2].set_away, "away " + SECRET)
    net.call(addr(2), nodes[2].set_nick, "desdemona")
    net.run_until(net.now + 1.0)
    assert (f"alicia: {SECRET}") in [t for _n, t in _shown(net, 2)]  # it did travel
    wire = [data for _src, _dst, data in adv.heard]
    assert len(wire) > 50
    for word in (SECRET, "eagle", *nicks, "desdemona"):
        assert not [d for d in wire if word.encode() in d], word
    for node in nodes:  # nor who is who: identity keys travel sealed too
        assert not [d for d in wire if node.identity.public in d]
    clear = set()
    for d in wire:
        if not C.is_sealed(d):
            clear.update(type(f) for f in F.decode(d))
    assert clear <= {F.Hello, F.Retry, F.Welcome, F.Sid, F.Reset}, clear


def _watched_link(seed=1):
    """p0, p1, mallory in #lobby, with an adversary that has seen everything p1 sent p0."""
    net, nodes = trio(seed=seed)
    adv = Adversary(net, FORGER)
    adv.eavesdrop()
    _chat(net, nodes, ["one", "two"])
    seen = [d for src, dst, d in adv.heard if src == addr(1) and dst == addr(0)]
    assert seen
    return net, nodes, adv, seen


def test_a_forger_who_saw_the_link_cannot_speak_for_it():
    """Protocol 1's weakness: a token seen on the wire let anyone speak for the link. Now a
    datagram replayed, or rebuilt around what was seen (its head, its token if it had one), with a
    message, a leave, a rename and a goodbye, is counted and dropped, and changes nothing."""
    net, (p0, p1, _m), adv, seen = _watched_link()
    link = p0.links[addr(1)]
    before = dict(p0.stats)
    shown = _shown(net, 0)
    node = link.node
    forged = [
        F.PeerMsg(room="lobby", seq=s, lc=10**6, kind=F.EV_MSG, nick="p1", text="forged", ts=1.0, mid=900 + s)
        for s in range(1, 8)
    ] + [
        F.PeerLeave("lobby", "p1", "forged"),
        F.PeerJoin(room="lobby", nick="mallet", node=node, base=1, top=0, lc=0, away="forged away"),
        F.Bye("forged"),
    ]
    body = F.encode(forged)
    n = 0
    for d in seen:
        variants = [d, d[:10] + body, d[:26] + body[: max(0, len(d) - 26)]]
        try:
            first = F.decode(d)[0]
        except F.FrameError:
            first = None
        if type(first) is F.Sid:  # protocol 1: the token is right there
            variants.append(F.encode([first, *forged]))
        for v in variants:
            adv.forge(v, addr(0), src=addr(1))
            n += 1
    net.run_until(net.now + 0.5)
    assert p0.links[addr(1)] is link and link.state == P.UP and link.node == node and link.nick == "p1"
    assert _shown(net, 0) == shown
    assert not of(net, 0, E.MemberLeft) and not of(net, 0, E.NickChanged) and not of(net, 0, E.AwayChanged)
    dropped = p0.stats["sealed_dropped"] - before["sealed_dropped"]
    assert dropped == n, (dropped, n)
    # and the link carries on
    net.call(addr(1), p1.post, "lobby", "still me")
    net.run_until(net.now + 0.3)
    assert _shown(net, 0)[-1] == ("p1", "still me")


def test_forged_datagrams_from_a_linked_address_in_the_clear_are_counted():
    """Clear datagrams from a linked peer's address (anything but a handshake step) are counted
    as unauthenticated and dropped: a peer that is up seals everything."""
    net, (p0, _p1, _m) = trio(seed=2)
    adv = Adversary(net, FORGER)
    before = p0.stats["unauthenticated"]
    frames = [
        F.PeerMsg(room="lobby", seq=1, lc=5, kind=F.EV_MSG, nick="p1", text="forged", ts=1.0, mid=5),
        F.Bye("forged"),
        F.Reset(),
    ]
    for f in frames:
        adv.forge(F.encode([f]), addr(0), src=addr(1))
    net.run_until(net.now + 0.3)
    assert p0.stats["unauthenticated"] - before == len(frames)
    assert not of(net, 0, E.MessageReceived) and not of(net, 0, E.MemberLeft)


# --------------------------------------------------------------------------- tamper, replay, reorder

OPS = st.lists(
    st.tuples(
        st.sampled_from(["replay", "flip", "truncate", "extend", "late"]),
        st.integers(0, 10**6),  # which datagram
        st.integers(0, 10**6),  # where in it
        st.integers(0, 7),  # which bit
    ),
    min_size=1,
    max_size=40,
)


def _dropped(node: PeerNode) -> int:
    """Datagrams counted and dropped: not opening under the keys, not even a datagram, or clear."""
    return sum(node.stats.get(k, 0) for k in ("sealed_dropped", "malformed", "unauthenticated"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
@example([("flip", 0, 40, 0), ("replay", 1, 0, 0), ("late", 2, 0, 0)])
def test_tampered_replayed_and_reordered_datagrams_change_nothing(ops):
    """An on-path attacker re-injects what it saw (at once, or late), with bits flipped, cut short
    or extended, while the peers chat: every honest message is shown once, in each sender's
    order, on every peer; nothing else is shown; every injected datagram (or the original it
    copies, when the copy came first) is counted."""
    net, nodes = build(3, seed=4, imp=Impairment(jitter=0.003))
    settle_room(net, nodes)
    adv = Adversary(net, FORGER)
    adv.eavesdrop()
    sent = {n.nick: [] for n in nodes}
    before = [_dropped(n) for n in nodes]
    injected = [0, 0, 0]
    k = 0
    for rnd in range(4):
        for i, node in enumerate(nodes):
            text = f"{node.nick} #{rnd}"
            net.call(addr(i), node.post, "lobby", text)
            sent[node.nick].append(text)
        net.run_until(net.now + 0.02)
        while k < len(ops):
            op, which, where, bit = ops[k]
            seen = adv.heard  # the links' traffic (all of it sealed, once they are up)
            if not seen:
                break
            src, dst, data = seen[which % len(seen)]
            b = bytearray(data)
            if op == "flip":
                b[where % len(b)] ^= 1 << bit
            elif op == "truncate":
                del b[max(1, where % len(b)) :]
            elif op == "extend":
                b += bytes([bit]) * (1 + where % 8)
            adv.forge(bytes(b), dst, src=src, delay=0.5 if op == "late" else 0.0)
            injected[[addr(j) for j in range(3)].index(dst)] += 1
            k += 1
            if k % 10 == 0:
                break
    net.run_while(lambda: any(n.pending_posts for n in nodes), net.now + 10)
    net.run_until(net.now + 1.0)
    for i, node in enumerate(nodes):
        got = [(e.nick, e.text) for e in of(net, i, E.MessageReceived)]
        for other in nodes:
            if other is node:
                continue
            assert [t for n, t in got if n == other.nick] == sent[other.nick]
        assert len(got) == sum(len(v) for nick, v in sent.items() if nick != node.nick)
        assert not of(net, i, E.MemberLeft) and not of(net, i, E.MemberTimedOut)
        assert _dropped(node) - before[i] >= injected[i]


# --------------------------------------------------------------------------- signatures and history


def _newcomer_through(net, contact_i: int, nick="newbie", identity=None, pins=None):
    node = PeerNode(nick, timing=timing(), identity=identity, pins=pins)
    a = addr(5)
    net.add(a, node)
    net.call(a, node.join, "lobby")
    net.call(a, node.add_peer, addr(contact_i))
    return node, a


def test_a_history_item_with_a_bad_signature_is_not_shown():
    """A newcomer asks its contact (mallory) for history. Of what mallory relays, only items that
    their named author signed are shown: not one with altered text, nor one signed by mallory but
    named p1's (whose key the newcomer pinned when it met p1), nor one with no signature; and
    such items are counted."""
    net, (p0, p1, mallory) = trio(seed=6)
    _chat(net, [p0, p1, mallory], ["hello"])
    pins = KeyPins()
    pins.pin("p1", p1.identity.public)  # met p1 before
    late, a = _newcomer_through(net, MALLORY, pins=pins)
    # mallory answers the history request with its own forgeries first
    real = list(mallory.rooms["lobby"].history)
    assert {m.nick for m in real} == {"p0", "p1", "mallory"} and all(m.sig for m in real)
    p0_msg = next(m for m in real if m.nick == "p0")
    forgeries = [
        # altered, old sig (another stamp: mallory's history holds one line per (stamp, nick))
        msgspec.structs.replace(p0_msg, text="p0: I owe mallory 100", mid=11, lc=49),
        signed(mallory, F.PeerMsg("lobby", 50, 50, F.EV_MSG, "p1", "p1: mallory is great", 1.0, 12)),
        F.PeerMsg("lobby", 51, 51, F.EV_MSG, "p0", "p0: unsigned", 1.0, 13, b"", p0.identity.public),
    ]
    forgeries[1] = msgspec.structs.replace(forgeries[1], key=mallory.identity.public)
    mallory.rooms["lobby"].history.extendleft(reversed(forgeries))
    net.run_while(lambda: len(late.members("lobby")) < 4, net.now + 5)
    net.run_until(net.now + 0.5)
    hist = [(e.nick, e.text) for e in net.events[a] if isinstance(e, E.MessageReceived) and e.history]
    for f in forgeries:
        assert (f.nick, f.text) not in hist
    assert ("p0", "p0: hello") in hist or ("p0", "p0: hello") in _shown(net, 5)
    assert late.stats["bad_signature"] >= len(forgeries)


def test_a_message_with_a_bad_signature_is_dropped_and_the_stream_moves_on():
    """A member that signs garbage (or signs as someone else) gets only its own messages dropped
    and counted; the next one it signs properly is shown."""
    net, (p0, _p1, mallory) = trio(seed=7)
    out = mallory.rooms["lobby"].out
    base = {
        "seq": out.seq + 1,
        "lc": mallory.lc + 1,
        "kind": F.EV_MSG,
        "nick": "",
        "ts": net.now,
        "mid": 4242,
    }
    bad = F.PeerMsg(room="lobby", text="unsigned", **base)
    foreign = signed(p0, F.PeerMsg(room="lobby", **{**base, "seq": out.seq + 2, "mid": 4243}, text="as p0"))
    good = signed(mallory, F.PeerMsg(room="lobby", **{**base, "seq": out.seq + 3, "mid": 4244}, text="fine"))
    out.seq += 3
    send_as(net, mallory, MALLORY, 0, [bad, foreign, good])
    net.run_until(net.now + 0.3)
    assert _shown(net, 0) == [("mallory", "fine")]
    assert p0.stats["bad_signature"] == 2


# --------------------------------------------------------------------------- trust on first use


def test_tofu_warns_when_a_known_nick_shows_up_with_another_key():
    """p0 meets bob (its key is pinned). Bob goes; someone else calls itself bob: p0's room says
    bob's key changed, naming both fingerprints. Another member renaming into bob is flagged the
    same way. The pin keeps the first key; the real bob coming back is not flagged."""
    net, nodes = build(2, seed=9, imp=Impairment())
    p0, bob = nodes
    net.call(addr(1), bob.set_nick, "bob")
    settle_room(net, nodes)
    net.run_until(net.now + 0.3)
    assert p0.pins.get("bob") == bob.identity.fingerprint
    assert not [e for e in of(net, 0, E.Notice) if "key changed" in e.text]
    net.call(addr(1), bob.close)
    net.remove(addr(1))
    net.run_until(net.now + 0.3)
    impostor = net.add(addr(2), PeerNode("bob", timing=timing()))
    net.call(addr(2), impostor.join, "lobby")
    net.call(addr(2), impostor.add_peer, addr(0))
    net.run_while(lambda: "bob" not in p0.members("lobby"), net.now + 3)
    warn = [e for e in of(net, 0, E.Notice) if "key changed" in e.text]
    assert len(warn) == 1 and warn[0].room == "lobby"
    assert bob.identity.fingerprint in warn[0].text and impostor.identity.fingerprint in warn[0].text
    assert p0.pins.get("bob") == bob.identity.fingerprint and p0.stats["key_changed"] == 1
    # renaming into a pinned nick is flagged too (and nicks compare as names.nick_key does)
    net.call(addr(2), impostor.set_nick, "eve")
    other = net.add(addr(3), PeerNode("carl", timing=timing()))
    net.call(addr(3), other.join, "lobby")
    net.call(addr(3), other.add_peer, addr(0))
    net.run_while(lambda: "carl" not in p0.members("lobby"), net.now + 3)
    net.call(addr(3), other.set_nick, "BOB")
    net.run_until(net.now + 0.5)
    warn = [e for e in of(net, 0, E.Notice) if "key changed" in e.text]
    assert len(warn) == 2 and other.identity.fingerprint in warn[1].text
    # the real bob (same key file) comes back: no warning
    net.call(addr(3), other.set_nick, "carl")
    back = net.add(addr(1), PeerNode("bob", timing=timing(), identity=bob.identity))
    net.call(addr(1), back.join, "lobby")
    net.call(addr(1), back.add_peer, addr(0))
    net.run_while(lambda: p0.members("lobby").count("bob") < 1 or len(p0.members("lobby")) < 4, net.now + 3)
    net.run_until(net.now + 0.5)
    assert len([e for e in of(net, 0, E.Notice) if "key changed" in e.text]) == 2


def test_the_app_and_commands_use_the_users_identity_file(tmp_path, monkeypatch):
    """PeerClient (what the app and listen/send build in direct mode) proves the key kept in the
    data directory (made on first use, mode 0600), the same one on every start."""
    from udproom.protocol import paths
    from udproom.protocol.net.peer import PeerClient

    monkeypatch.setenv("UDPROOM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("UDPROOM_CONFIG_DIR", str(tmp_path / "config"))
    first = PeerClient(None, [], "ann", ["lobby"])
    path = paths.identity_path()
    assert path.exists() and (path.stat().st_mode & 0o777) == 0o600
    second = PeerClient(None, [], "ann", ["lobby"])
    assert first.core.identity.public == second.core.identity.public == C.load_identity(path).public
    given_key = C.Identity.generate()
    assert PeerClient(None, [], "ann", ["lobby"], identity=given_key).core.identity is given_key


# --------------------------------------------------------------------------- handshake corners


def test_a_simultaneous_open_makes_one_handshake():
    """Both peers dial each other at once: the higher node id's handshake goes on, the other's
    is dropped before any key is made; one pair of keys, each side holding the other's proven
    identity key, nothing dropped, and the link carries messages both ways."""
    net = FakeNet(seed=13, imp=Impairment())
    p0 = net.add(addr(0), PeerNode("p0", timing=timing()))
    p1 = net.add(addr(1), PeerNode("p1", timing=timing()))
    for i, node in enumerate((p0, p1)):
        net.call(addr(i), node.join, "lobby")
    net.call(addr(0), p0.add_peer, addr(1))
    net.call(addr(1), p1.add_peer, addr(0))
    settle_room(net, [p0, p1])
    a, b = p0.links[addr(1)], p1.links[addr(0)]
    assert a.key == p1.identity.public and b.key == p0.identity.public
    assert a.channel.send_key == b.channel.recv_key and b.channel.send_key == a.channel.recv_key
    hi, lo = (a, b) if p0.node > p1.node else (b, a)
    assert hi.msg3 and lo.msg3_in == hi.msg3  # the higher one dialed; the lower one answered
    net.call(addr(0), p0.post, "lobby", "to p1")
    net.call(addr(1), p1.post, "lobby", "to p0")
    net.run_until(net.now + 0.3)
    assert _shown(net, 0) == [("p1", "to p0")] and _shown(net, 1) == [("p0", "to p1")]
    assert p0.stats["sealed_dropped"] == p1.stats["sealed_dropped"] == 0


class _LoseFirstMsg3:
    """A node whose first msg3 (the first sealed datagram of a handshake) is lost on the way."""

    def __init__(self, core) -> None:
        self.core = core
        self.lost = 0
        self.sent_at: list[float] = []  # when a msg3 went out (lost or not)

    def datagrams_to_send(self, now):
        out = []
        for data, dst in self.core.datagrams_to_send(now):
            if data[:10] == bytes((C.SEALED, C.KIND_SESSION)) + bytes(8):
                self.sent_at.append(now)
                if not self.lost:
                    self.lost += 1
                    continue
            out.append((data, dst))
        return out

    def __getattr__(self, name):
        return getattr(self.core, name)


def test_what_overtakes_a_lost_msg3_waits_for_it():
    """The dialer's msg3 is lost and what it sealed after it (its PeerJoins) arrives: the
    answering peer keeps those (a few) and says its Welcome again, which makes the dialer resend
    msg3 at once (a round trip, not its retransmission timer); then it opens what it kept. None is
    counted as dropped."""
    net = FakeNet(seed=14, imp=Impairment())
    p0 = net.add(addr(0), PeerNode("p0", timing=timing()))
    p1 = PeerNode("p1", timing=timing())
    lossy = net.add(addr(1), _LoseFirstMsg3(p1))
    for i, node in enumerate((p0, p1)):
        net.call(addr(i), node.join, "lobby")
    net.call(addr(1), p1.add_peer, addr(0))
    settle_room(net, [p0, p1])
    assert lossy.lost == 1 and p0.stats["sealed_dropped"] == 0 and not p0.links[addr(1)].early
    first, again = lossy.sent_at[:2]
    assert again - first < timing().rto_min / 2  # 1 ms each way here; the timer is >= rto_min


def test_pins_that_cannot_be_written_are_kept_in_memory_and_said_once(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x", encoding="utf-8")
    net, nodes = build(3, seed=15, imp=Impairment())
    nodes[0].pins = KeyPins(blocker / "known_peers.toml")  # its parent is a file
    settle_room(net, nodes)
    assert nodes[0].pins.get("p1") == nodes[1].identity.fingerprint and len(nodes[0].pins) == 2
    said = [e for e in of(net, 0, E.Notice) if "pins kept in memory" in e.text]
    assert len(said) == 1 and str(blocker) in said[0].text


def test_a_peerjoin_overtaken_by_the_leave_does_not_bring_a_member_back():
    """Reordering (jitter) can bring a PeerJoin a member sent before it left after its PeerLeave:
    the leave carries the member's clock, and an older PeerJoin is stale. Its PeerJoin after that
    (a real return) counts. (Sealing made links come up one flight later, and a test that parted
    right after the room formed saw the member come back.)"""
    net, (p0, _p1, mallory) = trio(seed=16)
    node = p0.links[addr(MALLORY)].node
    mallory.lc += 10

    def join(lc):
        return F.PeerJoin(room="lobby", nick="mallory", node=node, base=1, top=0, lc=lc)

    send_as(
        net, mallory, MALLORY, 0, [F.PeerLeave("lobby", "mallory", "left", mallory.lc), join(mallory.lc - 1)]
    )
    net.run_until(net.now + 0.05)
    assert "mallory" not in p0.members("lobby")
    assert [e.nick for e in of(net, 0, E.MemberLeft)] == ["mallory"]
    send_as(net, mallory, MALLORY, 0, [join(mallory.lc)])
    net.run_until(net.now + 0.05)
    assert "mallory" in p0.members("lobby")


def test_new_handshakes_on_a_linked_address_are_rate_limited():
    """Each new attempt costs the answering peer a key exchange (two X25519 operations and a
    signature): even with valid cookies (someone who receives at a member's address, or the
    member itself), a burst of Hellos with fresh nonces gets at most the per-source handshake
    budget of answers, and the live link keeps its keys."""
    net, (p0, p1, _m) = trio(seed=17)
    adv = Adversary(net, FORGER)
    adv.eavesdrop()
    link = p0.links[addr(1)]
    channel, key = link.channel, link.key
    cookie = p0.cookies.make(addr(1), net.now)
    for k in range(100):
        hello = F.padded_hello(
            version=F.VERSION, nick="", cookie=cookie, nonce=10**6 + k, node=p1.node, kx=C.Initiator().msg1
        )
        adv.forge(F.encode([hello]), addr(0), src=addr(1))
    net.run_until(net.now + 0.01)
    welcomes = [
        d
        for src, dst, d in adv.heard
        if src == addr(0) and not C.is_sealed(d) and type(F.decode(d)[0]) is F.Welcome
    ]
    assert 0 < len(welcomes) <= P.HELLO_RATE and p0.stats["rate_limited"] >= 100 - P.HELLO_RATE
    net.run_until(net.now + 0.5)
    assert p0.links[addr(1)] is link and link.channel is channel and link.key == key
