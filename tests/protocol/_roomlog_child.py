"""A child process for the crash tests: appends and commits groups to a SqliteLog forever, and
after each commit prints one line per committed event: 'room seq mid'. Killed by the test."""

import random
import sys

from udproom.protocol import frames as F
from udproom.protocol.roomlog import SqliteLog

ROOMS = ("a", "b", "c")


def main() -> None:
    directory, seed = sys.argv[1], int(sys.argv[2])
    rng = random.Random(seed)
    log = SqliteLog(directory, keep_events=None, keep_days=None)
    print("ready", flush=True)
    while True:
        group = []
        for _ in range(rng.randint(1, 40)):
            room = rng.choice(ROOMS)
            mid = rng.getrandbits(64) or 1
            seq = log.append(room, F.Ev(kind=F.EV_MSG, nick="n", text=f"{room}/{mid}", ts=1.0, mid=mid))
            group.append(f"{room} {seq} {mid}")
        log.commit()
        sys.stdout.write("\n".join(group) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
