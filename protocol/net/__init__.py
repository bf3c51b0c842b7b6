"""Transport: the only code in udproom that touches sockets and the event loop.

- `address`: what people type (`host:port`, `[::1]:6000`, `:6000`, `udp://...`) -> (host, port);
  resolving for UDP (IPv4 preferred when a name has both); the addresses a relay can be reached at.
- `transport`: `CoreProtocol`, the one asyncio DatagramProtocol that drives any sans-IO core
  (feed datagrams with `now`, flush once per loop iteration: events, datagrams, one timer);
  sockets with large buffers, dual-stack for every-interface binds.
- `loop`: uvloop when importable (`run(main)`).
- `runners`: `RelayServer` and `RelayClient` (a `Backend`), usable inside any running loop;
  `CoreClient` is the shared Backend plumbing. `peer`: the direct-mode `PeerClient`.

Known limit: a relay bound to every interface answers from whatever source address the kernel's
routing picks. On a host with several addresses on one network, a client that joined a
secondary address may see answers from another one and ignore them; bind the relay to the
address people join (`--bind 10.0.0.5:6000`) there. asyncio's datagram API has no IP_PKTINFO.
"""
