"""A test-side TCP proxy adding latency and dropping connections (this kernel has no
netem). Runs its own asyncio loop in a daemon thread.

    proxy = FaultyProxy(delay_s=0.02, drop_every_s=2.0)
    proxy.add(listen_port, target_port)      # 127.0.0.1:listen -> 127.0.0.1:target
    proxy.start()
    ...
    proxy.stop()

Every byte is delivered ``delay_s`` after it arrived (per direction, without limiting
throughput: chunks queue with their arrival time). With ``drop_every_s`` set, each
connection is cut (both sides closed) after a random lifetime drawn from an exponential
distribution with that mean; ``blackhole`` refuses to forward anything new.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class ProxyStats:
    connections: int = 0
    dropped: int = 0
    bytes: int = 0


@dataclass
class FaultyProxy:
    delay_s: float = 0.0
    drop_every_s: float | None = None
    host: str = "127.0.0.1"
    seed: int | None = None
    stats: ProxyStats = field(default_factory=ProxyStats)
    _routes: list[tuple[int, int]] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _servers: list[asyncio.Server] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def add(self, listen_port: int, target_port: int) -> None:
        self._routes.append((listen_port, target_port))

    def start(self, timeout_s: float = 10.0) -> None:
        """Listen on every route; returns once all listen (RuntimeError otherwise)."""
        self._rng = random.Random(self.seed)
        ready = threading.Event()
        errors: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                for lp, tp in self._routes:
                    server = loop.run_until_complete(
                        asyncio.start_server(self._handler(tp), self.host, lp, reuse_address=True)
                    )
                    self._servers.append(server)
            except BaseException as exc:  # reported to start()
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=main, name="faulty-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(timeout_s) or errors:
            raise RuntimeError(f"proxy did not start: {errors}")

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return

        async def shutdown() -> None:
            for s in self._servers:
                s.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        self._thread.join(timeout=10)
        self._loop = None

    # ------------------------------------------------------------------ internals

    def _handler(
        self, target_port: int
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], None]:
        def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.get_running_loop().create_task(self._serve(reader, writer, target_port))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return accept

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target_port: int
    ) -> None:
        self.stats.connections += 1
        try:
            up_r, up_w = await asyncio.open_connection(self.host, target_port)
        except OSError:
            writer.close()
            return
        pumps = [
            asyncio.ensure_future(self._pump(reader, up_w)),
            asyncio.ensure_future(self._pump(up_r, writer)),
        ]
        lifetime = self._rng.expovariate(1.0 / self.drop_every_s) if self.drop_every_s else None
        try:
            done, _ = await asyncio.wait(
                pumps, timeout=lifetime, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                self.stats.dropped += 1
        finally:
            for p in pumps:
                p.cancel()
            for w in (writer, up_w):
                with contextlib.suppress(Exception):
                    w.transport.abort()  # an abrupt cut (RST), like a dropped link

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    return
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                dst.write(data)
                await dst.drain()

        sender = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await src.read(65536)
                self.stats.bytes += len(data)
                await queue.put((time.monotonic() + self.delay_s, data))
                if not data:
                    break
            await sender
        finally:
            sender.cancel()
