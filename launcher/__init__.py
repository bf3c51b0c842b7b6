"""udproom: a full-screen terminal chat room over reliable UDP."""

__version__ = "0.1.0"
