"""The multi-process soak, small (issue 12; tests/cluster/soakproc.py, and at 1,000 members
benchmarks/soak_processes.py): a real nats-server, three `udproom relay --cluster` processes, 60
members in 3 rooms in 2 client processes, 20% of datagrams lost each way, 3 senders, relay 0
SIGKILLed halfway through the posts."""

from __future__ import annotations

from .soakproc import Plan, run


def test_members_in_processes_over_three_relays_with_loss_one_order_and_a_relay_killed(tmp_path):
    plan = Plan(members=60, rooms=3, procs=2, senders=3, lines=6, loss=0.2)
    report = run(plan, str(tmp_path))
    # every post acknowledged; every member that stays got every acknowledged post of its room once,
    # under its number, in one order per room; the killed relay's members joined another
    assert report.ok, report.problems
    assert report.posts == report.acked == 18
    assert report.deliveries >= 18 * 20  # (each room: 20 members; a post's room hears it)
    assert report.failover, "no member was on the killed relay"
    assert report.dropped > 0 and report.refused == 0
