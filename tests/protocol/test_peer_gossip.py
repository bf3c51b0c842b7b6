"""Gossip in direct mode: it names addresses to dial, at a bounded rate, and cannot make a peer a
reflector."""

from __future__ import annotations

import ipaddress

from udproom.protocol import frames as F
from udproom.protocol.peer import PeerNode

from .fakenet import FakeNet, Impairment
from .peers import MALLORY, addr, send_as, trio


def test_gossip_does_not_make_a_peer_a_reflector():
    net, (_p0, _p1, mallory) = trio(watch=True)
    watched = net.nodes[addr(0)]
    victims = [
        ("224.0.0.1", 5353),
        ("255.255.255.255", 9),
        ("0.0.0.0", 9),
        ("::", 9),
        ("ff02::1", 9),
        ("127.0.0.1", 9),
    ] + [(f"192.168.{k // 200}.{k % 200 + 1}", 1000 + k) for k in range(64)]
    before_in = watched.bytes_in[addr(MALLORY)]
    ids = list(range(10_000, 10_000 + len(victims)))
    entries = [("v", h, p) for h, p in victims]
    for _ in range(3):
        for k in range(0, len(entries), 8):
            send_as(net, mallory, MALLORY, 0, [F.PeerList("lobby", entries[k : k + 8], ids[k : k + 8])])
        net.run_until(net.now + 0.3)
    net.run_until(net.now + 3.0)
    got = watched.bytes_in[addr(MALLORY)] - before_in
    out = {dst: n for dst, n in watched.bytes_out.items() if (dst[0], dst[1]) in set(victims)}
    for host, _port in out:
        ip = ipaddress.ip_address(host)
        assert not (ip.is_multicast or ip.is_unspecified or host == "255.255.255.255"), host
    assert sum(out.values()) <= 3 * got, (sum(out.values()), got)


def test_paying_for_gossip_does_not_slow_the_mesh_down():
    """Gossip-dialed addresses are paid for with a knock (a bare Sid answered by a Reset) before
    the padded Hello: a chain of peers still meshes in a few round trips with the default timings
    (paying padded Hellos from gossip credit took 105 s for six peers)."""
    from udproom.protocol.reliability import Timing

    net = FakeNet(seed=1, imp=Impairment(delay=0.01))
    nodes = []
    for i in range(6):
        node = net.add(addr(i), PeerNode(f"p{i}", timing=Timing()))
        nodes.append(node)
        net.call(addr(i), node.join, "lobby")
        if i:
            net.call(addr(i), node.add_peer, addr(i - 1))
    net.run_while(lambda: not all(len(x.members("lobby")) == 6 for x in nodes), 2.0)
    assert all(len(x.members("lobby")) == 6 for x in nodes)
    assert all(len(x.links) == 5 for x in nodes)


def test_gossip_credit_is_three_times_the_gossip_and_knocks_wait_for_it():
    net, (p0, p1, mallory) = trio(watch=True)
    watched = net.nodes[addr(0)]
    link = p0.links[addr(MALLORY)]
    link.credit = 0.0
    before = watched.bytes_in[addr(MALLORY)]
    known = [("p1", addr(1)[0], addr(1)[1])]  # nobody new: nothing to spend it on
    send_as(net, mallory, MALLORY, 0, [F.PeerList("lobby", known, [p1.node])])
    net.run_until(net.now + 0.003)
    size = watched.bytes_in[addr(MALLORY)] - before
    assert link.credit == 3 * size
    # with less credit than a knock, a new address is not even knocked at; with enough, it is
    link.credit = 5.0
    victim = ("192.168.50.50", 5050)
    p0._on_list(link, F.PeerList("lobby", [("v", *victim)], [1]), net.now)
    net.flush(addr(0))
    assert watched.bytes_out.get(victim, 0) == 0 and victim in p0.links
    knock = len(F.encode([F.Sid(p0.links[victim].rx_token)]))
    link.credit = float(knock)
    net.run_until(p0.links[victim].hello_at)
    assert watched.bytes_out.get(victim, 0) == knock and link.credit < knock
