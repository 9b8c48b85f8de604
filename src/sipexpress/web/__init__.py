"""The web interface (serweb's successor): Starlette + Jinja2, served by
uvicorn.  It reaches ser only through JSON-RPC management commands and the
database, whether it runs inside ``ser`` (option ``web_listen``) or as the
separate ``serweb`` program.

Public API::

    app = create_app(WebConfig.from_options(options))
    await serve(cfg)                  # run until cancelled
    task = await start_in_core(options)  # ser's runner: same event loop
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from sipexpress.web.app import create_app
from sipexpress.web.config import WebConfig

__all__ = ["WebConfig", "create_app", "serve", "start_in_core"]

log = logging.getLogger("sipexpress.web")


def _server(cfg: WebConfig) -> Any:
    import uvicorn

    class _Server(uvicorn.Server):
        # the host program (ser) owns signal handling
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    config = uvicorn.Config(
        create_app(cfg),
        host=cfg.host,
        port=cfg.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        server_header=False,
        proxy_headers=False,
        ssl_certfile=cfg.certificate,
        ssl_keyfile=cfg.private_key,
    )
    return _Server(config)


async def serve(cfg: WebConfig) -> None:
    """Serve until cancelled (then shut down gracefully)."""
    server = _server(cfg)

    async def run() -> None:
        try:
            await server.serve()
        except SystemExit:  # uvicorn exits the process when it cannot bind
            raise OSError(f"web interface could not listen on {cfg.host}:{cfg.port}") from None

    inner = asyncio.ensure_future(run())
    try:
        await asyncio.shield(inner)
    except asyncio.CancelledError:
        server.should_exit = True
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(inner, 3.0)
        raise
    if server.started is False:
        raise OSError(f"web interface could not listen on {cfg.host}:{cfg.port}")


async def start_in_core(options: Mapping[str, Any], rpc_token: str | None = None) -> asyncio.Task[None]:
    """Start the web interface inside ``ser`` (option ``web_listen``): a task
    in the core's loop; it talks to the core over JSON-RPC (loopback) with
    the configured credential, else ``rpc_token`` (the management layer's)."""
    cfg = WebConfig.from_options(options)
    if cfg.jsonrpc_secret is None:
        cfg.jsonrpc_secret = rpc_token  # the server's own token, known to nobody else
    task = asyncio.get_running_loop().create_task(serve(cfg), name="web")

    def done(t: asyncio.Task[None]) -> None:
        if not t.cancelled() and t.exception() is not None:
            log.error("web interface stopped: %s", t.exception())

    task.add_done_callback(done)
    scheme = "https" if cfg.certificate else "http"
    log.info("web interface on %s://%s:%d/ (JSON-RPC %s)", scheme, cfg.host, cfg.port, cfg.jsonrpc)
    return task
