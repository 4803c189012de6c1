"""Run one node process: load the config, open the runtime, serve HTTP with uvicorn.

Process model: one asyncio event loop (uvicorn's) runs the HTTP server, one driver
task per validated channel, and one sender task per peer. LevelDB writes run in
worker threads. SIGINT/SIGTERM make uvicorn stop accepting requests; the app's
lifespan then stops the drivers and peer links and closes the store.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from typing import Any

import uvicorn

from node.api import PeerFrameASGI, create_asgi
from node.config import NodeConfig
from node.gc_tuning import tune_gc
from node.logs import setup_logging
from node.runtime import NodeRuntime
from node.tls import check_tls_files, server_context_kwargs

log = logging.getLogger("wulian.node")


def build_server(config: NodeConfig) -> tuple[NodeRuntime, uvicorn.Server]:
    """Open the runtime (raises ConfigError/StoreError for a bad setup) and build the
    uvicorn server for it: HTTPS with the ``[tls]`` files (checked first:
    :func:`node.tls.check_tls_files`), else plain HTTP."""
    tls_kwargs: dict[str, Any] = {}
    if config.tls is not None:
        check_tls_files(config.tls, config.node_id)
        tls_kwargs = server_context_kwargs(config.tls)
    runtime = NodeRuntime.open(config)
    app = create_asgi(runtime)
    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_keep_alive=75,
        timeout_graceful_shutdown=5,
        limit_concurrency=10_000,
        backlog=2048,
        **tls_kwargs,
    )
    return runtime, _NodeServer(uv_config, app)


class _NodeServer(uvicorn.Server):
    """uvicorn's server, telling the peer front first when it shuts down: uvicorn waits
    (``timeout_graceful_shutdown``) for running requests, and a peer stream is one that
    never ends by itself; told, each stream ends at its next frame (peers send STATUS
    every second) with 503 instead of being cancelled after the timeout."""

    def __init__(self, config: uvicorn.Config, front: PeerFrameASGI) -> None:
        super().__init__(config)
        self.front = front

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.front.closing = True
        await super().shutdown(sockets)


def run_node(config: NodeConfig) -> int:
    """Serve until SIGINT/SIGTERM. Returns the process exit status."""
    setup_logging(config.node_id, config.log_format, config.log_level)
    runtime, server = build_server(config)
    log.info(
        "listening on %s://%s:%d (genesis %s…)",
        "https" if config.tls is not None else "http",
        config.host,
        config.port,
        runtime.genesis.hash.hex()[:16],
    )
    # uvicorn re-raises the SIGINT/SIGTERM it caught once it has shut down; these
    # no-op handlers receive it, so a requested stop exits with status 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: None)
    tune_gc()  # the runtime's start-up objects are never walked again (node.gc_tuning)
    try:
        asyncio.run(server.serve())
    finally:
        if not runtime.store.closed:
            runtime.store.close()
    return 0 if server.started else 1
