"""The runner: a configured :class:`~sipexpress.core.server.Core` brought
up, kept running until a signal, and brought down.

Start: the listeners (messages that arrive meanwhile are held), the
modules in load order (each one's ``depends`` checked first), the
management layer (FIFO, JSON-RPC), the web interface when ``web_listen`` is
set, then the collector is tuned and the held messages handled.  Stop: the
reverse, modules in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import Callable
from typing import Any, Final

from sipexpress import __version__
from sipexpress.core.registry import ConfigError
from sipexpress.core.server import Core
from sipexpress.core.workers import WorkerServices
from sipexpress.mgmt import Manager

log = logging.getLogger("sipexpress.core")

#: gc.set_threshold() while the server runs (see Runner.start)
GC_THRESHOLDS: Final = (50_000, 20, 100)


class Runner:
    """Start, serve and stop one core with its modules, management layer
    and web interface."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.mgmt: Manager | None = None
        self._web: asyncio.Task[Any] | None = None
        self._stop_event: asyncio.Event | None = None
        #: with several worker processes: this worker's share (core.workers)
        self.workers: WorkerServices | None = None

    async def start(self) -> None:
        """Bind the listeners, start the modules and the management layer."""
        core = self.core
        if self._stop_event is None:
            self._stop_event = asyncio.Event()
        await core.open_listeners()
        if core.worker is not None:
            self.workers = WorkerServices(core, core.worker)
            self.workers.local_rows = self.local_rows
            await self.workers.start()
        for m in core.module_list:
            for dep in m.depends:
                if dep not in core.modules:
                    raise ConfigError(f"module '{m.name}' needs module '{dep}'")
        for m in core.module_list:
            await m.start()
        if self.workers is not None:
            self.workers.modules_started()
        self.mgmt = Manager(
            core.options,
            core.module_list,
            core.mgmt_commands,
            processes=self.process_table,
            statistics=core.statistics,
        )
        serves_mgmt = core.worker is None or core.worker.serves_mgmt
        if self.workers is not None and serves_mgmt:
            self.mgmt.registry.prepare = self.workers.gather
        try:
            if serves_mgmt:  # FIFO and JSON-RPC once, not by every worker
                await self.mgmt.start()
        except Exception as e:
            raise ConfigError(f"management interface: {e}") from e
        if core.options.get("web_listen") and serves_mgmt:
            # imported here: the web stack (Starlette, Jinja2, uvicorn) is
            # loaded only by servers that serve it
            from sipexpress.web import start_in_core

            self._web = await start_in_core(core.options, self.mgmt.rpc_token)
        # everything allocated so far lives as long as the server: keep it out
        # of the collector's way (fewer, cheaper collections on the hot path)
        gc.collect()
        gc.freeze()
        # Under load tm keeps tens of thousands of container objects alive
        # for the wait timer; with the default thresholds (700, 10, 10) the
        # collector keeps walking them (~10 % of the CPU at 1000 calls/s,
        # bench/README.md).  Transactions are freed by reference counting,
        # so collect young objects rarely and old ones almost never.
        gc.set_threshold(*GC_THRESHOLDS)
        core.release_held()

    def process_table(self) -> list[tuple[int, str]]:
        """Rows of the ``ps`` management command (SER's descriptions): with
        one process all roles live in it; with workers the main process,
        then each worker's roles."""
        if self.workers is not None:
            return self.workers.process_table()
        return [(os.getpid(), "attendant"), *self.local_rows()]

    def local_rows(self) -> list[tuple[int, str]]:
        """The roles of this process (``ps``)."""
        core = self.core
        pid = os.getpid()
        child = core.worker.index if core.worker is not None else 0
        rows = []
        for lst in core.udp_listeners:
            rows.append((pid, f"receiver child={child} sock= {lst.address}"))
        if core.tcp is not None and core.tcp.listeners:
            if core.worker is None:
                rows.append((pid, "tcp main process"))
            rows.append((pid, f"tcp receiver child={child}" if core.worker is not None else "tcp receiver"))
        if core.tls is not None and core.tls.listeners:
            rows.append((pid, f"tls receiver child={child}" if core.worker is not None else "tls receiver"))
        if self.mgmt is not None and self.mgmt.fifo is not None:
            rows.append((pid, "fifo server"))
        if self.mgmt is not None and self.mgmt.unix is not None:
            rows.append((pid, "unix domain socket server"))
        rows.append((pid, "timer"))
        return rows

    async def stop(self) -> None:
        """Stop the management layer, the modules (reverse order), the
        listeners, the web interface and what still runs."""
        core = self.core
        core.drop_held()
        if self.mgmt is not None:
            try:
                await self.mgmt.stop()
            except Exception:
                log.exception("stopping the management layer failed")
            self.mgmt = None
        for m in reversed(core.module_list):
            try:
                await m.stop()
            except Exception:
                log.exception("module %s: stop() failed", m.name)
        core.close_listeners()
        if self.workers is not None:
            self.workers.stop()
        web, self._web = self._web, None
        if web is not None:
            web.cancel()
            await asyncio.wait([web], timeout=2.0)
        await core.cancel_tasks()

    def request_stop(self, reason: str = "stop requested") -> None:
        if self._stop_event is not None:
            if not self._stop_event.is_set():
                log.log(25, "stopping: %s", reason)
            self._stop_event.set()

    async def serve(self, ready: Callable[[], None] | None = None) -> int:
        """Start, run until SIGTERM/SIGINT (or :meth:`request_stop`), stop."""
        # handlers first: a SIGTERM while modules start still shuts down
        # cleanly (usrloc's write-back flush, the FIFO file removed)
        self._stop_event = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig, why in ((signal.SIGTERM, "SIGTERM received"), (signal.SIGINT, "SIGINT received (Ctrl-C)")):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop, why)
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        log.log(25, "sipexpress %s started (pid %d)", __version__, os.getpid())
        if ready is not None:
            ready()
        try:
            await self._stop_event.wait()
        finally:
            log.log(25, "shutting down")
            await self.stop()
        return 0
