"""A TCP proxy to the NATS server for tests and benchmarks, on its own thread and loop (a relay's
NATS calls may block the caller's loop): it can add a delay each way (a slow link: every round trip
costs 2 x `delay`, in order), and stop forwarding (a partition: no reset, nothing gets through);
healed, it drops its connections so that the client reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import threading


class NatsProxy:
    def __init__(self, port: int, delay: float = 0.0) -> None:
        self.target = port
        self.delay = delay  # seconds, each way (read at each chunk: may be changed on the fly)
        self.open = True
        self.conns: list[asyncio.StreamWriter] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self.loop
        ).result(10)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def _handle(self, reader, writer) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        self.conns += [writer, up_w]

        def write(dst, data: bytes) -> None:
            if self.open and not dst.is_closing():
                dst.write(data)

        async def pipe(src, dst) -> None:
            last = 0.0  # when the previous chunk goes: never before it (the delay may shrink)
            try:
                while data := await src.read(65536):
                    last = max(self.loop.time() + self.delay, last)
                    self.loop.call_at(last, write, dst, data)
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(RuntimeError):  # (the proxy's loop stopped first)
                    self.loop.call_at(max(self.loop.time() + self.delay, last), dst.close)

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer), return_exceptions=True)

    def heal(self) -> None:
        def drop() -> None:
            for w in self.conns:
                w.close()
            self.conns = []
            self.open = True

        self.loop.call_soon_threadsafe(drop)

    def close(self) -> None:
        self.heal()
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
