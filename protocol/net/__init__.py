"""Transport: the only code in udproom that touches sockets and the event loop."""
